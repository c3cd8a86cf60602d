package prosodytest

import (
	"encoding/hex"
	"net/netip"
	"os/exec"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestValidate(t *testing.T) {
	t.Parallel()
	host := []Host{{Domain: "a.test"}}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // substring of the error; "" means valid
	}{
		{"minimal", Config{Hosts: host}, ""},
		{"component only", Config{Components: []Component{{Domain: "c.test", Secret: "s"}}}, "no Hosts"},
		{"component and host", Config{Hosts: host, Components: []Component{{Domain: "c.test", Secret: "s"}}}, ""},
		{"empty", Config{}, "no Hosts"},
		{"public addr", Config{Hosts: host, Addr: netip.MustParseAddr("192.0.2.1")}, "not an IPv4 loopback"},
		{"ipv6", Config{Hosts: host, Addr: netip.MustParseAddr("::1")}, "not an IPv4 loopback"},
		{"port", Config{Hosts: host, C2SPort: 70000}, "out of range"},
		{"uppercase domain", Config{Hosts: []Host{{Domain: "A.test"}}}, "lowercase ASCII"},
		{"quote in domain", Config{Hosts: []Host{{Domain: `a".test`}}}, "lowercase ASCII"},
		{"dot domain", Config{Hosts: []Host{{Domain: "a..test"}}}, "lowercase ASCII"},
		{"duplicate", Config{Hosts: []Host{{Domain: "a.test"}, {Domain: "a.test"}}}, "twice"},
		{"component clash", Config{Hosts: host, Components: []Component{{Domain: "a.test", Secret: "s"}}}, "twice"},
		{"no secret", Config{Hosts: host, Components: []Component{{Domain: "c.test"}}}, "no Secret"},
		{"component disabled", Config{Hosts: host, Components: []Component{{Domain: "c.test", Secret: "s"}}, ComponentPort: Disabled}, "Disabled"},
		{"half a cert", Config{Hosts: []Host{{Domain: "a.test", CertPEM: []byte("x")}}}, "both CertPEM and KeyPEM"},
		{"bad user", Config{Hosts: []Host{{Domain: "a.test", Users: map[string]string{"Al ice": "pw"}}}}, "user name"},
		{"resolve public", Config{Hosts: host, Resolve: map[string]netip.Addr{"b.test": netip.MustParseAddr("10.0.0.1")}}, "not a loopback"},
		{"nameserver public", Config{Hosts: host, Nameserver: netip.MustParseAddrPort("10.255.255.53:53")}, "not on loopback"},
		{"module", Config{Hosts: host, Modules: []string{`x"`}}, "module name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.cfg.validate()
			if tc.want == "" {
				assert.NoError(t, err)
				return
			}
			require.ErrorIs(t, err, ErrInvalidConfig)
			assert.Contains(t, err.Error(), tc.want)
		})
	}
}

func TestRender(t *testing.T) {
	t.Parallel()
	l := newLayout("/tmp/x")
	addr := netip.MustParseAddr("127.1.2.3")
	cfg := Config{
		Hosts:      []Host{{Domain: "a.test", Extra: "\tmax_history = 1"}, {Domain: "b.test"}},
		Components: []Component{{Domain: "c.a.test", Secret: `se"cret`}},
		Modules:    []string{"offline", "ping"},
		Extra:      "-- extra",
	}
	text := cfg.render(l, addr, map[string][2]string{"a.test": {"/c.crt", "/c.key"}}, true)
	for _, want := range []string{
		`interfaces = { "127.1.2.3" }`,
		`component_interfaces = { "127.1.2.3" }`,
		"c2s_ports = { 5222 }",
		"s2s_ports = { 5269 }",
		"component_ports = { 5347 }",
		"s2s_require_encryption = false",
		`modules_enabled = { "roster"; "saslauth"; "disco"; "ping"; "dialback"; "posix"; "tls"; "offline" }`,
		`unbound = { resolvconf = false; hoststxt = "/tmp/x/hosts"; options = { ["local-zone:"] = ". static" } }`,
		"-- extra\n\nVirtualHost \"a.test\"\n\tssl = { certificate = \"/c.crt\"; key = \"/c.key\" }\n\tmax_history = 1\n",
		"VirtualHost \"b.test\"\n\nComponent",
		`component_secret = "se\"cret"`,
	} {
		assert.Contains(t, text, want)
	}
	assert.NotContains(t, text, "limits")

	cfg = Config{Hosts: cfg.Hosts, S2SPort: 15269, C2SPort: Disabled, Nameserver: netip.MustParseAddrPort("127.0.0.1:5353")}
	text = cfg.render(l, addr, nil, false)
	for _, want := range []string{
		"c2s_ports = {  }",
		"s2s_ports = { 15269 }",
		"component_ports = { }",
		`forward = "127.0.0.1@5353"`,
		`["local-zone:"] = "test. transparent"`,
	} {
		assert.Contains(t, text, want)
	}
	assert.NotContains(t, text, `"tls"`)
	assert.Equal(t, []int{15269}, cfg.ports())

	cfg.Resolve = map[string]netip.Addr{"z.test": addr, "b.test": netip.MustParseAddr("127.0.0.9")}
	assert.Equal(t, "127.0.0.9 b.test\n127.1.2.3 z.test\n", cfg.hostsFile())
}

func TestDatamanagerEncode(t *testing.T) {
	t.Parallel()
	assert.Equal(t, "a%2etest", datamanagerEncode("a.test"))
	assert.Equal(t, "al%2dice%5f1", datamanagerEncode("al-ice_1"))
	assert.Equal(t, "%c3%a9", datamanagerEncode("é"))
}

// TestLuaString checks the quoting against the real Lua interpreter.
func TestLuaString(t *testing.T) {
	t.Parallel()
	lua, err := exec.LookPath("lua5.4")
	if err != nil {
		t.Skip("lua5.4 not installed")
	}
	inputs := []string{"", "plain", `q"uo\te`, "new\nline\r\x00nul\x01" + "1", "\x7f9", "é ü 漢", "]]"}
	var script strings.Builder
	for _, in := range inputs {
		script.WriteString("io.write((" + luaString(in) + "):gsub('.', function(c) return string.format('%02x', c:byte()) end), '\\n')\n")
	}
	out, err := exec.Command(lua, "-e", script.String()).CombinedOutput()
	require.NoError(t, err, "%s", out)
	lines := strings.Split(strings.TrimSuffix(string(out), "\n"), "\n")
	require.Len(t, lines, len(inputs))
	for i, in := range inputs {
		assert.Equal(t, hex.EncodeToString([]byte(in)), lines[i], "input %q", in)
	}
}

func TestRandomLoopback(t *testing.T) {
	t.Parallel()
	for _, r := range []uint32{0, 1, 0xffffffff, 0x00fe00fe, 0x12345678} {
		a := randomLoopback(r)
		b := a.As4()
		assert.Equal(t, byte(127), b[0])
		assert.NotZero(t, b[1], "%v avoids 127.0.0.0/24", a)
		assert.NotContains(t, []byte{0, 255}, b[3], "%v", a)
	}
}

func TestFreeLoopbackBusy(t *testing.T) {
	t.Parallel()
	// The same address every time, with a port taken on it: give up with
	// a hint after the bounded number of tries.
	addr := randomLoopback(42)
	ln, err := listenTCP(addr, 0)
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	_, err = freeLoopback(func() uint32 { return 42 }, []int{int(port)})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "system-wide Prosody")

	_, err = freeLoopback(func() uint32 { return 42 }, []int{-2})
	require.ErrorIs(t, err, ErrInvalidConfig)
}

func TestStartFailure(t *testing.T) {
	t.Parallel()
	if Available() != nil {
		t.Skip("prosody not installed")
	}
	_, err := start(t, Config{Hosts: []Host{{Domain: "a.test"}}, Extra: "this is not Lua ("})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "exited during start-up")
	assert.Contains(t, err.Error(), "prosody.cfg.lua", "the console output names the bad file")
}

func TestStartPortTaken(t *testing.T) {
	t.Parallel()
	if Available() != nil {
		t.Skip("prosody not installed")
	}
	addr := randomLoopback(7)
	ln, err := listenTCP(addr, 0)
	require.NoError(t, err)
	defer ln.Close()
	port := ln.Addr().(interface{ AddrPort() netip.AddrPort }).AddrPort().Port()
	_, err = start(t, Config{Addr: addr, C2SPort: int(port), Hosts: []Host{{Domain: "a.test"}}})
	require.ErrorIs(t, err, ErrInvalidConfig)
	assert.Contains(t, err.Error(), "is taken")
}

func TestStartBadCertificate(t *testing.T) {
	t.Parallel()
	if Available() != nil {
		t.Skip("prosody not installed")
	}
	_, err := start(t, Config{Hosts: []Host{{Domain: "a.test", CertPEM: []byte("not a certificate"), KeyPEM: []byte("nor a key")}}})
	require.Error(t, err)
	assert.Contains(t, err.Error(), "a.test.key")
}
