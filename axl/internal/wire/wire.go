// Package wire reads and writes the SOAP 1.1 messages of AXL's
// executeSQLQuery and executeSQLUpdate operations. Package axl uses the
// request writer and the response parser; package axltest uses the other
// two, so both ends of every test speak through the same, fuzzed code while
// the client's semantics stay in axl.
package wire

import (
	"bufio"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Namespaces and operation names.
const (
	// EnvNS is the SOAP 1.1 envelope namespace.
	EnvNS = "http://schemas.xmlsoap.org/soap/envelope/"
	// AXLNSPrefix is followed by the schema version, e.g. "12.5", to form
	// the namespace of AXL's operation elements.
	AXLNSPrefix = "http://www.cisco.com/AXL/API/"

	OpQuery  = "executeSQLQuery"
	OpUpdate = "executeSQLUpdate"
)

// Request is an executeSQLQuery or executeSQLUpdate request.
type Request struct {
	Op       string // OpQuery or OpUpdate
	Version  string // AXL schema version, e.g. "12.5"
	Sequence string // optional correlation id, echoed by the server
	SQL      string
}

// Column is one column of a result row: the element name and its text.
type Column struct {
	Name, Value string
}

// Fault is a SOAP fault, with the AXL detail when the server sent one.
type Fault struct {
	FaultCode   string // e.g. "soapenv:Client", as sent (a QName)
	FaultString string
	// AXLCode is <axlcode>; HasAXLCode is false when the detail was absent
	// or the code not an integer.
	AXLCode    int
	HasAXLCode bool
	AXLMessage string
	Request    string // <request>, the operation AXL was serving
}

// Response is a decoded response: exactly one of Fault, or the result of
// Op (Rows for OpQuery, RowsUpdated for OpUpdate).
type Response struct {
	Op          string
	Version     string // from the response element's namespace
	Sequence    string
	Rows        [][]Column
	RowsUpdated int
	Fault       *Fault
}

// ValidVersion reports whether v looks like an AXL schema version: digits,
// a dot, digits ("12.5", "14.0"). It keeps the version safe to place in an
// HTTP header and a namespace URI.
func ValidVersion(v string) bool {
	major, minor, ok := strings.Cut(v, ".")
	return ok && len(v) <= 16 && digits(major) && digits(minor)
}

func digits(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// ValidText reports whether s can travel in XML 1.0 character data
// unchanged: valid UTF-8 and only characters XML allows. encoding/xml would
// otherwise silently replace the rest with U+FFFD, changing a statement.
func ValidText(s string) bool {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return false
			}
		}
		if !isXMLChar(r) {
			return false
		}
	}
	return true
}

// isXMLChar is the Char production of XML 1.0 §2.2.
func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF ||
		r >= 0xE000 && r <= 0xFFFD ||
		r >= 0x10000 && r <= 0x10FFFF
}

// ValidName reports whether s can be written as an unprefixed element name
// (an XML NCName, restricted to what encoding/xml reads back unchanged).
func ValidName(s string) bool {
	if s == "" || len(s) > 256 {
		return false
	}
	for i, r := range s {
		switch {
		case r == '_' || unicode.IsLetter(r):
		case i > 0 && (r == '-' || r == '.' || unicode.IsDigit(r)):
		default:
			return false
		}
	}
	// "xml…" names are reserved by XML 1.0 §2.3.
	return !strings.HasPrefix(strings.ToLower(s), "xml")
}

// escape writes s as XML character data. s must satisfy ValidText.
func escape(w *bufio.Writer, s string) {
	// EscapeText only fails when w does; bufio.Writer keeps that error for
	// Flush to report.
	_ = xml.EscapeText(w, []byte(s))
}

// WriteRequest writes r as a SOAP envelope. The operation element carries
// the AXL namespace under a prefix so that <sql> stays unqualified, as the
// schema (elementFormDefault="unqualified") requires.
func WriteRequest(w io.Writer, r Request) error {
	switch {
	case r.Op != OpQuery && r.Op != OpUpdate:
		return fmt.Errorf("unknown AXL operation %q", r.Op)
	case !ValidVersion(r.Version):
		return fmt.Errorf("AXL schema version %q is not of the form 12.5", r.Version)
	case r.Sequence != "" && !digits(r.Sequence):
		return fmt.Errorf("sequence %q is not a number", r.Sequence)
	case !ValidText(r.SQL):
		return errors.New("the SQL statement contains characters XML cannot carry (invalid UTF-8 or control characters)")
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(`<?xml version="1.0" encoding="UTF-8"?>` + "\n")
	bw.WriteString(`<soapenv:Envelope xmlns:soapenv="` + EnvNS + `" xmlns:ns="` + AXLNSPrefix + r.Version + `">`)
	bw.WriteString(`<soapenv:Header/><soapenv:Body><ns:` + r.Op)
	if r.Sequence != "" {
		bw.WriteString(` sequence="` + r.Sequence + `"`)
	}
	bw.WriteString(`><sql>`)
	escape(bw, r.SQL)
	bw.WriteString(`</sql></ns:` + r.Op + `></soapenv:Body></soapenv:Envelope>`)
	return bw.Flush()
}

// WriteQueryResponse writes an executeSQLQueryResponse holding rows.
func WriteQueryResponse(w io.Writer, version, sequence string, rows [][]Column) error {
	for _, row := range rows {
		for _, c := range row {
			if !ValidName(c.Name) {
				return fmt.Errorf("column name %q is not a valid XML element name", c.Name)
			}
			if !ValidText(c.Value) {
				return fmt.Errorf("column %s: value contains characters XML cannot carry", c.Name)
			}
		}
	}
	return writeResponse(w, OpQuery, version, sequence, func(bw *bufio.Writer) {
		for _, row := range rows {
			bw.WriteString("<row>")
			for _, c := range row {
				if c.Value == "" {
					bw.WriteString("<" + c.Name + "/>")
					continue
				}
				bw.WriteString("<" + c.Name + ">")
				escape(bw, c.Value)
				bw.WriteString("</" + c.Name + ">")
			}
			bw.WriteString("</row>")
		}
	})
}

// WriteUpdateResponse writes an executeSQLUpdateResponse.
func WriteUpdateResponse(w io.Writer, version, sequence string, rowsUpdated int) error {
	return writeResponse(w, OpUpdate, version, sequence, func(bw *bufio.Writer) {
		fmt.Fprintf(bw, "<rowsUpdated>%d</rowsUpdated>", rowsUpdated)
	})
}

func writeResponse(w io.Writer, op, version, sequence string, body func(*bufio.Writer)) error {
	if !ValidVersion(version) {
		return fmt.Errorf("AXL schema version %q is not of the form 12.5", version)
	}
	if sequence != "" && !digits(sequence) {
		return fmt.Errorf("sequence %q is not a number", sequence)
	}
	bw := bufio.NewWriter(w)
	// The shape AXL itself answers with: single-quoted declaration, the
	// namespace declared on the response element.
	bw.WriteString(`<?xml version='1.0' encoding='utf-8'?><soapenv:Envelope xmlns:soapenv="` + EnvNS + `"><soapenv:Body>`)
	bw.WriteString(`<ns:` + op + `Response`)
	if sequence != "" {
		bw.WriteString(` sequence="` + sequence + `"`)
	}
	bw.WriteString(` xmlns:ns="` + AXLNSPrefix + version + `"><return>`)
	body(bw)
	bw.WriteString(`</return></ns:` + op + `Response></soapenv:Body></soapenv:Envelope>`)
	return bw.Flush()
}

// WriteFault writes a SOAP fault with an AXL <axlError> detail. Its
// elements are unqualified, as AXL sends them.
func WriteFault(w io.Writer, f Fault) error {
	for _, s := range []string{f.FaultCode, f.FaultString, f.AXLMessage, f.Request} {
		if !ValidText(s) {
			return errors.New("fault text contains characters XML cannot carry")
		}
	}
	bw := bufio.NewWriter(w)
	bw.WriteString(`<?xml version='1.0' encoding='utf-8'?><soapenv:Envelope xmlns:soapenv="` + EnvNS + `"><soapenv:Body><soapenv:Fault><faultcode>`)
	escape(bw, f.FaultCode)
	bw.WriteString(`</faultcode><faultstring>`)
	escape(bw, f.FaultString)
	bw.WriteString(`</faultstring>`)
	if f.HasAXLCode || f.AXLMessage != "" || f.Request != "" {
		bw.WriteString(`<detail><axlError>`)
		if f.HasAXLCode {
			fmt.Fprintf(bw, `<axlcode>%d</axlcode>`, f.AXLCode)
		}
		bw.WriteString(`<axlmessage>`)
		escape(bw, f.AXLMessage)
		bw.WriteString(`</axlmessage><request>`)
		escape(bw, f.Request)
		bw.WriteString(`</request></axlError></detail>`)
	}
	bw.WriteString(`</soapenv:Fault></soapenv:Body></soapenv:Envelope>`)
	return bw.Flush()
}
