package testpki_test

import (
	"crypto/x509"
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
