package tlsmode

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"

	"golang.org/x/net/idna"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
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
// NoTLS mode: the feature must not be offered or attempted at all (and the
// caller applies Decide(NoTLS, …) to the peer's features itself).
//
// Unlike xmpp.StartTLS, the listing carries <required/> only in Required
// mode, the initiating side verifies the peer against the remote (target)
// XMPP domain, and cfg is never modified.
//
// Receiving side: cfg supplies the certificate (Certificates, GetCertificate
// or GetConfigForClient). Without one the peer gets <failure/> and
// Negotiate returns ErrNoCertificate, never a half-open stream.
//
// Initiating side: cfg may be nil. A clone is used with ServerName set to the
// remote domain in A-label form if cfg.ServerName is empty (never the SRV
// target host, never our own domain) and MinVersion raised to TLS 1.2
// (RFC 7590). Negotiate applies Decide: with Optional mode and a peer that
// did not list STARTTLS it stays in plaintext; with Required mode it returns
// a *PolicyError before sending anything, and the caller closes the stream
// with its Condition.
//
// The req value returned by List and Parse is true whenever STARTTLS is
// listed, even without <required/> on the wire: mellium's negotiator marks
// the session Ready after a round with no required feature and would then
// skip the stream restart that STARTTLS needs. The wire marker is reported
// separately, as the Peer value Parse returns.
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
	serverCfg := serverConfig(cfg)
	return xmpp.StreamFeature{
		Name:       xml.Name{Space: NS, Local: "starttls"},
		Prohibited: xmpp.Secure,
		List: func(_ context.Context, w xmlstream.TokenWriter, start xml.StartElement) (bool, error) {
			return true, writeListing(w, start, required)
		},
		Parse: func(_ context.Context, d *xml.Decoder, start *xml.StartElement) (bool, any, error) {
			peer, err := parseListing(d, start)
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

func parseListing(d *xml.Decoder, start *xml.StartElement) (Peer, error) {
	if start.Name.Space != NS || start.Name.Local != "starttls" {
		return PeerNoTLS, fmt.Errorf("tlsmode: expected STARTTLS feature, got <%s xmlns='%s'>", start.Name.Local, start.Name.Space)
	}
	var listing struct {
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

// receive handles a <starttls/> the peer sent (we are the receiving server).
func receive(ctx context.Context, session *xmpp.Session, cfg *tls.Config) (xmpp.SessionState, io.ReadWriter, error) {
	conn := session.Conn()
	if err := consumeStartTLS(session); err != nil {
		_, _ = io.WriteString(conn, failureElem+streamEnd)
		return 0, nil, err
	}
	if !hasCertificate(cfg) {
		_, _ = io.WriteString(conn, failureElem+streamEnd)
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
func consumeStartTLS(session *xmpp.Session) error {
	r := session.TokenReader()
	defer r.Close()
	d := xml.NewTokenDecoder(r)
	tok, err := d.Token()
	if err != nil {
		return fmt.Errorf("tlsmode: read <starttls/>: %w", err)
	}
	start, ok := tok.(xml.StartElement)
	if !ok || start.Name.Local != "starttls" || start.Name.Space != NS {
		return fmt.Errorf("tlsmode: expected <starttls/>, got %T %v", tok, tok)
	}
	if err := d.Skip(); err != nil {
		return fmt.Errorf("tlsmode: read <starttls/>: %w", err)
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
	clientCfg, err := clientConfig(cfg, session.RemoteAddr())
	if err != nil {
		return 0, nil, err
	}
	conn := session.Conn()
	if _, err := io.WriteString(conn, startTLSElem); err != nil {
		return 0, nil, fmt.Errorf("tlsmode: write <starttls/>: %w", err)
	}
	if err := awaitProceed(session); err != nil {
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
func awaitProceed(session *xmpp.Session) error {
	r := session.TokenReader()
	defer r.Close()
	d := xml.NewTokenDecoder(r)
	for {
		tok, err := d.Token()
		if err != nil {
			return fmt.Errorf("tlsmode: waiting for <proceed/>: %w", err)
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
					return fmt.Errorf("tlsmode: read <proceed/>: %w", err)
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

// serverConfig enforces the TLS 1.2 floor (RFC 7590) on the receiving side.
// It clones once, when the feature is built, rather than per connection, so
// that automatic session-ticket keys stay shared between connections.
func serverConfig(cfg *tls.Config) *tls.Config {
	if cfg == nil || cfg.MinVersion >= tls.VersionTLS12 {
		return cfg
	}
	c := cfg.Clone()
	c.MinVersion = tls.VersionTLS12
	return c
}

// clientConfig builds the initiating side's config for one connection to
// remote. It works on a clone: cfg may be shared by many goroutines.
func clientConfig(cfg *tls.Config, remote jid.JID) (*tls.Config, error) {
	var c *tls.Config
	if cfg == nil {
		c = &tls.Config{}
	} else {
		c = cfg.Clone()
	}
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ServerName == "" {
		domain := remote.Domainpart()
		if domain == "" {
			return nil, errors.New("tlsmode: cannot start TLS: the session has no remote domain to verify")
		}
		// jid keeps the Unicode form; SNI and certificate dNSNames use
		// A-labels (RFC 6125 §6.4.2, RFC 6066 §3).
		name, err := idna.Lookup.ToASCII(domain)
		if err != nil {
			return nil, fmt.Errorf("tlsmode: remote domain %q: %w", domain, err)
		}
		c.ServerName = name
	}
	return c, nil
}
