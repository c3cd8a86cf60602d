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
			ns, err := netip.ParseAddrPort(n.dns.Addr())
			require.NoError(t, err)
			p := prosodytest.Start(t, prosodytest.Config{
				Hosts:             []prosodytest.Host{{Domain: "p.example"}},
				C2SPort:           prosodytest.Disabled,
				Nameserver:        ns,
				RequireEncryption: mode == tlsmode.Required,
			})
			require.NoError(t, n.dns.Zone().Add(
				"_xmpp-server._tcp.p.example. 300 IN SRV 0 0 "+strconv.Itoa(int(p.S2SAddr().Port()))+" xmpp.p.example.",
				"xmpp.p.example. 300 IN A "+p.Addr().String()))

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
	ns, err := netip.ParseAddrPort(n.dns.Addr())
	require.NoError(t, err)
	certPEM, keyPEM := prosodytest.EncodePEM(t, n.ca.Leaf(t, "p.example"))
	p := prosodytest.Start(t, prosodytest.Config{
		Hosts:             []prosodytest.Host{{Domain: "p.example", CertPEM: certPEM, KeyPEM: keyPEM}},
		C2SPort:           prosodytest.Disabled,
		Nameserver:        ns,
		RequireEncryption: true,
		SecureAuth:        true,
		CAFile:            prosodytest.WriteCAFile(t, n.ca.Certificate()),
	})
	require.NoError(t, n.dns.Zone().Add(
		"_xmpp-server._tcp.p.example. 300 IN SRV 0 0 "+strconv.Itoa(int(p.S2SAddr().Port()))+" xmpp.p.example.",
		"xmpp.p.example. 300 IN A "+p.Addr().String()))

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
