package xcp

import (
	"errors"
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
		`<presence xmlns='jabber:client' from='x&amp;y@c.example' to='b.example'/>` +
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
		m := makeStanza(els[0])
		assert.Equal(t, "message", m.Name())
		assert.Equal(t, "a@b.example/r", m.To())
		assert.Equal(t, "c.example", m.From())
		assert.Equal(t, "chat", m.Type())
		assert.Equal(t, "1", m.ID())
		assert.True(t, strings.HasPrefix(m.String(), "<message ") && strings.HasSuffix(m.String(), "</message>"), m.String())
		p := makeStanza(els[1])
		assert.Equal(t, "x&y@c.example", p.From())
		assert.Equal(t, `<presence xmlns='jabber:client' from='x&amp;y@c.example' to='b.example'/>`, p.String())
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
