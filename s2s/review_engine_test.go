package s2s_test

// Review of the federation engine (issue 4). Each TestReview_* test fails
// because of the finding it is named after; see the review report.

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"io"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/jid"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// rvDial opens a raw peer connection to addr.
func rvDial(t *testing.T, addr net.Addr) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", addr.String())
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c, d: xml.NewDecoder(c)}
}

// rvSASL drives a raw peer claiming a.test through STARTTLS and SASL
// EXTERNAL (with a certificate of the Net's CA) and the restart after it;
// before sends whatever the test wants on the TLS stream before <auth/>.
func rvSASL(t *testing.T, n *s2stest.Net, p *rawPeer, before func()) {
	t.Helper()
	p.startTLSRaw(n.Certificate("a.test"), rawHeader)
	if before != nil {
		before()
	}
	p.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
	_, err := p.until("success")
	require.NoError(t, err)
	p.send(rawHeader)
	_, err = p.until("features")
	require.NoError(t, err)
}

// rvStreamError reads up to a stream error within d and returns its
// condition, or "" (without failing the test) if none came.
func rvStreamError(p *rawPeer, d time.Duration) string {
	p.conn.SetReadDeadline(time.Now().Add(d))
	if _, err := p.until("error"); err != nil {
		return ""
	}
	for range 100 {
		tok, err := p.d.Token()
		if err != nil {
			return ""
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Space == "urn:ietf:params:xml:ns:xmpp-streams" {
			return se.Name.Local
		}
	}
	return ""
}

func rvInbound(infos []s2s.Info, remote string) bool {
	for _, i := range infos {
		if i.Direction == s2s.Inbound && i.Remote == remote && i.State == s2s.Connected {
			return true
		}
	}
	return false
}

// An inbound stream that asks a db:verify before authenticating with SASL
// EXTERNAL stays flagged VerifyOnly: it is hidden from Status and, worse,
// skipped by the policy enforcement, so a peer denied at runtime keeps its
// stream and its stanzas are still delivered.
func TestReview_SASLAfterVerifyEvadesPolicy(t *testing.T) {
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{})
	p := rvDial(t, b.Addr)
	rvSASL(t, n, p, func() {
		p.send("<db:verify from='a.test' to='b.test' id='x'>00</db:verify>")
		_, err := p.until("verify")
		require.NoError(t, err)
	})
	p.send("<message from='x@a.test' to='y@b.test'><body>one</body></message>")
	require.Contains(t, string(b.Inbox.Next(t, 5*time.Second).XML), "one")

	assert.True(t, rvInbound(b.Server.Status(), "a.test"), "authenticated stream from a.test missing from Server.Status: %+v", b.Server.Status())

	require.NoError(t, b.Policy.Update(s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"a.test"}}))
	assert.Equal(t, "policy-violation", rvStreamError(p, 2*time.Second), "a.test is now denied: its stream must be closed")
	p.conn.SetWriteDeadline(time.Now().Add(time.Second))
	late := "<message from='x@a.test' to='y@b.test'><body>after deny</body></message>"
	if _, err := p.conn.Write([]byte(late)); err == nil {
		ctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
		defer cancel()
		if st, err := b.Inbox.Receive(ctx); err == nil {
			t.Errorf("stanza from a denied domain delivered: %s", st.XML)
		}
	}
}

// After a runtime policy change refuses a peer, its stream is failed with
// <policy-violation/> and closed, but the read loop keeps handing the
// stanzas it has already buffered to the Handler: receiveStanza never
// checks that the stream is failing.
func TestReview_StanzaDeliveredAfterPolicyClose(t *testing.T) {
	first := make(chan *s2s.Stanza, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	defer releaseOnce.Do(func() { close(release) })
	later := make(chan *s2s.Stanza, 10)
	var calls atomic.Int32
	h := s2s.HandlerFunc(func(_ context.Context, st *s2s.Stanza) {
		if calls.Add(1) == 1 {
			first <- st
			<-release
			return
		}
		later <- st
	})
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{Configure: func(_ *s2s.Endpoint, srv *s2s.Server, _ *s2s.Pool) { srv.Handler = h }})
	p := rvDial(t, b.Addr)
	rvSASL(t, n, p, nil)
	// Two stanzas in one write: both land in the stream's read buffer.
	p.send("<message from='x@a.test' to='y@b.test'><body>one</body></message><message from='x@a.test' to='y@b.test'><body>two</body></message>")
	select {
	case <-first:
	case <-time.After(5 * time.Second):
		t.Fatal("first stanza not delivered")
	}
	require.NoError(t, b.Policy.Update(s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"a.test"}}))
	require.Equal(t, "policy-violation", rvStreamError(p, 3*time.Second))
	// Wait for the server to drop the connection: the stream has ended.
	p.conn.SetReadDeadline(time.Now().Add(6 * time.Second))
	for range 1000 {
		if _, err := p.d.Token(); err != nil {
			break
		}
	}
	releaseOnce.Do(func() { close(release) })
	select {
	case st := <-later:
		t.Errorf("stanza from a denied domain delivered after its stream was closed for policy-violation: %s", st.XML)
	case <-time.After(500 * time.Millisecond):
	}
}

// Server.Shutdown documents that when ctx ends first, ctx's error is
// returned; with a Handler still busy it waits for it regardless of ctx.
func TestReview_ShutdownIgnoresCtxWithBusyHandler(t *testing.T) {
	busy := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	free := func() { releaseOnce.Do(func() { close(release) }) }
	h := s2s.HandlerFunc(func(context.Context, *s2s.Stanza) {
		select {
		case busy <- struct{}{}:
		default:
		}
		<-release
	})
	n := s2stest.New(t)
	a := n.AddDomain("a.test", s2stest.Options{})
	b := n.AddDomain("b.test", s2stest.Options{Configure: func(_ *s2s.Endpoint, srv *s2s.Server, _ *s2s.Pool) { srv.Handler = h }})
	require.NoError(t, a.Send(context.Background(), a.Message("x@a.test", "y@b.test", "hi")))
	select {
	case <-busy:
	case <-time.After(5 * time.Second):
		t.Fatal("stanza not delivered")
	}
	timer := time.AfterFunc(2500*time.Millisecond, free) // so that the test ends either way
	defer timer.Stop()
	defer free() // before the Net's cleanup shuts b down
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := b.Server.Shutdown(ctx)
	elapsed := time.Since(start)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, elapsed, 1500*time.Millisecond, "Shutdown(ctx with 300ms) took %s", elapsed)
}

// rvStallConn models a peer whose receive window is full: once stalled,
// writes block until the write deadline, Close, or maxStall (standing in for
// the 30 s write timeout, to keep the test short).
type rvStallConn struct {
	net.Conn
	stalled  atomic.Bool
	maxStall time.Duration
	mu       sync.Mutex
	wdl      time.Time
	closed   chan struct{}
	once     sync.Once
	entered  chan struct{} // if set, told (without blocking) when a stalled write begins
}

func newStallConn(c net.Conn, maxStall time.Duration) *rvStallConn {
	return &rvStallConn{Conn: c, maxStall: maxStall, closed: make(chan struct{})}
}

func (c *rvStallConn) Write(b []byte) (int, error) {
	if !c.stalled.Load() {
		return c.Conn.Write(b)
	}
	if c.entered != nil {
		select {
		case c.entered <- struct{}{}:
		default:
		}
	}
	c.mu.Lock()
	dl := c.wdl
	c.mu.Unlock()
	wait := c.maxStall
	if !dl.IsZero() && time.Until(dl) < wait {
		wait = time.Until(dl)
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	case <-t.C:
		return 0, os.ErrDeadlineExceeded
	}
}

func (c *rvStallConn) SetWriteDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	return c.Conn.SetWriteDeadline(t)
}

func (c *rvStallConn) SetDeadline(t time.Time) error {
	c.mu.Lock()
	c.wdl = t
	c.mu.Unlock()
	return c.Conn.SetDeadline(t)
}

func (c *rvStallConn) Close() error {
	c.once.Do(func() { close(c.closed) })
	return c.Conn.Close()
}

// rvStallListener hands out rvStallConns and remembers them.
type rvStallListener struct {
	net.Listener
	mu    sync.Mutex
	conns []*rvStallConn
}

func (l *rvStallListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	sc := newStallConn(c, rvMaxStall)
	l.mu.Lock()
	l.conns = append(l.conns, sc)
	l.mu.Unlock()
	return sc, nil
}

func (l *rvStallListener) each(f func(*rvStallConn)) {
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, c := range l.conns {
		f(c)
	}
}

func (l *rvStallListener) stallAll() { l.each(func(c *rvStallConn) { c.stalled.Store(true) }) }

// rvStallServer serves b.test (with policy pol) on an rvStallListener and
// returns a raw peer authenticated as a.test with SASL EXTERNAL.
func rvStallServer(t *testing.T, pol *s2s.Policy) (*s2s.Server, *rvStallListener, *rawPeer, chan *s2s.Stanza) {
	n := s2stest.New(t)
	ep := &s2s.Endpoint{
		Domains:  []string{"b.test"},
		Keys:     dialback.Generator{Secret: []byte("secret of b.test")},
		TLS:      &tls.Config{Certificates: []tls.Certificate{n.Certificate("b.test")}},
		Roots:    n.Roots(),
		Resolver: n.Resolver(),
		Logger:   n.Logger("b.test"),
		Policy:   pol,
	}
	got := make(chan *s2s.Stanza, 10)
	srv := &s2s.Server{Endpoint: ep, Handler: s2s.HandlerFunc(func(_ context.Context, st *s2s.Stanza) { got <- st })}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	sl := &rvStallListener{Listener: ln}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(sl) }()
	t.Cleanup(func() {
		srv.Close()
		<-served
	})
	p := rvDial(t, ln.Addr())
	rvSASL(t, n, p, nil)
	p.send("<message from='x@a.test' to='y@b.test'><body>one</body></message>")
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("stanza not delivered")
	}
	return srv, sl, p, got
}

// Server.Close "stops at once", and Shutdown returns ctx's error when ctx
// ends; with an authenticated peer that stops reading, both wait for the
// <system-shutdown/> write to time out (writeTimeout, 30 s in production,
// then 5 s more for TLS close_notify).
func TestReview_CloseBlocksOnStuckPeer(t *testing.T) {
	for _, graceful := range []bool{false, true} {
		name := "Close"
		if graceful {
			name = "Shutdown"
		}
		t.Run(name, func(t *testing.T) {
			srv, sl, _, _ := rvStallServer(t, nil)
			sl.stallAll()
			start := time.Now()
			if graceful {
				ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
				defer cancel()
				srv.Shutdown(ctx)
			} else {
				srv.Close()
			}
			elapsed := time.Since(start)
			assert.Less(t, elapsed, 1200*time.Millisecond, "%s with a peer that does not read took %s", name, elapsed)
		})
	}
}

// A peer that stops reading keeps its stream, and has its new stanzas
// delivered, after a policy change denies it: failAsync marks the stream
// closing but the transport is closed only after the <policy-violation/>
// write returns (up to writeTimeout, 30 s), and the read loop meanwhile
// hands every stanza to the Handler.
func TestReview_DeniedPeerDeliversWhileErrorWriteStalls(t *testing.T) {
	pol, err := s2s.NewPolicy(s2s.PolicyConfig{})
	require.NoError(t, err)
	_, sl, p, got := rvStallServer(t, pol)
	sl.stallAll()
	t.Cleanup(func() { sl.each(func(c *rvStallConn) { c.stalled.Store(false) }) })
	require.NoError(t, pol.Update(s2s.PolicyConfig{Privacy: s2s.PrivacyDenyList, Deny: []string{"a.test"}}))
	p.send("<message from='x@a.test' to='y@b.test'><body>after deny</body></message>")
	select {
	case st := <-got:
		t.Errorf("stanza from a denied domain delivered: %s", st.XML)
	case <-time.After(500 * time.Millisecond):
	}
}

// rvDialer wraps the Pool's outbound connections in rvStallConns.
type rvDialer struct {
	mu    sync.Mutex
	conns []*rvStallConn
	holds []*rvHoldConn
}

func (d *rvDialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	sc := newStallConn(c, rvMaxStall)
	hc := &rvHoldConn{rvStallConn: sc}
	d.mu.Lock()
	d.conns = append(d.conns, sc)
	d.holds = append(d.holds, hc)
	d.mu.Unlock()
	return hc, nil
}

func (d *rvDialer) each(f func(*rvStallConn)) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		f(c)
	}
}

// rvHoldConn, once held, swallows what the peer sends (a peer that never
// answers our </stream:stream>) until closed.
type rvHoldConn struct {
	*rvStallConn
	held atomic.Bool
}

func (c *rvHoldConn) Read(b []byte) (int, error) {
	n, err := c.rvStallConn.Read(b)
	if c.held.Load() {
		<-c.closed
		return 0, net.ErrClosed
	}
	return n, err
}

// Pool.Send blocks for the whole write timeout (30 s in production) when
// the peer stops reading, whatever ctx says: one slow or hostile peer stalls
// every sender to its domain, and a single routing goroutine for all.
func TestReview_PoolSendIgnoresCtxOnStuckPeer(t *testing.T) {
	n := s2stest.New(t)
	d := &rvDialer{}
	a := n.AddDomain("a.test", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) { e.DialContext = d.dial }})
	b := n.AddDomain("b.test", s2stest.Options{})
	require.NoError(t, a.Send(context.Background(), a.Message("x@a.test", "y@b.test", "one")))
	b.Inbox.Next(t, 5*time.Second)
	d.each(func(c *rvStallConn) { c.stalled.Store(true) })
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	a.Send(ctx, a.Message("x@a.test", "y@b.test", "two"))
	elapsed := time.Since(start)
	assert.Less(t, elapsed, 1200*time.Millisecond, "Pool.Send(ctx with 300ms) took %s", elapsed)
}

// When an idle stream that carries two local domains (XEP-0220
// multiplexing) is closing, the next Send for one of them picks that very
// stream again as a shared candidate (Pool.stream checks Err, not closing),
// fails on it, bounces the stanza with <remote-server-not-found/> and puts a
// healthy peer in back-off.
func TestReview_IdleMultiplexedStreamBounces(t *testing.T) {
	n := s2stest.New(t)
	d := &rvDialer{}
	a := n.AddDomain("a.test", s2stest.Options{Aliases: []string{"a2.test"}, Configure: func(e *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) {
		e.DialContext = d.dial
		p.IdleTimeout = 300 * time.Millisecond
		p.KeepAlive = -1
	}})
	b := n.AddDomain("b.test", s2stest.Options{})
	ctx := context.Background()
	require.NoError(t, a.Send(ctx, a.Message("x@a.test", "y@b.test", "one")))
	b.Inbox.Next(t, 5*time.Second)
	// Once the route is up, a2.test's setup finds the stream and shares it.
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) && !rvRouteUp(a.Pool, "a.test", "b.test") {
		time.Sleep(5 * time.Millisecond)
	}
	require.NoError(t, a.Send(ctx, a.Message("x@a2.test", "y@b.test", "two")))
	b.Inbox.Next(t, 5*time.Second)
	var outbound int
	for _, i := range a.Pool.Status() {
		if i.Direction == s2s.Outbound {
			outbound++
		}
	}
	require.Equal(t, 1, outbound, "both local domains share one stream: %+v", a.Pool.Status())
	// From now on b's answer to our closing tag never arrives (a slow
	// peer): the stream stays "closing" for closeGrace.
	rvHoldAll(d)
	// Wait for the idle close to reach b.
	deadline = time.Now().Add(5 * time.Second)
	for rvInbound(b.Server.Status(), "a.test") && time.Now().Before(deadline) {
		time.Sleep(20 * time.Millisecond)
	}
	require.False(t, rvInbound(b.Server.Status(), "a.test"), "idle stream not closed")
	require.NoError(t, a.Send(ctx, a.Message("x@a.test", "y@b.test", "three")))
	ctx3, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	for {
		st, err := b.Inbox.Receive(ctx3)
		if err != nil {
			t.Errorf("third stanza not delivered after the idle close; a's inbox: %d stanza(s)", a.Inbox.Len())
			break
		}
		if strings.Contains(string(st.XML), "three") {
			break
		}
	}
	if a.Inbox.Len() > 0 {
		st := a.Inbox.Next(t, time.Second)
		t.Errorf("stanza bounced after an idle close: %s (%s)", s2stest.ErrorCondition(st), st.XML)
	}
}

func rvHoldAll(d *rvDialer) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.holds {
		c.held.Store(true)
	}
}

// rvFlakyListener fails its first Accept with a temporary error, then
// blocks until closed (or a fallback timeout, so that the test ends).
type rvFlakyListener struct {
	net.Listener
	calls  atomic.Int32
	closed chan struct{}
	once   sync.Once
}

type rvTempErr struct{}

func (rvTempErr) Error() string   { return "accept: too many open files (simulated)" }
func (rvTempErr) Timeout() bool   { return true }
func (rvTempErr) Temporary() bool { return true }

func (l *rvFlakyListener) Accept() (net.Conn, error) {
	if l.calls.Add(1) == 1 {
		return nil, rvTempErr{}
	}
	select {
	case <-l.closed:
	case <-time.After(2 * time.Second):
	}
	return nil, net.ErrClosed
}

func (l *rvFlakyListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return l.Listener.Close()
}

// rvHookHandler runs f when a record with message msg is logged.
type rvHookHandler struct {
	msg string
	f   func()
}

func (h *rvHookHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *rvHookHandler) Handle(_ context.Context, r slog.Record) error {
	if r.Message == h.msg {
		h.f()
	}
	return nil
}
func (h *rvHookHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *rvHookHandler) WithGroup(string) slog.Handler      { return h }

// Close racing with a temporary Accept error: serve removes the listener
// from the set, Close runs (and cannot close it), then serve puts it back
// without checking closed and blocks in Accept on a listener nobody will
// close. Serve does not return ErrServerClosed and the listener leaks.
func TestReview_ServeCloseDuringAcceptRetry(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	fl := &rvFlakyListener{Listener: ln, closed: make(chan struct{})}
	srv := &s2s.Server{}
	var closeOnce sync.Once
	hook := &rvHookHandler{msg: "accept failed; retrying", f: func() { closeOnce.Do(func() { srv.Close() }) }}
	srv.Endpoint = &s2s.Endpoint{
		Domains:  []string{"b.test"},
		Keys:     dialback.Generator{Secret: []byte("s")},
		Security: tlsmode.NoTLS,
		Logger:   slog.New(hook),
	}
	served := make(chan error, 1)
	start := time.Now()
	go func() { served <- srv.Serve(fl) }()
	select {
	case err := <-served:
		assert.ErrorIs(t, err, s2s.ErrServerClosed)
		assert.Less(t, time.Since(start), 1500*time.Millisecond, "Serve returned only when its listener gave up by itself")
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return")
	}
	select {
	case <-fl.closed:
	default:
		t.Error("the Server never closed its listener")
	}
	fl.Close()
}

// rvMaxStall stands in for the 30 s write timeout of a stalled write.
const rvMaxStall = 1800 * time.Millisecond

// A peer hosting many domains: the Pool opens one stream per remote domain
// at once (it never multiplexes targets, though canMultiplexTarget exists),
// so a burst of sends trips the peer's per-address limit on
// unauthenticated connections (20 by default, our own Server's included);
// the refusal is then taken for an unreachable domain: stanzas bounced with
// <remote-server-not-found/> and the domain put in back-off.
func TestReview_ManyRemoteDomainsBounced(t *testing.T) {
	n := s2stest.New(t)
	var aliases []string
	for i := range 30 {
		aliases = append(aliases, "b"+string(rune('a'+i/10))+string(rune('0'+i%10))+".test")
	}
	a := n.AddDomain("a.test", s2stest.Options{})
	b := n.AddDomain("b.test", s2stest.Options{Aliases: aliases})
	for _, d := range aliases {
		require.NoError(t, a.Send(context.Background(), a.Message("x@a.test", "y@"+d, "hi")))
	}
	// Every stanza ends up delivered or bounced; none may be bounced.
	delivered := 0
	deadline := time.Now().Add(10 * time.Second)
	for delivered+a.Inbox.Len() < len(aliases) && time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		if _, err := b.Inbox.Receive(ctx); err == nil {
			delivered++
		}
		cancel()
	}
	if bounced := a.Inbox.Len(); bounced > 0 {
		st := a.Inbox.Next(t, time.Second)
		t.Errorf("%d of %d stanzas bounced by a peer that serves their domains, e.g. %s: %s", bounced, len(aliases), s2stest.ErrorCondition(st), st.XML)
	}
	assert.Equal(t, len(aliases), delivered)
}

// A peer that answers our header with a stream error (here
// <host-unknown/>) is counted and bounced as "unreachable": readFailure
// rewraps the *Error of peerStreamError without its Condition, so
// nextTargetAfter tries the next target and FailureReason never says
// "stream-error-received:…".
func TestReview_PeerStreamErrorMisclassified(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.test", s2stest.Options{})
	b := n.AddDomain("b.test", s2stest.Options{})
	n.Publish("c.test", b.Addr, nil) // c.test points at b, which does not serve it
	require.NoError(t, a.Send(context.Background(), a.Message("x@a.test", "y@c.test", "hi")))
	st := a.Inbox.Next(t, 10*time.Second)
	c := a.Pool.Counters()
	assert.Equal(t, uint64(1), c.StreamsFailed["stream-error-received:host-unknown"], "StreamsFailed=%v; bounce: %s", c.StreamsFailed, st.XML)
}

func rvRouteUp(p *s2s.Pool, local, remote string) bool {
	for _, r := range p.Routes() {
		if r.Local == local && r.Remote == remote && r.State == "up" {
			return true
		}
	}
	return false
}

// A hand-built Stanza without a to address is taken by Pool.Send: a route
// to the domain "" is set up, fails, and the stanza is bounced with
// <remote-server-not-found/> (and "" put in back-off), where Send should
// refuse it with ErrBadStanza like an empty stanza.
func TestReview_SendWithoutToAccepted(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.test", s2stest.Options{})
	st := a.Message("x@a.test", "y@b.test", "hi")
	st.To = jid.JID{}
	err := a.Send(context.Background(), st)
	assert.ErrorIs(t, err, s2s.ErrBadStanza)
	for _, r := range a.Pool.Routes() {
		assert.NotEqual(t, "", r.Remote, "route to the empty domain: %+v", r)
	}
}

// The inbound keepalive starts when SASL EXTERNAL succeeds, before the
// stream restart: a whitespace keepalive can then precede the new response
// header's XML declaration, which is not well-formed (XML 1.0 §2.8; spec
// §3.3 forbids whitespace around SASL), and a strict parser such as
// Prosody's expat drops the stream.
func TestReview_KeepaliveBeforeRestartHeader(t *testing.T) {
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{Configure: func(_ *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) { p.KeepAlive = 50 * time.Millisecond }})
	p := rvDial(t, b.Addr)
	p.startTLSRaw(n.Certificate("a.test"), rawHeader)
	p.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
	_, err := p.until("success")
	require.NoError(t, err)
	time.Sleep(300 * time.Millisecond) // a peer slower than the keepalive to restart
	p.send(rawHeader)
	buf := make([]byte, 5)
	p.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	_, err = io.ReadFull(p.conn, buf)
	require.NoError(t, err)
	assert.Equal(t, "<?xml", string(buf), "bytes before the restarted stream's XML declaration")
}
