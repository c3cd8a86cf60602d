package xcp

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha1" // #nosec G505 -- XEP-0114 defines the handshake with SHA-1
	"crypto/subtle"
	"crypto/tls"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"strings"
	"time"

	"mellium.im/xmpp/stream"
)

// Handshake returns the XEP-0114 handshake value for a stream ID and a
// shared secret: the lower-case hex SHA-1 of the stream ID followed by the
// secret, both as UTF-8. The side that opened the TCP connection computes
// it; the other side checks it.
func Handshake(streamID, secret string) string {
	sum := sha1.Sum([]byte(streamID + secret)) // #nosec G401 -- protocol-defined
	return hex.EncodeToString(sum[:])
}

// checkHandshake compares a received handshake value with the expected one
// in constant time, ignoring case and surrounding white space.
func checkHandshake(got, streamID, secret string) bool {
	got = strings.ToLower(strings.TrimSpace(got))
	want := Handshake(streamID, secret)
	return subtle.ConstantTimeCompare([]byte(got), []byte(want)) == 1
}

// newStreamID returns 128 random bits in hex: stream IDs feed the
// handshake hash, so they must never repeat.
func newStreamID() string {
	var b [16]byte
	_, _ = rand.Read(b[:]) // never fails (crypto/rand documents it)
	return hex.EncodeToString(b[:])
}

// conn is one TCP (or TLS) connection carrying a router link stream.
type conn struct {
	nc   net.Conn
	rd   *deadlineReader
	sc   *scanner
	w    *bufio.Writer
	cw   countingWriter // under w: counts what reached the kernel
	o    *options
	ns   string // content namespace of the stream
	name string // component name
	id   string // stream ID
	addr string // the peer's address, for logs and errors

	headerSent bool
}

// deadlineReader pushes the read deadline forward before every read, so
// that a silent peer is detected (dead-peer detection).
type deadlineReader struct {
	c    net.Conn
	idle time.Duration // 0: leave the deadline alone
}

func (r *deadlineReader) Read(p []byte) (int, error) {
	if r.idle > 0 {
		_ = r.c.SetReadDeadline(time.Now().Add(r.idle))
	}
	return r.c.Read(p)
}

// countingWriter counts the bytes its writer accepted.
type countingWriter struct {
	w io.Writer
	n int64
}

func (c *countingWriter) Write(p []byte) (int, error) {
	n, err := c.w.Write(p)
	c.n += int64(n)
	return n, err
}

// preAuthMaxElem bounds elements before the handshake succeeds: a
// <handshake/> is 60 bytes, a stream error a few hundred.
const preAuthMaxElem = 1 << 10

// maxStreamIDLen bounds the stream ID we compute a handshake over.
const maxStreamIDLen = 128

func newConn(nc net.Conn, o *options, ns string) *conn {
	rd := &deadlineReader{c: nc}
	lim := o.lim
	lim.maxElem = min(lim.maxElem, preAuthMaxElem) // until authenticated
	c := &conn{
		nc:   nc,
		rd:   rd,
		sc:   newScanner(rd, lim),
		o:    o,
		ns:   ns,
		addr: nc.RemoteAddr().String(),
	}
	c.cw.w = nc
	c.w = bufio.NewWriterSize(&c.cw, writeBufSize)
	return c
}

// authenticated lifts the pre-authentication limits.
func (c *conn) authenticated() {
	c.sc.lim = c.o.lim
	_ = c.nc.SetDeadline(time.Time{})
}

// secureServer runs the TLS server handshake when TLS is configured.
func secureServer(ctx context.Context, nc net.Conn, cfg *tls.Config, timeout time.Duration) (net.Conn, error) {
	if cfg == nil {
		return nc, nil
	}
	tc := tls.Server(nc, cfg)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

// secureClient runs the TLS client handshake when TLS is configured.
func secureClient(ctx context.Context, nc net.Conn, cfg *tls.Config, addr string, timeout time.Duration) (net.Conn, error) {
	if cfg == nil {
		return nc, nil
	}
	tc := tls.Client(nc, clientTLS(cfg, addr))
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if err := tc.HandshakeContext(ctx); err != nil {
		return nil, err
	}
	return tc, nil
}

func (c *conn) writeHeader(to, from, id string) {
	c.w.WriteString("<stream:stream xmlns='" + c.ns + "' xmlns:stream='" + nsStream + "'")
	var b strings.Builder
	for _, a := range [...]struct{ n, v string }{{"to", to}, {"from", from}, {"id", id}} {
		if a.v != "" {
			b.WriteString(" " + a.n + "='")
			escapeAttrTo(&b, a.v)
			b.WriteByte('\'')
		}
	}
	b.WriteByte('>')
	c.w.WriteString(b.String())
	c.headerSent = true
}

func streamErrorXML(se *StreamError) string {
	var b strings.Builder
	b.WriteString("<stream:error><" + se.Condition.Err + " xmlns='" + nsStreamErrors + "'/>")
	if se.Text != "" {
		b.WriteString("<text xmlns='" + nsStreamErrors + "'>")
		escapeTextTo(&b, se.Text)
		b.WriteString("</text>")
	}
	b.WriteString("</stream:error>")
	return b.String()
}

// fail ends the stream with err. If err is a stream error of ours it is
// sent first (after our stream header, if we have not sent one yet), as
// RFC 6120 §4.9.1.1 asks. It returns err.
func (c *conn) fail(err error) error {
	var se *StreamError
	if errors.As(err, &se) && !se.Remote {
		_ = c.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
		if !c.headerSent {
			// No stream ID: there is no handshake to compute over it.
			c.writeHeader("", c.name, "")
		}
		c.w.WriteString(streamErrorXML(se) + "</stream:stream>")
		_ = c.w.Flush()
	}
	return err
}

// remoteError decodes a <stream:error/> the peer sent.
func remoteError(raw []byte) *StreamError {
	var e stream.Error
	_ = xml.Unmarshal(raw, &e) // best effort: the condition is what matters
	se := &StreamError{Condition: stream.Error{Err: e.Err}, Remote: true}
	if se.Condition.Err == "" {
		se.Condition = stream.UndefinedCondition
	}
	if len(e.Text) > 0 {
		se.Text = truncString(e.Text[0].Value)
	}
	return se
}

func checkHeader(h header, ns string) error {
	if h.local != "stream" || h.streamNS != nsStream {
		return violation(stream.InvalidNamespace, "stream header <%s> is not <stream:stream> in %s", truncString(h.qname), nsStream)
	}
	if h.ns != ns {
		return violation(stream.InvalidNamespace, "content namespace %q, expected %q", truncString(h.ns), ns)
	}
	return nil
}

// handshakeText extracts the character data of a <handshake/> element.
func handshakeText(raw []byte) string {
	var v struct {
		Text string `xml:",chardata"`
	}
	if err := xml.Unmarshal(raw, &v); err != nil {
		return ""
	}
	return v.Text
}

// initiate runs the handshake as the side that opened the connection: it
// sends the stream header naming the component, reads the peer's header,
// proves knowledge of the secret and waits for the empty <handshake/>.
func (c *conn) initiate(name, secret string) error {
	c.name = name
	_ = c.nc.SetDeadline(time.Now().Add(c.o.handshakeTimeout))
	if c.ns == NSConnect {
		c.writeHeader("", name, "")
	} else {
		c.writeHeader(name, "", "")
	}
	if err := c.w.Flush(); err != nil {
		return err
	}
	h, err := c.sc.readHeader()
	if err != nil {
		return c.fail(handshakeReadErr(err))
	}
	if err := checkHeader(h, c.ns); err != nil {
		return c.fail(err)
	}
	if err := checkResponder(h, c.ns, name); err != nil {
		return c.fail(err)
	}
	if h.id == "" {
		// A responder refusing us at once sends its header without an ID,
		// then the error.
		el, err := c.sc.next()
		if err != nil {
			return c.fail(handshakeReadErr(err))
		}
		if el.kind == kindStreamError {
			return remoteError(el.raw)
		}
		return c.fail(violation(stream.BadFormat, "stream header without an id"))
	}
	if !validStreamID(h.id) {
		return c.fail(violation(stream.PolicyViolation, "stream id %q: expected 1 to %d printable ASCII characters", truncString(h.id), maxStreamIDLen))
	}
	c.id = h.id
	c.w.WriteString("<handshake>" + Handshake(h.id, secret) + "</handshake>")
	if err := c.w.Flush(); err != nil {
		return err
	}
	el, err := c.sc.next()
	if err != nil {
		return c.fail(handshakeReadErr(err))
	}
	switch el.kind {
	case kindHandshake:
	case kindStreamError:
		return remoteError(el.raw)
	default:
		return c.fail(violation(stream.NotAuthorized, "<%s/> before the handshake completed", el.kind))
	}
	c.authenticated()
	return nil
}

// checkResponder checks the responder's header names the component we
// asked for, before we compute a handshake for it. XEP-0114 makes the side
// that opened the connection hash whatever stream ID the other side
// chooses; we do so only for the component we meant to reach (the router
// dialling a component requires its from; a router answering a component
// may omit it), and only over a plausible ID (validStreamID), once per
// connection, after TLS (when configured) has verified the peer.
func checkResponder(h header, ns, name string) error {
	if h.from == "" && ns == NSAccept {
		return nil
	}
	if d, ok := normDomain(h.from); !ok || d != name {
		return violation(stream.InvalidFrom, "the other end answers as %q, not as component %q", truncString(h.from), name)
	}
	return nil
}

// validStreamID: 1 to maxStreamIDLen printable ASCII characters, which
// covers what servers generate (hex, UUIDs, base64) and nothing else.
func validStreamID(id string) bool {
	if id == "" || len(id) > maxStreamIDLen {
		return false
	}
	for i := 0; i < len(id); i++ {
		if id[i] <= ' ' || id[i] > '~' {
			return false
		}
	}
	return true
}

// checkCertName checks that the TLS peer of nc has a certificate valid for
// the DNS name name. The error is an x509.HostnameError when it is not.
func checkCertName(nc net.Conn, name string) error {
	tc, ok := nc.(*tls.Conn)
	if !ok {
		return errors.New("xcp: no TLS certificate to check the component name against")
	}
	certs := tc.ConnectionState().PeerCertificates
	if len(certs) == 0 {
		return errors.New("xcp: the peer presented no TLS certificate")
	}
	return certs[0].VerifyHostname(name)
}

// respond runs the handshake as the side that accepted the connection.
// lookup returns the secret for a component name, or a *StreamError
// (host-unknown, conflict) to refuse it. accept is called once the
// handshake checks out, before the peer is told so: whatever it sets up
// (a route) is in place by the time the peer can use the stream; a
// *StreamError from it refuses the stream instead. If respond fails after
// accept succeeded, the caller undoes what accept did.
func (c *conn) respond(lookup func(name string) (string, error), accept func() error) error {
	_ = c.nc.SetDeadline(time.Now().Add(c.o.handshakeTimeout))
	h, err := c.sc.readHeader()
	if err != nil {
		return c.fail(handshakeReadErr(err))
	}
	name := h.to
	if c.ns == NSConnect && h.from != "" || name == "" {
		name = h.from
	}
	c.name = truncString(name)
	if err := checkHeader(h, c.ns); err != nil {
		return c.fail(err)
	}
	norm, ok := normDomain(name)
	if !ok {
		return c.fail(violation(stream.HostUnknown, "component name %q is not a domain", truncString(name)))
	}
	c.name = norm
	secret, err := lookup(norm)
	if err != nil {
		return c.fail(err)
	}
	c.id = newStreamID()
	c.writeHeader("", norm, c.id)
	if err := c.w.Flush(); err != nil {
		return err
	}
	el, err := c.sc.next()
	if err != nil {
		return c.fail(handshakeReadErr(err))
	}
	switch el.kind {
	case kindHandshake:
		if !checkHandshake(handshakeText(el.raw), c.id, secret) {
			return c.fail(violation(stream.NotAuthorized, "handshake does not match the secret configured for %q", norm))
		}
	case kindStreamError:
		return remoteError(el.raw)
	default:
		return c.fail(violation(stream.NotAuthorized, "<%s/> before the handshake", el.kind))
	}
	if err := accept(); err != nil {
		return c.fail(err)
	}
	c.w.WriteString("<handshake/>")
	if err := c.w.Flush(); err != nil {
		return err
	}
	c.authenticated()
	return nil
}

// handshakeReadErr turns a timeout during the handshake into the stream
// error that reports it.
func handshakeReadErr(err error) error {
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return violation(stream.ConnectionTimeout, "handshake not completed in time")
	}
	return err
}
