package tlsmode_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// peerChain parses a tls.Certificate's chain the way crypto/tls fills
// ConnectionState.PeerCertificates.
func peerChain(t *testing.T, cert tls.Certificate) []*x509.Certificate {
	t.Helper()
	chain := make([]*x509.Certificate, 0, len(cert.Certificate))
	for _, der := range cert.Certificate {
		c, err := x509.ParseCertificate(der)
		require.NoError(t, err)
		chain = append(chain, c)
	}
	return chain
}

func certError(t *testing.T, err error) *tlsmode.CertError {
	t.Helper()
	var ce *tlsmode.CertError
	require.ErrorAs(t, err, &ce)
	return ce
}

func TestVerifyPeerNames(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	for _, tc := range []struct {
		name   string
		spec   testpki.Spec
		domain string
		ok     bool
	}{
		{"DNS-ID exact", testpki.Spec{DNSNames: []string{"a.example"}}, "a.example", true},
		{"DNS-ID case and trailing dot", testpki.Spec{DNSNames: []string{"A.Example"}}, "a.EXAMPLE.", true},
		{"DNS-ID other domain", testpki.Spec{DNSNames: []string{"b.example"}}, "a.example", false},
		{"DNS-ID is no suffix match", testpki.Spec{DNSNames: []string{"example"}}, "a.example", false},
		{"DNS-ID second of several", testpki.Spec{DNSNames: []string{"b.example", "a.example"}}, "a.example", true},
		{"wildcard one label", testpki.Spec{DNSNames: []string{"*.example.com"}}, "chat.example.com", true},
		{"wildcard case", testpki.Spec{DNSNames: []string{"*.Example.COM"}}, "CHAT.example.com", true},
		{"wildcard not the base", testpki.Spec{DNSNames: []string{"*.example.com"}}, "example.com", false},
		{"wildcard not two labels", testpki.Spec{DNSNames: []string{"*.example.com"}}, "a.b.example.com", false},
		{"wildcard not a TLD", testpki.Spec{DNSNames: []string{"*.com"}}, "example.com", false},
		{"partial wildcard", testpki.Spec{DNSNames: []string{"c*.example.com"}}, "chat.example.com", false},
		{"wildcard not inner", testpki.Spec{DNSNames: []string{"chat.*.com"}}, "chat.example.com", false},
		{"SRV-ID", testpki.Spec{SRVNames: []string{"_xmpp-server.example.com"}}, "example.com", true},
		{"SRV-ID direct TLS", testpki.Spec{SRVNames: []string{"_xmpps-server.example.com"}}, "example.com", true},
		{"SRV-ID case", testpki.Spec{SRVNames: []string{"_XMPP-Server.Example.COM"}}, "example.com", true},
		{"SRV-ID client service", testpki.Spec{SRVNames: []string{"_xmpp-client.example.com"}}, "example.com", false},
		{"SRV-ID other domain", testpki.Spec{SRVNames: []string{"_xmpp-server.example.org"}}, "example.com", false},
		{"SRV-ID without domain", testpki.Spec{SRVNames: []string{"_xmpp-server."}}, "example.com", false},
		{"SRV-ID no wildcard", testpki.Spec{SRVNames: []string{"_xmpp-server.*.example.com"}}, "chat.example.com", false},
		{"XmppAddr", testpki.Spec{XmppAddrs: []string{"example.com"}}, "example.com", true},
		{"XmppAddr case", testpki.Spec{XmppAddrs: []string{"Example.Com"}}, "example.COM", true},
		{"XmppAddr full JID", testpki.Spec{XmppAddrs: []string{"user@example.com"}}, "example.com", false},
		{"XmppAddr no wildcard", testpki.Spec{XmppAddrs: []string{"*.example.com"}}, "chat.example.com", false},
		{"XmppAddr among DNS", testpki.Spec{DNSNames: []string{"b.example"}, XmppAddrs: []string{"a.example"}}, "a.example", true},
		{"CN-ID without SANs", testpki.Spec{CommonName: "a.example"}, "a.example", true},
		{"CN-ID wildcard", testpki.Spec{CommonName: "*.example.com"}, "chat.example.com", true},
		{"CN-ID other", testpki.Spec{CommonName: "b.example"}, "a.example", false},
		{"CN ignored with DNS-ID", testpki.Spec{DNSNames: []string{"b.example"}, CommonName: "a.example"}, "a.example", false},
		{"CN ignored with SRV-ID", testpki.Spec{SRVNames: []string{"_xmpp-server.b.example"}, CommonName: "a.example"}, "a.example", false},
		{"CN ignored with XmppAddr", testpki.Spec{XmppAddrs: []string{"b.example"}, CommonName: "a.example"}, "a.example", false},
		{"no names", testpki.Spec{}, "a.example", false},
		{"IDN: U-label domain, A-label DNS-ID", testpki.Spec{DNSNames: []string{"xn--bcher-kva.example"}}, "bücher.example", true},
		{"IDN: A-label domain, A-label DNS-ID", testpki.Spec{DNSNames: []string{"xn--bcher-kva.example"}}, "XN--BCHER-KVA.example", true},
		{"IDN: U-label XmppAddr, A-label domain", testpki.Spec{XmppAddrs: []string{"bücher.example"}}, "xn--bcher-kva.example", true},
		{"IDN: U-label XmppAddr, upper-case domain", testpki.Spec{XmppAddrs: []string{"bücher.example"}}, "BÜCHER.example", true},
		{"IDN: SRV-ID", testpki.Spec{SRVNames: []string{"_xmpp-server.xn--bcher-kva.example"}}, "bücher.example", true},
		{"IDN: wildcard", testpki.Spec{DNSNames: []string{"*.xn--bcher-kva.example"}}, "chat.bücher.example", true},
		{"IDN: U-label CN", testpki.Spec{CommonName: "bücher.example"}, "xn--bcher-kva.example", true},
		{"IDN: different name", testpki.Spec{DNSNames: []string{"xn--bcher-kva.example"}}, "bucher.example", false},
		{"IP literal domain", testpki.Spec{DNSNames: []string{"192.0.2.1"}}, "192.0.2.1", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert := ca.Issue(t, tc.spec)
			err := tlsmode.VerifyPeer(peerChain(t, cert), tc.domain, tlsmode.VerifyOptions{Roots: ca.Pool()})
			ids, idErr := tlsmode.PeerIdentities(cert.Leaf)
			require.NoError(t, idErr)
			assert.Equal(t, tc.ok, ids.Match(tc.domain), "Match")
			if tc.ok {
				assert.NoError(t, err)
				return
			}
			ce := certError(t, err)
			assert.Equal(t, tlsmode.CertWrongName, ce.Problem)
			assert.True(t, ce.NameMismatch)
			assert.ErrorIs(t, err, tlsmode.ErrCertWrongName)
			assert.NotErrorIs(t, err, tlsmode.ErrCertUnknownIssuer)
			assert.Equal(t, ids, ce.Names)
			assert.Contains(t, err.Error(), "is not valid for")
			assert.Contains(t, err.Error(), "it names "+ids.String())
		})
	}
}

func TestPeerIdentities(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	cert := ca.Issue(t, testpki.Spec{
		DNSNames:   []string{"a.example", "*.a.example"},
		SRVNames:   []string{"_xmpp-server.a.example", "_xmpp-client.a.example"},
		XmppAddrs:  []string{"a.example", "bücher.example"},
		CommonName: "cn.example",
	})
	ids, err := tlsmode.PeerIdentities(cert.Leaf)
	require.NoError(t, err)
	assert.Equal(t, tlsmode.Identities{
		DNS:      []string{"a.example", "*.a.example"},
		SRV:      []string{"_xmpp-server.a.example", "_xmpp-client.a.example"},
		XmppAddr: []string{"a.example", "bücher.example"},
		CN:       "cn.example",
	}, ids)
	// x509 still sees the DNS names in the extension testpki wrote.
	assert.Equal(t, []string{"a.example", "*.a.example"}, cert.Leaf.DNSNames)
	assert.Equal(t, "DNS:a.example, DNS:*.a.example, SRV:_xmpp-server.a.example, SRV:_xmpp-client.a.example, "+
		"XmppAddr:a.example, XmppAddr:bücher.example, CN:cn.example (not used: the certificate has subjectAltNames)", ids.String())

	_, err = tlsmode.PeerIdentities(nil)
	assert.Error(t, err)
}

// With an empty subject the subjectAltName extension is critical (RFC 5280
// §4.2.1.6), and with only otherNames in it crypto/x509 calls it unhandled
// and would refuse the certificate; VerifyPeer handles it.
func TestVerifyPeerCriticalOtherNames(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	cert := ca.Issue(t, testpki.Spec{XmppAddrs: []string{"a.example"}})
	require.Empty(t, cert.Leaf.Subject.CommonName)
	require.NotEmpty(t, cert.Leaf.UnhandledCriticalExtensions, "precondition: x509 leaves the extension to us")
	_, err := cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool()})
	require.Error(t, err, "precondition: x509 alone refuses it")

	chain := peerChain(t, cert)
	assert.NoError(t, tlsmode.VerifyPeer(chain, "a.example", tlsmode.VerifyOptions{Roots: ca.Pool()}))
	assert.ErrorIs(t, tlsmode.VerifyPeer(chain, "b.example", tlsmode.VerifyOptions{Roots: ca.Pool()}), tlsmode.ErrCertWrongName)
	assert.NotEmpty(t, chain[0].UnhandledCriticalExtensions, "the caller's certificate is left alone")

	// Any other unhandled critical extension is still refused.
	chain[0].UnhandledCriticalExtensions = append(chain[0].UnhandledCriticalExtensions, asn1.ObjectIdentifier{1, 2, 3})
	err = tlsmode.VerifyPeer(chain, "a.example", tlsmode.VerifyOptions{Roots: ca.Pool()})
	assert.ErrorIs(t, err, tlsmode.ErrCertInvalid)
	assert.Contains(t, err.Error(), "critical extension")
}

func TestIdentitiesString(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "no names", tlsmode.Identities{}.String())
	assert.Equal(t, "CN:a.example", tlsmode.Identities{CN: "a.example"}.String())
	// A CN repeating a SAN name is not worth a mention; a different one is.
	assert.Equal(t, "DNS:a.example", tlsmode.Identities{DNS: []string{"a.example"}, CN: "A.example"}.String())
	assert.Equal(t, "XmppAddr:a.example", tlsmode.Identities{XmppAddr: []string{"a.example"}, CN: "a.example"}.String())
	assert.Equal(t, "SRV:_xmpp-server.a.example, CN:a.example (not used: the certificate has subjectAltNames)",
		tlsmode.Identities{SRV: []string{"_xmpp-server.a.example"}, CN: "a.example"}.String())
	// Peer-controlled text cannot break a log line or fake a list entry.
	s := tlsmode.Identities{DNS: []string{"a.example\nlevel=ERROR", "x, DNS:a.example"}}.String()
	assert.NotContains(t, s, "\n")
	assert.Equal(t, `DNS:"a.example\nlevel=ERROR", DNS:"x, DNS:a.example"`, s)
	// Long lists are cut.
	many := tlsmode.Identities{DNS: strings.Split(strings.Repeat("x.example ", 25), " ")[:25]}
	assert.True(t, strings.HasSuffix(many.String(), ", 15 more"), many.String())
	assert.Equal(t, 10, strings.Count(many.String(), "DNS:"))
}

// otherNameExt builds a subjectAltName extension with one otherName entry
// whose value has the given universal tag, for malformed cases testpki
// cannot produce.
func otherNameExt(t testing.TB, oid asn1.ObjectIdentifier, tag int, value []byte) pkix.Extension {
	t.Helper()
	str, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassUniversal, Tag: tag, Bytes: value})
	require.NoError(t, err)
	explicit, err := asn1.Marshal(asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: str})
	require.NoError(t, err)
	typeID, err := asn1.Marshal(oid)
	require.NoError(t, err)
	gns, err := asn1.Marshal([]asn1.RawValue{{Class: asn1.ClassContextSpecific, Tag: 0, IsCompound: true, Bytes: append(typeID, explicit...)}})
	require.NoError(t, err)
	return pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: gns}
}

var (
	oidXmppAddr = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 5}
	oidDNSSRV   = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 7}
	oidUPN      = asn1.ObjectIdentifier{1, 3, 6, 1, 4, 1, 311, 20, 2, 3}
)

func TestPeerIdentitiesMalformed(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name string
		ext  pkix.Extension
		want tlsmode.Identities // if no error
		err  string
	}{
		{"XmppAddr as IA5String", otherNameExt(t, oidXmppAddr, asn1.TagIA5String, []byte("a.example")), tlsmode.Identities{}, "XmppAddr"},
		{"XmppAddr invalid UTF-8", otherNameExt(t, oidXmppAddr, asn1.TagUTF8String, []byte("a\xffexample")), tlsmode.Identities{}, "UTF8String"},
		{"SRV-ID as UTF8String", otherNameExt(t, oidDNSSRV, asn1.TagUTF8String, []byte("_xmpp-server.a.example")), tlsmode.Identities{}, "SRV-ID"},
		{"SRV-ID not ASCII", otherNameExt(t, oidDNSSRV, asn1.TagIA5String, []byte("_xmpp-server.bücher.example")), tlsmode.Identities{}, "IA5String"},
		{"UPN is skipped", otherNameExt(t, oidUPN, asn1.TagUTF8String, []byte("user@a.example")), tlsmode.Identities{}, ""},
		{"not DER", pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x05, 0x82}}, tlsmode.Identities{}, "subjectAltName"},
		{"not a sequence", pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x04, 0x00}}, tlsmode.Identities{}, "SEQUENCE"},
		{"trailing data", pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x00, 0x00}}, tlsmode.Identities{}, "trailing"},
		{"universal entry", pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x02, 0x04, 0x00}}, tlsmode.Identities{}, "GeneralName"},
		{"DNS name not ASCII", pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x03, 0x82, 0x01, 0xfc}}, tlsmode.Identities{}, "IA5String"},
		{"primitive otherName", pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x02, 0x80, 0x00}}, tlsmode.Identities{}, "otherName"},
		{"DNS name", pkix.Extension{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: []byte{0x30, 0x03, 0x82, 0x01, 'a'}}, tlsmode.Identities{DNS: []string{"a"}}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			cert := &x509.Certificate{Extensions: []pkix.Extension{tc.ext}}
			ids, err := tlsmode.PeerIdentities(cert)
			if tc.err == "" {
				require.NoError(t, err)
				assert.Equal(t, tc.want, ids)
				return
			}
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.err)

			// VerifyPeer reports it before anything else.
			verr := tlsmode.VerifyPeer([]*x509.Certificate{cert}, "a.example", tlsmode.VerifyOptions{})
			ce := certError(t, verr)
			assert.Equal(t, tlsmode.CertMalformed, ce.Problem)
			assert.ErrorIs(t, verr, tlsmode.ErrCertMalformed)
			assert.Contains(t, verr.Error(), "malformed")
		})
	}
}

func TestVerifyPeerChain(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	now := time.Now()
	const domain = "a.example"

	expired := ca.Issue(t, testpki.Spec{DNSNames: []string{domain}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	future := ca.Issue(t, testpki.Spec{DNSNames: []string{domain}, NotBefore: now.Add(time.Hour), NotAfter: now.Add(48 * time.Hour)})
	selfSigned := testpki.SelfSigned(t, domain)
	inter := ca.Intermediate(t, "testpki intermediate CA")
	viaInter := inter.Issue(t, testpki.Spec{DNSNames: []string{domain}})
	longLived := inter.Issue(t, testpki.Spec{DNSNames: []string{domain}, NotAfter: now.Add(72 * time.Hour)})

	selfPool := x509.NewCertPool()
	selfPool.AddCert(selfSigned.Leaf)

	for _, tc := range []struct {
		name     string
		chain    []*x509.Certificate
		domain   string
		opts     tlsmode.VerifyOptions
		problem  tlsmode.CertProblem // 0: valid
		sentinel error
		mismatch bool
		words    []string // in the message
	}{
		{
			name: "valid", chain: peerChain(t, ca.Leaf(t, domain)), domain: domain,
			opts: tlsmode.VerifyOptions{Roots: ca.Pool()},
		},
		{
			name: "no certificate", chain: nil, domain: domain,
			problem: tlsmode.CertMissing, sentinel: tlsmode.ErrCertMissing,
			words: []string{"a.example presented no certificate"},
		},
		{
			name: "empty chain", chain: []*x509.Certificate{}, domain: domain,
			problem: tlsmode.CertMissing, sentinel: tlsmode.ErrCertMissing,
		},
		{
			name: "expired", chain: peerChain(t, expired), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertExpired, sentinel: tlsmode.ErrCertExpired,
			words: []string{"expired on " + expired.Leaf.NotAfter.UTC().Format("2006-01-02 15:04:05 UTC"), "renew"},
		},
		{
			name: "expired and wrong name", chain: peerChain(t, expired), domain: "b.example",
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertExpired, sentinel: tlsmode.ErrCertExpired, mismatch: true,
			words: []string{"expired on", `also not valid for b.example: it names DNS:a.example`},
		},
		{
			name: "expired at opts.Now", chain: peerChain(t, ca.Leaf(t, domain)), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool(), Now: now.Add(48 * time.Hour)},
			problem: tlsmode.CertExpired, sentinel: tlsmode.ErrCertExpired,
		},
		{
			name: "not yet valid", chain: peerChain(t, future), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertNotYetValid, sentinel: tlsmode.ErrCertNotYetValid,
			words: []string{"not valid until " + future.Leaf.NotBefore.UTC().Format("2006-01-02 15:04:05 UTC"), "clocks"},
		},
		{
			name: "unknown CA", chain: peerChain(t, ca.Leaf(t, domain)), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: testpki.NewCA(t).Pool()},
			problem: tlsmode.CertUnknownIssuer, sentinel: tlsmode.ErrCertUnknownIssuer,
			words: []string{`issued by "testpki root CA", an unknown CA`, "trusted CA certificates"},
		},
		{
			name: "system roots", chain: peerChain(t, ca.Leaf(t, domain)), domain: domain,
			problem: tlsmode.CertUnknownIssuer, sentinel: tlsmode.ErrCertUnknownIssuer,
			words: []string{"unknown CA"},
		},
		{
			name: "self-signed", chain: peerChain(t, selfSigned), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertUnknownIssuer, sentinel: tlsmode.ErrCertUnknownIssuer,
			words: []string{`self-signed (subject "a.example")`, "issuer is unknown"},
		},
		{
			name: "self-signed and wrong name", chain: peerChain(t, testpki.SelfSigned(t, "b.example")), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertUnknownIssuer, sentinel: tlsmode.ErrCertUnknownIssuer, mismatch: true,
			words: []string{"self-signed", "also not valid for a.example: it names DNS:b.example"},
		},
		{
			name: "self-signed, pinned", chain: peerChain(t, selfSigned), domain: domain,
			opts: tlsmode.VerifyOptions{Roots: selfPool},
		},
		{
			name: "self-signed, pinned, wrong name", chain: peerChain(t, selfSigned), domain: "b.example",
			opts:    tlsmode.VerifyOptions{Roots: selfPool},
			problem: tlsmode.CertWrongName, sentinel: tlsmode.ErrCertWrongName, mismatch: true,
			words: []string{"not valid for b.example: it names DNS:a.example", "lists b.example"},
		},
		{
			name: "intermediate sent", chain: peerChain(t, viaInter), domain: domain,
			opts: tlsmode.VerifyOptions{Roots: ca.Pool()},
		},
		{
			name: "intermediate not sent", chain: peerChain(t, viaInter)[:1], domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertUnknownIssuer, sentinel: tlsmode.ErrCertUnknownIssuer,
			words: []string{`issued by "testpki intermediate CA", an unknown CA`, "intermediate CA certificates"},
		},
		{
			name: "intermediate expired", chain: peerChain(t, longLived), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool(), Now: now.Add(30 * time.Hour)},
			problem: tlsmode.CertExpired, sentinel: tlsmode.ErrCertExpired,
			words: []string{`CA certificate "testpki intermediate CA", which expired on`},
		},
		{
			name: "serverAuth only", chain: peerChain(t, ca.Issue(t, testpki.Spec{DNSNames: []string{domain}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})), domain: domain,
			opts: tlsmode.VerifyOptions{Roots: ca.Pool()},
		},
		{
			name: "clientAuth only", chain: peerChain(t, ca.Issue(t, testpki.Spec{DNSNames: []string{domain}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})), domain: domain,
			opts: tlsmode.VerifyOptions{Roots: ca.Pool()},
		},
		{
			name: "any usage", chain: peerChain(t, ca.Issue(t, testpki.Spec{DNSNames: []string{domain}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}})), domain: domain,
			opts: tlsmode.VerifyOptions{Roots: ca.Pool()},
		},
		{
			name: "e-mail usage", chain: peerChain(t, ca.Issue(t, testpki.Spec{DNSNames: []string{domain}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageEmailProtection}})), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertBadUsage, sentinel: tlsmode.ErrCertBadUsage,
			words: []string{"extended key usage", "serverAuth"},
		},
		{
			name: "nil in chain", chain: append(peerChain(t, viaInter)[:1], nil), domain: domain,
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertMalformed, sentinel: tlsmode.ErrCertMalformed,
		},
		{
			name: "IDN wrong name shows the A-label", chain: peerChain(t, ca.Leaf(t, domain)), domain: "bücher.example",
			opts:    tlsmode.VerifyOptions{Roots: ca.Pool()},
			problem: tlsmode.CertWrongName, sentinel: tlsmode.ErrCertWrongName, mismatch: true,
			words: []string{"not valid for bücher.example (xn--bcher-kva.example): it names DNS:a.example"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			err := tlsmode.VerifyPeer(tc.chain, tc.domain, tc.opts)
			if tc.problem == 0 {
				require.NoError(t, err)
				return
			}
			ce := certError(t, err)
			assert.Equal(t, tc.problem, ce.Problem, "%v", err)
			assert.Equal(t, tc.domain, ce.Domain)
			assert.ErrorIs(t, err, tc.sentinel)
			assert.Equal(t, tc.mismatch, ce.NameMismatch)
			if tc.mismatch {
				assert.ErrorIs(t, err, tlsmode.ErrCertWrongName)
			} else {
				assert.NotErrorIs(t, err, tlsmode.ErrCertWrongName)
			}
			msg := err.Error()
			assert.True(t, strings.HasPrefix(msg, "tlsmode: "), msg)
			assert.NotContains(t, msg, "\n")
			for _, w := range tc.words {
				assert.Contains(t, msg, w)
			}
		})
	}
}

func TestVerifyPeerDetails(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	now := time.Now()
	expired := ca.Issue(t, testpki.Spec{DNSNames: []string{"a.example"}, NotBefore: now.Add(-48 * time.Hour), NotAfter: now.Add(-time.Hour)})
	ce := certError(t, tlsmode.VerifyPeer(peerChain(t, expired), "a.example", tlsmode.VerifyOptions{Roots: ca.Pool()}))
	assert.Equal(t, expired.Leaf, ce.Cert)
	assert.Equal(t, expired.Leaf.NotAfter, ce.NotAfter)
	assert.Equal(t, expired.Leaf.NotBefore, ce.NotBefore)

	// Unknown issuer: the x509 error is kept.
	err := tlsmode.VerifyPeer(peerChain(t, ca.Leaf(t, "a.example")), "a.example", tlsmode.VerifyOptions{Roots: testpki.NewCA(t).Pool()})
	ce = certError(t, err)
	assert.Equal(t, "testpki root CA", ce.Issuer)
	assert.False(t, ce.SelfSigned)
	var unknown x509.UnknownAuthorityError
	assert.ErrorAs(t, err, &unknown)

	ce = certError(t, tlsmode.VerifyPeer(peerChain(t, testpki.SelfSigned(t, "a.example")), "a.example", tlsmode.VerifyOptions{Roots: ca.Pool()}))
	assert.True(t, ce.SelfSigned)
	assert.Equal(t, "a.example", ce.Issuer)
}

func TestVerifyPeerBadDomain(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	chain := peerChain(t, ca.Leaf(t, "a.example"))
	for _, d := range []string{"", ".", "a b.example", "*.example", "-a.example", "[not-ip]"} {
		err := tlsmode.VerifyPeer(chain, d, tlsmode.VerifyOptions{Roots: ca.Pool()})
		require.Error(t, err, "%q", d)
		var ce *tlsmode.CertError
		assert.False(t, errors.As(err, &ce), "%q: the caller's fault is not a certificate problem", d)
		assert.False(t, tlsmode.Identities{DNS: []string{d}}.Match(d), "%q", d)
	}
}

func TestCertProblemString(t *testing.T) {
	t.Parallel()
	seen := map[string]bool{}
	for p := tlsmode.CertMissing; p <= tlsmode.CertInvalid; p++ {
		s := p.String()
		assert.NotContains(t, s, "CertProblem(")
		assert.False(t, seen[s], s)
		seen[s] = true
	}
	assert.Equal(t, "CertProblem(0)", tlsmode.CertProblem(0).String())
	assert.Equal(t, "expired", tlsmode.CertExpired.String())
}

// TestVerifyState runs real handshakes: encryption is set up whatever the
// certificate, and VerifyState judges it afterwards on both sides, or
// during the handshake through VerifyConnection.
func TestVerifyState(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	opts := tlsmode.VerifyOptions{Roots: ca.Pool()}
	// Only SRV-ID and XmppAddr: crypto/tls alone would refuse it for the domain.
	serverCert := ca.Issue(t, testpki.Spec{SRVNames: []string{"_xmpp-server.b.example"}, XmppAddrs: []string{"b.example"}})
	clientCert := ca.Issue(t, testpki.Spec{XmppAddrs: []string{"a.example"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})

	handshake := func(t *testing.T, clientCfg *tls.Config) (client, server tls.ConnectionState, clientErr error) {
		t.Helper()
		c, s := net.Pipe()
		defer c.Close()
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		srv := tls.Server(s, tlsmode.ServerConfig(&tls.Config{Certificates: []tls.Certificate{serverCert}}))
		done := make(chan tls.ConnectionState, 1)
		go func() {
			_ = srv.HandshakeContext(ctx)
			done <- srv.ConnectionState()
		}()
		cl := tls.Client(c, clientCfg)
		clientErr = cl.HandshakeContext(ctx)
		if clientErr != nil {
			c.Close() // unblock the server
		}
		server = <-done
		return cl.ConnectionState(), server, clientErr
	}

	base, err := tlsmode.ClientConfig(&tls.Config{Certificates: []tls.Certificate{clientCert}, InsecureSkipVerify: true}, "b.example", false)
	require.NoError(t, err)

	t.Run("after the handshake", func(t *testing.T) {
		t.Parallel()
		client, server, err := handshake(t, base)
		require.NoError(t, err)
		assert.NoError(t, tlsmode.VerifyState(client, "b.example", opts))
		assert.NoError(t, tlsmode.VerifyState(server, "a.example", opts))
		// A peer claiming another domain is caught.
		assert.ErrorIs(t, tlsmode.VerifyState(server, "c.example", opts), tlsmode.ErrCertWrongName)
		assert.ErrorIs(t, tlsmode.VerifyState(client, "b.example", tlsmode.VerifyOptions{Roots: testpki.NewCA(t).Pool()}), tlsmode.ErrCertUnknownIssuer)
	})
	t.Run("no client certificate", func(t *testing.T) {
		t.Parallel()
		cfg := base.Clone()
		cfg.Certificates = nil
		_, server, err := handshake(t, cfg)
		require.NoError(t, err)
		assert.ErrorIs(t, tlsmode.VerifyState(server, "a.example", opts), tlsmode.ErrCertMissing)
	})
	t.Run("in the handshake", func(t *testing.T) {
		t.Parallel()
		for _, tc := range []struct {
			domain string
			err    error
		}{{"b.example", nil}, {"c.example", tlsmode.ErrCertWrongName}} {
			cfg := base.Clone()
			cfg.VerifyConnection = func(cs tls.ConnectionState) error {
				return tlsmode.VerifyState(cs, tc.domain, opts)
			}
			_, _, err := handshake(t, cfg)
			if tc.err == nil {
				assert.NoError(t, err)
				continue
			}
			assert.ErrorIs(t, err, tc.err)
			var ce *tlsmode.CertError
			assert.ErrorAs(t, err, &ce)
		}
	})
}

// FuzzPeerIdentities feeds arbitrary subjectAltName extension values to the
// parser. Whatever it accepts must be usable: ASCII DNS and SRV names, valid
// UTF-8 XmppAddrs, a one-line String, and a Match that does not panic.
func FuzzPeerIdentities(f *testing.F) {
	ca := testpki.NewCA(f)
	for _, spec := range []testpki.Spec{
		{DNSNames: []string{"a.example", "*.a.example"}},
		{SRVNames: []string{"_xmpp-server.a.example"}, XmppAddrs: []string{"bücher.example"}},
		{DNSNames: []string{"a.example"}, SRVNames: []string{"_xmpps-server.a.example"}, XmppAddrs: []string{"a.example"}},
	} {
		for _, ext := range ca.Issue(f, spec).Leaf.Extensions {
			if ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
				f.Add(ext.Value)
			}
		}
	}
	f.Add(otherNameExt(f, oidXmppAddr, asn1.TagIA5String, []byte("a.example")).Value)
	f.Add(otherNameExt(f, oidUPN, asn1.TagUTF8String, []byte("user@a.example")).Value)
	f.Add([]byte{0x30, 0x00})
	f.Add([]byte{0x30, 0x80, 0x00, 0x00}) // indefinite length: not DER
	f.Add([]byte{})

	f.Fuzz(func(t *testing.T, der []byte) {
		cert := &x509.Certificate{
			Subject:    pkix.Name{CommonName: "cn.example"},
			Extensions: []pkix.Extension{{Id: asn1.ObjectIdentifier{2, 5, 29, 17}, Value: der}},
		}
		ids, err := tlsmode.PeerIdentities(cert)
		if err != nil {
			if ids.DNS != nil || ids.SRV != nil || ids.XmppAddr != nil {
				t.Fatalf("identities %v returned with error %v", ids, err)
			}
			return
		}
		for _, s := range append(append([]string(nil), ids.DNS...), ids.SRV...) {
			for i := 0; i < len(s); i++ {
				if s[i] >= utf8.RuneSelf {
					t.Fatalf("non-ASCII DNS or SRV name %q", s)
				}
			}
		}
		for _, s := range ids.XmppAddr {
			if !utf8.ValidString(s) {
				t.Fatalf("invalid UTF-8 XmppAddr %q", s)
			}
		}
		if str := ids.String(); strings.ContainsAny(str, "\n\r") {
			t.Fatalf("String has a line break: %q", str)
		}
		if ids.Match("cn.example") && (len(ids.DNS) > 0 || len(ids.SRV) > 0 || len(ids.XmppAddr) > 0) {
			// The CN must not count once a SAN identifier is present.
			noCN := ids
			noCN.CN = ""
			if !noCN.Match("cn.example") {
				t.Fatalf("CN used despite SAN identifiers %v", ids)
			}
		}
		for _, name := range append(append(append([]string(nil), ids.DNS...), ids.XmppAddr...), ids.SRV...) {
			_ = ids.Match(name)
		}
	})
}
