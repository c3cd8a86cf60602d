package wire

import (
	"bytes"
	"encoding/xml"
	"errors"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unsafe"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func readFile(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join("testdata", name))
	require.NoError(t, err)
	return string(b)
}

// Test vectors 2-7 of the spec notes (shared/spec/axl.md §8).
func TestParseResponse(t *testing.T) {
	tests := []struct {
		file string
		op   string
		want *Response
	}{
		{"query-response.xml", OpQuery, &Response{Op: OpQuery, Version: "12.5", Sequence: "1", Rows: [][]Column{{
			{"pkid", "055c13d9-943d-459d-a3c6-af1d1176936d"}, {"cp_id", "cm-2_s2scp-1.eft-xwye-a-coluc-com"},
		}}}},
		{"query-empty.xml", OpQuery, &Response{Op: OpQuery, Version: "12.5", Rows: [][]Column{}}},
		{"query-prefixes-8.0.xml", OpQuery, &Response{Op: OpQuery, Version: "8.0", Sequence: "1563080407841", Rows: [][]Column{
			{{"pkid", "055c13d9-943d-459d-a3c6-af1d1176936d"}, {"cp_id", ""}},
			{{"pkid", "5f0b1a52-7c1e-4a8e-9a37-0d1c2b3e4f50"}, {"cp_id", "cm-1_s2scp-1.exp-e2-example-com"}},
		}}},
		{"update-response.xml", OpUpdate, &Response{Op: OpUpdate, Version: "12.5", Sequence: "2", RowsUpdated: 1}},
		{"fault-duplicate.xml", OpUpdate, &Response{Op: OpUpdate, Fault: &Fault{
			FaultCode:   "soapenv:Client",
			FaultString: "Could not insert new row - duplicate value in a UNIQUE INDEX column (Unique Index:).",
			AXLCode:     -239, HasAXLCode: true,
			AXLMessage: "Could not insert new row - duplicate value in a UNIQUE INDEX column (Unique Index:).",
			Request:    "executeSQLUpdate",
		}}},
		{"fault-too-large.xml", OpQuery, &Response{Op: OpQuery, Fault: &Fault{
			FaultCode:   "soapenv:Server",
			FaultString: "Query request too large. Total rows matched: 2816 rows. Suggestive Row Fetch: less than 844 rows",
			AXLCode:     -1, HasAXLCode: true,
			AXLMessage: "Query request too large. Total rows matched: 2816 rows. Suggestive Row Fetch: less than 844 rows",
			Request:    "executeSQLQuery",
		}}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseResponse(strings.NewReader(readFile(t, tt.file)), tt.op)
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
}

func TestParseResponseRejects(t *testing.T) {
	const env = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>%s</s:Body></s:Envelope>`
	wrap := func(s string) string { return strings.Replace(env, "%s", s, 1) }
	tests := []struct {
		name, op, in, reason string
	}{
		{"html login page", OpQuery, "", "the document element is <html>, not a SOAP 1.1 Envelope"},
		{"empty", OpQuery, "", "empty document"},
		{"plain text", OpQuery, "Service Unavailable", "text before the document element"},
		{"bad markup", OpQuery, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><b></s:Envelope>`, "not well-formed"},
		{"not an envelope", OpQuery, `<executeSQLQueryResponse/>`, "not a SOAP 1.1 Envelope"},
		{"SOAP 1.2 envelope", OpQuery, `<e:Envelope xmlns:e="http://www.w3.org/2003/05/soap-envelope"/>`, "not a SOAP 1.1 Envelope"},
		{"no body", OpQuery, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Header/></s:Envelope>`, "no Body"},
		{"empty body", OpQuery, wrap(""), "Body is empty"},
		{"other namespace", OpQuery, wrap(`<executeSQLQueryResponse xmlns="urn:x"/>`), "not an AXL executeSQLQueryResponse"},
		{"other operation", OpQuery, wrap(`<n:executeSQLUpdateResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"/>`), "not an AXL executeSQLQueryResponse"},
		{"nested column", OpQuery, wrap(`<n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return><row><a><b/></a></row></return></n:executeSQLQueryResponse>`), "where text was expected"},
		{"update without return", OpUpdate, wrap(`<n:executeSQLUpdateResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"/>`), "no <return>"},
		{"update without count", OpUpdate, wrap(`<n:executeSQLUpdateResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return/></n:executeSQLUpdateResponse>`), "no <rowsUpdated>"},
		{"negative count", OpUpdate, wrap(`<n:executeSQLUpdateResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return><rowsUpdated>-1</rowsUpdated></return></n:executeSQLUpdateResponse>`), "not a count"},
		{"truncated", OpQuery, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body>`, "ends early"},
	}
	tests[0].in = readFile(t, "login-page.html")
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseResponse(strings.NewReader(tt.in), tt.op)
			var me *MalformedError
			require.ErrorAs(t, err, &me)
			assert.Contains(t, me.Reason, tt.reason)
		})
	}
}

type failingReader struct{ err error }

func (f failingReader) Read([]byte) (int, error) { return 0, f.err }

// An I/O error (a timeout reading the body) must stay what it is, not
// become "not an AXL response".
func TestParseResponseIOError(t *testing.T) {
	boom := errors.New("read timeout")
	r := io.MultiReader(strings.NewReader(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">`), failingReader{boom})
	_, err := ParseResponse(r, OpQuery)
	require.ErrorIs(t, err, boom)
	var me *MalformedError
	assert.False(t, errors.As(err, &me))
}

func TestParseResponseLatin1(t *testing.T) {
	doc := "<?xml version='1.0' encoding='ISO-8859-1'?><s:Envelope xmlns:s='http://schemas.xmlsoap.org/soap/envelope/'><s:Body>" +
		"<n:executeSQLQueryResponse xmlns:n='http://www.cisco.com/AXL/API/14.0'><return><row><name>Z\xfcrich</name></row></return></n:executeSQLQueryResponse></s:Body></s:Envelope>"
	got, err := ParseResponse(strings.NewReader(doc), OpQuery)
	require.NoError(t, err)
	assert.Equal(t, [][]Column{{{"name", "Zürich"}}}, got.Rows)

	_, err = ParseResponse(strings.NewReader(`<?xml version="1.0" encoding="EBCDIC"?><a/>`), OpQuery)
	assert.Error(t, err)
}

func TestParseRequest(t *testing.T) {
	tests := []struct {
		file string
		want Request
	}{
		{"query-request.xml", Request{Op: OpQuery, Version: "12.5", Sequence: "1", SQL: "SELECT pkid, cp_id FROM xmpps2snodes"}},
		{"update-request-cdata.xml", Request{Op: OpUpdate, Version: "12.5", Sequence: "2",
			SQL: "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (newid(), 'cm-2_s2scp-1.eft-xwye-a-coluc-com')"}},
		{"imp-request-8.0.xml", Request{Op: OpQuery, Version: "8.0", Sequence: "1563080407841",
			SQL: "SELECT count(*) from processnode WHERE systemnode='f' and tknodeusage= 0"}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			got, err := ParseRequest(strings.NewReader(readFile(t, tt.file)))
			require.NoError(t, err)
			assert.Equal(t, tt.want, got)
		})
	}
	_, err := ParseRequest(strings.NewReader(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:getPhone xmlns:n="http://www.cisco.com/AXL/API/12.5"/></s:Body></s:Envelope>`))
	assert.ErrorContains(t, err, "unsupported AXL operation getPhone")
	_, err = ParseRequest(strings.NewReader(`<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLQuery xmlns:n="http://www.cisco.com/AXL/API/12.5"/></s:Body></s:Envelope>`))
	assert.ErrorContains(t, err, "no <sql>")
}

// Test vector 1: the operation element is in the AXL namespace, <sql> in
// none.
func TestWriteRequestShape(t *testing.T) {
	var buf bytes.Buffer
	require.NoError(t, WriteRequest(&buf, Request{Op: OpQuery, Version: "12.5", Sequence: "1", SQL: "SELECT a FROM t WHERE b = 'x<y&z'"}))
	d := xml.NewDecoder(&buf)
	var names []xml.Name
	for {
		tok, err := d.Token()
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok {
			names = append(names, se.Name)
			if se.Name.Local == "executeSQLQuery" {
				assert.Equal(t, "1", attr(se, "sequence"))
			}
		}
	}
	assert.Equal(t, []xml.Name{
		{Space: EnvNS, Local: "Envelope"}, {Space: EnvNS, Local: "Header"}, {Space: EnvNS, Local: "Body"},
		{Space: AXLNSPrefix + "12.5", Local: "executeSQLQuery"}, {Local: "sql"},
	}, names)
}

func TestWriteRejects(t *testing.T) {
	var buf bytes.Buffer
	assert.Error(t, WriteRequest(&buf, Request{Op: "getPhone", Version: "12.5"}))
	assert.Error(t, WriteRequest(&buf, Request{Op: OpQuery, Version: `12.5"><x`}))
	assert.Error(t, WriteRequest(&buf, Request{Op: OpQuery, Version: "12.5", Sequence: "1a"}))
	assert.Error(t, WriteRequest(&buf, Request{Op: OpQuery, Version: "12.5", SQL: "SELECT '\x00'"}))
	assert.Error(t, WriteRequest(&buf, Request{Op: OpQuery, Version: "12.5", SQL: "SELECT '\xff'"}))
	assert.Error(t, WriteQueryResponse(&buf, "12.5", "", [][]Column{{{"count(*)", "1"}}}))
	assert.Error(t, WriteQueryResponse(&buf, "12.5", "", [][]Column{{{"v", "\x01"}}}))
	assert.Error(t, WriteUpdateResponse(&buf, "12", "", 1))
	assert.Error(t, WriteFault(&buf, Fault{FaultString: "\x00"}))
}

func TestValid(t *testing.T) {
	for _, v := range []string{"12.5", "8.0", "14.0", "1000.1"} {
		assert.True(t, ValidVersion(v), v)
	}
	for _, v := range []string{"", "12", "12.", ".5", "12.5.1", "a.b", "1 2.5", "12.5 "} {
		assert.False(t, ValidVersion(v), v)
	}
	for _, n := range []string{"pkid", "cp_id", "Zürich", "a.b-c1", "_x"} {
		assert.True(t, ValidName(n), n)
	}
	for _, n := range []string{"", "1a", "count(*)", "a:b", "xmlfoo", "-a", "a b"} {
		assert.False(t, ValidName(n), n)
	}
	assert.True(t, ValidText("tab\tnl\ncr\r ok é 😀"))
	for _, s := range []string{"\x00", "\x1b", "\xff", "\uFFFE", "\uFFFF"} {
		assert.False(t, ValidText(s), "%q", s)
	}
}

func TestRoundTrip(t *testing.T) {
	rows := [][]Column{{{"v", "a'b\"c<d>&e\r\n\tf"}, {"empty", ""}}, {}}
	var buf bytes.Buffer
	require.NoError(t, WriteQueryResponse(&buf, "14.0", "7", rows))
	got, err := ParseResponse(&buf, OpQuery)
	require.NoError(t, err)
	assert.Equal(t, &Response{Op: OpQuery, Version: "14.0", Sequence: "7", Rows: rows}, got)

	buf.Reset()
	f := Fault{FaultCode: "soapenv:Client", FaultString: "x & y", AXLCode: -201, HasAXLCode: true, AXLMessage: "A syntax error has occurred.", Request: OpUpdate}
	require.NoError(t, WriteFault(&buf, f))
	got, err = ParseResponse(&buf, OpUpdate)
	require.NoError(t, err)
	assert.Equal(t, &f, got.Fault)

	buf.Reset()
	req := Request{Op: OpUpdate, Version: "12.5", Sequence: "99", SQL: "DELETE FROM t WHERE a = ']]>' -- \r\n"}
	require.NoError(t, WriteRequest(&buf, req))
	gotReq, err := ParseRequest(&buf)
	require.NoError(t, err)
	assert.Equal(t, req, gotReq)
}

// countingReader counts the bytes read through it.
type countingReader struct {
	r io.Reader
	n int
}

func (c *countingReader) Read(p []byte) (int, error) {
	n, err := c.r.Read(p)
	c.n += n
	return n, err
}

// Nesting and the number of cells are bounded, whatever the document's
// size, and the parser stops reading at the limit.
func TestParseLimits(t *testing.T) {
	const env = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/">`
	const resp = env + `<s:Body><n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return>`
	tests := []struct {
		name, doc, reason string
		maxRead           int
	}{
		{"deep header", env + "<s:Header>" + strings.Repeat("<a>", 1<<18), "nested deeper than 32 levels", 64 << 10},
		{"deep in a skipped element", resp + "<x>" + strings.Repeat("<x>", 1<<18), "nested deeper than 32 levels", 64 << 10},
		{"deep fault detail", env + "<s:Body><s:Fault><detail><axlError><x>" + strings.Repeat("<y>", 1<<18), "nested deeper than 32 levels", 64 << 10},
		{"deep request", env + "<s:Body><n:executeSQLQuery xmlns:n='http://www.cisco.com/AXL/API/12.5'>" + strings.Repeat("<z>", 1<<18), "nested deeper than 32 levels", 64 << 10},
		{"empty columns", resp + "<row>" + strings.Repeat("<c/>", 2*MaxCells), "more than 262144 rows and columns", MaxCells*4 + 64<<10},
		{"empty rows", resp + strings.Repeat("<row/>", 2*MaxCells), "more than 262144 rows and columns", MaxCells*6 + 64<<10},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := &countingReader{r: strings.NewReader(tt.doc)}
			var err error
			if strings.Contains(tt.name, "request") {
				_, err = ParseRequest(r)
			} else {
				_, err = ParseResponse(r, OpQuery)
			}
			var me *MalformedError
			require.ErrorAs(t, err, &me)
			assert.Contains(t, me.Reason, tt.reason)
			assert.Less(t, r.n, tt.maxRead, "stops reading at the limit")
		})
	}

	// At the limits, all is well: MaxCells/2 rows of one column each.
	doc := resp + strings.Repeat("<row><a>1</a></row>", MaxCells/2) + "</return></n:executeSQLQueryResponse></s:Body></s:Envelope>"
	got, err := ParseResponse(strings.NewReader(doc), OpQuery)
	require.NoError(t, err)
	assert.Len(t, got.Rows, MaxCells/2)
	deep := env + "<s:Header>" + strings.Repeat("<a>", MaxDepth-2) + strings.Repeat("</a>", MaxDepth-2) + "</s:Header><s:Body><n:executeSQLQueryResponse xmlns:n='http://www.cisco.com/AXL/API/12.5'/></s:Body></s:Envelope>"
	_, err = ParseResponse(strings.NewReader(deep), OpQuery)
	require.NoError(t, err)
}

// Rows share their column names: a result's memory is its values, not
// a copy of each name per row.
func TestColumnNamesShared(t *testing.T) {
	const resp = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return>`
	doc := resp + strings.Repeat("<row><pkid>1</pkid><cp_id>2</cp_id></row>", 3) + "</return></n:executeSQLQueryResponse></s:Body></s:Envelope>"
	got, err := ParseResponse(strings.NewReader(doc), OpQuery)
	require.NoError(t, err)
	require.Len(t, got.Rows, 3)
	for _, row := range got.Rows[1:] {
		for i, c := range row {
			assert.Same(t, unsafe.StringData(got.Rows[0][i].Name), unsafe.StringData(c.Name))
		}
	}
}
