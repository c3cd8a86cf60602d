package xcp_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/xcp"
)

func twoComponents() []xcp.Component {
	return []xcp.Component{
		{Name: "a.example", Secret: secretA},
		{Name: "b.example", Secret: secretB},
	}
}

// exchange checks that a and b reach each other through the router.
func exchange(t *testing.T, a, b *xcp.Link, ha, hb collector) {
	t.Helper()
	send(t, a, msg(t, "alice@a.example/phone", "bob@b.example", "ping"))
	got := hb.next(t)
	assert.Equal(t, "alice@a.example/phone", got.From())
	assert.Equal(t, "bob@b.example", got.To())
	assert.Contains(t, got.String(), "<body>ping</body>")

	send(t, b, msg(t, "bob@b.example/desk", "alice@a.example", "pong"))
	got = ha.next(t)
	assert.Equal(t, "bob@b.example/desk", got.From())
	assert.Contains(t, got.String(), "<body>pong</body>")
}

func TestRouterRoutesBothWays(t *testing.T) {
	t.Run("components dial the router (accept)", func(t *testing.T) {
		r := &xcp.Router{Components: twoComponents()}
		addr := startRouter(t, r)
		ha, hb := newCollector(), newCollector()
		a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
		b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
		ready(t, a, b)
		exchange(t, a, b, ha, hb)

		routes := r.Routes()
		require.Len(t, routes, 2)
		assert.Equal(t, "a.example", routes[0].Domain)
		assert.Equal(t, "a.example", routes[0].Component)
		assert.False(t, routes[0].Dialed)
		assert.Equal(t, "b.example", routes[1].Domain)
	})

	t.Run("router dials the components (connect)", func(t *testing.T) {
		ha, hb := newCollector(), newCollector()
		a := &xcp.Link{Name: "a.example", Secret: secretA, Handler: ha}
		b := &xcp.Link{Name: "b.example", Secret: secretB, Handler: hb}
		comps := twoComponents()
		comps[0].Addr = serveLink(t, a)
		comps[1].Addr = serveLink(t, b)
		r := fastRouter(t, &xcp.Router{Components: comps})
		require.NoError(t, r.Start())
		t.Cleanup(func() { require.NoError(t, r.Close()) })
		ready(t, a, b)
		exchange(t, a, b, ha, hb)

		routes := r.Routes()
		require.Len(t, routes, 2)
		assert.True(t, routes[0].Dialed)
		assert.True(t, routes[1].Dialed)
	})

	t.Run("one each way", func(t *testing.T) {
		ha, hb := newCollector(), newCollector()
		b := &xcp.Link{Name: "b.example", Secret: secretB, Handler: hb}
		comps := twoComponents()
		comps[1].Addr = serveLink(t, b)
		addr := startRouter(t, &xcp.Router{Components: comps})
		a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
		ready(t, a, b)
		exchange(t, a, b, ha, hb)
	})
}

func TestRouterRoutesChange(t *testing.T) {
	r := &xcp.Router{Components: twoComponents()}
	addr := startRouter(t, r)
	assert.Empty(t, r.Routes())
	a := &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr}
	wa := watch(a)
	startLink(t, a)
	ready(t, a)
	assert.Equal(t, []xcp.Route{{Domain: "a.example", Component: "a.example", Addr: r.Routes()[0].Addr}}, r.Routes())
	require.NoError(t, a.Close())
	wa.waitFor(t, xcp.StateClosed)
	require.Eventually(t, func() bool { return len(r.Routes()) == 0 }, 5*time.Second, 5*time.Millisecond)
}

func TestDefaultRoute(t *testing.T) {
	r := &xcp.Router{
		Components: []xcp.Component{
			{Name: "s2s-1.edge-1.example.com", Secret: secretS2S, DefaultRoute: true},
			{Name: "imp.vngtp.lab", Secret: secretIMP, Domains: []string{"vngtp.lab"}},
		},
		LocalDomains: []string{"conference.vngtp.lab"},
	}
	addr := startRouter(t, r)
	hs, hi := newCollector(), newCollector()
	s2s := startLink(t, &xcp.Link{Name: "s2s-1.edge-1.example.com", Secret: secretS2S, Addr: addr, Handler: hs})
	imp := startLink(t, &xcp.Link{Name: "imp.vngtp.lab", Secret: secretIMP, Addr: addr, Handler: hi})
	ready(t, s2s, imp)

	// Local user to a federated domain: the default route.
	send(t, imp, msg(t, "bob@vngtp.lab/desk", "alice@coluc.com", "hi"))
	got := hs.next(t)
	assert.Equal(t, "alice@coluc.com", got.To())

	// The S2S component may send from a foreign domain.
	send(t, s2s, msg(t, "alice@coluc.com/jabber", "bob@vngtp.lab", "hello"))
	got = hi.next(t)
	assert.Equal(t, "alice@coluc.com/jabber", got.From())

	// A local domain nobody serves: item-not-found back to the sender.
	send(t, imp, msg(t, "bob@vngtp.lab/desk", "room@conference.vngtp.lab", "x"))
	got = hi.next(t)
	assert.Equal(t, "error", got.Type())
	assert.Equal(t, "room@conference.vngtp.lab", got.From())
	assert.Contains(t, got.String(), "<item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>")

	// No relaying from one federated domain to another.
	send(t, s2s, msg(t, "alice@coluc.com/jabber", "eve@other.example", "relay?"))
	got = hs.next(t)
	assert.Equal(t, "error", got.Type())
	assert.Contains(t, got.String(), "<remote-server-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>")

	routes := r.Routes()
	var domains []string
	for _, rt := range routes {
		domains = append(domains, rt.Domain)
	}
	assert.Equal(t, []string{"*", "imp.vngtp.lab", "s2s-1.edge-1.example.com", "vngtp.lab"}, domains)

	// The S2S component may not speak for a local domain: the router ends
	// the stream with <invalid-from/>, and the link comes back.
	require.NoError(t, s2s.Close())
	var mu sync.Mutex
	var lastErr error
	ws := make(stateWatcher, 100)
	spoof := startLink(t, &xcp.Link{Name: "s2s-1.edge-1.example.com", Secret: secretS2S, Addr: addr, Handler: hs,
		OnStateChange: func(s xcp.State, err error) {
			mu.Lock()
			if err != nil {
				lastErr = err
			}
			mu.Unlock()
			ws <- s
		}})
	ready(t, spoof)
	send(t, spoof, msg(t, "mallory@vngtp.lab", "bob@vngtp.lab", "spoof"))
	ws.waitFor(t, xcp.StateDisconnected)
	mu.Lock()
	assert.ErrorIs(t, lastErr, stream.InvalidFrom)
	mu.Unlock()
	hi.none(t)
	ws.waitFor(t, xcp.StateConnected)
}

func TestNoRoute(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents(), HoldTime: -1})
	ha := newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	ready(t, a)
	for _, tc := range []struct {
		to   string
		cond stanza.Condition
	}{
		{"x@nowhere.example", stanza.RemoteServerNotFound}, // no default route
		{"bob@b.example", stanza.ItemNotFound},             // configured, but b is not connected
		{"@bad", stanza.JIDMalformed},
	} {
		send(t, a, msg(t, "alice@a.example", tc.to, "x"))
		got := ha.next(t)
		assert.Equal(t, "error", got.Type(), tc.to)
		assert.Equal(t, "alice@a.example", got.To())
		assert.Contains(t, got.String(), "<"+string(tc.cond)+" ")
	}
	// An error is never answered with an error.
	errSt, err := xcp.ParseStanza([]byte(`<message type='error' from='alice@a.example' to='x@nowhere.example'/>`))
	require.NoError(t, err)
	send(t, a, errSt)
	ha.none(t)
}

func TestHoldWhileComponentReconnects(t *testing.T) {
	r := &xcp.Router{Components: twoComponents(), HoldTime: 5 * time.Second}
	addr := startRouter(t, r)
	ha, hb := newCollector(), newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	ready(t, a)
	// b has not connected yet: held, not bounced.
	send(t, a, msg(t, "alice@a.example", "bob@b.example", "early"))
	ha.none(t)
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(t, b)
	assert.Contains(t, hb.next(t).String(), "early")
}

func TestHoldExpires(t *testing.T) {
	start := time.Now()
	r := &xcp.Router{Components: twoComponents(), HoldTime: 100 * time.Millisecond}
	addr := startRouter(t, r)
	ha := newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	ready(t, a)
	send(t, a, msg(t, "alice@a.example", "bob@b.example", "late"))
	got := ha.next(t)
	assert.GreaterOrEqual(t, time.Since(start), 100*time.Millisecond)
	assert.Contains(t, got.String(), "<item-not-found ")
}

func TestLoadSharingAndFailover(t *testing.T) {
	r := &xcp.Router{
		Components: []xcp.Component{
			{Name: "a.example", Secret: secretA},
			{Name: "imp-1.vngtp.lab", Secret: secretIMP, Domains: []string{"vngtp.lab"}},
			{Name: "imp-2.vngtp.lab", Secret: secretIMP, Domains: []string{"vngtp.lab"}},
		},
		HoldTime: -1,
	}
	addr := startRouter(t, r)
	ha, h1, h2 := newCollector(), newCollector(), newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	imp1 := &xcp.Link{Name: "imp-1.vngtp.lab", Secret: secretIMP, Addr: addr, Handler: h1}
	w1 := watch(imp1)
	startLink(t, imp1)
	imp2 := startLink(t, &xcp.Link{Name: "imp-2.vngtp.lab", Secret: secretIMP, Addr: addr, Handler: h2})
	ready(t, a, imp1, imp2)

	const users = 64
	for i := range users {
		send(t, a, msg(t, "alice@a.example", fmt.Sprintf("user%d@vngtp.lab/r", i), "x"))
	}
	n1, n2 := 0, 0
	for range users {
		select {
		case <-h1:
			n1++
		case <-h2:
			n2++
		case <-time.After(5 * time.Second):
			t.Fatal("stanzas missing")
		}
	}
	assert.Positive(t, n1, "imp-1 got none")
	assert.Positive(t, n2, "imp-2 got none")

	// The same user always goes to the same link.
	for range 3 {
		send(t, a, msg(t, "alice@a.example", "user0@vngtp.lab/other", "x"))
	}
	first := ""
	for range 3 {
		select {
		case <-h1:
			first += "1"
		case <-h2:
			first += "2"
		case <-time.After(5 * time.Second):
			t.Fatal("stanza missing")
		}
	}
	assert.Contains(t, []string{"111", "222"}, first)

	// imp-1 goes away: everything goes to imp-2.
	require.NoError(t, imp1.Close())
	w1.waitFor(t, xcp.StateClosed)
	require.Eventually(t, func() bool { return len(r.Routes()) == 3 }, 5*time.Second, 5*time.Millisecond)
	for i := range users {
		send(t, a, msg(t, "alice@a.example", fmt.Sprintf("user%d@vngtp.lab", i), "y"))
	}
	for range users {
		h2.next(t)
	}
	h1.none(t)
}

func TestConflict(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents()})
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr})
	ready(t, a)
	errs := make(chan error, 100)
	dup := &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, OnStateChange: func(_ xcp.State, err error) {
		if err != nil {
			errs <- err
		}
	}}
	startLink(t, dup)
	select {
	case err := <-errs:
		require.ErrorIs(t, err, xcp.ErrConflict)
		assert.Contains(t, err.Error(), "same component name")
	case <-time.After(5 * time.Second):
		t.Fatal("the duplicate was not refused")
	}
	assert.Equal(t, xcp.StateConnected, a.State())
	assert.NotEqual(t, xcp.StateConnected, dup.State())
}

func TestUnknownComponent(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents()})
	l := startLink(t, &xcp.Link{Name: "nobody.example", Secret: secretA, Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.Ready(ctx)
	require.ErrorIs(t, err, xcp.ErrHostUnknown)
	assert.ErrorIs(t, err, stream.HostUnknown)
}

func TestConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		r    *xcp.Router
		want string
	}{
		{"no TLS", &xcp.Router{}, "TLSConfig"},
		{"bad name", &xcp.Router{Plaintext: true, Components: []xcp.Component{{Name: "a b", Secret: "x"}}}, "not a domain"},
		{"no secret", &xcp.Router{Plaintext: true, Components: []xcp.Component{{Name: "a.example"}}}, "no secret"},
		{"twice", &xcp.Router{Plaintext: true, Components: []xcp.Component{{Name: "a.example", Secret: "x"}, {Name: "A.example.", Secret: "y"}}}, "twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.r.Start()
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.want)
			require.NoError(t, tc.r.Close())
		})
	}
	assert.ErrorIs(t, (&xcp.Link{Name: "a.example", Secret: "x"}).Start(), xcp.ErrNoTLS)
	err := (&xcp.Link{Name: "a.example", Plaintext: true}).Start()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Secret")
	l := &xcp.Link{Name: "a.example", Secret: "x", Plaintext: true}
	err = l.Start()
	require.Error(t, err)
	assert.Contains(t, err.Error(), "Addr")
	require.NoError(t, l.Close())
}

func TestShutdownDrains(t *testing.T) {
	r := fastRouter(t, &xcp.Router{Components: twoComponents()})
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- r.Serve(ln) }()
	ha, hb := newCollector(), newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: ln.Addr().String(), Handler: ha})
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: ln.Addr().String(), Handler: hb})
	ready(t, a, b)
	exchange(t, a, b, ha, hb)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, r.Shutdown(ctx))
	require.ErrorIs(t, <-done, xcp.ErrClosed)
	assert.Empty(t, r.Routes())
	require.NoError(t, r.Close())
}

// TestWrongSecret: the router refuses the handshake with <not-authorized/>
// and the link reports it in words an administrator can act on.
func TestWrongSecret(t *testing.T) {
	logs := &syncBuffer{}
	r := &xcp.Router{Components: twoComponents(), Logger: newTextLogger(logs)}
	addr := startRouter(t, r)
	l := startLink(t, &xcp.Link{Name: "a.example", Secret: "not-the-right-secret", Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	err := l.Ready(ctx)
	require.ErrorIs(t, err, xcp.ErrNotAuthorized)
	require.ErrorIs(t, err, stream.NotAuthorized)
	var le *xcp.LinkError
	require.ErrorAs(t, err, &le)
	assert.Equal(t, "a.example", le.Component)
	assert.Equal(t, "handshake", le.Op)
	assert.Contains(t, err.Error(), "secret differs")
	assert.Equal(t, xcp.StateDisconnected, l.State())
	require.Eventually(t, func() bool { return strings.Contains(logs.String(), "component refused") }, 5*time.Second, 5*time.Millisecond)
	assert.Contains(t, logs.String(), "not-authorized")
}
