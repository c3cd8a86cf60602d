package s2s_test

import (
	"runtime"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// BenchmarkStreamThroughput sends ~200-byte messages over one authorized
// stream to a handler on the other side (read, checked, canonicalised,
// delivered). Compare with Prosody's ~22,600 stanzas/s S2S relay on this
// machine (shared/notes/prosody-on-loopback.md).
func BenchmarkStreamThroughput(b *testing.B) {
	for _, mode := range []tlsmode.Mode{tlsmode.NoTLS, tlsmode.Required} {
		b.Run(mode.String(), func(b *testing.B) {
			n := newTestNet(b)
			quiet := func(e *s2s.Endpoint) { e.Logger = nil } // per-stanza debug logs would dominate
			a := n.server([]string{"a.test"}, withMode(mode), quiet)
			r := n.server([]string{"b.test"}, withMode(mode), quiet)
			ctx := ctxT(b, time.Minute)
			s, err := a.ep.Dial(ctx, "a.test", "b.test")
			require.NoError(b, err)
			defer s.Close()
			st := message(b, "juliet@a.test/balcony", "romeo@b.test", "Wherefore art thou Romeo? Deny thy father and refuse thy name; or if thou wilt not, be but sworn my love, and I'll no longer be a Capulet.")
			b.SetBytes(int64(len(st.XML)))
			b.ResetTimer()
			go func() {
				for i := 0; i < b.N; i++ {
					if err := s.Send(ctx, st); err != nil {
						return
					}
				}
			}()
			for i := 0; i < b.N; i++ {
				select {
				case <-r.got:
				case <-time.After(10 * time.Second):
					b.Fatalf("stalled after %d stanzas", i)
				}
			}
			b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "stanzas/s")
		})
	}
}

// BenchmarkIdleStreamMemory opens b.N authorized streams (dialback, with
// the mode's TLS) and reports the heap and goroutine stacks they hold when
// idle, per stream and per side (each stream has an outbound end and an
// inbound end in this process). Compare with Prosody's ~65 KiB (No TLS) and
// ~97 KiB (TLS) per idle authenticated stream on this machine.
func BenchmarkIdleStreamMemory(b *testing.B) {
	for _, mode := range []tlsmode.Mode{tlsmode.NoTLS, tlsmode.Required} {
		b.Run(mode.String(), func(b *testing.B) {
			n := newTestNet(b)
			quiet := func(e *s2s.Endpoint) { e.Logger = nil }
			a := n.server([]string{"a.test"}, withMode(mode), quiet)
			n.server([]string{"b.test"}, withMode(mode), quiet)
			ctx := ctxT(b, 5*time.Minute)
			before := memInUse()
			streams := make([]*s2s.Stream, 0, b.N)
			for range b.N {
				s, err := a.ep.Dial(ctx, "a.test", "b.test")
				require.NoError(b, err)
				streams = append(streams, s)
			}
			time.Sleep(200 * time.Millisecond) // let verify streams close
			after := memInUse()
			b.ReportMetric(float64(after-before)/float64(2*b.N)/1024, "KiB/stream-end")
			for _, s := range streams {
				s.Close()
			}
		})
	}
}

func memInUse() uint64 {
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m.HeapInuse + m.StackInuse
}
