package prosodytest

import (
	"context"
	"encoding/base64"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"
)

const (
	// recvBuffer is how many received stanzas wait for Recv before the
	// reader stops reading (and TCP pushes back on the server).
	recvBuffer = 1024
	// closeWait bounds how long Close waits for the server's </stream:stream>.
	closeWait = 2 * time.Second
	// readyMax bounds the stanzas read while waiting for the login barrier.
	readyMax = 10000
	// defaultResource is bound when the JID has none.
	defaultResource = "prosodytest"
)

// Client is a logged-in c2s session: SASL PLAIN over plain TCP, a bound
// resource and initial presence sent, so messages to the bare JID reach it.
// Send and Recv may be called concurrently with each other; Close ends both.
type Client struct {
	conn net.Conn
	jid  string // full JID bound by the server

	wmu sync.Mutex // serialises writes

	stanzas chan Stanza   // filled by the reader goroutine
	closing chan struct{} // closed by Close, unblocks the reader
	readErr error         // why the reader ended; read after stanzas is closed
	done    chan struct{} // closed when the reader goroutine has returned

	closeOnce sync.Once
	closeErr  error
}

// Dial logs in to s's c2s listener as jid (user@domain or
// user@domain/resource) with password.
func (s *Server) Dial(ctx context.Context, jid, password string) (*Client, error) {
	addr := s.C2SAddr()
	if !addr.IsValid() {
		return nil, fmt.Errorf("%w: c2s listener is disabled", ErrInvalidConfig)
	}
	return Dial(ctx, addr, jid, password)
}

// Dial connects to a c2s listener at addr and logs in as jid (user@domain
// or user@domain/resource) with SASL PLAIN, binds a resource, sends initial
// presence and waits until the server has processed it (an XEP-0199 ping
// round trip), so that when Dial returns the user is online. Stanzas that
// arrived meanwhile (offline messages, say) are kept for Recv; the server's
// reflection of the client's own presence is dropped.
//
// It speaks without TLS, which prosodytest servers allow on c2s; it is test
// code and must never carry real credentials.
func Dial(ctx context.Context, addr netip.AddrPort, jid, password string) (*Client, error) {
	local, domain, resource, err := splitJID(jid)
	if err != nil {
		return nil, err
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", addr.String())
	if err != nil {
		return nil, fmt.Errorf("prosodytest: dial c2s %s: %w", addr, err)
	}
	// Until the reader goroutine runs, ctx bounds the login by deadlines.
	if dl, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	c := &Client{
		conn:    conn,
		stanzas: make(chan Stanza, recvBuffer),
		closing: make(chan struct{}),
		done:    make(chan struct{}),
	}
	sr, early, err := c.login(local, domain, resource, password)
	stopped := stop()
	if err == nil && !stopped {
		err = ctx.Err()
	}
	if err != nil {
		conn.Close()
		if ctx.Err() != nil {
			return nil, fmt.Errorf("prosodytest: login as %s at %s: %w (%v)", jid, addr, ctx.Err(), err)
		}
		return nil, fmt.Errorf("prosodytest: login as %s at %s: %w", jid, addr, err)
	}
	_ = conn.SetDeadline(time.Time{})
	for _, st := range early {
		c.stanzas <- st // early holds at most recvBuffer stanzas
	}
	go c.read(sr)
	return c, nil
}

// splitJID parses user@domain[/resource].
func splitJID(jid string) (local, domain, resource string, err error) {
	bare, resource, _ := strings.Cut(jid, "/")
	local, domain, ok := strings.Cut(bare, "@")
	if !ok || local == "" || domain == "" || strings.ContainsAny(bare, "<>&'\"/ ") {
		return "", "", "", fmt.Errorf("%w: JID %q (want user@domain or user@domain/resource)", ErrInvalidConfig, jid)
	}
	if resource == "" {
		resource = defaultResource
	}
	return local, domain, resource, nil
}

// login runs the c2s negotiation and returns the reader positioned after
// the login barrier and the stanzas received before it.
func (c *Client) login(local, domain, resource, password string) (*streamReader, []Stanza, error) {
	sr, features, err := c.open(domain)
	if err != nil {
		return nil, nil, err
	}
	if !hasPlain(features) {
		return nil, nil, &StreamError{Condition: "unsupported-feature", Text: "the server offers no SASL PLAIN on this unencrypted stream: " + string(features.Raw)}
	}
	auth := base64.StdEncoding.EncodeToString([]byte("\x00" + local + "\x00" + password))
	if err := c.write(fmt.Sprintf("<auth xmlns='%s' mechanism='PLAIN'>%s</auth>", nsSASL, auth)); err != nil {
		return nil, nil, err
	}
	st, err := sr.next()
	if err != nil {
		return nil, nil, err
	}
	switch {
	case st.Name.Space == nsSASL && st.Name.Local == "success":
	case st.Name.Space == nsSASL && st.Name.Local == "failure":
		return nil, nil, parseSASLFailure(st)
	default:
		return nil, nil, unexpected("SASL <success/>", st)
	}

	// RFC 6120 §6.4.6: a new stream after SASL success. The server sends
	// nothing more on the old stream, so a new decoder starts clean.
	if sr, _, err = c.open(domain); err != nil {
		return nil, nil, err
	}
	if err := c.write(fmt.Sprintf("<iq type='set' id='bind'><bind xmlns='%s'><resource>%s</resource></bind></iq>", nsBind, xmlEscape(resource))); err != nil {
		return nil, nil, err
	}
	st, err = sr.next()
	if err != nil {
		return nil, nil, err
	}
	var bound struct {
		Type string `xml:"type,attr"`
		JID  string `xml:"bind>jid"`
	}
	if err := st.Decode(&bound); err != nil || st.Name.Local != "iq" || bound.Type != "result" || bound.JID == "" {
		return nil, nil, unexpected("the resource binding result", st)
	}
	c.jid = bound.JID

	// Initial presence, then a ping to the server: its result comes after
	// everything the presence caused on this session.
	if err := c.write(fmt.Sprintf("<presence/><iq type='get' id='ready' to='%s'><ping xmlns='%s'/></iq>", xmlEscape(domain), nsPing)); err != nil {
		return nil, nil, err
	}
	var early []Stanza
	for range readyMax {
		st, err := sr.next()
		if err != nil {
			return nil, nil, err
		}
		switch {
		case st.Name.Local == "iq" && st.Get("id") == "ready":
			return sr, early, nil
		case st.Name.Local == "presence" && st.Get("from") == c.jid:
			// our own presence, reflected
		default:
			if len(early) == recvBuffer {
				return nil, nil, &StreamError{Condition: "policy-violation", Text: fmt.Sprintf("more than %d stanzas arrived during login", recvBuffer)}
			}
			early = append(early, st)
		}
	}
	return nil, nil, &StreamError{Condition: "policy-violation", Text: "no answer to the login ping"}
}

// open sends a stream header and reads the server's header and features.
func (c *Client) open(domain string) (*streamReader, Stanza, error) {
	if err := c.write(fmt.Sprintf("<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='%s' to='%s' version='1.0'>", nsStream, xmlEscape(domain))); err != nil {
		return nil, Stanza{}, err
	}
	sr := newStreamReader(c.conn)
	if _, err := sr.header(); err != nil {
		return nil, Stanza{}, err
	}
	features, err := sr.next()
	if err != nil {
		return nil, Stanza{}, err
	}
	if features.Name.Space != nsStream || features.Name.Local != "features" {
		return nil, Stanza{}, unexpected("<stream:features/>", features)
	}
	return sr, features, nil
}

func hasPlain(features Stanza) bool {
	var f struct {
		Mechanisms []string `xml:"mechanisms>mechanism"`
	}
	if err := features.Decode(&f); err != nil {
		return false
	}
	for _, m := range f.Mechanisms {
		if m == "PLAIN" {
			return true
		}
	}
	return false
}

func parseSASLFailure(st Stanza) error {
	var f struct {
		Children []struct {
			XMLName xml.Name
			Text    string `xml:",chardata"`
		} `xml:",any"`
	}
	e := &SASLError{Condition: "not-authorized"}
	if err := st.Decode(&f); err != nil {
		return e
	}
	for _, ch := range f.Children {
		if ch.XMLName.Local == "text" {
			e.Text = ch.Text
		} else {
			e.Condition = ch.XMLName.Local
		}
	}
	return e
}

func unexpected(want string, got Stanza) error {
	raw := got.String()
	if len(raw) > 300 {
		raw = raw[:300] + "…"
	}
	return &StreamError{Condition: "unexpected-element", Text: fmt.Sprintf("expected %s, got %s", want, raw)}
}

func (c *Client) write(s string) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	_, err := io.WriteString(c.conn, s)
	return err
}

// read delivers stanzas to Recv until the stream or the connection ends.
func (c *Client) read(sr *streamReader) {
	defer close(c.done)
	defer close(c.stanzas)
	for {
		st, err := sr.next()
		if err != nil {
			c.readErr = err
			return
		}
		select {
		case c.stanzas <- st:
		case <-c.closing:
			c.readErr = ErrClosed
			return
		}
	}
}

// JID returns the full JID the server bound, e.g. "alice@a.test/prosodytest".
func (c *Client) JID() string { return c.jid }

// Send writes raw XML (one or more stanzas) to the stream. ctx bounds the
// write; if it ends mid-write the stream is broken and the Client should be
// closed.
func (c *Client) Send(ctx context.Context, raw []byte) error {
	c.wmu.Lock()
	defer c.wmu.Unlock()
	if dl, ok := ctx.Deadline(); ok {
		_ = c.conn.SetWriteDeadline(dl)
		defer c.conn.SetWriteDeadline(time.Time{})
	}
	stop := context.AfterFunc(ctx, func() { _ = c.conn.SetWriteDeadline(time.Now()) })
	defer stop()
	if _, err := c.conn.Write(raw); err != nil {
		if ctx.Err() != nil {
			return fmt.Errorf("prosodytest: send: %w", ctx.Err())
		}
		return fmt.Errorf("prosodytest: send: %w", err)
	}
	return nil
}

// Recv returns the next top-level element the server sent, in order. It
// returns io.EOF once the server has closed the stream, a *StreamError if
// it sent a stream error, ErrClosed after Close, and ctx's error if ctx
// ends first (the Client stays usable then).
func (c *Client) Recv(ctx context.Context) (Stanza, error) {
	select {
	case st, ok := <-c.stanzas:
		if !ok {
			return Stanza{}, c.readErr // written before stanzas was closed
		}
		return st, nil
	case <-ctx.Done():
		return Stanza{}, ctx.Err()
	}
}

// Close ends the stream (</stream:stream>), waits briefly for the server to
// end its side, and closes the connection. Stanzas not yet received are
// dropped.
func (c *Client) Close() error {
	c.closeOnce.Do(func() {
		_ = c.conn.SetWriteDeadline(time.Now().Add(closeWait))
		werr := c.write("</stream:stream>")
		close(c.closing)
		timer := time.NewTimer(closeWait)
		defer timer.Stop()
		select {
		case <-c.done:
		case <-timer.C:
		}
		cerr := c.conn.Close()
		<-c.done
		if werr != nil && !errors.Is(werr, net.ErrClosed) {
			c.closeErr = werr
		} else if cerr != nil && !errors.Is(cerr, net.ErrClosed) {
			c.closeErr = cerr
		}
	})
	return c.closeErr
}

// xmlEscape escapes text for an attribute value or character data.
func xmlEscape(s string) string {
	var b strings.Builder
	_ = xml.EscapeText(&b, []byte(s))
	return b.String()
}

// Message returns a chat message stanza to `to` with body text, escaped.
func Message(to, id, body string) []byte {
	return fmt.Appendf(nil, "<message type='chat' to='%s' id='%s'><body>%s</body></message>", xmlEscape(to), xmlEscape(id), xmlEscape(body))
}
