package xcp_test

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xmppfed/xmppfed/xcp"
)

// benchStanza is a typical chat message (about 200 bytes).
const benchStanza = `<message from='alice@a.example/phone' to='bob@b.example' type='chat' id='b7c1e2f4'>` +
	`<body>Hello Bob, this is a chat message of ordinary length.</body>` +
	`<active xmlns='http://jabber.org/protocol/chatstates'/></message>`

// BenchmarkRouterThroughput measures stanzas per second from one Link
// through the Router to another, over loopback TCP; allocs/op are per
// stanza, end to end (both links and the router).
func BenchmarkRouterThroughput(b *testing.B) {
	addr := startRouter(b, &xcp.Router{Components: twoComponents()})
	var got atomic.Int64
	want := new(atomic.Int64)
	done := make(chan struct{}, 1)
	hb := xcp.HandlerFunc(func(context.Context, xcp.Stanza) {
		if got.Add(1) == want.Load() {
			done <- struct{}{}
		}
	})
	a := startLink(b, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr})
	bl := startLink(b, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(b, a, bl)
	st, err := xcp.ParseStanza([]byte(benchStanza))
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()

	b.SetBytes(int64(st.Len()))
	b.ReportAllocs()
	got.Store(0)
	want.Store(int64(b.N))
	start := time.Now()
	b.ResetTimer()
	for range b.N {
		if err := a.Send(ctx, st); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-done:
	case <-time.After(time.Minute):
		b.Fatalf("%d of %d stanzas arrived", got.Load(), b.N)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "stanzas/s")
}

// BenchmarkParseStanza measures the scanner on one stanza.
func BenchmarkParseStanza(b *testing.B) {
	raw := []byte(benchStanza)
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := xcp.ParseStanza(raw); err != nil {
			b.Fatal(err)
		}
	}
}
