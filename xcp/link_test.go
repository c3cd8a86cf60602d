package xcp_test

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stanza"

	"github.com/xmppfed/xmppfed/xcp"
)

// TestRouterRestart: the router goes away, stanzas sent meanwhile wait in
// the link's queue, and after the router is back each arrives once, in
// order, without anyone reconnecting by hand.
func TestRouterRestart(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	r1 := fastRouter(t, &xcp.Router{Components: twoComponents()})
	done1 := make(chan error, 1)
	go func() { done1 <- r1.Serve(ln) }()

	ha, hb := newCollector(), newCollector()
	a := &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha}
	b := &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb}
	wa, wb := watch(a), watch(b)
	startLink(t, a)
	startLink(t, b)
	ready(t, a, b)
	exchange(t, a, b, ha, hb)

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, r1.Shutdown(ctx))
	require.ErrorIs(t, <-done1, xcp.ErrClosed)
	wa.waitFor(t, xcp.StateDisconnected)
	wb.waitFor(t, xcp.StateDisconnected)

	const n = 200
	for i := range n {
		send(t, a, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
	}

	// Same address: the links find the new router by themselves.
	ln2, err := listenOn(addr)
	require.NoError(t, err)
	r2 := &xcp.Router{Components: twoComponents()}
	fastRouter(t, r2)
	serveRouter(t, r2, ln2)
	ready(t, a, b)

	for i := range n {
		got := hb.next(t)
		require.Equal(t, fmt.Sprint(i), got.ID(), "stanza %d out of order or missing", i)
	}
	send(t, a, msg(t, "alice@a.example", "bob@b.example", "after"))
	assert.Equal(t, "after", hb.next(t).ID(), "a stanza arrived twice")
	hb.none(t)
}

func TestQueueOverflowBounces(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close()) // nobody listens: the link stays down

	h := newCollector()
	l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: h, QueueSize: 4})
	for i := range 4 {
		send(t, l, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
	}
	h.none(t)
	err := l.Send(context.Background(), msg(t, "alice@a.example", "bob@b.example", "overflow"))
	require.ErrorIs(t, err, xcp.ErrQueueFull)

	got := h.next(t)
	assert.Equal(t, "error", got.Type())
	assert.Equal(t, "overflow", got.ID())
	assert.Equal(t, "alice@a.example", got.To())
	assert.Equal(t, "bob@b.example", got.From())
	assert.Contains(t, got.String(), "<resource-constraint xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>")
	var e struct {
		Err stanza.Error `xml:"error"`
	}
	require.NoError(t, got.Decode(&e))
	assert.Equal(t, stanza.ResourceConstraint, e.Err.Condition)
	assert.Equal(t, stanza.Wait, e.Err.Type)
	h.none(t)

	// Closing bounces what is still queued.
	require.NoError(t, l.Close())
	for i := range 4 {
		got := h.next(t)
		assert.Equal(t, fmt.Sprint(i), got.ID())
		assert.Contains(t, got.String(), "<service-unavailable ")
	}
	assert.ErrorIs(t, l.Send(context.Background(), msg(t, "alice@a.example", "bob@b.example", "x")), xcp.ErrClosed)
}

func TestQueueDeadlineBounces(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	h := newCollector()
	l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: h, MaxQueueWait: 50 * time.Millisecond})
	start := time.Now()
	send(t, l, msg(t, "alice@a.example", "bob@b.example", "slow"))
	got := h.next(t)
	assert.GreaterOrEqual(t, time.Since(start), 50*time.Millisecond)
	assert.Equal(t, "slow", got.ID())
	assert.Contains(t, got.String(), "<remote-server-timeout ")
}

// Test1000Stanzas runs a thousand stanzas each way at once (run it with
// -race); TestMain checks that no goroutine is left behind.
func Test1000Stanzas(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents()})
	ha, hb := newCollector(), newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(t, a, b)
	const n = 1000
	var wg sync.WaitGroup
	for _, p := range []struct {
		l        *xcp.Link
		from, to string
	}{{a, "alice@a.example", "bob@b.example"}, {b, "bob@b.example", "alice@a.example"}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				st := msg(t, p.from, p.to, fmt.Sprint(i))
				if err := p.l.Send(context.Background(), st); err != nil {
					t.Error(err)
					return
				}
			}
		}()
	}
	for _, h := range []collector{ha, hb} {
		for i := range n {
			require.Equal(t, fmt.Sprint(i), h.next(t).ID())
		}
	}
	wg.Wait()
}

// TestBackPressure: a component that stops reading slows its senders down;
// nothing grows without bound, and nothing is lost.
func TestBackPressure(t *testing.T) {
	logs := &syncBuffer{}
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	addr := startRouter(t, &xcp.Router{Components: twoComponents(), QueueSize: 8, Logger: newTextLogger(logs)})
	release := make(chan struct{})
	var got atomic.Int64
	hb := xcp.HandlerFunc(func(ctx context.Context, st xcp.Stanza) {
		select {
		case <-release:
		case <-ctx.Done():
		}
		got.Add(1)
	})
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, QueueSize: 8, Logger: newTextLogger(logs)})
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb, Logger: newTextLogger(logs)})
	ready(t, a, b)

	body := strings.Repeat("x", 64<<10)
	sent := 0
	for ; sent < 10000; sent++ {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		err := a.Send(ctx, msg(t, "alice@a.example", "bob@b.example", body))
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			break
		}
	}
	// Socket buffers hold some megabytes; the queues hold 8 + 8.
	t.Logf("Send blocked after %d stanzas of 64 KiB", sent)
	require.Less(t, sent, 10000, "Send never blocked")
	close(release)
	require.Eventually(t, func() bool { return got.Load() >= int64(sent) }, 20*time.Second, 10*time.Millisecond,
		"%d stanzas sent, %d arrived", sent, got.Load())
	time.Sleep(20 * time.Millisecond)
	assert.Equal(t, int64(sent), got.Load())
}

func TestLinkSendValidation(t *testing.T) {
	l := &xcp.Link{Name: "a.example", Secret: secretA, Plaintext: true}
	defer l.Close()
	st, err := xcp.ParseStanza([]byte(`<message to='b@b.example'/>`))
	require.NoError(t, err)
	assert.ErrorIs(t, l.Send(context.Background(), st), xcp.ErrInvalidStanza)
	assert.ErrorIs(t, l.Send(context.Background(), xcp.Stanza{}), xcp.ErrInvalidStanza)
}

func TestNoHandlerAnswersServiceUnavailable(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents()})
	ha := newCollector()
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr})
	ready(t, a, b)
	send(t, a, msg(t, "alice@a.example", "bob@b.example", "anyone?"))
	got := ha.next(t)
	assert.Equal(t, "error", got.Type())
	assert.Contains(t, got.String(), "<service-unavailable ")
}

func TestShutdownWaitsForQueue(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents()})
	hb := newCollector()
	a := fastLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr})
	require.NoError(t, a.Start())
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(t, a, b)
	for i := range 100 {
		send(t, a, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, a.Shutdown(ctx))
	for i := range 100 {
		require.Equal(t, fmt.Sprint(i), hb.next(t).ID())
	}
	assert.Equal(t, xcp.StateClosed, a.State())
}

func TestLinkReadyTimeout(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr})
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	err := l.Ready(ctx)
	require.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "nothing listens there")
}
