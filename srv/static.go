package srv

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"
)

// staticRoute is one parsed entry of the static route table. A malformed
// entry keeps its error so that looking up its domain fails loudly instead of
// silently falling through to DNS.
type staticRoute struct {
	targets []Target
	err     error
}

// parseRoutes normalises the keys of a static route table and parses its
// targets. Keys that are not valid domains, and keys that collide after
// normalisation, are reported in bad in a stable order.
func parseRoutes(m map[string][]string) (routes map[string]staticRoute, bad []error) {
	if len(m) == 0 {
		return nil, nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic collision handling and error order
	routes = make(map[string]staticRoute, len(m))
	origin := make(map[string]string, len(m))
	for _, k := range keys {
		d, err := NormalizeDomain(k)
		if err != nil {
			bad = append(bad, &RouteError{Domain: k, Err: err})
			continue
		}
		if prev, dup := origin[d]; dup {
			err := &RouteError{Domain: k, Err: fmt.Errorf("same domain as the route for %q", prev)}
			bad = append(bad, err)
			routes[d] = staticRoute{err: err}
			continue
		}
		origin[d] = k
		sr := staticRoute{targets: make([]Target, 0, len(m[k]))}
		for _, s := range m[k] {
			t, err := parseRoute(s)
			if err != nil {
				sr = staticRoute{err: &RouteError{Domain: k, Route: s, Err: err}}
				bad = append(bad, sr.err)
				break
			}
			sr.targets = append(sr.targets, t)
		}
		if sr.err == nil && len(sr.targets) == 0 {
			sr.err = &RouteError{Domain: k, Err: errors.New("no targets")}
			bad = append(bad, sr.err)
		}
		routes[d] = sr
	}
	return routes, bad
}

// ValidateStaticRoutes checks a static route table the way [Resolver] will
// interpret it and reports every malformed entry (each a [*RouteError]),
// joined. Call it when loading configuration so that mistakes surface at
// start-up rather than on the first message to the domain.
func ValidateStaticRoutes(routes map[string][]string) error {
	_, bad := parseRoutes(routes)
	return errors.Join(bad...)
}

// parseRoute parses one static route target: "host:port", "host" (port
// 5269), "192.0.2.1:5269", "192.0.2.1", "[2001:db8::1]:5269" or
// "[2001:db8::1]". Host names follow the same rule as SRV targets and the
// hosts of [Resolver.LookupAddrs], which resolves them.
func parseRoute(s string) (Target, error) {
	if strings.TrimSpace(s) != s {
		return Target{}, errors.New("leading or trailing white space")
	}
	if s == "" {
		return Target{}, errors.New("empty target")
	}
	host, port := s, uint16(DefaultPort)
	if a, ok := parseIPLiteral(s); ok {
		// "2001:db8::1:5269" would be ambiguous: is 5269 a port or part of
		// the address? Brackets make it explicit.
		if a.Is6() && s[0] != '[' {
			return Target{}, errors.New("write IPv6 addresses in brackets, like [2001:db8::1]:5269")
		}
		return Target{Host: a.String(), Port: port}, nil
	}
	if h, p, err := net.SplitHostPort(s); err == nil {
		n, err := strconv.ParseUint(p, 10, 16)
		if err != nil || n == 0 || p[0] == '+' {
			return Target{}, fmt.Errorf("port %q is not a number between 1 and 65535", p)
		}
		host, port = h, uint16(n)
		if strings.Contains(s, "[") {
			// Brackets are only for IPv6 literals.
			a, ok := parseIPLiteral("[" + h + "]")
			if !ok {
				return Target{}, fmt.Errorf("%q in brackets is not an IPv6 address", h)
			}
			return Target{Host: a.String(), Port: port}, nil
		}
	} else if strings.ContainsAny(s, ":[]") {
		return Target{}, errors.New(`want "host:port", "host" or "[IPv6]:port" (IPv6 addresses with a port go in brackets)`)
	}
	if a, ok := parseIPLiteral(host); ok {
		// Only IPv4 can get here: SplitHostPort rejects unbracketed IPv6.
		return Target{Host: a.String(), Port: port}, nil
	}
	h, _, err := normalizeHost(host)
	if err != nil {
		return Target{}, err
	}
	return Target{Host: h, Port: port}, nil
}
