package xcp

import (
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stream"
)

const testHeader = `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='c.example' id='abc'>`

// scanAll reads a header and then every element of in, one byte per read
// when trickle is set.
func scanAll(t *testing.T, in string, lim limits, trickle bool) (header, []element, error) {
	t.Helper()
	var r io.Reader = strings.NewReader(in)
	if trickle {
		r = iotest.OneByteReader(r)
	}
	sc := newScanner(r, lim)
	h, err := sc.readHeader()
	if err != nil {
		return h, nil, err
	}
	var els []element
	for range 1000 {
		el, err := sc.next()
		if err != nil {
			return h, els, err
		}
		el.raw = append([]byte(nil), el.raw...)
		els = append(els, el)
	}
	t.Fatal("too many elements")
	return h, els, nil
}

func TestScanHeader(t *testing.T) {
	for _, trickle := range []bool{false, true} {
		h, els, err := scanAll(t, "\ufeff<?xml version='1.0' encoding='UTF-8'?>\n"+testHeader+"</stream:stream>", defaultLimits, trickle)
		require.ErrorIs(t, err, errStreamEnd)
		assert.Empty(t, els)
		assert.Equal(t, header{qname: "stream:stream", local: "stream", streamNS: nsStream, ns: NSAccept, to: "c.example", id: "abc"}, h)
	}
}

func TestScanElements(t *testing.T) {
	in := testHeader +
		` <message to='a@b.example/r' from="c.example" type='chat' id='1'><body>hi &amp; &#x263A; <![CDATA[<not a tag>]]></body></message>` +
		"\n\t " +
		`<presence xmlns='jabber:component:accept' from='x&amp;y@c.example' to='b.example'/>` +
		`<iq xmlns:p='urn:p' type='get' id='q' to='b.example' from='c.example'><p:query p:a='1'><x xmlns='urn:y'/></p:query></iq>` +
		`<handshake>ABC</handshake>` +
		`<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>` +
		`<foo xmlns='urn:other'/>` +
		`</stream:stream>`
	for _, trickle := range []bool{false, true} {
		_, els, err := scanAll(t, in, defaultLimits, trickle)
		require.ErrorIs(t, err, errStreamEnd)
		require.Len(t, els, 6)
		want := []kind{kindMessage, kindPresence, kindIQ, kindHandshake, kindStreamError, kindOther}
		for i, el := range els {
			assert.Equal(t, want[i], el.kind, "element %d", i)
		}
		m := makeStanza(els[0], NSAccept)
		assert.Equal(t, "message", m.Name())
		assert.Equal(t, "a@b.example/r", m.To())
		assert.Equal(t, "c.example", m.From())
		assert.Equal(t, "chat", m.Type())
		assert.Equal(t, "1", m.ID())
		assert.True(t, strings.HasPrefix(m.String(), "<message ") && strings.HasSuffix(m.String(), "</message>"), m.String())
		p := makeStanza(els[1], NSAccept)
		assert.Equal(t, "x&y@c.example", p.From())
		assert.Equal(t, "b.example", p.To())
		assert.Equal(t, `<presence from='x&amp;y@c.example' to='b.example'/>`, p.String())
		assert.Equal(t, "foo", els[5].name)
	}
}

func TestScanErrors(t *testing.T) {
	small := limits{maxElem: 100, maxDepth: 3, maxAttrs: 3}
	for _, tc := range []struct {
		name string
		in   string
		lim  limits
		cond stream.Error
	}{
		{"comment", `<!-- x -->`, defaultLimits, stream.RestrictedXML},
		{"comment inside", `<message><!-- x --></message>`, defaultLimits, stream.RestrictedXML},
		{"PI", `<?foo bar?>`, defaultLimits, stream.RestrictedXML},
		{"doctype", `<!DOCTYPE x>`, defaultLimits, stream.RestrictedXML},
		{"entity", `<message>&foo;</message>`, defaultLimits, stream.RestrictedXML},
		{"bad char ref", `<message>&#0;</message>`, defaultLimits, stream.NotWellFormed},
		{"bad char ref hex", `<message>&#xD800;</message>`, defaultLimits, stream.NotWellFormed},
		{"mismatch", `<message></presence>`, defaultLimits, stream.NotWellFormed},
		{"lt in attr", `<message to='<'/>`, defaultLimits, stream.NotWellFormed},
		{"unquoted", `<message to=a/>`, defaultLimits, stream.NotWellFormed},
		{"no value", `<message to/>`, defaultLimits, stream.NotWellFormed},
		{"no space", `<message to='a'from='b'/>`, defaultLimits, stream.NotWellFormed},
		{"duplicate attr", `<message to='a' to='b'/>`, defaultLimits, stream.NotWellFormed},
		{"text at top", `hello`, defaultLimits, stream.BadFormat},
		{"control char", "<message>\x01</message>", defaultLimits, stream.NotWellFormed},
		{"bad utf8", "<message>\xff</message>", defaultLimits, stream.NotWellFormed},
		{"undeclared prefix", `<message><x:y/></message>`, defaultLimits, stream.BadNamespacePrefix},
		{"undeclared attr prefix", `<message x:a='1'/>`, defaultLimits, stream.BadNamespacePrefix},
		{"header prefix in stanza", `<message><stream:x/></message>`, defaultLimits, stream.BadNamespacePrefix},
		{"empty prefix binding", `<message xmlns:a=''/>`, defaultLimits, stream.NotWellFormed},
		{"xmlns prefix", `<xmlns:message/>`, defaultLimits, stream.BadNamespacePrefix},
		{"bad name", `<1message/>`, defaultLimits, stream.NotWellFormed},
		{"two colons", `<a:b:c/>`, defaultLimits, stream.NotWellFormed},
		{"too big", `<message>` + strings.Repeat("x", 200) + `</message>`, small, stream.PolicyViolation},
		{"too deep", `<message><a><b><c/></b></a></message>`, small, stream.PolicyViolation},
		{"too many attrs", `<message a='1' b='2' c='3' d='4'/>`, small, stream.PolicyViolation},
		{"wrong close", `</stream:other>`, defaultLimits, stream.NotWellFormed},
		{"cdata at top", `<![CDATA[x]]>`, defaultLimits, stream.NotWellFormed},
		{"empty ref", `<message>&;</message>`, defaultLimits, stream.RestrictedXML},
		{"long ref", `<message>&aaaaaaaaaaaaaaaaaaaaaaa;</message>`, defaultLimits, stream.NotWellFormed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, trickle := range []bool{false, true} {
				_, _, err := scanAll(t, testHeader+tc.in, tc.lim, trickle)
				var se *StreamError
				require.ErrorAs(t, err, &se, "trickle=%v", trickle)
				assert.Equal(t, tc.cond.Err, se.Condition.Err, "%v (trickle=%v)", err, trickle)
				assert.ErrorIs(t, err, tc.cond)
			}
		})
	}
}

func TestScanHeaderErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   string
		cond stream.Error
	}{
		{"text first", `hello`, stream.NotWellFormed},
		{"encoding", `<?xml version='1.0' encoding='ISO-8859-1'?>` + testHeader, stream.UnsupportedEncoding},
		{"PI", `<?php x?>` + testHeader, stream.RestrictedXML},
		{"second decl", `<?xml version='1.0'?><?xml version='1.0'?>`, stream.RestrictedXML},
		{"closed header", `<stream:stream xmlns:stream='http://etherx.jabber.org/streams'/>`, stream.NotWellFormed},
		{"undeclared stream prefix", `<stream:stream xmlns='jabber:component:accept'>`, stream.BadNamespacePrefix},
		{"huge", `<stream:stream a='` + strings.Repeat("x", maxHeaderSize+10), stream.PolicyViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sc := newScanner(strings.NewReader(tc.in), defaultLimits)
			_, err := sc.readHeader()
			assert.ErrorIs(t, err, tc.cond)
		})
	}
}

func TestScanEOF(t *testing.T) {
	_, _, err := scanAll(t, testHeader+`<message>`, defaultLimits, false)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
	_, _, err = scanAll(t, testHeader, defaultLimits, true)
	assert.ErrorIs(t, err, io.ErrUnexpectedEOF)
}

func TestScanBufferShrinks(t *testing.T) {
	big := `<message>` + strings.Repeat("x", 300<<10) + `</message>`
	sc := newScanner(strings.NewReader(testHeader+big+`<message/>`), defaultLimits)
	_, err := sc.readHeader()
	require.NoError(t, err)
	el, err := sc.next()
	require.NoError(t, err)
	assert.Len(t, el.raw, len(big))
	el, err = sc.next()
	require.NoError(t, err)
	assert.Equal(t, "<message/>", string(el.raw))
	assert.Equal(t, initialBuf, len(sc.buf))
}

func TestParseStanza(t *testing.T) {
	st, err := ParseStanza([]byte(`  <iq type='get' id='1' to='a.example' from='b.example'><ping xmlns='urn:xmpp:ping'/></iq> `))
	require.NoError(t, err)
	assert.Equal(t, "iq", st.Name())
	for _, bad := range []string{``, `<foo/>`, `<message/><message/>`, `<message>`, `text`, `<stream:error/>`} {
		_, err := ParseStanza([]byte(bad))
		assert.ErrorIs(t, err, ErrInvalidStanza, bad)
	}
}

func TestUnescape(t *testing.T) {
	assert.Equal(t, "a&b<c>d\"e'f\u263a g h", unescape([]byte("a&amp;b&lt;c&gt;d&quot;e&apos;f&#x263A;\tg\r\nh")))
	assert.Equal(t, "A", unescape([]byte("&#65;")))
}

func TestStreamErrorIs(t *testing.T) {
	err := error(violation(stream.NotAuthorized, "x"))
	assert.ErrorIs(t, err, ErrNotAuthorized)
	assert.ErrorIs(t, err, stream.NotAuthorized)
	assert.False(t, errors.Is(err, stream.Conflict))
}

// TestScanNamespaceRules: attributes are compared by their resolved
// (namespace, local) names, and the reserved namespaces and prefixes are
// refused however their values are written (Namespaces in XML 1.0 §3,
// §6.3), so nothing we forward makes a stricter parser end the stream.
func TestScanNamespaceRules(t *testing.T) {
	const (
		xmlNS   = "http://www.w3.org/XML/1998/namespace"
		xmlnsNS = "http://www.w3.org/2000/xmlns/"
	)
	for _, tc := range []struct {
		name string
		in   string
		cond stream.Error // zero: accepted
	}{
		{"same namespace, two prefixes", `<message xmlns:a='urn:x' xmlns:b='urn:x' a:c='1' b:c='2'/>`, stream.NotWellFormed},
		{"declared after use", `<message a:c='1' b:c='2' xmlns:a='urn:x' xmlns:b='urn:x'/>`, stream.NotWellFormed},
		{"escaped namespace", `<message xmlns:a='urn:x' xmlns:b='urn&#58;x' a:c='1' b:c='2'/>`, stream.NotWellFormed},
		{"inherited prefix", `<message xmlns:a='urn:x'><x xmlns:b='urn:x' b:c='1' a:c='2'/></message>`, stream.NotWellFormed},
		{"different namespaces", `<message xmlns:a='urn:x' xmlns:b='urn:y' a:c='1' b:c='2'/>`, stream.Error{}},
		{"prefixed and not", `<message xmlns:a='urn:x' c='1' a:c='2'/>`, stream.Error{}},
		{"rebound in a child", `<message xmlns:a='urn:x' a:c='1'><x xmlns:a='urn:y' a:c='1'/></message>`, stream.Error{}},
		{"xml:lang twice", `<message xml:lang='en' xml:lang='de'/>`, stream.NotWellFormed},
		{"prefix bound to the XML namespace", `<message xmlns:p='` + xmlNS + `'/>`, stream.BadNamespacePrefix},
		{"prefix bound to the XML namespace, escaped", `<message xmlns:p='http&#58;//www.w3.org/XML/1998/namespace'/>`, stream.BadNamespacePrefix},
		{"xml:lang and p:lang", `<message xmlns:p='` + xmlNS + `' xml:lang='en' p:lang='de'/>`, stream.BadNamespacePrefix},
		{"prefix bound to the xmlns namespace", `<message xmlns:p='` + xmlnsNS + `'/>`, stream.BadNamespacePrefix},
		{"default namespace is the XML namespace", `<message><x xmlns='` + xmlNS + `'/></message>`, stream.BadNamespacePrefix},
		{"default namespace is the xmlns namespace", `<message><x xmlns='` + xmlnsNS + `'/></message>`, stream.BadNamespacePrefix},
		{"xml prefix rebound", `<message xmlns:xml='urn:x'/>`, stream.BadNamespacePrefix},
		{"xml prefix declared correctly", `<message xmlns:xml='` + xmlNS + `'/>`, stream.Error{}},
		{"xml prefix declared correctly, escaped", `<message xmlns:xml='http&#58;//www.w3.org/XML/1998/namespace'/>`, stream.Error{}},
		{"xmlns prefix declared", `<message xmlns:xmlns='urn:x'/>`, stream.BadNamespacePrefix},
		{"xmlns prefix declared to itself", `<message xmlns:xmlns='` + xmlnsNS + `'/>`, stream.BadNamespacePrefix},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, trickle := range []bool{false, true} {
				_, els, err := scanAll(t, testHeader+tc.in+`</stream:stream>`, defaultLimits, trickle)
				if tc.cond.Err == "" {
					require.ErrorIs(t, err, errStreamEnd, "trickle=%v", trickle)
					require.Len(t, els, 1)
					continue
				}
				var se *StreamError
				require.ErrorAs(t, err, &se, "trickle=%v", trickle)
				assert.Equal(t, tc.cond.Err, se.Condition.Err, "%v (trickle=%v)", err, trickle)
			}
		})
	}
}

// TestScanStanzaNamespace: a top-level stanza is in the stream's content
// namespace, written as no xmlns at all or that very namespace; another
// content namespace ends the stream with <invalid-namespace/>. An explicit
// xmlns is dropped from the copy, so that the stanza inherits the content
// namespace of whatever stream it is written to.
func TestScanStanzaNamespace(t *testing.T) {
	for _, tc := range []struct {
		name, in string
		cond     stream.Error // zero: accepted
		want     string       // the Stanza's XML when accepted
	}{
		{"none", `<message to='a' from='b'/>`, stream.Error{}, `<message to='a' from='b'/>`},
		{"own", `<message xmlns='jabber:component:accept' to='a' from='b'><body>x</body></message>`, stream.Error{}, `<message to='a' from='b'><body>x</body></message>`},
		{"own, last, escaped", "<iq to='a'\n\tid='&amp;' xmlns='jabber&#58;component:accept'/>", stream.Error{}, `<iq to='a'` + "\n\t" + `id='&amp;'/>`},
		{"own handshake", `<handshake xmlns='jabber:component:accept'>x</handshake>`, stream.Error{}, ""},
		{"jabber:server", `<message xmlns='jabber:server' to='a' from='b'/>`, stream.InvalidNamespace, ""},
		{"jabber:client", `<presence xmlns='jabber:client' to='a' from='b'/>`, stream.InvalidNamespace, ""},
		{"the other component namespace", `<iq xmlns='jabber:component:connect' to='a' from='b'/>`, stream.InvalidNamespace, ""},
		{"other handshake", `<handshake xmlns='jabber:component:connect'>x</handshake>`, stream.InvalidNamespace, ""},
		{"prefixed stanza", `<c:message xmlns:c='jabber:component:accept' to='a' from='b'/>`, stream.BadNamespacePrefix, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for _, trickle := range []bool{false, true} {
				_, els, err := scanAll(t, testHeader+tc.in+`</stream:stream>`, defaultLimits, trickle)
				if tc.cond.Err != "" {
					var se *StreamError
					require.ErrorAs(t, err, &se, "trickle=%v", trickle)
					assert.Equal(t, tc.cond.Err, se.Condition.Err, "%v (trickle=%v)", err, trickle)
					continue
				}
				require.ErrorIs(t, err, errStreamEnd)
				require.Len(t, els, 1)
				if tc.want == "" {
					continue
				}
				st := makeStanza(els[0], NSAccept)
				assert.Equal(t, tc.want, st.String())
				again, err := ParseStanza([]byte(st.String()))
				require.NoError(t, err)
				assert.Equal(t, st, again)
			}
		})
	}

	// ParseStanza takes any of the content namespaces and rewrites it.
	for _, ns := range []string{"jabber:client", "jabber:server", NSAccept, NSConnect} {
		st, err := ParseStanza([]byte(`<presence xmlns='` + ns + `' from='a@b' to='c'><status>x</status></presence>`))
		require.NoError(t, err, ns)
		assert.Equal(t, `<presence from='a@b' to='c'><status>x</status></presence>`, st.String())
		assert.Equal(t, "a@b", st.From())
		assert.Equal(t, "c", st.To())
	}
	_, err := ParseStanza([]byte(`<presence xmlns='urn:other'/>`))
	assert.ErrorIs(t, err, ErrInvalidStanza)
}

// TestScanScopeLimit: namespace declarations in scope are bounded, so that
// resolving a prefix stays cheap whatever the peer declares.
func TestScanScopeLimit(t *testing.T) {
	var b strings.Builder
	b.WriteString(`<message>`)
	for i := range maxScopeDecls + 1 {
		fmt.Fprintf(&b, `<x xmlns:p%d='urn:%d'>`, i, i)
	}
	_, _, err := scanAll(t, testHeader+b.String(), limits{maxElem: 1 << 20, maxDepth: 1000, maxAttrs: 64}, false)
	var se *StreamError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, stream.PolicyViolation.Err, se.Condition.Err, "%v", err)

	var attrs strings.Builder
	for i := range maxScopeDecls + 1 {
		fmt.Fprintf(&attrs, ` xmlns:p%d='urn:%d'`, i, i)
	}
	_, _, err = scanAll(t, `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams'`+attrs.String()+`>`,
		limits{maxElem: 1 << 20, maxDepth: 10, maxAttrs: 1000}, false)
	require.ErrorAs(t, err, &se)
	assert.Equal(t, stream.PolicyViolation.Err, se.Condition.Err, "%v", err)
}

// TestScanDeclOnlyFirst: the XML declaration may only open the stream
// (after an optional byte order mark), not follow white space.
func TestScanDeclOnlyFirst(t *testing.T) {
	for _, in := range []string{" <?xml version='1.0'?>" + testHeader, "\n<?xml version='1.0'?>" + testHeader} {
		sc := newScanner(strings.NewReader(in), defaultLimits)
		_, err := sc.readHeader()
		var se *StreamError
		require.ErrorAs(t, err, &se, "%q", in)
	}
	sc := newScanner(strings.NewReader("\ufeff<?xml version='1.0'?>\n"+testHeader), defaultLimits)
	_, err := sc.readHeader()
	require.NoError(t, err)
}

// TestTokenReaderNamespace: the tokens of a stanza carry the content
// namespace of the stream it arrived on, on every element that inherits it.
func TestTokenReaderNamespace(t *testing.T) {
	in := `<message to='a' from='b'><body>x</body><x xmlns='urn:x'><y/></x><z xmlns=''><w/></z></message>`
	for _, ns := range []string{NSAccept, NSConnect} {
		h := `<stream:stream xmlns='` + ns + `' xmlns:stream='http://etherx.jabber.org/streams' to='c.example' id='abc'>`
		_, els, err := scanAll(t, h+in+`</stream:stream>`, defaultLimits, false)
		require.ErrorIs(t, err, errStreamEnd)
		require.Len(t, els, 1)
		st := makeStanza(els[0], ns)
		var got []string
		r := st.TokenReader()
		for {
			tok, err := r.Token()
			if err == io.EOF {
				break
			}
			require.NoError(t, err)
			switch tt := tok.(type) {
			case xml.StartElement:
				got = append(got, "<"+tt.Name.Space+" "+tt.Name.Local)
			case xml.EndElement:
				got = append(got, "/"+tt.Name.Space+" "+tt.Name.Local)
			}
		}
		assert.Equal(t, []string{
			"<" + ns + " message", "<" + ns + " body", "/" + ns + " body",
			"<urn:x x", "<urn:x y", "/urn:x y", "/urn:x x",
			"< z", "< w", "/ w", "/ z",
			"/" + ns + " message",
		}, got, ns)
	}
	st, err := ParseStanza([]byte(in))
	require.NoError(t, err)
	var m struct {
		XMLName xml.Name `xml:"jabber:component:accept message"`
		Body    string   `xml:"jabber:component:accept body"`
	}
	require.NoError(t, st.Decode(&m))
	assert.Equal(t, "x", m.Body)
}
