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
// IPv6 addresses come first, then IPv4, each in answer order; a dialer that
// wants Happy Eyeballs (RFC 8305) can split them with Addr.Is4. An IP
// literal is returned as is. If DNS has no address for host, the error
// matches [ErrHostNotFound]; if one query fails but the other gives
// addresses, those are returned without error.
func (r *Resolver) LookupAddrs(ctx context.Context, host string) ([]netip.Addr, error) {
	ascii, ip, err := normalize(host)
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
