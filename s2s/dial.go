package s2s

import (
	"context"
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"strconv"
	"time"

	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/internal/logkey"
	"github.com/xmppfed/xmppfed/internal/wire"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Dial opens an authenticated stream from the served domain local to the
// remote domain (the originating role). It tries the targets that the
// Resolver returns in order (direct TLS for _xmpps-server targets unless the
// security mode is NoTLS), negotiates STARTTLS as the security mode and the
// peer's features decide, then authenticates with SASL EXTERNAL when both
// certificates are valid, else with dialback, and waits for the peer's
// verdict (DialbackTimeout).
//
// The returned stream is authorized for (local, remote); Authorize adds
// further pairs. Stanzas are sent with Send; Close ends the stream.
func (e *Endpoint) Dial(ctx context.Context, local, remote string) (*Stream, error) {
	return e.dialWith(ctx, local, remote, nil)
}

func (e *Endpoint) dialWith(ctx context.Context, local, remote string, eng *engine) (*Stream, error) {
	if err := e.check("dial"); err != nil {
		return nil, err
	}
	s, feat, err := e.connect(ctx, local, remote, false, eng)
	if err != nil {
		return nil, err
	}
	defer s.releaseSetup() // set up (or failed): the slot is free
	s.startReadLoop()
	info := s.Info()
	if s.Authorized(info.Local, info.Remote) { // SASL EXTERNAL
		return s, nil
	}
	abandon := func() {
		// Do not make the caller wait for a peer that may be gone, but do
		// not leave the read loop behind either.
		s.closeAsync()
		s.end(nil)
		<-s.readDone
	}
	if !feat.dialback {
		err := s.fail("dialback", stream.UnsupportedFeature, "peer supports neither SASL EXTERNAL nor dialback", nil)
		<-s.readDone
		return nil, err
	}
	if err := s.Authorize(ctx, info.Local, info.Remote); err != nil {
		abandon()
		return nil, err
	}
	return s, nil
}

// connect resolves remote, connects to the first target that answers and
// negotiates the stream up to (and including) SASL.
func (e *Endpoint) connect(ctx context.Context, local, remote string, verifyOnly bool, eng *engine) (*Stream, features, error) {
	op := "dial"
	if verifyOnly {
		op = "verify"
	}
	l, err := srv.NormalizeDomain(local)
	if err != nil || !e.Serves(l) {
		return nil, features{}, &Error{Op: op, Local: local, Remote: remote, Err: ErrDomainNotServed}
	}
	r, err := srv.NormalizeDomain(remote)
	if err != nil {
		return nil, features{}, &Error{Op: op, Local: l, Remote: remote, Err: err}
	}
	local, remote = l, r
	if !verifyOnly {
		// Verify-only streams carry no stanzas and are checked by the
		// caller before it asks anything of remote.
		if err := e.policy(local, remote); err != nil {
			return nil, features{}, &Error{Op: op, Local: local, Remote: remote, Err: err}
		}
	}
	res := e.resolver()
	targets, err := res.LookupServer(ctx, remote)
	if err != nil {
		return nil, features{}, &Error{Op: op, Local: local, Remote: remote, Err: err}
	}
	var errs []error
	for _, t := range targets {
		if t.DirectTLS && e.security(remote) == tlsmode.NoTLS {
			continue
		}
		addrs, err := res.LookupAddrs(ctx, t.Host)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", t, err))
			continue
		}
		for _, a := range addrs {
			if ctx.Err() != nil {
				return nil, features{}, &Error{Op: op, Local: local, Remote: remote, Err: ctx.Err()}
			}
			addr := netip.AddrPortFrom(a, t.Port).String()
			release := func() {}
			if !verifyOnly {
				// Verifications are bounded by MaxVerifications; sharing
				// slots with setups could deadlock two servers that set up
				// streams to each other (each waiting for the other's
				// verification).
				release, err = eng.setupSlot(ctx, addr)
			}
			if err != nil {
				return nil, features{}, &Error{Op: op, Local: local, Remote: remote, Err: err}
			}
			conn, err := e.dial(ctx, addr)
			if err != nil {
				release()
				e.logger().Info("connect failed", slog.String(logkey.Local, local), slog.String(logkey.Remote, remote), slog.String("target", t.String()), slog.String("addr", addr), slog.Any(logkey.Err, err))
				errs = append(errs, fmt.Errorf("%s (%s): %w", t, addr, err))
				continue
			}
			s := newStream(e, conn, Outbound, eng)
			s.mu.Lock() // the engine's Status may already look at it
			s.info.VerifyOnly = verifyOnly
			s.mu.Unlock()
			if !verifyOnly {
				s.h, s.hctx = eng.inboundHandler()
			}
			s.setIDs(local, remote, "")
			s.lg().Info("connected", slog.String("target", t.String()), slog.String("addr", addr), slog.Bool("direct_tls", t.DirectTLS))
			s.releaseSetup = release
			feat, err := s.negotiate(ctx, local, remote, t.DirectTLS, verifyOnly)
			if err == nil {
				return s, feat, nil
			}
			release()
			if ctx.Err() != nil || !nextTargetAfter(err) {
				return nil, features{}, err
			}
			// RFC 6120 §3.2.1 / XEP-0368: a target that fails before the
			// stream is up (connection dropped, TLS handshake, timeout)
			// does not stop us trying the next one.
			e.logger().Info("target failed, trying the next one", slog.String(logkey.Local, local), slog.String(logkey.Remote, remote), slog.String("target", t.String()), slog.Any(logkey.Err, err))
			errs = append(errs, err)
		}
	}
	err = &Error{Op: op, Local: local, Remote: remote, Err: errors.Join(append([]error{ErrNoTarget}, errs...)...)}
	return nil, features{}, err
}

// nextTargetAfter reports whether a negotiation failure is about the
// target (try the next one) rather than about policy or the peer's verdict
// (a stream error either way, a certificate refused): those would repeat on
// every node of the remote domain.
func nextTargetAfter(err error) bool {
	if errors.Is(err, ErrCertificate) {
		return false
	}
	if errors.Is(err, ErrTimeout) {
		return true // a target that accepts TCP and then stays silent
	}
	var se *Error
	return !errors.As(err, &se) || se.Condition.Err == ""
}

type tlsHandshakeError struct{ err error }

func (e *tlsHandshakeError) Error() string { return "TLS handshake: " + e.err.Error() }
func (e *tlsHandshakeError) Unwrap() error { return e.err }

// negotiate runs stream setup on a fresh outbound connection: headers,
// STARTTLS (or direct TLS), and SASL EXTERNAL when possible. On error the
// stream is closed.
func (s *Stream) negotiate(ctx context.Context, local, remote string, direct, verifyOnly bool) (feat features, err error) {
	e := s.ep
	deadline := time.Now().Add(e.negotiationTimeout())
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	raw := s.transport()
	raw.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { raw.SetDeadline(time.Unix(1, 0)) })
	defer func() {
		stop()
		if err == nil {
			raw.SetDeadline(time.Time{})
		}
	}()
	wrap := func(err error) error {
		if ctx.Err() != nil {
			s.end(ctx.Err())
			return &Error{Op: "negotiate", Local: local, Remote: remote, Err: ctx.Err()}
		}
		return s.readFailure("negotiate", err)
	}
	if direct {
		if err := s.startClientTLS(local, remote, true); err != nil {
			return feat, err
		}
	}
	for range 4 { // initial, after TLS, after SASL: bounded restarts
		if err := s.writeString(header(local, remote, "", true)); err != nil {
			return feat, wrap(err)
		}
		h, err := s.r.Header()
		if err != nil {
			return feat, wrap(err)
		}
		if ns := wire.Attr(h, "", "xmlns"); ns != NSServer {
			return feat, s.fail("negotiate", stream.InvalidNamespace, "content namespace "+strconv.Quote(ns)+" is not jabber:server", nil)
		}
		id := wire.Attr(h, "", "id")
		if id == "" {
			return feat, s.fail("negotiate", stream.BadFormat, "response stream header without id", nil)
		}
		s.setIDs(local, remote, id)
		feat = features{dialback: wire.Attr(h, "xmlns", "db") == dialback.NS}
		if v := wire.Attr(h, "", "version"); v != "" && versionMajor(v) >= 1 {
			f, err := s.readFeatures()
			if err != nil {
				return feat, wrap(err)
			}
			f.dialback = f.dialback || feat.dialback
			feat = f
		}
		s.lg().Debug("stream features", slog.String("features", feat.String()))
		s.mu.Lock()
		s.dbErrors = feat.dbErrors
		s.mu.Unlock()
		_, isTLS := s.tlsState()
		if !isTLS {
			peer := tlsmode.PeerNoTLS
			if feat.tls {
				peer = feat.tlsPeer
			}
			useTLS, derr := tlsmode.Decide(e.security(remote), peer)
			if derr != nil {
				var pe *tlsmode.PolicyError
				cond := stream.PolicyViolation
				if errors.As(derr, &pe) {
					cond = pe.Condition
				}
				return feat, s.fail("negotiate", cond, derr.Error(), derr)
			}
			if useTLS {
				if err := s.writeString("<starttls xmlns='" + nsTLS + "'/>"); err != nil {
					return feat, wrap(err)
				}
				start, err := s.r.Next()
				if err != nil {
					return feat, wrap(err)
				}
				if start.Name.Space != nsTLS || start.Name.Local != "proceed" {
					if isStreamError(start) {
						return feat, s.peerStreamError("starttls", start)
					}
					s.end(nil)
					return feat, &Error{Op: "starttls", Local: local, Remote: remote, Err: fmt.Errorf("peer answered <starttls/> with <%s/>", start.Name.Local)}
				}
				if err := s.r.Skip(); err != nil {
					return feat, wrap(err)
				}
				if s.r.Buffered() != 0 {
					return feat, s.fail("starttls", stream.PolicyViolation, "data after <proceed/> before TLS", nil)
				}
				if err := s.startClientTLS(local, remote, false); err != nil {
					return feat, err
				}
				continue
			}
		}
		if verifyOnly || s.Authorized(local, remote) {
			return feat, nil
		}
		if err := s.requestBidi(feat, isTLS); err != nil {
			return feat, wrap(err)
		}
		if !isTLS && e.requireValidCert(remote) {
			return feat, s.fail("negotiate", stream.PolicyViolation, "a valid certificate is required for "+remote+" but the peer does not offer TLS", ErrCertificate)
		}
		if isTLS && feat.external && s.Info().CertError == nil && e.ownCertValid(local) {
			ok, err := s.saslExternal(local)
			if err != nil {
				return feat, wrap(err)
			}
			if ok {
				s.authorize(Pair{Local: local, Remote: remote}, AuthExternal)
				continue // restart the stream after SASL success
			}
		}
		return feat, nil
	}
	return feat, s.fail("negotiate", stream.PolicyViolation, "too many stream restarts", nil)
}

// startClientTLS runs the TLS handshake as client and checks the peer's
// certificate.
func (s *Stream) startClientTLS(local, remote string, direct bool) error {
	cfg, err := s.ep.clientTLS(local, remote, direct)
	if err != nil {
		s.end(err)
		return &Error{Op: "starttls", Local: local, Remote: remote, Err: err}
	}
	tc := tls.Client(s.transport(), cfg)
	if err := tc.Handshake(); err != nil {
		s.end(err)
		return &Error{Op: "starttls", Local: local, Remote: remote, Err: &tlsHandshakeError{err}}
	}
	cs := tc.ConnectionState()
	certErr := s.ep.verifyPeer(cs, remote)
	s.wmu.Lock()
	s.setTransport(tc)
	s.wmu.Unlock()
	s.setTLS(cs, certErr)
	if certErr != nil {
		if s.ep.requireValidCert(remote) {
			s.lg().Warn("peer certificate refused: valid certificates are required", slog.Any(logkey.Err, certErr))
			s.end(certErr)
			return &Error{Op: "starttls", Local: local, Remote: remote, Err: errors.Join(ErrCertificate, certErr)}
		}
		s.lg().Info("peer certificate not valid; identity will come from dialback", slog.Any(logkey.Err, certErr))
	}
	s.lg().Info("TLS established", slog.String("tls", tls.VersionName(cs.Version)), slog.Bool("cert_valid", certErr == nil))
	return nil
}

// readFeatures reads <stream:features/>.
func (s *Stream) readFeatures() (features, error) {
	var f features
	start, err := s.r.Next()
	if err != nil {
		return f, err
	}
	if isStreamError(start) {
		return f, s.peerStreamError("negotiate", start)
	}
	if start.Name.Space != wire.NSStream || start.Name.Local != "features" {
		return f, &wire.Error{Condition: stream.BadFormat, Reason: "expected <stream:features/>, got <" + start.Name.Local + "/>"}
	}
	f, err = parseFeatures(s.r.Decoder())
	if err != nil {
		return f, err
	}
	return f, nil
}

// parseFeatures reads the children of <stream:features/> up to its end.
func parseFeatures(d *xml.Decoder) (features, error) {
	var f features
	for range 256 {
		t, err := d.Token()
		if err != nil {
			return f, err
		}
		switch t := t.(type) {
		case xml.EndElement:
			return f, nil
		case xml.StartElement:
			switch {
			case t.Name.Space == nsTLS && t.Name.Local == "starttls":
				p, err := tlsmode.ParseFeature(d, &t)
				if err != nil {
					return f, err
				}
				f.tls, f.tlsPeer = true, p
				continue
			case t.Name.Space == NSSASL && t.Name.Local == "mechanisms":
				var m struct {
					Mechanisms []string `xml:"mechanism"`
				}
				if err := d.DecodeElement(&m, &t); err != nil {
					return f, err
				}
				f.mechanisms = m.Mechanisms
				for _, name := range m.Mechanisms {
					if name == "EXTERNAL" {
						f.external = true
					}
				}
				continue
			case t.Name.Space == dialback.NSFeature && t.Name.Local == "dialback":
				var db struct {
					Errors *struct{} `xml:"errors"`
				}
				if err := d.DecodeElement(&db, &t); err != nil {
					return f, err
				}
				f.dialback, f.dbErrors = true, db.Errors != nil
				continue
			case t.Name.Space == NSBidi && t.Name.Local == "bidi":
				f.bidi = true
			}
			if err := d.Skip(); err != nil {
				return f, err
			}
		}
	}
	return f, &wire.Error{Condition: stream.PolicyViolation, Reason: "too many stream features"}
}

// saslExternal authenticates as local with SASL EXTERNAL (XEP-0178). It
// returns false when the peer refused, so the caller can fall back to
// dialback.
func (s *Stream) saslExternal(local string) (bool, error) {
	authzid := base64.StdEncoding.EncodeToString([]byte(local))
	if err := s.writeString("<auth xmlns='" + NSSASL + "' mechanism='EXTERNAL'>" + authzid + "</auth>"); err != nil {
		return false, err
	}
	start, err := s.r.Next()
	if err != nil {
		return false, err
	}
	if isStreamError(start) {
		return false, s.peerStreamError("sasl", start)
	}
	if start.Name.Space != NSSASL {
		return false, &wire.Error{Condition: stream.BadFormat, Reason: "expected a SASL answer, got <" + start.Name.Local + "/>"}
	}
	if err := s.r.Skip(); err != nil {
		return false, err
	}
	switch start.Name.Local {
	case "success":
		s.resetReader() // the stream restarts
		return true, nil
	case "failure":
		s.lg().Info("SASL EXTERNAL refused by peer; falling back to dialback")
		return false, nil
	}
	return false, &wire.Error{Condition: stream.BadFormat, Reason: "unexpected SASL answer <" + start.Name.Local + "/>"}
}

func isStreamError(start xml.StartElement) bool {
	return start.Name.Space == wire.NSStream && start.Name.Local == "error"
}

// versionMajor parses the major part of a stream version ("1.0" → 1);
// -1 if malformed.
func versionMajor(v string) int {
	major, _, ok := cutDot(v)
	if !ok {
		return -1
	}
	n, err := strconv.Atoi(major)
	if err != nil || n < 0 {
		return -1
	}
	return n
}

func cutDot(v string) (string, string, bool) {
	for i := 0; i < len(v); i++ {
		if v[i] == '.' {
			if i == 0 || i == len(v)-1 {
				return "", "", false
			}
			for _, c := range v[i+1:] {
				if c < '0' || c > '9' {
					return "", "", false
				}
			}
			return v[:i], v[i+1:], true
		}
	}
	return "", "", false
}

// Authorize authenticates one more domain pair on an outbound stream with
// dialback (XEP-0220 multiplexing): local must be served here; remote is
// the stream's peer domain, or another domain of the same peer when it
// supports dialback errors. It waits for the verdict up to DialbackTimeout.
func (s *Stream) Authorize(ctx context.Context, local, remote string) error {
	info := s.Info()
	if info.Direction != Outbound || info.VerifyOnly {
		return &Error{Op: "dialback", Local: local, Remote: remote, Err: errors.New("dialback requests are sent on outbound streams only")}
	}
	if !s.ep.Serves(local) {
		return &Error{Op: "dialback", Local: local, Remote: remote, Err: ErrDomainNotServed}
	}
	local, _ = srv.NormalizeDomain(local)
	r, err := srv.NormalizeDomain(remote)
	if err != nil {
		return &Error{Op: "dialback", Local: local, Remote: remote, Err: err}
	}
	remote = r
	p := Pair{Local: local, Remote: remote}
	if s.Authorized(local, remote) {
		return nil
	}
	if err := s.ep.policy(local, remote); err != nil {
		return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: err}
	}
	if remote != info.Remote {
		if err := s.canMultiplexTarget(ctx, remote); err != nil {
			return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: err}
		}
	}
	c := make(chan answer, 1)
	s.mu.Lock()
	if s.info.State == Closed {
		s.mu.Unlock()
		return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: ErrStreamClosed}
	}
	if _, dup := s.pending[p]; dup {
		s.mu.Unlock()
		return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: errors.New("dialback for this pair already in progress")}
	}
	s.pending[p] = c
	s.mu.Unlock()
	cleanup := func() {
		s.mu.Lock()
		if s.pending[p] == c {
			delete(s.pending, p)
		}
		s.mu.Unlock()
	}
	key := s.ep.Keys.Key(remote, local, info.ID)
	req := "<db:result from='" + wire.EscapeAttr(local) + "' to='" + wire.EscapeAttr(remote) + "'>" + wire.EscapeText(key) + "</db:result>"
	if err := s.write([]byte(req)); err != nil {
		cleanup()
		return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: err}
	}
	timeout := s.ep.dialbackTimeout()
	s.lg().Info(fmt.Sprintf("Scheduling dialback timeout in %d seconds", int(timeout.Round(time.Second)/time.Second)), slog.String(logkey.Local, local), slog.String(logkey.Remote, remote))
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	select {
	case a := <-c:
		if a.err != nil {
			return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: a.err}
		}
		switch a.typ {
		case dialback.TypeValid:
			s.authorize(p, AuthDialback)
			return nil
		case dialback.TypeInvalid:
			s.lg().Warn("dialback key refused as invalid by peer", slog.String(logkey.Local, local), slog.String(logkey.Remote, remote))
			return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: ErrDialbackInvalid}
		default:
			e := &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: ErrDialbackError}
			if r, ok := a.el.(*dialback.Result); ok && r.Err != nil {
				e.DialbackAnswer = *r.Err
			}
			s.lg().Warn("dialback error from peer", slog.Any(logkey.Err, e))
			return e
		}
	case <-timer.C:
		cleanup()
		s.lg().Warn("dialback timed out", slog.String(logkey.Local, local), slog.String(logkey.Remote, remote), slog.Duration("timeout", timeout))
		return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: fmt.Errorf("%w: no dialback answer within %s", ErrTimeout, timeout)}
	case <-ctx.Done():
		cleanup()
		return &Error{Op: "dialback", Local: local, Remote: remote, StreamID: info.ID, Err: ctx.Err()}
	}
}

// canMultiplexTarget decides whether a dialback request for another target
// domain may go over this stream (XEP-0220 §4.2). The key is a credential
// for that domain, so the peer must be that domain's server: its certificate
// must be valid for it, or the domain must resolve to the very address this
// stream is connected to. And the peer must have announced dialback errors.
func (s *Stream) canMultiplexTarget(ctx context.Context, remote string) error {
	s.mu.Lock()
	dbErrors := s.dbErrors
	s.mu.Unlock()
	if !dbErrors {
		return errors.New("peer does not support dialback errors, so the stream cannot carry another target domain")
	}
	cs, isTLS := s.tlsState()
	if isTLS && s.ep.verifyPeer(cs, remote) == nil {
		return nil
	}
	if s.ep.requireValidCert(remote) {
		return fmt.Errorf("%w: a valid certificate is required for %s and this stream's peer has none for it", ErrCertificate, remote)
	}
	peer, err := netip.ParseAddrPort(s.transport().RemoteAddr().String())
	if err != nil {
		return err
	}
	res := s.ep.resolver()
	targets, err := res.LookupServer(ctx, remote)
	if err != nil {
		return err
	}
	for _, t := range targets {
		if t.Port != peer.Port() {
			continue
		}
		addrs, err := res.LookupAddrs(ctx, t.Host)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if a == peer.Addr().Unmap() || netip.AddrFrom16(a.As16()) == netip.AddrFrom16(peer.Addr().As16()) {
				return nil
			}
		}
	}
	return errors.New("the stream's peer is not a server of " + remote + " (no valid certificate for it, and its DNS does not point here)")
}

// startReadLoop starts readLoop; readDone is closed when it returns.
func (s *Stream) startReadLoop() {
	s.readDone = make(chan struct{})
	go func() {
		defer close(s.readDone)
		s.readLoop()
	}()
}

// readLoop reads an outbound stream after negotiation: dialback answers,
// stream errors and the peer's close.
func (s *Stream) readLoop() {
	for {
		start, err := s.r.Next()
		if err != nil {
			s.readFailure("read", err)
			return
		}
		switch {
		case isStreamError(start):
			s.peerStreamError("read", start)
			return
		case start.Name.Space == dialback.NS:
			el, err := dialback.Decode(s.r.Decoder(), start)
			if err != nil {
				s.failMalformed(err)
				return
			}
			s.dispatchAnswer(el)
		case start.Name.Space == NSServer && isStanzaName(start.Name.Local):
			s.mu.Lock()
			bidi := s.bidi
			s.mu.Unlock()
			if !bidi {
				// Without XEP-0288 a server must not send stanzas on a
				// stream it did not initiate.
				s.fail("read", stream.UnsupportedStanzaType, "stanza on a stream you did not initiate (bidi not negotiated)", nil)
				return
			}
			if err := s.receiveStanza(s.hctx, start, s.h); err != nil {
				return
			}
		default:
			s.fail("read", stream.UnsupportedStanzaType, "unexpected <"+start.Name.Local+"/>", nil)
			return
		}
	}
}

// failMalformed closes the stream for a malformed dialback element.
func (s *Stream) failMalformed(err error) {
	var me *dialback.MalformedError
	if errors.As(err, &me) {
		s.fail("dialback", me.Condition, me.Reason, err)
		return
	}
	s.readFailure("dialback", err)
}

// dispatchAnswer hands a typed dialback answer to the request waiting for
// it on this stream; anything else is unsolicited and ignored (XEP-0220
// §3.1: correlate by stream, from, to and id, never by domain alone).
func (s *Stream) dispatchAnswer(el dialback.Element) {
	switch el := el.(type) {
	case *dialback.Result:
		if el.Type == dialback.TypeRequest {
			s.lg().Info("ignoring dialback request on an outbound stream (bidi not negotiated)", slog.String("from", el.From))
			return
		}
		p := Pair{Local: norm(el.To), Remote: norm(el.From)}
		s.mu.Lock()
		c, ok := s.pending[p]
		delete(s.pending, p)
		s.mu.Unlock()
		if !ok {
			s.lg().Warn("ignoring unsolicited dialback result", slog.String("from", el.From), slog.String("to", el.To), slog.String("type", string(el.Type)))
			return
		}
		c <- answer{typ: el.Type, el: el}
	case *dialback.Verify:
		if el.Type == dialback.TypeRequest {
			s.lg().Info("ignoring dialback verify request on an outbound stream")
			return
		}
		k := verifyKey{from: norm(el.From), to: norm(el.To), id: el.ID}
		s.mu.Lock()
		c, ok := s.verifies[k]
		delete(s.verifies, k)
		s.mu.Unlock()
		if !ok {
			s.lg().Warn("ignoring unsolicited dialback verify answer", slog.String("from", el.From), slog.String("to", el.To), slog.String("id", el.ID))
			return
		}
		c <- answer{typ: el.Type, el: el}
	}
}

func isStanzaName(n string) bool { return n == "message" || n == "presence" || n == "iq" }

// Send writes a stanza on an outbound stream. The stanza's from and to
// domains must be a pair authorized on this stream.
func (s *Stream) Send(ctx context.Context, st *Stanza) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	p := Pair{Local: norm(st.From.Domainpart()), Remote: norm(st.To.Domainpart())}
	s.mu.Lock()
	dir, bidi := s.info.Direction, s.bidi
	s.mu.Unlock()
	if dir != Outbound && !bidi {
		return &Error{Op: "send", Local: p.Local, Remote: p.Remote, Err: ErrWrongDirection}
	}
	return s.sendBatch(p, []*Stanza{st})
}

// verifyKey asks the authoritative server of originating, over a new
// verify-only stream, whether key is valid for (receiving, originating, id).
//
// The caller closes the returned verify-only stream (nil if none was set
// up) once it has used the answer: XEP-0220 §2.1.2 has the verifying side
// close it, and closing after answering the originating server keeps the
// closing handshake off its critical path.
func (e *Endpoint) verifyDialbackKey(ctx context.Context, receiving, originating, id, key string, eng *engine) (dialback.Type, *stanza.Error, *Stream, error) {
	ctx, cancel := context.WithTimeout(ctx, e.verifyTimeout())
	defer cancel()
	s, _, err := e.connect(ctx, receiving, originating, true, eng)
	if err != nil {
		return dialback.TypeError, nil, nil, err
	}
	defer s.releaseSetup()
	s.startReadLoop()
	t, serr, err := s.verify(ctx, receiving, originating, id, key)
	return t, serr, s, err
}

// verify sends one db:verify and waits for its answer.
func (s *Stream) verify(ctx context.Context, receiving, originating, id, key string) (dialback.Type, *stanza.Error, error) {
	k := verifyKey{from: originating, to: receiving, id: id}
	c := make(chan answer, 1)
	s.mu.Lock()
	s.verifies[k] = c
	s.mu.Unlock()
	req := "<db:verify from='" + wire.EscapeAttr(receiving) + "' to='" + wire.EscapeAttr(originating) + "' id='" + wire.EscapeAttr(id) + "'>" + wire.EscapeText(key) + "</db:verify>"
	if err := s.writeString(req); err != nil {
		return dialback.TypeError, nil, err
	}
	select {
	case a := <-c:
		if a.err != nil {
			return dialback.TypeError, nil, a.err
		}
		v := a.el.(*dialback.Verify)
		return v.Type, v.Err, nil
	case <-ctx.Done():
		s.mu.Lock()
		delete(s.verifies, k)
		s.mu.Unlock()
		return dialback.TypeError, nil, fmt.Errorf("%w: no answer from the authoritative server of %s", ErrTimeout, originating)
	}
}

// requestBidi asks for a bidirectional stream (XEP-0288) before
// authentication, when the Endpoint wants it, the peer offers it and a
// Handler will take the peer's stanzas.
func (s *Stream) requestBidi(feat features, isTLS bool) error {
	s.mu.Lock()
	already := s.bidi
	s.mu.Unlock()
	remote := s.Info().Remote
	if already || !feat.bidi || !s.ep.Bidi || s.h == nil || (!isTLS && s.ep.security(remote) == tlsmode.Required) {
		return nil
	}
	if err := s.writeString("<bidi xmlns='" + nsBidiReq + "'/>"); err != nil {
		return err
	}
	s.mu.Lock()
	s.bidi = true
	s.info.Bidi = true
	s.mu.Unlock()
	s.lg().Info("requested bidirectional stream (XEP-0288)")
	return nil
}
