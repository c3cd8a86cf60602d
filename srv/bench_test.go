package srv_test

import (
	"context"
	"testing"

	"github.com/xmppfed/xmppfed/srv/srvtest"
)

// BenchmarkLookupServerCached measures a lookup answered from the cache,
// which is what nearly every outbound connection costs in steady state.
func BenchmarkLookupServerCached(b *testing.B) {
	s := srvtest.New(b, `
test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 300
_xmpp-server._tcp.d.test. 300 IN SRV 10 60 5269 a.d.test.
_xmpp-server._tcp.d.test. 300 IN SRV 10 40 5269 b.d.test.
_xmpp-server._tcp.d.test. 300 IN SRV 20 0 5269 backup.d.test.
`)
	r := s.Resolver()
	ctx := context.Background()
	if _, err := r.LookupServer(ctx, "d.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		targets, err := r.LookupServer(ctx, "d.test")
		if err != nil || len(targets) != 3 {
			b.Fatal(targets, err)
		}
	}
	if n := s.TotalQueries(); n != 2 {
		b.Fatalf("%d DNS queries, want 2 (both answers cached)", n)
	}
}

// BenchmarkLookupServerParallel measures cache hits under contention.
func BenchmarkLookupServerParallel(b *testing.B) {
	s := srvtest.New(b, `
test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 300
_xmpp-server._tcp.d.test. 300 IN SRV 10 0 5269 a.d.test.
`)
	r := s.Resolver()
	if _, err := r.LookupServer(context.Background(), "d.test"); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if _, err := r.LookupServer(context.Background(), "d.test"); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
