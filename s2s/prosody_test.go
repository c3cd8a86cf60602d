package s2s_test

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/prosodytest"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// TestProsodyDialback federates with a real Prosody in both directions: our
// originating role authenticates to Prosody by dialback (Prosody verifies
// the key with our authoritative role), then an XEP-0199 ping we send makes
// Prosody open its own stream to us, which our receiving role verifies with
// Prosody's authoritative role before the pong is delivered.
func TestProsodyDialback(t *testing.T) {
	for _, mode := range []tlsmode.Mode{tlsmode.NoTLS, tlsmode.Required} {
		t.Run(mode.String(), func(t *testing.T) {
			prosodytest.Require(t)
			n := newTestNet(t)
			g := n.server([]string{"g.example"}, withMode(mode))
			p := startProsody(t, n, prosodytest.Config{
				Hosts:             []prosodytest.Host{{Domain: "p.example"}},
				RequireEncryption: mode == tlsmode.Required,
			})
			ctx := ctxT(t, 30*time.Second)
			s, err := g.ep.Dial(ctx, "g.example", "p.example")
			require.NoError(t, err, "Prosody log:\n%s", tail(p.Log()))
			defer s.Close()
			info := s.Info()
			assert.Equal(t, s2s.AuthDialback, info.Auth)
			assert.Equal(t, mode == tlsmode.Required, info.TLS)
			if mode == tlsmode.Required {
				assert.ErrorIs(t, info.CertError, tlsmode.ErrCertUnknownIssuer, "Prosody's certificate is self-signed")
			}

			ping, err := s2s.ParseStanza([]byte("<iq type='get' id='ping-1' from='g.example' to='p.example'><ping xmlns='urn:xmpp:ping'/></iq>"))
			require.NoError(t, err)
			require.NoError(t, s.Send(ctx, ping))
			select {
			case st := <-g.got:
				assert.Equal(t, "iq", st.Name)
				assert.Equal(t, "result", st.Type)
				assert.Equal(t, "ping-1", st.ID)
				assert.Equal(t, "p.example", st.From.String())
			case <-ctx.Done():
				t.Fatalf("no pong from Prosody; Prosody log:\n%s", tail(p.Log()))
			}
			in := g.inboundConnected(t)
			assert.Equal(t, s2s.AuthDialback, in.Auth, "Prosody authenticated to us by dialback")
			assert.Equal(t, "p.example", in.Remote)
			assert.Equal(t, mode == tlsmode.Required, in.TLS)
		})
	}
}

// startProsody starts a Prosody (no c2s) that resolves names through the
// test DNS, and publishes the SRV record of its first host. .example rather
// than .test domains: libunbound answers .test itself unless told not to.
func startProsody(t *testing.T, n *testNet, cfg prosodytest.Config) *prosodytest.Server {
	t.Helper()
	ns, err := netip.ParseAddrPort(n.dns.Addr())
	require.NoError(t, err)
	cfg.Nameserver = ns
	cfg.C2SPort = prosodytest.Disabled
	p := prosodytest.Start(t, cfg)
	domain := cfg.Hosts[0].Domain
	require.NoError(t, n.dns.Zone().Add(
		"_xmpp-server._tcp."+domain+". 300 IN SRV 0 0 "+strconv.Itoa(int(p.S2SAddr().Port()))+" xmpp."+domain+".",
		"xmpp."+domain+". 300 IN A "+p.Addr().String()))
	return p
}

func tail(s string) string {
	if len(s) > 8000 {
		s = s[len(s)-8000:]
	}
	return s
}

// TestProsodySASLExternal: with certificates from a CA both sides trust and
// s2s_secure_auth on Prosody, both directions authenticate with SASL
// EXTERNAL (XEP-0178) instead of dialback.
func TestProsodySASLExternal(t *testing.T) {
	prosodytest.Require(t)
	n := newTestNet(t)
	g := n.server([]string{"g.example"})
	certPEM, keyPEM := prosodytest.EncodePEM(t, n.ca.Leaf(t, "p.example"))
	p := startProsody(t, n, prosodytest.Config{
		Hosts:             []prosodytest.Host{{Domain: "p.example", CertPEM: certPEM, KeyPEM: keyPEM}},
		RequireEncryption: true,
		SecureAuth:        true,
		CAFile:            prosodytest.WriteCAFile(t, n.ca.Certificate()),
	})
	ctx := ctxT(t, 30*time.Second)
	s, err := g.ep.Dial(ctx, "g.example", "p.example")
	require.NoError(t, err, "Prosody log:\n%s", tail(p.Log()))
	defer s.Close()
	info := s.Info()
	assert.Equal(t, s2s.AuthExternal, info.Auth)
	assert.True(t, info.TLS)
	assert.NoError(t, info.CertError)

	ping, err := s2s.ParseStanza([]byte("<iq type='get' id='ping-2' from='g.example' to='p.example'><ping xmlns='urn:xmpp:ping'/></iq>"))
	require.NoError(t, err)
	require.NoError(t, s.Send(ctx, ping))
	select {
	case st := <-g.got:
		assert.Equal(t, "ping-2", st.ID)
		assert.Equal(t, "result", st.Type)
	case <-ctx.Done():
		t.Fatalf("no pong from Prosody; Prosody log:\n%s", tail(p.Log()))
	}
	in := g.inboundConnected(t)
	assert.Equal(t, s2s.AuthExternal, in.Auth, "Prosody authenticated to us with SASL EXTERNAL")
}
