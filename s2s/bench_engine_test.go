package s2s_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// BenchmarkPoolServerRelay measures the engine end to end: Pool.Send on
// a.example (route lookup, authorized stream, write) → b.example's Server
// (read, checked, canonicalised, builtins check) → its Handler, for the
// same ~200-byte message as BenchmarkStreamThroughput, which measures a
// bare Stream. The stream is set up before the timer starts.
func BenchmarkPoolServerRelay(b *testing.B) {
	tests := []struct {
		name string
		opts s2stest.Options
	}{
		{name: "NoTLS", opts: s2stest.Options{NoCertificate: true, Policy: s2s.PolicyConfig{Security: tlsmode.NoTLS}}},
		{name: "TLS", opts: s2stest.Options{}},
	}
	for _, tc := range tests {
		b.Run(tc.name, func(b *testing.B) {
			n := s2stest.New(b)
			opts := tc.opts
			opts.Configure = func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
				// Per-stanza debug logs would dominate.
				e.Logger = nil
				e.Resolver.Logger = nil
			}
			from := n.AddDomain("a.example", opts)
			to := n.AddDomain("b.example", opts)
			ctx := context.Background()
			st := from.Message("juliet@a.example/balcony", "romeo@b.example", "Wherefore art thou Romeo? Deny thy father and refuse thy name; or if thou wilt not, be but sworn my love, and I'll no longer be a Capulet.")
			require.NoError(b, from.Send(ctx, st))
			to.Inbox.Next(b, 10*time.Second)
			b.SetBytes(int64(len(st.XML)))

			b.ResetTimer()
			sent := make(chan error, 1)
			go func() {
				for range b.N {
					if err := from.Send(ctx, st); err != nil {
						sent <- err
						return
					}
				}
				sent <- nil
			}()
			for i := range b.N {
				if got := to.Inbox.Next(b, 10*time.Second); got == nil {
					b.Fatalf("stalled after %d stanzas", i)
				}
			}
			b.StopTimer()
			require.NoError(b, <-sent)
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stanzas/s")
			if c := from.Server.Counters(); len(c.Bounced) > 0 {
				b.Fatalf("bounced: %v", c.Bounced)
			}
		})
	}
}
