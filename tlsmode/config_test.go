package tlsmode

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/jid"
)

func TestClientConfig(t *testing.T) {
	t.Parallel()
	remote := jid.MustParse("b.test")

	c, err := clientConfig(nil, remote)
	require.NoError(t, err)
	assert.Equal(t, "b.test", c.ServerName)
	assert.Equal(t, uint16(tls.VersionTLS12), c.MinVersion)

	pool := x509.NewCertPool()
	orig := &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS10}
	c, err = clientConfig(orig, remote)
	require.NoError(t, err)
	assert.NotSame(t, orig, c)
	assert.Equal(t, "b.test", c.ServerName)
	assert.Equal(t, uint16(tls.VersionTLS12), c.MinVersion, "RFC 7590 floor")
	assert.Same(t, pool, c.RootCAs)
	assert.Empty(t, orig.ServerName, "caller's config untouched")
	assert.Equal(t, uint16(tls.VersionTLS10), orig.MinVersion, "caller's config untouched")

	// An explicit ServerName is the caller's choice; a higher minimum stays.
	c, err = clientConfig(&tls.Config{ServerName: "pinned.test", MinVersion: tls.VersionTLS13}, remote)
	require.NoError(t, err)
	assert.Equal(t, "pinned.test", c.ServerName)
	assert.Equal(t, uint16(tls.VersionTLS13), c.MinVersion)

	// The domainpart only, in A-label form (SNI and dNSName SANs are ASCII).
	for in, want := range map[string]string{
		"user@b.test/res":    "b.test",
		"bücher.test":        "xn--bcher-kva.test",
		"xn--bcher-kva.test": "xn--bcher-kva.test",
		"B.Test":             "b.test",
	} {
		c, err = clientConfig(nil, jid.MustParse(in))
		require.NoError(t, err, in)
		assert.Equal(t, want, c.ServerName, in)
	}

	_, err = clientConfig(nil, jid.JID{})
	assert.Error(t, err)
}

func TestServerConfig(t *testing.T) {
	t.Parallel()
	assert.Nil(t, serverConfig(nil))

	modern := &tls.Config{MinVersion: tls.VersionTLS13}
	assert.Same(t, modern, serverConfig(modern))

	for _, v := range []uint16{0, tls.VersionTLS10, tls.VersionTLS11} {
		orig := &tls.Config{MinVersion: v, Certificates: []tls.Certificate{{}}}
		c := serverConfig(orig)
		assert.NotSame(t, orig, c)
		assert.Equal(t, uint16(tls.VersionTLS12), c.MinVersion)
		assert.Len(t, c.Certificates, 1)
		assert.Equal(t, v, orig.MinVersion, "caller's config untouched")
	}
}

func TestHasCertificate(t *testing.T) {
	t.Parallel()
	assert.False(t, hasCertificate(nil))
	assert.False(t, hasCertificate(&tls.Config{}))
	assert.True(t, hasCertificate(&tls.Config{Certificates: []tls.Certificate{{}}}))
	assert.True(t, hasCertificate(&tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }}))
	assert.True(t, hasCertificate(&tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil }}))
}
