package srv

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// DefaultPort is the XMPP server-to-server port (RFC 6120 §3.2.2), used for
// the fallback target and for static routes without a port.
const DefaultPort = 5269

const (
	maxNameLen  = 253 // presentation length without the trailing dot
	maxLabelLen = 63
)

// NormalizeDomain returns the ASCII form of an XMPP domain as it is looked
// up in DNS: one trailing dot removed, IDNA-mapped to A-labels (UTS #46
// lookup profile) and lowercased. "münchen.example." becomes
// "xn--mnchen-3ya.example". An IP literal (optionally in brackets) is
// returned in its canonical text form. Errors match [ErrInvalidDomain].
//
// XMPP domains are identities (RFC 7622 treats the domainpart as an
// IDNA-aware slot; it appears in JIDs, certificates and dialback keys), so
// they follow the UTS #46 lookup profile of golang.org/x/net/idna, which
// applies the STD3 rules and CheckHyphens: '_' is refused, and so is a label
// with "--" in positions 3-4 that is not a valid A-label, such as "ab--cd".
// Such "reserved LDH labels" (RFC 5890 §2.3.1) are a disputed case: the
// IDNA2008 authors read them as reserved and not to be looked up, while
// browsers (UTS #46 with CheckHyphens off) accept them. We keep the stricter
// reading for domains. Host names found in SRV records, static routes or
// passed to [Resolver.LookupAddrs] are plain DNS names and follow a more
// lenient rule that accepts both.
func NormalizeDomain(domain string) (string, error) {
	ascii, _, err := normalize(domain)
	return ascii, err
}

// normalize is NormalizeDomain that also reports whether the domain is an IP
// literal (ip is valid then).
func normalize(domain string) (ascii string, ip netip.Addr, err error) {
	s, ip, err := trimName(domain)
	if err != nil || ip.IsValid() {
		return s, ip, err
	}
	// Most names are already plain lowercase ASCII; skipping IDNA for them
	// keeps cached lookups cheap. FuzzNormalizeDomain checks both paths agree.
	if fastASCII(s) {
		return strings.ToLower(s), netip.Addr{}, nil
	}
	ascii, err = normalizeSlow(domain, s)
	return ascii, netip.Addr{}, err
}

// normalizeSlow runs the full IDNA mapping on s (domain minus the trailing
// dot); domain is only used for error messages.
func normalizeSlow(domain, s string) (string, error) {
	a, err := idna.Lookup.ToASCII(s)
	if err != nil {
		return "", invalidDomain(domain, err.Error())
	}
	a = strings.ToLower(a)
	if reason := checkLDH(a); reason != "" {
		return "", invalidDomain(domain, reason)
	}
	// Insist on a fixed point so that a normalised name (a cache or static
	// route key) always normalises to itself.
	if b, err := idna.Lookup.ToASCII(a); err != nil || b != a {
		return "", invalidDomain(domain, "IDNA mapping is not stable")
	}
	return a, nil
}

// trimName is the start that domains and host names share: one trailing dot
// removed, an empty name refused, and an IP literal returned in canonical
// form with ip set.
func trimName(name string) (s string, ip netip.Addr, err error) {
	s = strings.TrimSuffix(name, ".")
	if s == "" {
		return "", netip.Addr{}, invalidDomain(name, "empty name")
	}
	if looksLikeIP(s) {
		if a, ok := parseIPLiteral(s); ok {
			return a.String(), a, nil
		}
	}
	return s, netip.Addr{}, nil
}

func invalidDomain(domain, reason string) error {
	return fmt.Errorf("srv: %w %q: %s", ErrInvalidDomain, domain, reason)
}

// looksLikeIP is a cheap pre-check that spares host names the allocation
// of a failed netip.ParseAddr: IPv6 needs a colon, and an IPv4 address ends
// in a digit while top-level domains never consist of digits only.
func looksLikeIP(s string) bool {
	c := s[len(s)-1]
	return s[0] == '[' || '0' <= c && c <= '9' || strings.IndexByte(s, ':') >= 0
}

// parseIPLiteral accepts "192.0.2.1", "2001:db8::1" and "[2001:db8::1]"; zones
// are rejected because they are meaningless across the network.
func parseIPLiteral(s string) (netip.Addr, bool) {
	if len(s) > 2 && s[0] == '[' && s[len(s)-1] == ']' {
		a, err := netip.ParseAddr(s[1 : len(s)-1])
		if err != nil || !a.Is6() || a.Zone() != "" {
			return netip.Addr{}, false
		}
		return a, true
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return netip.Addr{}, false
	}
	return a, true
}

// fastASCII reports whether s is a host name made of letters, digits and
// hyphens that IDNA would leave unchanged apart from case: no label starts or
// ends with a hyphen or has "--" in positions 3-4 (which covers "xn--").
func fastASCII(s string) bool {
	if len(s) > maxNameLen {
		return false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-') {
				return false
			}
			continue
		}
		l := s[start:i]
		if l == "" || len(l) > maxLabelLen || l[0] == '-' || l[len(l)-1] == '-' ||
			len(l) >= 4 && l[2] == '-' && l[3] == '-' {
			return false
		}
		start = i + 1
	}
	return true
}

// checkLDH returns why the A-label form s is not a valid DNS host name in
// the strict sense of RFC 1123 (letters, digits and hyphens), or "" if it is.
func checkLDH(s string) string { return checkName(s, false) }

// checkHost returns why the lowercase ASCII name s (without the trailing
// dot) is not usable as a DNS host name, or "" if it is. This is the one
// rule for host names: SRV targets, hosts given to [Resolver.LookupAddrs] and
// static route targets. It is RFC 1123's letters, digits and hyphens, no
// label starting or ending with a hyphen, plus '_', which some deployments
// use in host names and DNS itself allows. Unlike IDNA it does not mind
// "--" in positions 3-4 ("r3---sn-abc.example.com" is a real host name) and
// does not decode "xn--" labels: a host name is only looked up, never
// displayed or compared as an identity.
func checkHost(s string) string { return checkName(s, true) }

// checkName implements checkLDH and checkHost.
func checkName(s string, underscore bool) string {
	if s == "" {
		return "empty name"
	}
	if len(s) > maxNameLen {
		return fmt.Sprintf("longer than %d characters", maxNameLen)
	}
	for l := range strings.SplitSeq(s, ".") {
		switch {
		case l == "":
			return "empty label"
		case len(l) > maxLabelLen:
			return fmt.Sprintf("label longer than %d characters", maxLabelLen)
		case l[0] == '-' || l[len(l)-1] == '-':
			return fmt.Sprintf("label %q starts or ends with a hyphen", l)
		}
		for i := 0; i < len(l); i++ {
			c := l[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-' || underscore && c == '_') {
				return fmt.Sprintf("character %q not allowed in a host name", c)
			}
		}
	}
	return ""
}

// hostProfile maps a host name with non-ASCII characters to A-labels: the
// UTS #46 mapping and validation of the lookup profile, but without
// CheckHyphens and the STD3 character rules, whose job checkHost does on the
// result, so that the same labels are accepted with or without non-ASCII
// neighbours.
var hostProfile = idna.New(idna.MapForLookup(), idna.BidiRule(), idna.CheckHyphens(false), idna.StrictDomainName(false))

// normalizeHost returns the form in which a DNS host name is queried and
// cached: one trailing dot removed, and then
//
//   - an IP literal (optionally in brackets) in its canonical text form, ip
//     set;
//   - an all-ASCII name lowercased, without IDNA processing;
//   - any other name mapped to A-labels by UTS #46 and lowercased;
//
// the name must then pass checkHost. The result is a fixed point. Errors
// match [ErrInvalidDomain].
func normalizeHost(host string) (ascii string, ip netip.Addr, err error) {
	s, ip, err := trimName(host)
	if err != nil || ip.IsValid() {
		return s, ip, err
	}
	if isASCII(s) {
		ascii = strings.ToLower(s)
	} else if ascii, err = hostProfile.ToASCII(s); err != nil {
		return "", netip.Addr{}, invalidDomain(host, err.Error())
	} else {
		ascii = strings.ToLower(ascii)
	}
	if reason := checkHost(ascii); reason != "" {
		return "", netip.Addr{}, invalidDomain(host, reason)
	}
	return ascii, netip.Addr{}, nil
}

func isASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if s[i] >= 0x80 {
			return false
		}
	}
	return true
}
