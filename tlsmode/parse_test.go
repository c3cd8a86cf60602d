package tlsmode_test

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/tlsmode"
)

// parseFeature reads the first element of doc and passes it to
// ParseFeature. It returns the decoder for checks on what follows.
func parseFeature(t *testing.T, doc string) (tlsmode.Peer, *xml.Decoder, error) {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(doc))
	tok, err := d.Token()
	require.NoError(t, err, doc)
	start, ok := tok.(xml.StartElement)
	require.True(t, ok, doc)
	peer, err := tlsmode.ParseFeature(d, &start)
	return peer, d, err
}

func TestParseFeature(t *testing.T) {
	t.Parallel()
	const open = `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>`
	for _, tc := range []struct {
		listing string
		want    tlsmode.Peer
	}{
		{`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, tlsmode.PeerOptional},
		{open + `</starttls>`, tlsmode.PeerOptional},
		{open + `<required/></starttls>`, tlsmode.PeerRequired},
		{open + `<required>yes<x/></required></starttls>`, tlsmode.PeerRequired},
		{open + `<required a='1'/><required/></starttls>`, tlsmode.PeerRequired},
		{open + "\n  <!-- c --><?pi x?><ext xmlns='urn:example'/>text<required/>\n</starttls>", tlsmode.PeerRequired},
		{`<tls:starttls xmlns:tls='urn:ietf:params:xml:ns:xmpp-tls'><tls:required/></tls:starttls>`, tlsmode.PeerRequired},
		{open + `<t:required xmlns:t='urn:ietf:params:xml:ns:xmpp-tls'/></starttls>`, tlsmode.PeerRequired},
		{open + `<required xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></starttls>`, tlsmode.PeerRequired},

		// Not the marker: wrong namespace, no namespace, not a direct child,
		// an attribute, or text.
		{open + `<required xmlns='urn:example'/></starttls>`, tlsmode.PeerOptional},
		{open + `<required xmlns=''/></starttls>`, tlsmode.PeerOptional},
		{`<tls:starttls xmlns:tls='urn:ietf:params:xml:ns:xmpp-tls'><required/></tls:starttls>`, tlsmode.PeerOptional},
		{open + `<x xmlns='urn:example'><required/></x></starttls>`, tlsmode.PeerOptional},
		{open + `<x><required/></x></starttls>`, tlsmode.PeerOptional},
		{open + `<Required/><REQUIRED/></starttls>`, tlsmode.PeerOptional},
		{`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls' required='true'/>`, tlsmode.PeerOptional},
		{open + `required</starttls>`, tlsmode.PeerOptional},
		// encoding/xml keeps an undeclared prefix as the namespace name (a
		// prefix cannot contain ':', so it never equals NS).
		{open + `<x:required/></starttls>`, tlsmode.PeerOptional},
	} {
		peer, d, err := parseFeature(t, tc.listing+`<next/>`)
		require.NoError(t, err, tc.listing)
		assert.Equal(t, tc.want, peer, tc.listing)
		// Exactly the listing was consumed.
		tok, err := d.Token()
		require.NoError(t, err)
		if assert.IsType(t, xml.StartElement{}, tok, tc.listing) {
			assert.Equal(t, "next", tok.(xml.StartElement).Name.Local, tc.listing)
		}
	}

	for _, bad := range []string{
		`<endtls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`,
		`<starttls xmlns='urn:example'/>`,
		`<starttls/>`,
		`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required></starttls>`,
		`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/>`,
	} {
		peer, _, err := parseFeature(t, bad)
		assert.Error(t, err, bad)
		assert.Equal(t, tlsmode.PeerNoTLS, peer, bad)
	}

	peer, err := tlsmode.ParseFeature(xml.NewDecoder(strings.NewReader("")), nil)
	assert.Error(t, err)
	assert.Equal(t, tlsmode.PeerNoTLS, peer)
}

func TestWriteFailure(t *testing.T) {
	t.Parallel()
	var w countingWriter
	require.NoError(t, tlsmode.WriteFailure(&w))
	assert.Equal(t, wireFailure+"</stream:stream>", w.b.String())
	assert.Equal(t, 1, w.writes, "one write, so the bytes leave together")

	errBroken := errors.New("broken pipe")
	err := tlsmode.WriteFailure(failingWriter{errBroken})
	assert.ErrorIs(t, err, errBroken)
}

type countingWriter struct {
	b      bytes.Buffer
	writes int
}

func (w *countingWriter) Write(p []byte) (int, error) {
	w.writes++
	return w.b.Write(p)
}

type failingWriter struct{ err error }

func (w failingWriter) Write([]byte) (int, error) { return 0, w.err }

var _ io.Writer = failingWriter{}

// requiredByRule is the rule ParseFeature documents, computed independently
// with a token walk: PeerRequired iff some direct child of the listing is
// {NS}required. ok is false if the listing is not well-formed up to its end.
func requiredByRule(doc string) (required, ok bool) {
	d := xml.NewDecoder(strings.NewReader(doc))
	depth := 0
	for {
		tok, err := d.Token()
		if err != nil {
			return false, false
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			if depth == 2 && t.Name.Space == tlsmode.NS && t.Name.Local == "required" {
				required = true
			}
		case xml.EndElement:
			depth--
			if depth == 0 {
				return required, true
			}
		}
	}
}

// FuzzParseFeature feeds arbitrary content inside a STARTTLS listing. The
// rule asserted (ParseFeature's documented one): no panic; an error exactly
// when the listing is not well-formed (with PeerNoTLS); otherwise
// PeerRequired exactly when a direct child is <required/> in the STARTTLS
// namespace, else PeerOptional.
func FuzzParseFeature(f *testing.F) {
	for _, seed := range []string{
		``,
		`<required/>`,
		`<required></required>`,
		` <required/> `,
		`<required xmlns='urn:example'/>`,
		`<required xmlns=''/>`,
		`<x><required/></x>`,
		`<t:required xmlns:t='urn:ietf:params:xml:ns:xmpp-tls'/>`,
		`<t:required xmlns:t='urn:example'/>`,
		`<required><required/></required>`,
		`<!-- <required/> --><![CDATA[<required/>]]>`,
		`<required>`,
		`</starttls><required/>`,
		`<x:required/>`,
		`&amp;<required a="&lt;"/>`,
		`<?xml version='1.0'?>`,
		"\x00",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, inner string) {
		doc := `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>` + inner + `</starttls>`
		wantRequired, wellFormed := requiredByRule(doc)

		d := xml.NewDecoder(strings.NewReader(doc))
		tok, err := d.Token()
		if err != nil {
			t.Fatalf("the wrapper's start tag: %v", err)
		}
		start := tok.(xml.StartElement)
		peer, err := tlsmode.ParseFeature(d, &start)

		if !wellFormed {
			if err == nil {
				t.Fatalf("%q: accepted as %v, but the listing is not well-formed", doc, peer)
			}
			if peer != tlsmode.PeerNoTLS {
				t.Fatalf("%q: error %v with %v, want PeerNoTLS", doc, err, peer)
			}
			return
		}
		if err != nil {
			t.Fatalf("%q: well-formed listing rejected: %v", doc, err)
		}
		want := tlsmode.PeerOptional
		if wantRequired {
			want = tlsmode.PeerRequired
		}
		if peer != want {
			t.Fatalf("%q: got %v, want %v", doc, peer, want)
		}
	})
}
