package s2s

import (
	"context"
	"errors"
	"log/slog"
	"maps"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/internal/logkey"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// streamCounters are one stream's traffic figures.
type streamCounters struct {
	bytesIn, bytesOut, stanzasIn, stanzasOut, writes atomic.Uint64
}

// countingConn counts the bytes that cross a connection (below TLS, so
// these are bytes on the wire).
type countingConn struct {
	net.Conn
	c *streamCounters
}

func (c *countingConn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	c.c.bytesIn.Add(uint64(n))
	return n, err
}

func (c *countingConn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	c.c.bytesOut.Add(uint64(n))
	return n, err
}

// Counters are cumulative figures of a federation engine (a Pool and the
// Server using it), for monitoring.
type Counters struct {
	InboundOpened  uint64 // inbound streams that authorized a first domain pair
	OutboundOpened uint64 // outbound streams that authorized a first domain pair
	// StreamsFailed counts inbound streams that ended before authorizing
	// any pair, and the Pool's outbound attempts that did not get an
	// authorized stream (each once), by reason (see FailureReason):
	// "timeout", "unreachable", "dialback-invalid", …
	StreamsFailed map[string]uint64

	StanzasIn  uint64 // stanzas received from authorized inbound pairs
	StanzasOut uint64 // stanzas written to outbound streams
	// Bounced counts stanzas returned to their sender, by error condition.
	Bounced map[string]uint64
	// Dropped counts stanzas that could not be bounced (errors, or
	// stanzas whose bounce found no Bounce handler), by reason.
	Dropped map[string]uint64

	// Dialback verdicts on our inbound streams (receiving role).
	DialbackValid, DialbackInvalid, DialbackError uint64
	// Answers to db:verify (authoritative role).
	AuthoritativeValid, AuthoritativeInvalid uint64

	// RefusedConnections counts connections refused by a limit, by the
	// stream error they got ("resource-constraint": too many
	// unauthenticated in total, "policy-violation": too many from one
	// address), and authentications refused because the remote domain
	// already has Server.MaxStreamsPerDomain streams to the served domain
	// ("streams-per-domain").
	RefusedConnections map[string]uint64
}

// metrics accumulates Counters.
type metrics struct {
	inOpened, outOpened, stanzasIn, stanzasOut      atomic.Uint64
	dbValid, dbInvalid, dbError, authValid, authInv atomic.Uint64

	mu      sync.Mutex
	failed  map[string]uint64
	bounced map[string]uint64
	dropped map[string]uint64
	refused map[string]uint64
}

func (m *metrics) add(mp *map[string]uint64, k string) {
	m.mu.Lock()
	if *mp == nil {
		*mp = make(map[string]uint64)
	}
	(*mp)[k]++
	m.mu.Unlock()
}

func (m *metrics) snapshot() Counters {
	m.mu.Lock()
	c := Counters{StreamsFailed: maps.Clone(m.failed), Bounced: maps.Clone(m.bounced), Dropped: maps.Clone(m.dropped), RefusedConnections: maps.Clone(m.refused)}
	m.mu.Unlock()
	c.InboundOpened, c.OutboundOpened = m.inOpened.Load(), m.outOpened.Load()
	c.StanzasIn, c.StanzasOut = m.stanzasIn.Load(), m.stanzasOut.Load()
	c.DialbackValid, c.DialbackInvalid, c.DialbackError = m.dbValid.Load(), m.dbInvalid.Load(), m.dbError.Load()
	c.AuthoritativeValid, c.AuthoritativeInvalid = m.authValid.Load(), m.authInv.Load()
	return c
}

// FailureReason classifies why a stream or a connection attempt failed, as
// counted in Counters.StreamsFailed: "policy", "certificate",
// "dialback-invalid", "dialback-error", "timeout", "unreachable",
// "stream-error-sent:<condition>", "stream-error-received:<condition>",
// "closed" or "other".
func FailureReason(err error) string {
	var se *Error
	switch {
	case err == nil:
		return "closed"
	case errors.Is(err, ErrPolicy):
		return "policy"
	case errors.Is(err, ErrCertificate):
		return "certificate"
	case errors.Is(err, ErrDialbackInvalid):
		return "dialback-invalid"
	case errors.Is(err, ErrDialbackError):
		return "dialback-error"
	case isTimeout(err):
		return "timeout"
	case errors.As(err, &se) && se.Condition.Err != "":
		if se.Sent {
			return "stream-error-sent:" + se.Condition.Err
		}
		return "stream-error-received:" + se.Condition.Err
	case errors.Is(err, ErrNoTarget):
		return "unreachable"
	case errors.Is(err, ErrStreamClosed):
		return "closed"
	}
	var ne net.Error
	if errors.As(err, &ne) {
		return "unreachable"
	}
	return "other"
}

// isTimeout reports whether err is some kind of timeout.
func isTimeout(err error) bool {
	if errors.Is(err, ErrTimeout) || errors.Is(err, stream.ConnectionTimeout) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// engine is what the streams of one Pool (and the Server using it) share:
// the stream registry behind Status, the counters and the server-wide
// limits. Streams made by a bare Endpoint have none.
type engine struct {
	m metrics

	mu      sync.Mutex
	streams map[*Stream]struct{}

	verifySem chan struct{} // bounds concurrent dialback verifications; nil: no bound
	setups    *setupSlots   // bounds concurrent outbound setups per peer address; nil: none

	handler    Handler         // receives stanzas arriving on bidi outbound streams; guarded by mu
	handlerCtx context.Context // passed to handler; ends with the Server

	// onInboundAuthorized runs when an inbound stream authorizes a pair:
	// the peer contacted us, so the Pool forgets its back-off for it.
	onInboundAuthorized func(p Pair)

	// admit, set by the Server before it serves, is asked (with the
	// stream's mu held) before an inbound stream authorizes a pair; false
	// refuses the authorization (too many streams for that pair). Nil
	// admits everything.
	admit func(s *Stream, p Pair) bool
}

// admitInbound asks the Server's per-domain stream limit about p.
func (g *engine) admitInbound(s *Stream, p Pair) bool {
	if g == nil {
		return true
	}
	if g.admit != nil && !g.admit(s, p) {
		return false
	}
	// The peer contacted us: end the Pool's back-off for it now, before
	// it learns it is authorized and can make us answer (s.mu is held;
	// the Pool never takes a stream's lock under its own).
	if g.onInboundAuthorized != nil {
		g.onInboundAuthorized(p)
	}
	return true
}

func newEngine() *engine {
	return &engine{streams: make(map[*Stream]struct{})}
}

func (g *engine) track(s *Stream) {
	g.mu.Lock()
	g.streams[s] = struct{}{}
	g.mu.Unlock()
}

func (g *engine) ended(s *Stream, from State, err error) {
	g.mu.Lock()
	delete(g.streams, s)
	g.mu.Unlock()
	// A clean close before authorization is no failure: verify-only
	// streams (ours, and peers' to our authoritative role) end that way.
	// Outbound streams are counted once per attempt by the Pool, with the
	// attempt's reason: a stream's own end races with the peer's next move
	// (after an invalid dialback key, its stream error or our close).
	if info := s.Info(); from == Pending && err != nil && !info.VerifyOnly && info.Direction == Inbound {
		g.m.add(&g.m.failed, FailureReason(err))
	}
}

func (g *engine) authorized(s *Stream, p Pair, wasPending bool) {
	dir := s.Info().Direction
	if wasPending {
		if dir == Inbound {
			g.m.inOpened.Add(1)
		} else {
			g.m.outOpened.Add(1)
		}
	}
}

func (g *engine) verdict(t dialback.Type) {
	switch t {
	case dialback.TypeValid:
		g.m.dbValid.Add(1)
	case dialback.TypeInvalid:
		g.m.dbInvalid.Add(1)
	default:
		g.m.dbError.Add(1)
	}
}

func (g *engine) authoritative(t dialback.Type) {
	switch t {
	case dialback.TypeValid:
		g.m.authValid.Add(1)
	case dialback.TypeInvalid:
		g.m.authInv.Add(1)
	}
}

// tryVerify takes a verification slot, if the bound allows.
func (g *engine) tryVerify() bool {
	if g == nil || g.verifySem == nil {
		return true
	}
	select {
	case g.verifySem <- struct{}{}:
		return true
	default:
		return false
	}
}

func (g *engine) doneVerify() {
	if g != nil && g.verifySem != nil {
		<-g.verifySem
	}
}

// list returns the registered streams.
func (g *engine) list() []*Stream {
	g.mu.Lock()
	defer g.mu.Unlock()
	return slices.Collect(maps.Keys(g.streams))
}

// status returns the Info of every registered stream, sorted by direction,
// local and remote domain, then age.
func (g *engine) status() []Info {
	streams := g.list()
	out := make([]Info, 0, len(streams))
	for _, s := range streams {
		if i := s.Info(); i.State != Closed && !i.VerifyOnly { // verify-only streams are transient
			out = append(out, i)
		}
	}
	slices.SortFunc(out, func(a, b Info) int {
		if a.Direction != b.Direction {
			return int(a.Direction) - int(b.Direction)
		}
		if c := strings.Compare(a.Local, b.Local); c != 0 {
			return c
		}
		if c := strings.Compare(a.Remote, b.Remote); c != 0 {
			return c
		}
		return a.Since.Compare(b.Since)
	})
	return out
}

// enforcePolicy closes the streams that the Endpoint's current settings no
// longer allow, with <policy-violation/>.
func (g *engine) enforcePolicy(e *Endpoint) {
	for _, s := range g.list() {
		info := s.Info()
		// A peer may omit 'from' in its header (XEP-0220 allows it): its
		// authorized pairs are still checked.
		if info.State == Closed || info.VerifyOnly || info.Remote == "" && len(info.Pairs) == 0 {
			continue
		}
		if err := e.allowedNow(info); err != nil {
			s.lg().Warn("closing stream after a federation policy change", slog.Any(logkey.Err, err))
			s.failAsync("policy", stream.PolicyViolation, err.Error(), err)
		}
	}
}

// allowedNow checks an existing stream against the current settings.
func (e *Endpoint) allowedNow(info Info) error {
	pairs := info.Pairs
	if len(pairs) == 0 {
		pairs = []PairAuth{{Pair: Pair{Local: info.Local, Remote: info.Remote}}}
	}
	for _, p := range pairs {
		if err := e.policy(p.Local, p.Remote); err != nil {
			return err
		}
		if !info.TLS && e.security(p.Remote) == tlsmode.Required {
			return errors.Join(ErrPolicy, errors.New("TLS is now required with "+p.Remote+" and this stream is not encrypted"))
		}
		if e.requireValidCert(p.Remote) && p.Auth != AuthExternal && (!info.TLS || info.CertError != nil) {
			return errors.Join(ErrPolicy, errors.New("a valid certificate is now required for "+p.Remote))
		}
	}
	return nil
}

// watch starts the stream's idle and keepalive timer: a single space is
// written when nothing was written for keepalive (RFC 6120 §4.6.1, which
// also shows a dead peer through the failed write), and the stream is
// closed when no stanza crossed it for idle. Zero or negative disables
// either.
func (s *Stream) watch(idle, keepalive time.Duration) {
	tick := keepalive
	if idle > 0 && (tick <= 0 || idle/2 < tick) {
		tick = idle / 2
	}
	if tick <= 0 {
		return
	}
	lastActive := time.Now()
	lastStanzas := s.ctr.stanzasIn.Load() + s.ctr.stanzasOut.Load()
	lastWrites := s.ctr.writes.Load()
	sinceWrite := time.Duration(0)
	f := func() {
		now := time.Now()
		if n := s.ctr.stanzasIn.Load() + s.ctr.stanzasOut.Load(); n != lastStanzas {
			lastStanzas, lastActive = n, now
		}
		if idle > 0 && now.Sub(lastActive) >= idle {
			s.lg().Info("closing idle stream", slog.Duration("idle", now.Sub(lastActive).Round(time.Millisecond)))
			s.closeAsync()
			return
		}
		if w := s.ctr.writes.Load(); w != lastWrites {
			lastWrites, sinceWrite = w, 0
		} else {
			sinceWrite += tick
		}
		if keepalive > 0 && sinceWrite >= keepalive {
			s.mu.Lock()
			closing := s.closing
			s.mu.Unlock()
			if !closing {
				if err := s.writeString(" "); err != nil {
					s.lg().Info("keepalive failed: peer gone", slog.Any(logkey.Err, err))
					s.end(&Error{Op: "keepalive", Local: s.Info().Local, Remote: s.Info().Remote, Err: err})
					return
				}
				lastWrites, sinceWrite = s.ctr.writes.Load(), 0
			}
		}
		s.mu.Lock()
		if s.info.State != Closed {
			s.timer.Reset(tick)
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	if s.info.State != Closed {
		s.timer = time.AfterFunc(tick, f)
	}
	s.mu.Unlock()
}

// whenDone runs f (once) when the stream has ended, or now if it has.
func (s *Stream) whenDone(f func(error)) {
	s.mu.Lock()
	if s.info.State != Closed {
		s.onEnd = append(s.onEnd, f)
		s.mu.Unlock()
		return
	}
	s.mu.Unlock()
	<-s.done
	f(s.doneErr)
}

func (g *engine) setHandler(ctx context.Context, h Handler) {
	g.mu.Lock()
	g.handler, g.handlerCtx = h, ctx
	g.mu.Unlock()
}

func (g *engine) inboundHandler() (Handler, context.Context) {
	if g == nil {
		return nil, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.handler, g.handlerCtx
}

// bidiStream returns an inbound bidirectional stream on which pr is
// authorized, if there is one: stanzas for pr can go back over it.
func (g *engine) bidiStream(pr Pair) *Stream {
	for _, s := range g.list() {
		s.mu.Lock()
		_, ok := s.valid[pr]
		usable := ok && s.bidi && !s.closing && s.info.Direction == Inbound && s.info.State == Connected
		s.mu.Unlock()
		if usable {
			return s
		}
	}
	return nil
}
