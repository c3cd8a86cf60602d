package tlsmode

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
)

// NS is the STARTTLS namespace (RFC 6120 §5).
const NS = "urn:ietf:params:xml:ns:xmpp-tls"

// Wire forms written directly to the connection. No white space may appear
// between STARTTLS elements (RFC 6120 §5.3.3), and the TLS handshake starts
// right after the '>' of <proceed/>, so these bypass the XML encoder.
const (
	startTLSElem = `<starttls xmlns='` + NS + `'/>`
	proceedElem  = `<proceed xmlns='` + NS + `'/>`
	failureElem  = `<failure xmlns='` + NS + `'/>`
	streamEnd    = `</stream:stream>`
)

// Errors from STARTTLS negotiation.
var (
	// ErrNoCertificate: we are the receiving server but have no certificate.
	// The peer has been answered <failure/></stream:stream>; close the
	// connection (do not call Session.Close, the stream is already closed).
	ErrNoCertificate = errors.New("tlsmode: STARTTLS requested but no certificate is configured")

	// ErrTLSFailure: the receiving server answered <starttls/> with <failure/>
	// (RFC 6120 §5.4.2.2); it is closing the stream.
	ErrTLSFailure = errors.New("tlsmode: peer answered STARTTLS with <failure/>")
)

// StartTLS returns the STARTTLS stream feature for mode, for use with
// mellium.im/xmpp sessions on both sides of an S2S connection. ok is false in
// NoTLS mode: the feature must not be offered or attempted at all. A caller
// in NoTLS mode handles the wire itself: as initiating server it reads the
// peer's listing with ParseFeature and applies Decide(NoTLS, peer), closing
// the stream with the *PolicyError's Condition (<unsupported-feature/>) if
// the peer requires TLS; as receiving server it answers a <starttls/> with
// WriteFailure and closes the connection.
//
// Unlike xmpp.StartTLS, the listing carries <required/> only in Required
// mode, the initiating side verifies the peer against the remote (target)
// XMPP domain, and cfg is never modified.
//
// Receiving side: the config is ServerConfig(cfg), built once here; cfg
// supplies the certificate (Certificates, GetCertificate or
// GetConfigForClient). Without one the peer gets <failure/> (WriteFailure)
// and Negotiate returns ErrNoCertificate, never a half-open stream.
//
// Initiating side: the config is ClientConfig(cfg, remote domain, false) for
// each connection; cfg may be nil. Negotiate applies Decide: with Optional
// mode and a peer that did not list STARTTLS it stays in plaintext; with
// Required mode it returns a *PolicyError before sending anything, and the
// caller closes the stream with its Condition.
//
// The req value returned by List and Parse is true whenever STARTTLS is
// listed, even without <required/> on the wire: mellium's negotiator marks
// the session Ready after a round with no required feature and would then
// skip the stream restart that STARTTLS needs. The wire marker is reported
// separately, as the Peer value Parse returns (see ParseFeature).
//
// Negotiate honours its context while waiting for the peer (for <proceed/>
// or for the rest of <starttls/>) and during the TLS handshake: once the
// context is done it returns an error wrapping the context's error. To
// interrupt a blocked read it moves the connection's read deadline into the
// past, and clears the deadline (sets it to zero) afterwards, so a read
// deadline the caller had set on the connection is lost in that case.
// Connections that are not net.Conns with deadline support cannot be
// interrupted.
//
// Negotiate completes the TLS handshake before returning, so handshake
// errors (e.g. certificate verification) surface from session creation.
func StartTLS(mode Mode, cfg *tls.Config) (feature xmpp.StreamFeature, ok bool) {
	offer, required := mode.Offer()
	if !offer {
		return xmpp.StreamFeature{}, false
	}
	if !mode.valid() {
		mode = Required // fail closed, as Offer did
	}
	serverCfg := ServerConfig(cfg)
	return xmpp.StreamFeature{
		Name:       xml.Name{Space: NS, Local: "starttls"},
		Prohibited: xmpp.Secure,
		List: func(_ context.Context, w xmlstream.TokenWriter, start xml.StartElement) (bool, error) {
			return true, writeListing(w, start, required)
		},
		Parse: func(_ context.Context, d *xml.Decoder, start *xml.StartElement) (bool, any, error) {
			peer, err := ParseFeature(d, start)
			return true, peer, err
		},
		Negotiate: func(ctx context.Context, session *xmpp.Session, data any) (xmpp.SessionState, io.ReadWriter, error) {
			if session.State()&xmpp.Received != 0 {
				return receive(ctx, session, serverCfg)
			}
			// data is the Peer from Parse, or nil when the peer did not list
			// STARTTLS (mellium still calls us then, to resist downgrades).
			peer, _ := data.(Peer)
			return initiate(ctx, session, mode, peer, cfg)
		},
	}, true
}

func writeListing(w xmlstream.TokenWriter, start xml.StartElement, required bool) error {
	if err := w.EncodeToken(start); err != nil {
		return err
	}
	if required {
		// No namespace: the child inherits the default namespace of <starttls/>.
		req := xml.StartElement{Name: xml.Name{Local: "required"}}
		if err := w.EncodeToken(req); err != nil {
			return err
		}
		if err := w.EncodeToken(req.End()); err != nil {
			return err
		}
	}
	return w.EncodeToken(start.End())
}

// ParseFeature parses a peer's STARTTLS listing, the <starttls/> child of
// its <stream:features> (RFC 6120 §5.4.1), and says what the peer does about
// TLS, for Decide. start is the listing's start element, already read from
// d; ParseFeature reads d up to and including the matching end element.
//
// The result is PeerRequired if and only if the listing has a direct child
// element named "required" in the STARTTLS namespace NS (<required/> under
// the default namespace inherited from <starttls/>, or with a prefix bound to
// NS); otherwise it is PeerOptional. That child's attributes and content are
// ignored. Everything else is ignored too: text, other child elements
// (future extensions), a "required" element in another namespace (including
// no namespace at all, xmlns=""), and one nested deeper than a direct child.
//
// It is an error, with PeerNoTLS, if start is nil or not <starttls/> in NS,
// or if the listing is not well-formed XML. A peer whose features do not
// list STARTTLS at all is PeerNoTLS; ParseFeature is not involved.
func ParseFeature(d *xml.Decoder, start *xml.StartElement) (Peer, error) {
	if start == nil {
		return PeerNoTLS, errors.New("tlsmode: parse STARTTLS feature: no start element")
	}
	if start.Name.Space != NS || start.Name.Local != "starttls" {
		return PeerNoTLS, fmt.Errorf("tlsmode: expected STARTTLS feature, got <%s xmlns='%s'>", start.Name.Local, start.Name.Space)
	}
	var listing struct {
		// Matches direct children only, by resolved namespace.
		Required *struct{} `xml:"urn:ietf:params:xml:ns:xmpp-tls required"`
	}
	if err := d.DecodeElement(&listing, start); err != nil {
		return PeerNoTLS, fmt.Errorf("tlsmode: parse STARTTLS feature: %w", err)
	}
	if listing.Required != nil {
		return PeerRequired, nil
	}
	return PeerOptional, nil
}

// WriteFailure writes <failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>
// followed by </stream:stream> to w, in one write: the receiving server's
// answer to a <starttls/> it cannot or will not honour (RFC 6120 §5.4.2.2),
// such as any <starttls/> in NoTLS mode (the project's S2S spec, §6.1). The
// caller then closes the connection; the stream is already closed, so do not
// also call Session.Close.
//
// The bytes go straight to w rather than through an XML encoder, so w should
// be the connection (xmpp.Session.Conn), not a token writer.
func WriteFailure(w io.Writer) error {
	if _, err := io.WriteString(w, failureElem+streamEnd); err != nil {
		return fmt.Errorf("tlsmode: write <failure/>: %w", err)
	}
	return nil
}

// receive handles a <starttls/> the peer sent (we are the receiving server).
func receive(ctx context.Context, session *xmpp.Session, cfg *tls.Config) (xmpp.SessionState, io.ReadWriter, error) {
	conn := session.Conn()
	if err := consumeStartTLS(ctx, session); err != nil {
		// Answer a malformed request, but not after the context ended: we are
		// giving up, and a write to a peer that does not read could block.
		if ctx.Err() == nil {
			_ = WriteFailure(conn)
		}
		return 0, nil, err
	}
	if !hasCertificate(cfg) {
		_ = WriteFailure(conn)
		return 0, nil, ErrNoCertificate
	}
	if _, err := io.WriteString(conn, proceedElem); err != nil {
		return 0, nil, fmt.Errorf("tlsmode: write <proceed/>: %w", err)
	}
	tlsConn := tls.Server(conn, cfg)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		return 0, nil, fmt.Errorf("tlsmode: TLS handshake with %v: %w", session.RemoteAddr(), err)
	}
	return xmpp.Secure, tlsConn, nil
}

// consumeStartTLS reads the element that made the negotiator pick this
// feature. The negotiator dispatches on namespace only, so check the name.
func consumeStartTLS(ctx context.Context, session *xmpp.Session) error {
	defer interruptRead(ctx, session.Conn())()
	r := session.TokenReader()
	defer r.Close()
	d := xml.NewTokenDecoder(r)
	tok, err := d.Token()
	if err != nil {
		return readError(ctx, "read <starttls/>", err)
	}
	start, ok := tok.(xml.StartElement)
	if !ok || start.Name.Local != "starttls" || start.Name.Space != NS {
		return fmt.Errorf("tlsmode: expected <starttls/>, got %T %v", tok, tok)
	}
	if err := d.Skip(); err != nil {
		return readError(ctx, "read <starttls/>", err)
	}
	return nil
}

// initiate runs STARTTLS as the initiating server, if Decide says so.
func initiate(ctx context.Context, session *xmpp.Session, mode Mode, peer Peer, cfg *tls.Config) (xmpp.SessionState, io.ReadWriter, error) {
	useTLS, err := Decide(mode, peer)
	if err != nil {
		return 0, nil, err
	}
	if !useTLS {
		return 0, nil, nil
	}
	clientCfg, err := ClientConfig(cfg, session.RemoteAddr().Domainpart(), false)
	if err != nil {
		return 0, nil, err
	}
	conn := session.Conn()
	if _, err := io.WriteString(conn, startTLSElem); err != nil {
		return 0, nil, fmt.Errorf("tlsmode: write <starttls/>: %w", err)
	}
	if err := awaitProceed(ctx, session); err != nil {
		return 0, nil, err
	}
	tlsConn := tls.Client(conn, clientCfg)
	if err := tlsConn.HandshakeContext(ctx); err != nil {
		return 0, nil, fmt.Errorf("tlsmode: TLS handshake with %s: %w", clientCfg.ServerName, err)
	}
	return xmpp.Secure, tlsConn, nil
}

// awaitProceed reads the answer to <starttls/>. Stream errors arrive as
// errors from the session's token reader and are passed on.
func awaitProceed(ctx context.Context, session *xmpp.Session) error {
	defer interruptRead(ctx, session.Conn())()
	r := session.TokenReader()
	defer r.Close()
	d := xml.NewTokenDecoder(r)
	for {
		tok, err := d.Token()
		if err != nil {
			return readError(ctx, "waiting for <proceed/>", err)
		}
		if t, ok := tok.(xml.CharData); ok && isSpace(t) {
			continue // not allowed here, but harmless: be lenient
		}
		if t, ok := tok.(xml.StartElement); ok && t.Name.Space == NS {
			switch t.Name.Local {
			case "proceed":
				// Normally self-closing: the decoder synthesizes the end
				// element, so no byte of the TLS handshake is consumed here.
				if err := d.Skip(); err != nil {
					return readError(ctx, "read <proceed/>", err)
				}
				return nil
			case "failure":
				return ErrTLSFailure
			}
		}
		return fmt.Errorf("tlsmode: expected <proceed/> or <failure/>, got %T %v", tok, tok)
	}
}

func isSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func hasCertificate(cfg *tls.Config) bool {
	return cfg != nil && (len(cfg.Certificates) > 0 || cfg.GetCertificate != nil || cfg.GetConfigForClient != nil)
}

// readError reports a failed read of what. If ctx is done, that is the
// reason (interruptRead made the read fail), and the error wraps ctx.Err()
// rather than the I/O timeout.
func readError(ctx context.Context, what string, err error) error {
	if ctxErr := ctx.Err(); ctxErr != nil {
		return fmt.Errorf("tlsmode: %s: %w", what, ctxErr)
	}
	return fmt.Errorf("tlsmode: %s: %w", what, err)
}

// Re-arming interval bounds for interruptRead.
const (
	rearmFirst = time.Millisecond
	rearmMax   = time.Second
)

// interruptRead makes a read on conn that is blocked when ctx is done fail,
// by moving conn's read deadline into the past. The returned function must
// be called once reading is over: it stops watching ctx and, if the
// deadline was moved, clears it (sets it to zero).
//
// The deadline is re-armed (at growing intervals) until then, because the
// watch that xmpp.NewSession puts on the same context sets a deadline in the
// past and clears it again at once, which can undo ours before the blocked
// read has noticed it.
func interruptRead(ctx context.Context, conn net.Conn) (stop func()) {
	if conn == nil {
		return func() {}
	}
	stopped := make(chan struct{})
	finished := make(chan struct{})
	stopWatch := context.AfterFunc(ctx, func() {
		defer close(finished)
		wait := rearmFirst
		timer := time.NewTimer(wait)
		defer timer.Stop()
		for {
			if conn.SetReadDeadline(time.Now()) != nil {
				return // no deadline support, or closed: nothing to undo
			}
			select {
			case <-stopped:
				return
			case <-timer.C:
			}
			wait = min(2*wait, rearmMax)
			timer.Reset(wait)
		}
	})
	return func() {
		close(stopped)
		if !stopWatch() { // the callback ran or is running
			<-finished
			_ = conn.SetReadDeadline(time.Time{})
		}
	}
}
