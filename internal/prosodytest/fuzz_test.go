package prosodytest

import (
	"bytes"
	"errors"
	"io"
	"strconv"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

const testHeader = `<?xml version='1.0'?><stream:stream xmlns='jabber:client' xmlns:stream='http://etherx.jabber.org/streams' id='x1' from='a.test' version='1.0'>`

func TestStreamReader(t *testing.T) {
	t.Parallel()
	in := testHeader + `<stream:features><mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms></stream:features>` +
		"\n <message to='b@b.test' id='1'><body>a &amp; b</body></message><presence/>" +
		`<stream:error><host-unknown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/><text xmlns='urn:ietf:params:xml:ns:xmpp-streams'>no such host</text></stream:error>` +
		`<iq type='result' id='z'/></stream:stream>`
	// One byte per Read proves that read-ahead and offsets line up.
	sr := newStreamReader(iotest.OneByteReader(strings.NewReader(in)))
	hdr, err := sr.header()
	require.NoError(t, err)
	assert.Equal(t, "stream", hdr.Name.Local)

	st, err := sr.next()
	require.NoError(t, err)
	assert.True(t, hasPlain(st))

	st, err = sr.next()
	require.NoError(t, err)
	assert.Equal(t, `<message to='b@b.test' id='1'><body>a &amp; b</body></message>`, st.String())
	assert.Equal(t, `<body>a &amp; b</body>`, string(st.Inner))
	assert.Equal(t, "jabber:client", st.Name.Space)
	assert.Equal(t, "b@b.test", st.Get("to"))
	assert.Empty(t, st.Get("from"))

	st, err = sr.next()
	require.NoError(t, err)
	assert.Equal(t, "<presence/>", st.String())
	assert.Empty(t, st.Inner)

	_, err = sr.next()
	var se *StreamError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "host-unknown", se.Condition)
	assert.Equal(t, "no such host", se.Text)

	st, err = sr.next()
	require.NoError(t, err)
	assert.Equal(t, "z", st.Get("id"))
	_, err = sr.next()
	require.ErrorIs(t, err, io.EOF)
	assert.Empty(t, sr.rec.buf, "consumed input is dropped")
}

func TestStreamReaderErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name, in string
		want     error
	}{
		{"cut", testHeader + "<message><body>", io.ErrUnexpectedEOF},
		{"closed", testHeader, io.ErrUnexpectedEOF},
		{"not a stream", "<html>", ErrStream},
		{"deep", testHeader + strings.Repeat("<a>", maxDepth+1), ErrStream},
		{"big", testHeader + "<a>" + strings.Repeat("<b/>", maxStanzaBytes/4) + "</a>", ErrStream},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sr := newStreamReader(strings.NewReader(tc.in))
			_, err := sr.header()
			if err == nil {
				_, err = sr.next()
			}
			require.ErrorIs(t, err, tc.want)
		})
	}
}

// FuzzStreamReader feeds arbitrary stream content to the reader. Each
// stanza it returns must read back identically on its own.
func FuzzStreamReader(f *testing.F) {
	for _, seed := range []string{
		"<message to='b@b.test'><body>hi</body></message>",
		"<presence/><iq type='get' id='1'><ping xmlns='urn:xmpp:ping'/></iq>",
		"<stream:error><conflict xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
		"</stream:stream>",
		" \n<a xmlns:x='urn:x'><x:b x:c='d'>&lt;&#x41;</x:b><![CDATA[<>]]><!-- c --></a>",
		"<a><b>",
		"<a></b>",
		"\x00",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		sr := newStreamReader(bytes.NewReader(append([]byte(testHeader), data...)))
		if _, err := sr.header(); err != nil {
			t.Fatalf("fixed header: %v", err)
		}
		for range 100 {
			st, err := sr.next()
			if err != nil {
				return
			}
			if !bytes.HasPrefix(st.Raw, []byte("<")) || !bytes.HasSuffix(st.Raw, []byte(">")) || !bytes.Contains(st.Raw, st.Inner) {
				t.Fatalf("bad cut: raw %q inner %q", st.Raw, st.Inner)
			}
			again := newStreamReader(strings.NewReader(testHeader + string(st.Raw)))
			if _, err := again.header(); err != nil {
				t.Fatal(err)
			}
			st2, err := again.next()
			if err != nil {
				t.Fatalf("%q read once but not twice: %v", st.Raw, err)
			}
			if !bytes.Equal(st.Raw, st2.Raw) || st.Name != st2.Name || !bytes.Equal(st.Inner, st2.Inner) {
				t.Fatalf("re-read differs: %q vs %q", st.Raw, st2.Raw)
			}
		}
	})
}

// FuzzLuaString checks that any string survives quoting, decoded by a
// model of Lua's string-literal rules for the escapes luaString emits.
func FuzzLuaString(f *testing.F) {
	for _, seed := range []string{"", "a.test", `"\`, "\x00\x01" + "9", "\n\r\t", "é", "\x7f\xff"} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, s string) {
		q := luaString(s)
		got, err := unquoteLua(q)
		if err != nil {
			t.Fatalf("luaString(%q) = %s: %v", s, q, err)
		}
		if got != s {
			t.Fatalf("luaString(%q) = %s decodes to %q", s, q, got)
		}
	})
}

// unquoteLua decodes a double-quoted Lua string literal that uses only
// \\, \" and \ddd escapes and holds no raw control bytes or newlines.
func unquoteLua(q string) (string, error) {
	if len(q) < 2 || q[0] != '"' || q[len(q)-1] != '"' {
		return "", errors.New("not quoted")
	}
	body := q[1 : len(q)-1]
	var b strings.Builder
	for i := 0; i < len(body); i++ {
		c := body[i]
		switch {
		case c == '"':
			return "", errors.New("unescaped quote")
		case c < 0x20 || c == 0x7f:
			return "", errors.New("raw control byte")
		case c != '\\':
			b.WriteByte(c)
		case i+1 < len(body) && (body[i+1] == '\\' || body[i+1] == '"'):
			b.WriteByte(body[i+1])
			i++
		case i+3 < len(body):
			n, err := strconv.Atoi(body[i+1 : i+4])
			if err != nil || n > 255 {
				return "", errors.New("bad decimal escape")
			}
			b.WriteByte(byte(n))
			i += 3
		default:
			return "", errors.New("dangling backslash")
		}
	}
	return b.String(), nil
}
