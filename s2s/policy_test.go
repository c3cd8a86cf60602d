package s2s_test

import (
	"encoding/xml"
	"net"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

func TestPolicyCheck(t *testing.T) {
	routes := map[string][]string{"routed.example": {"127.0.0.1:5269"}}
	tests := []struct {
		name   string
		cfg    s2s.PolicyConfig
		remote string
		denied bool
	}{
		{"off allows all", s2s.PolicyConfig{Deny: []string{"b.example"}}, "b.example", false},
		{"allow list: listed", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"b.example"}}, "b.example", false},
		{"allow list: case and trailing dot", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"B.Example."}}, "b.EXAMPLE", false},
		{"allow list: U-label entry, A-label remote", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"bücher.example"}}, "xn--bcher-kva.example", false},
		{"allow list: A-label entry, U-label remote", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"xn--bcher-kva.example"}}, "Bücher.example", false},
		{"allow list: not listed", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"b.example"}}, "c.example", true},
		{"allow list: exact match, no subdomains", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"b.example"}}, "im.b.example", true},
		{"allow list: no parent domain either", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"im.b.example"}}, "b.example", true},
		{"allow list: empty", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList}, "b.example", true},
		{"allow list: static route counts as listed", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, StaticRoutes: routes}, "Routed.Example", false},
		{"allow list ignores the deny list", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"b.example"}, Deny: []string{"b.example"}}, "b.example", false},
		{"allow list: not a domain", s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{"b.example"}}, "not a domain", true},
		{"deny list: listed", s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"b.example"}}, "b.example", true},
		{"deny list: case", s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"b.example"}}, "B.EXAMPLE.", true},
		{"deny list: not listed", s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"b.example"}}, "c.example", false},
		{"deny list: exact match", s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"b.example"}}, "im.b.example", false},
		{"deny list ignores the allow list", s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Allow: []string{"c.example"}}, "b.example", false},
		{"deny list: a static route does not override", s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"routed.example"}, StaticRoutes: routes}, "routed.example", true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s2s.NewPolicy(tc.cfg)
			require.NoError(t, err)
			err = p.Check(tc.remote)
			if !tc.denied {
				assert.NoError(t, err)
				return
			}
			require.Error(t, err)
			assert.ErrorIs(t, err, s2s.ErrDenied)
			assert.Contains(t, err.Error(), tc.cfg.Privacy.String(), "the message names the privacy mode")
		})
	}
}

func TestPolicySecurityAndPeers(t *testing.T) {
	p, err := s2s.NewPolicy(s2s.PolicyConfig{
		Security: tlsmode.Optional,
		Peers: map[string]s2s.PeerPolicy{
			"TLS.example":    {RequireTLS: true},
			"cert.example":   {RequireValidCert: true},
			"bücher.example": {RequireTLS: true, RequireValidCert: true},
		},
	})
	require.NoError(t, err)
	tests := []struct {
		remote string
		mode   tlsmode.Mode
		cert   bool
	}{
		{"other.example", tlsmode.Optional, false},
		{"", tlsmode.Optional, false},
		{"tls.example", tlsmode.Required, false},
		{"TLS.EXAMPLE.", tlsmode.Required, false},
		{"cert.example", tlsmode.Optional, true},
		{"xn--bcher-kva.example", tlsmode.Required, true},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.mode, p.SecurityFor(tc.remote), tc.remote)
		assert.Equal(t, tc.cert, p.RequireValidCert(tc.remote), tc.remote)
	}
	// A per-peer override only ever tightens: with the global mode at
	// Required, a peer without override is Required too.
	require.NoError(t, p.Update(s2s.PolicyConfig{Security: tlsmode.NoTLS, Peers: map[string]s2s.PeerPolicy{"tls.example": {RequireTLS: true}}}))
	assert.Equal(t, tlsmode.NoTLS, p.SecurityFor("other.example"))
	assert.Equal(t, tlsmode.Required, p.SecurityFor("tls.example"))
	assert.False(t, p.RequireValidCert("cert.example"), "the old overrides are gone")
}

func TestPolicyZeroValue(t *testing.T) {
	for name, p := range map[string]*s2s.Policy{"zero": {}, "nil": nil} {
		t.Run(name, func(t *testing.T) {
			assert.NoError(t, p.Check("b.example"), "privacy off")
			assert.NoError(t, p.Check("not a domain"))
			assert.Equal(t, tlsmode.Required, p.SecurityFor("b.example"), "TLS required")
			assert.False(t, p.RequireValidCert("b.example"))
			assert.Equal(t, s2s.PolicyConfig{}, p.Config())
		})
	}
	var p s2s.Policy
	require.NoError(t, p.Update(s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"b.example"}}))
	assert.ErrorIs(t, p.Check("b.example"), s2s.ErrDenied, "a zero Policy takes updates")
}

func TestPolicyInvalidConfig(t *testing.T) {
	good := s2s.PolicyConfig{
		Security:     tlsmode.Optional,
		Privacy:      s2s.PrivacyAllowList,
		Allow:        []string{"b.example"},
		StaticRoutes: map[string][]string{"c.example": {"127.0.0.1:5269"}},
		Peers:        map[string]s2s.PeerPolicy{"b.example": {RequireTLS: true}},
	}
	tests := []struct {
		name string
		cfg  s2s.PolicyConfig
		want string // in the message
	}{
		{"security mode", s2s.PolicyConfig{Security: tlsmode.Mode(7)}, "security mode"},
		{"privacy mode", s2s.PolicyConfig{Privacy: s2s.PrivacyMode(3)}, "privacy mode"},
		{"allow entry with a space", s2s.PolicyConfig{Allow: []string{"b.example", "not a domain"}}, "not a domain"},
		{"empty allow entry", s2s.PolicyConfig{Allow: []string{""}}, "allow list"},
		{"deny entry with an empty label", s2s.PolicyConfig{Deny: []string{"a..example"}}, "a..example"},
		{"deny entry with a long label", s2s.PolicyConfig{Deny: []string{strings.Repeat("x", 64) + ".example"}}, "deny list"},
		{"route port", s2s.PolicyConfig{StaticRoutes: map[string][]string{"c.example": {"127.0.0.1:notaport"}}}, "notaport"},
		{"route port zero", s2s.PolicyConfig{StaticRoutes: map[string][]string{"c.example": {"host.example:0"}}}, "port"},
		{"route target empty", s2s.PolicyConfig{StaticRoutes: map[string][]string{"c.example": {""}}}, "empty"},
		{"route domain", s2s.PolicyConfig{StaticRoutes: map[string][]string{"not a domain": {"127.0.0.1"}}}, "not a domain"},
		{"route IPv6 without brackets", s2s.PolicyConfig{StaticRoutes: map[string][]string{"c.example": {"2001:db8::1:5269"}}}, "brackets"},
		{"peer domain", s2s.PolicyConfig{Peers: map[string]s2s.PeerPolicy{"bad domain!": {}}}, "peer policy"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, err := s2s.NewPolicy(tc.cfg)
			assert.Nil(t, p)
			require.ErrorIs(t, err, s2s.ErrConfig)
			assert.Contains(t, err.Error(), tc.want)

			p, err = s2s.NewPolicy(good)
			require.NoError(t, err)
			err = p.Update(tc.cfg)
			require.ErrorIs(t, err, s2s.ErrConfig)
			assert.Equal(t, good, p.Config(), "the old settings stay")
			assert.NoError(t, p.Check("b.example"))
			assert.Equal(t, tlsmode.Required, p.SecurityFor("b.example"))
		})
	}
}

// The Policy keeps its own copy of the settings.
func TestPolicyConfigIsolation(t *testing.T) {
	cfg := s2s.PolicyConfig{
		Privacy:      s2s.PrivacyAllowList,
		Allow:        []string{"b.example"},
		StaticRoutes: map[string][]string{"c.example": {"127.0.0.1"}},
		Peers:        map[string]s2s.PeerPolicy{"b.example": {RequireTLS: true}},
	}
	p, err := s2s.NewPolicy(cfg)
	require.NoError(t, err)
	cfg.Allow[0] = "evil.example"
	delete(cfg.StaticRoutes, "c.example")
	cfg.Peers["b.example"] = s2s.PeerPolicy{}
	assert.NoError(t, p.Check("b.example"))
	assert.NoError(t, p.Check("c.example"))
	assert.ErrorIs(t, p.Check("evil.example"), s2s.ErrDenied)
	assert.Equal(t, tlsmode.Required, p.SecurityFor("b.example"))

	got := p.Config()
	got.Allow[0] = "evil.example"
	got.StaticRoutes["d.example"] = []string{"127.0.0.1"}
	got.Peers["b.example"] = s2s.PeerPolicy{}
	again := p.Config()
	assert.Equal(t, []string{"b.example"}, again.Allow)
	assert.NotContains(t, again.StaticRoutes, "d.example")
	assert.True(t, again.Peers["b.example"].RequireTLS)
}

func TestPrivacyModeString(t *testing.T) {
	for m, want := range map[s2s.PrivacyMode]string{
		s2s.PrivacyOff: "off", s2s.PrivacyAllowList: "allow list", s2s.PrivacyDenyList: "deny list", s2s.PrivacyMode(9): "PrivacyMode(9)",
	} {
		assert.Equal(t, want, m.String())
	}
}

// stateLog records the stream state changes of an Endpoint.
type stateLog struct {
	mu      sync.Mutex
	changes []s2s.StateChange
}

func (l *stateLog) record(c s2s.StateChange) {
	l.mu.Lock()
	l.changes = append(l.changes, c)
	l.mu.Unlock()
}

// closed returns the CLOSED changes for streams with remote in dir that
// had been CONNECTED.
func (l *stateLog) closed(dir s2s.Direction, remote string) []s2s.StateChange {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []s2s.StateChange
	for _, c := range l.changes {
		if c.To == s2s.Closed && c.From == s2s.Connected && c.Info.Direction == dir && c.Info.Remote == remote {
			out = append(out, c)
		}
	}
	return out
}

// waitClosed waits for a connected stream (dir, remote) to close and
// returns its state change.
func (l *stateLog) waitClosed(t testing.TB, dir s2s.Direction, remote string) s2s.StateChange {
	t.Helper()
	var c []s2s.StateChange
	waitFor(t, 10*time.Second, dir.String()+" stream with "+remote+" to close", func() bool {
		c = l.closed(dir, remote)
		return len(c) > 0
	})
	require.Len(t, c, 1)
	return c[0]
}

// streamsWith returns the open streams of d with remote.
func streamsWith(d *s2stest.Domain, remote string) []s2s.Info {
	var out []s2s.Info
	for _, i := range d.Server.Status() {
		if i.Remote == remote {
			out = append(out, i)
		}
	}
	return out
}

// assertPolicyClose checks that a stream ended with <policy-violation/>,
// sent by us (sent) or received from the peer.
func assertPolicyClose(t testing.TB, c s2s.StateChange, sent bool) {
	t.Helper()
	assert.ErrorIs(t, c.Err, stream.PolicyViolation, "%v", c.Err)
	var se *s2s.Error
	if assert.ErrorAs(t, c.Err, &se) {
		assert.Equal(t, sent, se.Sent, "%v", c.Err)
	}
}

// connectBothWays sends one message each way between a and b and waits for
// both.
func connectBothWays(t testing.TB, a, b *s2stest.Domain) {
	t.Helper()
	ctx := ctxT(t, 10*time.Second)
	require.NoError(t, a.Send(ctx, a.Message("alice@"+a.Name, "bob@"+b.Name, "a to b")))
	require.Contains(t, string(b.Inbox.Next(t, 10*time.Second).XML), "a to b")
	require.NoError(t, b.Send(ctx, b.Message("bob@"+b.Name, "alice@"+a.Name, "b to a")))
	require.Contains(t, string(a.Inbox.Next(t, 10*time.Second).XML), "b to a")
}

// TestPolicyUpdateDeny: denying a connected domain closes its streams in
// both directions with <policy-violation/>; further stanzas are refused
// both ways; allowing it again lets stanzas through, without a restart.
func TestPolicyUpdateDeny(t *testing.T) {
	for _, plain := range []bool{false, true} {
		t.Run("plain="+strconv.FormatBool(plain), func(t *testing.T) {
			n := s2stest.New(t)
			var as, bs stateLog
			opts := func(l *stateLog) s2stest.Options {
				o := s2stest.Options{}
				if plain {
					o = plainDomain(nil)
				}
				o.Configure = func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) { e.OnStateChange = l.record }
				return o
			}
			a := n.AddDomain("a.example", opts(&as))
			b := n.AddDomain("b.example", opts(&bs))
			var cs stateLog
			c := n.AddDomain("c.example", opts(&cs))
			connectBothWays(t, a, b)
			connectBothWays(t, a, c)
			require.Len(t, streamsWith(a, "b.example"), 2)
			cStreams := streamsWith(a, "c.example")
			require.Len(t, cStreams, 2)

			cfg := a.Policy.Config()
			cfg.Privacy, cfg.Deny = s2s.PrivacyDenyList, []string{"b.example"}
			require.NoError(t, a.Policy.Update(cfg))

			for _, dir := range []s2s.Direction{s2s.Outbound, s2s.Inbound} {
				assertPolicyClose(t, as.waitClosed(t, dir, "b.example"), true)
			}
			for _, dir := range []s2s.Direction{s2s.Outbound, s2s.Inbound} {
				assertPolicyClose(t, bs.waitClosed(t, dir, "a.example"), false)
			}
			waitFor(t, 5*time.Second, "a's streams with b to go", func() bool { return len(streamsWith(a, "b.example")) == 0 })
			waitFor(t, 5*time.Second, "b's streams with a to go", func() bool { return len(streamsWith(b, "a.example")) == 0 })
			assert.Equal(t, cStreams, idsOnly(streamsWith(a, "c.example"), cStreams), "streams with other domains stay")

			ctx := ctxT(t, 10*time.Second)
			m := stanzaWithID(t, "<message from='alice@a.example' to='bob@b.example' id='m1'><body>x</body></message>")
			require.NoError(t, a.Send(ctx, m))
			checkBounce(t, a.Inbox.Next(t, time.Second), m, "cancel", "service-unavailable")
			mb := stanzaWithID(t, "<message from='bob@b.example' to='alice@a.example' id='mb'><body>x</body></message>")
			require.NoError(t, b.Send(ctx, mb))
			checkBounce(t, b.Inbox.Next(t, 10*time.Second), mb, "cancel", "remote-server-not-found")
			a.Inbox.Empty(t, 50*time.Millisecond)

			// Allowed again: a's next stanza goes through, and b's stream
			// to a authorizes, which also ends b's back-off for a.
			cfg.Privacy = s2s.PrivacyOff
			require.NoError(t, a.Policy.Update(cfg))
			connectBothWays(t, a, b)
			a.Inbox.Empty(t, 20*time.Millisecond)
			b.Inbox.Empty(t, 20*time.Millisecond)
		})
	}
}

// idsOnly returns the entries of got whose stream IDs are among want's,
// with want's values, so that equality means "the same streams are still
// there" whatever their traffic figures.
func idsOnly(got, want []s2s.Info) []s2s.Info {
	var out []s2s.Info
	for _, w := range want {
		for _, g := range got {
			if g.ID == w.ID && g.Direction == w.Direction {
				out = append(out, w)
			}
		}
	}
	return out
}

// TestPolicyStaticRouteAllowList: in allow-list mode, a domain with a
// static route is allowed without being listed, and its route is used
// instead of DNS; removing the route denies it again.
func TestPolicyStaticRouteAllowList(t *testing.T) {
	n := s2stest.New(t)
	c := n.AddDomain("c.example", s2stest.Options{Unlisted: true})
	var as stateLog
	route := net.JoinHostPort("127.0.0.1", strconv.Itoa(c.Addr.Port))
	a := n.AddDomain("a.example", s2stest.Options{
		Policy: s2s.PolicyConfig{
			Privacy:      s2s.PrivacyAllowList,
			Allow:        []string{"b.example"},
			StaticRoutes: map[string][]string{"c.example": {route}},
		},
		Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) { e.OnStateChange = as.record },
	})
	n.AddDomain("d.example", s2stest.Options{})
	ctx := ctxT(t, 10*time.Second)

	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "carol@c.example", "via the route")))
	assert.Contains(t, string(c.Inbox.Next(t, 10*time.Second).XML), "via the route")
	assert.Zero(t, n.DNS().Queries("_xmpp-server._tcp.c.example.", dns.TypeSRV), "the route replaces DNS")
	assert.Zero(t, n.DNS().Queries("_xmpps-server._tcp.c.example.", dns.TypeSRV))
	// c may federate with a inbound too.
	require.NoError(t, c.Send(ctx, c.Message("carol@c.example", "alice@a.example", "back")))
	assert.Contains(t, string(a.Inbox.Next(t, 10*time.Second).XML), "back")

	m := stanzaWithID(t, "<message from='alice@a.example' to='dave@d.example' id='d1'><body>x</body></message>")
	require.NoError(t, a.Send(ctx, m))
	checkBounce(t, a.Inbox.Next(t, time.Second), m, "cancel", "service-unavailable")

	// Without the route, c is just another unlisted domain.
	cfg := a.Policy.Config()
	cfg.StaticRoutes = nil
	require.NoError(t, a.Policy.Update(cfg))
	assertPolicyClose(t, as.waitClosed(t, s2s.Outbound, "c.example"), true)
	assertPolicyClose(t, as.waitClosed(t, s2s.Inbound, "c.example"), true)
	m = stanzaWithID(t, "<message from='alice@a.example' to='carol@c.example' id='c2'><body>x</body></message>")
	require.NoError(t, a.Send(ctx, m))
	checkBounce(t, a.Inbox.Next(t, time.Second), m, "cancel", "service-unavailable")
}

// TestPolicyUpdateSecurityRequired: switching from TLS optional to TLS
// required closes the plaintext streams and keeps the encrypted ones; the
// plaintext-only peer is then unreachable.
func TestPolicyUpdateSecurityRequired(t *testing.T) {
	n := s2stest.New(t)
	var as stateLog
	a := n.AddDomain("a.example", s2stest.Options{
		Policy:    s2s.PolicyConfig{Security: tlsmode.Optional},
		Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) { e.OnStateChange = as.record },
	})
	b := n.AddDomain("b.example", plainDomain(nil))
	c := n.AddDomain("c.example", s2stest.Options{})
	connectBothWays(t, a, b)
	connectBothWays(t, a, c)
	for _, i := range streamsWith(a, "b.example") {
		require.False(t, i.TLS, "%+v", i)
	}
	cStreams := streamsWith(a, "c.example")
	require.Len(t, cStreams, 2)
	for _, i := range cStreams {
		require.True(t, i.TLS, "%+v", i)
	}

	require.NoError(t, a.Policy.Update(s2s.PolicyConfig{Security: tlsmode.Required}))
	assertPolicyClose(t, as.waitClosed(t, s2s.Outbound, "b.example"), true)
	assertPolicyClose(t, as.waitClosed(t, s2s.Inbound, "b.example"), true)
	assert.Equal(t, cStreams, idsOnly(streamsWith(a, "c.example"), cStreams), "TLS streams stay")

	ctx := ctxT(t, 10*time.Second)
	m := stanzaWithID(t, "<message from='alice@a.example' to='bob@b.example' id='m1'><body>x</body></message>")
	require.NoError(t, a.Send(ctx, m))
	checkBounce(t, a.Inbox.Next(t, 10*time.Second), m, "cancel", "remote-server-not-found")
	r, ok := routeOf(a.Pool, "b.example")
	require.True(t, ok)
	assert.ErrorIs(t, r.LastError, stream.PolicyViolation, "we refused the plaintext stream: %v", r.LastError)
	mb := stanzaWithID(t, "<message from='bob@b.example' to='alice@a.example' id='mb'><body>x</body></message>")
	require.NoError(t, b.Send(ctx, mb))
	checkBounce(t, b.Inbox.Next(t, 10*time.Second), mb, "cancel", "remote-server-not-found")
	require.NoError(t, c.Send(ctx, c.Message("carol@c.example", "alice@a.example", "still here")))
	assert.Contains(t, string(a.Inbox.Next(t, 10*time.Second).XML), "still here")
}

// TestPolicyPeerRequireTLS: a per-peer TLS requirement refuses a peer
// without TLS both ways, while the global mode (optional) still lets other
// plaintext peers federate.
func TestPolicyPeerRequireTLS(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{Policy: s2s.PolicyConfig{
		Security: tlsmode.Optional,
		Peers:    map[string]s2s.PeerPolicy{"b.example": {RequireTLS: true}},
	}})
	b := n.AddDomain("b.example", plainDomain(nil))
	c := n.AddDomain("c.example", plainDomain(nil))
	connectBothWays(t, a, c)

	ctx := ctxT(t, 10*time.Second)
	m := stanzaWithID(t, "<message from='alice@a.example' to='bob@b.example' id='m1'><body>x</body></message>")
	require.NoError(t, a.Send(ctx, m))
	checkBounce(t, a.Inbox.Next(t, 10*time.Second), m, "cancel", "remote-server-not-found")
	r, ok := routeOf(a.Pool, "b.example")
	require.True(t, ok)
	var se *s2s.Error
	require.ErrorAs(t, r.LastError, &se)
	assert.True(t, se.Sent, "we closed the stream: %v", r.LastError)
	assert.ErrorIs(t, r.LastError, stream.PolicyViolation, "%v", r.LastError)

	// Inbound, a announces STARTTLS as required to b, which cannot do
	// it and gives up.
	mb := stanzaWithID(t, "<message from='bob@b.example' to='alice@a.example' id='mb'><body>x</body></message>")
	require.NoError(t, b.Send(ctx, mb))
	checkBounce(t, b.Inbox.Next(t, 10*time.Second), mb, "cancel", "remote-server-not-found")
	r, ok = routeOf(b.Pool, "a.example")
	require.True(t, ok)
	assert.ErrorIs(t, r.LastError, stream.UnsupportedFeature, "STARTTLS required by a: %v", r.LastError)
	a.Inbox.Empty(t, 50*time.Millisecond)
	b.Inbox.Empty(t, 10*time.Millisecond)

	// A peer claiming to be b that skips STARTTLS gets its dialback
	// refused with <policy-violation/>, and the stream stays open.
	p := dialAddr(t, a.Addr)
	p.send(strings.NewReplacer("a.test", "b.example", "b.test", "a.example").Replace(rawHeader))
	_, err := p.until("required")
	require.NoError(t, err, "STARTTLS is required for b")
	p.send("<db:result from='b.example' to='a.example'>0123456789abcdef</db:result>")
	res, err := p.until("result")
	require.NoError(t, err)
	assert.Equal(t, "error", attrOf(res, "type"))
	_, err = p.until("policy-violation")
	require.NoError(t, err)
	// c, with no override, may still skip TLS.
	p = dialAddr(t, a.Addr)
	p.send(strings.NewReplacer("a.test", "c.example", "b.test", "a.example").Replace(rawHeader))
	f, err := p.until("features")
	require.NoError(t, err)
	var feats struct {
		Inner string `xml:",innerxml"`
	}
	require.NoError(t, p.d.DecodeElement(&feats, &f))
	assert.Contains(t, feats.Inner, "starttls")
	assert.NotContains(t, feats.Inner, "required")
	assert.Equal(t, uint64(1), a.Server.Counters().DialbackValid, "only c's dialback went through")
}

// dialAddr opens a raw connection to a Server.
func dialAddr(t *testing.T, addr *net.TCPAddr) *rawPeer {
	t.Helper()
	conn, err := net.DialTimeout("tcp", addr.String(), 5*time.Second)
	require.NoError(t, err)
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { conn.Close() })
	return &rawPeer{t: t, conn: conn, d: xml.NewDecoder(conn)}
}

// attrOf returns the value of an unqualified attribute.
func attrOf(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// TestPolicyPeerRequireValidCert: a per-peer valid-certificate requirement
// refuses a peer with a self-signed certificate both ways, where other
// self-signed peers still federate with dialback.
func TestPolicyPeerRequireValidCert(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{Policy: s2s.PolicyConfig{
		Peers: map[string]s2s.PeerPolicy{"b.example": {RequireValidCert: true}},
	}})
	bc := testpki.SelfSigned(t, "b.example")
	b := n.AddDomain("b.example", s2stest.Options{Certificate: &bc})
	cc := testpki.SelfSigned(t, "c.example")
	c := n.AddDomain("c.example", s2stest.Options{Certificate: &cc})
	connectBothWays(t, a, c)
	for _, i := range streamsWith(a, "c.example") {
		assert.Equal(t, s2s.AuthDialback, i.Auth, "self-signed: dialback %+v", i)
	}

	ctx := ctxT(t, 10*time.Second)
	m := stanzaWithID(t, "<message from='alice@a.example' to='bob@b.example' id='m1'><body>x</body></message>")
	require.NoError(t, a.Send(ctx, m))
	checkBounce(t, a.Inbox.Next(t, 10*time.Second), m, "cancel", "remote-server-not-found")
	r, ok := routeOf(a.Pool, "b.example")
	require.True(t, ok)
	assert.ErrorIs(t, r.LastError, s2s.ErrCertificate, "%v", r.LastError)
	assert.Equal(t, uint64(1), a.Pool.Counters().StreamsFailed["certificate"])

	mb := stanzaWithID(t, "<message from='bob@b.example' to='alice@a.example' id='mb'><body>x</body></message>")
	require.NoError(t, b.Send(ctx, mb))
	checkBounce(t, b.Inbox.Next(t, 10*time.Second), mb, "cancel", "remote-server-not-found")
	r, ok = routeOf(b.Pool, "a.example")
	require.True(t, ok)
	var se *s2s.Error
	require.ErrorAs(t, r.LastError, &se)
	assert.Equal(t, "not-authorized", string(se.DialbackAnswer.Condition), "%v", r.LastError)
	a.Inbox.Empty(t, 50*time.Millisecond)
}

// TestPolicyUpdateDenyHeaderWithoutFrom: a peer that authenticated a
// domain on a stream whose header had no 'from' (XEP-0220 allows it) is
// closed all the same when that domain is denied.
func TestPolicyUpdateDenyHeaderWithoutFrom(t *testing.T) {
	n := s2stest.New(t)
	n.AddDomain("a.example", plainDomain(nil))
	b := n.AddDomain("b.example", plainDomain(nil))
	p := dialFrom(t, "127.0.0.1", b.Addr)
	p.send(strings.Replace(peerHeader("", "b.example"), "from='' ", "", 1))
	h, err := p.until("stream")
	require.NoError(t, err)
	key := dialback.Generator{Secret: []byte("secret of a.example")}.Key("b.example", "a.example", attrOf(h, "id"))
	p.send("<db:result from='a.example' to='b.example'>" + key + "</db:result>")
	typ, _ := dialbackAnswer(t, p)
	require.Equal(t, "valid", typ)
	p.send("<message from='alice@a.example' to='bob@b.example'><body>1</body></message>")
	b.Inbox.Next(t, 5*time.Second)

	cfg := b.Policy.Config()
	cfg.Privacy, cfg.Deny = s2s.PrivacyDenyList, []string{"a.example"}
	require.NoError(t, b.Policy.Update(cfg))
	assert.Equal(t, "policy-violation", p.streamError())
	b.Inbox.Empty(t, 20*time.Millisecond)
}

// TestPolicyUpdateDuringVerification: a domain denied while its dialback
// key is being verified is refused, whatever the authoritative server
// says.
func TestPolicyUpdateDuringVerification(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", plainDomain(nil))
	gate := newDialGate()
	gate.hold = make(chan struct{})
	b := n.AddDomain("b.example", plainDomain(func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) { gate.install(e) }))
	p := dialFrom(t, "127.0.0.1", b.Addr)
	// The header names another domain, so the stream itself is not one
	// with a.example when the policy changes.
	p.send(peerHeader("x.example", "b.example"))
	h, err := p.until("stream")
	require.NoError(t, err)
	key := dialback.Generator{Secret: []byte("secret of a.example")}.Key("b.example", "a.example", attrOf(h, "id"))
	p.send("<db:result from='a.example' to='b.example'>" + key + "</db:result>")
	waitFor(t, 5*time.Second, "the verification to dial a", func() bool { return gate.count(a.Addr) == 1 })

	cfg := b.Policy.Config()
	cfg.Privacy, cfg.Deny = s2s.PrivacyDenyList, []string{"a.example"}
	require.NoError(t, b.Policy.Update(cfg))
	close(gate.hold)
	typ, cond := dialbackAnswer(t, p)
	assert.Equal(t, "error", typ)
	assert.Equal(t, "policy-violation", cond)
	waitFor(t, 5*time.Second, "a to answer the verification", func() bool { return a.Server.Counters().AuthoritativeValid == 1 })
	p.send("<message from='alice@a.example' to='bob@b.example'><body>1</body></message>")
	assert.Equal(t, "not-authorized", p.streamError())
	b.Inbox.Empty(t, 20*time.Millisecond)
	assert.Zero(t, b.Server.Counters().InboundOpened)
}

// FuzzPolicyCheck: whatever the text of a list entry or route domain, the
// Policy either refuses it as a configuration error or matches it exactly
// as written: allowed when listed (or routed) in allow-list mode, denied
// when listed in deny-list mode.
func FuzzPolicyCheck(f *testing.F) {
	for _, s := range []string{"b.example", "B.Example.", "bücher.example", "xn--bcher-kva.example", "", " ", "a..b", "127.0.0.1", "[::1]", "x_y.example", strings.Repeat("a", 64) + ".example", "ß.example", "\x00"} {
		f.Add(s, "127.0.0.1:5269")
	}
	f.Add("routed.example", "[2001:db8::1]:5269")
	f.Add("routed.example", "host.example")
	f.Fuzz(func(t *testing.T, domain, target string) {
		allow, err := s2s.NewPolicy(s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, Allow: []string{domain}})
		if err != nil {
			require.ErrorIs(t, err, s2s.ErrConfig)
			_, err = s2s.NewPolicy(s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{domain}})
			require.ErrorIs(t, err, s2s.ErrConfig, "the same entry is refused in both lists")
			return
		}
		require.NoError(t, allow.Check(domain))
		deny, err := s2s.NewPolicy(s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{domain}})
		require.NoError(t, err)
		require.ErrorIs(t, deny.Check(domain), s2s.ErrDenied)
		require.NoError(t, deny.Check("other-"+strings.Trim(domain, ".")+".invalid"), "only the listed name is denied")

		routed, err := s2s.NewPolicy(s2s.PolicyConfig{Privacy: s2s.PrivacyAllowList, StaticRoutes: map[string][]string{domain: {target}}})
		if err != nil {
			require.ErrorIs(t, err, s2s.ErrConfig)
			return
		}
		require.NoError(t, routed.Check(domain), "a routed domain is allowed")
		require.Equal(t, []string{target}, routed.Config().StaticRoutes[domain])
	})
}
