package xcp

import (
	"cmp"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/internal/logkey"
)

// Component is a component a Router serves.
type Component struct {
	// Name is the component name: what the component puts in its stream
	// header, and a domain routed to it. Required, unique.
	Name string

	// Secret is the handshake secret shared with the component. Required.
	Secret string

	// Domains are further domains routed to the component, e.g. the users'
	// domain for the IM&P link. A domain may be served by several
	// components: they share its load and take over from each other.
	Domains []string

	// DefaultRoute marks the S2S component of an edge: it receives every
	// stanza for a domain that is not local (served by no component and not
	// in Router.LocalDomains), and, unlike plain XEP-0114, it may send
	// stanzas from such foreign domains (never from a local one). Several
	// default-route components share the remote domains between them, each
	// remote domain sticking to one of them while it is up.
	DefaultRoute bool

	// Addr, if set, makes the router open the connection to the component
	// at this "host:port" (jabber:component:connect) and send the
	// handshake, instead of waiting for the component to connect. This is
	// the Expressway shape, where the core dials the edge. The router then
	// keeps redialling with back-off whenever the link is down.
	Addr string
}

// Route is an entry of a Router's routing table.
type Route struct {
	Domain    string // a domain, or "*" for the default route
	Component string // the component name of the link serving it
	Addr      string // the link's peer address
	Dialed    bool   // the router opened the connection (jabber:component:connect)
}

// Router routes stanzas between router links, the XCP router role of an
// Expressway or IM&P node modelled on XEP-0114: every stanza that arrives
// on a link goes out on the link that serves its to domain, or comes back
// to its sender as a stanza error; nothing is dropped silently but errors
// that cannot be answered (RFC 6120 §8.3.1). The conditions (RFC 6120
// §8.3.3): <item-not-found/> for a local domain no component serves,
// <remote-server-not-found/> for a remote domain with no default route,
// <remote-server-timeout/> (type wait) when the components serving the
// domain are configured but their links stayed down past HoldTime or the
// router shuts down (§8.3.3.16: known, but no stream in reasonable time;
// Prosody answers the same for an external component that is away), and
// <resource-constraint/> when the queue holding stanzas for a component
// that is down is full.
//
// A link is checked once, by the handshake (a per-component secret,
// compared in constant time), and then every stanza's from address is
// checked against the domains the component may speak for. A component
// the router dials (Component.Addr) may not connect in: on Expressway the
// DMZ never opens connections inwards. When the router dials, XEP-0114
// makes it compute the handshake over a stream ID the component chose; it
// does so once per connection, after TLS verified the component (when
// configured), only if the component's header names the component
// dialled, and only over a stream ID of at most 128 printable ASCII
// characters, so that it is no general signing oracle for its secrets.
//
// When a component's link goes down, what is queued for it waits HoldTime
// for it to come back; stanzas for its domains go to another component
// serving them if one is up, and are held the same way otherwise. Past
// HoldTime, held stanzas go to another component or are bounced.
//
// Configure the exported fields before calling Start or Serve, and do not
// change them afterwards.
type Router struct {
	// Addr is where ListenAndServe listens (default DefaultAddr, ":7400").
	Addr string

	// Components are the components this router accepts or dials.
	Components []Component

	// LocalDomains are further domains hosted here: never sent to a
	// default route, and never accepted as the from domain of a default
	// route's stanzas. The names and Domains of all Components are local.
	LocalDomains []string

	// TLSConfig secures every link with TLS from the first byte: the
	// certificate and ClientCAs for the links components open (their
	// certificate is then required and verified unless ClientAuth says
	// otherwise), and the client certificate and RootCAs for the links
	// this router opens. Without it, Plaintext must be set.
	TLSConfig *tls.Config

	// Plaintext allows links without TLS. Only on a trusted network.
	Plaintext bool

	// QueueSize and QueueBytes bound the stanzas waiting for each
	// component, in number and in bytes (defaults DefaultQueueSize,
	// DefaultQueueBytes). A full queue makes the links sending to it wait:
	// a slow component slows its senders instead of growing memory.
	QueueSize, QueueBytes int

	// MaxPendingHandshakes bounds the accepted connections that have not
	// completed the handshake (default DefaultMaxPendingHandshakes);
	// further ones are closed at once. Until the handshake succeeds, no
	// element may exceed 1 KiB.
	MaxPendingHandshakes int

	// RequireCertificateName, with TLSConfig, requires the certificate of
	// each component to be valid for its component name as a DNS name (a
	// subjectAltName), checked before the handshake: a component that
	// connects must name itself in its client certificate, and a
	// component the router dials must present a server certificate for
	// its name as well as for the host dialled. Off by default: Expressway
	// certificates name the host, not the component.
	RequireCertificateName bool

	// HoldTime is how long stanzas wait for a component whose link is down
	// (also after the router starts, for components yet to connect), when
	// no other component serves their domain (default DefaultHoldTime;
	// negative: bounce at once).
	HoldTime time.Duration

	// HandshakeTimeout, KeepAlive, IdleTimeout, MinBackoff, MaxBackoff,
	// MaxStanzaSize and MaxDepth are as for Link. IdleTimeout also bounds
	// a write to a component that does not read.
	HandshakeTimeout, KeepAlive, IdleTimeout time.Duration
	MinBackoff, MaxBackoff                   time.Duration
	MaxStanzaSize, MaxDepth                  int

	// DialContext opens connections to components with Addr (default:
	// net.Dialer).
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Logger receives links coming and going and refused connections.
	Logger *slog.Logger

	endpoint // mu also guards started and changed

	initOnce sync.Once
	initErr  error
	hold     time.Duration
	slots    map[string]*slot
	slotList []*slot
	byDomain map[string][]*slot
	defaults []*slot
	local    map[string]bool

	closing atomic.Bool  // Shutdown or Close began: no holding, no new links
	dropped atomic.Int64 // stanzas dropped while closing, for the log

	started bool
	changed chan struct{} // closed and replaced when a link comes or goes
}

type slotState int32

const (
	slotHolding slotState = iota // no link; stanzas wait up to HoldTime
	slotUp                       // link up
	slotDown                     // no link for longer than HoldTime
)

// slot is a configured component and its (at most one) link.
type slot struct {
	cfg     Component
	name    string
	domains []string
	seed    uint64
	q       *queue
	state   atomic.Int32

	mu     sync.Mutex
	cur    *session
	dialed bool
	since  time.Time // when the link went down (or the router started)
}

func (sl *slot) isUp() bool { return slotState(sl.state.Load()) == slotUp }

func (sl *slot) serves(d string) bool { return slices.Contains(sl.domains, d) }

func (r *Router) init() error {
	r.initOnce.Do(func() { r.initErr = r.setup() })
	return r.initErr
}

func (r *Router) setup() error {
	o, err := optionFields{
		TLSConfig: r.TLSConfig, Plaintext: r.Plaintext,
		HandshakeTimeout: r.HandshakeTimeout, KeepAlive: r.KeepAlive, IdleTimeout: r.IdleTimeout,
		MaxStanzaSize: r.MaxStanzaSize, MaxDepth: r.MaxDepth,
		Logger: r.Logger, DialContext: r.DialContext,
		MinBackoff: r.MinBackoff, MaxBackoff: r.MaxBackoff,
		QueueSize: r.QueueSize, QueueBytes: r.QueueBytes, MaxPendingHandshakes: r.MaxPendingHandshakes,
	}.options()
	if err != nil {
		return err
	}
	if r.RequireCertificateName && o.tls == nil {
		return errors.New("xcp: Router.RequireCertificateName needs TLSConfig: there is no certificate to check without TLS")
	}
	r.use(o)
	r.log = o.log
	r.hold = orDefault(r.HoldTime, DefaultHoldTime)
	r.slots = make(map[string]*slot)
	r.byDomain = make(map[string][]*slot)
	r.local = make(map[string]bool)
	for _, c := range r.Components {
		name, ok := normDomain(c.Name)
		if !ok {
			return fmt.Errorf("xcp: component name %q is not a domain", c.Name)
		}
		if r.slots[name] != nil {
			return fmt.Errorf("xcp: component %q configured twice", name)
		}
		if c.Secret == "" {
			return fmt.Errorf("xcp: component %q has no secret", name)
		}
		if len(c.Secret) < 16 {
			r.log.Warn("router link secret is short: use at least 16 random bytes", logkey.Component, name)
		}
		sl := &slot{cfg: c, name: name, domains: []string{name}, seed: hashString(name), q: newQueue(o.queueSize, o.queueBytes), since: time.Now()}
		if r.hold < 0 {
			sl.state.Store(int32(slotDown))
		}
		for _, d := range c.Domains {
			nd, ok := normDomain(d)
			if !ok {
				return fmt.Errorf("xcp: component %q: domain %q is not a domain", name, d)
			}
			if !slices.Contains(sl.domains, nd) {
				sl.domains = append(sl.domains, nd)
			}
		}
		for _, d := range sl.domains {
			r.byDomain[d] = append(r.byDomain[d], sl)
			r.local[d] = true
		}
		if c.DefaultRoute {
			r.defaults = append(r.defaults, sl)
		}
		r.slots[name] = sl
		r.slotList = append(r.slotList, sl)
	}
	for _, d := range r.LocalDomains {
		nd, ok := normDomain(d)
		if !ok {
			return fmt.Errorf("xcp: local domain %q is not a domain", d)
		}
		r.local[nd] = true
	}
	r.ctx, r.cancel = context.WithCancel(context.Background())
	r.changed = make(chan struct{})
	return nil
}

// Start validates the configuration and starts dialling the components
// that have an Addr. It returns at once. Serve calls it.
func (r *Router) Start() error {
	if err := r.init(); err != nil {
		return err
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.closed {
		return ErrClosed
	}
	if r.started {
		return nil
	}
	r.started = true
	now := time.Now()
	for _, sl := range r.slotList {
		sl.mu.Lock()
		sl.since = now // the hold for components yet to connect starts now
		sl.mu.Unlock()
		if sl.cfg.Addr != "" {
			r.wg.Add(1)
			go r.dialLoop(sl)
		}
	}
	if r.hold > 0 {
		r.wg.Add(1)
		go r.janitor()
	}
	return nil
}

// ListenAndServe listens on Addr (default ":7400") and calls Serve.
func (r *Router) ListenAndServe() error {
	if err := r.init(); err != nil {
		return err
	}
	addr := r.Addr
	if addr == "" {
		addr = DefaultAddr
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	return r.Serve(ln)
}

// Serve accepts component connections on ln (jabber:component:accept) until
// the Router is closed, then returns ErrClosed; or it returns the
// listener's error. It may be called for several listeners.
func (r *Router) Serve(ln net.Listener) error {
	if err := r.Start(); err != nil {
		return err
	}
	if err := r.addListener(ln); err != nil {
		return err
	}
	defer r.removeListener(ln)
	return r.acceptLoop(ln, "too many component connections in the handshake: connection closed", r.accept)
}

func (r *Router) accept(nc net.Conn) {
	var (
		sl       *slot
		s        *session
		attached bool
	)
	tlsRefused := func(addr string, err error) {
		r.log.Warn("component refused", logkey.PeerAddr, addr, logkey.Err, &LinkError{Addr: addr, Op: "tls", Err: err})
	}
	c, addr, err := r.handshakeIn(nc, NSAccept, tlsRefused, func(c *conn) error {
		return c.respond(func(name string) (string, error) {
			sl = r.slots[name]
			if sl == nil {
				return "", violation(stream.HostUnknown, "no component %q is configured on this router", name)
			}
			if sl.cfg.Addr != "" {
				return "", violation(stream.PolicyViolation, "component %q is dialled by this router (at %s): it may not connect in", name, sl.cfg.Addr)
			}
			if r.RequireCertificateName {
				if err := checkCertName(c.nc, name); err != nil {
					return "", violation(stream.NotAuthorized, "the TLS certificate does not name component %q: %v", name, err)
				}
			}
			sl.mu.Lock()
			busy := sl.cur != nil
			sl.mu.Unlock()
			if busy {
				return "", violation(stream.Conflict, "component %q is already connected", name)
			}
			return sl.cfg.Secret, nil
		}, func() error {
			s = r.newSession(sl, c)
			if err := r.attach(sl, s, false); err != nil {
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
			r.detach(sl, s, err)
		}
		if err != ErrClosed {
			r.log.Warn("component refused", logkey.Component, c.name, logkey.PeerAddr, addr,
				logkey.Err, &LinkError{Component: c.name, Addr: addr, Op: "handshake", Err: err})
		}
		return
	}
	r.serve(sl, s)
}

func (r *Router) dialLoop(sl *slot) {
	defer r.wg.Done()
	bo := backoff{min: r.o.minBackoff, max: r.o.maxBackoff}
	log := r.log.With(logkey.Component, sl.name, logkey.PeerAddr, sl.cfg.Addr)
	for r.ctx.Err() == nil {
		sl.mu.Lock()
		busy := sl.cur != nil
		sl.mu.Unlock()
		if busy { // the component connected to us meanwhile
			if !sleep(r.ctx.Done(), bo.next()) {
				return
			}
			continue
		}
		c, err := r.dial(sl)
		if err != nil {
			if r.ctx.Err() != nil {
				return
			}
			wait := bo.next()
			if permanent(err) {
				wait = max(wait, r.o.maxBackoff)
				log.Error("component refused the router", logkey.Err, err, logkey.Wait, wait)
			} else {
				log.Warn("cannot reach component", logkey.Err, err, logkey.Wait, wait)
			}
			if !sleep(r.ctx.Done(), wait) {
				return
			}
			continue
		}
		s := r.newSession(sl, c)
		if err := r.attach(sl, s, true); err != nil { // closing, or it dialled us meanwhile
			_ = c.fail(err)
			_ = c.nc.Close()
			if !sleep(r.ctx.Done(), bo.next()) {
				return
			}
			continue
		}
		up := time.Now()
		r.serve(sl, s)
		if time.Since(up) > r.o.maxBackoff {
			bo.reset()
		}
		if !sleep(r.ctx.Done(), bo.next()) {
			return
		}
	}
}

func (r *Router) dial(sl *slot) (*conn, error) {
	var check func(net.Conn) error
	if r.RequireCertificateName {
		check = func(nc net.Conn) error { return checkCertName(nc, sl.name) }
	}
	return r.dialLink(NSConnect, sl.name, sl.cfg.Secret, sl.cfg.Addr, check)
}

func (r *Router) newSession(sl *slot, c *conn) *session {
	s := newSession(context.Background(), c, sl.q, nil, nil)
	s.handle = func(st Stanza) error {
		if err := r.checkFrom(sl, st); err != nil {
			return err
		}
		r.route(st, sl, s.winding)
		return nil
	}
	return s
}

// attach makes s the link of sl, or says why not.
func (r *Router) attach(sl *slot, s *session, dialed bool) error {
	sl.mu.Lock()
	switch {
	case r.ctx.Err() != nil:
		sl.mu.Unlock()
		return violation(stream.SystemShutdown, "router shutting down")
	case sl.cur != nil:
		sl.mu.Unlock()
		return violation(stream.Conflict, "component %q is already connected", sl.name)
	}
	sl.cur, sl.dialed = s, dialed
	sl.state.Store(int32(slotUp))
	sl.mu.Unlock()
	r.notify()
	return nil
}

// serve runs an attached link until it ends.
func (r *Router) serve(sl *slot, s *session) {
	log := r.log.With(logkey.Component, sl.name, logkey.PeerAddr, s.addr, logkey.StreamID, s.id)
	log.Info("component connected", logkey.State, "DISCONNECTED->CONNECTED", logkey.Queued, sl.q.len())
	err := s.run()
	r.detach(sl, s, err)
	if err != nil {
		log.Warn("component disconnected", logkey.State, "CONNECTED->DISCONNECTED", logkey.Err, err, logkey.Queued, sl.q.len())
	} else {
		log.Info("component disconnected", logkey.State, "CONNECTED->DISCONNECTED")
	}
}

// detach ends s's hold on sl: stanzas for sl wait HoldTime for it.
func (r *Router) detach(sl *slot, s *session, _ error) {
	sl.mu.Lock()
	if sl.cur != s {
		sl.mu.Unlock()
		return
	}
	sl.cur = nil
	sl.since = time.Now()
	sl.state.Store(int32(slotHolding))
	if r.hold < 0 {
		sl.state.Store(int32(slotDown))
	}
	sl.mu.Unlock()
	sl.q.kick() // senders waiting for room re-route
	r.notify()
	if r.hold < 0 {
		r.reroute(sl)
	}
}

// notify wakes Ready callers: the routing table changed.
func (r *Router) notify() {
	r.mu.Lock()
	close(r.changed)
	r.changed = make(chan struct{})
	r.mu.Unlock()
}

// Ready waits until the link of the named component is up, and returns
// nil; or ctx's error, or ErrClosed.
func (r *Router) Ready(ctx context.Context, component string) error {
	if err := r.init(); err != nil {
		return err
	}
	name, _ := normDomain(component)
	sl := r.slots[name]
	if sl == nil {
		return fmt.Errorf("xcp: no component %q is configured on this router", component)
	}
	for {
		r.mu.Lock()
		ch, closed := r.changed, r.closed
		r.mu.Unlock()
		switch {
		case closed:
			return ErrClosed
		case sl.isUp():
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// checkFrom applies the from rule: a component speaks for its own domains;
// a default route also for every domain that is not local.
func (r *Router) checkFrom(sl *slot, st Stanza) error {
	if st.to == "" || st.from == "" {
		return violation(stream.ImproperAddressing, "<%s/> without to or from", st.Name())
	}
	d, ok := domainOf(st.from)
	if !ok {
		return violation(stream.ImproperAddressing, "from %q is not an XMPP address", truncString(st.from))
	}
	if sl.serves(d) || (sl.cfg.DefaultRoute && !r.local[d]) {
		return nil
	}
	if sl.cfg.DefaultRoute {
		return violation(stream.InvalidFrom, "component %q may not send from %q: the domain is local to this router", sl.name, truncString(st.from))
	}
	return violation(stream.InvalidFrom, "component %q may not send from %q", sl.name, truncString(st.from))
}

// route delivers st to the component serving its to domain, waiting for
// room in its queue, or bounces it. abort ends the wait.
func (r *Router) route(st Stanza, src *slot, abort <-chan struct{}) {
	var exclude []*slot
	full := false // a component that is down had no room left
	for range 4 {
		dst, cond := r.pick(st, src, exclude)
		if dst == nil {
			if full {
				cond = stanza.ResourceConstraint
			}
			r.bounce(st, cond, abort)
			return
		}
		err := r.push(dst, st, abort)
		switch err {
		case nil:
			return
		case errFull:
			if !dst.isUp() {
				exclude = append(exclude, dst)
				full = true
			}
		case errGone:
			exclude = append(exclude, dst)
		default:
			// The source's stream has ended, and its reader must not wait
			// (its writer, or the closing router, waits for it). The
			// stanza was read: deliver it past the queue's bounds (by what
			// the reader had buffered when the stream ended), or bounce it.
			if dst.isUp() && dst.q.forcePush(item{st: st}) == nil {
				return
			}
			if r.closing.Load() {
				if !r.bounceNow(st, stanza.RemoteServerTimeout) {
					r.dropped.Add(1)
				}
				return
			}
			r.log.Debug("stanza dropped with its link", logkey.Component, dst.name, logkey.Err, err)
			return
		}
	}
	r.bounce(st, stanza.ResourceConstraint, abort)
}

func (r *Router) push(sl *slot, st Stanza, abort <-chan struct{}) error {
	it := item{st: st}
	switch slotState(sl.state.Load()) {
	case slotUp:
		err := sl.q.push(context.Background(), it, sl.isUp, abort)
		if err == nil && slotState(sl.state.Load()) == slotDown {
			r.reroute(sl) // the link went down and its hold ended meanwhile
		}
		return err
	case slotHolding:
		// Under the slot's lock, so that the janitor (or Shutdown) does not
		// empty the queue between our check and our push.
		sl.mu.Lock()
		defer sl.mu.Unlock()
		if slotState(sl.state.Load()) != slotHolding {
			return errGone
		}
		return sl.q.tryPush(it)
	}
	return errGone
}

// errGone: the component's link is down and no longer held for.
var errGone = errors.New("xcp: component down")

// pick chooses the component for st: among those serving its to domain
// (or, for a domain that is not local, the default routes), one whose
// link is up, else one waiting for its link to come back. Several
// candidates are chosen between by rendezvous hashing of the address (the
// remote domain for default routes, so a remote domain sticks to one
// edge), so that losing one moves only its share.
func (r *Router) pick(st Stanza, src *slot, exclude []*slot) (*slot, stanza.Condition) {
	d, ok := domainOf(st.to)
	if !ok {
		return nil, stanza.JIDMalformed
	}
	cands, key := r.byDomain[d], bareOf(st.to)
	if len(cands) == 0 {
		if r.local[d] {
			return nil, stanza.ItemNotFound
		}
		if src != nil && src.cfg.DefaultRoute {
			// From one remote domain to another: not ours to relay.
			return nil, stanza.RemoteServerNotFound
		}
		cands, key = r.defaults, d
	}
	wants := [...]slotState{slotUp, slotHolding}
	if r.closing.Load() {
		wants[1] = slotUp // nothing is held once the router closes
	}
	for _, want := range wants {
		if sl := choose(cands, key, exclude, want); sl != nil {
			return sl, ""
		}
	}
	if len(cands) > 0 {
		// Configured, but down past HoldTime (or the router is closing).
		return nil, stanza.RemoteServerTimeout
	}
	if r.local[d] {
		return nil, stanza.ItemNotFound
	}
	return nil, stanza.RemoteServerNotFound
}

func choose(cands []*slot, key string, exclude []*slot, want slotState) *slot {
	var best *slot
	var bestW uint64
	var h uint64
	if len(cands) > 1 {
		h = hashString(key)
	}
	for _, sl := range cands {
		if slotState(sl.state.Load()) != want || slices.Contains(exclude, sl) {
			continue
		}
		if w := mix(h ^ sl.seed); best == nil || w > bestW {
			best, bestW = sl, w
		}
	}
	return best
}

// hashString is FNV-1a over the ASCII-lower-cased bytes of s.
func hashString(s string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// mix is the SplitMix64 finaliser.
func mix(x uint64) uint64 {
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	return x ^ x>>31
}

// bounce answers st with a stanza error, routed back to its sender.
func (r *Router) bounce(st Stanza, cond stanza.Condition, abort <-chan struct{}) {
	reply, ok := bounce(st, cond, "")
	if !ok {
		if r.closing.Load() {
			r.dropped.Add(1) // counted in the closing log line
		}
		r.log.Debug("undeliverable stanza cannot be answered: dropped", logkey.Condition, string(cond), logkey.Remote, st.to)
		return
	}
	r.log.Debug("stanza bounced", logkey.Condition, string(cond), logkey.Remote, st.to)
	r.route(reply, nil, abort)
}

// bounceNow answers st with a stanza error without waiting for room: the
// reply goes into its destination's queue even when that is full. For a
// closing Router, which must answer what it will not deliver before it
// closes the links, and must not wait on a component to do so. It returns
// false if the reply had nowhere to go.
func (r *Router) bounceNow(st Stanza, cond stanza.Condition) bool {
	reply, ok := bounce(st, cond, "router shutting down")
	if !ok {
		return false // an error or result: lost
	}
	dst, _ := r.pick(reply, nil, nil)
	if dst == nil || !dst.isUp() {
		return false
	}
	return dst.q.forcePush(item{st: reply}) == nil
}

// reroute empties the queue of a component whose link stayed down past
// HoldTime: to another component serving the domain, or back to the
// sender as an error.
func (r *Router) reroute(sl *slot) {
	var buf []item
	// Stop if the link came back: what is queued is its own again.
	for slotState(sl.state.Load()) == slotDown {
		buf = sl.q.popAll(buf[:0], maxBatch)
		if len(buf) == 0 {
			return
		}
		for _, it := range buf {
			r.route(it.st, nil, r.ctx.Done())
		}
		clear(buf)
	}
}

// janitor ends the hold of components whose link stayed down too long.
func (r *Router) janitor() {
	r.tick(r.hold, func(now time.Time) {
		for _, sl := range r.slotList {
			sl.mu.Lock()
			expired := slotState(sl.state.Load()) == slotHolding && now.Sub(sl.since) >= r.hold
			if expired {
				sl.state.Store(int32(slotDown))
			}
			sl.mu.Unlock()
			if expired {
				if n := sl.q.len(); n > 0 {
					r.log.Warn("component still down: its stanzas are rerouted or bounced", logkey.Component, sl.name, logkey.Queued, n)
				}
				r.reroute(sl)
			}
		}
	})
}

// Routes returns a snapshot of the routing table: one entry per domain of
// every component whose link is up, "*" for default routes, sorted.
func (r *Router) Routes() []Route {
	if r.init() != nil {
		return nil
	}
	var out []Route
	for _, sl := range r.slotList {
		sl.mu.Lock()
		s, dialed := sl.cur, sl.dialed
		sl.mu.Unlock()
		if s == nil {
			continue
		}
		for _, d := range sl.domains {
			out = append(out, Route{Domain: d, Component: sl.name, Addr: s.addr, Dialed: dialed})
		}
		if sl.cfg.DefaultRoute {
			out = append(out, Route{Domain: "*", Component: sl.name, Addr: s.addr, Dialed: dialed})
		}
	}
	slices.SortFunc(out, func(a, b Route) int {
		return cmp.Or(cmp.Compare(a.Domain, b.Domain), cmp.Compare(a.Component, b.Component))
	})
	return out
}

// Shutdown stops the Router gracefully. It stops accepting and dialling,
// bounces the stanzas held for components that are down (none will come
// back now), and waits until what is queued for the components that are
// up has been written to them. If ctx ends first, it cuts the links of
// the components that did not take their stanzas in time and bounces what
// is left for them (what was handed to the operating system is not: it may
// have arrived). Then it closes every link gracefully: what a link's queue
// holds, bounces included, is written before its </stream:stream>, and
// stanzas the component still sends until it closes its side are routed.
// After ctx has ended, the links get at most a second more for this, and
// Shutdown returns ctx's error. Stanzas that a component sends while the
// links close and that find no link open to carry them or their bounce
// are dropped, with a log line that counts them: XEP-0114 has no way to
// ask a component to stop sending but closing its stream.
func (r *Router) Shutdown(ctx context.Context) error {
	if !r.beginClose() {
		return nil
	}
	// Nothing comes back now: what is held for a component that is down
	// goes back to its sender, and nothing more is held for it.
	for _, sl := range r.slotList {
		sl.mu.Lock()
		held := slotState(sl.state.Load()) != slotUp
		if held {
			sl.state.Store(int32(slotDown))
		}
		sl.mu.Unlock()
		if held {
			r.bounceAll(sl)
		}
	}
	err := r.waitDrained(ctx)
	if err != nil {
		r.cutUndrained()
	}
	for _, sl := range r.slotList {
		r.bounceAll(sl)
	}
	for _, s := range r.sessions() {
		s.stopAfterQueue()
	}
	done := make(chan struct{})
	go func() {
		r.wg.Wait()
		close(done)
	}()
	if err == nil {
		select {
		case <-done:
		case <-ctx.Done():
			err = ctx.Err()
		}
	}
	if err != nil {
		t := time.NewTimer(shutdownGrace)
		select {
		case <-done:
		case <-t.C:
			r.forceClose()
			<-done
		}
		t.Stop()
	}
	r.finishClose()
	return err
}

// waitDrained waits until nothing is queued for the components that are
// up, or ctx is done. Components may still be sending: it is done when
// every queue has been seen empty in one pass.
func (r *Router) waitDrained(ctx context.Context) error {
	for {
		busy := false
		for _, sl := range r.slotList {
			if !sl.isUp() || sl.q.len() == 0 {
				continue
			}
			busy = true
			if err := sl.q.waitEmpty(ctx); err != nil {
				return err
			}
		}
		if !busy {
			return nil
		}
	}
}

// cutUndrained closes the links whose queue did not drain in time (a
// component that does not read), so that what their writer holds comes
// back to the queue, to be bounced while the senders' links are still up.
// Their writer has stopped when it returns, or shutdownGrace has passed.
func (r *Router) cutUndrained() {
	var cut []*session
	for _, sl := range r.slotList {
		sl.mu.Lock()
		s := sl.cur
		sl.mu.Unlock()
		if s != nil && sl.q.len() > 0 {
			s.cut()
			cut = append(cut, s)
		}
	}
	t := time.NewTimer(shutdownGrace)
	defer t.Stop()
	for _, s := range cut {
		select {
		case <-s.dying:
		case <-t.C:
			return
		}
	}
}

// bounceAll takes what is queued for sl (not what its writer holds) and
// bounces it, counting what cannot be.
func (r *Router) bounceAll(sl *slot) {
	var buf []item
	for {
		buf = sl.q.popAll(buf[:0], maxBatch)
		if len(buf) == 0 {
			return
		}
		for _, it := range buf {
			if !r.bounceNow(it.st, stanza.RemoteServerTimeout) {
				r.dropped.Add(1)
			}
		}
		clear(buf)
	}
}

// Close closes every link and listener at once. Stanzas still queued are
// dropped, with a log line that counts them; Shutdown bounces them.
func (r *Router) Close() error {
	if !r.beginClose() {
		return nil
	}
	r.forceClose()
	r.wg.Wait()
	r.finishClose()
	return nil
}

func (r *Router) beginClose() bool {
	r.initOnce.Do(func() { r.initErr = ErrClosed })
	r.mu.Lock()
	if r.closed || r.initErr != nil {
		r.closed = true
		r.mu.Unlock()
		return false
	}
	r.closed = true
	lns := r.listenerList()
	r.mu.Unlock()
	r.closing.Store(true)
	r.cancel()
	r.notify()
	for _, ln := range lns {
		_ = ln.Close()
	}
	return true
}

// sessions returns the links that are up.
func (r *Router) sessions() []*session {
	var out []*session
	for _, sl := range r.slotList {
		sl.mu.Lock()
		if sl.cur != nil {
			out = append(out, sl.cur)
		}
		sl.mu.Unlock()
	}
	return out
}

func (r *Router) forceClose() {
	for _, s := range r.sessions() {
		s.cut()
	}
}

// finishClose drops, counting them in one log line, the stanzas no link
// is left to carry or to bounce: still queued (after Close, or sent by
// components while the links closed), or unanswerable (errors, results).
func (r *Router) finishClose() {
	n := int(r.dropped.Load())
	for _, sl := range r.slotList {
		n += len(sl.q.close())
	}
	if n > 0 {
		r.log.Warn("router closed: undelivered stanzas dropped", logkey.Count, n)
	}
}
