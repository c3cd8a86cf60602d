package srv

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
)

// LookupAddrs returns the IP addresses of host, a target returned by
// [Resolver.LookupServer], asking A and AAAA in parallel through the same
// nameservers and cache as SRV lookups (the system resolver is not used).
// IPv6 addresses come first, then IPv4, each in answer order, at most 32 of
// each family (a bound on what a hostile zone can make us cache); a dialer
// that wants Happy Eyeballs (RFC 8305) can split them with Addr.Is4. An IP
// literal is returned as is. If DNS has no address for host, the error
// matches [ErrHostNotFound]; if one query fails but the other gives
// addresses, those are returned without error.
//
// host follows the rule for DNS host names, which every SRV target that
// LookupServer returns meets: an all-ASCII name is only lowercased and
// must consist of labels of letters, digits, hyphens and underscores, none
// starting or ending with a hyphen; a name with other characters is mapped
// to A-labels (UTS #46) first. "xmpp_1.example.com" and "ab--cd.example.com"
// are valid host names though not valid XMPP domains ([NormalizeDomain]).
// An invalid name gives an error matching [ErrInvalidDomain].
func (r *Resolver) LookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	ascii, ip, err := normalizeHost(host)
	if err != nil {
		return nil, err
	}
	if ip.IsValid() {
		return []netip.Addr{ip}, nil
	}
	v4, v6 := r.queryPair(ctx, cacheKey{ascii, kindA}, cacheKey{ascii, kindAAAA}, false)
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("srv: looking up the addresses of %s: %w", ascii, err)
	}
	var addrs []netip.Addr
	if v6.e != nil {
		addrs = append(addrs, v6.e.addrs...)
	}
	if v4.e != nil {
		addrs = append(addrs, v4.e.addrs...)
	}
	if len(addrs) > 0 {
		return addrs, nil
	}
	if err := errors.Join(v6.err, v4.err); err != nil {
		return nil, err
	}
	why := ErrHostNotFound
	if !v4.e.nx || !v6.e.nx {
		why = fmt.Errorf("%w: the name exists but has no addresses", ErrHostNotFound)
	}
	return nil, &DNSError{Name: ascii + ".", Type: "A/AAAA", Server: v4.e.server, Err: why}
}
