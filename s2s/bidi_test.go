package s2s_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

func withBidi(ep *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) { ep.Bidi = true }

// With XEP-0288 on both sides, one TCP connection carries both directions:
// b's reply to a goes back over a's stream, and b never dials a.
func TestBidiOneConnectionBothWays(t *testing.T) {
	for _, mode := range []tlsmode.Mode{tlsmode.Required, tlsmode.NoTLS} {
		t.Run(mode.String(), func(t *testing.T) {
			n := s2stest.New(t)
			opts := s2stest.Options{Policy: s2s.PolicyConfig{Security: mode}, Configure: withBidi, NoCertificate: mode == tlsmode.NoTLS}
			a := n.AddDomain("a.example", opts)
			b := n.AddDomain("b.example", opts)
			ctx := context.Background()
			require.NoError(t, a.Send(ctx, s2stest.Message("juliet@a.example", "romeo@b.example", "one")))
			b.Inbox.Next(t, 5*time.Second)
			require.NoError(t, b.Send(ctx, s2stest.Message("romeo@b.example", "juliet@a.example", "two")))
			got := a.Inbox.Next(t, 5*time.Second)
			assert.Equal(t, "romeo@b.example", got.From.String())

			// Streams still PENDING are the peers' short-lived
			// verification streams (dialback).
			sa, sb := connectedOnly(a.Server.Status()), connectedOnly(b.Server.Status())
			require.Len(t, sa, 1, "a has only its outbound stream: %+v", sa)
			require.Len(t, sb, 1, "b has only a's inbound stream: %+v", sb)
			assert.Equal(t, s2s.Outbound, sa[0].Direction)
			assert.True(t, sa[0].Bidi)
			assert.Equal(t, uint64(1), sa[0].StanzasIn)
			assert.Equal(t, uint64(1), sa[0].StanzasOut)
			assert.Equal(t, s2s.Inbound, sb[0].Direction)
			assert.True(t, sb[0].Bidi)
			assert.Equal(t, uint64(1), sb[0].StanzasOut)
			assert.Zero(t, b.Server.Counters().OutboundOpened, "b never opened a stream of its own to a")

			// A ping from a to b's domain is answered over the same stream.
			ping, err := s2s.ParseStanza([]byte("<iq type='get' id='p' from='juliet@a.example/x' to='b.example'><ping xmlns='urn:xmpp:ping'/></iq>"))
			require.NoError(t, err)
			require.NoError(t, a.Send(ctx, ping))
			pong := a.Inbox.Next(t, 5*time.Second)
			assert.Equal(t, "result", pong.Type)
			assert.Len(t, connectedOnly(a.Server.Status()), 1)
		})
	}
}

// Bidi is opt-in: when only one side enables it, two streams are used as
// without it.
func TestBidiOneSided(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{Configure: withBidi})
	b := n.AddDomain("b.example", s2stest.Options{})
	ctx := context.Background()
	require.NoError(t, a.Send(ctx, s2stest.Message("juliet@a.example", "romeo@b.example", "one")))
	b.Inbox.Next(t, 5*time.Second)
	require.NoError(t, b.Send(ctx, s2stest.Message("romeo@b.example", "juliet@a.example", "two")))
	a.Inbox.Next(t, 5*time.Second)
	st := connectedOnly(a.Server.Status())
	require.Len(t, st, 2)
	for _, i := range st {
		assert.False(t, i.Bidi)
	}
}

func connectedOnly(in []s2s.Info) []s2s.Info {
	var out []s2s.Info
	for _, i := range in {
		if i.State == s2s.Connected {
			out = append(out, i)
		}
	}
	return out
}
