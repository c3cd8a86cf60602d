package s2s

import (
	"encoding/xml"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/tlsmode"
)

func decodeFeatures(s string) (features, error) {
	d := xml.NewDecoder(strings.NewReader("<stream:features xmlns:stream='http://etherx.jabber.org/streams'>" + s + "</stream:features>"))
	if _, err := d.Token(); err != nil {
		return features{}, err
	}
	return parseFeatures(d)
}

func TestParseFeatures(t *testing.T) {
	tests := []struct {
		in   string
		want features
	}{
		{"", features{}},
		{"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>", features{tls: true, tlsPeer: tlsmode.PeerRequired}},
		{"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>", features{tls: true, tlsPeer: tlsmode.PeerOptional}},
		{"<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism><mechanism>EXTERNAL</mechanism></mechanisms>", features{external: true, mechanisms: []string{"PLAIN", "EXTERNAL"}}},
		{"<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>", features{dialback: true, dbErrors: true}},
		{"<dialback xmlns='urn:xmpp:features:dialback'/>", features{dialback: true}},
		{"<bidi xmlns='urn:xmpp:features:bidi'/><unknown xmlns='urn:x'><deep><er/></deep></unknown>", features{bidi: true}},
		{"<dialback xmlns='urn:wrong'><errors/></dialback>", features{}},
	}
	for _, tc := range tests {
		got, err := decodeFeatures(tc.in)
		require.NoError(t, err, tc.in)
		assert.Equal(t, tc.want, got, tc.in)
	}
	_, err := decodeFeatures("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>")
	assert.Error(t, err)
}

func TestVersionMajor(t *testing.T) {
	for in, want := range map[string]int{"1.0": 1, "2.13": 2, "0.9": 0, "1": -1, "1.": -1, ".1": -1, "a.b": -1, "1.x": -1, "-1.0": -1, "": -1} {
		assert.Equal(t, want, versionMajor(in), in)
	}
}

// FuzzParseFeatures: the originating side's feature parser never panics or
// loops, whatever a receiving server lists.
func FuzzParseFeatures(f *testing.F) {
	f.Add("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>")
	f.Add("<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>EXTERNAL</mechanism></mechanisms>")
	f.Fuzz(func(t *testing.T, s string) {
		got, err := decodeFeatures(s)
		if err == nil && got.external && len(got.mechanisms) == 0 {
			t.Fatal("EXTERNAL without mechanisms")
		}
	})
}
