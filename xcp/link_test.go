package xcp_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

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

// TestQueueOverflow: while the router is away, a full queue refuses the
// stanza: Send returns ErrQueueFull and nothing is bounced (the caller was
// told, and may retry without causing a duplicate). What was accepted is
// bounced when the Link closes.
func TestQueueOverflow(t *testing.T) {
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
	h.none(t)

	// Closing bounces what is still queued.
	require.NoError(t, l.Close())
	for i := range 4 {
		got := h.next(t)
		assert.Equal(t, fmt.Sprint(i), got.ID())
		assert.Equal(t, "error", got.Type())
		assert.Equal(t, "alice@a.example", got.To())
		assert.Equal(t, "bob@b.example", got.From())
		assert.Contains(t, got.String(), "<service-unavailable ")
	}
	h.none(t)
	assert.ErrorIs(t, l.Send(context.Background(), msg(t, "alice@a.example", "bob@b.example", "x")), xcp.ErrClosed)
}

// TestQueueBytes: the queue is bounded in bytes too, not only in stanzas.
func TestQueueBytes(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	h := newCollector()
	l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: h, QueueBytes: 3000})
	body := strings.Repeat("x", 600) // in the id and the body: 1,300 bytes a stanza
	send(t, l, msg(t, "alice@a.example", "bob@b.example", "1"+body))
	send(t, l, msg(t, "alice@a.example", "bob@b.example", "2"+body))
	err := l.Send(context.Background(), msg(t, "alice@a.example", "bob@b.example", "3"+body))
	require.ErrorIs(t, err, xcp.ErrQueueFull)
	// A stanza bigger than the whole budget still goes through an empty
	// queue, or it could never be sent.
	require.NoError(t, l.Close())
	h.next(t)
	h.next(t)
	l2 := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, QueueBytes: 100})
	send(t, l2, msg(t, "alice@a.example", "bob@b.example", body))
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

// failConn fails the first large write half-way, as a connection that
// breaks while a batch of stanzas is being written.
type failConn struct {
	net.Conn
	armed *atomic.Bool
}

func (c *failConn) Write(p []byte) (int, error) {
	if len(p) > 8<<10 && c.armed.CompareAndSwap(true, false) {
		n, _ := c.Conn.Write(p[:len(p)/2])
		return n, errors.New("injected write failure")
	}
	return c.Conn.Write(p)
}

// TestWriteFailureRequeues: stanzas that had not wholly reached the kernel
// when a write failed are sent again on the next stream, in order; those
// that had are not (they reached the router before the connection closed):
// every stanza arrives exactly once.
func TestWriteFailureRequeues(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents()})
	hb := newCollector()
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(t, b)

	var armed atomic.Bool
	armed.Store(true)
	gate := make(chan struct{})
	a := &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			select {
			case <-gate:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return &failConn{Conn: c, armed: &armed}, nil
		}}
	w := watch(a)
	startLink(t, a)
	// Queued before the stream is up, so that the writer takes them all at
	// once into its buffer, and one Write carries them.
	const n = 40
	body := strings.Repeat("y", 1000)
	for i := range n {
		st, err := xcp.ParseStanza(fmt.Appendf(nil, `<message from='alice@a.example' to='bob@b.example' id='%d'><body>%s</body></message>`, i, body))
		require.NoError(t, err)
		send(t, a, st)
	}
	close(gate)
	w.waitFor(t, xcp.StateConnected)
	w.waitFor(t, xcp.StateDisconnected) // the injected failure
	ready(t, a)
	for i := range n {
		require.Equal(t, fmt.Sprint(i), hb.next(t).ID(), "stanza %d lost, duplicated or out of order", i)
	}
	hb.none(t)
	assert.False(t, armed.Load(), "the failure was never injected")
}

// TestEchoHandlersDoNotWedge: two components whose Handlers answer every
// stanza with Send, with small queues, under load that fills every buffer
// on the way (each reader waits in Send for room that only the other side's
// reader can make). The Links must not wedge: a writer that gives up ends
// the stream, which cancels the Handler's context and wakes Send, and the
// Links come back. Every stanza is accounted for: delivered, bounced, or
// refused by Send with an error.
func TestEchoHandlersDoNotWedge(t *testing.T) {
	logs := &syncBuffer{}
	defer func() {
		if t.Failed() {
			t.Log(logs.String())
		}
	}()
	// Small socket buffers, so that the buffers on the way fill for sure.
	small := func(_, _ string, c syscall.RawConn) error {
		var err error
		if cerr := c.Control(func(fd uintptr) {
			err = errors.Join(syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 16<<10),
				syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 16<<10))
		}); cerr != nil {
			return cerr
		}
		return err
	}
	dialer := &net.Dialer{Control: small}
	timing := func(l *xcp.Link) *xcp.Link {
		l.QueueSize = 4
		l.KeepAlive = 50 * time.Millisecond
		l.IdleTimeout = 300 * time.Millisecond
		l.Logger = newTextLogger(logs)
		l.DialContext = dialer.DialContext
		return l
	}
	ln, err := (&net.ListenConfig{Control: small}).Listen(context.Background(), "tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := serveRouter(t, fastRouter(t, &xcp.Router{Components: twoComponents(), QueueSize: 4,
		KeepAlive: 50 * time.Millisecond, IdleTimeout: 300 * time.Millisecond, Logger: newTextLogger(logs)}), ln)

	type tally struct{ received, echoed, echoRefused, echoBack, bounced atomic.Int64 }
	var ta, tb tally
	finals := make(chan string, 100)
	body := strings.Repeat("z", 32<<10)
	var links [2]*xcp.Link
	echo := func(self int, tl *tally, me string) xcp.Handler {
		return xcp.HandlerFunc(func(ctx context.Context, st xcp.Stanza) {
			switch {
			case strings.HasPrefix(st.ID(), "final-"):
				select {
				case finals <- st.ID():
				default:
				}
			case st.Type() == "error":
				tl.bounced.Add(1)
			case strings.HasPrefix(st.ID(), "echo-"):
				tl.echoBack.Add(1)
			default:
				tl.received.Add(1)
				reply, err := xcp.ParseStanza(fmt.Appendf(nil, `<message from='%s' to='%s' id='echo-%s'><body>%s</body></message>`, me, st.From(), st.ID(), body))
				if err != nil {
					panic(err)
				}
				if err := links[self].Send(ctx, reply); err != nil {
					tl.echoRefused.Add(1)
					return
				}
				tl.echoed.Add(1)
			}
		})
	}
	a := timing(&xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: echo(0, &ta, "x@a.example")})
	b := timing(&xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: echo(1, &tb, "y@b.example")})
	links = [2]*xcp.Link{a, b}
	startLink(t, a)
	startLink(t, b)
	ready(t, a, b)

	const n = 200
	var sentA, sentB, refusedA, refusedB atomic.Int64
	var wg sync.WaitGroup
	for _, p := range []struct {
		l             *xcp.Link
		from, to      string
		sent, refused *atomic.Int64
	}{{a, "alice@a.example", "bob@b.example", &sentA, &refusedA}, {b, "bob@b.example", "alice@a.example", &sentB, &refusedB}} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range n {
				st, err := xcp.ParseStanza(fmt.Appendf(nil, `<message from='%s' to='%s' id='%d'><body>%s</body></message>`, p.from, p.to, i, body))
				if err != nil {
					panic(err)
				}
				ctx, cancel := context.WithTimeout(context.Background(), 250*time.Millisecond)
				err = p.l.Send(ctx, st)
				cancel()
				if err != nil {
					p.refused.Add(1)
					continue
				}
				p.sent.Add(1)
			}
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		t.Fatalf("senders wedged: a sent %d, b sent %d; a got %d, b got %d", sentA.Load(), sentB.Load(), ta.received.Load(), tb.received.Load())
	}
	// Both come back and still work.
	ready(t, a, b)
	t.Logf("a: sent %d refused %d | b: sent %d refused %d", sentA.Load(), refusedA.Load(), sentB.Load(), refusedB.Load())
	t.Logf("a: received %d echoed %d echo refused %d echoes back %d bounced %d", ta.received.Load(), ta.echoed.Load(), ta.echoRefused.Load(), ta.echoBack.Load(), ta.bounced.Load())
	t.Logf("b: received %d echoed %d echo refused %d echoes back %d bounced %d", tb.received.Load(), tb.echoed.Load(), tb.echoRefused.Load(), tb.echoBack.Load(), tb.bounced.Load())
	assert.Equal(t, int64(n), sentA.Load()+refusedA.Load())
	assert.Equal(t, int64(n), sentB.Load()+refusedB.Load())
	assert.Positive(t, ta.received.Load()+tb.received.Load())
	// A fresh stanza gets through each way, behind whatever is left.
	for _, p := range []struct {
		l        *xcp.Link
		from, to string
	}{{a, "alice@a.example", "bob@b.example"}, {b, "bob@b.example", "alice@a.example"}} {
		deadline := time.After(20 * time.Second)
		for i := 0; ; i++ {
			id := fmt.Sprintf("final-%s-%d", p.from, i)
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = p.l.Send(ctx, msg(t, p.from, p.to, id))
			cancel()
			select {
			case got := <-finals:
				if strings.HasPrefix(got, "final-"+p.from) {
					goto next
				}
			case <-time.After(200 * time.Millisecond):
			case <-deadline:
				t.Fatalf("nothing gets through from %s after the load", p.from)
			}
		}
	next:
	}
}

// TestHandlerSends: a Handler may call Send on its own Link (an echo
// component), including when the answer is a bounce delivered to it.
func TestHandlerSends(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents(), HoldTime: -1})
	ha := newCollector()
	var b *xcp.Link
	hb := xcp.HandlerFunc(func(ctx context.Context, st xcp.Stanza) {
		if st.Type() == "error" {
			return
		}
		reply, _ := xcp.ParseStanza(fmt.Appendf(nil, `<message from='%s' to='%s' id='re-%s'/>`, st.To(), st.From(), st.ID()))
		if err := b.Send(ctx, reply); err != nil {
			t.Errorf("Send from the Handler: %v", err)
		}
	})
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: ha})
	b = startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(t, a, b)
	for i := range 100 {
		send(t, a, msg(t, "alice@a.example", "bob@b.example", fmt.Sprint(i)))
	}
	for i := range 100 {
		assert.Equal(t, "re-"+fmt.Sprint(i), ha.next(t).ID())
	}
}

// TestBounceLogCount: a bounce of nothing answerable does not claim to have
// bounced stanzas.
func TestBounceLogCount(t *testing.T) {
	ln := listen(t)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	logs := &syncBuffer{}
	l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr, Handler: newCollector(), Logger: newTextLogger(logs)})
	st, err := xcp.ParseStanza([]byte(`<message type='error' from='alice@a.example' to='bob@b.example'/>`))
	require.NoError(t, err)
	send(t, l, st)
	require.NoError(t, l.Close())
	assert.NotContains(t, logs.String(), "count=0")
	assert.Contains(t, logs.String(), "cannot be answered")
}

// TestBackPressureMemory: a component that stops reading while another
// sends large stanzas as fast as it can: the heap stays bounded by the
// queues' byte budgets (and socket buffers), whatever QueueSize says.
func TestBackPressureMemory(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: twoComponents()})
	release := make(chan struct{})
	hb := xcp.HandlerFunc(func(ctx context.Context, _ xcp.Stanza) {
		select {
		case <-release:
		case <-ctx.Done():
		}
	})
	a := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: addr})
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(t, a, b)
	defer close(release)

	st := msg(t, "alice@a.example", "bob@b.example", strings.Repeat("x", 64<<10))
	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)
	sent := 0
	for ; sent < 4000; sent++ {
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
		err := a.Send(ctx, st) // one Stanza, shared: only the copies count
		cancel()
		if err != nil {
			require.ErrorIs(t, err, context.DeadlineExceeded)
			break
		}
	}
	require.Less(t, sent, 4000, "Send never blocked")
	runtime.GC()
	var after runtime.MemStats
	runtime.ReadMemStats(&after)
	grown := int64(after.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("Send blocked after %d stanzas of 64 KiB; heap grew by %d KiB", sent, grown>>10)
	// Default budgets: 4 MiB in the router's queue for b, plus the writer's
	// and readers' buffers; the Link's own queue holds the same Stanza.
	assert.Less(t, grown, int64(24<<20), "memory grows with the number of stanzas queued")
}
