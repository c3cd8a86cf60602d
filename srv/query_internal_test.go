package srv

import (
	"fmt"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestCacheIsBounded(t *testing.T) {
	now := time.Unix(1e9, 0)
	r := &Resolver{now: func() time.Time { return now }}
	for i := range maxCacheEntries + 500 {
		r.store(cacheKey{name: strconv.Itoa(i), kind: kindA}, &entry{expires: now.Add(time.Minute)})
	}
	assert.LessOrEqual(t, len(r.cache), maxCacheEntries)
	assert.NotNil(t, r.cached(cacheKey{name: strconv.Itoa(maxCacheEntries + 499), kind: kindA}), "the newest entry is kept")

	// When full, expired entries go first.
	now = now.Add(2 * time.Minute)
	for i := range 600 {
		r.store(cacheKey{name: "fresh" + strconv.Itoa(i), kind: kindA}, &entry{expires: now.Add(time.Minute)})
	}
	assert.Equal(t, 600, len(r.cache))

	// Entries that are already expired are not stored.
	r.store(cacheKey{name: "stale", kind: kindA}, &entry{expires: now})
	assert.Nil(t, r.cached(cacheKey{name: "stale", kind: kindA}))
}

func srvResponse(rcode int, rrs ...string) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion("_xmpp-server._tcp.d.test.", dns.TypeSRV)
	m.Response = true
	m.Rcode = rcode
	for _, s := range rrs {
		rr, err := dns.NewRR(s)
		if err != nil {
			panic(err)
		}
		if rr.Header().Rrtype == dns.TypeSOA {
			m.Ns = append(m.Ns, rr)
		} else {
			m.Answer = append(m.Answer, rr)
		}
	}
	return m
}

func TestClassify(t *testing.T) {
	now := time.Unix(1e9, 0)
	r := &Resolver{now: func() time.Time { return now }}
	k := cacheKey{name: "d.test", kind: kindXMPPS}

	e := r.classify(k, "ns", srvResponse(dns.RcodeSuccess,
		"_xmpp-server._tcp.d.test. 120 IN CNAME other.test.", // skipped, but a real chain
		"other.test. 300 IN SRV 1 2 5270 Host.D.Test.",
		"other.test. 100 IN SRV 1 2 5270 .",                  // "." mixed: ignored
		"other.test. 300 IN SRV 1 2 5270 bad\\032name.test.", // not a host name
		"other.test. 300 CH SRV 1 2 5270 chaos.test.",        // wrong class
	))
	assert.Equal(t, []Record{{Priority: 1, Weight: 2, Port: 5270, Target: "host.d.test", DirectTLS: true}}, e.records)
	assert.False(t, e.dot)
	assert.False(t, e.nx)
	assert.Equal(t, now.Add(100*time.Second), e.expires, "minimum TTL of the SRV RRset")
	assert.Equal(t, "ns", e.server)

	e = r.classify(k, "ns", srvResponse(dns.RcodeSuccess, "_xmpp-server._tcp.d.test. 30 IN SRV 0 0 0 ."))
	assert.True(t, e.dot)
	assert.Empty(t, e.records)

	e = r.classify(k, "ns", srvResponse(dns.RcodeNameError, "test. 900 IN SOA ns.test. a.test. 1 1 1 1 120"))
	assert.True(t, e.nx)
	assert.Equal(t, now.Add(120*time.Second), e.expires, "min(SOA TTL, MINIMUM)")

	e = r.classify(cacheKey{name: "h.test", kind: kindA}, "ns", srvResponse(dns.RcodeSuccess,
		"h.test. 60 IN A 192.0.2.1", "h.test. 60 IN AAAA 2001:db8::1"))
	require.Len(t, e.addrs, 1)
	assert.Equal(t, "192.0.2.1", e.addrs[0].String())
}

func TestClassifyCapsAnswers(t *testing.T) {
	now := time.Unix(1e9, 0)
	r := &Resolver{now: func() time.Time { return now }}
	var rrs []string
	for i := range 200 {
		rrs = append(rrs, fmt.Sprintf("_xmpp-server._tcp.d.test. 300 IN SRV 0 0 5269 h%d.d.test.", i))
	}
	rrs = append(rrs, "_xmpp-server._tcp.d.test. 10 IN SRV 0 0 0 .") // past the cap: ignored
	e := r.classify(cacheKey{name: "d.test", kind: kindXMPP}, "ns", srvResponse(dns.RcodeSuccess, rrs...))
	require.Len(t, e.records, maxRecords)
	assert.LessOrEqual(t, cap(e.records), maxRecords, "no spare capacity is kept")
	for i, rec := range e.records {
		assert.Equal(t, fmt.Sprintf("h%d.d.test", i), rec.Target, "the first records in answer order")
	}
	assert.Equal(t, now.Add(300*time.Second), e.expires, "TTL of the records kept")

	rrs = rrs[:0]
	for i := range 100 {
		rrs = append(rrs, fmt.Sprintf("h.test. 60 IN A 192.0.2.%d", i+1), fmt.Sprintf("h.test. 60 IN AAAA 2001:db8::%x", i+1))
	}
	for _, k := range []kind{kindA, kindAAAA} {
		e = r.classify(cacheKey{name: "h.test", kind: k}, "ns", srvResponse(dns.RcodeSuccess, rrs...))
		require.Len(t, e.addrs, maxAddrs)
		assert.LessOrEqual(t, cap(e.addrs), maxAddrs)
		assert.Equal(t, k == kindA, e.addrs[0].Is4())
		assert.Equal(t, k == kindA, e.addrs[maxAddrs-1].Is4())
	}
	assert.Equal(t, "2001:db8::20", e.addrs[maxAddrs-1].String())
}

func TestRoundTripRejectsMismatchedTCPAnswer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	done := make(chan struct{})
	go func() {
		defer close(done)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		co := &dns.Conn{Conn: c}
		req, err := co.ReadMsg()
		if err != nil {
			return
		}
		resp := new(dns.Msg)
		resp.SetQuestion("other.test.", dns.TypeA)
		resp.Id = req.Id
		resp.Response = true
		_ = co.WriteMsg(resp)
	}()
	m := new(dns.Msg)
	m.SetQuestion("h.test.", dns.TypeA)
	_, err = roundTrip(t.Context(), "tcp", ln.Addr().String(), m, time.Second)
	require.ErrorIs(t, err, errMismatch)
	<-done
}

func FuzzClassify(f *testing.F) {
	for _, m := range []*dns.Msg{
		srvResponse(dns.RcodeSuccess, "_xmpp-server._tcp.d.test. 300 IN SRV 1 2 5270 host.d.test."),
		srvResponse(dns.RcodeSuccess, "_xmpp-server._tcp.d.test. 300 IN SRV 0 0 0 ."),
		srvResponse(dns.RcodeNameError, "test. 900 IN SOA ns.test. a.test. 1 1 1 1 120"),
		srvResponse(dns.RcodeSuccess, "h.test. 60 IN A 192.0.2.1", "h.test. 60 IN AAAA 2001:db8::1"),
		srvResponse(dns.RcodeSuccess, "_xmpp-server._tcp.d.test. 300 IN SRV 1 2 5270 XMPP_1.ab--cd.d.test."),
	} {
		b, err := m.Pack()
		require.NoError(f, err)
		f.Add(b)
	}
	now := time.Unix(1e9, 0)
	r := &Resolver{now: func() time.Time { return now }}
	f.Fuzz(func(t *testing.T, b []byte) {
		m := new(dns.Msg)
		if m.Unpack(b) != nil {
			return
		}
		for k := range kindAAAA + 1 {
			e := r.classify(cacheKey{name: "d.test", kind: k}, "ns", m)
			if len(e.records) > 0 && e.dot {
				t.Fatal("records and dot at once")
			}
			if len(e.records) > maxRecords || len(e.addrs) > maxAddrs {
				t.Fatalf("%d records, %d addresses kept", len(e.records), len(e.addrs))
			}
			for _, rec := range e.records {
				if checkHost(rec.Target) != "" || rec.DirectTLS != (k == kindXMPPS) {
					t.Fatalf("bad record %+v for kind %d", rec, k)
				}
				// Every target is accepted by LookupAddrs as it is.
				if h, ip, err := normalizeHost(rec.Target); err != nil || ip.IsValid() || h != rec.Target {
					t.Fatalf("target %q normalises to %q, %v, %v", rec.Target, h, ip, err)
				}
			}
			for _, a := range e.addrs {
				if k == kindA && !a.Is4() || k == kindAAAA && !a.Is6() || k < kindA {
					t.Fatalf("address %v for kind %d", a, k)
				}
			}
			if e.expires.Before(now) || e.expires.After(now.Add(DefaultMaxTTL)) {
				t.Fatalf("expiry %v out of bounds", e.expires.Sub(now))
			}
		}
	})
}
