package wire

import "bytes"

// escapeText writes s as character data. Only the characters XML requires
// are escaped ('>' too, so that "]]>" can never appear).
func escapeText(b *bytes.Buffer, s []byte) {
	last := 0
	for i, c := range s {
		var esc string
		switch c {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\r':
			esc = "&#xD;"
		default:
			continue
		}
		b.Write(s[last:i])
		b.WriteString(esc)
		last = i + 1
	}
	b.Write(s[last:])
}

// escapeAttr writes s as the value of a single-quoted attribute.
func escapeAttr(b *bytes.Buffer, s string) {
	last := 0
	for i := 0; i < len(s); i++ {
		var esc string
		switch s[i] {
		case '&':
			esc = "&amp;"
		case '<':
			esc = "&lt;"
		case '>':
			esc = "&gt;"
		case '\'':
			esc = "&apos;"
		case '"':
			esc = "&quot;"
		case '\t':
			esc = "&#x9;"
		case '\n':
			esc = "&#xA;"
		case '\r':
			esc = "&#xD;"
		default:
			continue
		}
		b.WriteString(s[last:i])
		b.WriteString(esc)
		last = i + 1
	}
	b.WriteString(s[last:])
}

// EscapeAttr returns s escaped for a single-quoted attribute value.
func EscapeAttr(s string) string {
	var b bytes.Buffer
	escapeAttr(&b, s)
	return b.String()
}

// EscapeText returns s escaped as character data.
func EscapeText(s string) string {
	var b bytes.Buffer
	escapeText(&b, []byte(s))
	return b.String()
}
