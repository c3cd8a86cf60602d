package srv

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestNormalizeDomain(t *testing.T) {
	tests := []struct {
		in, want string
		ip       bool
		wantErr  string // substring; "" means success
	}{
		{in: "example.com", want: "example.com"},
		{in: "Example.COM.", want: "example.com"},
		{in: "münchen.example", want: "xn--mnchen-3ya.example"},
		{in: "MÜNCHEN.example.", want: "xn--mnchen-3ya.example"},
		{in: "bücher.example", want: "xn--bcher-kva.example"},
		{in: "xn--mnchen-3ya.example", want: "xn--mnchen-3ya.example"},
		{in: "localhost", want: "localhost"},
		{in: "a-b.c0", want: "a-b.c0"},
		{in: "127.0.0.1", want: "127.0.0.1", ip: true},
		{in: "::1", want: "::1", ip: true},
		{in: "[2001:DB8::1]", want: "2001:db8::1", ip: true},
		{in: "", wantErr: "empty name"},
		{in: ".", wantErr: "empty name"},
		{in: "a..b", wantErr: "empty label"},
		{in: ".a", wantErr: "empty label"},
		{in: "a.b..", wantErr: "empty label"},
		{in: "-a.example", wantErr: "invalid"},
		{in: "a_b.example", wantErr: "invalid"},
		{in: "a b.example", wantErr: "invalid"},
		{in: "xn--zz.example", wantErr: "invalid"},
		// XMPP domains follow the UTS #46 lookup profile of x/net/idna,
		// which sets CheckHyphens: a label with "--" in positions 3-4
		// that is not an A-label is a reserved LDH label (RFC 5890
		// §2.3.1) and is refused, unlike in DNS host names.
		{in: "ab--cd.example", wantErr: "invalid"},
		{in: "AB--CD.example", wantErr: "invalid"},
		{in: "fe80::1%eth0", wantErr: "invalid"},
		{in: "[192.0.2.1]", wantErr: "invalid"},
		{in: strings.Repeat("a", 64) + ".example", wantErr: "label longer than 63"},
		{in: strings.Repeat("abcdefghi.", 26) + "com", wantErr: "longer than 253"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ip, err := normalize(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrInvalidDomain)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.ip, ip.IsValid())
		})
	}
}

func TestNormalizeHost(t *testing.T) {
	tests := []struct {
		in, want string
		ip       bool
		wantErr  string // substring; "" means success
	}{
		{in: "xmpp.example.com", want: "xmpp.example.com"},
		{in: "XMPP_1.D.Test.", want: "xmpp_1.d.test"},
		{in: "_xmpp.d.test", want: "_xmpp.d.test"},
		{in: "ab--cd.test", want: "ab--cd.test"},
		{in: "r3---sn-abc.example.com", want: "r3---sn-abc.example.com"},
		{in: "AB--CD.TEST", want: "ab--cd.test"},
		// All-ASCII names are not IDNA-checked: "xn--" labels pass as they are.
		{in: "xn--zz.test", want: "xn--zz.test"},
		{in: "xn--mnchen-3ya.example", want: "xn--mnchen-3ya.example"},
		{in: "123.test", want: "123.test"},
		// Non-ASCII names are mapped to A-labels, then meet the same rule.
		{in: "xmpp.münchen.test", want: "xmpp.xn--mnchen-3ya.test"},
		{in: "XMPP.MÜNCHEN.test.", want: "xmpp.xn--mnchen-3ya.test"},
		{in: "ab--cd.münchen.test", want: "ab--cd.xn--mnchen-3ya.test"},
		{in: "xmpp_1.münchen.test", want: "xmpp_1.xn--mnchen-3ya.test"},
		{in: "ｘｍｐｐ．münchen．test", want: "xmpp.xn--mnchen-3ya.test"},
		{in: "127.0.0.1", want: "127.0.0.1", ip: true},
		{in: "[2001:DB8::1]", want: "2001:db8::1", ip: true},
		{in: "", wantErr: "empty name"},
		{in: ".", wantErr: "empty name"},
		{in: "a..b", wantErr: "empty label"},
		{in: ".a", wantErr: "empty label"},
		{in: "-a.test", wantErr: "starts or ends with a hyphen"},
		{in: "a-.test", wantErr: "starts or ends with a hyphen"},
		{in: "-a.münchen.test", wantErr: "starts or ends with a hyphen"},
		{in: "a b.test", wantErr: "not allowed"},
		{in: "a*b.test", wantErr: "not allowed"},
		{in: "a\\.b.test", wantErr: "not allowed"},
		{in: "a b.münchen.test", wantErr: "not allowed"},
		{in: "xn--zz.münchen.test", wantErr: "invalid"},
		{in: "a\u200db.münchen.test", wantErr: "invalid"},
		{in: "fe80::1%eth0", wantErr: "not allowed"},
		{in: strings.Repeat("a", 64) + ".test", wantErr: "label longer than 63"},
		{in: strings.Repeat("abcdefghi.", 26) + "com", wantErr: "longer than 253"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, ip, err := normalizeHost(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.ErrorIs(t, err, ErrInvalidDomain)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
			assert.Equal(t, tt.ip, ip.IsValid())
			if !ip.IsValid() {
				assert.Empty(t, checkHost(got), "the result is a valid target")
			}
		})
	}
}

func TestParseRoute(t *testing.T) {
	tests := []struct {
		in      string
		want    Target
		wantErr string
	}{
		{in: "xmpp.example.com:5270", want: Target{Host: "xmpp.example.com", Port: 5270}},
		{in: "XMPP.Example.com.", want: Target{Host: "xmpp.example.com", Port: 5269}},
		{in: "münchen.example:5269", want: Target{Host: "xn--mnchen-3ya.example", Port: 5269}},
		{in: "XMPP_1.Example:5270", want: Target{Host: "xmpp_1.example", Port: 5270}},
		{in: "ab--cd.example", want: Target{Host: "ab--cd.example", Port: 5269}},
		{in: "-a.example", wantErr: "hyphen"},
		{in: "192.0.2.1:5269", want: Target{Host: "192.0.2.1", Port: 5269}},
		{in: "192.0.2.1", want: Target{Host: "192.0.2.1", Port: 5269}},
		{in: "[::1]:15269", want: Target{Host: "::1", Port: 15269}},
		{in: "[::1]", want: Target{Host: "::1", Port: 5269}},
		{in: "2001:db8::1", wantErr: "brackets"},
		{in: "", wantErr: "empty target"},
		{in: " a.example", wantErr: "white space"},
		{in: "a.example:", wantErr: "port"},
		{in: "a.example:0", wantErr: "port"},
		{in: "a.example:65536", wantErr: "port"},
		{in: "a.example:+1", wantErr: "port"},
		{in: "a.example:xmpp", wantErr: "port"},
		{in: ":5269", wantErr: "empty name"},
		{in: "a..example:5269", wantErr: "empty label"},
		{in: "2001:db8::1:5269", wantErr: "brackets"},
		{in: "[a.example]:5269", wantErr: "not an IPv6 address"},
		{in: "[192.0.2.1]:5269", wantErr: "not an IPv6 address"},
		{in: "a.example:5269:1", wantErr: "host:port"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			got, err := parseRoute(tt.in)
			if tt.wantErr != "" {
				require.Error(t, err)
				assert.Contains(t, err.Error(), tt.wantErr)
				return
			}
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseRoutes(t *testing.T) {
	routes, bad := parseRoutes(map[string][]string{
		"Good.Example.":   {"a.good.example:5270", "b.good.example"},
		"good.example":    {"c.good.example"}, // same domain after normalisation
		"bad.example":     {"ok.example", "[bad]:1"},
		"empty.example":   {},
		"a..b":            {"x.example"},
		"münchen.example": {"127.0.0.1:15269"},
	})
	require.Len(t, bad, 4)

	// Keys are processed in sorted order: "Good.Example." wins over
	// "good.example", and the later duplicate turns the entry into an error.
	require.Error(t, routes["good.example"].err)
	assert.Contains(t, routes["good.example"].err.Error(), `same domain as the route for "Good.Example."`)

	var re *RouteError
	require.ErrorAs(t, routes["bad.example"].err, &re)
	assert.Equal(t, "bad.example", re.Domain)
	assert.Equal(t, "[bad]:1", re.Route)
	assert.ErrorIs(t, re, ErrInvalidRoute)
	assert.Contains(t, re.Error(), `static route for "bad.example": target "[bad]:1"`)

	assert.ErrorContains(t, routes["empty.example"].err, "no targets")
	assert.Equal(t, []Target{{Host: "127.0.0.1", Port: 15269}}, routes["xn--mnchen-3ya.example"].targets)

	err := ValidateStaticRoutes(map[string][]string{"a..b": {"x"}, "ok.example": {"x:1"}})
	require.Error(t, err)
	assert.ErrorIs(t, err, ErrInvalidRoute)
	assert.ErrorIs(t, err, ErrInvalidDomain)
	assert.NoError(t, ValidateStaticRoutes(map[string][]string{"ok.example": {"x:1"}}))
	assert.NoError(t, ValidateStaticRoutes(nil))
}

func TestSystemServers(t *testing.T) {
	dir := t.TempDir()
	conf := filepath.Join(dir, "resolv.conf")
	require.NoError(t, os.WriteFile(conf, []byte("nameserver 127.0.0.53\nnameserver ::1\n"), 0o600))
	assert.Equal(t, []string{"127.0.0.53:53", "[::1]:53"}, systemServers(conf))
	assert.Equal(t, []string{"127.0.0.1:53"}, systemServers(filepath.Join(dir, "missing")))

	r := &Resolver{resolvConf: conf}
	assert.Equal(t, []string{"127.0.0.53:53", "[::1]:53"}, r.servers())
	r = &Resolver{Nameservers: []string{"127.0.0.1", "127.0.0.1:5300", "::1", "[::1]"}}
	assert.Equal(t, []string{"127.0.0.1:53", "127.0.0.1:5300", "[::1]:53", "[::1]:53"}, r.servers())
}

func TestSystemServersReloaded(t *testing.T) {
	conf := filepath.Join(t.TempDir(), "resolv.conf")
	write := func(content string, mtime time.Time) {
		t.Helper()
		require.NoError(t, os.WriteFile(conf, []byte(content), 0o600))
		require.NoError(t, os.Chtimes(conf, mtime, mtime))
	}
	mtime := time.Unix(1e9, 0)
	write("nameserver 127.0.0.53\n", mtime)
	now := time.Unix(2e9, 0)
	r := &Resolver{resolvConf: conf, now: func() time.Time { return now }}
	assert.Equal(t, []string{"127.0.0.53:53"}, r.servers())

	// A change is noticed only after the check interval.
	write("nameserver 127.0.0.54\n", mtime.Add(time.Second))
	assert.Equal(t, []string{"127.0.0.53:53"}, r.servers())
	now = now.Add(resolvConfCheckInterval)
	assert.Equal(t, []string{"127.0.0.54:53"}, r.servers())

	// Without a new modification time (or size) the file is not read again.
	write("nameserver 127.0.0.55\n", mtime.Add(time.Second))
	now = now.Add(resolvConfCheckInterval)
	assert.Equal(t, []string{"127.0.0.54:53"}, r.servers())
	write("nameserver 127.0.0.55\n", mtime.Add(2*time.Second))
	assert.Equal(t, []string{"127.0.0.54:53"}, r.servers(), "checked at most once per interval")
	now = now.Add(resolvConfCheckInterval)
	assert.Equal(t, []string{"127.0.0.55:53"}, r.servers())

	// A removed file means the default, and a restored one is read again.
	require.NoError(t, os.Remove(conf))
	now = now.Add(resolvConfCheckInterval)
	assert.Equal(t, []string{"127.0.0.1:53"}, r.servers())
	write("nameserver 127.0.0.56\n", mtime)
	now = now.Add(resolvConfCheckInterval)
	assert.Equal(t, []string{"127.0.0.56:53"}, r.servers())
}

func TestTimingsString(t *testing.T) {
	assert.Equal(t, "(TOTAL:1.2ms SRV:1.1ms)", Timings{Total: 1234567, SRV: 1100000}.String())
	assert.Equal(t, "(TOTAL:0.0ms SRV:0.0ms)", Timings{}.String())
}

func TestDNSErrorMessage(t *testing.T) {
	err := &DNSError{Name: "_xmpp-server._tcp.example.com.", Type: "SRV", Server: "192.0.2.53:53", Err: ErrTimeout}
	assert.Equal(t, "srv: DNS lookup of _xmpp-server._tcp.example.com. (SRV) via nameserver 192.0.2.53:53: the DNS server did not answer in time", err.Error())
	assert.True(t, err.Timeout())
	assert.ErrorIs(t, err, ErrTimeout)
	err = &DNSError{Name: "h.example.", Type: "A/AAAA", Err: ErrHostNotFound}
	assert.Equal(t, "srv: DNS lookup of h.example. (A/AAAA): host not found in DNS (no A or AAAA record)", err.Error())
	assert.False(t, err.Timeout())
}

// normalizeSeeds is the fuzz seed corpus for names.
var normalizeSeeds = []string{
	"example.com", "Example.COM.", "münchen.example", "xn--mnchen-3ya.example",
	"a..b", "-a", "a-", "ab--c", "xn--", "127.0.0.1", "[::1]", "::1%lo", "ａｂｃ．ｃｏｍ",
	"\u200d.example", "a\x00b", strings.Repeat("a.", 127) + "a", "ß.de", "ﬁ.example",
}

func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range normalizeSeeds {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ip, err := normalize(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidDomain) {
				t.Fatalf("normalize(%q): error %v does not match ErrInvalidDomain", s, err)
			}
			return
		}
		if ip.IsValid() {
			return
		}
		// The result is a plain host name and a fixed point.
		if reason := checkLDH(a); reason != "" {
			t.Fatalf("normalize(%q) = %q: %s", s, a, reason)
		}
		if b, _, err := normalize(a); err != nil || b != a {
			t.Fatalf("normalize(normalize(%q)) = %q, %v; want %q", s, b, err, a)
		}
		// The fast path must agree with full IDNA processing.
		trimmed := strings.TrimSuffix(s, ".")
		if fastASCII(trimmed) {
			slow, err := normalizeSlow(s, trimmed)
			if err != nil || slow != a {
				t.Fatalf("fast path %q for %q, IDNA gives %q, %v", a, s, slow, err)
			}
		}
	})
}

func FuzzNormalizeHost(f *testing.F) {
	for _, s := range normalizeSeeds {
		f.Add(s)
	}
	for _, s := range []string{"xmpp_1.d.test", "AB--CD.test", "_x._tcp.d.test", "a_b.münchen.test", "xn--zz.test"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		a, ip, err := normalizeHost(s)
		if err != nil {
			if !errors.Is(err, ErrInvalidDomain) {
				t.Fatalf("normalizeHost(%q): error %v does not match ErrInvalidDomain", s, err)
			}
			return
		}
		if ip.IsValid() {
			return
		}
		if reason := checkHost(a); reason != "" {
			t.Fatalf("normalizeHost(%q) = %q: %s", s, a, reason)
		}
		if b, _, err := normalizeHost(a); err != nil || b != a {
			t.Fatalf("normalizeHost(normalizeHost(%q)) = %q, %v; want %q", s, b, err, a)
		}
		trimmed := strings.TrimSuffix(s, ".")
		if isASCII(trimmed) && a != strings.ToLower(trimmed) {
			t.Fatalf("normalizeHost(%q) = %q: an ASCII name must only be lowercased", s, a)
		}
		// Every XMPP domain is also a host name, unchanged.
		if d, dip, err := normalize(s); err == nil && !dip.IsValid() && d != a {
			t.Fatalf("domain %q normalises to %q, as a host to %q", s, d, a)
		}
	})
}

func FuzzParseRoute(f *testing.F) {
	for _, s := range []string{
		"xmpp.example.com:5270", "host", "192.0.2.1:5269", "[::1]:5269", "[::1]", "2001:db8::1",
		"a:0", "a:65536", "[a]:1", ":1", "a:b:c", "[]:1", "[::1%lo]:5269", "münchen.example:5269",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tg, err := parseRoute(s)
		if err != nil {
			return
		}
		if tg.Port == 0 || tg.Host == "" || !utf8.ValidString(tg.Host) {
			t.Fatalf("parseRoute(%q) = %+v", s, tg)
		}
		// A parsed target round-trips through its own "host:port" form.
		again, err := parseRoute(tg.HostPort())
		if err != nil || again != tg {
			t.Fatalf("parseRoute(%q) = %+v, but its HostPort %q parses as %+v, %v", s, tg, tg.HostPort(), again, err)
		}
	})
}
