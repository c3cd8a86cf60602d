package s2s

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"slices"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/internal/logkey"
	"github.com/xmppfed/xmppfed/internal/wire"
)

// Pool defaults.
const (
	DefaultQueueSize    = 5000             // stanzas per domain pair while its stream is set up
	DefaultSetupTimeout = 90 * time.Second // resolve, connect, negotiate and authenticate
	DefaultIdleTimeout  = 10 * time.Minute // s2s-stream.md §12
	DefaultKeepAlive    = 60 * time.Second
	DefaultBackoffMin   = 2 * time.Second
	DefaultBackoffMax   = 5 * time.Minute
)

// ErrPoolClosed is returned by Send after Shutdown or Close.
var ErrPoolClosed = errors.New("s2s: pool closed")

// ErrLocalDomain is returned by Send for a stanza addressed to a domain the
// Endpoint serves: such stanzas are routed locally, not federated.
var ErrLocalDomain = errors.New("s2s: stanza addressed to a local domain")

// Backoff spaces the connection attempts to a domain that failed: after
// the n-th consecutive failure the next attempt waits a random time in
// [d/2, d] with d = Min·2^(n-1), capped at Max. The jitter keeps a cluster
// of edges from retrying in step.
type Backoff struct {
	Min, Max time.Duration // zero means DefaultBackoffMin, DefaultBackoffMax
}

// Delay returns the wait after the n-th consecutive failure (n ≥ 1).
func (b Backoff) Delay(n int) time.Duration {
	lo, hi := orDefault(b.Min, DefaultBackoffMin), orDefault(b.Max, DefaultBackoffMax)
	if hi < lo {
		hi = lo
	}
	d := lo
	for i := 1; i < n && d < hi; i++ {
		if d > hi/2 { // doubling would pass the cap, or overflow with a huge Max
			d = hi
			break
		}
		d *= 2
	}
	d = min(d, hi)
	return d/2 + rand.N(d/2+1)
}

// Pool sends stanzas to remote domains over outbound streams (the
// originating role of the federation engine). It keeps one authorized
// stream per (local, remote) domain pair, multiplexing further local
// domains onto a stream that already reaches the remote domain, sets
// streams up on demand and queues stanzas meanwhile, closes streams that
// have been idle, and returns every stanza it cannot deliver to its sender
// as an error stanza (RFC 6120 §8.3, §10.4.3) through Bounce.
//
// Set the fields before the first Send; a Pool must not be copied after
// first use. The zero values of the optional fields are the defaults.
type Pool struct {
	// Endpoint is the server's S2S identity (required).
	Endpoint *Endpoint

	// Bounce receives the error stanzas for stanzas that could not be
	// delivered, addressed to their local sender. Nil drops them (they are
	// logged and counted).
	Bounce Handler

	// QueueSize bounds the stanzas queued per domain pair while its
	// stream is set up; more are bounced with <resource-constraint/>.
	QueueSize int

	// SetupTimeout bounds the setup of a stream, DNS to authorization;
	// queued stanzas are bounced with <remote-server-timeout/> after it.
	SetupTimeout time.Duration

	// IdleTimeout closes a stream that carried no stanza for that long;
	// the next Send sets up a new one. Negative never closes.
	IdleTimeout time.Duration

	// KeepAlive writes a single space on a stream when nothing was written
	// for that long, so that a dead peer shows as a failed write.
	// Negative disables.
	KeepAlive time.Duration

	// MaxSetupsPerAddr bounds the streams set up at the same time to one
	// peer address (zero: DefaultMaxSetupsPerAddr; negative: no bound).
	// Further setups wait for a slot.
	MaxSetupsPerAddr int

	// Backoff spaces new attempts after a domain failed; meanwhile stanzas
	// for it are bounced at once. An inbound stream from that domain
	// ends the back-off (the peer is back).
	Backoff Backoff

	initOnce sync.Once
	initErr  error
	eng      *engine
	ctx      context.Context
	cancel   context.CancelFunc
	unsub    func()

	mu     sync.Mutex
	routes map[Pair]*route
	closed bool
	wg     sync.WaitGroup
}

type routeState uint8

const (
	routeIdle routeState = iota
	routeConnecting
	routeUp
	routeBackoff
)

func (s routeState) String() string {
	return [...]string{"idle", "connecting", "up", "backoff"}[s]
}

// route is the outbound state of one domain pair.
type route struct {
	pair     Pair
	state    routeState
	queue    []*Stanza
	stream   *Stream
	writer   *Stream       // the stream a drain goroutine is writing the queue to, if any
	space    chan struct{} // closed when the writer takes the queue (Sends wait on it)
	failures int
	// writeFailures counts streams in a row that failed while writing
	// this route's stanzas.
	writeFailures int
	retryAt       time.Time
	lastErr       error
}

// RouteInfo describes the outbound state of one domain pair.
type RouteInfo struct {
	Pair
	State     string // "idle", "connecting", "up" or "backoff"
	Queued    int
	Failures  int       // consecutive failed attempts
	RetryAt   time.Time // in "backoff": stanzas are bounced until then
	LastError error
}

func (p *Pool) init() error {
	p.initOnce.Do(func() {
		if p.Endpoint == nil {
			p.initErr = &Error{Op: "send", Err: fmt.Errorf("%w: Pool without Endpoint", ErrConfig)}
			return
		}
		if err := p.Endpoint.check("dial"); err != nil {
			p.initErr = err
			return
		}
		p.eng = newEngine()
		p.eng.setups = newSetupSlots(limit(p.MaxSetupsPerAddr, DefaultMaxSetupsPerAddr))
		p.eng.onInboundAuthorized = func(pr Pair) { p.ResetBackoff(pr.Remote) }
		p.ctx, p.cancel = context.WithCancel(context.Background())
		p.routes = make(map[Pair]*route)
		if pol := p.Endpoint.Policy; pol != nil {
			p.unsub = pol.subscribe(func() { p.eng.enforcePolicy(p.Endpoint) })
		}
	})
	return p.initErr
}

func (p *Pool) lg() *slog.Logger { return p.Endpoint.logger() }

// Send delivers st to its remote domain. It queues the stanza for the
// pair's stream (setting the stream up if there is none) and returns; a
// writer per stream drains the queue in batches, so Send never waits for
// the network. When the stream is up and its queue full, Send waits for
// room until ctx is done (back-pressure from a slow peer); while a stream
// is being set up, a full queue bounces. The stanza's from must be in a
// served domain and its to in another one.
//
// Send returns nil once the stanza is queued or bounced through Bounce
// (privacy mode, back-off, full queue, failed setup); it returns an error
// only for a stanza it does not take: bad addresses, closed pool, or ctx
// done before there was room.
func (p *Pool) Send(ctx context.Context, st *Stanza) error {
	if err := p.init(); err != nil {
		return err
	}
	if st == nil || len(st.XML) == 0 {
		return &Error{Op: "send", Err: fmt.Errorf("%w: empty stanza", ErrBadStanza)}
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	e := p.Endpoint
	pr := Pair{Local: norm(st.From.Domainpart()), Remote: norm(st.To.Domainpart())}
	switch {
	case pr.Local == "" || pr.Remote == "":
		return &Error{Op: "send", Local: pr.Local, Remote: pr.Remote, Err: fmt.Errorf("%w: a stanza needs both from and to", ErrBadStanza)}
	case !e.Serves(pr.Local):
		return &Error{Op: "send", Local: pr.Local, Remote: pr.Remote, Err: ErrDomainNotServed}
	case e.Serves(pr.Remote):
		return &Error{Op: "send", Local: pr.Local, Remote: pr.Remote, Err: ErrLocalDomain}
	}
	if err := e.policy(pr.Local, pr.Remote); err != nil {
		p.bounce(st, stanza.Cancel, stanza.ServiceUnavailable, err.Error())
		return nil
	}
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return ErrPoolClosed
		}
		r := p.routes[pr]
		if r == nil {
			r = &route{pair: pr}
			p.routes[pr] = r
		}
		if r.state == routeBackoff {
			if time.Now().Before(r.retryAt) {
				lastErr, wait := r.lastErr, time.Until(r.retryAt)
				p.mu.Unlock()
				typ, cond := bounceCondition(lastErr)
				p.bounce(st, typ, cond, fmt.Sprintf("server-to-server connection to %s failed (%v); next attempt in %s", pr.Remote, lastErr, wait.Round(time.Second)))
				return nil
			}
			r.state = routeIdle
		}
		if len(r.queue) >= p.queueSize() && r.state == routeUp && r.writer != nil {
			// The stream is up and its writer busy: wait for room
			// (back-pressure) as long as the caller lets us, then look
			// again from the top (the route may have failed meanwhile).
			if r.space == nil {
				r.space = make(chan struct{})
			}
			space := r.space
			p.mu.Unlock()
			select {
			case <-space:
				continue
			case <-ctx.Done():
				return ctx.Err()
			}
		}
		if len(r.queue) >= p.queueSize() {
			p.mu.Unlock()
			p.bounce(st, stanza.Wait, stanza.ResourceConstraint, fmt.Sprintf("too many stanzas queued for %s while its stream is set up", pr.Remote))
			return nil
		}
		r.queue = append(r.queue, st)
		switch {
		case r.writer != nil:
			// A writer is busy (perhaps on a stream that just ended): it
			// takes the queue, or sets up a new stream when it stops.
		case r.state == routeIdle:
			p.startLocked(r)
		case r.state == routeUp:
			// The writer drains the queue in batches, one flush each, so
			// that Send never waits for the network.
			r.writer = r.stream
			p.wg.Add(1)
			go func(s *Stream) {
				defer p.wg.Done()
				p.drain(r, s)
			}(r.stream)
		}
		p.mu.Unlock()
		return nil
	}
}

// startLocked starts setting up r's stream. p.mu is held, and no writer is
// busy on r (a writer starts the setup itself when it stops).
func (p *Pool) startLocked(r *route) {
	r.state = routeConnecting
	p.wg.Add(1)
	go p.connect(r)
}

// drain writes r's queue to s until it is empty. On a write failure the
// unwritten stanzas go back to the queue for a new stream; after
// maxWriteFailures in a row they are bounced.
func (p *Pool) drain(r *route, s *Stream) {
	for {
		p.mu.Lock()
		if r.stream != s || len(r.queue) == 0 {
			if r.writer == s {
				r.writer = nil
			}
			wakeLocked(r)
			if r.writer == nil && r.state == routeIdle && len(r.queue) > 0 {
				// The stream went away under us: a new one takes the
				// queue (also while shutting down, to drain it).
				p.startLocked(r)
			}
			p.mu.Unlock()
			return
		}
		batch := r.queue
		r.queue = nil
		wakeLocked(r)
		p.mu.Unlock()
		err := s.sendBatch(r.pair, batch)
		p.mu.Lock()
		if err == nil {
			r.writeFailures = 0
			p.mu.Unlock()
			continue
		}
		// Whether the peer got any of the batch cannot be known; sending
		// it again on a new stream may duplicate, bouncing may report a
		// delivered stanza as lost. Without stream management (XEP-0198)
		// duplicates are the lesser harm.
		r.queue = append(batch, r.queue...)
		if r.writer == s {
			r.writer = nil
		}
		wakeLocked(r)
		r.writeFailures++
		if r.stream == s {
			r.stream, r.state = nil, routeIdle
		}
		if r.writeFailures >= maxWriteFailures || p.closed && p.ctx.Err() != nil {
			f := p.failLocked(r, err)
			p.mu.Unlock()
			f.bounce()
			return
		}
		if r.writer == nil && r.state == routeIdle {
			p.startLocked(r)
		}
		p.mu.Unlock()
		return
	}
}

// wakeLocked wakes the Sends waiting for room in r's queue. p.mu is held.
func wakeLocked(r *route) {
	if r.space != nil {
		close(r.space)
		r.space = nil
	}
}

// maxWriteFailures bounds how often a route's stanzas are written to a
// stream that then fails before they are bounced.
const maxWriteFailures = 3

func (p *Pool) queueSize() int {
	if p.QueueSize > 0 {
		return p.QueueSize
	}
	return DefaultQueueSize
}

// connect sets up the stream of r and writes its queue; on failure it
// bounces the queue and starts the back-off.
func (p *Pool) connect(r *route) {
	defer p.wg.Done()
	ctx, cancel := context.WithTimeout(p.ctx, orDefault(p.SetupTimeout, DefaultSetupTimeout))
	defer cancel()
	s, shared, err := p.stream(ctx, r.pair)
	if err != nil {
		p.failed(r, err)
		return
	}
	p.mu.Lock()
	r.state, r.stream, r.failures, r.lastErr = routeUp, s, 0, nil
	r.writer = s
	p.mu.Unlock()
	s.whenDone(func(error) { p.streamEnded(r, s) })
	if !shared {
		s.watch(p.idleTimeout(), p.keepAlive())
	}
	p.drain(r, s)
}

func (p *Pool) idleTimeout() time.Duration {
	if p.IdleTimeout < 0 {
		return 0
	}
	return orDefault(p.IdleTimeout, DefaultIdleTimeout)
}

func (p *Pool) keepAlive() time.Duration {
	if p.KeepAlive < 0 {
		return 0
	}
	return orDefault(p.KeepAlive, DefaultKeepAlive)
}

// stream returns an authorized stream for pr: one already reaching the
// remote domain when it accepts one more pair (XEP-0220 multiplexing),
// else a new one.
func (p *Pool) stream(ctx context.Context, pr Pair) (s *Stream, shared bool, err error) {
	p.mu.Lock()
	var cands []*Stream
	for q, r := range p.routes {
		if q.Remote == pr.Remote && r.state == routeUp && !slices.Contains(cands, r.stream) {
			cands = append(cands, r.stream)
		}
	}
	p.mu.Unlock()
	for _, s := range cands {
		if s.usable() && s.Authorize(ctx, pr.Local, pr.Remote) == nil {
			return s, true, nil
		}
	}
	if s := p.eng.bidiStream(pr); s != nil {
		// The peer's own stream carries our stanzas back (XEP-0288).
		return s, true, nil
	}
	s, err = p.Endpoint.dialWith(ctx, pr.Local, pr.Remote, p.eng)
	if err != nil {
		p.eng.m.add(&p.eng.m.failed, FailureReason(err))
	}
	return s, false, err
}

// failed bounces r's queue and starts (or lengthens) its back-off.
func (p *Pool) failed(r *route, err error) {
	p.mu.Lock()
	f := p.failLocked(r, err)
	p.mu.Unlock()
	f.bounce()
}

// failure is a route failure whose bounces are sent after p.mu is released
// (a Bounce handler may call Send).
type failure struct {
	p     *Pool
	pair  Pair
	batch []*Stanza
	err   error
	delay time.Duration
	n     int
}

// failLocked puts r in back-off and takes its queue. p.mu is held.
func (p *Pool) failLocked(r *route, err error) failure {
	f := failure{p: p, pair: r.pair, batch: r.queue, err: err}
	r.queue = nil
	wakeLocked(r)
	r.stream = nil
	r.failures++
	r.lastErr = err
	f.delay, f.n = p.Backoff.Delay(r.failures), r.failures
	r.state, r.retryAt = routeBackoff, time.Now().Add(f.delay)
	p.sweepLocked()
	return f
}

func (f failure) bounce() {
	f.p.lg().Warn("federation failed; bouncing queued stanzas", slog.String(logkey.Local, f.pair.Local), slog.String(logkey.Remote, f.pair.Remote),
		slog.Int("bounced", len(f.batch)), slog.Int("failures", f.n), slog.Duration("retry_in", f.delay.Round(time.Millisecond)), slog.String("reason", FailureReason(f.err)), slog.Any(logkey.Err, f.err))
	f.p.bounceAll(f.batch, f.pair, f.err)
}

// sweepLocked forgets routes that hold nothing: idle ones, and back-offs
// that ended more than Backoff.Max ago (until then, the domain's next
// failure still counts as consecutive and waits longer). p.mu is held.
func (p *Pool) sweepLocked() {
	now := time.Now()
	keep := orDefault(p.Backoff.Max, DefaultBackoffMax)
	for k, r := range p.routes {
		if len(r.queue) == 0 && r.writer == nil && (r.state == routeIdle || r.state == routeBackoff && now.Sub(r.retryAt) > keep) {
			delete(p.routes, k)
		}
	}
}

// streamEnded forgets a stream that has closed; the next Send sets up a
// new one.
func (p *Pool) streamEnded(r *route, s *Stream) {
	p.mu.Lock()
	if r.stream != s || r.state != routeUp {
		if r.stream == s {
			r.stream = nil
		}
		p.mu.Unlock()
		return
	}
	r.stream, r.state = nil, routeIdle
	var left []*Stanza
	switch {
	case r.writer != nil:
		// Its writer (perhaps holding a batch) will find the stream gone
		// and start a new one if anything is left.
	case len(r.queue) > 0 && !p.closed:
		p.startLocked(r) // stanzas arrived as it closed: a new stream takes them
	case len(r.queue) > 0:
		// Closing: no new stream (this may run outside the Pool's
		// goroutines, after Shutdown's wait); bounce what is left.
		left, r.queue = r.queue, nil
	case p.routes[r.pair] == r:
		delete(p.routes, r.pair)
	}
	p.mu.Unlock()
	p.bounceAll(left, r.pair, nil)
}

// bounceAll bounces stanzas the Pool gives up on: err says why (nil: the
// stream closed); once the Pool is stopping, the bounce says so.
func (p *Pool) bounceAll(batch []*Stanza, pr Pair, err error) {
	typ, cond := bounceCondition(err)
	text := "server-to-server stream to " + pr.Remote + " closed"
	if err != nil {
		text = fmt.Sprintf("server-to-server connection to %s failed: %v", pr.Remote, err)
	}
	if p.ctx.Err() != nil {
		typ, cond, text = stanza.Wait, stanza.RemoteServerTimeout, "server shutting down before the stanza could be sent to "+pr.Remote
	}
	for _, st := range batch {
		p.bounce(st, typ, cond, text)
	}
}

// ResetBackoff ends the back-off of every pair with remote: the next Send
// tries at once. The Server calls it when remote authenticates an inbound
// stream.
func (p *Pool) ResetBackoff(remote string) {
	if p.init() != nil {
		return
	}
	remote = norm(remote)
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, r := range p.routes {
		if k.Remote == remote && r.state == routeBackoff {
			r.state, r.failures = routeIdle, 0
			p.lg().Info("back-off ended: the peer contacted us", slog.String(logkey.Local, k.Local), slog.String(logkey.Remote, remote))
		}
	}
}

// Routes returns the outbound state of every domain pair the Pool knows,
// sorted.
func (p *Pool) Routes() []RouteInfo {
	if p.init() != nil {
		return nil
	}
	p.mu.Lock()
	out := make([]RouteInfo, 0, len(p.routes))
	for _, r := range p.routes {
		ri := RouteInfo{Pair: r.pair, State: r.state.String(), Queued: len(r.queue), Failures: r.failures, LastError: r.lastErr}
		if r.state == routeBackoff {
			ri.RetryAt = r.retryAt
		}
		out = append(out, ri)
	}
	p.mu.Unlock()
	slices.SortFunc(out, func(a, b RouteInfo) int {
		if c := strings.Compare(a.Local, b.Local); c != 0 {
			return c
		}
		return strings.Compare(a.Remote, b.Remote)
	})
	return out
}

// Status returns a snapshot of every open stream of the Pool (and of the
// Server using it): direction, domains, state, TLS, authentication,
// traffic.
func (p *Pool) Status() []Info {
	if p.init() != nil {
		return nil
	}
	return p.eng.status()
}

// Counters returns the cumulative counters of the Pool (and of the Server
// using it).
func (p *Pool) Counters() Counters {
	if p.init() != nil {
		return Counters{}
	}
	return p.eng.m.snapshot()
}

// Shutdown stops taking stanzas, waits for the streams being set up to
// deliver their queues (until ctx is done; what is left is bounced with
// <remote-server-timeout/>), then closes every outbound stream with
// <system-shutdown/>.
func (p *Pool) Shutdown(ctx context.Context) error {
	if p.init() != nil {
		return nil
	}
	p.stopTaking()
	drained := make(chan struct{})
	go func() {
		p.wg.Wait()
		close(drained)
	}()
	select {
	case <-drained:
		p.cancel()
		p.closeStreams(true)
		p.bounceLeft()
		return nil
	case <-ctx.Done():
		// Out of time: abandon setups, cut streams (a writer may be
		// stuck on a peer that does not read), bounce the rest.
		p.cancel()
		p.closeStreams(false)
		<-drained
		p.bounceLeft()
		return ctx.Err()
	}
}

// stopTaking makes Send refuse new stanzas and stops following the Policy.
func (p *Pool) stopTaking() {
	p.mu.Lock()
	p.closed = true
	p.mu.Unlock()
	if p.unsub != nil {
		p.unsub()
	}
}

// Close stops at once: setups are abandoned (their queues bounced) and
// streams closed.
func (p *Pool) Close() error {
	if p.init() != nil {
		return nil
	}
	p.stopTaking()
	p.cancel()
	p.closeStreams(false) // first, so that no writer waits on a peer
	p.wg.Wait()
	p.bounceLeft()
	return nil
}

// bounceLeft bounces whatever is still queued once the Pool's goroutines
// have stopped.
func (p *Pool) bounceLeft() {
	p.mu.Lock()
	var left []*route
	for _, r := range p.routes {
		if len(r.queue) > 0 {
			left = append(left, &route{pair: r.pair, queue: r.queue})
			r.queue = nil
		}
	}
	p.mu.Unlock()
	for _, r := range left {
		p.bounceAll(r.queue, r.pair, ErrPoolClosed)
	}
}

// closeStreams ends the outbound streams (with <system-shutdown/> when
// graceful) and waits for their read loops.
func (p *Pool) closeStreams(graceful bool) {
	var wg sync.WaitGroup
	for _, s := range p.eng.list() {
		if s.Info().Direction != Outbound || s.Info().VerifyOnly {
			continue
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if graceful {
				s.fail("shutdown", stream.SystemShutdown, "", nil)
			} else {
				s.abort(ErrPoolClosed)
			}
			if s.readDone != nil {
				<-s.readDone
			}
		}()
	}
	wg.Wait()
}

// bounceCondition maps a setup failure to the stanza error of its bounces.
func bounceCondition(err error) (stanza.ErrorType, stanza.Condition) {
	if err != nil && isTimeout(err) {
		return stanza.Wait, stanza.RemoteServerTimeout
	}
	return stanza.Cancel, stanza.RemoteServerNotFound
}

// bounce returns st to its sender as an error stanza, when RFC 6120 allows
// (never for an error, nor for an iq result); otherwise it is dropped and
// counted.
func (p *Pool) bounce(st *Stanza, typ stanza.ErrorType, cond stanza.Condition, text string) {
	reply := ErrorReply(st, typ, cond, text)
	if reply == nil {
		p.eng.m.add(&p.eng.m.dropped, "not-bounceable")
		p.lg().Debug("dropping undeliverable stanza that must not be bounced", slog.String("name", st.Name), slog.String("type", st.Type))
		return
	}
	if p.Bounce == nil {
		p.eng.m.add(&p.eng.m.dropped, "no-bounce-handler")
		p.lg().Warn("undeliverable stanza dropped: the Pool has no Bounce handler", slog.String("condition", string(cond)), slog.String("to", st.To.String()))
		return
	}
	p.eng.m.add(&p.eng.m.bounced, string(cond))
	// Not p.ctx itself: Close cancels it, and these bounces must still go.
	p.Bounce.ServeStanza(context.WithoutCancel(p.ctx), reply)
}

// ErrorReply returns the error stanza answering st with the given stanza
// error (RFC 6120 §8.3): addresses swapped, same id, type='error', and the
// error generated by (by=) the sender's own domain, which is where it was
// produced. It returns nil for a
// stanza that must not be answered with an error: an error itself, or an
// iq result.
func ErrorReply(st *Stanza, typ stanza.ErrorType, cond stanza.Condition, text string) *Stanza {
	if st.Type == "error" || st.Name == "iq" && st.Type == "result" {
		return nil
	}
	var b strings.Builder
	b.WriteString("<" + st.Name + " from='" + wire.EscapeAttr(st.To.String()) + "' to='" + wire.EscapeAttr(st.From.String()) + "' type='error'")
	if st.ID != "" {
		b.WriteString(" id='" + wire.EscapeAttr(st.ID) + "'")
	}
	// by: the error is generated here, by the sender's own server (RFC
	// 6120 §8.3.2), not by the unreachable recipient.
	b.WriteString("><error type='" + string(typ) + "' by='" + wire.EscapeAttr(st.From.Domain().String()) + "'><" + string(cond) + " xmlns='" + nsStanzas + "'/>")
	if text != "" {
		b.WriteString("<text xmlns='" + nsStanzas + "' xml:lang='en'>" + wire.EscapeText(text) + "</text>")
	}
	b.WriteString("</error></" + st.Name + ">")
	return &Stanza{Name: st.Name, From: st.To, To: st.From, Type: "error", ID: st.ID, XML: []byte(b.String())}
}

const nsStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"
