package dialback_test

import (
	"context"
	"crypto/sha1"
	"encoding/xml"
	"fmt"
	"strings"

	"github.com/xmppfed/xmppfed/dialback"
	"mellium.im/xmpp/stanza"
)

// The worked example of XEP-0185.
func ExampleGenerator_Key() {
	g := dialback.Generator{Secret: []byte("s3cr3tf0rd14lb4ck")}
	fmt.Println(g.Key("xmpp.example.com", "example.org", "D60000229F"))

	// Keys the size Cisco XCP uses.
	legacy := dialback.Generator{Secret: []byte("s3cr3tf0rd14lb4ck"), Hash: sha1.New}
	fmt.Println(legacy.Key("xmpp.example.com", "example.org", "D60000229F"))
	// Output:
	// 37c69b1cf07a3f67c04a5ef5902fa5114f2c76fe4a2686482ba5b89323075643
	// 58cd2951a88fdea02b7590a306539f4c1be90388
}

// An authoritative server answers a <db:verify/> by recomputing the key.
func ExampleGenerator_Verify() {
	montague := dialback.Generator{Secret: []byte("d14lb4ck43v3r")}
	req := dialback.Verify{From: "capulet.example", To: "montague.example", ID: "417GAF25",
		Key: "225cc5aa6a071133249d25fef42ae516fc7a86c523aa1c6980a7f73e784c972d"}

	answer := req.Answer(dialback.TypeInvalid, nil)
	// Receiving domain = the verify's from, originating = its to.
	if montague.Verify(req.Key, req.From, req.To, req.ID) {
		answer.Type = dialback.TypeValid
	}
	out, _ := xml.Marshal(answer)
	fmt.Println(string(out))
	// Output:
	// <db:verify from="montague.example" to="capulet.example" id="417GAF25" type="valid"></db:verify>
}

// Rotating the dialback secret without failing streams being set up.
func ExampleKeyring() {
	ring := dialback.Keyring{
		dialback.Generator{Secret: []byte("new secret")},
		dialback.Generator{Secret: []byte("old secret")},
	}
	oldKey := dialback.Generator{Secret: []byte("old secret")}.Key("b.example", "a.example", "id1")
	fmt.Println(ring.Verify(oldKey, "b.example", "a.example", "id1"))
	// Output: true
}

// Decoding dialback elements read from an S2S stream.
func ExampleDecode() {
	const in = `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback'>` +
		`<db:result from='montague.example' to='capulet.example' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:result>`
	d := xml.NewDecoder(strings.NewReader(in))
	d.Token() // the stream header
	tok, _ := d.Token()
	el, err := dialback.Decode(d, tok.(xml.StartElement))
	if err != nil {
		fmt.Println(err)
		return
	}
	r := el.(*dialback.Result)
	fmt.Println(r.From, r.Type, r.Err.Condition, r.Err.Condition == stanza.ItemNotFound)
	// Output: montague.example error item-not-found true
}

// A receiving server asks its peers to declare dialback error support.
func ExampleFeature() {
	var sb strings.Builder
	e := xml.NewEncoder(&sb)
	f := dialback.Feature()
	f.List(context.Background(), e, xml.StartElement{Name: f.Name})
	e.Flush()
	fmt.Println(sb.String())
	// Output: <dialback xmlns="urn:xmpp:features:dialback"><errors></errors></dialback>
}
