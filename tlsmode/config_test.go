package tlsmode_test

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// cfgSnapshot is what ClientConfig and ServerConfig could be tempted to
// change in the caller's config.
type cfgSnapshot struct {
	ServerName      string
	MinVersion      uint16
	NextProtos      []string
	ClientAuth      tls.ClientAuthType
	HasConfigForCli bool
}

func snapshot(c *tls.Config) *cfgSnapshot {
	if c == nil {
		return nil
	}
	return &cfgSnapshot{
		ServerName:      c.ServerName,
		MinVersion:      c.MinVersion,
		NextProtos:      append([]string(nil), c.NextProtos...),
		ClientAuth:      c.ClientAuth,
		HasConfigForCli: c.GetConfigForClient != nil,
	}
}

func TestClientConfig(t *testing.T) {
	t.Parallel()
	pool := x509.NewCertPool()
	for _, tc := range []struct {
		name       string
		cfg        *tls.Config
		domain     string
		directTLS  bool
		serverName string
		minVersion uint16
		nextProtos []string
		wantErr    bool
	}{
		{name: "nil config", domain: "b.test", serverName: "b.test", minVersion: tls.VersionTLS12},
		{name: "empty config", cfg: &tls.Config{}, domain: "b.test", serverName: "b.test", minVersion: tls.VersionTLS12},
		{name: "TLS 1.0 raised", cfg: &tls.Config{MinVersion: tls.VersionTLS10, RootCAs: pool}, domain: "b.test",
			serverName: "b.test", minVersion: tls.VersionTLS12},
		{name: "TLS 1.3 kept", cfg: &tls.Config{MinVersion: tls.VersionTLS13}, domain: "b.test",
			serverName: "b.test", minVersion: tls.VersionTLS13},
		{name: "pinned ServerName kept", cfg: &tls.Config{ServerName: "pinned.test"}, domain: "b.test",
			serverName: "pinned.test", minVersion: tls.VersionTLS12},

		// Direct TLS (XEP-0368) announces ALPN xmpp-server; STARTTLS does not.
		{name: "direct TLS ALPN", domain: "b.test", directTLS: true,
			serverName: "b.test", minVersion: tls.VersionTLS12, nextProtos: []string{"xmpp-server"}},
		{name: "direct TLS keeps caller's ALPN", cfg: &tls.Config{NextProtos: []string{"x-custom"}}, domain: "b.test", directTLS: true,
			serverName: "b.test", minVersion: tls.VersionTLS12, nextProtos: []string{"x-custom"}},
		{name: "STARTTLS keeps caller's ALPN", cfg: &tls.Config{NextProtos: []string{"x-custom"}}, domain: "b.test",
			serverName: "b.test", minVersion: tls.VersionTLS12, nextProtos: []string{"x-custom"}},

		// The domain in A-label form: SNI and dNSName SANs are ASCII.
		{name: "IDN to A-label", domain: "bücher.test", serverName: "xn--bcher-kva.test", minVersion: tls.VersionTLS12},
		{name: "IDN upper case", domain: "BÜCHER.Test", serverName: "xn--bcher-kva.test", minVersion: tls.VersionTLS12},
		{name: "A-label kept", domain: "xn--bcher-kva.test", serverName: "xn--bcher-kva.test", minVersion: tls.VersionTLS12},
		{name: "ASCII lower-cased", domain: "B.Test", serverName: "b.test", minVersion: tls.VersionTLS12},
		{name: "trailing dot", domain: "b.test.", serverName: "b.test", minVersion: tls.VersionTLS12},
		{name: "IDN direct TLS", domain: "bücher.test", directTLS: true,
			serverName: "xn--bcher-kva.test", minVersion: tls.VersionTLS12, nextProtos: []string{"xmpp-server"}},
		{name: "IPv4 literal", domain: "192.0.2.1", serverName: "192.0.2.1", minVersion: tls.VersionTLS12},
		{name: "IPv6 literal", domain: "[2001:DB8::1]", serverName: "2001:db8::1", minVersion: tls.VersionTLS12},

		{name: "empty domain", domain: "", wantErr: true},
		{name: "empty domain, direct TLS", domain: "", directTLS: true, wantErr: true},
		{name: "empty domain, pinned ServerName", cfg: &tls.Config{ServerName: "pinned.test"}, domain: "", wantErr: true},
		{name: "only a dot", domain: ".", wantErr: true},
		{name: "space in domain", domain: "b test", wantErr: true},
		{name: "bad IP literal", domain: "[b.test]", wantErr: true},
		{name: "IPv6 with zone", domain: "[fe80::1%eth0]", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := snapshot(tc.cfg)
			c, err := tlsmode.ClientConfig(tc.cfg, tc.domain, tc.directTLS)
			assert.Equal(t, before, snapshot(tc.cfg), "caller's config unchanged")
			if tc.wantErr {
				assert.Error(t, err)
				assert.Nil(t, c)
				return
			}
			require.NoError(t, err)
			require.NotNil(t, c)
			assert.NotSame(t, tc.cfg, c, "a new config")
			assert.Equal(t, tc.serverName, c.ServerName)
			assert.Equal(t, tc.minVersion, c.MinVersion)
			assert.Equal(t, tc.nextProtos, c.NextProtos)
			if tc.cfg != nil {
				assert.Same(t, tc.cfg.RootCAs, c.RootCAs, "caller's settings carried over")
			}
		})
	}
}

func TestServerConfig(t *testing.T) {
	t.Parallel()
	leaf := tls.Certificate{Certificate: [][]byte{{1}}}
	for _, tc := range []struct {
		name       string
		cfg        *tls.Config
		minVersion uint16
		clientAuth tls.ClientAuthType
	}{
		{name: "nil config", minVersion: tls.VersionTLS12, clientAuth: tls.RequestClientCert},
		{name: "empty config", cfg: &tls.Config{}, minVersion: tls.VersionTLS12, clientAuth: tls.RequestClientCert},
		{name: "TLS 1.0 raised", cfg: &tls.Config{MinVersion: tls.VersionTLS10, Certificates: []tls.Certificate{leaf}},
			minVersion: tls.VersionTLS12, clientAuth: tls.RequestClientCert},
		{name: "TLS 1.1 raised", cfg: &tls.Config{MinVersion: tls.VersionTLS11},
			minVersion: tls.VersionTLS12, clientAuth: tls.RequestClientCert},
		{name: "TLS 1.3 kept", cfg: &tls.Config{MinVersion: tls.VersionTLS13},
			minVersion: tls.VersionTLS13, clientAuth: tls.RequestClientCert},
		{name: "VerifyClientCertIfGiven kept", cfg: &tls.Config{ClientAuth: tls.VerifyClientCertIfGiven},
			minVersion: tls.VersionTLS12, clientAuth: tls.VerifyClientCertIfGiven},
		{name: "RequireAndVerifyClientCert kept", cfg: &tls.Config{ClientAuth: tls.RequireAndVerifyClientCert, MinVersion: tls.VersionTLS13},
			minVersion: tls.VersionTLS13, clientAuth: tls.RequireAndVerifyClientCert},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			before := snapshot(tc.cfg)
			c := tlsmode.ServerConfig(tc.cfg)
			assert.Equal(t, before, snapshot(tc.cfg), "caller's config unchanged")
			require.NotNil(t, c)
			assert.NotSame(t, tc.cfg, c, "a clone")
			assert.Equal(t, tc.minVersion, c.MinVersion)
			assert.Equal(t, tc.clientAuth, c.ClientAuth)
			assert.Nil(t, c.GetConfigForClient)
			if tc.cfg != nil {
				assert.Len(t, c.Certificates, len(tc.cfg.Certificates), "caller's settings carried over")
			}
		})
	}
}

// TestServerConfigGetConfigForClient: the config chosen per client gets the
// same floor and client-certificate request, without modifying it.
func TestServerConfigGetConfigForClient(t *testing.T) {
	t.Parallel()
	errNoConfig := errors.New("no config for you")
	for _, tc := range []struct {
		name       string
		returned   *tls.Config
		err        error
		minVersion uint16
		clientAuth tls.ClientAuthType
		same       bool // the returned config needed no change and is passed on as is
	}{
		{name: "old and no client auth", returned: &tls.Config{MinVersion: tls.VersionTLS10},
			minVersion: tls.VersionTLS12, clientAuth: tls.RequestClientCert},
		{name: "zero config", returned: &tls.Config{},
			minVersion: tls.VersionTLS12, clientAuth: tls.RequestClientCert},
		{name: "modern, no client auth", returned: &tls.Config{MinVersion: tls.VersionTLS13},
			minVersion: tls.VersionTLS13, clientAuth: tls.RequestClientCert},
		{name: "old, strict client auth", returned: &tls.Config{MinVersion: tls.VersionTLS11, ClientAuth: tls.VerifyClientCertIfGiven},
			minVersion: tls.VersionTLS12, clientAuth: tls.VerifyClientCertIfGiven},
		{name: "already compliant", returned: &tls.Config{MinVersion: tls.VersionTLS12, ClientAuth: tls.RequestClientCert},
			minVersion: tls.VersionTLS12, clientAuth: tls.RequestClientCert, same: true},
		{name: "nil: use the outer config", returned: nil},
		{name: "error passed on", err: errNoConfig},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			hello := &tls.ClientHelloInfo{ServerName: "b.test"}
			var gotHello *tls.ClientHelloInfo
			orig := &tls.Config{
				MinVersion: tls.VersionTLS10,
				GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
					gotHello = h
					return tc.returned, tc.err
				},
			}
			before, returnedBefore := snapshot(orig), snapshot(tc.returned)

			c := tlsmode.ServerConfig(orig)
			assert.Equal(t, uint16(tls.VersionTLS12), c.MinVersion)
			require.NotNil(t, c.GetConfigForClient)
			got, err := c.GetConfigForClient(hello)
			assert.Same(t, hello, gotHello)
			assert.Equal(t, before, snapshot(orig), "caller's config unchanged")
			assert.Equal(t, returnedBefore, snapshot(tc.returned), "config from the caller's GetConfigForClient unchanged")

			if tc.err != nil {
				assert.ErrorIs(t, err, tc.err)
				return
			}
			require.NoError(t, err)
			if tc.returned == nil {
				assert.Nil(t, got)
				return
			}
			require.NotNil(t, got)
			if tc.same {
				assert.Same(t, tc.returned, got)
			} else {
				assert.NotSame(t, tc.returned, got)
			}
			assert.Equal(t, tc.minVersion, got.MinVersion)
			assert.Equal(t, tc.clientAuth, got.ClientAuth)

			// The caller's own function is still the unwrapped one.
			raw, _ := orig.GetConfigForClient(hello)
			assert.Same(t, tc.returned, raw)
		})
	}
}

// handshakeResult is both sides' errors and the server's view of the
// connection.
type handshakeResult struct {
	serverErr, clientErr error
	serverState          tls.ConnectionState
}

// handshake runs a TLS handshake over an in-memory pipe.
func handshake(t *testing.T, serverCfg, clientCfg *tls.Config) handshakeResult {
	t.Helper()
	sc, cc := net.Pipe()
	defer sc.Close()
	defer cc.Close()
	srv := tls.Server(sc, serverCfg)
	done := make(chan error, 1)
	go func() {
		err := srv.Handshake()
		if err != nil {
			_ = sc.Close() // unblock the client
		}
		done <- err
	}()
	clientErr := tls.Client(cc, clientCfg).Handshake()
	if clientErr != nil {
		_ = cc.Close()
	}
	serverErr := <-done
	return handshakeResult{serverErr: serverErr, clientErr: clientErr, serverState: srv.ConnectionState()}
}

// TestServerConfigHandshake checks ServerConfig's effect on real handshakes:
// the TLS 1.2 floor holds for a config chosen by GetConfigForClient, and an
// unverifiable client certificate is requested and accepted.
func TestServerConfigHandshake(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	perClient := &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, "b.test")}, MinVersion: tls.VersionTLS10}
	raw := &tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return perClient, nil }}

	oldClient := &tls.Config{RootCAs: ca.Pool(), ServerName: "b.test", MinVersion: tls.VersionTLS10, MaxVersion: tls.VersionTLS11}
	// Control: without ServerConfig the per-client config allows TLS 1.1.
	res := handshake(t, raw, oldClient)
	require.NoError(t, res.clientErr, "TLS 1.1 works without ServerConfig")
	require.NoError(t, res.serverErr)

	res = handshake(t, tlsmode.ServerConfig(raw), oldClient)
	assert.Error(t, res.clientErr, "TLS 1.1 refused")
	assert.ErrorContains(t, res.serverErr, "version")
	assert.Equal(t, uint16(tls.VersionTLS10), perClient.MinVersion, "per-client config unchanged")

	// A self-signed client certificate (unverifiable) is asked for, received,
	// and does not fail the handshake.
	client := &tls.Config{RootCAs: ca.Pool(), ServerName: "b.test", Certificates: []tls.Certificate{testpki.SelfSigned(t, "a.test")}}
	for name, cfg := range map[string]*tls.Config{
		"Certificates":       {Certificates: []tls.Certificate{ca.Leaf(t, "b.test")}},
		"GetConfigForClient": raw,
	} {
		res := handshake(t, tlsmode.ServerConfig(cfg), client)
		require.NoError(t, res.clientErr, name)
		require.NoError(t, res.serverErr, name)
		require.Len(t, res.serverState.PeerCertificates, 1, name)
		assert.Equal(t, []string{"a.test"}, res.serverState.PeerCertificates[0].DNSNames, name)
		assert.GreaterOrEqual(t, res.serverState.Version, uint16(tls.VersionTLS12), name)
	}
}

// TestClientConfigHandshake: the config verifies the certificate against
// the A-label form of an IDN domain and offers ALPN for direct TLS.
func TestClientConfigHandshake(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	server := tlsmode.ServerConfig(&tls.Config{
		Certificates: []tls.Certificate{ca.Leaf(t, "xn--bcher-kva.test")},
		NextProtos:   []string{"xmpp-server"},
	})
	client, err := tlsmode.ClientConfig(&tls.Config{RootCAs: ca.Pool()}, "bücher.test", true)
	require.NoError(t, err)
	res := handshake(t, server, client)
	require.NoError(t, res.clientErr)
	require.NoError(t, res.serverErr)
	assert.Equal(t, "xmpp-server", res.serverState.NegotiatedProtocol)
	assert.Equal(t, "xn--bcher-kva.test", res.serverState.ServerName)
}
