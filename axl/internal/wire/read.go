package wire

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// MalformedError means the input is not the expected SOAP message: not
// XML, not a SOAP envelope, or not the AXL operation asked for. Errors
// reading the input are returned as they are instead, so that a timeout is
// not mistaken for a wrong server.
type MalformedError struct {
	Reason string
}

func (e *MalformedError) Error() string { return e.Reason }

func malformed(format string, args ...any) error {
	return &MalformedError{Reason: fmt.Sprintf(format, args...)}
}

// Limits on what a document may make the parser hold, whatever its size.
const (
	// MaxDepth bounds element nesting. An AXL result is six levels deep
	// (Envelope, Body, response, return, row, column); a fault as many.
	MaxDepth = 32
	// MaxCells bounds the rows plus columns of a query result. A cell
	// costs a few bytes on the wire (<a/>) but some 50 in memory, so AXL's
	// 8 MB result limit alone would allow a few hundred megabytes.
	MaxCells = 1 << 18
)

// decoder is an xml.Decoder that remembers an error of the underlying
// reader, so that such an error can be told apart from bad XML, and that
// refuses elements nested deeper than MaxDepth.
type decoder struct {
	*xml.Decoder
	src   *errReader
	depth int
}

// Token is xml.Decoder.Token with the depth limit.
func (d *decoder) Token() (xml.Token, error) {
	tok, err := d.Decoder.Token()
	switch tok.(type) {
	case xml.StartElement:
		if d.depth++; d.depth > MaxDepth {
			return nil, malformed("elements nested deeper than %d levels", MaxDepth)
		}
	case xml.EndElement:
		d.depth--
	}
	return tok, err
}

// Skip is xml.Decoder.Skip through the depth-limited Token.
func (d *decoder) Skip() error {
	for level := 1; level > 0; {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		switch tok.(type) {
		case xml.StartElement:
			level++
		case xml.EndElement:
			level--
		}
	}
	return nil
}

type errReader struct {
	r   io.Reader
	err error // the first error other than io.EOF
}

func (e *errReader) Read(p []byte) (int, error) {
	n, err := e.r.Read(p)
	if err != nil && err != io.EOF && e.err == nil {
		e.err = err
	}
	return n, err
}

func newDecoder(r io.Reader) *decoder {
	src := &errReader{r: r}
	d := xml.NewDecoder(src)
	d.CharsetReader = charsetReader
	return &decoder{Decoder: d, src: src}
}

// fail turns a decoding error into a *MalformedError, unless it came from
// the reader.
func (d *decoder) fail(err error) error {
	if err == nil {
		return nil
	}
	if d.src.err != nil {
		return d.src.err
	}
	var me *MalformedError
	if errors.As(err, &me) {
		return me
	}
	var se *xml.SyntaxError
	switch {
	case errors.As(err, &se) && se.Msg == "unexpected EOF", errors.Is(err, io.EOF):
		return malformed("the XML document ends early (truncated)")
	case errors.As(err, &se):
		return malformed("not well-formed XML: line %d: %s", se.Line, se.Msg)
	}
	return malformed("%v", err)
}

// charsetReader accepts the single-byte declarations a Java server might
// use besides UTF-8. Anything else is refused rather than misread.
func charsetReader(label string, r io.Reader) (io.Reader, error) {
	switch strings.ToLower(label) {
	case "iso-8859-1", "latin1", "us-ascii", "ascii":
		return &latin1Reader{r: r}, nil
	}
	return nil, fmt.Errorf("unsupported XML encoding %q", label)
}

// latin1Reader converts ISO-8859-1 (a superset of US-ASCII) to UTF-8.
type latin1Reader struct {
	r   io.Reader
	buf []byte
	out []byte
}

func (l *latin1Reader) Read(p []byte) (int, error) {
	for len(l.out) == 0 {
		if cap(l.buf) == 0 {
			l.buf = make([]byte, 2048)
		}
		n, err := l.r.Read(l.buf[:cap(l.buf)])
		for _, b := range l.buf[:n] {
			l.out = append(l.out, string(rune(b))...)
		}
		if n == 0 && err != nil {
			return 0, err
		}
	}
	n := copy(p, l.out)
	l.out = l.out[n:]
	return n, nil
}

// root returns the document element, skipping the prolog.
func root(d *decoder) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			if errors.Is(err, io.EOF) {
				return xml.StartElement{}, malformed("empty document")
			}
			return xml.StartElement{}, d.fail(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.CharData:
			if len(strings.TrimSpace(string(t))) > 0 {
				return xml.StartElement{}, malformed("text before the document element")
			}
		}
	}
}

// body positions d just inside the SOAP Body of an envelope and returns
// its first child element. It fails if the document is not a SOAP 1.1
// envelope or the Body is empty.
func body(d *decoder) (xml.StartElement, error) {
	env, err := root(d)
	if err != nil {
		return env, err
	}
	if env.Name.Space != EnvNS || env.Name.Local != "Envelope" {
		return env, malformed("the document element is %s, not a SOAP 1.1 Envelope", describe(env.Name))
	}
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.StartElement{}, d.fail(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if t.Name.Space == EnvNS && t.Name.Local == "Body" {
				return firstChild(d, "the SOAP Body")
			}
			// Header, or extension elements SOAP 1.1 allows.
			if err := d.Skip(); err != nil {
				return xml.StartElement{}, d.fail(err)
			}
		case xml.EndElement:
			return xml.StartElement{}, malformed("the SOAP envelope has no Body")
		}
	}
}

func firstChild(d *decoder, what string) (xml.StartElement, error) {
	for {
		tok, err := d.Token()
		if err != nil {
			return xml.StartElement{}, d.fail(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			return t, nil
		case xml.EndElement:
			return xml.StartElement{}, malformed("%s is empty", what)
		}
	}
}

func describe(n xml.Name) string {
	if n.Space == "" {
		return "<" + n.Local + ">"
	}
	return fmt.Sprintf("<%s> in namespace %q", n.Local, n.Space)
}

// children calls fn for each child element of the element just opened,
// until its end tag; fn must consume the child (read to its end or Skip).
// Text between children is ignored.
func children(d *decoder, fn func(xml.StartElement) error) error {
	for {
		tok, err := d.Token()
		if err != nil {
			return d.fail(err)
		}
		switch t := tok.(type) {
		case xml.StartElement:
			if err := fn(t); err != nil {
				return err
			}
		case xml.EndElement:
			return nil
		}
	}
}

// text returns the character data of the element just opened and consumes
// it. With strict set, a child element is an error; otherwise children are
// skipped and only direct text is kept.
func text(d *decoder, start xml.StartElement, strict bool) (string, error) {
	var b strings.Builder
	for {
		tok, err := d.Token()
		if err != nil {
			return "", d.fail(err)
		}
		switch t := tok.(type) {
		case xml.CharData:
			b.Write(t)
		case xml.StartElement:
			if strict {
				return "", malformed("%s holds an element, %s, where text was expected", describe(start.Name), describe(t.Name))
			}
			if err := d.Skip(); err != nil {
				return "", d.fail(err)
			}
		case xml.EndElement:
			return b.String(), nil
		}
	}
}

func attr(e xml.StartElement, local string) string {
	for _, a := range e.Attr {
		if a.Name.Space == "" && a.Name.Local == local {
			return a.Value
		}
	}
	return ""
}

// ParseResponse decodes the response to an op request. A SOAP fault is a
// successful decode with Fault set. The AXL namespace of the response
// element may carry any version; element prefixes do not matter.
func ParseResponse(r io.Reader, op string) (*Response, error) {
	d := newDecoder(r)
	el, err := body(d)
	if err != nil {
		return nil, err
	}
	if el.Name.Space == EnvNS && el.Name.Local == "Fault" {
		f, err := parseFault(d)
		if err != nil {
			return nil, err
		}
		return &Response{Op: op, Fault: f}, nil
	}
	version, ok := strings.CutPrefix(el.Name.Space, AXLNSPrefix)
	if !ok || el.Name.Local != op+"Response" {
		return nil, malformed("the SOAP Body holds %s, not an AXL %sResponse", describe(el.Name), op)
	}
	resp := &Response{Op: op, Version: version, Sequence: attr(el, "sequence")}
	sawReturn := false
	err = children(d, func(c xml.StartElement) error {
		if c.Name.Local != "return" || sawReturn {
			return d.fail(d.Skip())
		}
		sawReturn = true
		if op == OpQuery {
			resp.Rows = [][]Column{}
			cells := 0
			var prev []Column
			return children(d, func(row xml.StartElement) error {
				if row.Name.Local != "row" {
					return d.fail(d.Skip())
				}
				cols := []Column{}
				err := children(d, func(col xml.StartElement) error {
					if cells++; cells > MaxCells {
						return malformed("the result has more than %d rows and columns", MaxCells)
					}
					v, err := text(d, col, true)
					name := col.Name.Local
					// Rows repeat the column names: share the first
					// row's strings.
					if i := len(cols); i < len(prev) && prev[i].Name == name {
						name = prev[i].Name
					}
					cols = append(cols, Column{Name: name, Value: v})
					return err
				})
				// An empty row costs memory too.
				if cells++; cells > MaxCells && err == nil {
					err = malformed("the result has more than %d rows and columns", MaxCells)
				}
				resp.Rows = append(resp.Rows, cols)
				prev = cols
				return err
			})
		}
		sawCount := false
		err := children(d, func(c xml.StartElement) error {
			if c.Name.Local != "rowsUpdated" {
				return d.fail(d.Skip())
			}
			v, err := text(d, c, true)
			if err != nil {
				return err
			}
			n, perr := strconv.Atoi(strings.TrimSpace(v))
			if perr != nil || n < 0 {
				return malformed("<rowsUpdated> is %q, not a count", v)
			}
			resp.RowsUpdated, sawCount = n, true
			return nil
		})
		if err != nil {
			return err
		}
		if !sawCount {
			return malformed("the %sResponse has no <rowsUpdated>", op)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !sawReturn {
		// The schema makes <return> optional for an empty result; only a
		// query can be empty.
		if op != OpQuery {
			return nil, malformed("the %sResponse has no <return>", op)
		}
		resp.Rows = [][]Column{}
	}
	return resp, nil
}

// parseFault reads the SOAP 1.1 Fault just opened. Its children and the
// AXL detail are unqualified on the wire; any namespace is accepted.
func parseFault(d *decoder) (*Fault, error) {
	f := &Fault{}
	err := children(d, func(c xml.StartElement) error {
		var err error
		switch c.Name.Local {
		case "faultcode":
			f.FaultCode, err = text(d, c, false)
			f.FaultCode = strings.TrimSpace(f.FaultCode)
		case "faultstring":
			f.FaultString, err = text(d, c, false)
		case "detail":
			err = children(d, func(e xml.StartElement) error {
				if e.Name.Local != "axlError" {
					return d.fail(d.Skip())
				}
				return parseAXLError(d, f)
			})
		default:
			err = d.fail(d.Skip())
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	return f, nil
}

func parseAXLError(d *decoder, f *Fault) error {
	return children(d, func(c xml.StartElement) error {
		var err error
		switch c.Name.Local {
		case "axlcode":
			var v string
			if v, err = text(d, c, false); err == nil {
				n, perr := strconv.Atoi(strings.TrimSpace(v))
				f.AXLCode, f.HasAXLCode = n, perr == nil
			}
		case "axlmessage":
			f.AXLMessage, err = text(d, c, false)
		case "request":
			f.Request, err = text(d, c, false)
		default:
			err = d.fail(d.Skip())
		}
		return err
	})
}

// ParseRequest decodes an executeSQLQuery or executeSQLUpdate request, for
// a server. The operation element must be in an AXL namespace; <sql> is
// read whatever its namespace.
func ParseRequest(r io.Reader) (Request, error) {
	d := newDecoder(r)
	el, err := body(d)
	if err != nil {
		return Request{}, err
	}
	version, ok := strings.CutPrefix(el.Name.Space, AXLNSPrefix)
	if !ok {
		return Request{}, malformed("the SOAP Body holds %s, not an AXL request", describe(el.Name))
	}
	if el.Name.Local != OpQuery && el.Name.Local != OpUpdate {
		return Request{}, malformed("unsupported AXL operation %s", el.Name.Local)
	}
	req := Request{Op: el.Name.Local, Version: version, Sequence: attr(el, "sequence")}
	sawSQL := false
	err = children(d, func(c xml.StartElement) error {
		if c.Name.Local != "sql" || sawSQL {
			return d.fail(d.Skip())
		}
		sawSQL = true
		var terr error
		req.SQL, terr = text(d, c, true)
		return terr
	})
	if err != nil {
		return Request{}, err
	}
	if !sawSQL {
		return Request{}, malformed("the %s request has no <sql>", req.Op)
	}
	return req, nil
}
