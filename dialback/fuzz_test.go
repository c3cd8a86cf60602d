package dialback

import (
	"encoding/xml"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzDecode feeds arbitrary bytes to the decoder: it must never panic, must
// classify bad input as a syntax error or a *MalformedError with a
// condition, and whatever it accepts must survive a marshal/decode round
// trip unchanged.
func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.xml")
	if len(seeds) == 0 {
		f.Fatal("no seed corpus in testdata/*.xml")
	}
	for _, name := range seeds {
		data, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(string(data))
	}
	f.Add(`<db:result from='a.example' to='b.example'>k</db:result>`)
	f.Add(`<db:verify from='a.example' to='b.example' id='i' type='error'><error type='cancel'><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></db:verify>`)

	f.Fuzz(func(t *testing.T, inner string) {
		el, err := decodeFirst(wrap(inner))
		if err != nil {
			var me *MalformedError
			if errors.As(err, &me) && me.Condition.Err == "" {
				t.Fatalf("malformed error without a condition: %v", err)
			}
			return
		}
		if el == nil {
			t.Fatal("nil element without an error")
		}
		out, err := xml.Marshal(el)
		if err != nil {
			t.Fatalf("marshal %#v: %v", el, err)
		}
		again, err := decodeFirst(wrap(string(out)))
		if err != nil {
			t.Fatalf("re-decode of %s: %v", out, err)
		}
		out2, err := xml.Marshal(again)
		if err != nil || string(out2) != string(out) {
			t.Fatalf("round trip changed the element:\n%s\n%s (%v)", out, out2, err)
		}
	})
}

// FuzzFeatureParse feeds arbitrary stream features to the dialback
// feature's parser: no panic, and <errors/> is reported only when present.
func FuzzFeatureParse(f *testing.F) {
	f.Add(`<errors/>`)
	f.Add(`<other xmlns='urn:example'><errors/></other>`)
	f.Add(`<errors><x/></errors>`)
	feature := Feature()
	f.Fuzz(func(t *testing.T, inner string) {
		d := xml.NewDecoder(strings.NewReader(`<dialback xmlns='urn:xmpp:features:dialback'>` + inner + `</dialback>`))
		tok, err := d.Token()
		if err != nil {
			t.Fatal(err)
		}
		start := tok.(xml.StartElement)
		_, data, err := feature.Parse(t.Context(), d, &start)
		if err != nil {
			return
		}
		if data.(Support).Errors && !strings.Contains(inner, "errors") {
			t.Fatalf("errors support reported for %q", inner)
		}
	})
}
