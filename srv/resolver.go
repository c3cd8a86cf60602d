package srv

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/xmppfed/xmppfed/internal/logkey"
)

// Defaults for the zero values of the Resolver's fields.
const (
	DefaultTimeout     = 5 * time.Second
	DefaultAttempts    = 2
	DefaultMaxTTL      = time.Hour
	DefaultNegativeTTL = 5 * time.Minute
)

// Resolver finds the connection targets of XMPP domains. The zero value is
// ready to use and asks the nameservers of /etc/resolv.conf.
//
// A Resolver is safe for concurrent use. It holds a cache and must not be
// copied after first use. Its exported fields must not be changed after first
// use, except static routes through [Resolver.SetStaticRoutes].
type Resolver struct {
	// Nameservers are asked in order, each as "host:port" (":53" is added
	// when the port is missing). Empty means those of /etc/resolv.conf, or
	// 127.0.0.1:53 if that file cannot be read; the file is read again
	// when its modification time or size changes (checked at most every
	// five seconds, on a lookup that misses the cache).
	Nameservers []string

	// Timeout bounds each DNS query; zero means DefaultTimeout.
	Timeout time.Duration

	// Attempts is how many rounds over Nameservers are made before a query
	// fails; zero or less means DefaultAttempts.
	Attempts int

	// StaticRoutes maps a domain to "host:port" targets that are used, in
	// order, instead of DNS SRV (Expressway's "Use static routes"). A bare
	// host means port 5269; write IPv6 addresses as "[2001:db8::1]:5269".
	// Keys are normalised like looked-up domains, target host names like
	// those of SRV records ([Resolver.LookupAddrs]). This is the initial
	// table, read on first use; use SetStaticRoutes to change it later.
	StaticRoutes map[string][]string

	// MaxTTL caps how long answers are cached; zero means DefaultMaxTTL and
	// a negative value disables caching of positive answers.
	MaxTTL time.Duration

	// NegativeTTL caps how long NXDOMAIN and NODATA answers are cached (they
	// are cached only when the answer carries the zone's SOA record, per
	// RFC 2308); zero means DefaultNegativeTTL, negative disables.
	NegativeTTL time.Duration

	// NoDirectTLS skips _xmpps-server._tcp (XEP-0368 direct TLS), as needed
	// in the "No TLS" security mode.
	NoDirectTLS bool

	// StrictSRV makes a lookup fail when the SRV queries fail (timeout,
	// SERVFAIL) instead of falling back to the domain itself on port 5269.
	StrictSRV bool

	// Logger receives one Info line per lookup, and warnings about DNS
	// failures that were worked around; nil means no logging.
	Logger *slog.Logger

	// Test hooks, set through export_test.go.
	draw       func(n int) int  // RFC 2782 draws; nil means math/rand/v2
	now        func() time.Time // cache clock; nil means time.Now
	resolvConf string           // system resolver configuration file

	mu           sync.Mutex
	routesLoaded bool
	routes       map[string]staticRoute
	cache        map[cacheKey]*entry
	flights      map[cacheKey]*flight

	// The nameservers of resolvConf, guarded by their own mutex so that
	// reading the file never delays cache hits.
	sysMu      sync.Mutex
	sysServers []string
	sysStamp   fileStamp // resolvConf when sysServers was read
	sysChecked time.Time // when resolvConf was last checked for changes
}

// Method says how a lookup found its targets.
type Method string

// Methods, as logged under logkey.Method.
const (
	MethodStatic   Method = "static"   // a configured static route, no DNS
	MethodSRV      Method = "SRV"      // DNS SRV records
	MethodFallback Method = "fallback" // the domain itself on port 5269 (RFC 6120 §3.2.2)
)

// Timings are the wall-clock durations of one lookup.
type Timings struct {
	Total time.Duration // the whole lookup
	SRV   time.Duration // waiting for the SRV queries (zero when not asked)
}

// String formats the timings the way Cisco Expressway logs them:
// "(TOTAL:1.2ms SRV:1.1ms)".
func (t Timings) String() string {
	b := make([]byte, 0, 32)
	b = append(b, "(TOTAL:"...)
	b = appendMillis(b, t.Total)
	b = append(b, " SRV:"...)
	b = appendMillis(b, t.SRV)
	b = append(b, ')')
	return string(b)
}

func appendMillis(b []byte, d time.Duration) []byte {
	b = strconv.AppendFloat(b, float64(d)/float64(time.Millisecond), 'f', 1, 64)
	return append(b, "ms"...)
}

// Result is the outcome of [Resolver.Lookup].
type Result struct {
	Domain  string   // the domain as asked for
	ASCII   string   // its normalised A-label form, as queried
	Targets []Target // where to connect, in order
	Method  Method
	Cached  bool    // every DNS answer used came from the cache
	Timings Timings // how long the lookup took
	// DNSErr is a DNS failure that the lookup worked around: an SRV query
	// that failed while the other one gave records, or failures that led
	// to the fallback target. Nil when DNS answered cleanly.
	DNSErr error
}

// LookupServer returns the targets to try, in order, for a server-to-server
// connection to domain. It is [Resolver.Lookup] without the details.
func (r *Resolver) LookupServer(ctx context.Context, domain string) ([]Target, error) {
	var res Result
	if err := r.lookup(ctx, domain, &res); err != nil {
		return nil, err
	}
	return res.Targets, nil
}

// Lookup finds the targets for a server-to-server connection to domain,
// following RFC 6120 §3.2 and XEP-0368:
//
//  1. A static route for the domain, if configured, is used as is.
//  2. Otherwise _xmpps-server._tcp and _xmpp-server._tcp are queried in
//     parallel, their records merged and ordered per RFC 2782 ([Order]).
//  3. If neither has records, the domain itself on port 5269 is the
//     fallback, except when an SRV record with target "." says the service
//     is not offered ([ErrNoService]).
//
// Only the first 64 records of each SRV answer, in answer order, are used:
// a defence against domains whose answers would fill the cache, since a
// remote server can make us resolve domains it controls. Records whose
// target is not a valid host name (see [Resolver.LookupAddrs]) are skipped.
//
// An IP-literal domain yields that address on port 5269 without DNS.
// Context cancellation is returned promptly as ctx.Err(), wrapped.
func (r *Resolver) Lookup(ctx context.Context, domain string) (*Result, error) {
	res := new(Result)
	if err := r.lookup(ctx, domain, res); err != nil {
		return nil, err
	}
	return res, nil
}

func (r *Resolver) lookup(ctx context.Context, domain string, res *Result) (err error) {
	start := time.Now()
	res.Domain = domain
	defer func() {
		res.Timings.Total = time.Since(start)
		r.logLookup(ctx, res, err)
	}()

	ascii, ip, err := normalize(domain)
	if err != nil {
		return err
	}
	res.ASCII = ascii
	if route, ok := r.staticRoute(ascii); ok {
		if route.err != nil {
			return route.err
		}
		res.Method = MethodStatic
		res.Targets = append([]Target(nil), route.targets...)
		return nil
	}
	if ip.IsValid() {
		res.Method = MethodFallback
		res.Targets = []Target{{Host: ascii, Port: DefaultPort}}
		return nil
	}

	srvStart := time.Now()
	tls, plain := r.queryPair(ctx, cacheKey{ascii, kindXMPPS}, cacheKey{ascii, kindXMPP}, r.NoDirectTLS)
	res.Timings.SRV = time.Since(srvStart)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("srv: looking up %s: %w", ascii, err)
	}
	res.Cached = (tls.skipped || tls.cached) && plain.cached
	return r.decide(ascii, tls, plain, res)
}

// decide applies RFC 6120 §3.2 and XEP-0368 to the two SRV outcomes (spec
// srv.md §2 steps 4-5).
func (r *Resolver) decide(ascii string, tls, plain outcome, res *Result) error {
	res.DNSErr = errors.Join(tls.err, plain.err)

	// Usable records of both services form one set, direct TLS first.
	var buf [16]Record
	recs := buf[:0]
	if tls.e != nil {
		recs = append(recs, tls.e.records...)
	}
	if plain.e != nil {
		recs = append(recs, plain.e.records...)
	}
	if len(recs) > 0 {
		res.Method = MethodSRV
		res.Targets = Order(recs, r.draw)
		return nil
	}

	if plain.e != nil && plain.e.dot {
		return fmt.Errorf("srv: %s: %w: _xmpp-server._tcp.%s. has the single SRV target \".\"", ascii, ErrNoService, ascii)
	}
	if tls.e != nil && tls.e.dot {
		if plain.err != nil {
			// Direct TLS is switched off and the query that matters failed;
			// XEP-0368 forbids guessing with the A/AAAA fallback.
			return plain.err
		}
		return fmt.Errorf("srv: %s: %w: it publishes _xmpps-server._tcp with target \".\" but no _xmpp-server._tcp records, and XEP-0368 then forbids connecting to the domain directly", ascii, ErrNoService)
	}
	if res.DNSErr != nil && r.StrictSRV {
		return res.DNSErr
	}
	res.Method = MethodFallback
	res.Targets = []Target{{Host: ascii, Port: DefaultPort}}
	return nil
}

func (r *Resolver) logLookup(ctx context.Context, res *Result, err error) {
	l := r.Logger
	if l == nil {
		return
	}
	if err != nil {
		level := slog.LevelWarn
		if ctx.Err() != nil {
			level = slog.LevelDebug // the caller gave up; not a DNS problem
		}
		l.LogAttrs(ctx, level, "lookup failed",
			slog.String(logkey.Domain, res.Domain),
			slog.String(logkey.Puny, res.ASCII),
			slog.String(logkey.DNSTimings, res.Timings.String()),
			slog.Any(logkey.Err, err))
		return
	}
	if res.DNSErr != nil {
		msg := "DNS SRV lookup failed, using the other SRV answer"
		if res.Method == MethodFallback {
			msg = "DNS SRV lookup failed, falling back to the domain on port 5269"
		}
		l.LogAttrs(ctx, slog.LevelWarn, msg,
			slog.String(logkey.Domain, res.Domain),
			slog.String(logkey.Puny, res.ASCII),
			slog.Any(logkey.Err, res.DNSErr))
	}
	if !l.Enabled(ctx, slog.LevelInfo) {
		return
	}
	l.LogAttrs(ctx, slog.LevelInfo, "resolved",
		slog.String(logkey.Domain, res.Domain),
		slog.String(logkey.Puny, res.ASCII),
		slog.String(logkey.Method, string(res.Method)),
		slog.String(logkey.DNSTimings, res.Timings.String()),
		slog.String(logkey.Targets, formatTargets(res.Targets)))
}

func formatTargets(ts []Target) string {
	var b strings.Builder
	b.WriteByte('[')
	for i, t := range ts {
		if i > 0 {
			b.WriteString(", ")
		}
		b.WriteString(t.String())
	}
	b.WriteByte(']')
	return b.String()
}

// SetStaticRoutes replaces the static route table; see the StaticRoutes
// field. It is safe to call while lookups run. Malformed entries make
// lookups of their domain fail with a [*RouteError]; check a table
// beforehand with [ValidateStaticRoutes].
func (r *Resolver) SetStaticRoutes(routes map[string][]string) {
	parsed, _ := parseRoutes(routes)
	r.mu.Lock()
	r.routes = parsed
	r.routesLoaded = true
	r.mu.Unlock()
}

func (r *Resolver) staticRoute(ascii string) (staticRoute, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.routesLoaded {
		r.routes, _ = parseRoutes(r.StaticRoutes)
		r.routesLoaded = true
	}
	sr, ok := r.routes[ascii]
	return sr, ok
}
