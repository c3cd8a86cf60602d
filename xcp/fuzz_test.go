package xcp

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"testing/iotest"
	"time"

	"mellium.im/xmpp/stream"
)

func addSeeds(f *testing.F, extra ...string) {
	seeds, _ := filepath.Glob("testdata/*.xml")
	if len(seeds) == 0 {
		f.Fatal("no seed corpus in testdata/*.xml")
	}
	for _, name := range seeds {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	for _, s := range extra {
		f.Add(s)
	}
}

type scanned struct {
	els []element
	err error
}

func scanStream(in string, trickle bool) scanned {
	var r io.Reader = strings.NewReader(in)
	if trickle {
		r = iotest.OneByteReader(r)
	}
	sc := newScanner(r, limits{maxElem: 4096, maxDepth: 16, maxAttrs: 16})
	if _, err := sc.readHeader(); err != nil {
		return scanned{err: err}
	}
	var out scanned
	for range 10000 {
		el, err := sc.next()
		if err != nil {
			out.err = err
			return out
		}
		el.raw = append([]byte(nil), el.raw...)
		out.els = append(out.els, el)
	}
	out.err = errors.New("too many elements")
	return out
}

func sameErr(a, b error) bool {
	var sa, sb *StreamError
	if errors.As(a, &sa) && errors.As(b, &sb) {
		return sa.Condition.Err == sb.Condition.Err
	}
	return errors.Is(a, b) || a == b
}

// FuzzScan feeds arbitrary stream content to the scanner. It must not
// panic; reading the input in one piece or byte by byte must give the same
// result; and every stanza it accepts must be well-formed for encoding/xml,
// with the same name and routing attributes, and parse again unchanged.
func FuzzScan(f *testing.F) {
	addSeeds(f,
		`<message to='a@b' from='c'><body>x</body></message>`,
		`<iq xmlns:p='urn:p' type='get' id='1'><p:q p:x='&amp;'/></iq>`,
		`<presence><![CDATA[ <> ]]></presence></stream:stream>`,
		`<message xmlns:a='urn:x' xmlns:b='urn:x' a:c='1' b:c='2'/>`,
		`<message xmlns:a='urn:x' xmlns:b='urn:y' a:c='1' b:c='2' xml:lang='en'/>`,
		`<message xmlns:xml='http&#58;//www.w3.org/XML/1998/namespace'><x xmlns='http://www.w3.org/2000/xmlns/'/></message>`,
		`<message xmlns='jabber:component:accept' to='a'/><iq xmlns='jabber:server'/>`,
		`<message to='a'><z xmlns=''><w/></z></message>`,
	)
	f.Fuzz(func(t *testing.T, body string) {
		in := testHeader + body
		whole := scanStream(in, false)
		byByte := scanStream(in, true)
		if len(whole.els) != len(byByte.els) || !sameErr(whole.err, byByte.err) {
			t.Fatalf("whole: %d elements, %v; byte by byte: %d elements, %v", len(whole.els), whole.err, len(byByte.els), byByte.err)
		}
		for i, el := range whole.els {
			if string(el.raw) != string(byByte.els[i].raw) || el.kind != byByte.els[i].kind {
				t.Fatalf("element %d differs: %q / %q", i, el.raw, byByte.els[i].raw)
			}
			checkWithEncodingXML(t, el)
		}
	})
}

func checkWithEncodingXML(t *testing.T, el element) {
	t.Helper()
	top := checkNamespaces(t, string(el.raw))
	if !el.kind.stanza() {
		return
	}
	if top.Name.Local != el.kind.String() {
		t.Fatalf("name %q, encoding/xml says %q", el.kind, top.Name.Local)
	}
	// On a jabber:component:accept stream, a stanza is in that namespace.
	if top.Name.Space != NSAccept {
		t.Fatalf("stanza %q accepted in namespace %q", el.raw, top.Name.Space)
	}
	st := makeStanza(el, NSAccept)
	checkStanza(t, st)
	for _, a := range top.Attr {
		if a.Name.Space != "" || strings.ContainsAny(a.Value, "\t\n\r") {
			continue
		}
		var got string
		switch a.Name.Local {
		case "to":
			got = st.To()
		case "from":
			got = st.From()
		case "type":
			got = st.Type()
		case "id":
			got = st.ID()
		default:
			continue
		}
		if got != a.Value {
			t.Fatalf("attribute %s = %q, encoding/xml says %q", a.Name.Local, got, a.Value)
		}
	}
	again, err := parseStanza(el.raw, limits{maxElem: 4096, maxDepth: 16, maxAttrs: 16})
	if err != nil {
		t.Fatalf("ParseStanza rejects %q accepted on a stream: %v", el.raw, err)
	}
	if again != st {
		t.Fatalf("ParseStanza differs: %+v / %+v", again, st)
	}
}

// checkNamespaces parses raw with encoding/xml inside an element that has
// the stream's namespaces, and checks what the scanner promises about
// namespaces, on resolved names: no two attributes of an element with the
// same namespace and local name; no prefix bound to a reserved namespace
// (but xml to its own), no xmlns prefix declared, no reserved default
// namespace. It returns the top-level element.
func checkNamespaces(t *testing.T, raw string) xml.StartElement {
	t.Helper()
	wrapped := `<w xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'>` + raw + `</w>`
	d := xml.NewDecoder(strings.NewReader(wrapped))
	var top *xml.StartElement
	depth := 0
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("encoding/xml rejects %q: %v", raw, err)
		}
		switch tt := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 2 && top == nil {
				c := tt.Copy()
				top = &c
			}
			seen := map[xml.Name]bool{}
			for _, a := range tt.Attr {
				switch {
				case a.Name.Space == "xmlns":
					bad := a.Name.Local == "xmlns" ||
						(a.Name.Local == "xml") != (a.Value == nsXML) ||
						a.Value == nsXMLNS
					if bad {
						t.Fatalf("%q accepted with xmlns:%s='%s'", raw, a.Name.Local, a.Value)
					}
				case a.Name.Space == "" && a.Name.Local == "xmlns":
					if a.Value == nsXML || a.Value == nsXMLNS {
						t.Fatalf("%q accepted with the default namespace %q", raw, a.Value)
					}
				default:
					if seen[a.Name] {
						t.Fatalf("%q accepted with two attributes {%s}%s", raw, a.Name.Space, a.Name.Local)
					}
					seen[a.Name] = true
				}
			}
		case xml.EndElement:
			depth--
		}
	}
	if top == nil {
		t.Fatalf("encoding/xml found no element in %q", raw)
	}
	return *top
}

// checkStanza checks a Stanza ready to be forwarded: its XML has no xmlns
// on the stanza element (it takes the namespace of the stream it is
// written to), and its tokens are in the content namespace.
func checkStanza(t *testing.T, st Stanza) {
	t.Helper()
	top := checkNamespaces(t, st.String())
	for _, a := range top.Attr {
		if a.Name.Space == "" && a.Name.Local == "xmlns" {
			t.Fatalf("stanza %q keeps an xmlns attribute", st)
		}
	}
	tok, err := st.TokenReader().Token()
	if err != nil {
		t.Fatalf("tokens of %q: %v", st, err)
	}
	if se, ok := tok.(xml.StartElement); !ok || se.Name.Space != NSAccept || se.Name.Local != st.Name() {
		t.Fatalf("first token of %q: %#v", st, tok)
	}
}

// FuzzHeader feeds arbitrary bytes as the start of a stream: no panic, and
// a header is either returned or refused with a stream error or EOF.
func FuzzHeader(f *testing.F) {
	addSeeds(f,
		testHeader,
		`<?xml version='1.0'?><stream:stream xmlns='jabber:component:connect' xmlns:stream='http://etherx.jabber.org/streams' from='c'>`,
		`<s:stream xmlns:s='http://etherx.jabber.org/streams' xmlns='jabber:client'>`,
	)
	f.Fuzz(func(t *testing.T, in string) {
		sc := newScanner(strings.NewReader(in), defaultLimits)
		h, err := sc.readHeader()
		var se *StreamError
		switch {
		case err == nil:
			if h.qname == "" {
				t.Fatalf("header without a name from %q", in)
			}
		case errors.As(err, &se):
			if se.Condition.Err == "" {
				t.Fatalf("stream error without condition: %v", err)
			}
		case errors.Is(err, io.ErrUnexpectedEOF):
		default:
			t.Fatalf("unexpected error %v", err)
		}
	})
}

// FuzzParseStanza: ParseStanza never panics, and what it accepts parses
// again to the same Stanza, and encoding/xml agrees it is well-formed.
func FuzzParseStanza(f *testing.F) {
	addSeeds(f, `<message to='a@b' from='c'/>`, `<iq type='get' id='1'><q xmlns='urn:x'/></iq>`, `  <presence/>  `,
		`<presence xmlns='jabber:client' to='a'><c xmlns:p='urn:p' p:a='1' xml:lang='en'/></presence>`,
		`<message xmlns:p='http://www.w3.org/XML/1998/namespace'/>`)
	f.Fuzz(func(t *testing.T, in string) {
		st, err := ParseStanza([]byte(in))
		if err != nil {
			if !errors.Is(err, ErrInvalidStanza) {
				t.Fatalf("error not matching ErrInvalidStanza: %v", err)
			}
			return
		}
		again, err := ParseStanza([]byte(st.String()))
		if err != nil || again != st {
			t.Fatalf("re-parse of %q: %+v, %v", st.String(), again, err)
		}
		checkStanza(t, st)
	})
}

// FuzzDomainOf: address parsing never panics, and normalising twice
// changes nothing.
func FuzzDomainOf(f *testing.F) {
	for _, s := range []string{"alice@Example.COM/res", "example.com.", "@x", "a@b@c/d/e", "[::1]", "bücher.example", "xn--bcher-kva.example", "a/"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, j string) {
		d, ok := domainOf(j)
		if !ok {
			return
		}
		d2, ok := normDomain(d)
		if !ok || d2 != d {
			t.Fatalf("domainOf(%q) = %q, normalised again %q (%v)", j, d, d2, ok)
		}
	})
}

// pipeConn is a net.Conn whose input is fixed and whose output is kept.
type pipeConn struct {
	r io.Reader
	w bytes.Buffer
}

func (c *pipeConn) Read(p []byte) (int, error)       { return c.r.Read(p) }
func (c *pipeConn) Write(p []byte) (int, error)      { return c.w.Write(p) }
func (c *pipeConn) Close() error                     { return nil }
func (c *pipeConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *pipeConn) RemoteAddr() net.Addr             { return &net.TCPAddr{} }
func (c *pipeConn) SetDeadline(time.Time) error      { return nil }
func (c *pipeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *pipeConn) SetWriteDeadline(time.Time) error { return nil }

// FuzzRespond plays an arbitrary peer against the responder's handshake:
// no panic, a stream error we send is well-formed, and success needs the
// right handshake.
func FuzzRespond(f *testing.F) {
	addSeeds(f,
		`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='c.example'><handshake>x</handshake>`,
		`<stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' to='c.example'>`,
		`<?xml version='1.0'?><stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='other.example'>`,
	)
	o, err := optionFields{Plaintext: true}.options()
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, in string) {
		pc := &pipeConn{r: strings.NewReader(in)}
		c := newConn(pc, o, NSAccept)
		accepted := false
		err := c.respond(func(name string) (string, error) {
			if name != "c.example" {
				return "", violation(stream.HostUnknown, "unknown")
			}
			return "secret", nil
		}, func() error {
			accepted = true
			return nil
		})
		if err == nil {
			if !accepted || !strings.Contains(in, Handshake(c.id, "secret")) && !strings.Contains(strings.ToLower(in), Handshake(c.id, "secret")) {
				t.Fatalf("handshake accepted from %q", in)
			}
			return
		}
		if accepted {
			t.Fatalf("accept called, then %v", err)
		}
		out := pc.w.String()
		if out == "" {
			return
		}
		if !strings.HasSuffix(out, "</stream:stream>") {
			out += "</stream:stream>" // the read failed: we just hang up
		}
		// What we wrote must be a well-formed stream prefix.
		d := xml.NewDecoder(strings.NewReader(out))
		for {
			_, err := d.Token()
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("we wrote malformed XML %q: %v", out, err)
			}
		}
	})
}
