package s2s

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/internal/logkey"
	"github.com/xmppfed/xmppfed/internal/wire"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Namespaces of S2S negotiation.
const (
	NSServer  = "jabber:server"
	NSSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	NSStreams = "urn:ietf:params:xml:ns:xmpp-streams"
	NSBidi    = "urn:xmpp:features:bidi"
	nsBidiReq = "urn:xmpp:bidi" // the initiator's <bidi/> request (XEP-0288)
	nsTLS     = "urn:ietf:params:xml:ns:xmpp-tls"
)

// Bounds on the shutdown of a stream.
const (
	closeGrace       = 5 * time.Second // wait for the peer's </stream:stream>
	writeTimeout     = 30 * time.Second
	lastWordsTimeout = 2 * time.Second // a stream error or closing tag to a peer that does not read
)

// Stream is one authenticated (or authenticating) server-to-server stream.
// Outbound streams are returned by Endpoint.Dial; inbound streams are run by
// Endpoint.ServeConn and reported through OnStateChange.
type Stream struct {
	ep  *Endpoint
	log atomic.Pointer[slog.Logger] // replaced when the stream's ids change

	// conn is the current transport (a *tls.Conn after STARTTLS). Only the
	// goroutine that reads the stream replaces it, holding cmu; other
	// goroutines read it through transport().
	cmu  sync.Mutex
	conn net.Conn
	r    *wire.Reader

	wmu  sync.Mutex
	w    *bufio.Writer
	wErr error

	mu       sync.Mutex
	info     Info
	valid    map[Pair]AuthMethod
	pending  map[Pair]chan answer      // outbound db:result awaiting the answer
	verifies map[verifyKey]chan answer // db:verify awaiting the answer
	closing  bool
	cause    error // why we are failing the stream, set before the stream error is written
	dbErrors bool  // the peer listed dialback errors: target multiplexing allowed
	bidi     bool  // XEP-0288 negotiated: stanzas flow both ways for the authorized pairs

	// h receives the stanzas a peer sends on our outbound stream when
	// bidi is negotiated; set before the read loop starts.
	h    Handler
	hctx context.Context

	eng   *engine         // registry and counters of the Pool/Server; nil for a bare Endpoint
	ctr   *streamCounters // traffic figures
	timer *time.Timer     // idle and keepalive (watch); guarded by mu
	onEnd []func(error)   // run once the stream has ended (whenDone); guarded by mu
	// releaseSetup gives back the engine's setup slot for the peer address
	// (idempotent); set before the stream is shared.
	releaseSetup func()
	// onConnected runs when the stream authorizes its first pair; set
	// before the stream starts.
	onConnected func()

	readDone chan struct{} // closed when the read loop of an outbound stream returns
	done     chan struct{} // closed when the stream is gone
	doneErr  error
	endOnce  sync.Once
}

type verifyKey struct{ from, to, id string }

type answer struct {
	typ dialback.Type
	el  dialback.Element
	err error
}

func newStream(ep *Endpoint, conn net.Conn, dir Direction, eng *engine) *Stream {
	ctr := &streamCounters{}
	switch c := conn.(type) {
	case *countingConn:
		ctr = c.c
	case *tls.Conn: // a direct TLS listener's connection
		if cc, ok := c.NetConn().(*countingConn); ok {
			ctr = cc.c
		}
	default:
		conn = &countingConn{Conn: conn, c: ctr}
	}
	s := &Stream{
		ep:           ep,
		releaseSetup: func() {},
		eng:          eng,
		ctr:          ctr,
		conn:         conn,
		w:            bufio.NewWriterSize(conn, 4096),
		valid:        make(map[Pair]AuthMethod),
		pending:      make(map[Pair]chan answer),
		verifies:     make(map[verifyKey]chan answer),
		done:         make(chan struct{}),
	}
	s.info = Info{Direction: dir, State: Pending, Since: time.Now(), RemoteAddr: conn.RemoteAddr().String()}
	s.log.Store(ep.logger().With(slog.String("direction", dir.String()), slog.String("peer_addr", s.info.RemoteAddr)))
	s.resetReader()
	if eng != nil {
		eng.track(s)
	}
	return s
}

// lg returns the stream's logger, with its current domains and id.
func (s *Stream) lg() *slog.Logger { return s.log.Load() }

// transport returns the current connection.
func (s *Stream) transport() net.Conn {
	s.cmu.Lock()
	defer s.cmu.Unlock()
	return s.conn
}

// setTransport replaces the connection (after a TLS handshake). Callers hold
// wmu so that no write is in flight on the old writer.
func (s *Stream) setTransport(c net.Conn) {
	s.cmu.Lock()
	s.conn = c
	s.cmu.Unlock()
	s.w.Reset(c)
	s.resetReader()
}

func (s *Stream) resetReader() {
	s.r = wire.NewReader(s.conn, wire.Limits{MaxElement: s.ep.MaxStanzaSize, MaxDepth: s.ep.MaxDepth})
}

// Info returns a snapshot of the stream's state.
func (s *Stream) Info() Info {
	s.mu.Lock()
	defer s.mu.Unlock()
	i := s.info
	i.BytesIn, i.BytesOut = s.ctr.bytesIn.Load(), s.ctr.bytesOut.Load()
	i.StanzasIn, i.StanzasOut = s.ctr.stanzasIn.Load(), s.ctr.stanzasOut.Load()
	i.Pairs = make([]PairAuth, 0, len(s.valid))
	for p, m := range s.valid {
		i.Pairs = append(i.Pairs, PairAuth{Pair: p, Auth: m})
	}
	slices.SortFunc(i.Pairs, func(a, b PairAuth) int {
		if c := strings.Compare(a.Local, b.Local); c != 0 {
			return c
		}
		return strings.Compare(a.Remote, b.Remote)
	})
	return i
}

// Done is closed when the stream has ended; Err then says why.
func (s *Stream) Done() <-chan struct{} { return s.done }

// Err returns why the stream ended (nil for a clean close), or nil while it
// is open.
func (s *Stream) Err() error {
	select {
	case <-s.done:
		return s.doneErr
	default:
		return nil
	}
}

// Authorized reports whether stanzas may flow for the pair on this stream.
func (s *Stream) Authorized(local, remote string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.valid[Pair{Local: local, Remote: remote}]
	return ok
}

func (s *Stream) setIDs(local, remote, id string) {
	s.mu.Lock()
	s.info.Local, s.info.Remote, s.info.ID = local, remote, id
	dir := s.info.Direction
	s.mu.Unlock()
	s.log.Store(s.ep.logger().With(
		slog.String("direction", dir.String()),
		slog.String(logkey.Local, local), slog.String(logkey.Remote, remote),
		slog.String(logkey.StreamID, id)))
}

// authorize marks a pair valid and moves the stream to CONNECTED.
func (s *Stream) authorize(p Pair, m AuthMethod) {
	s.mu.Lock()
	wasPending := s.markValidLocked(p, m)
	s.mu.Unlock()
	s.afterAuthorize(p, m, wasPending)
}

// markValidLocked records an authorized pair; s.mu is held. It reports
// whether the stream was PENDING until now.
func (s *Stream) markValidLocked(p Pair, m AuthMethod) (wasPending bool) {
	s.valid[p] = m
	s.info.VerifyOnly = false // it carries stanzas now, whatever it did before
	if s.info.Auth == AuthNone {
		s.info.Auth = m
	}
	wasPending = s.info.State == Pending
	if wasPending {
		s.info.State = Connected
	}
	return wasPending
}

// afterAuthorize does what follows an authorization outside the locks:
// deadline, log, state change callback.
func (s *Stream) afterAuthorize(p Pair, m AuthMethod, wasPending bool) {
	from := Connected
	if wasPending {
		from = Pending
	}
	if s.Info().Direction == Inbound {
		// Authenticated: the unauthenticated-lifetime bound no longer applies.
		s.transport().SetReadDeadline(time.Time{})
	}
	s.lg().Info("domain pair authorized", slog.String(logkey.Local, p.Local), slog.String(logkey.Remote, p.Remote), slog.String("auth", m.String()))
	if s.eng != nil {
		s.eng.authorized(s, p, wasPending)
	}
	if from == Pending {
		s.stateChange(Pending, Connected, nil)
		if s.onConnected != nil {
			s.onConnected()
		}
	}
}

func (s *Stream) stateChange(from, to State, err error) {
	attrs := []any{slog.String(logkey.State, from.String()+"->"+to.String())}
	if err != nil {
		attrs = append(attrs, slog.Any(logkey.Err, err))
	}
	s.lg().Info("Connection state change", attrs...)
	if s.ep.OnStateChange != nil {
		s.ep.OnStateChange(StateChange{Info: s.Info(), From: from, To: to, Err: err})
	}
}

// end marks the stream closed (once), closes the transport and wakes every
// waiter.
func (s *Stream) end(err error) {
	var from State
	var hooks []func(error)
	ended := false
	s.endOnce.Do(func() {
		ended = true
		s.mu.Lock()
		if s.cause != nil {
			err = s.cause // the reason we failed the stream, not what the peer did next
		}
		from = s.info.State
		s.info.State = Closed
		pend := s.pending
		vers := s.verifies
		s.pending = map[Pair]chan answer{}
		s.verifies = map[verifyKey]chan answer{}
		if s.timer != nil {
			s.timer.Stop()
		}
		hooks = s.onEnd
		s.onEnd = nil
		s.mu.Unlock()
		s.transport().Close()
		s.doneErr = err
		close(s.done)
		for _, c := range pend {
			c <- answer{err: ErrStreamClosed}
		}
		for _, c := range vers {
			c <- answer{err: ErrStreamClosed}
		}
	})
	if ended {
		// Outside the Once, so that a callback may look at the stream.
		if s.eng != nil {
			s.eng.ended(s, from, err)
		}
		s.stateChange(from, Closed, err)
		for _, f := range hooks {
			f(err)
		}
	}
}

// write sends raw XML. Writes are serialised; a failed write ends the
// stream.
func (s *Stream) write(b []byte) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLocked(b)
}

func (s *Stream) writeLocked(b []byte) error {
	return s.writeLockedWithin(b, writeTimeout)
}

// writeWithin is write with a shorter bound, for last words (a stream
// error, a closing tag) that must not hold a shutdown up.
func (s *Stream) writeWithin(b []byte, d time.Duration) error {
	s.wmu.Lock()
	defer s.wmu.Unlock()
	return s.writeLockedWithin(b, d)
}

func (s *Stream) writeLockedWithin(b []byte, d time.Duration) error {
	if s.wErr != nil {
		return s.wErr
	}
	if lg := s.lg(); lg.Enabled(context.Background(), slog.LevelDebug) {
		lg.Debug("sending: " + string(b))
	}
	s.transport().SetWriteDeadline(time.Now().Add(d))
	if _, err := s.w.Write(b); err != nil {
		s.wErr = err
		return err
	}
	if err := s.w.Flush(); err != nil {
		s.wErr = err
		return err
	}
	s.ctr.writes.Add(1)
	return nil
}

func (s *Stream) writeString(str string) error { return s.write([]byte(str)) }

// newStreamID returns 128 random bits as 32 hex digits (an NMTOKEN).
func newStreamID() string {
	var b [16]byte
	rand.Read(b[:])
	return hex.EncodeToString(b[:])
}

// header builds a stream header.
func header(from, to, id string, version bool) string {
	var b strings.Builder
	b.WriteString("<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'")
	attr := func(name, v string) {
		if v != "" {
			b.WriteString(" " + name + "='" + wire.EscapeAttr(v) + "'")
		}
	}
	attr("from", from)
	attr("to", to)
	attr("id", id)
	if version {
		b.WriteString(" version='1.0'")
	}
	b.WriteString(" xml:lang='en'>")
	return b.String()
}

// streamErrorXML renders a stream error and the closing tag.
func streamErrorXML(cond stream.Error, text string) string {
	var b strings.Builder
	b.WriteString("<stream:error><" + cond.Err + " xmlns='" + NSStreams + "'")
	if cond.Content != "" {
		b.WriteString(">" + wire.EscapeText(cond.Content) + "</" + cond.Err + ">")
	} else {
		b.WriteString("/>")
	}
	if text != "" {
		b.WriteString("<text xmlns='" + NSStreams + "' xml:lang='en'>" + wire.EscapeText(text) + "</text>")
	}
	b.WriteString("</stream:error></stream:stream>")
	return b.String()
}

// fail sends a stream error, closes the stream and returns the *Error
// describing it.
func (s *Stream) fail(op string, cond stream.Error, text string, cause error) error {
	return s.failAfter(op, nil, cond, text, cause)
}

// failAfter is fail with some last XML (for example a dialback answer)
// written in the same write as the stream error, so that nothing the peer
// does in between can change the outcome.
func (s *Stream) failAfter(op string, last []byte, cond stream.Error, text string, cause error) error {
	e := s.beginFail(op, cond, text, cause)
	if e == nil {
		return s.doneErrAfterEnd()
	}
	s.writeWithin(append(last, streamErrorXML(cond, text)...), lastWordsTimeout)
	s.end(e)
	return e
}

// failAsync starts failing the stream now (nothing more is sent on it) and
// writes the stream error and closes in the background, so that a slow
// peer cannot hold the caller.
func (s *Stream) failAsync(op string, cond stream.Error, text string, cause error) {
	if e := s.beginFail(op, cond, text, cause); e != nil {
		go func() {
			s.writeWithin([]byte(streamErrorXML(cond, text)), lastWordsTimeout)
			s.end(e)
		}()
	}
}

// beginFail marks the stream as failing for the given reason and returns
// the *Error describing it, or nil if it is already failing.
func (s *Stream) beginFail(op string, cond stream.Error, text string, cause error) *Error {
	info := s.Info()
	e := &Error{Op: op, Local: info.Local, Remote: info.Remote, StreamID: info.ID, Condition: cond, Sent: true, Err: cause}
	if text != "" && cause == nil {
		e.Err = errors.New(text)
	}
	s.lg().Warn("closing stream with stream error", slog.String("condition", cond.Err), slog.String("text", text), slog.Any(logkey.Err, cause))
	s.mu.Lock()
	s.closing = true
	if s.cause == nil {
		s.cause = e
	} else {
		e = nil // already failing for another reason; report that one
	}
	s.mu.Unlock()
	return e
}

// doneErrAfterEnd waits for the stream to end and returns why.
func (s *Stream) doneErrAfterEnd() error {
	<-s.done
	return s.doneErr
}

// readFailure turns a read error into the stream's end: a protocol
// violation gets its stream error, a transport error just closes.
func (s *Stream) readFailure(op string, err error) error {
	err = s.r.MapErr(err)
	var we *wire.Error
	if errors.As(err, &we) {
		return s.fail(op, we.Condition, we.Reason, err)
	}
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return s.fail(op, stream.ConnectionTimeout, "", ErrTimeout)
	}
	if errors.Is(err, wire.ErrClosed) {
		s.closeReply()
		return nil
	}
	var se *Error
	if errors.As(err, &se) && se.Condition.Err != "" {
		// Already a stream error (sent or received): keep its condition.
		s.end(se)
		return se
	}
	info := s.Info()
	e := &Error{Op: op, Local: info.Local, Remote: info.Remote, StreamID: info.ID, Err: err}
	s.end(e)
	return e
}

// peerStreamError decodes a <stream:error/> the peer sent and ends the
// stream.
func (s *Stream) peerStreamError(op string, start xml.StartElement) error {
	var se stream.Error
	if err := s.r.Decoder().DecodeElement(&se, &start); err != nil {
		se = stream.UndefinedCondition
	}
	info := s.Info()
	e := &Error{Op: op, Local: info.Local, Remote: info.Remote, StreamID: info.ID, Condition: se, Err: ErrPeerStreamError}
	s.lg().Warn("peer sent stream error", slog.String("condition", se.Err), slog.Any(logkey.Err, e))
	s.end(e)
	return e
}

// markClosing records that we are closing the stream (nothing more is sent
// after our closing tag) and reports whether that was already so.
func (s *Stream) markClosing() (already bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	already = s.closing
	s.closing = true
	return already
}

// closeReply answers the peer's </stream:stream> and ends the stream.
func (s *Stream) closeReply() {
	if !s.markClosing() {
		s.writeString("</stream:stream>")
	}
	s.end(nil)
}

// Close closes the stream gracefully: it sends </stream:stream> and waits
// (up to a few seconds) for the peer's closing tag before dropping the
// connection.
func (s *Stream) Close() error {
	s.closeAsync()
	<-s.done
	if s.readDone != nil {
		<-s.readDone
	}
	return nil
}

// closeAsync sends </stream:stream> and lets the read loop end the stream
// when the peer answers, or a timer after closeGrace.
func (s *Stream) closeAsync() {
	if s.markClosing() {
		return
	}
	if err := s.writeWithin([]byte("</stream:stream>"), lastWordsTimeout); err != nil {
		s.end(nil)
		return
	}
	time.AfterFunc(closeGrace, func() { s.end(nil) })
}

// isTLS reports whether the transport is TLS and its state.
func (s *Stream) tlsState() (tls.ConnectionState, bool) {
	if tc, ok := s.transport().(*tls.Conn); ok {
		return tc.ConnectionState(), true
	}
	return tls.ConnectionState{}, false
}

func (s *Stream) setTLS(cs tls.ConnectionState, certErr error) {
	s.mu.Lock()
	s.info.TLS = true
	s.info.TLSVersion = cs.Version
	s.info.CertError = certErr
	s.mu.Unlock()
}

// features is what a peer's <stream:features/> offers.
type features struct {
	tls        bool
	tlsPeer    tlsmode.Peer
	external   bool
	dialback   bool
	dbErrors   bool
	bidi       bool
	mechanisms []string
}

func (f features) String() string {
	return fmt.Sprintf("starttls=%v external=%v dialback=%v", f.tls, f.external, f.dialback)
}

// abort ends the stream at once, without last words and without waiting
// for TLS's close_notify to reach a peer that may not read.
func (s *Stream) abort(err error) {
	c := s.transport()
	if tc, ok := c.(*tls.Conn); ok {
		c = tc.NetConn()
	}
	c.Close()
	s.end(err)
}

// usable reports whether new stanzas may be written on the stream.
func (s *Stream) usable() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.info.State == Connected && !s.closing && s.cause == nil
}

// sendBatch writes stanzas of one authorized pair with a single flush (the
// Pool's writer). On a write error the stream is ended: what was written
// cannot be known, and nothing more can be.
func (s *Stream) sendBatch(p Pair, batch []*Stanza) error {
	s.mu.Lock()
	_, ok := s.valid[p]
	closing := s.closing || s.cause != nil || s.info.State == Closed
	s.mu.Unlock()
	switch {
	case closing:
		return &Error{Op: "send", Local: p.Local, Remote: p.Remote, Err: ErrStreamClosed}
	case !ok:
		return &Error{Op: "send", Local: p.Local, Remote: p.Remote, Err: ErrNotAuthorized}
	}
	// Counted before the write, so that a peer that has the stanzas never
	// sees counters that lack them.
	n := uint64(len(batch))
	s.ctr.stanzasOut.Add(n)
	if s.eng != nil {
		s.eng.m.stanzasOut.Add(n)
	}
	s.wmu.Lock()
	err := s.wErr
	if err == nil && s.isClosing() {
		// A closer (idle close, policy) took the write lock first: what
		// we would write now would follow its closing tag and be lost.
		err = ErrStreamClosed
		s.wmu.Unlock()
		s.ctr.stanzasOut.Add(^(n - 1))
		if s.eng != nil {
			s.eng.m.stanzasOut.Add(^(n - 1))
		}
		return &Error{Op: "send", Local: p.Local, Remote: p.Remote, Err: err}
	}
	if err == nil {
		s.transport().SetWriteDeadline(time.Now().Add(writeTimeout))
		debug := s.lg().Enabled(context.Background(), slog.LevelDebug)
		for _, st := range batch {
			if debug {
				s.lg().Debug("sending: " + string(st.XML))
			}
			if _, err = s.w.Write(st.XML); err != nil {
				break
			}
		}
		if err == nil {
			err = s.w.Flush()
		}
		if err != nil {
			s.wErr = err
		} else {
			s.ctr.writes.Add(1)
		}
	}
	s.wmu.Unlock()
	if err != nil {
		// Not sent after all (they go back to the Pool's queue, or fail).
		s.ctr.stanzasOut.Add(^(n - 1))
		if s.eng != nil {
			s.eng.m.stanzasOut.Add(^(n - 1))
		}
		e := &Error{Op: "send", Local: p.Local, Remote: p.Remote, StreamID: s.Info().ID, Err: err}
		s.end(e)
		return e
	}
	return nil
}

func (s *Stream) isClosing() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.closing || s.cause != nil
}
