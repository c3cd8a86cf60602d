package s2s

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"log/slog"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"time"

	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/internal/logkey"
	"github.com/xmppfed/xmppfed/internal/wire"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// ServeConn runs an inbound stream on conn until it ends (the receiving and
// authoritative roles). It answers the stream header with a fresh stream
// ID, offers the features the security mode allows (STARTTLS, SASL
// EXTERNAL for a peer whose certificate is valid for its domain, dialback),
// verifies each db:result with the authoritative server of its sender domain
// over a separate outbound stream, answers db:verify requests with the
// shared secret, and hands each stanza of an authorized domain pair to h.
//
// An inbound stream that has not authorized any pair within
// NegotiationTimeout is closed with <connection-timeout/>. When ctx is
// cancelled the stream is closed with <system-shutdown/>. ServeConn closes
// conn and returns nil when the peer closed the stream cleanly, or the
// *Error that ended it.
func (e *Endpoint) ServeConn(ctx context.Context, conn net.Conn, h Handler) error {
	return e.serveConn(ctx, conn, h, nil, nil)
}

// serveConn is ServeConn for a Server: eng registers the stream, and
// started (if set) is called with the stream before it reads anything.
func (e *Endpoint) serveConn(ctx context.Context, conn net.Conn, h Handler, eng *engine, started func(*Stream)) error {
	if err := e.check("serve"); err != nil {
		conn.Close()
		return err
	}
	s := newStream(e, conn, Inbound, eng)
	if started != nil {
		started(s)
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	defer func() {
		cancel()
		wg.Wait()
	}()
	shutdownDone := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		defer close(shutdownDone)
		if cause := context.Cause(ctx); errors.Is(cause, errCloseNow) {
			// Server.Close: no last words for a peer that may not read.
			info := s.Info()
			s.abort(&Error{Op: "serve", Local: info.Local, Remote: info.Remote, StreamID: info.ID, Err: ErrServerClosed})
			return
		}
		s.fail("serve", stream.SystemShutdown, "", context.Cause(ctx))
	})
	defer func() {
		if !stop() {
			<-shutdownDone // it ran: let it finish (it logs) before returning
		}
	}()
	in := &inbound{Stream: s, ctx: ctx, h: h, wg: &wg, pendingVerify: make(map[Pair]bool),
		deadline: time.Now().Add(e.negotiationTimeout())}
	conn.SetReadDeadline(in.deadline)
	err := in.run()
	<-s.done
	if s.doneErr != nil {
		err = s.doneErr // the first cause, not a later read on a closed connection
	}
	if ctx.Err() != nil && (errors.Is(err, stream.SystemShutdown) || errors.Is(err, ErrServerClosed)) {
		return nil
	}
	return err
}

// Bounds on what one inbound stream may ask of us.
const (
	maxPendingVerify = 8 // concurrent dialback verifications per stream
	maxSASLFailures  = 3 // RFC 6120 §6.4.5 lets a server limit retries
)

// inbound holds the state of one inbound stream's read loop.
type inbound struct {
	*Stream
	ctx           context.Context
	h             Handler
	wg            *sync.WaitGroup
	deadline      time.Time // end of the unauthenticated lifetime
	headerSent    bool
	peerFrom      string // header 'from' (normalised), may be empty
	pendingVerify map[Pair]bool
	v1            bool
	// afterRestart, if set, runs once the restarted stream's response
	// header has been written: it authorizes the pair SASL authenticated.
	afterRestart func() error

	// gen counts stream restarts (STARTTLS, SASL). A dialback verdict is
	// applied only to the generation it was asked in: whatever was learnt
	// before a restart is forgotten (RFC 6120 §5.4.3.3, §6.4.6). Guarded by
	// mu; changed with wmu also held.
	gen uint64
}

func (in *inbound) run() error {
	for range 4 { // initial stream, after TLS, after SASL
		restart, err := in.stream()
		if err != nil || !restart {
			return err
		}
	}
	return in.fail("serve", stream.PolicyViolation, "too many stream restarts", nil)
}

// failHeader sends a stream error before or instead of a normal response
// header (RFC 6120 §4.9.1.1: the header must be sent first).
func (in *inbound) failHeader(cond stream.Error, text string, cause error) error {
	if !in.headerSent {
		in.headerSent = true
		in.writeString(header(in.ep.defaultDomain(), in.peerFrom, newStreamID(), in.v1))
	}
	return in.fail("serve", cond, text, cause)
}

// stream handles one stream header and the elements after it. It returns
// restart=true when the stream restarts (after TLS or SASL).
func (in *inbound) stream() (restart bool, err error) {
	in.headerSent = false
	in.peerFrom = ""
	in.v1 = true
	h, err := in.r.Header()
	if err != nil {
		var we *wire.Error
		if errors.As(err, &we) {
			return false, in.failHeader(we.Condition, we.Reason, err)
		}
		return false, in.readFailure("serve", err)
	}
	e := in.ep
	v := wire.Attr(h, "", "version")
	major := 0
	if v != "" {
		major = versionMajor(v)
	}
	in.v1 = major >= 1
	if from := wire.Attr(h, "", "from"); from != "" {
		f, ferr := srv.NormalizeDomain(from)
		if ferr != nil {
			return false, in.failHeader(stream.InvalidFrom, "stream header from is not a domain", ferr)
		}
		in.peerFrom = f
	}
	if ns := wire.Attr(h, "", "xmlns"); ns != NSServer {
		return false, in.failHeader(stream.InvalidNamespace, "content namespace is not jabber:server", nil)
	}
	if major < 0 {
		return false, in.failHeader(stream.UnsupportedVersion, "malformed version "+v, nil)
	}
	to := wire.Attr(h, "", "to")
	if !e.Serves(to) {
		return false, in.failHeader(stream.HostUnknown, "this server does not serve "+to, nil)
	}
	to = norm(to)
	id := newStreamID()
	in.setIDs(to, in.peerFrom, id)
	in.headerSent = true
	cs, isTLS := in.tlsState()
	if err := in.writeString(header(to, in.peerFrom, id, in.v1)); err != nil {
		return false, in.readFailure("serve", err)
	}
	if f := in.afterRestart; f != nil {
		in.afterRestart = nil
		if err := f(); err != nil {
			return false, err
		}
	}
	in.lg().Info("inbound stream opened", slog.Bool("tls", isTLS), slog.String("version", v))
	mode := e.security(in.peerFrom)
	if !in.v1 && mode == tlsmode.Required && !isTLS {
		return false, in.fail("serve", stream.UnsupportedVersion, "TLS is required and a stream without version 1.0 cannot negotiate it", nil)
	}
	var certErr error = errNoClaim
	if isTLS {
		if in.peerFrom != "" {
			certErr = e.verifyPeer(cs, in.peerFrom)
		}
		in.setTLS(cs, certErr)
	}
	if in.v1 {
		var f strings.Builder
		f.WriteString("<stream:features>")
		if !isTLS && mode != tlsmode.NoTLS && e.hasCertificate(to) {
			if mode == tlsmode.Required {
				f.WriteString("<starttls xmlns='" + nsTLS + "'><required/></starttls>")
			} else {
				f.WriteString("<starttls xmlns='" + nsTLS + "'/>")
			}
		}
		if isTLS && in.Info().Auth != AuthExternal {
			if certErr == nil {
				f.WriteString("<mechanisms xmlns='" + NSSASL + "'><mechanism>EXTERNAL</mechanism></mechanisms>")
			} else {
				in.lg().Info("peer certificate not valid; SASL EXTERNAL not offered", slog.Any(logkey.Err, certErr))
			}
		}
		if e.Bidi && (isTLS || e.bidiWithoutTLS(mode, to)) && !in.started() && in.Info().Auth == AuthNone {
			f.WriteString("<bidi xmlns='" + NSBidi + "'/>")
		}
		f.WriteString("<dialback xmlns='" + dialback.NSFeature + "'><errors/></dialback></stream:features>")
		if err := in.writeString(f.String()); err != nil {
			return false, in.readFailure("serve", err)
		}
	}
	saslFailures := 0
	for {
		start, err := in.r.Next()
		if err != nil {
			return false, in.readFailure("serve", err)
		}
		if err := in.failing(); err != nil {
			return false, err
		}
		switch {
		case isStanzaName(start.Name.Local) && start.Name.Space == NSServer:
			if err := in.stanza(start); err != nil {
				return false, err
			}
		case isStanzaName(start.Name.Local) && start.Name.Space != wire.NSStream:
			return false, in.fail("serve", stream.InvalidNamespace, "stanza in namespace "+strconv.Quote(start.Name.Space)+" on a jabber:server stream", nil)
		case start.Name.Space == dialback.NS:
			el, err := dialback.Decode(in.r.Decoder(), start)
			if err != nil {
				in.failMalformed(err)
				return false, in.doneErr
			}
			in.dialback(el)
		case start.Name.Space == nsTLS && start.Name.Local == "starttls":
			return in.starttls()
		case start.Name.Space == nsBidiReq && start.Name.Local == "bidi":
			if err := in.bidiRequest(mode, isTLS); err != nil {
				return false, err
			}
		case start.Name.Space == NSSASL && start.Name.Local == "auth":
			restart, err := in.sasl(start)
			if err != nil || restart {
				return restart, err
			}
			if saslFailures++; saslFailures >= maxSASLFailures {
				return false, in.fail("sasl", stream.PolicyViolation, "too many failed SASL attempts", nil)
			}
		case isStreamError(start):
			return false, in.peerStreamError("serve", start)
		default:
			return false, in.fail("serve", stream.UnsupportedStanzaType, "unexpected <"+start.Name.Local+"/>", nil)
		}
	}
}

// errNoClaim: the peer's stream header names no domain, so its certificate
// proves nothing.
var errNoClaim = errors.New("the stream header has no from domain to check the certificate against")

// starttls answers <starttls/> and, when allowed, upgrades the transport.
func (in *inbound) starttls() (bool, error) {
	e := in.ep
	if err := in.r.Skip(); err != nil {
		return false, in.readFailure("starttls", err)
	}
	if _, isTLS := in.tlsState(); isTLS {
		return false, in.fail("starttls", stream.PolicyViolation, "TLS is already established", nil)
	}
	if in.started() {
		// RFC 6120 §5.3.1: TLS comes before authentication.
		return false, in.fail("starttls", stream.PolicyViolation, "STARTTLS after dialback has started", nil)
	}
	local := in.Info().Local
	if mode := e.security(in.peerFrom); mode == tlsmode.NoTLS || !e.hasCertificate(local) {
		in.lg().Info("refusing STARTTLS", slog.String(logkey.Security, mode.String()), slog.Bool("certificate", e.hasCertificate(local)))
		in.markClosing()
		var failure bytes.Buffer
		tlsmode.WriteFailure(&failure)
		in.write(failure.Bytes())
		in.end(&Error{Op: "starttls", Local: local, Remote: in.peerFrom, Err: errors.New("STARTTLS refused: security mode is No TLS or no certificate is configured")})
		return false, in.doneErr
	}
	if in.r.Buffered() != 0 {
		return false, in.fail("starttls", stream.PolicyViolation, "data after <starttls/> before <proceed/>", nil)
	}
	// Hold the write lock across <proceed/>, the handshake and the swap so
	// that nothing else is written in the middle of the TLS handshake.
	in.wmu.Lock()
	if !in.restart() {
		in.wmu.Unlock()
		return false, in.fail("starttls", stream.PolicyViolation, "STARTTLS after dialback has started", nil)
	}
	if err := in.writeLocked([]byte("<proceed xmlns='" + nsTLS + "'/>")); err != nil {
		in.wmu.Unlock()
		return false, in.readFailure("starttls", err)
	}
	raw := in.transport()
	raw.SetDeadline(in.deadline) // a silent peer cannot hold the handshake open
	tc := tls.Server(raw, tlsmode.ServerConfig(e.TLS))
	if err := tc.HandshakeContext(in.ctx); err != nil {
		in.wmu.Unlock()
		in.lg().Info("TLS handshake failed", slog.Any(logkey.Err, err))
		in.end(&Error{Op: "starttls", Local: local, Remote: in.peerFrom, Err: err})
		return false, in.doneErr
	}
	raw.SetWriteDeadline(time.Time{})
	in.setTransport(tc)
	in.wmu.Unlock()
	cs := tc.ConnectionState()
	in.setTLS(cs, nil)
	in.lg().Info("TLS established", slog.String("tls", tls.VersionName(cs.Version)))
	return true, nil
}

// sasl handles <auth/>: only EXTERNAL, over TLS, with a certificate valid
// for the domain in the stream header (XEP-0178). A refusal writes
// <failure/> and returns (false, nil): the peer may retry or use dialback.
func (in *inbound) sasl(start xml.StartElement) (bool, error) {
	var auth struct {
		Mechanism string `xml:"mechanism,attr"`
		Data      string `xml:",chardata"`
	}
	if err := in.r.Decoder().DecodeElement(&auth, &start); err != nil {
		return false, in.readFailure("sasl", err)
	}
	failure := func(cond, why string) (bool, error) {
		in.lg().Info("SASL EXTERNAL refused", slog.String("reason", why))
		if err := in.writeString("<failure xmlns='" + NSSASL + "'><" + cond + "/></failure>"); err != nil {
			return false, in.readFailure("sasl", err)
		}
		return false, nil
	}
	cs, isTLS := in.tlsState()
	if auth.Mechanism != "EXTERNAL" || !isTLS {
		return failure("invalid-mechanism", "mechanism "+strconv.Quote(auth.Mechanism)+" not offered")
	}
	if in.Info().Auth == AuthExternal {
		return failure("invalid-mechanism", "already authenticated")
	}
	if in.hasValidPairs() {
		// SASL restarts the stream, which would discard what dialback
		// established (RFC 6120 §6.4.6): one or the other. (A pending
		// verification gets temporary-auth-failure below.)
		return failure("invalid-mechanism", "dialback has already authorized a pair on this stream")
	}
	authzid := in.peerFrom
	if data := strings.TrimSpace(auth.Data); data != "" && data != "=" {
		raw, err := base64.StdEncoding.DecodeString(data)
		if err != nil {
			return failure("incorrect-encoding", "authzid is not base64")
		}
		authzid = norm(string(raw))
	}
	switch {
	case in.peerFrom == "":
		return failure("not-authorized", "stream header has no from")
	case authzid != in.peerFrom:
		return failure("invalid-authzid", "authzid "+authzid+" is not the stream's from "+in.peerFrom)
	}
	if err := in.ep.verifyPeer(cs, in.peerFrom); err != nil {
		return failure("not-authorized", err.Error())
	}
	local := in.Info().Local
	if err := in.ep.policy(local, in.peerFrom); err != nil {
		return failure("not-authorized", err.Error())
	}
	p := Pair{Local: local, Remote: in.peerFrom}
	in.wmu.Lock()
	if !in.restart() {
		in.wmu.Unlock()
		// A dialback verdict due on this stream would land in the middle
		// of the restart.
		return failure("temporary-auth-failure", "dialback verification in progress")
	}
	in.mu.Lock()
	admitted := in.eng.admitInbound(in.Stream, p) // counted from here, even before the restart
	in.mu.Unlock()
	if !admitted {
		in.wmu.Unlock()
		return failure("temporary-auth-failure", "too many streams from "+p.Remote+" to "+p.Local)
	}
	err := in.writeLocked([]byte("<success xmlns='" + NSSASL + "'/>"))
	in.wmu.Unlock()
	if err != nil {
		return false, in.readFailure("sasl", err)
	}
	// The pair becomes usable once our restarted header is out: nothing
	// may come between <success/> and it (s2s-stream.md §3.3), neither a
	// keepalive nor a stanza of ours on a bidi stream.
	in.afterRestart = func() error {
		in.mu.Lock()
		if in.info.State == Closed || in.cause != nil {
			in.mu.Unlock()
			return nil // ending anyway
		}
		if perr := in.ep.policy(p.Local, p.Remote); perr != nil {
			in.mu.Unlock()
			return in.fail("sasl", stream.PolicyViolation, perr.Error(), perr)
		}
		wasPending := in.markValidLocked(p, AuthExternal)
		in.mu.Unlock()
		in.afterAuthorize(p, AuthExternal, wasPending)
		return nil
	}
	in.resetReader()
	return true, nil
}

// started reports whether dialback has begun on this stream.
func (in *inbound) started() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.valid)+len(in.pendingVerify) > 0
}

// restart begins a new stream generation, unless a dialback verification
// is still pending (its verdict belongs to the old one). The caller holds
// wmu, so no verdict is being written meanwhile.
func (in *inbound) restart() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	if len(in.pendingVerify) > 0 {
		return false
	}
	in.gen++
	return true
}

// stanza delivers one stanza or refuses the stream (RFC 6120 §8.1, the
// project's spec s2s-stream.md §8).
func (in *inbound) stanza(start xml.StartElement) error {
	return in.receiveStanza(in.ctx, start, in.h)
}

// receiveStanza checks a stanza's addresses against the pairs authorized
// on the stream (from the peer's domain to ours), reads it and hands it to
// h. A violation fails the stream with its stream error.
func (s *Stream) receiveStanza(ctx context.Context, start xml.StartElement, h Handler) error {
	s.mu.Lock()
	nvalid := len(s.valid)
	s.mu.Unlock()
	if nvalid == 0 {
		return s.fail("serve", stream.NotAuthorized, "stanza before authentication", nil)
	}
	st, err := stanzaHeader(start)
	if err != nil {
		var we *wire.Error
		errors.As(err, &we)
		return s.fail("serve", we.Condition, we.Reason, err)
	}
	from, to := norm(st.From.Domainpart()), norm(st.To.Domainpart())
	if !s.Authorized(to, from) {
		if !s.ep.Serves(to) || s.senderValidated(from) {
			// s2s-stream.md §8: the sender is known but this target is not
			// part of a validated pair (or not served at all).
			return s.fail("serve", stream.HostUnknown, "stanza to "+to+", not a domain validated for "+from+" on this stream", nil)
		}
		return s.fail("serve", stream.InvalidFrom, "stanza from "+from+", a domain not validated on this stream", nil)
	}
	if st.XML, err = s.r.Element(start); err != nil {
		return s.readFailure("serve", err)
	}
	if err := s.failing(); err != nil {
		return err
	}
	s.ctr.stanzasIn.Add(1)
	if s.eng != nil {
		s.eng.m.stanzasIn.Add(1)
	}
	if h != nil {
		h.ServeStanza(ctx, st)
	}
	return nil
}

// failing returns why the stream is being failed (a policy change, a
// shutdown) or has ended, or nil. The read loops stop then: nothing more
// reaches a Handler, not even what the peer sent before our stream error,
// as its authorization is withdrawn. A graceful close (closing, no cause)
// is not failing: what the peer sent before it saw our closing tag was
// sent while authorized and is delivered.
func (s *Stream) failing() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch {
	case s.cause != nil:
		return s.cause
	case s.info.State == Closed:
		return ErrStreamClosed
	}
	return nil
}

// senderValidated reports whether remote is authorized for some local
// domain on this stream.
func (s *Stream) senderValidated(remote string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for p := range s.valid {
		if p.Remote == remote {
			return true
		}
	}
	return false
}

// dialback handles a dialback element on an inbound stream.
func (in *inbound) dialback(el dialback.Element) {
	switch el := el.(type) {
	case *dialback.Result:
		if el.Type != dialback.TypeRequest {
			in.lg().Warn("ignoring unsolicited typed dialback result on an inbound stream", slog.String("from", el.From), slog.String("type", string(el.Type)))
			return
		}
		in.result(el)
	case *dialback.Verify:
		if el.Type != dialback.TypeRequest {
			in.lg().Warn("ignoring unsolicited typed dialback verify on an inbound stream", slog.String("from", el.From), slog.String("type", string(el.Type)))
			return
		}
		in.authoritative(el)
	}
}

func (in *inbound) answerResult(req *dialback.Result, t dialback.Type, serr *stanza.Error) {
	a := req.Answer(t, serr)
	in.writeElement(a)
	in.lg().Info("dialback answer", slog.String(logkey.Local, a.From), slog.String(logkey.Remote, a.To), slog.String("type", string(t)))
}

func (in *inbound) writeElement(v xml.Marshaler) {
	if b := marshal(v); b != nil {
		in.write(b)
	}
}

// marshal encodes a dialback element (they are validated before, so an
// error here is a bug and yields nil).
func marshal(v xml.Marshaler) []byte {
	var buf bytes.Buffer
	if err := xml.NewEncoder(&buf).Encode(v); err != nil {
		return nil
	}
	return buf.Bytes()
}

func dbError(t stanza.ErrorType, c stanza.Condition) *stanza.Error {
	return &stanza.Error{Type: t, Condition: c}
}

// result handles a db:result request: the receiving role (XEP-0220 §2.1).
func (in *inbound) result(req *dialback.Result) {
	e := in.ep
	sender, target := norm(req.From), norm(req.To)
	in.mu.Lock()
	in.info.VerifyOnly = false
	in.mu.Unlock()
	p := Pair{Local: target, Remote: sender}
	cs, isTLS := in.tlsState()
	switch {
	case !e.Serves(target):
		in.answerResult(req, dialback.TypeError, dbError(stanza.Cancel, stanza.ItemNotFound))
		return
	case (e.security(sender) == tlsmode.Required || e.requireValidCert(sender)) && !isTLS:
		in.answerResult(req, dialback.TypeError, dbError(stanza.Modify, stanza.PolicyViolation))
		return
	case in.Authorized(target, sender):
		in.answerResult(req, dialback.TypeValid, nil)
		return
	case isIPLiteral(sender):
		// Dialback for an IP address would make us connect wherever the
		// peer names; XMPP servers federate by domain name.
		in.answerResult(req, dialback.TypeError, dbError(stanza.Modify, stanza.PolicyViolation))
		return
	}
	if err := e.policy(target, sender); err != nil {
		// Before any verification, so a denied domain cannot make us
		// connect out (dialback.md §7.10).
		in.lg().Info("dialback refused by federation policy", slog.String(logkey.Remote, sender), slog.Any(logkey.Err, err))
		in.answerResult(req, dialback.TypeError, dbError(stanza.Cancel, stanza.PolicyViolation))
		return
	}
	in.mu.Lock()
	gen := in.gen
	dup := in.pendingVerify[p]
	full := len(in.pendingVerify) >= maxPendingVerify
	if !dup && !full {
		in.pendingVerify[p] = true
	}
	id := in.info.ID
	in.mu.Unlock()
	if dup {
		return
	}
	if full {
		// XEP-0220: the peer should try again later or on a new stream.
		in.answerResult(req, dialback.TypeError, dbError(stanza.Wait, stanza.ResourceConstraint))
		return
	}
	if isTLS {
		certErr := e.verifyPeer(cs, sender)
		if certErr == nil {
			// XEP-0344: the certificate already proves the sender domain.
			in.finishVerify(gen, p, req, dialback.TypeValid, nil, nil)
			return
		}
		if e.requireValidCert(sender) {
			in.lg().Warn("dialback refused: valid certificate required", slog.String(logkey.Remote, sender), slog.Any(logkey.Err, certErr))
			in.finishVerify(gen, p, req, dialback.TypeError, dbError(stanza.Auth, stanza.NotAuthorized), nil)
			return
		}
	}
	if !in.eng.tryVerify() {
		in.lg().Warn("dialback refused: too many verifications in progress on this server", slog.String(logkey.Remote, sender))
		in.finishVerify(gen, p, req, dialback.TypeError, dbError(stanza.Wait, stanza.ResourceConstraint), nil)
		return
	}
	in.lg().Info("verifying dialback key with the authoritative server", slog.String(logkey.Local, target), slog.String(logkey.Remote, sender))
	in.wg.Add(1)
	go func() {
		defer in.wg.Done()
		defer in.eng.doneVerify()
		t, serr, vs, err := e.verifyDialbackKey(in.ctx, target, sender, id, req.Key, in.eng)
		in.finishVerify(gen, p, req, t, serr, err)
		if vs != nil {
			vs.lg().Info("closing stream used for dialback only")
			vs.closeAsync()
			select {
			case <-vs.done:
			case <-in.ctx.Done(): // our inbound stream is gone: do not wait
				vs.end(nil)
			}
			<-vs.readDone
		}
	}()
}

// finishVerify turns the authoritative server's verdict into the answer to
// the originating server. The verdict applies only if the stream is still
// in generation gen and the request still pending; the pair is marked and
// the answer written under the write lock, so that no restart can come
// between them.
func (in *inbound) finishVerify(gen uint64, p Pair, req *dialback.Result, t dialback.Type, authErr *stanza.Error, err error) {
	var answer dialback.Result
	switch {
	case err != nil:
		cond, typ := stanza.RemoteServerNotFound, stanza.Cancel
		if errors.Is(err, ErrTimeout) || errors.Is(err, context.DeadlineExceeded) || errors.Is(err, ErrStreamClosed) {
			cond, typ = stanza.RemoteServerTimeout, stanza.Wait
		}
		in.lg().Warn("dialback verification failed", slog.String(logkey.Remote, p.Remote), slog.Any(logkey.Err, err))
		answer = req.Answer(dialback.TypeError, dbError(typ, cond))
	case t == dialback.TypeValid:
		answer = req.Answer(dialback.TypeValid, nil)
	case t == dialback.TypeInvalid:
		in.lg().Warn("dialback key INVALID: wrong dialback secret or spoofed domain", slog.String(logkey.Local, p.Local), slog.String(logkey.Remote, p.Remote))
		answer = req.Answer(dialback.TypeInvalid, nil)
	case authErr != nil && (authErr.Condition == stanza.NotAuthorized || authErr.Condition == stanza.ResourceConstraint):
		answer = req.Answer(dialback.TypeError, authErr)
	default:
		answer = req.Answer(dialback.TypeError, dbError(stanza.Cancel, stanza.RemoteServerNotFound))
	}

	in.wmu.Lock()
	in.mu.Lock()
	current := in.pendingVerify[p] && in.gen == gen && in.info.State != Closed
	delete(in.pendingVerify, p)
	wasPending, others := false, len(in.valid)
	if current && answer.Type == dialback.TypeValid {
		// The policy may have changed during the verification. Checked
		// under mu: a later Policy.Update sees the pair and closes.
		if perr := in.ep.policy(p.Local, p.Remote); perr != nil {
			answer = req.Answer(dialback.TypeError, dbError(stanza.Cancel, stanza.PolicyViolation))
		} else if !in.eng.admitInbound(in.Stream, p) {
			// Too many streams from that domain already: XEP-0220 lets the
			// peer retry later or use one it has.
			answer = req.Answer(dialback.TypeError, dbError(stanza.Wait, stanza.ResourceConstraint))
		} else {
			wasPending = in.markValidLocked(p, AuthDialback)
		}
	}
	if current && answer.Type == dialback.TypeInvalid && others > 0 {
		// Other pairs are valid on this stream: refuse this one without
		// closing the stream (XEP-0220 §2.4).
		answer = req.Answer(dialback.TypeError, dbError(stanza.Auth, stanza.Forbidden))
	}
	in.mu.Unlock()
	if in.eng != nil && current {
		in.eng.verdict(answer.Type)
	}
	if !current {
		in.wmu.Unlock()
		in.lg().Info("dropping a dialback verdict for a stream that has restarted or ended", slog.String(logkey.Remote, p.Remote))
		return
	}
	if answer.Type == dialback.TypeInvalid {
		in.wmu.Unlock()
		in.lg().Info("dialback answer", slog.String(logkey.Local, p.Local), slog.String(logkey.Remote, p.Remote), slog.String("type", string(dialback.TypeInvalid)))
		in.failAfter("dialback", marshal(answer), stream.NotAuthorized, "dialback key invalid", ErrDialbackInvalid)
		return
	}
	in.writeLocked(marshal(answer))
	in.wmu.Unlock()
	in.lg().Info("dialback answer", slog.String(logkey.Local, p.Local), slog.String(logkey.Remote, p.Remote), slog.String("type", string(answer.Type)))
	if answer.Type == dialback.TypeValid {
		in.afterAuthorize(p, AuthDialback, wasPending)
	}
}

// isIPLiteral reports whether a domain is an IP address.
func isIPLiteral(domain string) bool {
	_, err := netip.ParseAddr(strings.Trim(domain, "[]"))
	return err == nil
}

// authoritative answers a db:verify request with the shared secret
// (XEP-0220 §2.2; no authentication is needed for this).
func (in *inbound) authoritative(req *dialback.Verify) {
	e := in.ep
	receiving, originating := norm(req.From), norm(req.To)
	in.mu.Lock()
	if len(in.valid) == 0 && len(in.pendingVerify) == 0 {
		// So far the peer only asks us to vouch for keys: a verification
		// stream, not a federated link (hidden from Status).
		in.info.VerifyOnly = true
	}
	in.mu.Unlock()
	var a dialback.Verify
	switch {
	case !e.Serves(originating):
		a = req.Answer(dialback.TypeError, dbError(stanza.Cancel, stanza.ItemNotFound))
	case e.Keys.Verify(req.Key, receiving, originating, req.ID):
		a = req.Answer(dialback.TypeValid, nil)
	default:
		in.lg().Warn("db:verify for a key we did not make: answering invalid", slog.String(logkey.Local, originating), slog.String(logkey.Remote, receiving), slog.String("id", req.ID))
		a = req.Answer(dialback.TypeInvalid, nil)
	}
	in.writeElement(a)
	if in.eng != nil {
		in.eng.authoritative(a.Type)
	}
	in.lg().Info("authoritative dialback answer", slog.String(logkey.Local, originating), slog.String(logkey.Remote, receiving), slog.String("type", string(a.Type)))
}

// bidiWithoutTLS reports whether bidi may be offered and accepted on a
// stream without TLS: only when TLS could not be had anyway (mode No TLS,
// or no certificate for local). Otherwise our own stanzas could flow in
// plaintext where a stream of ours would have used TLS.
func (e *Endpoint) bidiWithoutTLS(mode tlsmode.Mode, local string) bool {
	return mode == tlsmode.NoTLS || mode != tlsmode.Required && !e.hasCertificate(local)
}

// bidiRequest handles the initiator's <bidi/> (XEP-0288 §2): allowed
// before authentication, when offered. Our stanzas for the stream's
// authorized pairs may then go back over it.
func (in *inbound) bidiRequest(mode tlsmode.Mode, isTLS bool) error {
	if err := in.r.Skip(); err != nil {
		return in.readFailure("serve", err)
	}
	switch {
	case !in.ep.Bidi:
		return in.fail("serve", stream.UnsupportedStanzaType, "bidirectional streams (XEP-0288) are not offered", nil)
	case !isTLS && !in.ep.bidiWithoutTLS(mode, in.Info().Local):
		return in.fail("serve", stream.PolicyViolation, "bidi requested before TLS", nil)
	case in.started() || in.Info().Auth != AuthNone:
		return in.fail("serve", stream.PolicyViolation, "bidi requested after authentication began", nil)
	}
	in.mu.Lock()
	in.bidi = true
	in.info.Bidi = true
	in.mu.Unlock()
	in.lg().Info("bidirectional stream requested by peer (XEP-0288)")
	return nil
}

// hasValidPairs reports whether a pair is authorized on the stream.
func (in *inbound) hasValidPairs() bool {
	in.mu.Lock()
	defer in.mu.Unlock()
	return len(in.valid) > 0
}
