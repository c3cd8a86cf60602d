package srv

import (
	"errors"
	"fmt"
)

// Sentinel errors. Test for them with [errors.Is]; the errors actually
// returned wrap them with the name, nameserver and detail involved.
var (
	// ErrNoService means the domain says in DNS that it does not offer XMPP
	// server-to-server federation: its _xmpp-server._tcp SRV record points to
	// ".", or it publishes only _xmpps-server._tcp (direct TLS) records that
	// are unusable while _xmpp-server._tcp is missing. Messages to it should
	// bounce with <remote-server-not-found/>.
	ErrNoService = errors.New("the domain does not offer XMPP server-to-server federation (its DNS SRV records say the service is not available)")

	// ErrInvalidDomain means the name is not a valid domain name, even after
	// IDNA mapping.
	ErrInvalidDomain = errors.New("invalid domain name")

	// ErrInvalidRoute means a static route is malformed; see [RouteError].
	ErrInvalidRoute = errors.New("invalid static route")

	// ErrHostNotFound means DNS holds no A or AAAA record for the host.
	ErrHostNotFound = errors.New("host not found in DNS (no A or AAAA record)")

	// ErrTimeout means a DNS server did not answer in time.
	ErrTimeout = errors.New("the DNS server did not answer in time")

	// ErrServerFailure means a DNS server answered but could not resolve the
	// name (SERVFAIL, REFUSED or another error code).
	ErrServerFailure = errors.New("the DNS server could not resolve the name")
)

// DNSError describes a failed DNS query. Err is, or wraps, one of
// [ErrTimeout], [ErrServerFailure] or [ErrHostNotFound], or is the network
// error that prevented the query.
type DNSError struct {
	Name   string // the name queried, e.g. "_xmpp-server._tcp.example.com."
	Type   string // the record type: "SRV", "A", "AAAA" or "A/AAAA"
	Server string // the nameserver ("host:port") that failed, if known
	Err    error
}

func (e *DNSError) Error() string {
	if e.Server == "" {
		return fmt.Sprintf("srv: DNS lookup of %s (%s): %v", e.Name, e.Type, e.Err)
	}
	return fmt.Sprintf("srv: DNS lookup of %s (%s) via nameserver %s: %v", e.Name, e.Type, e.Server, e.Err)
}

// Unwrap returns Err.
func (e *DNSError) Unwrap() error { return e.Err }

// Timeout reports whether the query timed out, like net.Error.
func (e *DNSError) Timeout() bool { return errors.Is(e.Err, ErrTimeout) }

// RouteError describes a malformed static route. It matches
// [ErrInvalidRoute] with [errors.Is].
type RouteError struct {
	Domain string // the route's key, as configured
	Route  string // the offending "host:port" target; empty if the key is bad
	Err    error  // what is wrong
}

func (e *RouteError) Error() string {
	if e.Route == "" {
		return fmt.Sprintf("srv: static route for %q: %v", e.Domain, e.Err)
	}
	return fmt.Sprintf("srv: static route for %q: target %q: %v", e.Domain, e.Route, e.Err)
}

// Unwrap returns ErrInvalidRoute and Err.
func (e *RouteError) Unwrap() []error { return []error{ErrInvalidRoute, e.Err} }
