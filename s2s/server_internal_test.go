package s2s

import (
	"encoding/xml"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestFirstChild(t *testing.T) {
	tests := []struct {
		in   string
		want child
	}{
		{"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>", child{Name: xml.Name{Space: NSPing, Local: "ping"}}},
		{"<iq><query xmlns='" + NSDiscoInfo + "' node='n'/></iq>", child{Name: xml.Name{Space: NSDiscoInfo, Local: "query"}, node: "n"}},
		{"<iq>text<a xmlns='x'><b/></a></iq>", child{Name: xml.Name{Space: "x", Local: "a"}}},
		{"<iq/>", child{}},
		{"<iq><unclosed", child{}},
		{"", child{}},
	}
	for _, tc := range tests {
		assert.Equal(t, tc.want, firstChild([]byte(tc.in)), tc.in)
	}
}

// FuzzFirstChild: the builtin iq dispatch parses peer-supplied stanzas; it
// must return (bounded) on any input, and a child it reports must be a
// direct child of the root.
func FuzzFirstChild(f *testing.F) {
	for _, s := range []string{
		"<iq type='get'><ping xmlns='urn:xmpp:ping'/></iq>",
		"<iq><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>",
		"<iq><a><b><c/></b></a></iq>",
		"<iq></iq><ping xmlns='urn:xmpp:ping'/>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		c := firstChild(b)
		if c.Name.Local == "" && c.node != "" {
			t.Fatalf("node without element: %+v", c)
		}
	})
}
