package wire

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func seeds(f *testing.F, add func(string)) {
	names, _ := filepath.Glob("testdata/*.*")
	if len(names) == 0 {
		f.Fatal("no seed corpus in testdata/")
	}
	for _, name := range names {
		b, err := os.ReadFile(name)
		if err != nil {
			f.Fatal(err)
		}
		add(string(b))
	}
}

// FuzzParseResponse feeds arbitrary bytes to the client's response parser:
// it must not panic, must report bad input as a *MalformedError (there is
// no I/O here), and whatever it accepts must survive being written by the
// server's writers and parsed again unchanged.
func FuzzParseResponse(f *testing.F) {
	seeds(f, func(s string) { f.Add(s, false); f.Add(s, true) })
	f.Add(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><s:Fault><faultcode>s:Server</faultcode><detail><axlError><axlcode>x</axlcode></axlError></detail></s:Fault></s:Body></s:Envelope>`, true)

	f.Fuzz(func(t *testing.T, doc string, update bool) {
		op := OpQuery
		if update {
			op = OpUpdate
		}
		resp, err := ParseResponse(strings.NewReader(doc), op)
		if err != nil {
			var me *MalformedError
			if !errors.As(err, &me) || me.Reason == "" {
				t.Fatalf("error is not a *MalformedError with a reason: %#v", err)
			}
			return
		}
		if resp.Op != op {
			t.Fatalf("op %q, want %q", resp.Op, op)
		}
		var buf bytes.Buffer
		switch {
		case resp.Fault != nil:
			if werr := WriteFault(&buf, *resp.Fault); werr != nil {
				t.Fatalf("write fault %#v: %v", resp.Fault, werr)
			}
		case !ValidVersion(resp.Version) || resp.Sequence != "" && !digits(resp.Sequence):
			return // the writers accept only what a server would send
		case update:
			if werr := WriteUpdateResponse(&buf, resp.Version, resp.Sequence, resp.RowsUpdated); werr != nil {
				t.Fatal(werr)
			}
		default:
			if resp.Rows == nil {
				t.Fatal("query result with nil rows")
			}
			if werr := WriteQueryResponse(&buf, resp.Version, resp.Sequence, resp.Rows); werr != nil {
				for _, row := range resp.Rows {
					for _, c := range row {
						if !ValidName(c.Name) {
							return // a name encoding/xml reads but we do not write
						}
					}
				}
				t.Fatalf("write rows %#v: %v", resp.Rows, werr)
			}
		}
		again, err := ParseResponse(&buf, op)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", buf.String(), err)
		}
		if !reflect.DeepEqual(resp, again) {
			t.Fatalf("round trip changed the response:\n%#v\n%#v", resp, again)
		}
	})
}

// FuzzParseRequest does the same for the server's request parser and the
// client's request writer.
func FuzzParseRequest(f *testing.F) {
	seeds(f, func(s string) { f.Add(s) })
	f.Fuzz(func(t *testing.T, doc string) {
		req, err := ParseRequest(strings.NewReader(doc))
		if err != nil {
			var me *MalformedError
			if !errors.As(err, &me) || me.Reason == "" {
				t.Fatalf("error is not a *MalformedError with a reason: %#v", err)
			}
			return
		}
		if req.Op != OpQuery && req.Op != OpUpdate {
			t.Fatalf("accepted operation %q", req.Op)
		}
		var buf bytes.Buffer
		if err := WriteRequest(&buf, req); err != nil {
			if ValidVersion(req.Version) && (req.Sequence == "" || digits(req.Sequence)) {
				t.Fatalf("write %#v: %v", req, err)
			}
			return
		}
		again, err := ParseRequest(&buf)
		if err != nil {
			t.Fatalf("re-parse of %s: %v", buf.String(), err)
		}
		if again != req {
			t.Fatalf("round trip changed the request:\n%#v\n%#v", req, again)
		}
	})
}
