package srv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/srv/srvtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// soa makes negative answers under test. cacheable for 60 s (RFC 2308).
const soa = "test. 300 IN SOA ns.test. admin.test. 1 3600 600 86400 60\n"

// seqDraw replays RFC 2782 draws; check asserts that all were used.
func seqDraw(t *testing.T, draws ...int) (func(int) int, func()) {
	t.Helper()
	var mu sync.Mutex
	i := 0
	return func(n int) int {
			mu.Lock()
			defer mu.Unlock()
			if !assert.Less(t, i, len(draws), "unexpected draw (n=%d)", n) {
				return 0
			}
			i++
			return draws[i-1]
		}, func() {
			mu.Lock()
			defer mu.Unlock()
			assert.Equal(t, len(draws), i, "draws used")
		}
}

func strs(ts []srv.Target) []string {
	out := make([]string, len(ts))
	for i, t := range ts {
		out[i] = t.String()
	}
	return out
}

type fault struct {
	name  string
	qtype uint16
	f     srvtest.Fault
}

func TestLookupProcedure(t *testing.T) {
	const (
		tlsName   = "_xmpps-server._tcp.d.test."
		plainName = "_xmpp-server._tcp.d.test."
	)
	spec31 := `
_xmpp-server._tcp.example.net. 300 IN SRV 10 60 5269 a.example.net.
_xmpp-server._tcp.example.net. 300 IN SRV 10 30 5269 b.example.net.
_xmpp-server._tcp.example.net. 300 IN SRV 10 10 5269 c.example.net.
_xmpp-server._tcp.example.net. 300 IN SRV 10 0 5269 z.example.net.
_xmpp-server._tcp.example.net. 300 IN SRV 20 0 5269 backup.example.net.
_xmpp-server._tcp.example.net. 300 IN SRV 5 0 5270 primary.example.net.
`
	plainRecs := plainName + " IN SRV 10 0 5269 xmpp.d.test.\n" + plainName + " IN SRV 20 0 5269 backup.d.test.\n"
	tlsRecs := tlsName + " IN SRV 5 0 5270 xmpp.d.test.\n"
	fallback := []string{"d.test:5269"}

	tests := []struct {
		name       string
		domain     string // default d.test
		zone       string
		faults     []fault
		setup      func(*srv.Resolver)
		draws      []int
		want       []string
		method     srv.Method
		wantErr    error
		wantDNSErr error
	}{
		{
			name: "A: xmpps NXDOMAIN, xmpp records of 3.1", domain: "example.net", zone: spec31,
			draws:  []int{75, 0, 50},
			want:   []string{"primary.example.net:5270", "b.example.net:5269", "z.example.net:5269", "a.example.net:5269", "c.example.net:5269", "backup.example.net:5269"},
			method: srv.MethodSRV,
		},
		{
			name: "A: second draw vector", domain: "example.net", zone: spec31,
			draws:  []int{100, 60, 0},
			want:   []string{"primary.example.net:5270", "c.example.net:5269", "a.example.net:5269", "z.example.net:5269", "b.example.net:5269", "backup.example.net:5269"},
			method: srv.MethodSRV,
		},
		{
			name: "B: both NXDOMAIN", zone: soa,
			want: fallback, method: srv.MethodFallback,
		},
		{
			name: "B: both NODATA", zone: "_tcp.d.test. IN TXT x\n" + tlsName + " IN TXT x\n" + plainName + " IN TXT x",
			want: fallback, method: srv.MethodFallback,
		},
		{
			name: "C: xmpp single dot", zone: plainName + " IN SRV 0 0 0 .",
			wantErr: srv.ErrNoService,
		},
		{
			name: "C: xmpp dot even with xmpps dot", zone: plainName + " IN SRV 0 0 0 .\n" + tlsName + " IN SRV 0 0 0 .",
			wantErr: srv.ErrNoService,
		},
		{
			name: "D: xmpps dot, xmpp records", zone: tlsName + " IN SRV 0 0 0 .\n" + plainRecs,
			want: []string{"xmpp.d.test:5269", "backup.d.test:5269"}, method: srv.MethodSRV,
		},
		{
			name: "E: xmpps dot, xmpp NXDOMAIN", zone: tlsName + " IN SRV 0 0 0 .",
			wantErr: srv.ErrNoService,
		},
		{
			name: "E: xmpps dot, xmpp fails: the DNS error, no fallback", zone: tlsName + " IN SRV 0 0 0 .",
			faults:  []fault{{plainName, dns.TypeSRV, srvtest.ServFail}},
			wantErr: srv.ErrServerFailure,
		},
		{
			name: "F: merged, equal weights, draw 51", zone: tlsName + " IN SRV 10 50 443 tls.d.test.\n" + plainName + " IN SRV 10 50 5269 plain.d.test.",
			draws: []int{51},
			want:  []string{"plain.d.test:5269", "tls.d.test:443 (direct TLS)"}, method: srv.MethodSRV,
		},
		{
			name: "F: merged, equal weights, draw 50", zone: tlsName + " IN SRV 10 50 443 tls.d.test.\n" + plainName + " IN SRV 10 50 5269 plain.d.test.",
			draws: []int{50},
			want:  []string{"tls.d.test:443 (direct TLS)", "plain.d.test:5269"}, method: srv.MethodSRV,
		},
		{
			name: "F: priority merge", zone: tlsRecs + plainRecs,
			want:   []string{"xmpp.d.test:5270 (direct TLS)", "xmpp.d.test:5269", "backup.d.test:5269"},
			method: srv.MethodSRV,
		},
		{
			name: "xmpps records, xmpp dot: direct TLS only", zone: tlsRecs + plainName + " IN SRV 0 0 0 .",
			want: []string{"xmpp.d.test:5270 (direct TLS)"}, method: srv.MethodSRV,
		},
		{
			name: "dot mixed with records is ignored", zone: plainRecs + plainName + " IN SRV 0 0 0 .",
			want: []string{"xmpp.d.test:5269", "backup.d.test:5269"}, method: srv.MethodSRV,
		},
		{
			name: "G: both SERVFAIL: fallback with the DNS error",
			faults: []fault{
				{tlsName, dns.TypeSRV, srvtest.ServFail}, {plainName, dns.TypeSRV, srvtest.ServFail},
			},
			want: fallback, method: srv.MethodFallback, wantDNSErr: srv.ErrServerFailure,
		},
		{
			name: "G: both time out: fallback with the DNS error",
			faults: []fault{
				{tlsName, dns.TypeSRV, srvtest.Drop}, {plainName, dns.TypeSRV, srvtest.Drop},
			},
			setup: func(r *srv.Resolver) { r.Timeout = 150 * time.Millisecond },
			want:  fallback, method: srv.MethodFallback, wantDNSErr: srv.ErrTimeout,
		},
		{
			name: "G: StrictSRV returns the DNS error",
			faults: []fault{
				{tlsName, dns.TypeSRV, srvtest.Refused}, {plainName, dns.TypeSRV, srvtest.ServFail},
			},
			setup:   func(r *srv.Resolver) { r.StrictSRV = true },
			wantErr: srv.ErrServerFailure,
		},
		{
			name: "xmpps NXDOMAIN, xmpp SERVFAIL: fallback", zone: soa,
			faults: []fault{{plainName, dns.TypeSRV, srvtest.ServFail}},
			want:   fallback, method: srv.MethodFallback, wantDNSErr: srv.ErrServerFailure,
		},
		{
			name: "xmpps SERVFAIL, xmpp records: records", zone: plainRecs,
			faults: []fault{{tlsName, dns.TypeSRV, srvtest.ServFail}},
			want:   []string{"xmpp.d.test:5269", "backup.d.test:5269"}, method: srv.MethodSRV, wantDNSErr: srv.ErrServerFailure,
		},
		{
			name: "xmpps records, xmpp times out: records", zone: tlsRecs,
			faults: []fault{{plainName, dns.TypeSRV, srvtest.Drop}},
			setup:  func(r *srv.Resolver) { r.Timeout = 150 * time.Millisecond; r.StrictSRV = true },
			want:   []string{"xmpp.d.test:5270 (direct TLS)"}, method: srv.MethodSRV, wantDNSErr: srv.ErrTimeout,
		},
		{
			name: "H: records exist, so the domain itself is never a target", zone: plainName + " IN SRV 0 0 5269 unreachable.d.test.",
			want: []string{"unreachable.d.test:5269"}, method: srv.MethodSRV,
		},
		{
			name: "I: static route, DNS not asked", zone: plainRecs,
			setup: func(r *srv.Resolver) {
				r.StaticRoutes = map[string][]string{"D.Test.": {"edge.d.test:5270", "127.0.0.1"}}
			},
			want:   []string{"edge.d.test:5270", "127.0.0.1:5269"},
			method: srv.MethodStatic,
		},
		{
			name: "J: NoDirectTLS skips xmpps", zone: tlsRecs + plainRecs,
			setup: func(r *srv.Resolver) { r.NoDirectTLS = true },
			want:  []string{"xmpp.d.test:5269", "backup.d.test:5269"}, method: srv.MethodSRV,
		},
		{
			name: "J: NoDirectTLS, xmpp NXDOMAIN: fallback even though xmpps is published", zone: tlsRecs,
			setup: func(r *srv.Resolver) { r.NoDirectTLS = true },
			want:  fallback, method: srv.MethodFallback,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := srvtest.New(t, tt.zone)
			for _, f := range tt.faults {
				s.Zone().SetFault(f.name, f.qtype, f.f)
			}
			r := s.Resolver()
			if tt.setup != nil {
				tt.setup(r)
			}
			draw, check := seqDraw(t, tt.draws...)
			srv.SetDraw(r, draw)
			domain := tt.domain
			if domain == "" {
				domain = "d.test"
			}
			res, err := r.Lookup(context.Background(), domain)
			check()
			tlsQ := s.Queries("_xmpps-server._tcp."+domain+".", dns.TypeSRV)
			plainQ := s.Queries("_xmpp-server._tcp."+domain+".", dns.TypeSRV)
			switch {
			case tt.method == srv.MethodStatic:
				assert.Zero(t, s.TotalQueries(), "static routes skip DNS")
			case r.NoDirectTLS:
				assert.Zero(t, tlsQ, "xmpps must not be queried")
				assert.Equal(t, 1, plainQ)
			default:
				assert.Equal(t, 1, tlsQ, "xmpps queried once")
				assert.Equal(t, 1, plainQ, "xmpp queried once")
			}
			if tt.wantErr != nil {
				require.Error(t, err)
				assert.ErrorIs(t, err, tt.wantErr)
				assert.Nil(t, res)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, strs(res.Targets))
			assert.Equal(t, tt.method, res.Method)
			if tt.wantDNSErr != nil {
				assert.ErrorIs(t, res.DNSErr, tt.wantDNSErr)
			} else {
				assert.NoError(t, res.DNSErr)
			}

			srv.SetDraw(r, nil)
			targets, err := r.LookupServer(context.Background(), domain)
			require.NoError(t, err)
			assert.Len(t, targets, len(tt.want), "LookupServer agrees")
		})
	}
}

func TestErrNoServiceMessage(t *testing.T) {
	s := srvtest.New(t, "_xmpp-server._tcp.d.test. IN SRV 0 0 0 .")
	_, err := s.Resolver().LookupServer(context.Background(), "d.test")
	require.ErrorIs(t, err, srv.ErrNoService)
	assert.Equal(t, `srv: d.test: the domain does not offer XMPP server-to-server federation (its DNS SRV records say the service is not available): _xmpp-server._tcp.d.test. has the single SRV target "."`, err.Error())
}

func TestServerFailover(t *testing.T) {
	good := srvtest.New(t, "_xmpp-server._tcp.d.test. IN SRV 0 0 5269 xmpp.d.test.")
	for _, f := range []srvtest.Fault{srvtest.ServFail, srvtest.Refused, srvtest.Drop} {
		t.Run(f.String(), func(t *testing.T) {
			bad := srvtest.New(t, "")
			bad.Zone().SetFault("_xmpp-server._tcp.d.test.", dns.TypeANY, f)
			bad.Zone().SetFault("_xmpps-server._tcp.d.test.", dns.TypeANY, f)
			r := &srv.Resolver{Nameservers: []string{bad.Addr(), good.Addr()}, Timeout: 150 * time.Millisecond, Attempts: 1}
			res, err := r.Lookup(context.Background(), "d.test")
			require.NoError(t, err)
			assert.Equal(t, []string{"xmpp.d.test:5269"}, strs(res.Targets))
			assert.NoError(t, res.DNSErr)
			assert.Equal(t, 1, bad.Queries("_xmpp-server._tcp.d.test.", dns.TypeSRV))
		})
	}
}

func TestAttempts(t *testing.T) {
	s1, s2 := srvtest.New(t, ""), srvtest.New(t, "")
	for _, s := range []*srvtest.Server{s1, s2} {
		s.Zone().SetFault("_xmpp-server._tcp.d.test.", dns.TypeSRV, srvtest.ServFail)
	}
	r := &srv.Resolver{Nameservers: []string{s1.Addr(), s2.Addr()}, NoDirectTLS: true, StrictSRV: true}
	_, err := r.LookupServer(context.Background(), "d.test")
	require.ErrorIs(t, err, srv.ErrServerFailure)
	var de *srv.DNSError
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "_xmpp-server._tcp.d.test.", de.Name)
	assert.Equal(t, "SRV", de.Type)
	assert.Equal(t, s2.Addr(), de.Server, "the last server asked")
	assert.Contains(t, err.Error(), "answered SERVFAIL")
	assert.Equal(t, srv.DefaultAttempts, s1.Queries("_xmpp-server._tcp.d.test.", dns.TypeSRV))
	assert.Equal(t, srv.DefaultAttempts, s2.Queries("_xmpp-server._tcp.d.test.", dns.TypeSRV))
}

func TestTimeout(t *testing.T) {
	s := srvtest.New(t, "")
	s.Zone().SetFault("_xmpp-server._tcp.d.test.", dns.TypeANY, srvtest.Drop)
	s.Zone().SetFault("_xmpps-server._tcp.d.test.", dns.TypeANY, srvtest.Drop)
	s.Zone().SetFault("h.d.test.", dns.TypeANY, srvtest.Drop)
	r := s.Resolver()
	r.Timeout = 150 * time.Millisecond
	r.StrictSRV = true

	start := time.Now()
	_, err := r.LookupServer(context.Background(), "d.test")
	elapsed := time.Since(start)
	require.ErrorIs(t, err, srv.ErrTimeout)
	assert.Less(t, elapsed, 1500*time.Millisecond, "both queries run in parallel, one attempt each")
	assert.GreaterOrEqual(t, elapsed, 150*time.Millisecond)
	var de *srv.DNSError
	require.ErrorAs(t, err, &de)
	assert.True(t, de.Timeout())
	assert.Equal(t, s.Addr(), de.Server)
	assert.Contains(t, err.Error(), "did not answer in time")

	start = time.Now()
	_, err = r.LookupAddrs(context.Background(), "h.d.test")
	require.ErrorIs(t, err, srv.ErrTimeout)
	assert.Less(t, time.Since(start), 1500*time.Millisecond)
}

func TestContextCancellation(t *testing.T) {
	s := srvtest.New(t, "")
	s.Zone().SetFault("_xmpp-server._tcp.d.test.", dns.TypeANY, srvtest.Drop)
	s.Zone().SetFault("_xmpps-server._tcp.d.test.", dns.TypeANY, srvtest.Drop)
	s.Zone().SetFault("h.d.test.", dns.TypeANY, srvtest.Drop)
	r := s.Resolver()
	r.Timeout = 10 * time.Second // cancellation, not the timeout, must end the lookup

	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	start := time.Now()
	_, err := r.LookupServer(ctx, "d.test")
	require.ErrorIs(t, err, context.Canceled)
	assert.Less(t, time.Since(start), time.Second)

	ctx, cancel = context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start = time.Now()
	_, err = r.LookupAddrs(ctx, "h.d.test")
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), time.Second)

	// An already cancelled context asks nobody.
	before := s.TotalQueries()
	ctx, cancel = context.WithCancel(context.Background())
	cancel()
	_, err = r.Lookup(ctx, "other.test")
	require.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, before, s.TotalQueries())
	// goleak in TestMain checks that the abandoned queries stopped.
}

func TestTruncatedAnswerRetriedOverTCP(t *testing.T) {
	var b strings.Builder
	for i := range 40 {
		fmt.Fprintf(&b, "_xmpp-server._tcp.big.test. IN SRV 10 0 5269 host-number-%02d.a-rather-long-domain-name.big.test.\n", i)
	}
	b.WriteString("_xmpp-server._tcp.small.test. IN SRV 0 0 5269 xmpp.small.test.\n")
	s := srvtest.New(t, b.String())
	s.Zone().SetFault("_xmpp-server._tcp.small.test.", dns.TypeSRV, srvtest.Truncate)
	r := s.Resolver()

	targets, err := r.LookupServer(context.Background(), "big.test")
	require.NoError(t, err)
	require.Len(t, targets, 40, "the full answer arrives over TCP")
	for i, tg := range targets { // all weights 0: input order kept
		assert.Equal(t, fmt.Sprintf("host-number-%02d.a-rather-long-domain-name.big.test", i), tg.Host)
	}
	assert.Equal(t, 2, s.Queries("_xmpp-server._tcp.big.test.", dns.TypeSRV), "UDP, then TCP")

	targets, err = r.LookupServer(context.Background(), "small.test")
	require.NoError(t, err)
	assert.Equal(t, []string{"xmpp.small.test:5269"}, strs(targets))
}

func TestIDNA(t *testing.T) {
	s := srvtest.New(t, "_xmpp-server._tcp.xn--mnchen-3ya.example. IN SRV 0 0 5269 xmpp.xn--mnchen-3ya.example.")
	r := s.Resolver()
	for _, d := range []string{"münchen.example", "MÜNCHEN.Example.", "xn--mnchen-3ya.example"} {
		res, err := r.Lookup(context.Background(), d)
		require.NoError(t, err, d)
		assert.Equal(t, d, res.Domain)
		assert.Equal(t, "xn--mnchen-3ya.example", res.ASCII)
		assert.Equal(t, []string{"xmpp.xn--mnchen-3ya.example:5269"}, strs(res.Targets))
	}
	assert.Equal(t, 1, s.Queries("_xmpp-server._tcp.xn--mnchen-3ya.example.", dns.TypeSRV), "one query, then the cache")

	before := s.TotalQueries()
	_, err := r.LookupServer(context.Background(), "bad..example")
	require.ErrorIs(t, err, srv.ErrInvalidDomain)
	_, err = r.LookupAddrs(context.Background(), "bad host.example")
	require.ErrorIs(t, err, srv.ErrInvalidDomain)
	_, err = r.LookupAddrs(context.Background(), "-bad.example")
	require.ErrorIs(t, err, srv.ErrInvalidDomain)
	assert.Equal(t, before, s.TotalQueries(), "invalid names never reach DNS")
}

// TestHostNames checks that every SRV target LookupServer returns is a host
// LookupAddrs accepts: one rule for DNS host names, more lenient than the one
// for XMPP domains.
func TestHostNames(t *testing.T) {
	s := srvtest.New(t, soa+`
_xmpp-server._tcp.d.test. IN SRV 10 0 5269 xmpp_1.d.test.
_xmpp-server._tcp.d.test. IN SRV 20 0 5269 ab--cd.d.test.
_xmpp-server._tcp.d.test. IN SRV 30 0 5269 UPPER.D.TEST.
xmpp_1.d.test.              IN A    127.0.0.1
ab--cd.d.test.              IN A    127.0.0.2
upper.d.test.               IN AAAA ::1
ab--cd.test.                IN A    127.0.0.3
xmpp.xn--mnchen-3ya.test.   IN A    127.0.0.4
`)
	r := s.Resolver()
	ctx := context.Background()
	targets, err := r.LookupServer(ctx, "d.test")
	require.NoError(t, err)
	require.Equal(t, []string{"xmpp_1.d.test:5269", "ab--cd.d.test:5269", "upper.d.test:5269"}, strs(targets))
	want := []string{"[127.0.0.1]", "[127.0.0.2]", "[::1]"}
	for i, tg := range targets {
		addrs, err := r.LookupAddrs(ctx, tg.Host)
		require.NoError(t, err, tg.Host)
		assert.Equal(t, want[i], fmt.Sprint(addrs), tg.Host)
	}

	for host, want := range map[string]string{
		"XMPP_1.D.TEST.":    "[127.0.0.1]",
		"ab--cd.test":       "[127.0.0.3]",
		"AB--CD.Test":       "[127.0.0.3]",
		"xmpp.münchen.test": "[127.0.0.4]",
		"XMPP.MÜNCHEN.TEST": "[127.0.0.4]",
	} {
		addrs, err := r.LookupAddrs(ctx, host)
		require.NoError(t, err, host)
		assert.Equal(t, want, fmt.Sprint(addrs), host)
	}
	assert.Equal(t, 1, s.Queries("xmpp.xn--mnchen-3ya.test.", dns.TypeA), "the A-label form is queried, then cached")
	assert.Equal(t, 1, s.Queries("xmpp_1.d.test.", dns.TypeA), "the target and its upper-case form share the cache")
	assert.Equal(t, 1, s.Queries("ab--cd.test.", dns.TypeA))

	// XMPP domains stay stricter: "ab--cd" is a reserved label there.
	_, err = r.LookupServer(ctx, "ab--cd.test")
	require.ErrorIs(t, err, srv.ErrInvalidDomain)
	_, err = r.LookupServer(ctx, "xmpp_1.d.test")
	require.ErrorIs(t, err, srv.ErrInvalidDomain)
}

// TestAnswerSizeLimits checks that a domain cannot make one cache entry hold
// an arbitrarily large answer: a peer can make us resolve domains it controls.
func TestAnswerSizeLimits(t *testing.T) {
	var b strings.Builder
	b.WriteString(soa)
	for i := range 200 {
		fmt.Fprintf(&b, "_xmpp-server._tcp.big.test. IN SRV 10 0 5269 host-%03d.big.test.\n", i)
	}
	for i := range 100 {
		fmt.Fprintf(&b, "many.test. IN A 127.0.%d.%d\nmany.test. IN AAAA 2001:db8::%x\n", i/250, i%250+1, i+1)
	}
	s := srvtest.New(t, b.String())
	r := s.Resolver()
	r.NoDirectTLS = true
	ctx := context.Background()

	targets, err := r.LookupServer(ctx, "big.test")
	require.NoError(t, err)
	require.Len(t, targets, 64)
	for i, tg := range targets { // all weights 0: the first 64 in answer order
		assert.Equal(t, fmt.Sprintf("host-%03d.big.test", i), tg.Host)
	}
	assert.Equal(t, 2, s.Queries("_xmpp-server._tcp.big.test.", dns.TypeSRV), "UDP, then TCP")

	addrs, err := r.LookupAddrs(ctx, "many.test")
	require.NoError(t, err)
	require.Len(t, addrs, 64, "32 of each family")
	for i, a := range addrs {
		if i < 32 {
			assert.Equal(t, fmt.Sprintf("2001:db8::%x", i+1), a.String())
		} else {
			assert.Equal(t, fmt.Sprintf("127.0.0.%d", i-32+1), a.String())
		}
	}
}

func TestIPLiteralDomain(t *testing.T) {
	var r srv.Resolver // zero value: no DNS is needed for IP literals
	for in, want := range map[string]string{"192.0.2.7": "192.0.2.7:5269", "[2001:db8::1]": "[2001:db8::1]:5269"} {
		res, err := r.Lookup(context.Background(), in)
		require.NoError(t, err)
		assert.Equal(t, []string{want}, strs(res.Targets))
		assert.Equal(t, srv.MethodFallback, res.Method)
	}
	addrs, err := r.LookupAddrs(context.Background(), "::1")
	require.NoError(t, err)
	assert.Equal(t, []netip.Addr{netip.IPv6Loopback()}, addrs)
}

func TestStaticRoutes(t *testing.T) {
	s := srvtest.New(t, "_xmpp-server._tcp.d.test. IN SRV 0 0 5269 from-dns.d.test.")
	r := s.Resolver()
	r.StaticRoutes = map[string][]string{
		"static.test":     {"a.static.test:5270", "[::1]:15269", "b.static.test"},
		"münchen.example": {"127.0.0.1:15269"},
		"bad.test":        {"ok.test", "no:port:here"},
	}
	ctx := context.Background()

	got, err := r.LookupServer(ctx, "Static.Test.")
	require.NoError(t, err)
	assert.Equal(t, []srv.Target{{Host: "a.static.test", Port: 5270}, {Host: "::1", Port: 15269}, {Host: "b.static.test", Port: 5269}}, got)
	got[0].Host = "mutated"
	got, err = r.LookupServer(ctx, "static.test")
	require.NoError(t, err)
	assert.Equal(t, "a.static.test", got[0].Host, "callers get a copy")

	got, err = r.LookupServer(ctx, "xn--mnchen-3ya.example")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1:15269"}, strs(got))

	_, err = r.LookupServer(ctx, "bad.test")
	require.ErrorIs(t, err, srv.ErrInvalidRoute)
	var re *srv.RouteError
	require.ErrorAs(t, err, &re)
	assert.Equal(t, "no:port:here", re.Route)
	assert.Zero(t, s.TotalQueries(), "no DNS for statically routed domains, even broken ones")

	// Replace the table at runtime while lookups run.
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 50 {
				_, _ = r.LookupServer(ctx, "d.test")
				_, _ = r.LookupServer(ctx, "static.test")
			}
		})
	}
	r.SetStaticRoutes(map[string][]string{"d.test": {"override.d.test:5270"}})
	wg.Wait()
	got, err = r.LookupServer(ctx, "d.test")
	require.NoError(t, err)
	assert.Equal(t, []string{"override.d.test:5270"}, strs(got))
	res, err := r.Lookup(ctx, "static.test")
	require.NoError(t, err)
	assert.Equal(t, srv.MethodFallback, res.Method, "the old route is gone")

	r.SetStaticRoutes(nil)
	got, err = r.LookupServer(ctx, "d.test")
	require.NoError(t, err)
	assert.Equal(t, []string{"from-dns.d.test:5269"}, strs(got))
}

func TestZeroValueStaticRoute(t *testing.T) {
	var r srv.Resolver
	r.SetStaticRoutes(map[string][]string{"a.test": {"127.0.0.1:5269"}, "192.0.2.1": {"127.0.0.1:15269"}})
	got, err := r.LookupServer(context.Background(), "a.test")
	require.NoError(t, err)
	assert.Equal(t, []string{"127.0.0.1:5269"}, strs(got))

	// A route for an IP-literal domain wins over the literal itself.
	res, err := r.Lookup(context.Background(), "192.0.2.1")
	require.NoError(t, err)
	assert.Equal(t, srv.MethodStatic, res.Method)
	assert.Equal(t, []string{"127.0.0.1:15269"}, strs(res.Targets))
}

// fakeClock is an injectable cache clock.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func TestCache(t *testing.T) {
	const (
		plain = "_xmpp-server._tcp.d.test."
		tls   = "_xmpps-server._tcp.d.test."
	)
	s := srvtest.New(t, soa+plain+" 300 IN SRV 0 0 5269 xmpp.d.test.")
	r := s.Resolver()
	clock := &fakeClock{t: time.Unix(1e9, 0)}
	srv.SetClock(r, clock.Now)
	ctx := context.Background()
	lookup := func() *srv.Result {
		t.Helper()
		res, err := r.Lookup(ctx, "d.test")
		require.NoError(t, err)
		require.Equal(t, []string{"xmpp.d.test:5269"}, strs(res.Targets))
		return res
	}

	res := lookup()
	assert.False(t, res.Cached)
	res = lookup()
	assert.True(t, res.Cached)
	assert.Equal(t, 1, s.Queries(plain, dns.TypeSRV))
	assert.Equal(t, 1, s.Queries(tls, dns.TypeSRV), "NXDOMAIN with SOA is cached")

	clock.Advance(59 * time.Second)
	assert.True(t, lookup().Cached)
	clock.Advance(2 * time.Second) // past the SOA minimum of 60 s
	assert.False(t, lookup().Cached)
	assert.Equal(t, 2, s.Queries(tls, dns.TypeSRV))
	assert.Equal(t, 1, s.Queries(plain, dns.TypeSRV))

	clock.Advance(240 * time.Second) // past the SRV TTL of 300 s
	lookup()
	assert.Equal(t, 2, s.Queries(plain, dns.TypeSRV))
}

func TestCacheLimits(t *testing.T) {
	const plain = "_xmpp-server._tcp.d.test."
	tests := []struct {
		name    string
		zone    string
		setup   func(*srv.Resolver)
		advance time.Duration
		wantQ   int // SRV queries for plain after two lookups around advance
	}{
		{"MaxTTL caps long TTLs", plain + " 86400 IN SRV 0 0 5269 x.d.test.", func(r *srv.Resolver) { r.MaxTTL = 10 * time.Second }, 11 * time.Second, 2},
		{"within MaxTTL", plain + " 86400 IN SRV 0 0 5269 x.d.test.", func(r *srv.Resolver) { r.MaxTTL = 10 * time.Second }, 9 * time.Second, 1},
		{"default MaxTTL is an hour", plain + " 86400 IN SRV 0 0 5269 x.d.test.", nil, time.Hour + time.Second, 2},
		{"negative MaxTTL disables caching", plain + " 86400 IN SRV 0 0 5269 x.d.test.", func(r *srv.Resolver) { r.MaxTTL = -1 }, 0, 2},
		{"TTL 0 is not cached", plain + " 0 IN SRV 0 0 5269 x.d.test.", nil, 0, 2},
		{"NegativeTTL caps the SOA minimum", "test. 3600 IN SOA ns.test. a.test. 1 1 1 1 3600", func(r *srv.Resolver) { r.NegativeTTL = 10 * time.Second }, 11 * time.Second, 2},
		{"within NegativeTTL", "test. 3600 IN SOA ns.test. a.test. 1 1 1 1 3600", func(r *srv.Resolver) { r.NegativeTTL = 10 * time.Second }, 9 * time.Second, 1},
		{"default NegativeTTL is 5 minutes", "test. 3600 IN SOA ns.test. a.test. 1 1 1 1 3600", nil, 5*time.Minute + time.Second, 2},
		{"negative answer without SOA is not cached", "", nil, 0, 2},
		{"negative NegativeTTL disables", soa, func(r *srv.Resolver) { r.NegativeTTL = -1 }, 0, 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := srvtest.New(t, tt.zone)
			r := s.Resolver()
			r.NoDirectTLS = true
			if tt.setup != nil {
				tt.setup(r)
			}
			clock := &fakeClock{t: time.Unix(1e9, 0)}
			srv.SetClock(r, clock.Now)
			_, err := r.LookupServer(context.Background(), "d.test")
			require.NoError(t, err)
			clock.Advance(tt.advance)
			_, err = r.LookupServer(context.Background(), "d.test")
			require.NoError(t, err)
			assert.Equal(t, tt.wantQ, s.Queries(plain, dns.TypeSRV))
		})
	}
}

func TestErrorsAreNotCached(t *testing.T) {
	s := srvtest.New(t, "")
	s.Zone().SetFault("_xmpp-server._tcp.d.test.", dns.TypeSRV, srvtest.ServFail)
	r := s.Resolver()
	r.NoDirectTLS = true
	for range 3 {
		res, err := r.Lookup(context.Background(), "d.test")
		require.NoError(t, err)
		assert.Equal(t, srv.MethodFallback, res.Method)
		assert.False(t, res.Cached)
	}
	assert.Equal(t, 3, s.Queries("_xmpp-server._tcp.d.test.", dns.TypeSRV))
}

func TestCachedRecordsAreReshuffled(t *testing.T) {
	s := srvtest.New(t, `
_xmpp-server._tcp.d.test. IN SRV 0 50 5269 a.d.test.
_xmpp-server._tcp.d.test. IN SRV 0 50 5269 b.d.test.
`)
	r := s.Resolver()
	r.NoDirectTLS = true
	draw, check := seqDraw(t, 0, 100)
	srv.SetDraw(r, draw)
	first, err := r.LookupServer(context.Background(), "d.test")
	require.NoError(t, err)
	second, err := r.LookupServer(context.Background(), "d.test")
	require.NoError(t, err)
	check()
	assert.Equal(t, []string{"a.d.test:5269", "b.d.test:5269"}, strs(first))
	assert.Equal(t, []string{"b.d.test:5269", "a.d.test:5269"}, strs(second))
	assert.Equal(t, 1, s.Queries("_xmpp-server._tcp.d.test.", dns.TypeSRV))
}

func TestConcurrentLookupsShareQueries(t *testing.T) {
	// Dropped queries are never cached, so only collapsing can keep the
	// count at one per name.
	s := srvtest.New(t, "")
	s.Zone().SetFault("_xmpp-server._tcp.d.test.", dns.TypeANY, srvtest.Drop)
	s.Zone().SetFault("_xmpps-server._tcp.d.test.", dns.TypeANY, srvtest.Drop)
	r := s.Resolver()
	r.Timeout = 300 * time.Millisecond

	const n = 50
	start := make(chan struct{})
	errs := make(chan error, n)
	var wg sync.WaitGroup
	for range n {
		wg.Go(func() {
			<-start
			res, err := r.Lookup(context.Background(), "d.test")
			if err == nil && !errors.Is(res.DNSErr, srv.ErrTimeout) {
				err = fmt.Errorf("DNSErr = %v", res.DNSErr)
			}
			errs <- err
		})
	}
	close(start)
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	assert.Equal(t, 1, s.Queries("_xmpp-server._tcp.d.test.", dns.TypeSRV))
	assert.Equal(t, 1, s.Queries("_xmpps-server._tcp.d.test.", dns.TypeSRV))
}

func TestCancelledWaiterDoesNotAbortOthers(t *testing.T) {
	s := srvtest.New(t, "_xmpp-server._tcp.d.test. IN SRV 0 0 5269 x.d.test.")
	s.Zone().SetFault("_xmpps-server._tcp.d.test.", dns.TypeANY, srvtest.Drop)
	r := s.Resolver()
	r.Timeout = 500 * time.Millisecond

	// The first caller starts the xmpps query, the second joins it, then
	// the first gives up: the second must still see the query to its end.
	ctx, cancel := context.WithCancel(context.Background())
	first := make(chan error, 1)
	go func() {
		_, err := r.LookupServer(ctx, "d.test")
		first <- err
	}()
	time.Sleep(50 * time.Millisecond)
	type result struct {
		res *srv.Result
		err error
	}
	second := make(chan result, 1)
	go func() {
		res, err := r.Lookup(context.Background(), "d.test")
		second <- result{res, err}
	}()
	time.Sleep(50 * time.Millisecond)
	cancel()
	require.ErrorIs(t, <-first, context.Canceled)
	got := <-second
	require.NoError(t, got.err)
	assert.Equal(t, []string{"x.d.test:5269"}, strs(got.res.Targets))
	assert.ErrorIs(t, got.res.DNSErr, srv.ErrTimeout, "the shared query ran to its timeout, not cancelled")
	assert.Equal(t, 1, s.Queries("_xmpps-server._tcp.d.test.", dns.TypeSRV), "the second caller joined")
}

func TestLookupAddrs(t *testing.T) {
	s := srvtest.New(t, soa+`
h.test.     IN A     127.0.0.1
h.test.     IN A     127.0.0.2
h.test.     IN AAAA  ::1
v4.test.    IN A     127.0.0.3
alias.test. IN CNAME v4.test.
txt.test.   IN TXT   "no address"
`)
	r := s.Resolver()
	ctx := context.Background()
	tests := []struct {
		host    string
		want    string
		wantErr error
		msg     string
	}{
		{host: "h.test", want: "[::1 127.0.0.1 127.0.0.2]"},
		{host: "H.TEST.", want: "[::1 127.0.0.1 127.0.0.2]"},
		{host: "v4.test", want: "[127.0.0.3]"},
		{host: "alias.test", want: "[127.0.0.3]"},
		{host: "127.0.0.9", want: "[127.0.0.9]"},
		{host: "nowhere.test", wantErr: srv.ErrHostNotFound, msg: "srv: DNS lookup of nowhere.test. (A/AAAA) via nameserver " + s.Addr() + ": host not found in DNS (no A or AAAA record)"},
		{host: "txt.test", wantErr: srv.ErrHostNotFound, msg: "the name exists but has no addresses"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			addrs, err := r.LookupAddrs(ctx, tt.host)
			if tt.wantErr != nil {
				require.ErrorIs(t, err, tt.wantErr)
				assert.Contains(t, err.Error(), tt.msg)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, fmt.Sprint(addrs))
		})
	}
	_, err := r.LookupAddrs(ctx, "h.test")
	require.NoError(t, err)
	assert.Equal(t, 1, s.Queries("h.test.", dns.TypeA), "cached")
	assert.Equal(t, 1, s.Queries("h.test.", dns.TypeAAAA), "cached")
	assert.Zero(t, s.Queries("127.0.0.9.", dns.TypeA))

	// One family failing does not hide the other.
	s.Zone().SetFault("v4.test.", dns.TypeAAAA, srvtest.ServFail)
	r2 := s.Resolver()
	addrs, err := r2.LookupAddrs(ctx, "v4.test")
	require.NoError(t, err)
	assert.Equal(t, "[127.0.0.3]", fmt.Sprint(addrs))
	s.Zone().SetFault("v4.test.", dns.TypeA, srvtest.ServFail)
	_, err = s.Resolver().LookupAddrs(ctx, "v4.test")
	require.ErrorIs(t, err, srv.ErrServerFailure)
}

func TestTimingsAndLogging(t *testing.T) {
	s := srvtest.New(t, "_xmpp-server._tcp.d.test. IN SRV 0 0 5269 xmpp.d.test.\n_xmpps-server._tcp.d.test. IN SRV 0 0 5223 xmpp.d.test.")
	var buf bytes.Buffer
	r := s.Resolver()
	r.Logger = slog.New(slog.NewTextHandler(&buf, nil))
	r.StaticRoutes = map[string][]string{"static.test": {"127.0.0.1"}}

	res, err := r.Lookup(context.Background(), "d.test")
	require.NoError(t, err)
	assert.Positive(t, res.Timings.SRV)
	assert.GreaterOrEqual(t, res.Timings.Total, res.Timings.SRV)
	assert.Regexp(t, `^\(TOTAL:\d+\.\dms SRV:\d+\.\dms\)$`, res.Timings.String())
	line := buf.String()
	assert.Regexp(t, `level=INFO msg=resolved domain=d.test puny=d.test method=SRV dns-timings="\(TOTAL:\d+\.\dms SRV:\d+\.\dms\)" targets="\[xmpp.d.test:5223 \(direct TLS\), xmpp.d.test:5269\]"`, line)

	buf.Reset()
	res, err = r.Lookup(context.Background(), "static.test")
	require.NoError(t, err)
	assert.Zero(t, res.Timings.SRV)
	assert.Positive(t, res.Timings.Total)
	assert.Contains(t, buf.String(), "method=static")

	buf.Reset()
	s.Zone().SetFault("_xmpp-server._tcp.e.test.", dns.TypeANY, srvtest.ServFail)
	s.Zone().SetFault("_xmpps-server._tcp.e.test.", dns.TypeANY, srvtest.ServFail)
	_, err = r.Lookup(context.Background(), "e.test")
	require.NoError(t, err)
	assert.Regexp(t, regexp.MustCompile(`level=WARN msg="DNS SRV lookup failed, falling back to the domain on port 5269" domain=e.test puny=e.test err=".*SERVFAIL.*"`), buf.String())
	assert.Contains(t, buf.String(), "method=fallback")

	buf.Reset()
	_, err = r.Lookup(context.Background(), "a..b")
	require.Error(t, err)
	assert.Contains(t, buf.String(), `level=WARN msg="lookup failed" domain=a..b`)
}
