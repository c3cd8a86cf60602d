package srv

import (
	"cmp"
	"math/rand/v2"
	"net"
	"slices"
	"strconv"
	"strings"
)

// Target is one place to try to connect to, in the order returned.
type Target struct {
	Host      string // host name (A-label, lowercase, no trailing dot) or IP address
	Port      uint16
	DirectTLS bool // start TLS immediately (XEP-0368) instead of STARTTLS
}

// HostPort returns "host:port", with IPv6 addresses in brackets, for dialing.
func (t Target) HostPort() string {
	return net.JoinHostPort(t.Host, strconv.Itoa(int(t.Port)))
}

// String returns HostPort, marked " (direct TLS)" when DirectTLS is set.
func (t Target) String() string {
	if t.DirectTLS {
		return t.HostPort() + " (direct TLS)"
	}
	return t.HostPort()
}

// Record is one SRV resource record as input to [Order].
type Record struct {
	Priority  uint16
	Weight    uint16
	Port      uint16
	Target    string // host name; a trailing dot is removed in the result
	DirectTLS bool   // true for _xmpps-server._tcp records
}

// Order arranges SRV records in the order a client must try them, following
// RFC 2782 with the tie-breaking pinned down so that the result is a pure
// function of the draws:
//
//   - priorities ascending; within a priority, records keep input order
//     except that weight-0 records come first;
//   - while more than one record is left, draw r = draw(sum of their
//     weights) and take the first record whose running weight sum is ≥ r;
//   - the last record of a priority is taken without a draw.
//
// draw(n) must return a uniform integer in [0, n] inclusive; nil means
// math/rand/v2. Out-of-range draws are clamped. To merge _xmpps-server and
// _xmpp-server answers (XEP-0368), pass all _xmpps-server records first, then
// all _xmpp-server records, each in answer order. records is not modified.
func Order(records []Record, draw func(n int) int) []Target {
	if len(records) == 0 {
		return nil
	}
	if draw == nil {
		draw = defaultDraw
	}
	// Small sets, the norm, are sorted in a stack buffer.
	var buf [16]Record
	rem := append(buf[:0], records...)
	slices.SortStableFunc(rem, func(a, b Record) int { return cmp.Compare(a.Priority, b.Priority) })
	out := make([]Target, 0, len(rem))
	for len(rem) > 0 {
		n := 1
		for n < len(rem) && rem[n].Priority == rem[0].Priority {
			n++
		}
		g := rem[:n]
		slices.SortStableFunc(g, func(a, b Record) int {
			return cmp.Compare(min(a.Weight, 1), min(b.Weight, 1))
		})
		for len(g) > 0 {
			i := 0
			if len(g) > 1 {
				sum := 0
				for _, rr := range g {
					sum += int(rr.Weight)
				}
				r := min(max(draw(sum), 0), sum)
				run := 0
				for i = range g {
					run += int(g[i].Weight)
					if run >= r {
						break
					}
				}
			}
			rr := g[i]
			out = append(out, Target{Host: strings.TrimSuffix(rr.Target, "."), Port: rr.Port, DirectTLS: rr.DirectTLS})
			g = slices.Delete(g, i, i+1)
		}
		rem = rem[n:]
	}
	return out
}

func defaultDraw(n int) int { return rand.IntN(n + 1) }
