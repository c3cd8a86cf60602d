package axl

import (
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"
)

// ValueError reports an argument that [Literal] or [Bind] refused. It
// matches [ErrUnsafeValue] with [errors.Is].
type ValueError struct {
	Arg    int    // 1-based position of the argument; 0 for Literal
	Type   string // the Go type, e.g. "string"
	Reason string
}

func (e *ValueError) Error() string {
	if e.Arg == 0 {
		return fmt.Sprintf("axl: %s value: %v: %s", e.Type, ErrUnsafeValue, e.Reason)
	}
	return fmt.Sprintf("axl: argument %d (%s): %v: %s", e.Arg, e.Type, ErrUnsafeValue, e.Reason)
}

// Unwrap returns ErrUnsafeValue.
func (e *ValueError) Unwrap() error { return ErrUnsafeValue }

// Literal returns v written as an Informix SQL literal, for callers that
// build statement text themselves. AXL has no bind parameters, so this
// quoting is all that stands between a value and the IM and Presence
// database. The mapping:
//
//   - nil and nil pointers: NULL
//   - strings: in single quotes, each single quote inside doubled (see the
//     example). The string must be valid UTF-8 without control characters
//     (U+0000–U+001F, U+007F–U+009F: NUL, tab, CR, LF…), without
//     U+FFFE/U+FFFF and without backslashes; see below.
//   - bool: 't' or 'f', Informix's BOOLEAN literals (CUCM and IM and
//     Presence tables use them, e.g. systemnode='f').
//   - integers and floats: decimal; a negative number in parentheses, so
//     that "x-?" cannot become the comment "x--1"; a float always with a
//     decimal point or an exponent (2.0, 1e+21), so that it stays a float
//     in arithmetic; NaN and infinities are refused.
//   - a pointer: what it points to.
//
// Named types with those underlying kinds are accepted. Everything else is
// refused with a [*ValueError]: []byte (Informix has no literal for BYTE
// columns), time.Time (IM and Presence tables hold times in different
// forms; pass the number or text the column stores), structs, maps.
//
// Why the string rules are safe: inside an Informix single-quoted literal
// the only special character is the single quote, and a doubled one stands
// for itself. In UTF-8, and in any single-byte locale, the byte 0x27 occurs
// only as the character ', so doubling every ' leaves no way to end the
// literal early. A backslash is an ordinary character in Informix literals
// by default, but IBM's documentation describes it as an escape in some
// contexts (ESQL/C, LIKE and MATCHES patterns); where it escaped quotes,
// a value ending in a backslash would swallow the closing quote. Refusing
// backslashes keeps the quoting safe whatever the server's configuration.
// Control characters are refused because XML cannot carry NUL at all, and
// Informix accepts newlines inside literals only when ALLOW_NEWLINE is
// set; refusing them is simpler than depending on it. No value this
// project stores needs either. In LIKE or MATCHES patterns the characters
// % _ * ? [ ] keep their pattern meaning; Literal does not escape them.
func Literal(v any) (string, error) {
	return literal(v, 0, 0)
}

// maxIndirect bounds pointer chasing, so that a pointer type that points
// to itself cannot recurse forever.
const maxIndirect = 8

func literal(v any, arg, depth int) (string, error) {
	switch x := v.(type) {
	case nil:
		return "NULL", nil
	case string:
		return quote(x, arg)
	case bool:
		return boolean(x), nil
	case []byte:
		return "", &ValueError{Arg: arg, Type: "[]byte", Reason: "byte slices are not supported: Informix has no literal for BYTE columns; pass a string if the bytes are text"}
	case time.Time:
		return "", &ValueError{Arg: arg, Type: "time.Time", Reason: "times are not supported: pass the number (e.g. t.Unix()) or text the column stores"}
	}
	rv := reflect.ValueOf(v)
	typ := rv.Type().String()
	switch rv.Kind() {
	case reflect.Pointer:
		if rv.IsNil() {
			return "NULL", nil
		}
		if depth >= maxIndirect {
			return "", &ValueError{Arg: arg, Type: typ, Reason: "too many levels of pointers"}
		}
		return literal(rv.Elem().Interface(), arg, depth+1)
	case reflect.String:
		return quote(rv.String(), arg)
	case reflect.Bool:
		return boolean(rv.Bool()), nil
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return number(strconv.FormatInt(rv.Int(), 10)), nil
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Uintptr:
		return strconv.FormatUint(rv.Uint(), 10), nil
	case reflect.Float32, reflect.Float64:
		f := rv.Float()
		if math.IsNaN(f) || math.IsInf(f, 0) {
			return "", &ValueError{Arg: arg, Type: typ, Reason: "NaN and infinities have no SQL literal"}
		}
		s := strconv.FormatFloat(f, 'g', -1, rv.Type().Bits())
		if !strings.ContainsAny(s, ".e") {
			// 2.0, not 2: an integer literal would make 1.0/2 an
			// integer division.
			s += ".0"
		}
		return number(s), nil
	}
	return "", &ValueError{Arg: arg, Type: typ, Reason: "unsupported type: pass a string, integer, float, bool, nil or a pointer to one"}
}

func boolean(b bool) string {
	if b {
		return "'t'"
	}
	return "'f'"
}

// number parenthesizes negative numbers: "1-?" bound to -1 must not read
// "1--1", which starts a comment.
func number(s string) string {
	if strings.HasPrefix(s, "-") {
		return "(" + s + ")"
	}
	return s
}

func quote(s string, arg int) (string, error) {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n <= 1 {
				return "", &ValueError{Arg: arg, Type: "string", Reason: fmt.Sprintf("invalid UTF-8 at byte %d", i)}
			}
		}
		if unicode.IsControl(r) || r == 0xFFFE || r == 0xFFFF {
			return "", &ValueError{Arg: arg, Type: "string", Reason: fmt.Sprintf(
				"control or non-character %U at byte %d (NUL, tab, CR, LF and the like are refused: XML cannot carry NUL and Informix rejects newlines in literals unless ALLOW_NEWLINE is set)", r, i)}
		}
	}
	if i := strings.IndexByte(s, '\\'); i >= 0 {
		return "", &ValueError{Arg: arg, Type: "string", Reason: fmt.Sprintf(
			"backslash at byte %d (refused: some Informix contexts treat it as an escape character)", i)}
	}
	return "'" + strings.ReplaceAll(s, "'", "''") + "'", nil
}

// Bind replaces each ? placeholder in sql with the next argument written
// by [Literal], and returns the statement AXL will execute. A ? inside a
// quoted literal ('…' or "…"), or a comment (-- to the end of the line,
// {…} or /* … */, all three Informix comment forms) is left alone.
//
// A placeholder must stand apart from its neighbours: each side is the
// start or end of sql, white space, or one of ( ) [ ] { } , ; = < > ! + -
// * / % | & ^ ~ :, and not the sign of a number's exponent. Anything else
// (a letter, digit, _, ., a quote, another ?) would merge with the literal
// put in its place:
//
//	SELECT ??    with "a", "b" would read SELECT 'a''b', one literal
//	SELECT 1?    with 5 would read SELECT 15
//	SELECT 1e-?  with 5 would read SELECT 1e-5
//
// Write "SELECT ?, ?" or "SELECT 1 + ?" instead.
//
// Bind fails with an error matching [ErrBind] if sql has an unterminated
// literal or comment, a placeholder touching its neighbour, or a number of
// placeholders other than len(args), and with a [*ValueError] if an
// argument is refused.
func Bind(sql string, args ...any) (string, error) {
	marks, err := placeholders(sql)
	if err != nil {
		return "", fmt.Errorf("axl: %w: %v", ErrBind, err)
	}
	if len(marks) != len(args) {
		return "", fmt.Errorf("axl: %w: the statement has %d placeholders (?), %d arguments were given", ErrBind, len(marks), len(args))
	}
	for _, at := range marks {
		if err := apart(sql, at); err != nil {
			return "", fmt.Errorf("axl: %w: %v", ErrBind, err)
		}
	}
	if len(args) == 0 {
		return sql, nil
	}
	var b strings.Builder
	prev := 0
	for i, at := range marks {
		lit, err := literal(args[i], i+1, 0)
		if err != nil {
			return "", err
		}
		b.WriteString(sql[prev:at])
		b.WriteString(lit)
		prev = at + 1
	}
	b.WriteString(sql[prev:])
	return b.String(), nil
}

// separators are the ASCII characters that may touch a placeholder: no
// literal Literal writes can merge with them into a longer token. A
// literal starts with ', a digit, ( or N and ends with ', a digit, ) or L;
// none of these pairs with a separator to form a comment opener, a
// quote or a longer word.
const separators = "()[]{},;=<>!+-*/%|&^~:"

// apart checks that the placeholder at sql[at] does not touch a byte that
// would merge with the literal put in its place.
func apart(sql string, at int) error {
	ok := func(c byte) bool {
		return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v' || strings.IndexByte(separators, c) >= 0
	}
	if at > 0 && !ok(sql[at-1]) {
		return fmt.Errorf("the placeholder ? at byte %d follows %s: a bound value would merge with it; put a space or an operator between them", at, neighbour(sql[:at], true))
	}
	if at+1 < len(sql) && !ok(sql[at+1]) {
		return fmt.Errorf("the placeholder ? at byte %d is followed by %s: a bound value would merge with it; put a space or an operator between them", at, neighbour(sql[at+1:], false))
	}
	// A sign is a separator except after a mantissa: "1e-?" bound to 5
	// would read as the number 1e-5.
	if at >= 2 && (sql[at-1] == '-' || sql[at-1] == '+') {
		if i := mantissa(sql[:at-1]); i >= 0 {
			return fmt.Errorf("the placeholder ? at byte %d follows %q, the start of a number's exponent: a bound value would become the exponent; put a space between them", at, sql[i:at])
		}
	}
	return nil
}

// mantissa returns where s ends with a number's mantissa and e or E (a
// word of letters, digits, _ and . that starts with a digit or a dot), or
// -1.
func mantissa(s string) int {
	if s == "" || s[len(s)-1]|0x20 != 'e' {
		return -1
	}
	i := len(s) - 1
	for i > 0 && wordByte(s[i-1]) {
		i--
	}
	if s[i] >= '0' && s[i] <= '9' || s[i] == '.' {
		return i
	}
	return -1
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '$' || c >= 0x80
}

// neighbour quotes the character at the end (before) or start of s.
func neighbour(s string, before bool) string {
	var r rune
	if before {
		r, _ = utf8.DecodeLastRuneInString(s)
	} else {
		r, _ = utf8.DecodeRuneInString(s)
	}
	return strconv.QuoteRune(r)
}

// placeholders returns the byte offsets of the ? placeholders of sql,
// skipping quoted literals and comments. Working on bytes is safe: in UTF-8
// no byte of a multi-byte character is an ASCII delimiter.
func placeholders(sql string) ([]int, error) {
	var marks []int
	for i := 0; i < len(sql); i++ {
		switch c := sql[i]; {
		case c == '?':
			marks = append(marks, i)
		case c == '\'' || c == '"':
			end := closeQuote(sql, i)
			if end < 0 {
				return nil, fmt.Errorf("unterminated %c-quoted literal at byte %d", c, i)
			}
			i = end
		case c == '-' && strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				return marks, nil
			}
			i += end
		case c == '/' && strings.HasPrefix(sql[i:], "/*"):
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return nil, fmt.Errorf("unterminated /* comment at byte %d", i)
			}
			i += 2 + end + 1
		case c == '{':
			end := strings.IndexByte(sql[i:], '}')
			if end < 0 {
				return nil, fmt.Errorf("unterminated { comment at byte %d", i)
			}
			i += end
		}
	}
	return marks, nil
}

// closeQuote returns the offset of the quote closing the literal opened at
// sql[start], where a doubled quote stands for itself; -1 if none.
func closeQuote(sql string, start int) int {
	q := sql[start]
	for i := start + 1; i < len(sql); i++ {
		if sql[i] != q {
			continue
		}
		if i+1 < len(sql) && sql[i+1] == q {
			i++
			continue
		}
		return i
	}
	return -1
}
