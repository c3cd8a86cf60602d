package s2s_test

import (
	"context"
	"net"
	"net/netip"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/prosodytest"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// TestProsodyBidi federates with a Prosody that has mod_s2s_bidi, both
// ways round, with TLS required and certificates from a CA both sides trust
// (SASL EXTERNAL: with dialback, Prosody's verification stream would
// authenticate itself and become a second route). Whoever opens the stream
// asks for XEP-0288 and the answers travel back over that same stream, so
// each case sees a single S2S connection.
func TestProsodyBidi(t *testing.T) {
	setup := func(t *testing.T) (*s2stest.Domain, *prosodytest.Server, context.Context) {
		prosodytest.Require(t)
		n := s2stest.New(t)
		our := n.AddDomain("bidi.example", s2stest.Options{
			Policy:    s2s.PolicyConfig{Security: tlsmode.Required},
			Configure: withBidi,
		})
		ns, err := netip.ParseAddrPort(n.DNS().Addr())
		require.NoError(t, err)
		certPEM, keyPEM := prosodytest.EncodePEM(t, n.Certificate("pb.example"))
		p := prosodytest.Start(t, prosodytest.Config{
			Hosts:             []prosodytest.Host{{Domain: "pb.example", CertPEM: certPEM, KeyPEM: keyPEM, Users: map[string]string{"alice": "pw"}}},
			RequireEncryption: true,
			SecureAuth:        true,
			CAFile:            prosodytest.WriteCAFile(t, n.CACertificate()),
			Nameserver:        ns,
			Modules:           []string{"s2s_bidi"},
		})
		s2sAddr := p.S2SAddr()
		n.Publish("pb.example", &net.TCPAddr{IP: s2sAddr.Addr().AsSlice(), Port: int(s2sAddr.Port())}, nil)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		t.Cleanup(cancel)
		return our, p, ctx
	}

	t.Run("we open", func(t *testing.T) {
		our, p, ctx := setup(t)
		ping, err := s2s.ParseStanza([]byte("<iq type='get' id='bidi-ping' from='bidi.example' to='pb.example'><ping xmlns='urn:xmpp:ping'/></iq>"))
		require.NoError(t, err)
		require.NoError(t, our.Send(ctx, ping))
		pong, err := our.Inbox.Receive(ctx)
		require.NoError(t, err, "no pong; Prosody log:\n%s", tail(p.Log()))
		assert.Equal(t, "result", pong.Type)
		assert.Equal(t, "bidi-ping", pong.ID)
		st := our.Server.Status()
		require.Len(t, st, 1, "one stream carries both directions: %+v", st)
		assert.Equal(t, s2s.Outbound, st[0].Direction)
		assert.True(t, st[0].Bidi)
		assert.True(t, st[0].TLS)
		assert.Equal(t, s2s.AuthExternal, st[0].Auth)
		assert.Equal(t, uint64(1), st[0].StanzasIn)
		assert.Zero(t, our.Server.Counters().InboundOpened, "Prosody answered over our stream")
	})

	t.Run("Prosody opens", func(t *testing.T) {
		our, p, ctx := setup(t)
		alice, err := p.Dial(ctx, "alice@pb.example/t", "pw")
		require.NoError(t, err)
		defer alice.Close()
		require.NoError(t, alice.Send(ctx, prosodytest.Message("echo@bidi.example", "b1", "hello over bidi")))
		got, err := our.Inbox.Receive(ctx)
		require.NoError(t, err, "Prosody log:\n%s", tail(p.Log()))
		assert.Equal(t, "alice@pb.example/t", got.From.String())
		in := our.Server.Status()
		require.Len(t, in, 1)
		assert.Equal(t, s2s.Inbound, in[0].Direction)
		assert.True(t, in[0].Bidi, "Prosody asked for bidi")

		reply := s2stest.Message("echo@bidi.example", "alice@pb.example/t", "and back")
		srvPool, err := our.Server.OutboundPool()
		require.NoError(t, err)
		require.NoError(t, srvPool.Send(ctx, reply))
		for {
			st, err := alice.Recv(ctx)
			require.NoError(t, err, "alice got no reply; Prosody log:\n%s", tail(p.Log()))
			if st.Name.Local == "message" {
				assert.Contains(t, string(st.Inner), "and back")
				break
			}
		}
		st := our.Server.Status()
		require.Len(t, st, 1, "the reply went back over Prosody's stream: %+v", st)
		assert.Equal(t, uint64(1), st[0].StanzasOut)
	})
}
