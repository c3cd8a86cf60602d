package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"testing"
	"time"
)

// Default validity window. NotBefore is in the past to tolerate clock skew
// between the code that signs and the code that verifies.
const (
	defaultBackdate = time.Hour
	defaultLifetime = 24 * time.Hour
)

// CA is an in-memory root certificate authority.
// Its fields are never modified after NewCA, so a CA may be shared by
// parallel tests.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
}

// Spec describes a leaf certificate for (*CA).Issue.
// Later fields (XmppAddr, SRV-ID) can be added without breaking callers.
type Spec struct {
	// DNSNames become subjectAltName dNSName entries.
	DNSNames []string

	// CommonName is the subject CN. If empty, the first DNS name is used.
	// Set it with no DNSNames to build a CN-only certificate.
	CommonName string

	// NotBefore and NotAfter bound the validity period. A zero NotBefore means
	// one hour ago; a zero NotAfter means one day after NotBefore. Set both
	// in the past to make an expired certificate.
	NotBefore, NotAfter time.Time
}

// NewCA generates a new root CA with a fresh key.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key := newKey(tb)
	notBefore := time.Now().Add(-defaultBackdate)
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(tb),
		Subject:               pkix.Name{CommonName: "testpki root CA", Organization: []string{"xmppfed tests"}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(defaultLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		MaxPathLenZero:        true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
	cert := create(tb, tmpl, tmpl, key, key)
	return &CA{cert: cert, key: key}
}

// Certificate returns the CA's own certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool holding only this CA, for tls.Config.RootCAs or
// ClientCAs. A new pool is returned each time so callers cannot affect each
// other.
func (ca *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(ca.cert)
	return p
}

// Leaf issues a certificate for the given DNS names, valid now, usable for
// both TLS server and client authentication (an S2S peer is both).
func (ca *CA) Leaf(tb testing.TB, dnsNames ...string) tls.Certificate {
	tb.Helper()
	return ca.Issue(tb, Spec{DNSNames: dnsNames})
}

// Issue issues a certificate described by spec, signed by ca.
func (ca *CA) Issue(tb testing.TB, spec Spec) tls.Certificate {
	tb.Helper()
	key := newKey(tb)
	cert := create(tb, leafTemplate(tb, spec), ca.cert, key, ca.key)
	return tls.Certificate{
		Certificate: [][]byte{cert.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	}
}

// SelfSigned returns a self-signed certificate for the given DNS names. It
// verifies only against a pool that contains the certificate itself.
func SelfSigned(tb testing.TB, dnsNames ...string) tls.Certificate {
	tb.Helper()
	key := newKey(tb)
	tmpl := leafTemplate(tb, Spec{DNSNames: dnsNames})
	cert := create(tb, tmpl, tmpl, key, key)
	return tls.Certificate{
		Certificate: [][]byte{cert.Raw},
		PrivateKey:  key,
		Leaf:        cert,
	}
}

func leafTemplate(tb testing.TB, spec Spec) *x509.Certificate {
	tb.Helper()
	notBefore := spec.NotBefore
	if notBefore.IsZero() {
		notBefore = time.Now().Add(-defaultBackdate)
	}
	notAfter := spec.NotAfter
	if notAfter.IsZero() {
		notAfter = notBefore.Add(defaultLifetime)
	}
	cn := spec.CommonName
	if cn == "" && len(spec.DNSNames) > 0 {
		cn = spec.DNSNames[0]
	}
	return &x509.Certificate{
		SerialNumber:          newSerial(tb),
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              append([]string(nil), spec.DNSNames...),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
}

func create(tb testing.TB, tmpl, parent *x509.Certificate, key, signer *ecdsa.PrivateKey) *x509.Certificate {
	tb.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, &key.PublicKey, signer)
	if err != nil {
		tb.Fatalf("testpki: create certificate: %v", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		tb.Fatalf("testpki: parse certificate: %v", err)
	}
	return cert
}

func newKey(tb testing.TB) *ecdsa.PrivateKey {
	tb.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		tb.Fatalf("testpki: generate key: %v", err)
	}
	return key
}

// newSerial returns a random 128-bit serial number; RFC 5280 wants serials
// unique per issuer and positive.
func newSerial(tb testing.TB) *big.Int {
	tb.Helper()
	n, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		tb.Fatalf("testpki: serial number: %v", err)
	}
	return n.Add(n, big.NewInt(1))
}
