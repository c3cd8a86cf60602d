package wire

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stream"
)

const hdr = "<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' to='b.test' version='1.0'>"

// readAll reads a stream and returns its canonical elements and the error
// that ended it.
func readAll(in string, lim Limits) ([]string, error) {
	r := NewReader(strings.NewReader(in), lim)
	if _, err := r.Header(); err != nil {
		return nil, err
	}
	var out []string
	for range 1000 {
		start, err := r.Next()
		if err != nil {
			return out, err
		}
		b, err := r.Element(start)
		if err != nil {
			return out, err
		}
		out = append(out, string(b))
	}
	return out, nil
}

func TestReader(t *testing.T) {
	tests := []struct {
		name string
		in   string
		lim  Limits
		want []string
		cond stream.Error // zero: want ErrClosed
	}{
		{name: "close", in: hdr + " \n</stream:stream>"},
		{name: "stanza", in: hdr + "<message to='a@b' from='c@d'><body>hi &amp; bye</body></message></stream:stream>",
			want: []string{"<message to='a@b' from='c@d'><body>hi &amp; bye</body></message>"}},
		{name: "prefixed payload", in: hdr + "<iq><q:query xmlns:q='urn:q'><q:item q:a='1' b='2'/></q:query></iq></stream:stream>",
			want: []string{"<iq><query xmlns='urn:q'><item xmlns:a0='urn:q' a0:a='1' b='2'></item></query></iq>"}},
		{name: "whitespace keepalives", in: hdr + " <a/> \t\r\n <b/></stream:stream>", want: []string{"<a></a>", "<b></b>"}},
		{name: "comment", in: hdr + "<!-- x -->", cond: stream.RestrictedXML},
		{name: "PI after header", in: hdr + "<?php x?>", cond: stream.RestrictedXML},
		{name: "doctype", in: "<!DOCTYPE x>" + hdr, cond: stream.RestrictedXML},
		{name: "entity", in: hdr + "<a>&ent;</a>", cond: stream.RestrictedXML},
		{name: "not UTF-8 declared", in: "<?xml version='1.0' encoding='ISO-8859-1'?>" + hdr[len("<?xml version='1.0'?>"):], cond: stream.UnsupportedEncoding},
		{name: "wrong stream ns", in: "<stream:stream xmlns:stream='urn:x'>", cond: stream.InvalidNamespace},
		{name: "mismatched tags", in: hdr + "<a></b>", cond: stream.NotWellFormed},
		{name: "too large", in: hdr + "<a>" + strings.Repeat("x", 5000) + "</a>", lim: Limits{MaxElement: 1000}, cond: stream.PolicyViolation},
		{name: "too deep", in: hdr + strings.Repeat("<a>", 20) + strings.Repeat("</a>", 20), lim: Limits{MaxDepth: 10}, cond: stream.PolicyViolation},
		{name: "too many attributes", in: hdr + "<a" + strings.Repeat(" x=''", 3) + "/>", lim: Limits{MaxAttrs: 2}, cond: stream.PolicyViolation},
		{name: "repeated attribute", in: hdr + "<message from='a@b' to='c@d' from='e@f'/>", cond: stream.NotWellFormed},
		{name: "repeated attribute in payload", in: hdr + "<message><x xmlns='urn:x' a='1' a='2'/></message>", cond: stream.NotWellFormed},
		{name: "same local name, other namespaces", in: hdr + "<a xmlns:p='urn:p' p:x='1' x='2'/></stream:stream>", want: []string{"<a xmlns:a0='urn:p' a0:x='1' x='2'></a>"}},
		{name: "repeated header attribute", in: "<stream:stream xmlns:stream='http://etherx.jabber.org/streams' to='a' to='b'>", cond: stream.NotWellFormed},
		{name: "text at top level", in: hdr + "text<a/>", cond: stream.BadFormat},
		{name: "large but within limit", in: hdr + "<a>" + strings.Repeat("x", 900) + "</a></stream:stream>", lim: Limits{MaxElement: 1000}, want: []string{"<a>" + strings.Repeat("x", 900) + "</a>"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := readAll(tc.in, tc.lim)
			if tc.cond.Err == "" {
				require.ErrorIs(t, err, ErrClosed)
			} else {
				require.ErrorIs(t, err, tc.cond)
				var we *Error
				require.ErrorAs(t, err, &we)
			}
			assert.Equal(t, tc.want, got)
		})
	}
}

// A truncated stream is a transport error, not a protocol violation.
func TestReaderTruncated(t *testing.T) {
	_, err := readAll(hdr+"<message><bo", Limits{})
	require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	var we *Error
	assert.False(t, errors.As(err, &we))
}

// The budget stops a huge text node without buffering it whole.
func TestReaderBudgetStopsEarly(t *testing.T) {
	src := &countingReader{r: strings.NewReader(hdr + "<a>" + strings.Repeat("x", 10<<20) + "</a>")}
	r := NewReader(src, Limits{MaxElement: 64 << 10})
	_, err := r.Header()
	require.NoError(t, err)
	start, err := r.Next()
	require.NoError(t, err)
	_, err = r.Element(start)
	require.ErrorIs(t, err, stream.PolicyViolation)
	assert.Less(t, src.n, 200<<10, "read far less than the 10 MiB sent")
}

type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

func TestEscape(t *testing.T) {
	assert.Equal(t, "a&amp;b&lt;c&gt;d&#xD;e\"'", EscapeText("a&b<c>d\re\"'"))
	assert.Equal(t, "&apos;&quot;&amp;&lt;&gt;&#x9;&#xA;&#xD;", EscapeAttr("'\"&<>\t\n\r"))
}

// FuzzReader: any input ends in a stream error, a transport error or a
// clean close, never a panic or a hang; canonical output re-reads to
// itself.
func FuzzReader(f *testing.F) {
	for _, s := range []string{
		hdr + "<message to='a@b' from='c@d'><body>hi</body></message></stream:stream>",
		hdr + "<iq><q:query xmlns:q='urn:q'><q:item q:a='1'/></q:query></iq>",
		hdr + "<a xml:lang='en'>&lt;&amp;&#x41;</a>",
		hdr + "<!-- c -->", "<?xml version='1.0'?>", hdr + "<a><![CDATA[x]]></a>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		els, _ := readAll(string(in), Limits{MaxElement: 4096, MaxDepth: 16})
		for _, el := range els {
			again, err := readAll(hdr+el+"</stream:stream>", Limits{MaxElement: 1 << 20, MaxDepth: 16})
			if !errors.Is(err, ErrClosed) {
				t.Fatalf("canonical element %q does not re-read: %v", el, err)
			}
			if len(again) != 1 || again[0] != el {
				t.Fatalf("canonical form not stable: %q -> %q", el, again)
			}
			if !bytes.HasPrefix([]byte(el), []byte("<")) {
				t.Fatalf("element does not start with <: %q", el)
			}
		}
	})
}
