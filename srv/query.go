package srv

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// ednsSize is the UDP payload size we advertise: the DNS Flag Day 2020
// value, which avoids IP fragmentation on nearly every path.
const ednsSize = 1232

// maxCacheEntries bounds the cache; past it expired entries are swept and,
// if that is not enough, arbitrary ones dropped.
const maxCacheEntries = 10000

// maxRecords and maxAddrs bound how much of one answer is kept. They are a
// defence, not a DNS rule: a 64 KB answer over TCP holds about a thousand SRV
// records, the cache holds up to maxCacheEntries answers, and a remote
// server can make us resolve domains it controls (a dialback verification
// names any domain). Only the first records of an answer, in answer order,
// are used; RFC 2782 ordering then works on those. Real XMPP domains publish
// a handful of records, far below either bound.
const (
	maxRecords = 64 // SRV records per answer
	maxAddrs   = 32 // addresses per A or AAAA answer
)

// kind is what is asked about a name; with the name it forms the cache key,
// so a cache hit needs no string building.
type kind uint8

const (
	kindXMPPS kind = iota // _xmpps-server._tcp.NAME SRV
	kindXMPP              // _xmpp-server._tcp.NAME SRV
	kindA                 // NAME A
	kindAAAA              // NAME AAAA
)

type cacheKey struct {
	name string // normalised A-label form, without the trailing dot
	kind kind
}

func (k cacheKey) qname() string {
	switch k.kind {
	case kindXMPPS:
		return "_xmpps-server._tcp." + k.name + "."
	case kindXMPP:
		return "_xmpp-server._tcp." + k.name + "."
	}
	return k.name + "."
}

func (k cacheKey) qtype() uint16 {
	switch k.kind {
	case kindA:
		return dns.TypeA
	case kindAAAA:
		return dns.TypeAAAA
	}
	return dns.TypeSRV
}

// entry is a classified DNS answer. Entries are shared through the cache and
// never modified after creation.
type entry struct {
	records []Record     // usable SRV records, "." targets removed
	dot     bool         // SRV: the only targets were "." (service not offered)
	addrs   []netip.Addr // A or AAAA
	nx      bool         // NXDOMAIN (otherwise an empty answer is NODATA)
	server  string       // nameserver that answered
	expires time.Time
}

// outcome is what one query of a pair produced.
type outcome struct {
	e       *entry // nil on error or when skipped
	err     error  // a *DNSError, or the caller's context error
	cached  bool
	skipped bool
}

// flight is an in-progress query shared by concurrent callers. Its context
// is cancelled when the last interested caller gives up, so an abandoned
// query does not keep running; a finished or abandoned flight leaves the
// table at once, so a later caller starts afresh rather than join it.
type flight struct {
	cancel  context.CancelFunc
	done    chan struct{} // closed when e and err are set
	e       *entry
	err     error
	waiters int
}

func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

// queryPair runs the queries for k1 (unless skip1) and k2 in parallel. Only
// cache misses cost a goroutine.
func (r *Resolver) queryPair(ctx context.Context, k1, k2 cacheKey, skip1 bool) (o1, o2 outcome) {
	o1.skipped = skip1
	if !skip1 {
		if e := r.cached(k1); e != nil {
			o1 = outcome{e: e, cached: true}
		}
	}
	if e := r.cached(k2); e != nil {
		o2 = outcome{e: e, cached: true}
	}
	need1 := !skip1 && o1.e == nil
	need2 := o2.e == nil
	switch {
	case need1 && need2:
		o1, o2 = r.queryBoth(ctx, k1, k2)
	case need1:
		o1.e, o1.err = r.query(ctx, k1)
	case need2:
		o2.e, o2.err = r.query(ctx, k2)
	}
	return o1, o2
}

// queryBoth queries k1 and k2 in parallel. It is separate from queryPair so
// that the variables captured by the goroutine do not make cache hits
// allocate.
func (r *Resolver) queryBoth(ctx context.Context, k1, k2 cacheKey) (o1, o2 outcome) {
	var wg sync.WaitGroup
	wg.Go(func() { o1.e, o1.err = r.query(ctx, k1) })
	o2.e, o2.err = r.query(ctx, k2)
	wg.Wait()
	return o1, o2
}

// cached returns the unexpired cache entry for k, or nil.
func (r *Resolver) cached(k cacheKey) *entry {
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.cache[k]
	if e == nil {
		return nil
	}
	if !r.clock().Before(e.expires) {
		delete(r.cache, k)
		return nil
	}
	return e
}

func (r *Resolver) store(k cacheKey, e *entry) {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.clock()
	if !now.Before(e.expires) {
		return
	}
	if r.cache == nil {
		r.cache = make(map[cacheKey]*entry)
	}
	if len(r.cache) >= maxCacheEntries {
		for ck, ce := range r.cache {
			if !now.Before(ce.expires) {
				delete(r.cache, ck)
			}
		}
		for ck := range r.cache {
			if len(r.cache) < maxCacheEntries*9/10 {
				break
			}
			delete(r.cache, ck)
		}
	}
	r.cache[k] = e
}

// query answers k from the network, collapsing concurrent identical queries.
// It returns ctx.Err() as soon as ctx is done.
func (r *Resolver) query(ctx context.Context, k cacheKey) (*entry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	r.mu.Lock()
	f := r.flights[k]
	if f == nil {
		// The shared query must outlive any single caller, but not all.
		fctx, cancel := context.WithCancel(context.WithoutCancel(ctx))
		f = &flight{cancel: cancel, done: make(chan struct{})}
		if r.flights == nil {
			r.flights = make(map[cacheKey]*flight)
		}
		r.flights[k] = f
		go r.fly(fctx, k, f)
	}
	f.waiters++
	r.mu.Unlock()
	defer r.leave(k, f)

	select {
	case <-f.done:
		return f.e, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// fly runs the query of flight f and publishes its outcome.
func (r *Resolver) fly(ctx context.Context, k cacheKey, f *flight) {
	// A flight that just ended may have filled the cache meanwhile.
	e := r.cached(k)
	var err error
	if e == nil {
		if e, err = r.exchange(ctx, k); err == nil {
			r.store(k, e)
		}
	}
	r.mu.Lock()
	f.e, f.err = e, err
	if r.flights[k] == f {
		delete(r.flights, k)
	}
	r.mu.Unlock()
	close(f.done)
	f.cancel()
}

func (r *Resolver) leave(k cacheKey, f *flight) {
	r.mu.Lock()
	defer r.mu.Unlock()
	f.waiters--
	if f.waiters == 0 {
		f.cancel()
		if r.flights[k] == f {
			delete(r.flights, k)
		}
	}
}

// exchange asks the nameservers in order, for Attempts rounds, until one
// gives a definite answer (NOERROR or NXDOMAIN).
func (r *Resolver) exchange(ctx context.Context, k cacheKey) (*entry, error) {
	qname, qtype := k.qname(), k.qtype()
	timeout := r.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	attempts := r.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	servers := r.servers()
	var last error
	for range attempts {
		for _, s := range servers {
			resp, err := exchangeOne(ctx, s, qname, qtype, timeout)
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if err != nil {
				last = &DNSError{Name: qname, Type: dns.TypeToString[qtype], Server: s, Err: err}
				continue
			}
			switch resp.Rcode {
			case dns.RcodeSuccess, dns.RcodeNameError:
				return r.classify(k, s, resp), nil
			case dns.RcodeServerFailure, dns.RcodeRefused:
				err = fmt.Errorf("%w: it answered %s", ErrServerFailure, dns.RcodeToString[resp.Rcode])
			default:
				err = fmt.Errorf("%w: it answered with the unexpected code %s", ErrServerFailure, rcodeString(resp.Rcode))
			}
			last = &DNSError{Name: qname, Type: dns.TypeToString[qtype], Server: s, Err: err}
		}
	}
	return nil, last
}

func rcodeString(rc int) string {
	if s, ok := dns.RcodeToString[rc]; ok {
		return s
	}
	return "RCODE" + strconv.Itoa(rc)
}

// exchangeOne sends one query over UDP with EDNS0 and, if the answer is
// truncated, again over TCP.
func exchangeOne(ctx context.Context, server, qname string, qtype uint16, timeout time.Duration) (*dns.Msg, error) {
	m := new(dns.Msg)
	m.SetQuestion(qname, qtype)
	m.RecursionDesired = true
	m.SetEdns0(ednsSize, false)
	resp, err := roundTrip(ctx, "udp", server, m, timeout)
	if err != nil || !resp.Truncated {
		return resp, err
	}
	m.Id = dns.Id()
	return roundTrip(ctx, "tcp", server, m, timeout)
}

// errMismatch is returned when a TCP answer is not for our question.
var errMismatch = errors.New("the answer does not match the question")

// roundTrip performs one query on a fresh connection. The connection is
// closed as soon as ctx is done, so cancellation is prompt; it returns
// ErrTimeout when timeout elapses first.
func roundTrip(ctx context.Context, network, server string, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	qctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c := dns.Client{Net: network, Timeout: timeout}
	co, err := c.DialContext(qctx, server)
	if err != nil {
		return nil, netErr(ctx, qctx, err)
	}
	defer co.Close()
	co.UDPSize = ednsSize
	stop := context.AfterFunc(qctx, func() { co.Close() })
	defer stop()
	if d, ok := qctx.Deadline(); ok {
		_ = co.SetDeadline(d)
	}
	if err := co.WriteMsg(m); err != nil {
		return nil, netErr(ctx, qctx, err)
	}
	// A UDP socket may still receive late answers to an earlier query, or
	// spoofed ones: skip those until the deadline.
	for {
		resp, err := co.ReadMsg()
		if err != nil {
			return nil, netErr(ctx, qctx, err)
		}
		if resp.Id == m.Id && sameQuestion(resp, m) {
			return resp, nil
		}
		if network != "udp" {
			return nil, errMismatch
		}
	}
}

func sameQuestion(resp, req *dns.Msg) bool {
	if len(resp.Question) == 0 {
		// Some servers omit the question in error responses.
		return resp.Rcode != dns.RcodeSuccess && resp.Rcode != dns.RcodeNameError
	}
	q, rq := resp.Question[0], req.Question[0]
	return len(resp.Question) == 1 && q.Qtype == rq.Qtype && q.Qclass == rq.Qclass && strings.EqualFold(q.Name, rq.Name)
}

// netErr maps a network error: the caller's cancellation wins, then our
// per-query timeout.
func netErr(ctx, qctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	var ne net.Error
	if qctx.Err() != nil || errors.As(err, &ne) && ne.Timeout() {
		return ErrTimeout
	}
	return err
}

// classify turns a NOERROR or NXDOMAIN response into a cache entry and
// computes how long it may be cached.
func (r *Resolver) classify(k cacheKey, server string, resp *dns.Msg) *entry {
	e := &entry{server: server, nx: resp.Rcode == dns.RcodeNameError}
	var ttl uint32
	found := false
	minTTL := func(t uint32) {
		if !found || t < ttl {
			ttl = t
		}
		found = true
	}
	// Recursive resolvers put any CNAME chain first; take the records of
	// the asked type wherever they are in the answer section.
	for _, rr := range resp.Answer {
		if rr.Header().Class != dns.ClassINET {
			continue
		}
		switch v := rr.(type) {
		case *dns.SRV:
			if k.kind != kindXMPP && k.kind != kindXMPPS || len(e.records) == maxRecords {
				continue
			}
			minTTL(v.Hdr.Ttl)
			t := strings.ToLower(strings.TrimSuffix(v.Target, "."))
			if t == "" {
				e.dot = true
				continue
			}
			if checkHost(t) != "" {
				continue // as Go's resolver does: not a usable host name
			}
			if e.records == nil {
				e.records = make([]Record, 0, min(len(resp.Answer), maxRecords))
			}
			e.records = append(e.records, Record{Priority: v.Priority, Weight: v.Weight, Port: v.Port, Target: t, DirectTLS: k.kind == kindXMPPS})
		case *dns.A:
			if k.kind != kindA || len(e.addrs) == maxAddrs {
				continue
			}
			if a, ok := netip.AddrFromSlice(v.A.To4()); ok {
				minTTL(v.Hdr.Ttl)
				e.addAddr(a, len(resp.Answer))
			}
		case *dns.AAAA:
			if k.kind != kindAAAA || len(e.addrs) == maxAddrs {
				continue
			}
			if a, ok := netip.AddrFromSlice(v.AAAA.To16()); ok {
				minTTL(v.Hdr.Ttl)
				e.addAddr(a, len(resp.Answer))
			}
		}
	}
	if len(e.records) > 0 {
		e.dot = false // "." mixed with real targets is ignored
	}
	e.nx = e.nx && !found

	now := r.clock()
	limit := r.MaxTTL
	if limit == 0 {
		limit = DefaultMaxTTL
	}
	if !found {
		// RFC 2308: a negative answer may be cached for the SOA's TTL,
		// bounded by its MINIMUM field; without a SOA, not at all.
		limit = r.NegativeTTL
		if limit == 0 {
			limit = DefaultNegativeTTL
		}
		ttl = 0
		for _, rr := range resp.Ns {
			if soa, ok := rr.(*dns.SOA); ok {
				ttl = min(soa.Hdr.Ttl, soa.Minttl)
				found = true
				break
			}
		}
	}
	if found && limit > 0 {
		e.expires = now.Add(min(time.Duration(ttl)*time.Second, limit))
	} else {
		e.expires = now
	}
	return e
}

// addAddr appends a to e.addrs, sizing the slice for an answer of n records
// on first use so that no spare capacity outlives classify.
func (e *entry) addAddr(a netip.Addr, n int) {
	if e.addrs == nil {
		e.addrs = make([]netip.Addr, 0, min(n, maxAddrs))
	}
	e.addrs = append(e.addrs, a)
}

// resolvConfCheckInterval is how often, at most, the system resolver
// configuration is checked for changes (the interval Go's own resolver
// uses): a stat every few seconds costs nothing next to a DNS query.
const resolvConfCheckInterval = 5 * time.Second

// fileStamp identifies a version of a file well enough to notice that it
// was rewritten: its modification time and size, or that it is missing.
type fileStamp struct {
	mtime, size int64
	exists      bool
}

func stampOf(path string) fileStamp {
	fi, err := os.Stat(path)
	if err != nil {
		return fileStamp{}
	}
	return fileStamp{mtime: fi.ModTime().UnixNano(), size: fi.Size(), exists: true}
}

// servers returns the nameservers to ask, each "host:port". Without
// Nameservers they come from resolv.conf, which is read again when its
// modification time or size has changed, checked at most every
// resolvConfCheckInterval, so that a changed network configuration (a new
// DHCP lease, a VPN) is picked up without a restart.
func (r *Resolver) servers() []string {
	if len(r.Nameservers) > 0 {
		out := make([]string, len(r.Nameservers))
		for i, s := range r.Nameservers {
			out[i] = withPort(s, "53")
		}
		return out
	}
	r.sysMu.Lock()
	defer r.sysMu.Unlock()
	now := r.clock()
	if r.sysServers != nil && now.Sub(r.sysChecked) < resolvConfCheckInterval {
		return r.sysServers
	}
	r.sysChecked = now
	path := r.resolvConf
	if path == "" {
		path = "/etc/resolv.conf"
	}
	// Stat before reading: a change in between is seen at the next check.
	if st := stampOf(path); r.sysServers == nil || st != r.sysStamp {
		r.sysServers = systemServers(path)
		r.sysStamp = st
	}
	return r.sysServers
}

// systemServers reads the nameservers of a resolv.conf file.
func systemServers(path string) []string {
	if path == "" {
		path = "/etc/resolv.conf"
	}
	cfg, err := dns.ClientConfigFromFile(path)
	if err != nil || len(cfg.Servers) == 0 {
		return []string{"127.0.0.1:53"}
	}
	out := make([]string, len(cfg.Servers))
	for i, s := range cfg.Servers {
		out[i] = net.JoinHostPort(s, cfg.Port)
	}
	return out
}

func withPort(s, port string) string {
	if _, _, err := net.SplitHostPort(s); err == nil {
		return s
	}
	return net.JoinHostPort(strings.Trim(s, "[]"), port)
}
