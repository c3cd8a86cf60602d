package s2s

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"

	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/internal/logkey"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Server defaults.
const (
	DefaultMaxUnauthenticated        = 1000 // inbound streams not yet authorized, in total
	DefaultMaxUnauthenticatedPerAddr = 20   // the same, per source address
	DefaultMaxVerifications          = 500  // dialback verifications in progress
	DefaultMaxStreamsPerDomain       = 16   // authenticated inbound streams per remote domain and served domain
	DefaultInboundIdleTimeout        = 30 * time.Minute
)

// ErrServerClosed is returned by Serve after Shutdown or Close.
var ErrServerClosed = errors.New("s2s: server closed")

// errCloseNow is the cause with which Close cancels the streams' context:
// they are cut off instead of being sent <system-shutdown/>.
var errCloseNow = errors.New("s2s: server closed at once")

// Namespaces the Server answers itself.
const (
	NSPing      = "urn:xmpp:ping"
	NSDiscoInfo = "http://jabber.org/protocol/disco#info"
)

// Server is the inbound side of the federation engine. It accepts streams
// on its listeners (plain TCP with STARTTLS, and XEP-0368 direct TLS), runs
// the receiving and authoritative roles for every served domain, hands each
// stanza of an authorized pair to Handler, and answers XEP-0199 pings and
// XEP-0030 disco#info queries addressed to a served domain itself. Its
// replies, and everything else the server sends to remote domains, go out
// through Pool.
//
// Limits protect it from peers that connect and never authenticate: in
// total and per source address, further connections are refused at once
// with <resource-constraint/> or <policy-violation/>, before anything is
// read (direct TLS connections are just closed); server-wide, dialback
// verifications are bounded. A remote domain may hold only so many
// authenticated inbound streams at a time.
//
// Set the fields before the first Serve. The zero values of the optional
// fields are the defaults.
type Server struct {
	// Endpoint is the server's S2S identity (required).
	Endpoint *Endpoint

	// Handler receives the stanzas of authorized inbound streams (and
	// the bounces of the Server's own Pool, when Pool is nil). Nil drops
	// them.
	Handler Handler

	// Pool sends to remote domains: the Server's replies, and the
	// back-off it resets when a peer connects. Nil makes one with the same
	// Endpoint and Handler as its Bounce handler, available from
	// Server.Pool after the first Serve (or from OutboundPool).
	Pool *Pool

	// Limits; zero means the default, negative means none.
	MaxUnauthenticated        int
	MaxUnauthenticatedPerAddr int
	MaxVerifications          int
	// MaxStreamsPerDomain bounds the authenticated inbound streams a
	// remote domain holds for each served domain (a server needs one or
	// two per domain pair; more is a loop or abuse). It is per pair, not
	// per remote domain alone, because most servers open one stream per
	// pair: one sender writing to many of our domains needs as many.
	// Beyond it, dialback is answered <resource-constraint/> and SASL
	// EXTERNAL <temporary-auth-failure/>, and the peer keeps using the
	// streams it has.
	MaxStreamsPerDomain int

	// IdleTimeout closes an inbound stream that carried no stanza for that
	// long (negative never). The peer opens a new one when it needs it.
	IdleTimeout time.Duration

	// NoBuiltins passes pings and disco#info queries to the served domains
	// on to Handler instead of answering them.
	NoBuiltins bool

	initOnce sync.Once
	initErr  error
	ctx      context.Context
	cancel   context.CancelCauseFunc // errCloseNow: Close; otherwise Shutdown
	eng      *engine

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	unauth    int
	perAddr   map[netip.Addr]int
	places    map[*Stream]*unauthPlace // inbound streams' unauthenticated places
	closed    bool
	conns     sync.WaitGroup // connection goroutines, a running Handler included
	// inbound holds the live inbound streams, each with the domain pairs
	// it counts for in perPair (MaxStreamsPerDomain).
	inbound map[*Stream]map[Pair]bool
	perPair map[Pair]int

	waitOnce sync.Once
	waitDone chan struct{} // closed when conns is done, after closed is set
}

func (srv *Server) init() error {
	srv.initOnce.Do(func() {
		if srv.Endpoint == nil {
			srv.initErr = &Error{Op: "serve", Err: fmt.Errorf("%w: Server without Endpoint", ErrConfig)}
			return
		}
		if err := srv.Endpoint.check("serve"); err != nil {
			srv.initErr = err
			return
		}
		if srv.Pool == nil {
			srv.Pool = &Pool{Endpoint: srv.Endpoint, Bounce: srv.Handler}
		}
		if err := srv.Pool.init(); err != nil {
			srv.initErr = err
			return
		}
		srv.eng = srv.Pool.eng
		if n := limit(srv.MaxVerifications, DefaultMaxVerifications); n > 0 {
			srv.eng.verifySem = make(chan struct{}, n)
		}
		srv.ctx, srv.cancel = context.WithCancelCause(context.Background())
		srv.eng.setHandler(srv.ctx, HandlerFunc(srv.serveStanza))
		srv.eng.admit = srv.admit
		srv.listeners = make(map[net.Listener]struct{})
		srv.perAddr = make(map[netip.Addr]int)
		srv.places = make(map[*Stream]*unauthPlace)
		srv.inbound = make(map[*Stream]map[Pair]bool)
		srv.perPair = make(map[Pair]int)
	})
	return srv.initErr
}

// OutboundPool returns the Pool the Server sends through.
func (srv *Server) OutboundPool() (*Pool, error) {
	if err := srv.init(); err != nil {
		return nil, err
	}
	return srv.Pool, nil
}

func limit(v, def int) int {
	switch {
	case v < 0:
		return 0
	case v == 0:
		return def
	}
	return v
}

// ListenAndServe listens on the TCP address addr (":5269" when empty) and
// calls Serve.
func (srv *Server) ListenAndServe(addr string) error {
	if addr == "" {
		addr = ":5269"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return srv.Serve(l)
}

// ListenAndServeTLS listens on the TCP address addr (":5270" when empty)
// and calls ServeTLS.
func (srv *Server) ListenAndServeTLS(addr string) error {
	if addr == "" {
		addr = ":5270"
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return srv.ServeTLS(l)
}

// Serve accepts connections on l (the plain S2S port, 5269, where peers
// negotiate STARTTLS) until Shutdown or Close, and returns ErrServerClosed
// then. It closes l.
func (srv *Server) Serve(l net.Listener) error { return srv.serve(l, false) }

// ServeTLS accepts XEP-0368 direct TLS connections on l (the port
// _xmpps-server._tcp records point at): TLS starts at once, with the
// Endpoint's certificates and the ALPN protocol "xmpp-server".
func (srv *Server) ServeTLS(l net.Listener) error { return srv.serve(l, true) }

func (srv *Server) serve(l net.Listener, direct bool) error {
	if err := srv.init(); err != nil {
		l.Close()
		return err
	}
	var cfg *tls.Config
	if direct {
		if srv.Endpoint.TLS == nil {
			l.Close()
			return &Error{Op: "serve", Err: fmt.Errorf("%w: direct TLS needs certificates (Endpoint.TLS)", ErrConfig)}
		}
		cfg = tlsmode.ServerConfig(srv.Endpoint.TLS)
		cfg.NextProtos = []string{"xmpp-server"}
	}
	srv.mu.Lock()
	if srv.closed {
		srv.mu.Unlock()
		l.Close()
		return ErrServerClosed
	}
	srv.listeners[l] = struct{}{}
	srv.mu.Unlock()
	lg := srv.Endpoint.logger()
	lg.Info("serving server-to-server streams", slog.String("addr", l.Addr().String()), slog.Bool("direct_tls", direct))
	var delay time.Duration
	for {
		conn, err := l.Accept()
		if err != nil {
			if srv.isClosed() {
				return ErrServerClosed // closeListeners closed l
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of file descriptors or similar: wait and retry,
				// as net/http does. l stays in the set meanwhile, so
				// that a Close during the wait closes it.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				lg.Warn("accept failed; retrying", slog.Any(logkey.Err, err), slog.Duration("delay", delay))
				time.Sleep(delay)
				continue
			}
			srv.mu.Lock()
			delete(srv.listeners, l)
			srv.mu.Unlock()
			l.Close()
			return err
		}
		delay = 0
		srv.accept(conn, cfg)
	}
}

func (srv *Server) isClosed() bool {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	return srv.closed
}

// accept applies the connection limits and starts serving conn.
func (srv *Server) accept(conn net.Conn, cfg *tls.Config) {
	addr := remoteIP(conn)
	maxTotal := limit(srv.MaxUnauthenticated, DefaultMaxUnauthenticated)
	maxPer := limit(srv.MaxUnauthenticatedPerAddr, DefaultMaxUnauthenticatedPerAddr)
	srv.mu.Lock()
	var refuse stream.Error
	var why string
	switch {
	case srv.closed:
		srv.mu.Unlock()
		conn.Close()
		return
	case maxTotal > 0 && srv.unauth >= maxTotal:
		refuse, why = stream.ResourceConstraint, "too many unauthenticated connections"
	case maxPer > 0 && srv.perAddr[addr] >= maxPer:
		refuse, why = stream.PolicyViolation, "too many unauthenticated connections from your address"
	default:
		srv.unauth++
		srv.perAddr[addr]++
	}
	// A direct TLS peer cannot read a stream error before a TLS
	// handshake, which would cost us as much as the connection we refuse:
	// it is just closed.
	closeOnly := refuse.Err != "" && cfg != nil
	if !closeOnly {
		srv.conns.Add(1) // under mu, so never after Shutdown has begun waiting
	}
	srv.mu.Unlock()
	if refuse.Err != "" {
		srv.eng.m.add(&srv.eng.m.refused, refuse.Err)
		srv.Endpoint.logger().Warn("refusing connection", slog.String("peer_addr", conn.RemoteAddr().String()), slog.String("condition", refuse.Err), slog.String("reason", why), slog.Bool("direct_tls", cfg != nil))
		if closeOnly {
			conn.Close()
			return
		}
		go func() {
			defer srv.conns.Done()
			refuseConn(conn, srv.Endpoint.defaultDomain(), refuse, why)
		}()
		return
	}
	// The unauthenticated place is given back when the stream authorizes
	// its first pair (admit, under srv.mu, before the peer can learn it is
	// authorized) or ends, whichever comes first.
	pl := &unauthPlace{addr: addr}
	go func() {
		defer srv.conns.Done()
		var st *Stream
		defer func() {
			srv.mu.Lock()
			srv.releaseLocked(pl)
			delete(srv.places, st)
			srv.mu.Unlock()
		}()
		c := net.Conn(&countingConn{Conn: conn, c: &streamCounters{}})
		if cfg != nil {
			c = tls.Server(c, cfg)
		}
		err := srv.Endpoint.serveConn(srv.ctx, c, HandlerFunc(srv.serveStanza), srv.eng, func(s *Stream) {
			st = s
			srv.track(s)
			srv.mu.Lock()
			srv.places[s] = pl
			srv.mu.Unlock()
			s.onConnected = func() {
				srv.mu.Lock()
				srv.releaseLocked(pl)
				srv.mu.Unlock()
				s.watch(srv.idleTimeout(), srv.Pool.keepAlive())
			}
		})
		if err != nil {
			srv.Endpoint.logger().Debug("inbound stream ended", slog.Any(logkey.Err, err))
		}
	}()
}

func (srv *Server) idleTimeout() time.Duration {
	if srv.IdleTimeout < 0 {
		return 0
	}
	return orDefault(srv.IdleTimeout, DefaultInboundIdleTimeout)
}

// refuseConn answers a connection over a limit with a stream header and a
// stream error, without reading from it (so without allocating for it).
func refuseConn(conn net.Conn, from string, cond stream.Error, text string) {
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(lastWordsTimeout))
	io.WriteString(conn, header(from, "", newStreamID(), true)+streamErrorXML(cond, text))
}

// track registers a new inbound stream until it ends.
func (srv *Server) track(s *Stream) {
	srv.mu.Lock()
	srv.inbound[s] = nil
	srv.mu.Unlock()
	s.whenDone(func(error) { srv.forget(s) })
}

func (srv *Server) forget(s *Stream) {
	srv.mu.Lock()
	defer srv.mu.Unlock()
	for p := range srv.inbound[s] {
		if srv.perPair[p]--; srv.perPair[p] <= 0 {
			delete(srv.perPair, p)
		}
	}
	delete(srv.inbound, s)
}

// admit applies MaxStreamsPerDomain when inbound stream s is about to
// authorize pair p (engine.admit; s.mu is held, so nothing here may take
// it). A stream counts for each pair it authorizes until it ends.
func (srv *Server) admit(s *Stream, p Pair) bool {
	maxStreams := limit(srv.MaxStreamsPerDomain, DefaultMaxStreamsPerDomain)
	srv.mu.Lock()
	pairs, live := srv.inbound[s]
	switch {
	case !live || pairs[p]:
		// Ended (it will not be counted) or counted already.
		srv.mu.Unlock()
		return true
	case maxStreams > 0 && srv.perPair[p] >= maxStreams:
		srv.mu.Unlock()
		srv.eng.m.add(&srv.eng.m.refused, "streams-per-domain")
		srv.Endpoint.logger().Warn("refusing authentication: the remote domain already has too many streams to this domain",
			slog.String(logkey.Local, p.Local), slog.String(logkey.Remote, p.Remote), slog.Int("max_streams_per_domain", maxStreams))
		return false
	}
	if pairs == nil {
		pairs = make(map[Pair]bool)
		srv.inbound[s] = pairs
	}
	pairs[p] = true
	srv.perPair[p]++
	if pl := srv.places[s]; pl != nil {
		srv.releaseLocked(pl) // authenticated: no longer counted as unauthenticated
	}
	srv.mu.Unlock()
	return true
}

// unauthPlace is a connection's place among the unauthenticated ones.
type unauthPlace struct {
	addr     netip.Addr
	released bool
}

// releaseLocked gives a place back (once). srv.mu is held.
func (srv *Server) releaseLocked(pl *unauthPlace) {
	if pl == nil || pl.released {
		return
	}
	pl.released = true
	srv.unauth--
	if srv.perAddr[pl.addr]--; srv.perAddr[pl.addr] <= 0 {
		delete(srv.perAddr, pl.addr)
	}
}

func remoteIP(c net.Conn) netip.Addr {
	if ap, err := netip.ParseAddrPort(c.RemoteAddr().String()); err == nil {
		return ap.Addr().Unmap()
	}
	return netip.Addr{}
}

// serveStanza answers what the server itself answers and hands the rest
// to Handler.
func (srv *Server) serveStanza(ctx context.Context, st *Stanza) {
	if !srv.NoBuiltins && st.Name == "iq" && st.Type == "get" && st.To.Localpart() == "" && st.To.Resourcepart() == "" {
		switch child := firstChild(st.XML); {
		case child.Name.Space == NSPing && child.Name.Local == "ping":
			srv.reply(ctx, st, "")
			return
		case child.Name.Space == NSDiscoInfo && child.Name.Local == "query" && child.node == "":
			srv.reply(ctx, st, "<query xmlns='"+NSDiscoInfo+"'><identity category='server' type='im' name='xmppfed'/>"+
				"<feature var='"+NSDiscoInfo+"'/><feature var='"+NSPing+"'/></query>")
			return
		}
	}
	if srv.Handler != nil {
		srv.Handler.ServeStanza(ctx, st)
		return
	}
	srv.eng.m.add(&srv.eng.m.dropped, "no-handler")
}

// reply sends an iq result with payload back to the sender of st.
func (srv *Server) reply(ctx context.Context, st *Stanza, payload string) {
	var b bytes.Buffer
	b.WriteString("<iq type='result' from='")
	xml.EscapeText(&b, []byte(st.To.String()))
	b.WriteString("' to='")
	xml.EscapeText(&b, []byte(st.From.String()))
	b.WriteString("' id='")
	xml.EscapeText(&b, []byte(st.ID))
	b.WriteString("'>" + payload + "</iq>")
	r := &Stanza{Name: "iq", From: st.To, To: st.From, Type: "result", ID: st.ID, XML: b.Bytes()}
	// Not cancelled with the stream: the answer is due even if the
	// stream that asked is closing.
	if err := srv.Pool.Send(context.WithoutCancel(ctx), r); err != nil {
		srv.Endpoint.logger().Info("could not answer iq", slog.String(logkey.Remote, st.From.Domainpart()), slog.Any(logkey.Err, err))
	}
}

type child struct {
	Name xml.Name
	node string
}

// firstChild returns the first child element of a stanza.
func firstChild(b []byte) child {
	d := xml.NewDecoder(bytes.NewReader(b))
	depth := 0
	for range 64 {
		tok, err := d.Token()
		if err != nil {
			return child{}
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if depth++; depth == 2 {
				c := child{Name: t.Name}
				for _, a := range t.Attr {
					if a.Name.Local == "node" && a.Name.Space == "" {
						c.node = a.Value
					}
				}
				return c
			}
		case xml.EndElement:
			depth--
		}
	}
	return child{}
}

// Status returns a snapshot of every open stream, inbound and outbound
// (Expressway's federation status page).
func (srv *Server) Status() []Info {
	if srv.init() != nil {
		return nil
	}
	return srv.eng.status()
}

// Counters returns the cumulative counters of the Server and its Pool.
func (srv *Server) Counters() Counters {
	if srv.init() != nil {
		return Counters{}
	}
	return srv.eng.m.snapshot()
}

// Shutdown drains, then stops. First the Pool delivers what is queued
// (setting up streams if needed) and closes its streams with
// <system-shutdown/>; meanwhile the listeners and inbound streams stay up,
// because a peer verifies our dialback keys by connecting back to us, but
// the Pool takes no new stanzas (Send returns ErrPoolClosed). Then
// Shutdown stops accepting and closes every inbound stream with
// <system-shutdown/> (from then on no stanza of theirs reaches Handler),
// and waits for the Handler calls in flight to return (their context is
// cancelled). When ctx ends first, what is left is cut off, the Pool's
// queues bounced, and ctx's error returned at once; a Handler still
// running finishes in the background. A Handler that calls Shutdown must
// give it a ctx that ends (or call it in a goroutine), as Shutdown waits
// for that very Handler.
func (srv *Server) Shutdown(ctx context.Context) error {
	if err := srv.init(); err != nil {
		return err
	}
	err := srv.Pool.Shutdown(ctx)
	srv.closeListeners()
	srv.cancel(nil) // inbound streams: <system-shutdown/>, each bounded by lastWordsTimeout
	select {
	case <-srv.connsDone():
	case <-ctx.Done():
		if err == nil {
			err = ctx.Err()
		}
		srv.abortInbound()
	}
	return err
}

// Close stops at once: listeners are closed, inbound streams cut off
// without a stream error (a peer that does not read cannot hold it up),
// setups abandoned and the Pool closed. It does not wait for Handler calls
// in flight; their context is cancelled.
func (srv *Server) Close() error {
	if err := srv.init(); err != nil {
		return err
	}
	srv.closeListeners()
	srv.cancel(errCloseNow) // streams that start now are cut off too
	srv.abortInbound()      // and those told <system-shutdown/> by Shutdown
	return srv.Pool.Close()
}

// connsDone is closed when every connection goroutine has returned; only
// valid once closed is set (no more are added).
func (srv *Server) connsDone() <-chan struct{} {
	srv.waitOnce.Do(func() {
		srv.waitDone = make(chan struct{})
		go func() {
			srv.conns.Wait()
			close(srv.waitDone)
		}()
	})
	return srv.waitDone
}

// abortInbound cuts off every inbound stream.
func (srv *Server) abortInbound() {
	srv.mu.Lock()
	ss := make([]*Stream, 0, len(srv.inbound))
	for s := range srv.inbound {
		ss = append(ss, s)
	}
	srv.mu.Unlock()
	for _, s := range ss {
		info := s.Info()
		s.abort(&Error{Op: "serve", Local: info.Local, Remote: info.Remote, StreamID: info.ID, Err: ErrServerClosed})
	}
}

func (srv *Server) closeListeners() {
	srv.mu.Lock()
	srv.closed = true
	ls := make([]net.Listener, 0, len(srv.listeners))
	for l := range srv.listeners {
		ls = append(ls, l)
	}
	srv.mu.Unlock()
	for _, l := range ls {
		l.Close()
	}
}
