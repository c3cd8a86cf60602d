package xcp_test

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
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
	// Wait for the error itself, not just for a disconnection: the link
	// may have been refused with <conflict/> once before (the router had
	// not yet seen the old link go) and reported that disconnection first.
	assert.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return errors.Is(lastErr, stream.InvalidFrom)
	}, 5*time.Second, 10*time.Millisecond, "the spoofing link is ended with <invalid-from/>")
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
		{"bob@b.example", stanza.RemoteServerTimeout},      // configured, but b is not connected
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

// TestHoldExpires: a configured component that stays down past HoldTime
// is reported as <remote-server-timeout/> (type wait: RFC 6120 §8.3.3.16,
// "could not be established within a reasonable amount of time"; Prosody
// answers the same for an external component that is not connected).
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
	assert.Contains(t, got.String(), "<error type='wait'><remote-server-timeout ")
}

// TestHoldOverflow: what does not fit in the queue of a component whose
// link is down is bounced with <resource-constraint/>.
func TestHoldOverflow(t *testing.T) {
	r := &xcp.Router{Components: twoComponents(), HoldTime: 10 * time.Second, QueueSize: 2}
	addr := startRouter(t, r)
	ha := newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	ready(t, a)
	for i := range 3 {
		send(t, a, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
	}
	got := ha.next(t)
	assert.Equal(t, "2", got.ID())
	assert.Contains(t, got.String(), "<error type='wait'><resource-constraint ")
	ha.none(t)
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

// TestShutdownDrains: a graceful Shutdown delivers what is queued for
// components that are up, and bounces to their senders, before closing
// their links, what it cannot deliver: stanzas held for a component that is
// down, and those a slow component did not take in time.
func TestShutdownDrains(t *testing.T) {
	t.Run("delivered", func(t *testing.T) {
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
	})

	t.Run("absent destination", func(t *testing.T) {
		r := fastRouter(t, &xcp.Router{Components: twoComponents(), HoldTime: time.Minute})
		ln := listen(t)
		done := make(chan error, 1)
		go func() { done <- r.Serve(ln) }()
		ha := newCollector()
		a := &xcp.Link{Name: "a.example", Secret: secretA, Addr: ln.Addr().String(), Handler: ha}
		w := watch(a)
		startLink(t, a)
		ready(t, a)
		for i := range 3 {
			send(t, a, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
		}
		ha.none(t) // held for b
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		require.NoError(t, r.Shutdown(ctx))
		require.ErrorIs(t, <-done, xcp.ErrClosed)
		for i := range 3 {
			got := ha.next(t)
			assert.Equal(t, fmt.Sprint(i), got.ID())
			assert.Equal(t, "error", got.Type())
			assert.Contains(t, got.String(), "<remote-server-timeout ")
		}
		w.waitFor(t, xcp.StateDisconnected)
	})

	t.Run("slow destination", func(t *testing.T) {
		logs := &syncBuffer{}
		defer func() {
			if t.Failed() {
				t.Log(logs.String())
			}
		}()
		r := fastRouter(t, &xcp.Router{Components: twoComponents(), QueueSize: 8, Logger: newTextLogger(logs)})
		ln := listen(t)
		done := make(chan error, 1)
		go func() { done <- r.Serve(ln) }()
		release := make(chan struct{})
		var mu sync.Mutex
		seen := map[string]string{}
		note := func(id, how string) {
			mu.Lock()
			defer mu.Unlock()
			if prev, ok := seen[id]; ok {
				t.Errorf("stanza %s twice: %s, then %s", id, prev, how)
			}
			seen[id] = how
		}
		var bounced atomic.Int64
		ha := xcp.HandlerFunc(func(_ context.Context, st xcp.Stanza) {
			if st.Type() == "error" {
				bounced.Add(1)
				note(st.ID(), "bounced")
			}
		})
		hb := xcp.HandlerFunc(func(ctx context.Context, st xcp.Stanza) {
			select {
			case <-release:
			case <-ctx.Done():
			}
			note(st.ID(), "delivered")
		})
		a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: ln.Addr().String(), Handler: ha, Logger: newTextLogger(logs)})
		b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: ln.Addr().String(), Handler: hb, Logger: newTextLogger(logs)})
		ready(t, a, b)
		body := strings.Repeat("x", 64<<10)
		sent := 0
		for ; sent < 2000; sent++ {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			err := a.Send(ctx, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(sent)+body[:10]+body))
			cancel()
			if err != nil {
				break
			}
		}
		require.Less(t, sent, 2000, "b never slowed a down")
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		defer cancel()
		start := time.Now()
		require.ErrorIs(t, r.Shutdown(ctx), context.DeadlineExceeded)
		t.Logf("Shutdown took %v", time.Since(start))
		require.ErrorIs(t, <-done, xcp.ErrClosed)
		require.Eventually(t, func() bool { return bounced.Load() > 0 }, 5*time.Second, 10*time.Millisecond,
			"nothing queued for the slow component was bounced to its sender")
		close(release)
		t.Logf("%d sent, %d bounced", sent, bounced.Load())
	})
}

// TestRouterAbruptRestart: the router is closed at once, repeatedly, while
// stanzas flow. Stanzas may be lost with the connection (XEP-0114 has no
// acknowledgements), but none is duplicated or reordered, and the links
// come back each time.
func TestRouterAbruptRestart(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	hb := newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr})
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	stop := make(chan struct{})
	var sendErr atomic.Value
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			err := a.Send(ctx, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
			cancel()
			if err != nil && !errors.Is(err, xcp.ErrQueueFull) {
				sendErr.Store(err)
				return
			}
		}
	}()
	last := -1
	check := func() {
		for {
			select {
			case st := <-hb:
				var n int
				_, err := fmt.Sscan(st.ID(), &n)
				require.NoError(t, err)
				require.Greater(t, n, last, "stanza %d after %d: duplicated or reordered", n, last)
				last = n
			default:
				return
			}
		}
	}
	for range 3 {
		r := fastRouter(t, &xcp.Router{Components: twoComponents()})
		lnr := ln
		if lnr == nil {
			var err error
			lnr, err = listenOn(addr)
			require.NoError(t, err)
		}
		ln = nil
		done := make(chan error, 1)
		go func() { done <- r.Serve(lnr) }()
		ready(t, a, b)
		time.Sleep(30 * time.Millisecond) // let stanzas flow
		require.NoError(t, r.Close())
		require.ErrorIs(t, <-done, xcp.ErrClosed)
		check()
	}
	close(stop)
	wg.Wait()
	if err := sendErr.Load(); err != nil {
		t.Fatal(err)
	}
	r := fastRouter(t, &xcp.Router{Components: twoComponents()})
	lnr, err := listenOn(addr)
	require.NoError(t, err)
	serveRouter(t, r, lnr)
	ready(t, a, b)
	send(t, a, msg(t, "alice@a.example", "bob@b.example", "999999999"))
	for {
		st := hb.next(t)
		if st.ID() == "999999999" {
			break
		}
		var n int
		_, err := fmt.Sscan(st.ID(), &n)
		require.NoError(t, err)
		require.Greater(t, n, last)
		last = n
	}
}

// TestRouterRestartInFlight: a graceful router restart while stanzas
// flow. Each stanza arrives once and in order, or comes back as a bounce;
// those the components sent while the links were closing and no link was
// left to carry are dropped, but counted in the router's log: nothing is
// lost silently, nothing duplicated.
func TestRouterRestartInFlight(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	hb := newCollector()
	var bounced sync.Map
	ha := xcp.HandlerFunc(func(_ context.Context, st xcp.Stanza) {
		if st.Type() == "error" {
			bounced.Store(st.ID(), true)
		}
	})
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha, MaxQueueWait: -1})
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	logs := &syncBuffer{}
	r1 := fastRouter(t, &xcp.Router{Components: twoComponents(), Logger: newTextLogger(logs)})
	done1 := make(chan error, 1)
	go func() { done1 <- r1.Serve(ln) }()
	ready(t, a, b)
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()

	const n = 2000
	sent := make(chan struct{})
	go func() {
		defer close(sent)
		for i := range n {
			var err error
			for range 1000 { // a full queue while the router is away: retry
				ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				err = a.Send(ctx, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
				cancel()
				if !errors.Is(err, xcp.ErrQueueFull) {
					break
				}
				time.Sleep(5 * time.Millisecond)
			}
			if err != nil {
				t.Errorf("send %d: %v", i, err)
				return
			}
		}
	}()
	var arrived []int
	for range 100 {
		arrived = append(arrived, id(t, hb.next(t)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, r1.Shutdown(ctx))
	require.ErrorIs(t, <-done1, xcp.ErrClosed)
	ln2, err := listenOn(addr)
	require.NoError(t, err)
	serveRouter(t, fastRouter(t, &xcp.Router{Components: twoComponents()}), ln2)
	<-sent
	send(t, a, msg(t, "alice@a.example", "bob@b.example", "-1")) // behind all the others
	for {
		k := id(t, hb.next(t))
		if k < 0 {
			break
		}
		arrived = append(arrived, k)
	}
	for i := 1; i < len(arrived); i++ {
		require.Greater(t, arrived[i], arrived[i-1], "stanza %d after %d: duplicated or reordered", arrived[i], arrived[i-1])
	}
	lost := 0
	got := map[int]bool{}
	for _, k := range arrived {
		got[k] = true
	}
	for i := range n {
		if _, ok := bounced.Load(fmt.Sprint(i)); ok {
			require.False(t, got[i], "stanza %d both arrived and bounced", i)
			continue
		}
		if !got[i] {
			lost++
		}
	}
	logged := 0
	for _, m := range droppedRe.FindAllStringSubmatch(logs.String(), -1) {
		var c int
		_, err := fmt.Sscan(m[1], &c)
		require.NoError(t, err)
		logged += c
	}
	t.Logf("%d arrived, %d lost, %d counted as dropped in the router's log", len(arrived), lost, logged)
	assert.Equal(t, logged, lost, "stanzas lost without a trace")
}

var droppedRe = regexp.MustCompile(`msg="router closed: undelivered stanzas dropped" count=(\d+)`)

func id(t *testing.T, st xcp.Stanza) int {
	t.Helper()
	var k int
	_, err := fmt.Sscan(st.ID(), &k)
	require.NoError(t, err, "id %q", st.ID())
	return k
}

// TestRouterRestartServeMode: the router dials a Link that waits for it
// (Link.Serve); the router restarts several times, and each time the Link
// takes the new connection, delivers what was queued meanwhile, and its
// OnStateChange calls come one at a time, in the order of the changes.
func TestRouterRestartServeMode(t *testing.T) {
	hs := newCollector()
	var inCallback atomic.Int32
	var mu sync.Mutex
	var states []xcp.State
	s2s := &xcp.Link{Name: "s2s-1.edge-1.example.com", Secret: secretS2S, Handler: hs,
		OnStateChange: func(s xcp.State, _ error) {
			if inCallback.Add(1) != 1 {
				t.Error("OnStateChange called concurrently")
			}
			time.Sleep(time.Millisecond) // widen any window
			mu.Lock()
			states = append(states, s)
			mu.Unlock()
			inCallback.Add(-1)
		}}
	edgeAddr := serveLink(t, s2s)
	comps := []xcp.Component{
		{Name: "s2s-1.edge-1.example.com", Secret: secretS2S, DefaultRoute: true, Addr: edgeAddr},
		{Name: "imp.vngtp.lab", Secret: secretIMP, Domains: []string{"vngtp.lab"}},
	}
	hi := newCollector()
	next := 0
	for round := range 3 {
		r := fastRouter(t, &xcp.Router{Components: comps})
		addr := startRouter(t, r)
		imp := startLink(t, &xcp.Link{Name: "imp.vngtp.lab", Secret: secretIMP, Addr: addr, Handler: hi})
		ready(t, s2s, imp)
		if round > 0 {
			// Queued by the edge while the router was away.
			for range 5 {
				got := hi.next(t)
				assert.Equal(t, fmt.Sprint(next), got.ID())
				next++
			}
		}
		send(t, imp, msg(t, "bob@vngtp.lab", "alice@coluc.com", "r"+fmt.Sprint(round)))
		assert.Equal(t, "r"+fmt.Sprint(round), hs.next(t).ID())
		require.NoError(t, imp.Close())
		require.NoError(t, r.Close())
		require.Eventually(t, func() bool { return s2s.State() != xcp.StateConnected }, 5*time.Second, time.Millisecond)
		for i := range 5 {
			send(t, s2s, msg(t, "alice@coluc.com", "bob@vngtp.lab", fmt.Sprint(next+i)))
		}
	}
	// The callback for the last change may still be running.
	require.Eventually(t, func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(states) > 0 && states[len(states)-1] == s2s.State()
	}, 5*time.Second, time.Millisecond, "the last callback does not report the current state")
}

// TestRefuseInboundForDialledComponent: a component the router dials may
// not connect in: on Expressway the DMZ never opens connections inwards.
func TestRefuseInboundForDialledComponent(t *testing.T) {
	ln := listen(t)
	unused := ln.Addr().String()
	require.NoError(t, ln.Close())
	comps := twoComponents()
	comps[0].Addr = unused // dialled by the router (nobody answers)
	r := &xcp.Router{Components: comps}
	addr := startRouter(t, r)
	c := dialRaw(t, addr)
	c.send(header(xcp.NSAccept, "to", "a.example"))
	got := c.until("</stream:stream>")
	assert.NotContains(t, got, " id='", "the router offered a handshake")
	assert.Contains(t, got, strings.Replace(streamErr, "%s", "policy-violation", 1))
	c.closed()
	assert.Empty(t, r.Routes())
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
