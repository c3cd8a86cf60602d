package prosodytest

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
)

// XML namespaces of RFC 6120 streams.
const (
	nsStream  = "http://etherx.jabber.org/streams"
	nsStreams = "urn:ietf:params:xml:ns:xmpp-streams"
	nsSASL    = "urn:ietf:params:xml:ns:xmpp-sasl"
	nsBind    = "urn:ietf:params:xml:ns:xmpp-bind"
	nsPing    = "urn:xmpp:ping"
)

// Bounds on what the stream reader accepts, so a broken peer cannot make a
// test allocate without limit.
const (
	maxStanzaBytes = 1 << 20 // one top-level element
	maxDepth       = 64      // element nesting inside a stanza
)

// Stanza is one top-level element received on a stream: a message,
// presence or iq, or anything else the server sent at that level.
type Stanza struct {
	Name  xml.Name   // namespace-resolved, e.g. {jabber:client message}
	Attr  []xml.Attr // the start tag's attributes
	Raw   []byte     // the element exactly as received
	Inner []byte     // Raw between the start and the end tag
}

// Get returns the value of the unqualified attribute name ("to", "from",
// "type", "id"), or "".
func (s Stanza) Get(name string) string {
	for _, a := range s.Attr {
		if a.Name.Space == "" && a.Name.Local == name {
			return a.Value
		}
	}
	return ""
}

// String returns the raw XML.
func (s Stanza) String() string { return string(s.Raw) }

// Decode unmarshals the raw element into v with [xml.Unmarshal]. Namespaces
// declared on the stream header (jabber:client) are not in Raw, so match
// the stanza's children by local name or their own xmlns.
func (s Stanza) Decode(v any) error { return xml.Unmarshal(s.Raw, v) }

// streamReader reads an XMPP stream: the header, then whole top-level
// elements with their raw bytes. It keeps only the bytes not yet returned,
// so reading n stanzas costs O(total size).
type streamReader struct {
	rec *recorder
	dec *xml.Decoder
}

// recorder keeps the bytes the decoder has read (it reads ahead) so that a
// stanza's raw text can be cut out by the decoder's input offsets.
type recorder struct {
	r    io.Reader
	buf  []byte
	base int64 // input offset of buf[0]
}

func (r *recorder) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.buf = append(r.buf, p[:n]...)
	return n, err
}

// slice returns a copy of input bytes [from, to).
func (r *recorder) slice(from, to int64) []byte {
	return append([]byte(nil), r.buf[from-r.base:to-r.base]...)
}

// discard forgets input before offset off.
func (r *recorder) discard(off int64) {
	n := int(off - r.base)
	r.buf = r.buf[:copy(r.buf, r.buf[n:])]
	r.base = off
}

func newStreamReader(r io.Reader) *streamReader {
	rec := &recorder{r: r}
	return &streamReader{rec: rec, dec: xml.NewDecoder(rec)}
}

// header reads up to and including the <stream:stream> start tag and
// returns it.
func (sr *streamReader) header() (xml.StartElement, error) {
	for range 16 { // an XML declaration, whitespace, the header
		tok, err := sr.dec.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		switch t := tok.(type) {
		case xml.StartElement:
			sr.rec.discard(sr.dec.InputOffset())
			if t.Name.Space != nsStream || t.Name.Local != "stream" {
				return xml.StartElement{}, &StreamError{Condition: "invalid-namespace", Text: fmt.Sprintf("expected a stream header, got <%s xmlns='%s'>", t.Name.Local, t.Name.Space)}
			}
			return t.Copy(), nil
		case xml.ProcInst, xml.CharData, xml.Comment:
		default:
			return xml.StartElement{}, &StreamError{Condition: "bad-format", Text: fmt.Sprintf("unexpected %T before the stream header", tok)}
		}
	}
	return xml.StartElement{}, &StreamError{Condition: "bad-format", Text: "no stream header"}
}

// next returns the next top-level element. It returns io.EOF when the
// server closed the stream with </stream:stream>, a *StreamError for
// <stream:error/>, and other errors as they come.
func (sr *streamReader) next() (Stanza, error) {
	d := sr.dec
	for {
		begin := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return Stanza{}, eofError(err)
		}
		switch t := tok.(type) {
		case xml.CharData, xml.Comment, xml.ProcInst:
			sr.rec.discard(d.InputOffset())
			continue
		case xml.EndElement:
			sr.rec.discard(d.InputOffset())
			return Stanza{}, io.EOF // </stream:stream>
		case xml.StartElement:
			st := Stanza{Name: t.Name, Attr: append([]xml.Attr(nil), t.Attr...)}
			innerBegin := d.InputOffset()
			innerEnd, err := sr.skip(begin)
			if err != nil {
				return Stanza{}, err
			}
			end := d.InputOffset()
			st.Raw = sr.rec.slice(begin, end)
			st.Inner = st.Raw[innerBegin-begin : innerEnd-begin]
			sr.rec.discard(end)
			if t.Name.Space == nsStream && t.Name.Local == "error" {
				return st, parseStreamError(st)
			}
			return st, nil
		default:
			return Stanza{}, &StreamError{Condition: "bad-format", Text: fmt.Sprintf("unexpected %T", tok)}
		}
	}
}

// skip consumes the rest of an element whose start tag was just read and
// returns the input offset of its end tag.
func (sr *streamReader) skip(begin int64) (int64, error) {
	d := sr.dec
	depth := 1
	for {
		if d.InputOffset()-begin > maxStanzaBytes {
			return 0, &StreamError{Condition: "policy-violation", Text: fmt.Sprintf("stanza larger than %d bytes", maxStanzaBytes)}
		}
		before := d.InputOffset()
		tok, err := d.Token()
		if err != nil {
			return 0, eofError(err)
		}
		switch tok.(type) {
		case xml.StartElement:
			if depth++; depth > maxDepth {
				return 0, &StreamError{Condition: "policy-violation", Text: fmt.Sprintf("elements nested deeper than %d", maxDepth)}
			}
		case xml.EndElement:
			if depth--; depth == 0 {
				return before, nil
			}
		}
	}
}

// parseStreamError turns <stream:error/> into a *StreamError.
func parseStreamError(st Stanza) error {
	var e struct {
		Children []struct {
			XMLName xml.Name
			Text    string `xml:",chardata"`
		} `xml:",any"`
	}
	se := &StreamError{Condition: "undefined-condition"}
	if err := xml.Unmarshal(st.Raw, &e); err != nil {
		se.Text = err.Error()
		return se
	}
	for _, c := range e.Children {
		if c.XMLName.Space != nsStreams {
			continue
		}
		if c.XMLName.Local == "text" {
			se.Text = c.Text
		} else {
			se.Condition = c.XMLName.Local
		}
	}
	return se
}

// eofError reports a connection closed inside the stream (the decoder's
// "unexpected EOF" syntax error) as io.ErrUnexpectedEOF, so callers can tell
// it from bad XML.
func eofError(err error) error {
	var syn *xml.SyntaxError
	if errors.Is(err, io.EOF) || errors.As(err, &syn) && syn.Msg == "unexpected EOF" {
		return fmt.Errorf("prosodytest: connection closed without </stream:stream>: %w", io.ErrUnexpectedEOF)
	}
	return err
}
