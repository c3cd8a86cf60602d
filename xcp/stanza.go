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
// The XML is kept verbatim so that relaying costs no re-encoding, with one
// exception: the stanza element carries no xmlns attribute (one naming the
// content namespace is dropped when the stanza is read), so that it takes
// the content namespace of the stream it is written to, jabber:component:
// accept or jabber:component:connect. It has no namespace prefixes
// declared outside itself.
type Stanza struct {
	raw               string
	kind              kind
	ns                string // content namespace of the stream it came from; "": NSAccept
	to, from, typ, id string
}

// ParseStanza parses one stanza element from b, with the default limits
// (DefaultMaxStanzaSize, DefaultMaxDepth). An element without an xmlns
// attribute is taken to be in the component namespace; an element in
// jabber:client, jabber:server or either component namespace is accepted
// too, and its xmlns attribute dropped (the namespace is rewritten, as
// servers do when they route a stanza). The result does not alias b.
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
	st := makeStanza(el, NSAccept)
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

// makeStanza copies an element out of the scanner's buffer, without the
// top-level xmlns attribute the scanner marked for stripping. ns is the
// content namespace of the stream it arrived on.
func makeStanza(el element, ns string) Stanza {
	var raw string
	to, from, typ, id := el.to, el.from, el.typ, el.id
	if !el.strip.ok() {
		raw = string(el.raw)
	} else {
		cut := el.strip.end - el.strip.start
		var b strings.Builder
		b.Grow(len(el.raw) - int(cut))
		b.Write(el.raw[:el.strip.start])
		b.Write(el.raw[el.strip.end:])
		raw = b.String()
		for _, sp := range []*span{&to, &from, &typ, &id} {
			if sp.ok() && sp.start >= el.strip.end {
				sp.start -= cut
				sp.end -= cut
			}
		}
	}
	if ns == NSAccept {
		ns = "" // the default: Stanzas from ParseStanza compare equal
	}
	return Stanza{
		raw:  raw,
		kind: el.kind,
		ns:   ns,
		to:   attrValue(raw, to),
		from: attrValue(raw, from),
		typ:  attrValue(raw, typ),
		id:   attrValue(raw, id),
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
// xmlstream. The stanza and its descendants that inherit the stream's
// content namespace are in the namespace of the stream the stanza arrived
// on (NSAccept or NSConnect); a stanza made with ParseStanza or NewStanza is
// in NSAccept.
func (s Stanza) TokenReader() xml.TokenReader {
	ns := s.ns
	if ns == "" {
		ns = NSAccept
	}
	return &nsTokenReader{d: xml.NewDecoder(strings.NewReader(s.raw)), ns: ns}
}

// nsTokenReader puts the content namespace on the elements that inherit
// it, as they would inside the stream. The raw stanza declares no default
// namespace on its top-level element, so encoding/xml leaves exactly those
// elements without one (and those under an empty xmlns that undeclares it).
type nsTokenReader struct {
	d       *xml.Decoder
	ns      string
	inherit []bool // per open element
}

func (r *nsTokenReader) Token() (xml.Token, error) {
	tok, err := r.d.Token()
	switch t := tok.(type) {
	case xml.StartElement:
		in := t.Name.Space == "" && (len(r.inherit) == 0 || r.inherit[len(r.inherit)-1])
		for _, a := range t.Attr {
			if a.Name.Space == "" && a.Name.Local == "xmlns" {
				in = false // xmlns='': no namespace from here down
			}
		}
		r.inherit = append(r.inherit, in)
		if in {
			t.Name.Space = r.ns
			return t, err
		}
	case xml.EndElement:
		if n := len(r.inherit); n > 0 {
			in := r.inherit[n-1]
			r.inherit = r.inherit[:n-1]
			if in {
				t.Name.Space = r.ns
				return t, err
			}
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
// and texts (e.By is written as the error's by attribute when set). A
// condition that is not an XML name (such as "") is replaced by
// <undefined-condition/>. ok is
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
	if !validNCName(string(cond)) {
		// Written as an element name: anything else would be markup.
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
	return Stanza{raw: b.String(), kind: s.kind, ns: s.ns, to: s.from, from: s.to, typ: "error", id: s.id}, true
}

// validNCName reports an XML name without a colon, in the ASCII subset
// the scanner accepts.
func validNCName(n string) bool {
	if n == "" || !isNameStart(n[0]) {
		return false
	}
	for i := 1; i < len(n); i++ {
		if !isNameChar(n[i]) || n[i] == ':' {
			return false
		}
	}
	return true
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
