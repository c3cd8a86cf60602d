package xcp

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"sort"
	"strings"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"
)

// Defaults for the limits every link enforces.
const (
	DefaultMaxStanzaSize = 512 << 10 // bytes, as Prosody's default
	DefaultMaxDepth      = 64        // element nesting within a stanza
	defaultMaxAttrs      = 64
)

var defaultLimits = limits{maxElem: DefaultMaxStanzaSize, maxDepth: DefaultMaxDepth, maxAttrs: defaultMaxAttrs}

// Stanza is one XMPP stanza (<message/>, <presence/> or <iq/>) as it
// crosses a router link: its exact XML and the attributes routing needs.
// A Stanza is an immutable value, safe to share between goroutines; the
// zero Stanza is not a stanza (IsZero).
//
// The XML is kept verbatim so that relaying costs no re-encoding. It has no
// namespace prefixes declared outside itself; a stanza element without an
// xmlns attribute takes the content namespace of the stream it is written
// to, which on a router link is always a component namespace.
type Stanza struct {
	raw               string
	kind              kind
	to, from, typ, id string
}

// ParseStanza parses one stanza element from b, with the default limits
// (DefaultMaxStanzaSize, DefaultMaxDepth). An element without an xmlns
// attribute is taken to be in the component namespace; jabber:client and
// jabber:server stanzas are accepted too. The result does not alias b.
func ParseStanza(b []byte) (Stanza, error) {
	return parseStanza(b, defaultLimits)
}

func parseStanza(b []byte, lim limits) (Stanza, error) {
	sc := newElementScanner(b, lim)
	el, err := sc.next()
	if err != nil {
		if err == io.EOF {
			return Stanza{}, fmt.Errorf("%w: no element", ErrInvalidStanza)
		}
		return Stanza{}, fmt.Errorf("%w: %v", ErrInvalidStanza, err)
	}
	if !el.kind.stanza() {
		return Stanza{}, fmt.Errorf("%w: <%s/> is not a message, presence or iq", ErrInvalidStanza, el.kind)
	}
	st := makeStanza(el)
	if _, err := sc.next(); err != io.EOF {
		return Stanza{}, fmt.Errorf("%w: more than one element", ErrInvalidStanza)
	}
	return st, nil
}

// NewStanza encodes the tokens of one stanza, as built with the
// mellium.im/xmpp/stanza package for instance, and parses the result.
func NewStanza(r xml.TokenReader) (Stanza, error) {
	var buf bytes.Buffer
	enc := xml.NewEncoder(&buf)
	for {
		tok, err := r.Token()
		if tok != nil {
			if encErr := enc.EncodeToken(tok); encErr != nil {
				return Stanza{}, fmt.Errorf("%w: %v", ErrInvalidStanza, encErr)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return Stanza{}, fmt.Errorf("%w: %v", ErrInvalidStanza, err)
		}
	}
	if err := enc.Flush(); err != nil {
		return Stanza{}, fmt.Errorf("%w: %v", ErrInvalidStanza, err)
	}
	return ParseStanza(buf.Bytes())
}

// makeStanza copies an element out of the scanner's buffer.
func makeStanza(el element) Stanza {
	raw := string(el.raw)
	return Stanza{
		raw:  raw,
		kind: el.kind,
		to:   attrValue(raw, el.to),
		from: attrValue(raw, el.from),
		typ:  attrValue(raw, el.typ),
		id:   attrValue(raw, el.id),
	}
}

func attrValue(raw string, sp span) string {
	if !sp.ok() {
		return ""
	}
	v := raw[sp.start:sp.end]
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '&', '\t', '\n', '\r':
			return unescape([]byte(v))
		}
	}
	return v // shares raw's memory: no allocation
}

// IsZero reports whether s is the zero Stanza.
func (s Stanza) IsZero() bool { return s.raw == "" }

// Name is the element name: "message", "presence" or "iq".
func (s Stanza) Name() string {
	if s.IsZero() {
		return ""
	}
	return s.kind.String()
}

// To is the value of the to attribute.
func (s Stanza) To() string { return s.to }

// From is the value of the from attribute.
func (s Stanza) From() string { return s.from }

// Type is the value of the type attribute.
func (s Stanza) Type() string { return s.typ }

// ID is the value of the id attribute.
func (s Stanza) ID() string { return s.id }

// String returns the stanza's XML.
func (s Stanza) String() string { return s.raw }

// Len is the size of the stanza's XML in bytes.
func (s Stanza) Len() int { return len(s.raw) }

// WriteTo writes the stanza's XML to w.
func (s Stanza) WriteTo(w io.Writer) (int64, error) {
	n, err := io.WriteString(w, s.raw)
	return int64(n), err
}

// TokenReader returns the stanza as XML tokens, for mellium.im/xmpp and
// xmlstream. A stanza without its own xmlns has the component namespace.
func (s Stanza) TokenReader() xml.TokenReader {
	d := xml.NewDecoder(strings.NewReader(s.raw))
	return &nsTokenReader{d: d}
}

// nsTokenReader gives the top-level element the component namespace when
// the stanza inherits it, as it would inside the stream.
type nsTokenReader struct {
	d     *xml.Decoder
	depth int
	top   string
}

func (r *nsTokenReader) Token() (xml.Token, error) {
	tok, err := r.d.Token()
	switch t := tok.(type) {
	case xml.StartElement:
		r.depth++
		if r.depth == 1 && t.Name.Space == "" {
			t.Name.Space = NSAccept
			r.top = NSAccept
			return t, err
		}
	case xml.EndElement:
		r.depth--
		if r.depth == 0 && r.top != "" && t.Name.Space == "" {
			t.Name.Space = r.top
			return t, err
		}
	}
	return tok, err
}

// Decode unmarshals the stanza into v with encoding/xml, for example into a
// struct embedding stanza.Message.
func (s Stanza) Decode(v any) error {
	return xml.NewTokenDecoder(s.TokenReader()).Decode(v)
}

// ErrorReply returns the error stanza (RFC 6120 §8.3) that answers s: same
// name and id, to and from swapped, type "error", with e's type, condition
// and texts (e.By is written as the error's by attribute when set). ok is
// false when s must not be answered: it is itself an error, an IQ result,
// or it has no from address to answer.
func (s Stanza) ErrorReply(e stanza.Error) (reply Stanza, ok bool) {
	if s.IsZero() || s.typ == "error" || (s.kind == kindIQ && s.typ == "result") || s.from == "" {
		return Stanza{}, false
	}
	t := e.Type
	if t == "" {
		t = stanza.Cancel
	}
	cond := e.Condition
	if cond == "" {
		cond = stanza.UndefinedCondition
	}
	var b strings.Builder
	b.Grow(160 + len(s.to) + len(s.from) + len(s.id))
	name := s.kind.String()
	b.WriteString("<" + name + " from='")
	escapeAttrTo(&b, s.to)
	b.WriteString("' to='")
	escapeAttrTo(&b, s.from)
	b.WriteString("' type='error'")
	if s.id != "" {
		b.WriteString(" id='")
		escapeAttrTo(&b, s.id)
		b.WriteByte('\'')
	}
	b.WriteString("><error type='")
	escapeAttrTo(&b, string(t))
	b.WriteByte('\'')
	if by := e.By.String(); by != "" {
		b.WriteString(" by='")
		escapeAttrTo(&b, by)
		b.WriteByte('\'')
	}
	b.WriteString("><")
	b.WriteString(string(cond))
	b.WriteString(" xmlns='" + nsStanzaErrors + "'/>")
	langs := make([]string, 0, len(e.Text))
	for lang := range e.Text {
		langs = append(langs, lang)
	}
	sort.Strings(langs)
	for _, lang := range langs {
		b.WriteString("<text xmlns='" + nsStanzaErrors + "'")
		if lang != "" {
			b.WriteString(" xml:lang='")
			escapeAttrTo(&b, lang)
			b.WriteByte('\'')
		}
		b.WriteByte('>')
		escapeTextTo(&b, e.Text[lang])
		b.WriteString("</text>")
	}
	b.WriteString("</error></" + name + ">")
	return Stanza{raw: b.String(), kind: s.kind, to: s.from, from: s.to, typ: "error", id: s.id}, true
}

// bounce answers s with a stanza error of the given condition.
func bounce(s Stanza, cond stanza.Condition, text string) (Stanza, bool) {
	e := stanza.Error{Type: errorType(cond), Condition: cond}
	if text != "" {
		e.Text = map[string]string{"en": text}
	}
	return s.ErrorReply(e)
}

// errorType is the RFC 6120 §8.3.3 type for the conditions we send.
func errorType(cond stanza.Condition) stanza.ErrorType {
	switch cond {
	case stanza.RemoteServerTimeout, stanza.ResourceConstraint:
		return stanza.Wait
	case stanza.JIDMalformed:
		return stanza.Modify
	}
	return stanza.Cancel
}

func escapeAttrTo(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '\'':
			b.WriteString("&apos;")
		case '"':
			b.WriteString("&quot;")
		case '\t':
			b.WriteString("&#x9;")
		case '\n':
			b.WriteString("&#xA;")
		case '\r':
			b.WriteString("&#xD;")
		default:
			b.WriteByte(c)
		}
	}
}

func escapeTextTo(b *strings.Builder, s string) {
	for i := 0; i < len(s); i++ {
		switch c := s[i]; c {
		case '&':
			b.WriteString("&amp;")
		case '<':
			b.WriteString("&lt;")
		case '>':
			b.WriteString("&gt;")
		case '\r':
			b.WriteString("&#xD;")
		default:
			b.WriteByte(c)
		}
	}
}

// domainOf returns the normalised domainpart of the JID j (RFC 7622 §3.1:
// the resource starts at the first '/', the localpart ends at the first '@'
// before it). ok is false if j is not a usable address. The common case
// (an ASCII domain in lower case) allocates nothing.
func domainOf(j string) (string, bool) {
	if i := strings.IndexByte(j, '/'); i >= 0 {
		if i == len(j)-1 {
			return "", false
		}
		j = j[:i]
	}
	if i := strings.IndexByte(j, '@'); i >= 0 {
		if i == 0 {
			return "", false
		}
		j = j[i+1:]
	}
	return normDomain(j)
}

// normDomain normalises a domain for comparison: without a trailing dot,
// in lower case, with IDNA labels in their Unicode form as mellium's jid
// package does.
func normDomain(d string) (string, bool) {
	d = strings.TrimSuffix(d, ".")
	if d == "" || len(d) > 1023 || d[0] == '.' || d[len(d)-1] == '.' || strings.Contains(d, "..") {
		return "", false // empty labels
	}
	upper := false
	for i := 0; i < len(d); i++ {
		c := d[i]
		switch {
		case 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_':
		case 'A' <= c && c <= 'Z':
			upper = true
		case c == '[' || c == ']' || c == ':':
			// IPv6 literal; checked below.
		default:
			if c < 0x80 {
				return "", false
			}
			return slowDomain(d)
		}
	}
	if upper {
		d = strings.ToLower(d)
	}
	// IDNA A-labels and IP literals take the slow, exact path.
	if strings.Contains(d, "xn--") || strings.ContainsAny(d, "[]:") {
		return slowDomain(d)
	}
	return d, true
}

func slowDomain(d string) (string, bool) {
	n, ok := idnaDomain(d)
	if !ok {
		return "", false
	}
	// The IDNA mapping is lenient with odd input: insist on a fixed point,
	// so that the name compares equal however often it is normalised.
	if again, ok := idnaDomain(n); !ok || again != n {
		return "", false
	}
	return n, true
}

func idnaDomain(d string) (string, bool) {
	j, err := jid.New("", d, "")
	if err != nil {
		return "", false
	}
	n := strings.ToLower(j.Domainpart())
	if n == "" || n[0] == '.' || n[len(n)-1] == '.' || strings.Contains(n, "..") {
		return "", false
	}
	return n, true
}

// bareOf strips the resource from a JID.
func bareOf(j string) string {
	if i := strings.IndexByte(j, '/'); i >= 0 {
		return j[:i]
	}
	return j
}
