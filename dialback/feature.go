package dialback

import (
	"context"
	"encoding/xml"

	"mellium.im/xmlstream"
	"mellium.im/xmpp"
)

// Support is what a peer's urn:xmpp:features:dialback feature says.
type Support struct {
	// Errors is true when the peer understands type='error' answers
	// (XEP-0220 §2.5) and so target multiplexing may be used with it.
	Errors bool
}

// Feature returns the urn:xmpp:features:dialback stream feature:
//
//	<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>
//
// It is informational (dialback itself is not negotiated through the
// features list: declaring xmlns:db on the stream header is what signals
// it), so Negotiate is nil. Parse returns a Support value as its data.
func Feature() xmpp.StreamFeature {
	return xmpp.StreamFeature{
		Name: xml.Name{Space: NSFeature, Local: "dialback"},
		List: func(_ context.Context, e xmlstream.TokenWriter, start xml.StartElement) (bool, error) {
			start.Name = xml.Name{Space: NSFeature, Local: "dialback"}
			errs := xml.StartElement{Name: xml.Name{Local: "errors"}}
			_, err := xmlstream.Copy(e, xmlstream.Wrap(xmlstream.Wrap(nil, errs), start))
			return false, err
		},
		Parse: func(_ context.Context, d *xml.Decoder, start *xml.StartElement) (bool, any, error) {
			var s Support
			for {
				tok, err := d.Token()
				if err != nil {
					return false, s, err
				}
				switch tok := tok.(type) {
				case xml.StartElement:
					if tok.Name.Space == NSFeature && tok.Name.Local == "errors" {
						s.Errors = true
					}
					if err := d.Skip(); err != nil {
						return false, s, err
					}
				case xml.EndElement:
					return false, s, nil
				}
			}
		},
	}
}
