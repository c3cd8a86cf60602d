package wire

import (
	"bufio"
	"bytes"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"mellium.im/xmpp/stream"
)

// Namespaces used by every XMPP stream.
const (
	NSStream = "http://etherx.jabber.org/streams"
	NSXML    = "http://www.w3.org/XML/1998/namespace"
)

// Default limits. Prosody's S2S stanza size default is 512 KiB.
const (
	DefaultMaxElement = 512 << 10
	DefaultMaxDepth   = 64
	DefaultMaxAttrs   = 64
)

// ErrClosed is returned by Next when the peer closed the stream with
// </stream:stream>.
var ErrClosed = errors.New("wire: stream closed by peer")

// Error is a protocol violation found while reading. Condition is the stream
// error to send before closing.
type Error struct {
	Condition stream.Error
	Reason    string
	Err       error // underlying cause, if any
}

func (e *Error) Error() string {
	if e.Err != nil {
		return fmt.Sprintf("wire: %s: %s: %v", e.Condition.Err, e.Reason, e.Err)
	}
	return fmt.Sprintf("wire: %s: %s", e.Condition.Err, e.Reason)
}

// Unwrap lets errors.Is match the stream condition and the cause.
func (e *Error) Unwrap() []error {
	if e.Err != nil {
		return []error{e.Condition, e.Err}
	}
	return []error{e.Condition}
}

func violation(cond stream.Error, reason string, err error) *Error {
	return &Error{Condition: cond, Reason: reason, Err: err}
}

// Limits bound what a Reader accepts. Zero fields take the defaults.
type Limits struct {
	MaxElement int // bytes of one top-level element, whitespace before it included
	MaxDepth   int // nesting depth below the top-level element
	MaxAttrs   int // attributes on one element
}

func (l Limits) withDefaults() Limits {
	if l.MaxElement <= 0 {
		l.MaxElement = DefaultMaxElement
	}
	if l.MaxDepth <= 0 {
		l.MaxDepth = DefaultMaxDepth
	}
	if l.MaxAttrs <= 0 {
		l.MaxAttrs = DefaultMaxAttrs
	}
	return l
}

var errBudget = errors.New("element too large")

// budgetReader hands bytes to the XML decoder one at a time (encoding/xml
// reads through io.ByteReader anyway) and refuses to go past the budget, so
// that a single huge text node is stopped after MaxElement bytes instead of
// being buffered whole.
type budgetReader struct {
	r      *bufio.Reader
	budget int
	err    error // sticky
}

func (b *budgetReader) ReadByte() (byte, error) {
	if b.budget <= 0 {
		b.err = errBudget
		return 0, errBudget
	}
	c, err := b.r.ReadByte()
	if err != nil {
		return 0, err
	}
	b.budget--
	return c, nil
}

func (b *budgetReader) Read(p []byte) (int, error) {
	// Only ReadByte is used by encoding/xml; Read exists to satisfy io.Reader.
	if len(p) == 0 {
		return 0, nil
	}
	c, err := b.ReadByte()
	if err != nil {
		return 0, err
	}
	p[0] = c
	return 1, nil
}

// Reader reads one XML stream. It is not safe for concurrent use.
type Reader struct {
	lim     Limits
	br      *budgetReader
	d       *xml.Decoder
	content string
	buf     bytes.Buffer
}

// NewReader returns a Reader over r. The Reader buffers: after a security
// layer starts, make a new Reader over the new connection.
func NewReader(r io.Reader, lim Limits) *Reader {
	lim = lim.withDefaults()
	br, ok := r.(*bufio.Reader)
	if !ok {
		br = bufio.NewReaderSize(r, 4096)
	}
	rd := &Reader{lim: lim, br: &budgetReader{r: br, budget: lim.MaxElement}}
	rd.d = xml.NewDecoder(rd.br)
	rd.d.Strict = true
	return rd
}

// Buffered reports how many bytes have been read from the connection but not
// yet decoded. It must be zero when a security layer starts, otherwise the
// peer sent data it was not allowed to send.
func (r *Reader) Buffered() int { return r.br.r.Buffered() }

// Decoder returns the underlying decoder, for decoding a negotiation element
// in place after Next returned its start. The element limit still applies.
func (r *Reader) Decoder() *xml.Decoder { return r.d }

func (r *Reader) resetBudget() { r.br.budget = r.lim.MaxElement }

// token reads the next token and maps decoder failures and restricted XML to
// stream errors.
func (r *Reader) token() (xml.Token, error) {
	t, err := r.d.Token()
	if err != nil {
		return nil, r.mapErr(err)
	}
	switch t := t.(type) {
	case xml.Comment:
		return nil, violation(stream.RestrictedXML, "comment", nil)
	case xml.Directive:
		return nil, violation(stream.RestrictedXML, "DTD or directive", nil)
	case xml.ProcInst:
		// The XML declaration is allowed only first (handled in Header).
		return nil, violation(stream.RestrictedXML, "processing instruction "+t.Target, nil)
	case xml.StartElement:
		if len(t.Attr) > r.lim.MaxAttrs {
			return nil, violation(stream.PolicyViolation, fmt.Sprintf("more than %d attributes", r.lim.MaxAttrs), nil)
		}
		if dup := duplicateAttr(t.Attr); dup != "" {
			// encoding/xml lets repeated attributes through; a stanza with
			// two 'from' or 'to' values would mean different things to
			// different parsers.
			return nil, violation(stream.NotWellFormed, "attribute "+dup+" repeated", nil)
		}
	}
	return t, nil
}

// MapErr maps an error from decoding through Decoder to a stream error
// (*Error) where it is a protocol violation; transport errors pass through.
func (r *Reader) MapErr(err error) error {
	var we *Error
	if errors.As(err, &we) {
		return err
	}
	return r.mapErr(err)
}

func (r *Reader) mapErr(err error) error {
	if errors.Is(err, errBudget) || errors.Is(r.br.err, errBudget) {
		return violation(stream.PolicyViolation, fmt.Sprintf("element larger than %d bytes", r.lim.MaxElement), nil)
	}
	if strings.Contains(err.Error(), "CharsetReader") { // encoding/xml: a non-UTF-8 encoding was declared
		return violation(stream.UnsupportedEncoding, "only UTF-8 is allowed", err)
	}
	var se *xml.SyntaxError
	if errors.As(err, &se) {
		if strings.Contains(se.Msg, "unexpected EOF") {
			return io.ErrUnexpectedEOF
		}
		if strings.Contains(se.Msg, "encoding") || strings.Contains(se.Msg, "UTF-8") {
			return violation(stream.UnsupportedEncoding, se.Msg, err)
		}
		if strings.Contains(se.Msg, "entity") {
			return violation(stream.RestrictedXML, se.Msg, err)
		}
		return violation(stream.NotWellFormed, se.Msg, err)
	}
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err // transport errors pass through
}

// Header reads up to and including the stream header and returns it. An XML
// declaration may come first; whitespace before the header is ignored.
func (r *Reader) Header() (xml.StartElement, error) {
	r.resetBudget()
	first := true
	for range 64 { // bounded: a header is at most a declaration and some whitespace away
		t, err := r.d.Token()
		if err != nil {
			return xml.StartElement{}, r.mapErr(err)
		}
		switch t := t.(type) {
		case xml.ProcInst:
			if !first || t.Target != "xml" {
				return xml.StartElement{}, violation(stream.RestrictedXML, "processing instruction "+t.Target, nil)
			}
			if enc := procInstParam(string(t.Inst), "encoding"); enc != "" && !strings.EqualFold(enc, "utf-8") {
				return xml.StartElement{}, violation(stream.UnsupportedEncoding, "encoding "+enc, nil)
			}
		case xml.CharData:
			if !isSpace(t) {
				return xml.StartElement{}, violation(stream.NotWellFormed, "text before the stream header", nil)
			}
		case xml.StartElement:
			if len(t.Attr) > r.lim.MaxAttrs {
				return xml.StartElement{}, violation(stream.PolicyViolation, fmt.Sprintf("more than %d attributes", r.lim.MaxAttrs), nil)
			}
			if dup := duplicateAttr(t.Attr); dup != "" {
				return xml.StartElement{}, violation(stream.NotWellFormed, "attribute "+dup+" repeated in the stream header", nil)
			}
			if t.Name.Space != NSStream || t.Name.Local != "stream" {
				return t.Copy(), violation(stream.InvalidNamespace, "stream header is not <stream:stream> in "+NSStream, nil)
			}
			r.content = Attr(t, "", "xmlns")
			return t.Copy(), nil
		case xml.Comment:
			return xml.StartElement{}, violation(stream.RestrictedXML, "comment", nil)
		case xml.Directive:
			return xml.StartElement{}, violation(stream.RestrictedXML, "DTD or directive", nil)
		default:
			return xml.StartElement{}, violation(stream.NotWellFormed, "unexpected token before stream header", nil)
		}
		first = false
	}
	return xml.StartElement{}, violation(stream.NotWellFormed, "no stream header", nil)
}

// Next returns the start of the next top-level element, skipping whitespace
// keepalives. At the peer's </stream:stream> it returns ErrClosed.
func (r *Reader) Next() (xml.StartElement, error) {
	for {
		r.resetBudget()
		t, err := r.token()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := t.(type) {
		case xml.StartElement:
			return t, nil
		case xml.EndElement:
			return xml.StartElement{}, ErrClosed
		case xml.CharData:
			if !isSpace(t) {
				return xml.StartElement{}, violation(stream.BadFormat, "text between top-level elements", nil)
			}
		}
	}
}

// Skip discards the rest of the element whose start Next returned, within
// the limits.
func (r *Reader) Skip() error {
	depth := 1
	for depth > 0 {
		t, err := r.token()
		if err != nil {
			return err
		}
		switch t.(type) {
		case xml.StartElement:
			depth++
			if depth > r.lim.MaxDepth {
				return violation(stream.PolicyViolation, "elements nested too deeply", nil)
			}
		case xml.EndElement:
			depth--
		}
	}
	return nil
}

// Element reads the rest of the element whose start Next returned and
// returns it as canonical bytes (see the package comment). The returned
// slice is freshly allocated and owned by the caller.
func (r *Reader) Element(start xml.StartElement) ([]byte, error) {
	b := &r.buf
	b.Reset()
	var stack [16]string
	nsStack := stack[:0]
	inherit := r.content
	if err := checkNames(start); err != nil {
		return nil, err
	}
	writeStart(b, start, inherit)
	nsStack = append(nsStack, start.Name.Space)
	for len(nsStack) > 0 {
		t, err := r.token()
		if err != nil {
			return nil, err
		}
		switch t := t.(type) {
		case xml.StartElement:
			if len(nsStack) >= r.lim.MaxDepth {
				return nil, violation(stream.PolicyViolation, "elements nested too deeply", nil)
			}
			if err := checkNames(t); err != nil {
				return nil, err
			}
			writeStart(b, t, nsStack[len(nsStack)-1])
			nsStack = append(nsStack, t.Name.Space)
		case xml.EndElement:
			nsStack = nsStack[:len(nsStack)-1]
			b.WriteString("</")
			b.WriteString(t.Name.Local)
			b.WriteByte('>')
		case xml.CharData:
			escapeText(b, t)
		}
	}
	out := make([]byte, b.Len())
	copy(out, b.Bytes())
	if b.Cap() > 64<<10 {
		r.buf = bytes.Buffer{} // do not keep a large buffer on an idle stream
	}
	return out, nil
}

// writeStart writes a start tag whose parent is in namespace parent. Prefixes
// are dropped: the element declares its own namespace when it differs from
// the parent's, and namespaced attributes get generated prefixes.
func writeStart(b *bytes.Buffer, t xml.StartElement, parent string) {
	b.WriteByte('<')
	b.WriteString(t.Name.Local)
	if t.Name.Space != parent {
		b.WriteString(" xmlns='")
		escapeAttr(b, t.Name.Space)
		b.WriteByte('\'')
	}
	n := 0
	for _, a := range t.Attr {
		if a.Name.Space == "xmlns" || (a.Name.Space == "" && a.Name.Local == "xmlns") {
			continue
		}
		b.WriteByte(' ')
		switch a.Name.Space {
		case "":
		case NSXML, "xml":
			b.WriteString("xml:")
		default:
			fmt.Fprintf(b, "xmlns:a%d='", n)
			escapeAttr(b, a.Name.Space)
			fmt.Fprintf(b, "' a%d:", n)
			n++
		}
		b.WriteString(a.Name.Local)
		b.WriteString("='")
		escapeAttr(b, a.Value)
		b.WriteByte('\'')
	}
	b.WriteByte('>')
}

// Attr returns the value of the attribute space:local of t, or "".
func Attr(t xml.StartElement, space, local string) string {
	for _, a := range t.Attr {
		if a.Name.Local == local && a.Name.Space == space {
			return a.Value
		}
	}
	return ""
}

// HasAttr reports whether t has the attribute space:local.
func HasAttr(t xml.StartElement, space, local string) bool {
	for _, a := range t.Attr {
		if a.Name.Local == local && a.Name.Space == space {
			return true
		}
	}
	return false
}

// duplicateAttr returns the name of an attribute that appears twice (after
// namespace resolution), or "". Elements carry few attributes, and at most
// MaxAttrs, so the quadratic scan is cheaper than a map.
func duplicateAttr(attrs []xml.Attr) string {
	for i := 1; i < len(attrs); i++ {
		for j := 0; j < i; j++ {
			if attrs[i].Name == attrs[j].Name {
				return attrs[i].Name.Local
			}
		}
	}
	return ""
}

func isSpace(b []byte) bool {
	for _, c := range b {
		if c != ' ' && c != '\t' && c != '\r' && c != '\n' {
			return false
		}
	}
	return true
}

func procInstParam(inst, name string) string {
	i := strings.Index(inst, name)
	if i < 0 {
		return ""
	}
	rest := strings.TrimLeft(inst[i+len(name):], " \t\r\n")
	if !strings.HasPrefix(rest, "=") {
		return ""
	}
	rest = strings.TrimLeft(rest[1:], " \t\r\n")
	if rest == "" || (rest[0] != '\'' && rest[0] != '"') {
		return ""
	}
	q := rest[0]
	rest = rest[1:]
	if j := strings.IndexByte(rest, q); j >= 0 {
		return rest[:j]
	}
	return ""
}

// SetContent sets the namespace that top-level elements inherit, for a
// Reader over a fragment rather than a whole stream (no header).
func (r *Reader) SetContent(ns string) { r.content = ns }

// checkNames rejects element and attribute names that encoding/xml lets
// through but that are not XML names once the prefix is gone (for example
// "p:0"), so that canonical output is always well-formed.
func checkNames(t xml.StartElement) error {
	if !isName(t.Name.Local) {
		return violation(stream.BadFormat, "invalid element name "+strconv.Quote(t.Name.Local), nil)
	}
	for _, a := range t.Attr {
		if !isName(a.Name.Local) {
			return violation(stream.BadFormat, "invalid attribute name "+strconv.Quote(a.Name.Local), nil)
		}
	}
	return nil
}

// isName is a conservative XML NCName check: ASCII letters, digits, '-',
// '.', '_' and any non-ASCII character, not starting with a digit, '-' or
// '.'.
func isName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c >= 0x80, c == '_', 'a' <= c && c <= 'z', 'A' <= c && c <= 'Z':
		case i > 0 && ('0' <= c && c <= '9' || c == '-' || c == '.'):
		default:
			return false
		}
	}
	return true
}
