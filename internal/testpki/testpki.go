package testpki

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
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

// CA is an in-memory certificate authority: a root from NewCA or an
// intermediate from (*CA).Intermediate.
// Its fields are never modified after creation, so a CA may be shared by
// parallel tests.
type CA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	// chain is this CA's certificate followed by its issuers' up to, but not
	// including, the root: what a server sends after its leaf. Empty for a
	// root.
	chain [][]byte
}

// Spec describes a leaf certificate for (*CA).Issue. The zero Spec is a
// certificate without names, valid now.
type Spec struct {
	// DNSNames become subjectAltName dNSName entries.
	DNSNames []string

	// CommonName is the subject CN. If empty, the first DNS name is used
	// (if none, the subject is empty). Set it with no other names to build a
	// CN-only certificate.
	CommonName string

	// XmppAddrs become subjectAltName otherName entries of type
	// id-on-xmppAddr (RFC 6120 §13.7.1.4), UTF8String, e.g. "a.test" or
	// "bücher.test" (not punycode: XmppAddr carries the Unicode form).
	XmppAddrs []string

	// SRVNames become subjectAltName otherName entries of type id-on-dnsSRV
	// (SRV-ID, RFC 4985), IA5String, e.g. "_xmpp-server.a.test".
	SRVNames []string

	// NotBefore and NotAfter bound the validity period. A zero NotBefore means
	// one hour ago; a zero NotAfter means one day after NotBefore. Set both
	// in the past to make an expired certificate.
	NotBefore, NotAfter time.Time

	// ExtKeyUsage is the extended key usage. nil means both serverAuth and
	// clientAuth, since an S2S peer is TLS server on its inbound and TLS
	// client on its outbound connections. Set it to just serverAuth to model
	// the many public certificates that lack clientAuth.
	ExtKeyUsage []x509.ExtKeyUsage
}

// NewCA generates a new root CA with a fresh key.
func NewCA(tb testing.TB) *CA {
	tb.Helper()
	key := newKey(tb)
	tmpl := caTemplate(tb, "testpki root CA")
	// One intermediate level, for (*CA).Intermediate.
	tmpl.MaxPathLen = 1
	cert := create(tb, tmpl, tmpl, key, key)
	return &CA{cert: cert, key: key}
}

// Intermediate returns a new intermediate CA with the given subject CN,
// signed by ca, which must be a root from NewCA (one intermediate level is
// allowed). Certificates it issues carry the intermediate's certificate
// after the leaf in tls.Certificate.Certificate, as a correctly configured
// server sends them; drop it to model a server that does not send its
// chain.
func (ca *CA) Intermediate(tb testing.TB, commonName string) *CA {
	tb.Helper()
	if len(ca.chain) > 0 {
		tb.Fatalf("testpki: %q is an intermediate CA and may not sign another", ca.cert.Subject.CommonName)
	}
	key := newKey(tb)
	tmpl := caTemplate(tb, commonName)
	tmpl.MaxPathLenZero = true
	cert := create(tb, tmpl, ca.cert, key, ca.key)
	chain := append([][]byte{cert.Raw}, ca.chain...)
	return &CA{cert: cert, key: key, chain: chain}
}

func caTemplate(tb testing.TB, commonName string) *x509.Certificate {
	tb.Helper()
	notBefore := time.Now().Add(-defaultBackdate)
	return &x509.Certificate{
		SerialNumber:          newSerial(tb),
		Subject:               pkix.Name{CommonName: commonName, Organization: []string{"xmppfed tests"}},
		NotBefore:             notBefore,
		NotAfter:              notBefore.Add(defaultLifetime),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
	}
}

// Certificate returns the CA's own certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Pool returns a new pool holding only this CA, for tls.Config.RootCAs or
// ClientCAs. A new pool is returned each time so callers cannot affect each
// other. For an intermediate CA the pool holds the intermediate as a trust
// anchor.
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

// Issue issues a certificate described by spec, signed by ca. The result's
// Certificate holds the leaf followed by ca's intermediate chain, if any.
func (ca *CA) Issue(tb testing.TB, spec Spec) tls.Certificate {
	tb.Helper()
	key := newKey(tb)
	cert := create(tb, leafTemplate(tb, spec), ca.cert, key, ca.key)
	return tls.Certificate{
		Certificate: append([][]byte{cert.Raw}, ca.chain...),
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
	eku := spec.ExtKeyUsage
	if eku == nil {
		eku = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
	}
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(tb),
		Subject:               pkix.Name{CommonName: cn},
		DNSNames:              append([]string(nil), spec.DNSNames...),
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           append([]x509.ExtKeyUsage(nil), eku...),
	}
	if len(spec.XmppAddrs) > 0 || len(spec.SRVNames) > 0 {
		// x509 cannot write otherName entries: build the whole extension,
		// which then replaces the one x509 would make from DNSNames.
		tmpl.DNSNames = nil
		tmpl.ExtraExtensions = []pkix.Extension{subjectAltName(tb, spec, cn == "")}
	}
	return tmpl
}

// Object identifiers for subjectAltName (RFC 5280) and its XMPP otherName
// types (RFC 6120 §13.7.1.4, RFC 4985).
var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	oidXmppAddr       = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 5}
	oidDNSSRV         = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 7}
)

// GeneralName CHOICE tags (RFC 5280 §4.2.1.6).
const (
	tagOtherName = 0
	tagDNSName   = 2
)

// subjectAltName encodes GeneralNames with spec's DNS names, SRV-IDs and
// XmppAddrs. RFC 5280 wants the extension critical when the subject is
// empty.
func subjectAltName(tb testing.TB, spec Spec, critical bool) pkix.Extension {
	tb.Helper()
	var names []asn1.RawValue
	for _, n := range spec.DNSNames {
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: tagDNSName, Bytes: []byte(n)})
	}
	for _, n := range spec.SRVNames {
		names = append(names, otherName(tb, oidDNSSRV, n, "ia5"))
	}
	for _, n := range spec.XmppAddrs {
		names = append(names, otherName(tb, oidXmppAddr, n, "utf8"))
	}
	der, err := asn1.Marshal(names)
	if err != nil {
		tb.Fatalf("testpki: encode subjectAltName: %v", err)
	}
	return pkix.Extension{Id: oidSubjectAltName, Critical: critical, Value: der}
}

// otherName encodes OtherName ::= SEQUENCE { type-id OID, value [0]
// EXPLICIT ANY } as the [0] IMPLICIT alternative of GeneralName; strType is
// an encoding/asn1 string parameter ("utf8", "ia5").
func otherName(tb testing.TB, oid asn1.ObjectIdentifier, value, strType string) asn1.RawValue {
	tb.Helper()
	typeID, err := asn1.Marshal(oid)
	if err != nil {
		tb.Fatalf("testpki: encode otherName type: %v", err)
	}
	str, err := asn1.MarshalWithParams(value, strType)
	if err != nil {
		tb.Fatalf("testpki: encode otherName %q: %v", value, err)
	}
	explicit, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: str})
	if err != nil {
		tb.Fatalf("testpki: encode otherName %q: %v", value, err)
	}
	return asn1.RawValue{
		Class:      asn1.ClassContextSpecific,
		Tag:        tagOtherName,
		IsCompound: true,
		Bytes:      append(typeID, explicit...),
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
