package dialback

import (
	"encoding/xml"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"

	"mellium.im/xmlstream"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

// Namespaces of XEP-0220.
const (
	NS        = "jabber:server:dialback"     // <db:result/> and <db:verify/>
	NSFeature = "urn:xmpp:features:dialback" // the stream feature
	// Prefix is the prefix elements are written with. The stream header must
	// declare it (xmlns:db='jabber:server:dialback'); some old servers
	// recognise dialback by this prefix only.
	Prefix = "db"
)

// Limits on attributes, so that a hostile peer cannot make us keep large
// strings around: RFC 7622 caps a domainpart at 1023 bytes, and stream IDs
// are tokens a few dozen bytes long.
const (
	maxDomainLen   = 1023
	maxStreamIDLen = 256
	maxKeyPadding  = 256 // whitespace a pretty-printing peer may put around a key
)

// Type is the type attribute of a dialback element. The empty Type is a
// request (it carries a key); the others answer one.
type Type string

// The types of XEP-0220.
const (
	TypeRequest Type = ""
	TypeValid   Type = "valid"
	TypeInvalid Type = "invalid"
	TypeError   Type = "error"
)

func (t Type) valid() bool {
	switch t {
	case TypeRequest, TypeValid, TypeInvalid, TypeError:
		return true
	}
	return false
}

// ErrMalformed matches every *MalformedError.
var ErrMalformed = errors.New("dialback: malformed element")

// ErrInvalid is returned when writing an element that breaks XEP-0220
// (missing addresses, an unknown type, a request without a key): such an
// element is never put on the wire.
var ErrInvalid = errors.New("dialback: invalid element")

// MalformedError reports a dialback element that breaks XEP-0220 and the
// stream error to answer it with. It matches ErrMalformed and its Condition
// with errors.Is.
type MalformedError struct {
	Element   string       // "db:result" or "db:verify"
	Reason    string       // what is wrong, for the log
	Condition stream.Error // what to send the peer before closing the stream
}

func (e *MalformedError) Error() string {
	return fmt.Sprintf("dialback: malformed %s (%s): %s", e.Element, e.Condition.Err, e.Reason)
}

// Unwrap lets errors.Is match ErrMalformed and the stream condition.
func (e *MalformedError) Unwrap() []error { return []error{ErrMalformed, e.Condition} }

// Element is a decoded dialback element: a *Result or a *Verify.
type Element interface {
	TokenReader() xml.TokenReader
	element()
}

// Result is <db:result/>: an initiating server's request to be authorized
// for a domain pair (Type empty, Key set), or the receiving server's answer.
type Result struct {
	From string // the sender (originating) domain of a request
	To   string // the target (receiving) domain of a request
	Type Type
	Key  string        // requests only; whitespace-trimmed on input
	Err  *stanza.Error // when Type is TypeError
}

// Verify is <db:verify/>: a receiving server asking an authoritative server
// whether Key is right for the stream ID (Type empty), or the answer.
type Verify struct {
	From string // request: the receiving (target) domain; answer: the sender domain
	To   string
	ID   string // stream ID of the stream the key was presented on
	Type Type
	Key  string        // requests only; whitespace-trimmed on input
	Err  *stanza.Error // when Type is TypeError
}

func (*Result) element() {}
func (*Verify) element() {}

// Answer returns the answer to the request r: from and to swapped, with the
// given type and, for TypeError, the error.
func (r Result) Answer(t Type, err *stanza.Error) Result {
	return Result{From: r.To, To: r.From, Type: t, Err: err}
}

// Answer returns the answer to the request v, echoing its ID.
func (v Verify) Answer(t Type, err *stanza.Error) Verify {
	return Verify{From: v.To, To: v.From, ID: v.ID, Type: t, Err: err}
}

// Validate reports whether r can be sent: addresses are bare domains, the
// type is known, and a request carries a key of XML characters.
func (r Result) Validate() error {
	return validate("result", r.From, r.To, "", r.Type, r.Key)
}

// Validate reports whether v can be sent; a verify also needs its ID.
func (v Verify) Validate() error {
	return validate("verify", v.From, v.To, v.ID, v.Type, v.Key)
}

// TokenReader returns the element as tokens, prefixed with db:. An element
// that fails Validate yields the validation error instead of tokens.
func (r Result) TokenReader() xml.TokenReader {
	if err := r.Validate(); err != nil {
		return errReader{err}
	}
	return tokens("result", r.From, r.To, "", r.Type, r.Key, r.Err)
}

// TokenReader returns the element as tokens, prefixed with db:. An element
// that fails Validate yields the validation error instead of tokens.
func (v Verify) TokenReader() xml.TokenReader {
	if err := v.Validate(); err != nil {
		return errReader{err}
	}
	return tokens("verify", v.From, v.To, v.ID, v.Type, v.Key, v.Err)
}

type errReader struct{ err error }

func (e errReader) Token() (xml.Token, error) { return nil, e.err }

func validate(local, from, to, id string, t Type, key string) error {
	invalid := func(format string, args ...any) error {
		return fmt.Errorf("%w <%s:%s/>: %s", ErrInvalid, Prefix, local, fmt.Sprintf(format, args...))
	}
	if _, why := checkAttrs(local, from, to, id, t); why != "" {
		return invalid("%s", why)
	}
	switch {
	case t == TypeRequest && TrimKey(key) == "":
		return invalid("request without a key")
	case t == TypeRequest && (!utf8.ValidString(key) || strings.ContainsFunc(key, notXMLChar)):
		return invalid("key has characters XML cannot carry")
	}
	return nil
}

// checkAttrs applies the attribute rules of XEP-0220 that hold both for
// what we read and for what we write. It returns the stream condition for
// a peer that broke them and why, or an empty reason.
func checkAttrs(local, from, to, id string, t Type) (stream.Error, string) {
	switch {
	case from == "":
		return stream.ImproperAddressing, "missing from"
	case to == "":
		return stream.ImproperAddressing, "missing to"
	case local == "verify" && id == "":
		return stream.BadFormat, "missing id"
	case !t.valid():
		return stream.BadFormat, fmt.Sprintf("type %q is not valid, invalid or error", truncate(string(t)))
	}
	for _, dom := range [...]string{from, to} {
		if why := checkDomain(dom); why != "" {
			return stream.ImproperAddressing, fmt.Sprintf("%q: %s", truncate(dom), why)
		}
	}
	if len(id) > maxStreamIDLen || strings.ContainsAny(id, " \t\r\n") {
		return stream.BadFormat, fmt.Sprintf("id %q is not a stream ID", truncate(id))
	}
	return stream.Error{}, ""
}

// notXMLChar reports runes outside the XML 1.0 Char production, which
// encoding/xml would silently replace.
func notXMLChar(r rune) bool {
	return !(r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF)
}

// WriteXML writes the element to w (the xmlstream.WriterTo interface).
func (r Result) WriteXML(w xmlstream.TokenWriter) (int, error) {
	return xmlstream.Copy(w, r.TokenReader())
}

// WriteXML writes the element to w (the xmlstream.WriterTo interface).
func (v Verify) WriteXML(w xmlstream.TokenWriter) (int, error) {
	return xmlstream.Copy(w, v.TokenReader())
}

// MarshalXML writes the element with the db: prefix, whatever start says.
func (r Result) MarshalXML(e *xml.Encoder, _ xml.StartElement) error {
	_, err := r.WriteXML(e)
	return err
}

// MarshalXML writes the element with the db: prefix, whatever start says.
func (v Verify) MarshalXML(e *xml.Encoder, _ xml.StartElement) error {
	_, err := v.WriteXML(e)
	return err
}

func tokens(local, from, to, id string, t Type, key string, stanzaErr *stanza.Error) xml.TokenReader {
	start := xml.StartElement{
		// A Local name with the prefix and no Space makes encoding/xml write
		// db:result verbatim instead of redeclaring the default namespace.
		Name: xml.Name{Local: Prefix + ":" + local},
		Attr: []xml.Attr{{Name: xml.Name{Local: "from"}, Value: from}, {Name: xml.Name{Local: "to"}, Value: to}},
	}
	if id != "" {
		start.Attr = append(start.Attr, xml.Attr{Name: xml.Name{Local: "id"}, Value: id})
	}
	if t != TypeRequest {
		start.Attr = append(start.Attr, xml.Attr{Name: xml.Name{Local: "type"}, Value: string(t)})
	}
	var inner xml.TokenReader
	switch t {
	case TypeRequest:
		inner = xmlstream.Token(xml.CharData(key))
	case TypeError:
		if stanzaErr == nil {
			// The peer must learn the pair failed; say no more than that.
			stanzaErr = &stanza.Error{Type: stanza.Cancel, Condition: stanza.UndefinedCondition}
		}
		inner = stanzaErr.TokenReader()
	}
	return xmlstream.Wrap(inner, start)
}

// UnmarshalXML decodes a <db:result/> in the dialback namespace.
func (r *Result) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	f, err := decode(d, start, "result")
	if err != nil {
		return err
	}
	*r = Result{From: f.from, To: f.to, Type: f.typ, Key: f.key, Err: f.err}
	return nil
}

// UnmarshalXML decodes a <db:verify/> in the dialback namespace.
func (v *Verify) UnmarshalXML(d *xml.Decoder, start xml.StartElement) error {
	f, err := decode(d, start, "verify")
	if err != nil {
		return err
	}
	*v = Verify{From: f.from, To: f.to, ID: f.id, Type: f.typ, Key: f.key, Err: f.err}
	return nil
}

// Decode decodes the dialback element that start opens (the caller has read
// start from d), consuming it through its end tag. On error it returns a nil
// Element and d may be left inside the element: the stream is unusable and
// the error says which stream error to close it with.
func Decode(d *xml.Decoder, start xml.StartElement) (Element, error) {
	var el interface {
		Element
		xml.Unmarshaler
	}
	switch start.Name.Local {
	case "result":
		el = new(Result)
	case "verify":
		el = new(Verify)
	default:
		return nil, malformed(start.Name.Local, stream.UnsupportedStanzaType, "not a dialback element")
	}
	if err := el.UnmarshalXML(d, start); err != nil {
		return nil, err
	}
	return el, nil
}

type fields struct {
	from, to, id string
	typ          Type
	key          string
	err          *stanza.Error
}

func malformed(local string, cond stream.Error, format string, args ...any) error {
	return &MalformedError{Element: Prefix + ":" + local, Reason: fmt.Sprintf(format, args...), Condition: cond}
}

func decode(d *xml.Decoder, start xml.StartElement, local string) (fields, error) {
	var f fields
	switch {
	case start.Name.Local != local:
		return f, malformed(local, stream.BadFormat, "got <%s/> instead", start.Name.Local)
	case start.Name.Space != NS:
		return f, malformed(local, stream.InvalidNamespace, "namespace %q instead of %q", start.Name.Space, NS)
	}
	var seen struct{ from, to, id, typ bool }
	for _, a := range start.Attr {
		if a.Name.Space != "" {
			continue // xmlns declarations and foreign attributes
		}
		var dup bool
		switch a.Name.Local {
		case "from":
			dup, f.from, seen.from = seen.from, a.Value, true
		case "to":
			dup, f.to, seen.to = seen.to, a.Value, true
		case "id":
			dup, f.id, seen.id = seen.id, a.Value, true
		case "type":
			dup, f.typ, seen.typ = seen.typ, Type(a.Value), true
		}
		if dup {
			// XML forbids it; encoding/xml lets it through. Refuse rather
			// than guess which value the peer meant.
			return f, malformed(local, stream.BadFormat, "attribute %s repeated", a.Name.Local)
		}
	}
	// An empty type attribute is not the absent one that marks a request.
	if seen.typ && f.typ == TypeRequest {
		return f, malformed(local, stream.BadFormat, "type %q is not valid, invalid or error", "")
	}
	if cond, why := checkAttrs(local, f.from, f.to, f.id, f.typ); why != "" {
		return f, malformed(local, cond, "%s", why)
	}

	var key []byte
	for {
		tok, err := d.Token()
		if err != nil {
			return f, err
		}
		switch tok := tok.(type) {
		case xml.EndElement:
			if f.typ == TypeRequest {
				f.key = TrimKey(string(key))
				switch {
				case f.key == "":
					return f, malformed(local, stream.BadFormat, "request without a key")
				case len(f.key) > MaxKeyLen:
					return f, malformed(local, stream.PolicyViolation, "key longer than %d bytes", MaxKeyLen)
				}
			} else if f.typ == TypeError && f.err == nil {
				// Lenient: an error answer without its child still fails the
				// pair; undefined-condition keeps callers free of nil checks.
				f.err = &stanza.Error{Type: stanza.Cancel, Condition: stanza.UndefinedCondition}
			}
			return f, nil
		case xml.CharData:
			// Typed answers may echo the key (Cisco XCP does): ignore it.
			if f.typ != TypeRequest {
				continue
			}
			// Stop buffering early; the exact bound applies after trimming.
			if len(key)+len(tok) > MaxKeyLen+maxKeyPadding {
				return f, malformed(local, stream.PolicyViolation, "key longer than %d bytes", MaxKeyLen)
			}
			key = append(key, tok...)
		case xml.Comment, xml.ProcInst, xml.Directive:
			return f, malformed(local, stream.RestrictedXML, "comments, processing instructions and DTDs are not allowed in XMPP (RFC 6120 §11.1)")
		case xml.StartElement:
			if err := decodeChild(d, tok, local, &f); err != nil {
				return f, err
			}
		}
	}
}

func decodeChild(d *xml.Decoder, child xml.StartElement, local string, f *fields) error {
	isError := child.Name.Local == "error" &&
		(child.Name.Space == "" || child.Name.Space == "jabber:server" || child.Name.Space == NS)
	switch {
	case f.typ == TypeRequest:
		return malformed(local, stream.BadFormat, "request contains <%s/>", truncate(child.Name.Local))
	case isError && f.typ == TypeError && f.err == nil:
		// Only the type attribute matters here; a malformed by='' (a JID)
		// must not turn a dialback error into a stream failure.
		attrs := child.Attr
		child.Attr = nil
		for _, a := range attrs {
			if a.Name.Space == "" && a.Name.Local == "type" {
				child.Attr = append(child.Attr, a)
			}
		}
		var se stanza.Error
		if err := d.DecodeElement(&se, &child); err != nil {
			return err
		}
		if se.Condition == "" {
			se.Condition = stanza.UndefinedCondition
		}
		f.err = &se
		return nil
	}
	// Extensions and stray children of answers are ignored, as RFC 6120
	// asks of unknown content.
	return d.Skip()
}

// checkDomain rejects what cannot be a domainpart; it does not normalise,
// since keys are computed over the domains exactly as sent.
func checkDomain(s string) string {
	switch {
	case len(s) > maxDomainLen:
		return "longer than 1023 bytes"
	case !utf8.ValidString(s):
		return "not UTF-8"
	case strings.ContainsAny(s, "@/ \t\r\n"):
		return "not a bare domain"
	}
	return ""
}

func truncate(s string) string {
	if len(s) > 64 {
		return s[:64] + "…"
	}
	return s
}
