package testpki_test

import (
	"crypto/x509"
	"encoding/asn1"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/xmppfed/xmppfed/internal/testpki"
)

func TestMain(m *testing.M) {
	goleak.VerifyTestMain(m)
}

func verify(cert *x509.Certificate, roots *x509.CertPool, name string, at time.Time) error {
	_, err := cert.Verify(x509.VerifyOptions{
		DNSName:     name,
		Roots:       roots,
		CurrentTime: at,
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	})
	return err
}

func TestLeaf(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	leaf := ca.Leaf(t, "a.test", "conference.a.test")
	require.NotNil(t, leaf.Leaf)
	require.NotNil(t, leaf.PrivateKey)
	require.Len(t, leaf.Certificate, 1)

	now := time.Now()
	for _, tc := range []struct {
		name string
		ok   bool
	}{
		{"a.test", true},
		{"conference.a.test", true},
		{"A.TEST", true},
		{"b.test", false},
		{"x.a.test", false},
	} {
		err := verify(leaf.Leaf, ca.Pool(), tc.name, now)
		if tc.ok {
			assert.NoError(t, err, tc.name)
		} else {
			assert.Error(t, err, tc.name)
		}
	}

	// Client authentication is allowed too (S2S peers present certificates
	// both ways).
	_, err := leaf.Leaf.Verify(x509.VerifyOptions{
		Roots:     ca.Pool(),
		KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	assert.NoError(t, err)

	// Another CA does not vouch for it.
	assert.Error(t, verify(leaf.Leaf, testpki.NewCA(t).Pool(), "a.test", now))
}

func TestIssueValidity(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	now := time.Now()
	expired := ca.Issue(t, testpki.Spec{
		DNSNames:  []string{"old.test"},
		NotBefore: now.Add(-48 * time.Hour),
		NotAfter:  now.Add(-time.Hour),
	})
	err := verify(expired.Leaf, ca.Pool(), "old.test", now)
	var invalid x509.CertificateInvalidError
	require.ErrorAs(t, err, &invalid)
	assert.Equal(t, x509.Expired, invalid.Reason)

	cnOnly := ca.Issue(t, testpki.Spec{CommonName: "cn.test"})
	assert.Equal(t, "cn.test", cnOnly.Leaf.Subject.CommonName)
	assert.Empty(t, cnOnly.Leaf.DNSNames)
}

func TestSelfSigned(t *testing.T) {
	t.Parallel()
	cert := testpki.SelfSigned(t, "self.test")
	pool := x509.NewCertPool()
	pool.AddCert(cert.Leaf)
	now := time.Now()
	assert.NoError(t, verify(cert.Leaf, pool, "self.test", now))
	assert.Error(t, verify(cert.Leaf, pool, "other.test", now))
	assert.Error(t, verify(cert.Leaf, testpki.NewCA(t).Pool(), "self.test", now))
}

func TestIntermediate(t *testing.T) {
	t.Parallel()
	root := testpki.NewCA(t)
	inter := root.Intermediate(t, "test intermediate")
	assert.Equal(t, "test intermediate", inter.Certificate().Subject.CommonName)
	leaf := inter.Leaf(t, "a.test")
	require.Len(t, leaf.Certificate, 2, "leaf, then the intermediate")
	assert.Equal(t, inter.Certificate().Raw, leaf.Certificate[1])

	verifyVia := func(intermediates ...[]byte) error {
		pool := x509.NewCertPool()
		for _, der := range intermediates {
			c, err := x509.ParseCertificate(der)
			require.NoError(t, err)
			pool.AddCert(c)
		}
		_, err := leaf.Leaf.Verify(x509.VerifyOptions{DNSName: "a.test", Roots: root.Pool(), Intermediates: pool})
		return err
	}
	assert.NoError(t, verifyVia(leaf.Certificate[1:]...))
	var unknown x509.UnknownAuthorityError
	assert.ErrorAs(t, verifyVia(), &unknown, "without the intermediate there is no chain")
}

// san is a decoded GeneralName: tag, and for otherName the type and the
// universal tag of the value.
type san struct {
	tag      int
	oid      string
	valueTag int
	value    string
}

func decodeSAN(t *testing.T, cert *x509.Certificate) (names []san, critical bool) {
	t.Helper()
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(asn1.ObjectIdentifier{2, 5, 29, 17}) {
			continue
		}
		var raw []asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &raw)
		require.NoError(t, err)
		require.Empty(t, rest)
		for _, gn := range raw {
			n := san{tag: gn.Tag, value: string(gn.Bytes)}
			if gn.Tag == 0 {
				var other struct {
					ID    asn1.ObjectIdentifier
					Value asn1.RawValue `asn1:"explicit,tag:0"`
				}
				_, err := asn1.UnmarshalWithParams(gn.FullBytes, &other, "tag:0")
				require.NoError(t, err)
				var v asn1.RawValue
				_, err = asn1.Unmarshal(other.Value.Bytes, &v)
				require.NoError(t, err)
				n.oid, n.valueTag, n.value = other.ID.String(), v.Tag, string(v.Bytes)
			}
			names = append(names, n)
		}
		return names, ext.Critical
	}
	return nil, false
}

func TestIssueOtherNames(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	cert := ca.Issue(t, testpki.Spec{
		DNSNames:  []string{"a.test"},
		SRVNames:  []string{"_xmpp-server.a.test"},
		XmppAddrs: []string{"bücher.test"},
	})
	names, critical := decodeSAN(t, cert.Leaf)
	assert.Equal(t, []san{
		{tag: 2, value: "a.test"},
		{tag: 0, oid: "1.3.6.1.5.5.7.8.7", valueTag: asn1.TagIA5String, value: "_xmpp-server.a.test"},
		{tag: 0, oid: "1.3.6.1.5.5.7.8.5", valueTag: asn1.TagUTF8String, value: "bücher.test"},
	}, names)
	assert.False(t, critical, "the subject has a CN")
	assert.Equal(t, "a.test", cert.Leaf.Subject.CommonName)
	assert.Equal(t, []string{"a.test"}, cert.Leaf.DNSNames, "x509 still reads the DNS names")
	assert.NoError(t, verify(cert.Leaf, ca.Pool(), "a.test", time.Now()))

	// No CN: empty subject, so the extension is critical (RFC 5280).
	bare := ca.Issue(t, testpki.Spec{XmppAddrs: []string{"a.test"}})
	names, critical = decodeSAN(t, bare.Leaf)
	assert.Len(t, names, 1)
	assert.True(t, critical)
	assert.Empty(t, bare.Leaf.Subject.CommonName)

	// Without otherNames, x509 writes the extension as before.
	plain := ca.Leaf(t, "a.test")
	names, critical = decodeSAN(t, plain.Leaf)
	assert.Equal(t, []san{{tag: 2, value: "a.test"}}, names)
	assert.False(t, critical)
}

func TestIssueExtKeyUsage(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	both := ca.Leaf(t, "a.test")
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, both.Leaf.ExtKeyUsage)

	serverOnly := ca.Issue(t, testpki.Spec{DNSNames: []string{"a.test"}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	assert.Equal(t, []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, serverOnly.Leaf.ExtKeyUsage)
	_, err := serverOnly.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	var invalid x509.CertificateInvalidError
	require.ErrorAs(t, err, &invalid)
	assert.Equal(t, x509.IncompatibleUsage, invalid.Reason)
}
