package dialback

import (
	"bytes"
	"encoding/xml"
	"errors"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

// wrap puts elements inside a stream-like root that declares the namespaces
// a real S2S stream header declares.
func wrap(inner string) string {
	return `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>` +
		inner + `</stream:stream>`
}

var errNoElement = errors.New("no element in the first 1000 tokens")

// decodeFirst decodes the first child of the wrapped document.
func decodeFirst(doc string) (Element, error) {
	d := xml.NewDecoder(strings.NewReader(doc))
	depth := 0
	for range 1000 {
		tok, err := d.Token()
		if err != nil {
			return nil, err
		}
		if start, ok := tok.(xml.StartElement); ok {
			depth++
			if depth == 2 {
				return Decode(d, start)
			}
		}
	}
	return nil, errNoElement
}

func TestDecode(t *testing.T) {
	itemNotFound := &stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}
	tests := []struct {
		name string
		in   string
		want Element
	}{
		{"result request (XEP-0220 step 1)",
			`<db:result from='capulet.example' to='montague.example'>b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3</db:result>`,
			&Result{From: "capulet.example", To: "montague.example", Key: "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3"}},
		{"pretty-printed key is trimmed",
			"<db:result from='a.example' to='b.example'>\n    abc123\n  </db:result>",
			&Result{From: "a.example", To: "b.example", Key: "abc123"}},
		{"Cisco 40-digit key kept verbatim",
			`<db:result from='coluc.com' to='vngtp.lab'>d780f198ac34a6dbd795fcdaf8762eaf52ea9b03</db:result>`,
			&Result{From: "coluc.com", To: "vngtp.lab", Key: "d780f198ac34a6dbd795fcdaf8762eaf52ea9b03"}},
		{"result valid",
			`<db:result from='montague.example' to='capulet.example' type='valid'/>`,
			&Result{From: "montague.example", To: "capulet.example", Type: TypeValid}},
		{"result invalid",
			`<db:result from='montague.example' to='capulet.example' type='invalid'/>`,
			&Result{From: "montague.example", To: "capulet.example", Type: TypeInvalid}},
		{"result error, unprefixed error child in jabber:server",
			`<db:result from='montague.example' to='capulet.example' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>`,
			&Result{From: "montague.example", To: "capulet.example", Type: TypeError, Err: itemNotFound}},
		{"result error, error child in the dialback namespace (XEP schema form)",
			`<db:result from='m.example' to='c.example' type='error'><db:error type='wait'><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></db:error></db:result>`,
			&Result{From: "m.example", To: "c.example", Type: TypeError, Err: &stanza.Error{Type: stanza.Wait, Condition: stanza.RemoteServerTimeout}}},
		{"error without condition becomes undefined-condition",
			`<db:result from='m.example' to='c.example' type='error'><error type='cancel'/></db:result>`,
			&Result{From: "m.example", To: "c.example", Type: TypeError, Err: &stanza.Error{Type: stanza.Cancel, Condition: stanza.UndefinedCondition}}},
		{"error without child",
			`<db:result from='m.example' to='c.example' type='error'/>`,
			&Result{From: "m.example", To: "c.example", Type: TypeError, Err: &stanza.Error{Type: stanza.Cancel, Condition: stanza.UndefinedCondition}}},
		{"remote-connection-failed (a stream condition XEP-0220 uses) accepted",
			`<db:result from='m.example' to='c.example' type='error'><error type='cancel'><remote-connection-failed xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>`,
			&Result{From: "m.example", To: "c.example", Type: TypeError, Err: &stanza.Error{Type: stanza.Cancel, Condition: "remote-connection-failed"}}},
		{"verify request (XEP-0220 step 2)",
			`<db:verify from='capulet.example' to='montague.example' id='417GAF25'>225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d</db:verify>`,
			&Verify{From: "capulet.example", To: "montague.example", ID: "417GAF25", Key: "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"}},
		{"verify valid",
			`<db:verify from='montague.example' to='capulet.example' id='417GAF25' type='valid'/>`,
			&Verify{From: "montague.example", To: "capulet.example", ID: "417GAF25", Type: TypeValid}},
		{"typed verify echoing the key (Cisco XCP) ignores the key",
			`<db:verify from='coluc.com' id='05E295A2B' to='vngtp.lab' type='valid'>d780f198ac34a6dbd795fcdaf8762eaf52ea9b03</db:verify>`,
			&Verify{From: "coluc.com", To: "vngtp.lab", ID: "05E295A2B", Type: TypeValid}},
		{"any prefix bound to the namespace",
			`<x:verify xmlns:x='jabber:server:dialback' from='a.example' to='b.example' id='i' type='invalid'/>`,
			&Verify{From: "a.example", To: "b.example", ID: "i", Type: TypeInvalid}},
		{"default namespace form",
			`<result xmlns='jabber:server:dialback' from='a.example' to='b.example'>k</result>`,
			&Result{From: "a.example", To: "b.example", Key: "k"}},
		{"unknown children of answers are skipped",
			`<db:result from='a.example' to='b.example' type='valid'><x xmlns='urn:example'><y/></x></db:result>`,
			&Result{From: "a.example", To: "b.example", Type: TypeValid}},
		{"error child ignored on a non-error answer",
			`<db:result from='a.example' to='b.example' type='invalid'><error type='cancel'><forbidden xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>`,
			&Result{From: "a.example", To: "b.example", Type: TypeInvalid}},
		{"key of exactly MaxKeyLen bytes, padded with whitespace",
			"<db:result from='a.example' to='b.example'>\n" + strings.Repeat(" ", 200) + strings.Repeat("f", MaxKeyLen) + "\n</db:result>",
			&Result{From: "a.example", To: "b.example", Key: strings.Repeat("f", MaxKeyLen)}},
		{"malformed by on the error child is ignored",
			`<db:result from='m.example' to='c.example' type='error'><error type='cancel' by='@@@'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>`,
			&Result{From: "m.example", To: "c.example", Type: TypeError, Err: itemNotFound}},
		{"IDN domains as sent",
			`<db:result from='münchen.example' to='b.example'>k</db:result>`,
			&Result{From: "münchen.example", To: "b.example", Key: "k"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := decodeFirst(wrap(tt.in))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestDecodeMalformed(t *testing.T) {
	tests := []struct {
		name string
		in   string
		cond stream.Error
	}{
		{"result without from", `<db:result to='b.example'>k</db:result>`, stream.ImproperAddressing},
		{"result with empty to", `<db:result from='a.example' to=''>k</db:result>`, stream.ImproperAddressing},
		{"from is a full JID", `<db:result from='eve@a.example' to='b.example'>k</db:result>`, stream.ImproperAddressing},
		{"to has a resource", `<db:result from='a.example' to='b.example/x'>k</db:result>`, stream.ImproperAddressing},
		{"oversized domain", `<db:result from='` + strings.Repeat("a", 1024) + `' to='b.example'>k</db:result>`, stream.ImproperAddressing},
		{"verify without id", `<db:verify from='a.example' to='b.example'>k</db:verify>`, stream.BadFormat},
		{"id with spaces", `<db:verify from='a.example' to='b.example' id='a b'>k</db:verify>`, stream.BadFormat},
		{"oversized id", `<db:verify from='a.example' to='b.example' id='` + strings.Repeat("1", 257) + `'>k</db:verify>`, stream.BadFormat},
		{"unknown type", `<db:result from='a.example' to='b.example' type='maybe'/>`, stream.BadFormat},
		{"empty type attribute", `<db:result from='a.example' to='b.example' type=''>k</db:result>`, stream.BadFormat},
		{"request without key", `<db:result from='a.example' to='b.example'/>`, stream.BadFormat},
		{"request with only whitespace", "<db:result from='a.example' to='b.example'> \n </db:result>", stream.BadFormat},
		{"request with a child element", `<db:result from='a.example' to='b.example'>k<evil/></db:result>`, stream.BadFormat},
		{"key one byte over the limit", `<db:result from='a.example' to='b.example'>` + strings.Repeat("f", MaxKeyLen+1) + `</db:result>`, stream.PolicyViolation},
		{"huge key", `<db:result from='a.example' to='b.example'>` + strings.Repeat("f", 1<<20) + `</db:result>`, stream.PolicyViolation},
		{"repeated type", `<db:result from='a.example' to='b.example' type='valid' type='invalid'/>`, stream.BadFormat},
		{"repeated from", `<db:result from='a.example' from='evil.example' to='b.example'>k</db:result>`, stream.BadFormat},
		{"comment in the key", `<db:result from='a.example' to='b.example'>k<!-- c -->k2</db:result>`, stream.RestrictedXML},
		{"processing instruction", `<db:verify from='a.example' to='b.example' id='i' type='valid'><?pi x?></db:verify>`, stream.RestrictedXML},
		{"wrong namespace", `<result xmlns='jabber:server' from='a.example' to='b.example'>k</result>`, stream.InvalidNamespace},
		{"unbound prefix", `<dbx:result from='a.example' to='b.example'>k</dbx:result>`, stream.InvalidNamespace},
		{"not a dialback element", `<db:nonsense from='a.example' to='b.example'/>`, stream.UnsupportedStanzaType},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			el, err := decodeFirst(wrap(tt.in))
			require.Error(t, err)
			assert.Nil(t, el, "no element on error")
			assert.ErrorIs(t, err, ErrMalformed)
			assert.ErrorIs(t, err, tt.cond, "condition")
			var me *MalformedError
			require.True(t, errors.As(err, &me))
			assert.Equal(t, tt.cond.Err, me.Condition.Err)
			assert.NotEmpty(t, me.Reason)
			assert.Contains(t, err.Error(), tt.cond.Err)
		})
	}
}

func TestDecodeSyntaxError(t *testing.T) {
	for _, in := range []string{
		`<db:result from='a.example' to='b.example'>k</db:verify>`,
		`<db:result from='a.example' to='b.example'>k&bogus;</db:result>`,
		`<db:result from='a.example' to='b.example' type='error'><error type='cancel'><x></error></db:result>`,
	} {
		_, err := decodeFirst(wrap(in))
		var se *xml.SyntaxError
		assert.True(t, errors.As(err, &se), "%s: %v", in, err)
	}
	_, err := decodeFirst(`<s xmlns:db='jabber:server:dialback'><db:result from='a.example' to='b.example'>abc`)
	assert.Error(t, err, "truncated input")
}

func TestMarshal(t *testing.T) {
	tests := []struct {
		name string
		el   any
		want string
	}{
		{"result request", Result{From: "capulet.example", To: "montague.example", Key: "b4835385"},
			`<db:result from="capulet.example" to="montague.example">b4835385</db:result>`},
		{"result valid", Result{From: "montague.example", To: "capulet.example", Type: TypeValid, Key: "ignored"},
			`<db:result from="montague.example" to="capulet.example" type="valid"></db:result>`},
		{"result error", Result{From: "montague.example", To: "capulet.example", Type: TypeError,
			Err: &stanza.Error{Type: stanza.Modify, Condition: stanza.PolicyViolation}},
			`<db:result from="montague.example" to="capulet.example" type="error"><error type="modify"><policy-violation xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></policy-violation></error></db:result>`},
		{"verify request", Verify{From: "capulet.example", To: "montague.example", ID: "417GAF25", Key: "225cc5aa"},
			`<db:verify from="capulet.example" to="montague.example" id="417GAF25">225cc5aa</db:verify>`},
		{"verify invalid", &Verify{From: "montague.example", To: "capulet.example", ID: "417GAF25", Type: TypeInvalid},
			`<db:verify from="montague.example" to="capulet.example" id="417GAF25" type="invalid"></db:verify>`},
		{"escaping", Result{From: "a.example", To: "b.example", Key: "<&'>"},
			`<db:result from="a.example" to="b.example">&lt;&amp;&#39;&gt;</db:result>`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := xml.Marshal(tt.el)
			require.NoError(t, err)
			assert.Equal(t, tt.want, string(out))
		})
	}
}

func TestMarshalRefusesInvalid(t *testing.T) {
	tests := []struct {
		name string
		el   any
	}{
		{"result without from", Result{To: "b.example", Key: "k"}},
		{"result with a full JID", Result{From: "a@a.example", To: "b.example", Key: "k"}},
		{"request without key", Result{From: "a.example", To: "b.example"}},
		{"request with blank key", Result{From: "a.example", To: "b.example", Key: " \n"}},
		{"key with NUL", Result{From: "a.example", To: "b.example", Key: "ab\x00cd"}},
		{"key with invalid UTF-8", Result{From: "a.example", To: "b.example", Key: "ab\xffcd"}},
		{"unknown type", Result{From: "a.example", To: "b.example", Type: "bogus"}},
		{"verify without id", Verify{From: "a.example", To: "b.example", Key: "k"}},
		{"verify id with space", Verify{From: "a.example", To: "b.example", ID: "a b", Type: TypeValid}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, err := xml.Marshal(tt.el)
			assert.ErrorIs(t, err, ErrInvalid, "wrote %s", out)
			if v, ok := tt.el.(interface{ Validate() error }); ok {
				assert.ErrorIs(t, v.Validate(), ErrInvalid)
			}
		})
	}
}

func TestMarshalErrorWithoutCondition(t *testing.T) {
	out, err := xml.Marshal(Result{From: "b.example", To: "a.example", Type: TypeError})
	require.NoError(t, err)
	assert.Equal(t, `<db:result from="b.example" to="a.example" type="error"><error type="cancel"><undefined-condition xmlns="urn:ietf:params:xml:ns:xmpp-stanzas"></undefined-condition></error></db:result>`, string(out))
}

func TestRoundTrip(t *testing.T) {
	cases := []Element{
		&Result{From: "a.example", To: "b.example", Key: "0123abcd"},
		&Result{From: "b.example", To: "a.example", Type: TypeValid},
		&Result{From: "b.example", To: "a.example", Type: TypeError, Err: &stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}},
		&Verify{From: "b.example", To: "a.example", ID: "X1", Key: "0123abcd"},
		&Verify{From: "a.example", To: "b.example", ID: "X1", Type: TypeInvalid},
		&Verify{From: "a.example", To: "b.example", ID: "X1", Type: TypeError, Err: &stanza.Error{Type: stanza.Wait, Condition: stanza.RemoteServerTimeout}},
	}
	for _, el := range cases {
		out, err := xml.Marshal(el)
		require.NoError(t, err)
		got, err := decodeFirst(wrap(string(out)))
		require.NoError(t, err, string(out))
		assert.Equal(t, el, got, string(out))
	}
}

func TestAnswer(t *testing.T) {
	req := Result{From: "capulet.example", To: "montague.example", Key: "k"}
	assert.Equal(t, Result{From: "montague.example", To: "capulet.example", Type: TypeValid}, req.Answer(TypeValid, nil))

	vreq := Verify{From: "capulet.example", To: "montague.example", ID: "417GAF25", Key: "k"}
	se := &stanza.Error{Type: stanza.Cancel, Condition: stanza.ItemNotFound}
	assert.Equal(t, Verify{From: "montague.example", To: "capulet.example", ID: "417GAF25", Type: TypeError, Err: se}, vreq.Answer(TypeError, se))
}

func TestFeature(t *testing.T) {
	f := Feature()
	assert.Equal(t, xml.Name{Space: NSFeature, Local: "dialback"}, f.Name)
	assert.Nil(t, f.Negotiate, "informational feature")

	var buf bytes.Buffer
	e := xml.NewEncoder(&buf)
	req, err := f.List(t.Context(), e, xml.StartElement{Name: f.Name})
	require.NoError(t, err)
	require.NoError(t, e.Flush())
	assert.False(t, req)
	assert.Equal(t, `<dialback xmlns="urn:xmpp:features:dialback"><errors></errors></dialback>`, buf.String())

	for _, tt := range []struct {
		in   string
		want Support
	}{
		{`<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>`, Support{Errors: true}},
		{`<dialback xmlns='urn:xmpp:features:dialback'/>`, Support{}},
		{`<dialback xmlns='urn:xmpp:features:dialback'><other xmlns='urn:example'><errors/></other></dialback>`, Support{}},
		{buf.String(), Support{Errors: true}},
	} {
		d := xml.NewDecoder(strings.NewReader(tt.in))
		tok, err := d.Token()
		require.NoError(t, err)
		start := tok.(xml.StartElement)
		req, data, err := f.Parse(t.Context(), d, &start)
		require.NoError(t, err, tt.in)
		assert.False(t, req)
		assert.Equal(t, tt.want, data, tt.in)
	}
}
