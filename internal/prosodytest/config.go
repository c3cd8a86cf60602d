package prosodytest

import (
	"fmt"
	"net/netip"
	"path/filepath"
	"slices"
	"sort"
	"strings"
)

// Standard ports, used when a Config leaves a port at zero.
const (
	DefaultS2SPort       = 5269 // RFC 6120; the only port hosts-file resolution can reach
	DefaultC2SPort       = 5222
	DefaultComponentPort = 5347 // XEP-0114, Prosody's default
)

// Disabled, as a port, turns a listener off.
const Disabled = -1

// Config describes one Prosody instance. The zero value plus one Host is a
// working c2s+s2s server with no TLS, on a fresh loopback address.
type Config struct {
	// Addr is the loopback IPv4 address every listener binds. Zero means a
	// fresh one from [FreeLoopback].
	Addr netip.Addr

	// S2SPort, C2SPort and ComponentPort are the listeners' ports: 0 means
	// the standard port (5269, 5222, 5347) and [Disabled] none. The
	// component listener is opened only when Components is not empty.
	S2SPort, C2SPort, ComponentPort int

	// Hosts are Prosody's VirtualHosts.
	Hosts []Host

	// Components are XEP-0114 external components (Component "name" with
	// component_secret) on the component listener.
	Components []Component

	// RequireEncryption sets s2s_require_encryption: peers must STARTTLS.
	// Hosts without a certificate then get a self-signed one.
	RequireEncryption bool

	// SecureAuth sets s2s_secure_auth: peers must present a certificate
	// that chains to CAFile (SASL EXTERNAL); dialback alone is refused.
	// Like RequireEncryption it loads mod_tls and gives hosts without a
	// certificate a self-signed one (which its peers will then refuse).
	SecureAuth bool

	// CAFile is a PEM file of CA certificates Prosody trusts for peers'
	// certificates (ssl.cafile).
	CAFile string

	// Resolve maps domains to addresses for Prosody's outbound S2S, written
	// to a hosts file of its own (libunbound's hoststxt). There are no SRV
	// records that way, so the peer must listen on port 5269.
	Resolve map[string]netip.Addr

	// Nameserver, when valid, is the only DNS server Prosody asks, on any
	// port (e.g. an srvtest server on 127.0.0.1:40123), so SRV records can
	// point to any port. Resolve entries still take precedence. When it is
	// zero Prosody asks no DNS server at all: names outside Resolve do not
	// exist.
	Nameserver netip.AddrPort

	// Modules are added to modules_enabled, after the lean default set.
	Modules []string

	// Debug logs at debug level (default info). Debug slows Prosody down.
	Debug bool

	// Extra is raw Lua appended to the global section.
	Extra string
}

// Host is a VirtualHost.
type Host struct {
	Domain string // e.g. "a.test"; lowercase ASCII

	// CertPEM and KeyPEM are the host's certificate chain and private key
	// for TLS (c2s and s2s STARTTLS). When empty and Config.RequireEncryption
	// is set, a self-signed certificate is generated.
	CertPEM, KeyPEM []byte

	// Users maps user names (localparts, lowercase) to passwords.
	Users map[string]string

	// Extra is raw Lua appended to this VirtualHost's section.
	Extra string
}

// Component is an XEP-0114 external component.
type Component struct {
	Domain, Secret string
}

// baseModules are always enabled. mod_limits is left out on purpose: it
// throttles c2s to about 10 kB/s.
var baseModules = []string{"roster", "saslauth", "disco", "ping", "dialback", "posix"}

// layout names the files of one instance inside its directory.
type layout struct {
	dir                             string
	config, log, console, pid, data string
	certs, hosts, resolv            string
}

func newLayout(dir string) layout {
	return layout{
		dir:     dir,
		config:  filepath.Join(dir, "prosody.cfg.lua"),
		log:     filepath.Join(dir, "prosody.log"),
		console: filepath.Join(dir, "console.log"),
		pid:     filepath.Join(dir, "prosody.pid"),
		data:    filepath.Join(dir, "data"),
		certs:   filepath.Join(dir, "certs"),
		hosts:   filepath.Join(dir, "hosts"),
		resolv:  filepath.Join(dir, "resolv.conf"),
	}
}

// port resolves a configured port against its default.
func port(p, def int) int {
	if p == 0 {
		return def
	}
	return p
}

// validate checks what Prosody would reject late or silently misread.
func (c *Config) validate() error {
	if len(c.Hosts) == 0 {
		// Prosody exits with "No enabled VirtualHost" even when components
		// are configured.
		return fmt.Errorf("%w: no Hosts (Prosody needs at least one VirtualHost, even for components)", ErrInvalidConfig)
	}
	if c.Addr.IsValid() && (!c.Addr.Is4() || !c.Addr.IsLoopback()) {
		return fmt.Errorf("%w: Addr %s is not an IPv4 loopback address (127.0.0.0/8)", ErrInvalidConfig, c.Addr)
	}
	for _, p := range []int{c.S2SPort, c.C2SPort, c.ComponentPort} {
		if p < Disabled || p > 65535 {
			return fmt.Errorf("%w: port %d out of range", ErrInvalidConfig, p)
		}
	}
	seen := map[string]bool{}
	for _, h := range c.Hosts {
		if err := checkDomain(h.Domain); err != nil {
			return err
		}
		if seen[h.Domain] {
			return fmt.Errorf("%w: domain %q configured twice", ErrInvalidConfig, h.Domain)
		}
		seen[h.Domain] = true
		if (len(h.CertPEM) == 0) != (len(h.KeyPEM) == 0) {
			return fmt.Errorf("%w: host %s needs both CertPEM and KeyPEM", ErrInvalidConfig, h.Domain)
		}
		for u := range h.Users {
			if err := checkLocalpart(u); err != nil {
				return err
			}
		}
	}
	for _, comp := range c.Components {
		if err := checkDomain(comp.Domain); err != nil {
			return err
		}
		if seen[comp.Domain] {
			return fmt.Errorf("%w: domain %q configured twice", ErrInvalidConfig, comp.Domain)
		}
		seen[comp.Domain] = true
		if comp.Secret == "" {
			return fmt.Errorf("%w: component %s has no Secret", ErrInvalidConfig, comp.Domain)
		}
	}
	if len(c.Components) > 0 && c.ComponentPort == Disabled {
		return fmt.Errorf("%w: Components need the component listener, but ComponentPort is Disabled", ErrInvalidConfig)
	}
	for d, a := range c.Resolve {
		if err := checkDomain(d); err != nil {
			return err
		}
		if !a.IsValid() || !a.IsLoopback() {
			return fmt.Errorf("%w: Resolve[%q] = %v is not a loopback address; tests reach only 127.0.0.0/8 and ::1", ErrInvalidConfig, d, a)
		}
	}
	if c.Nameserver.IsValid() && !c.Nameserver.Addr().IsLoopback() {
		return fmt.Errorf("%w: Nameserver %v is not on loopback", ErrInvalidConfig, c.Nameserver)
	}
	for _, m := range c.Modules {
		if m == "" || strings.ContainsAny(m, "\"\\\n\r") {
			return fmt.Errorf("%w: module name %q", ErrInvalidConfig, m)
		}
	}
	return nil
}

// checkDomain accepts the plain ASCII domains tests use. Uppercase is
// refused rather than folded because Prosody would store it folded and the
// test would compare against the unfolded form.
func checkDomain(d string) error {
	if d == "" || len(d) > 253 || strings.HasPrefix(d, ".") || strings.HasSuffix(d, ".") || strings.Contains(d, "..") {
		return fmt.Errorf("%w: domain %q (want lowercase ASCII labels like a.test)", ErrInvalidConfig, d)
	}
	for i := range len(d) {
		c := d[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '.') {
			return fmt.Errorf("%w: domain %q (want lowercase ASCII labels like a.test)", ErrInvalidConfig, d)
		}
	}
	return nil
}

// checkLocalpart accepts user names that nodeprep leaves unchanged, so the
// account file written here is the one Prosody looks up at login.
func checkLocalpart(u string) error {
	if u == "" || len(u) > 1023 {
		return fmt.Errorf("%w: user name %q", ErrInvalidConfig, u)
	}
	for i := range len(u) {
		c := u[i]
		if c <= ' ' || c >= 0x7f || c >= 'A' && c <= 'Z' || strings.IndexByte("\"&'/:<>@", c) >= 0 {
			return fmt.Errorf("%w: user name %q (want lowercase ASCII without \"&'/:<>@ or spaces)", ErrInvalidConfig, u)
		}
	}
	return nil
}

// render writes the Prosody configuration file's text. certs maps a
// domain to its certificate and key paths; it is filled in by Start.
func (c *Config) render(l layout, addr netip.Addr, certs map[string][2]string, tls bool) string {
	var b strings.Builder
	w := func(format string, args ...any) { fmt.Fprintf(&b, format+"\n", args...) }
	level := "info"
	if c.Debug {
		level = "debug"
	}
	w("-- Written by internal/prosodytest for one test; not for production.")
	// Prosody refuses to start as root unless told; the test owns this
	// process, and prosodyctl would otherwise switch to the prosody user,
	// who cannot read the test's directory.
	w("run_as_root = true")
	w("pidfile = %s", luaString(l.pid))
	w("data_path = %s", luaString(l.data))
	w("certificates = %s", luaString(l.certs))
	w("log = { { levels = { min = %s }, to = \"file\", filename = %s } }", luaString(level), luaString(l.log))
	w("authentication = \"internal_plain\"")
	w("storage = \"internal\"")
	w("use_ipv6 = false")
	w("interfaces = { %s }", luaString(addr.String()))
	w("local_interfaces = { %s }", luaString(addr.String()))
	w("network_settings = { nagle = false; shutdown_deadline = 0.2 }")
	w("c2s_ports = { %s }", portList(port(c.C2SPort, DefaultC2SPort)))
	w("s2s_ports = { %s }", portList(port(c.S2SPort, DefaultS2SPort)))
	w("c2s_direct_tls_ports = { }")
	w("s2s_direct_tls_ports = { }")
	w("legacy_ssl_ports = { }")
	if len(c.Components) > 0 {
		w("component_ports = { %s }", portList(port(c.ComponentPort, DefaultComponentPort)))
	} else {
		w("component_ports = { }")
	}
	w("component_interfaces = { %s }", luaString(addr.String()))
	w("c2s_require_encryption = false")
	w("allow_unencrypted_plain_auth = true")
	w("s2s_require_encryption = %t", c.RequireEncryption)
	w("s2s_secure_auth = %t", c.SecureAuth)
	if c.CAFile != "" {
		w("ssl = { cafile = %s }", luaString(c.CAFile))
	}
	mods := slices.Clone(baseModules)
	if tls {
		mods = append(mods, "tls")
	}
	for _, m := range c.Modules {
		if !slices.Contains(mods, m) {
			mods = append(mods, m)
		}
	}
	quoted := make([]string, len(mods))
	for i, m := range mods {
		quoted[i] = luaString(m)
	}
	w("modules_enabled = { %s }", strings.Join(quoted, "; "))
	w("%s", c.unboundOption(l))
	if c.Extra != "" {
		w("%s", c.Extra)
	}
	for _, h := range c.Hosts {
		w("")
		w("VirtualHost %s", luaString(h.Domain))
		if p, ok := certs[h.Domain]; ok {
			w("\tssl = { certificate = %s; key = %s }", luaString(p[0]), luaString(p[1]))
		}
		if h.Extra != "" {
			w("%s", h.Extra)
		}
	}
	for _, comp := range c.Components {
		w("")
		w("Component %s", luaString(comp.Domain))
		w("\tcomponent_secret = %s", luaString(comp.Secret))
	}
	return b.String()
}

// unboundOption configures libunbound so that Prosody never asks the
// machine's resolver (/etc/resolv.conf points outside loopback) nor the
// root servers: resolvconf is always off; with a Nameserver every query is
// forwarded to it ("addr@port" is libunbound's syntax for a port); without
// one, the root zone is local and static, so names outside the hosts file
// fail at once with NXDOMAIN instead of timing out.
func (c *Config) unboundOption(l layout) string {
	parts := []string{"resolvconf = false", "hoststxt = " + luaString(l.hosts)}
	if c.Nameserver.IsValid() {
		parts = append(parts, "forward = "+luaString(fmt.Sprintf("%s@%d", c.Nameserver.Addr(), c.Nameserver.Port())))
		// libunbound answers names under test. itself (NXDOMAIN, a default
		// RFC 6761 local zone); "transparent" lets them through ("nodefault"
		// does not work through ub_ctx_set_option). lunbound takes one
		// string per option (a table value crashes it), so the other special
		// zones (invalid., localhost., onion.) stay local. Queries to
		// 127.0.0.0/8 are allowed for good measure; forwarders work without.
		parts = append(parts, `options = { ["local-zone:"] = "test. transparent"; ["do-not-query-localhost:"] = "no" }`)
	} else {
		parts = append(parts, `options = { ["local-zone:"] = ". static" }`)
	}
	return "unbound = { " + strings.Join(parts, "; ") + " }"
}

// hostsFile renders Resolve as a hosts file, sorted for stable output.
func (c *Config) hostsFile() string {
	names := make([]string, 0, len(c.Resolve))
	for d := range c.Resolve {
		names = append(names, d)
	}
	sort.Strings(names)
	var b strings.Builder
	for _, d := range names {
		fmt.Fprintf(&b, "%s %s\n", c.Resolve[d], d)
	}
	return b.String()
}

func portList(p int) string {
	if p == Disabled {
		return ""
	}
	return fmt.Sprint(p)
}

// luaString quotes s as a Lua string literal. Control bytes use three-digit
// decimal escapes so a following digit cannot extend them; other bytes,
// UTF-8 included, pass through, since Lua strings are 8-bit clean.
func luaString(s string) string {
	var b strings.Builder
	b.Grow(len(s) + 2)
	b.WriteByte('"')
	for i := range len(s) {
		c := s[i]
		switch {
		case c == '"' || c == '\\':
			b.WriteByte('\\')
			b.WriteByte(c)
		case c < 0x20 || c == 0x7f:
			fmt.Fprintf(&b, "\\%03d", c)
		default:
			b.WriteByte(c)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// datamanagerEncode is Prosody's file-name encoding for hosts and users in
// data_path: every byte that is not an ASCII letter or digit becomes %xx.
func datamanagerEncode(s string) string {
	var b strings.Builder
	for i := range len(s) {
		c := s[i]
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02x", c)
		}
	}
	return b.String()
}
