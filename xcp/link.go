package xcp

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/internal/logkey"
)

// Handler handles the stanzas that arrive on a Link.
//
// HandleStanza runs on the link's reading goroutine: while it runs, nothing
// more is read from the router, which is how a slow consumer slows its
// senders down. Bounces (error replies to stanzas this side sent that
// could not be delivered) are delivered from another goroutine, never from
// the one writing to the router, so HandleStanza must be safe for
// concurrent use.
//
// HandleStanza may call Send on its own Link, for instance to answer the
// stanza. It should pass ctx to Send: ctx is cancelled when the stream the
// stanza came on ends (and when the Link closes), so a Send waiting for
// room in the queue then returns instead of holding up the reader; a Send
// given another context still returns once the stream is down, with
// ErrQueueFull if the queue is full. HandleStanza must return soon after
// ctx is cancelled: the Link waits for it before it reconnects or closes.
type Handler interface {
	HandleStanza(ctx context.Context, st Stanza)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, st Stanza)

// HandleStanza calls f(ctx, st).
func (f HandlerFunc) HandleStanza(ctx context.Context, st Stanza) { f(ctx, st) }

// State is the state of a Link.
type State int32

// Link states. A Link is DISCONNECTED until its first stream is up.
const (
	StateDisconnected State = iota // no stream; stanzas queue
	StateConnecting                // dialling, TLS or handshake in progress
	StateConnected                 // handshake done; stanzas flow
	StateClosed                    // Close was called
)

func (s State) String() string {
	switch s {
	case StateDisconnected:
		return "DISCONNECTED"
	case StateConnecting:
		return "CONNECTING"
	case StateConnected:
		return "CONNECTED"
	case StateClosed:
		return "CLOSED"
	}
	return fmt.Sprintf("State(%d)", int32(s))
}

// Link is the component side of a router link: an XEP-0114 component
// (such as the S2S component of an edge) attached to a Router.
//
// Either end may open the TCP connection. With Start, the Link dials the
// router at Addr and speaks jabber:component:accept; with Serve, the Link
// waits for the router to dial it (jabber:component:connect), which is the
// Expressway shape: the core inside the firewall dials the edge in the DMZ.
// Either way the Link re-establishes the stream when it is lost (dialling
// again with jittered exponential back-off, or waiting for the router to),
// keeps what is sent meanwhile in a bounded queue and delivers it, in
// order, once the stream is back. A stanza that waited longer than
// MaxQueueWait, or was still queued when the Link closed, is bounced: its
// sender gets an error reply through the Handler. Delivery is at most once:
// a stanza handed to the operating system before the connection failed is
// not sent again (XEP-0114 has no acknowledgements); one that was not is.
//
// Configure the exported fields before calling Start, Serve or Send, and do
// not change them afterwards. Close releases everything.
type Link struct {
	// Name is the component name, the domain the router knows this
	// component by, e.g. "s2s-1.edge-1.example.com". Required.
	Name string

	// Secret is the shared handshake secret. Required; use at least 128
	// random bits: the handshake hash and the public stream ID allow an
	// offline guess of weak secrets.
	Secret string

	// Addr is the router's "host:port", for Start.
	Addr string

	// TLSConfig secures the connection with TLS from the first byte. When
	// dialling, it needs the client certificate and RootCAs (ServerName
	// defaults to Addr's host); when serving, the certificate and
	// ClientCAs: the router's certificate is required and verified unless
	// ClientAuth says otherwise. Without TLSConfig, Plaintext must be set.
	TLSConfig *tls.Config

	// Plaintext allows a link without TLS. Only on a trusted network: the
	// link carries every federated stanza.
	Plaintext bool

	// Handler receives the stanzas the router sends, and bounces. If nil,
	// the router's stanzas are answered with <service-unavailable/>.
	Handler Handler

	// QueueSize and QueueBytes bound the stanzas waiting to be written, in
	// number and in bytes (defaults DefaultQueueSize, DefaultQueueBytes).
	// While connected, Send waits for room; while not, a stanza that does
	// not fit is refused with ErrQueueFull.
	QueueSize, QueueBytes int

	// MaxQueueWait is how long a stanza may wait in the queue before it is
	// bounced with <remote-server-timeout/> (default DefaultMaxQueueWait;
	// negative: forever).
	MaxQueueWait time.Duration

	// HandshakeTimeout bounds dialling, TLS and the XEP-0114 handshake
	// (default DefaultHandshakeTimeout).
	HandshakeTimeout time.Duration

	// MaxPendingHandshakes bounds the connections Serve has accepted that
	// have not completed the handshake (default
	// DefaultMaxPendingHandshakes); further ones are closed at once.
	MaxPendingHandshakes int

	// KeepAlive is the idle time after which a single space is sent
	// (default DefaultKeepAlive; negative: never).
	KeepAlive time.Duration

	// IdleTimeout is how long the router may stay silent, and a write may
	// block, before the link is declared dead (default DefaultIdleTimeout;
	// negative: never).
	IdleTimeout time.Duration

	// MinBackoff and MaxBackoff bound the delay between dial attempts
	// (defaults DefaultMinBackoff, DefaultMaxBackoff). After the router
	// refuses the secret, the Link waits MaxBackoff: retrying sooner would
	// only fill the router's log.
	MinBackoff, MaxBackoff time.Duration

	// MaxStanzaSize and MaxDepth bound what is accepted from the router
	// (defaults DefaultMaxStanzaSize, DefaultMaxDepth); a stanza over the
	// limit ends the stream with <policy-violation/>.
	MaxStanzaSize, MaxDepth int

	// DialContext opens connections (default: net.Dialer).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Logger receives state changes and errors (default: none).
	Logger *slog.Logger

	// OnStateChange, if set, is called after every state change, with the
	// error that caused it, if any. Calls come one at a time, in the order
	// of the changes. It must not block, nor call Close or Shutdown.
	OnStateChange func(State, error)

	endpoint // mu also guards the fields below it

	initOnce  sync.Once
	initErr   error
	name      string
	maxWait   time.Duration
	q         *queue
	connected atomic.Bool

	bounces bounceQueue
	stateMu sync.Mutex // serialises state changes with their OnStateChange calls
	state   State
	lastErr error
	changed chan struct{}
	cur     *session
	dialing bool
}

func (l *Link) init() error {
	l.initOnce.Do(func() {
		l.initErr = l.setup()
	})
	return l.initErr
}

func (l *Link) setup() error {
	name, ok := normDomain(l.Name)
	if !ok {
		return fmt.Errorf("xcp: Link.Name %q is not a component name (a domain, such as s2s-1.edge-1.example.com)", l.Name)
	}
	if l.Secret == "" {
		return fmt.Errorf("xcp: Link %q has no Secret: the router link needs the shared secret configured on the router", name)
	}
	o, err := optionFields{
		TLSConfig: l.TLSConfig, Plaintext: l.Plaintext,
		HandshakeTimeout: l.HandshakeTimeout, KeepAlive: l.KeepAlive, IdleTimeout: l.IdleTimeout,
		MaxStanzaSize: l.MaxStanzaSize, MaxDepth: l.MaxDepth,
		Logger: l.Logger, DialContext: l.DialContext,
		MinBackoff: l.MinBackoff, MaxBackoff: l.MaxBackoff,
		QueueSize: l.QueueSize, QueueBytes: l.QueueBytes, MaxPendingHandshakes: l.MaxPendingHandshakes,
	}.options()
	if err != nil {
		return err
	}
	l.use(o)
	l.name = name
	l.log = o.log.With(logkey.Component, name)
	l.maxWait = orDefault(l.MaxQueueWait, DefaultMaxQueueWait)
	l.q = newQueue(o.queueSize, o.queueBytes)
	l.ctx, l.cancel = context.WithCancel(context.Background())
	l.changed = make(chan struct{})
	l.bounces.init(max(o.queueSize, 1024))
	if len(l.Secret) < 16 {
		l.log.Warn("router link secret is short: use at least 16 random bytes")
	}
	l.wg.Add(1)
	go l.bounceLoop()
	if l.maxWait > 0 {
		l.wg.Add(1)
		go l.expireLoop()
	}
	return nil
}

// Start validates the configuration and starts dialling the router at
// Addr in the background (jabber:component:accept). It returns at once;
// Ready waits for the stream.
func (l *Link) Start() error {
	if err := l.init(); err != nil {
		return err
	}
	if l.Addr == "" {
		return errors.New("xcp: Link.Start needs Addr, the router's host:port (or use Serve to let the router dial)")
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.closed {
		return ErrClosed
	}
	if l.dialing {
		return errors.New("xcp: Link already started")
	}
	l.dialing = true
	l.wg.Add(1)
	go l.dialLoop()
	return nil
}

// Serve accepts the router's connections on ln (jabber:component:connect:
// the router dials, sends the handshake, and this side checks it). One
// stream is up at a time; a second is refused with <conflict/>. Serve
// returns ErrClosed after Close, or the listener's error.
func (l *Link) Serve(ln net.Listener) error {
	if err := l.init(); err != nil {
		return err
	}
	if err := l.addListener(ln); err != nil {
		return err
	}
	defer l.removeListener(ln)
	l.log.Info("waiting for the router to connect", logkey.PeerAddr, ln.Addr().String())
	return l.acceptLoop(ln, "too many router connections in the handshake: connection closed", l.accept)
}

func (l *Link) accept(nc net.Conn) {
	var (
		s        *session
		attached bool
	)
	tlsRefused := func(addr string, err error) {
		l.log.Warn("router link refused", logkey.PeerAddr, addr, logkey.Err, &LinkError{Component: l.name, Addr: addr, Op: "tls", Err: err})
	}
	c, addr, err := l.handshakeIn(nc, NSConnect, tlsRefused, func(c *conn) error {
		return c.respond(func(name string) (string, error) {
			if name != l.name {
				return "", violation(stream.HostUnknown, "this is component %q, not %q", l.name, name)
			}
			l.mu.Lock()
			busy := l.cur != nil
			l.mu.Unlock()
			if busy {
				return "", violation(stream.Conflict, "component %q already has a router link", l.name)
			}
			return l.Secret, nil
		}, func() error {
			s = l.newSession(c)
			if err := l.attach(s); err != nil {
				return err
			}
			attached = true
			return nil
		})
	})
	if c == nil {
		return
	}
	if err != nil {
		if attached {
			l.detach(s, err)
		}
		if err != ErrClosed {
			l.log.Warn("router link refused", logkey.PeerAddr, addr, logkey.Err, &LinkError{Component: l.name, Addr: addr, Op: "handshake", Err: err})
		}
		return
	}
	_ = l.serve(s)
}

func (l *Link) dialLoop() {
	defer l.wg.Done()
	bo := backoff{min: l.o.minBackoff, max: l.o.maxBackoff}
	for l.ctx.Err() == nil {
		l.setState(StateConnecting, nil)
		s, err := l.dial()
		if err != nil {
			if l.ctx.Err() != nil {
				return
			}
			wait := bo.next()
			if permanent(err) {
				wait = max(wait, l.o.maxBackoff)
				l.log.Error("router refused the link", logkey.Err, err, logkey.Wait, wait)
			} else {
				l.log.Warn("router link failed", logkey.Err, err, logkey.Wait, wait)
			}
			l.setState(StateDisconnected, err)
			if !sleep(l.ctx.Done(), wait) {
				return
			}
			continue
		}
		if err := l.attach(s); err != nil { // closing, or the router also dialled us (Serve)
			_ = s.fail(err)
			_ = s.nc.Close()
			if !sleep(l.ctx.Done(), bo.next()) {
				return
			}
			continue
		}
		up := time.Now()
		_ = l.serve(s)
		if l.ctx.Err() != nil {
			return
		}
		if time.Since(up) > l.o.maxBackoff {
			bo.reset()
		}
		if !sleep(l.ctx.Done(), bo.next()) {
			return
		}
	}
}

func (l *Link) dial() (*session, error) {
	c, err := l.dialLink(NSAccept, l.name, l.Secret, l.Addr, nil)
	if err != nil {
		return nil, err
	}
	return l.newSession(c), nil
}

func (l *Link) newSession(c *conn) *session {
	s := newSession(l.ctx, c, l.q, nil,
		func(items []item) {
			l.bounce(items, stanza.RemoteServerTimeout, "router link: not delivered in time")
		})
	s.handle = func(st Stanza) error {
		l.deliver(s.ctx, st)
		return nil
	}
	// When the writer stops the stream is lost: say so at once, so that
	// Send stops waiting for room only a writer can make (a Handler that
	// calls Send may be what the reader is blocked in).
	s.writerDone = func(err error) {
		if err != nil {
			err = &LinkError{Component: l.name, Addr: s.addr, Op: "stream", Err: err}
		}
		l.detach(s, err)
	}
	return s
}

// attach makes s the Link's stream, or says why not.
func (l *Link) attach(s *session) error {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	l.mu.Lock()
	switch {
	case l.closed:
		l.mu.Unlock()
		return violation(stream.SystemShutdown, "component %q is shutting down", l.name)
	case l.cur != nil:
		l.mu.Unlock()
		return violation(stream.Conflict, "component %q already has a router link", l.name)
	}
	l.cur = s
	l.mu.Unlock()
	l.setStateLocked(StateConnected, nil)
	return nil
}

// detach ends s's hold on the Link, if it still has it.
func (l *Link) detach(s *session, err error) {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	l.mu.Lock()
	if l.cur != s {
		l.mu.Unlock()
		return
	}
	l.cur = nil
	l.mu.Unlock()
	l.setStateLocked(StateDisconnected, err)
}

// serve runs an attached stream until it ends.
func (l *Link) serve(s *session) error {
	l.log.Info("router link up", logkey.PeerAddr, s.addr, logkey.StreamID, s.id, logkey.Queued, l.q.len())
	err := s.run()
	if err != nil {
		err = &LinkError{Component: l.name, Addr: s.addr, Op: "stream", Err: err}
		l.log.Warn("router link down", logkey.PeerAddr, s.addr, logkey.StreamID, s.id, logkey.Err, err, logkey.Queued, l.q.len())
	} else {
		l.log.Info("router link closed", logkey.PeerAddr, s.addr, logkey.StreamID, s.id)
	}
	l.detach(s, err) // normally done when the writer stopped
	return err
}

func (l *Link) setState(st State, err error) {
	l.stateMu.Lock()
	defer l.stateMu.Unlock()
	l.setStateLocked(st, err)
}

// setStateLocked changes the state; l.stateMu is held, so that changes and
// their OnStateChange calls come in the same order.
func (l *Link) setStateLocked(st State, err error) {
	l.mu.Lock()
	old := l.state
	if old == StateClosed {
		l.mu.Unlock()
		return
	}
	l.state = st
	if err != nil || st == StateConnected {
		l.lastErr = err // the last failure stays known while redialling
	}
	close(l.changed)
	l.changed = make(chan struct{})
	l.connected.Store(st == StateConnected)
	l.mu.Unlock()
	if st != StateConnected {
		// Senders waiting for room must not wait for a writer that is gone.
		l.q.kick()
	}
	if old != st {
		l.log.Debug("router link state", logkey.State, old.String()+"->"+st.String())
	}
	if l.OnStateChange != nil {
		l.OnStateChange(st, err)
	}
}

// State returns the current state.
func (l *Link) State() State {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.state
}

// Ready waits until the stream is up. It returns at once with the error if
// the last attempt failed in a way retrying will not fix (the router
// refused the secret, does not know the component name, or a certificate
// was refused; the Link keeps retrying meanwhile); otherwise it waits until
// ctx is done and returns ctx's error, with the last failure.
func (l *Link) Ready(ctx context.Context) error {
	if err := l.init(); err != nil {
		return err
	}
	for {
		l.mu.Lock()
		st, err, ch := l.state, l.lastErr, l.changed
		l.mu.Unlock()
		switch {
		case st == StateConnected:
			return nil
		case st == StateClosed:
			return ErrClosed
		case permanent(err):
			return err
		}
		select {
		case <-ch:
		case <-ctx.Done():
			if err != nil {
				return fmt.Errorf("%w (last error: %w)", ctx.Err(), err)
			}
			return ctx.Err()
		}
	}
}

// Send queues st for the router. st must have to and from addresses.
//
// While the link is up and the queue is full, Send waits for room (this
// is the back-pressure that keeps memory bounded) until ctx is done. While
// the link is down, st waits in the queue for the next stream, at most
// MaxQueueWait; if the queue is full, Send refuses st at once with
// ErrQueueFull (st is not bounced: the caller knows, and may retry without
// causing a duplicate). Once Send has returned nil, st is the Link's: it
// is delivered, or bounced to its sender through the Handler.
func (l *Link) Send(ctx context.Context, st Stanza) error {
	if st.IsZero() {
		return fmt.Errorf("%w: empty", ErrInvalidStanza)
	}
	if st.to == "" || st.from == "" {
		return fmt.Errorf("%w: <%s/> needs both to and from on a router link", ErrInvalidStanza, st.Name())
	}
	if err := l.init(); err != nil {
		return err
	}
	it := item{st: st}
	if l.maxWait > 0 {
		it.expires = time.Now().Add(l.maxWait)
	}
	err := l.q.push(ctx, it, l.connected.Load, l.ctx.Done())
	switch {
	case err == nil:
		return nil
	case err == errFull:
		return fmt.Errorf("%w (component %q: %d stanzas or %d bytes queued)", ErrQueueFull, l.name, l.o.queueSize, l.o.queueBytes)
	case err == errAbort, err == errClosed:
		return ErrClosed
	}
	return err
}

// deliver hands a stanza from the router to the Handler.
func (l *Link) deliver(ctx context.Context, st Stanza) {
	if l.Handler != nil {
		l.Handler.HandleStanza(ctx, st)
		return
	}
	if reply, ok := bounce(st, stanza.ServiceUnavailable, ""); ok {
		if err := l.q.tryPush(item{st: reply}); err != nil {
			l.log.Warn("no handler: stanza dropped", logkey.Err, err)
		}
	}
}

// bounce turns stanzas that will not be sent into error replies for the
// bounce goroutine to hand to the Handler: bounce is called where the
// Handler may not run (on the writer), and never blocks.
func (l *Link) bounce(items []item, cond stanza.Condition, text string) {
	replies, unanswerable := l.replies(items, cond, text)
	if dropped := l.bounces.add(replies); dropped > 0 {
		l.log.Error("bounces dropped: the Handler does not keep up", logkey.Condition, string(cond), logkey.Count, dropped)
	}
	l.logBounces(cond, len(replies), unanswerable)
}

func (l *Link) replies(items []item, cond stanza.Condition, text string) (replies []Stanza, unanswerable int) {
	for _, it := range items {
		reply, ok := bounce(it.st, cond, text)
		if !ok || l.Handler == nil {
			unanswerable++
			continue
		}
		replies = append(replies, reply)
	}
	return replies, unanswerable
}

func (l *Link) logBounces(cond stanza.Condition, bounced, unanswerable int) {
	if bounced > 0 {
		l.log.Warn("stanzas bounced", logkey.Condition, string(cond), logkey.Count, bounced)
	}
	if unanswerable > 0 {
		l.log.Warn("undeliverable stanzas that cannot be answered (errors, IQ results, no Handler) dropped",
			logkey.Condition, string(cond), logkey.Count, unanswerable)
	}
}

// bounceLoop hands bounces to the Handler.
func (l *Link) bounceLoop() {
	defer l.wg.Done()
	var buf []Stanza
	for {
		select {
		case <-l.ctx.Done():
			return // Close delivers what is left
		case <-l.bounces.ready:
		}
		buf = l.bounces.take(buf[:0])
		for _, st := range buf {
			l.Handler.HandleStanza(l.ctx, st)
		}
		clear(buf)
	}
}

func (l *Link) expireLoop() {
	var buf []item
	l.tick(l.maxWait, func(now time.Time) {
		buf = l.q.expire(now, buf[:0])
		if len(buf) > 0 {
			l.bounce(buf, stanza.RemoteServerTimeout, "router link down: not delivered in time")
			clear(buf)
		}
	})
}

// Shutdown waits until every queued stanza has been written while the
// link is up, then closes it as Close does. If ctx ends first, Shutdown
// closes anyway (bouncing what is left) and returns ctx's error.
func (l *Link) Shutdown(ctx context.Context) error {
	if l.init() == nil {
		err := l.q.waitEmpty(ctx)
		if cerr := l.Close(); err == nil {
			err = cerr
		}
		return err
	}
	return l.Close()
}

// Close closes the stream (sending </stream:stream> and waiting briefly for
// the router's), stops dialling and listening, and bounces the stanzas
// still queued with <service-unavailable/>. It waits for the Link's
// goroutines, including running Handler calls, and delivers the bounces
// before it returns.
func (l *Link) Close() error {
	l.initOnce.Do(func() { l.initErr = ErrClosed }) // never started: nothing to stop
	l.mu.Lock()
	if l.closed || l.initErr != nil {
		l.closed = true
		l.mu.Unlock()
		return nil
	}
	l.closed = true
	cur := l.cur
	lns := l.listenerList()
	l.mu.Unlock()
	l.cancel()
	if cur != nil {
		cur.stop()
	}
	for _, ln := range lns {
		_ = ln.Close()
	}
	l.wg.Wait()
	// The goroutines are gone: deliver the bounces here.
	late := l.bounces.take(nil)
	rest := l.q.close()
	replies, unanswerable := l.replies(rest, stanza.ServiceUnavailable, "router link closed")
	l.logBounces(stanza.ServiceUnavailable, len(replies), unanswerable)
	for _, st := range append(late, replies...) {
		l.Handler.HandleStanza(l.ctx, st)
	}
	l.setState(StateClosed, nil)
	return nil
}

// bounceQueue holds error replies for the bounce goroutine. It is bounded:
// beyond max, bounces are dropped (and logged), since the writer that adds
// them must never wait for a Handler.
type bounceQueue struct {
	mu    sync.Mutex
	q     []Stanza
	max   int
	ready chan struct{}
}

func (b *bounceQueue) init(max int) {
	b.max = max
	b.ready = make(chan struct{}, 1)
}

// add queues replies and returns how many did not fit.
func (b *bounceQueue) add(replies []Stanza) (dropped int) {
	if len(replies) == 0 {
		return 0
	}
	b.mu.Lock()
	room := max(b.max-len(b.q), 0)
	if len(replies) > room {
		dropped = len(replies) - room
		replies = replies[:room]
	}
	b.q = append(b.q, replies...)
	b.mu.Unlock()
	select {
	case b.ready <- struct{}{}:
	default:
	}
	return dropped
}

func (b *bounceQueue) take(dst []Stanza) []Stanza {
	b.mu.Lock()
	defer b.mu.Unlock()
	dst = append(dst, b.q...)
	clear(b.q)
	b.q = b.q[:0]
	return dst
}

// rateLog logs a warning at most once every ten seconds, so that a flood
// of refused connections does not flood the log.
type rateLog struct {
	last atomic.Int64
}

func (r *rateLog) warn(log *slog.Logger, msg string, args ...any) {
	now := time.Now().UnixNano()
	last := r.last.Load()
	if now-last < int64(10*time.Second) || !r.last.CompareAndSwap(last, now) {
		return
	}
	log.Warn(msg, args...)
}
