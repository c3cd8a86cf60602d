package axl_test

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/axl"
)

type cpid string

func TestLiteral(t *testing.T) {
	s := "x"
	var nilStr *string
	pp := &s
	tests := []struct {
		in   any
		want string
	}{
		{nil, "NULL"},
		{"", "''"},
		{"O'Brien", "'O''Brien'"},
		{"'; drop table xmpps2snodes; --", "'''; drop table xmpps2snodes; --'"},
		{`"double"`, `'"double"'`},
		{"?", "'?'"},
		{"Zürich 😀", "'Zürich 😀'"},
		{cpid("cm-1_s2scp-1.a-b"), "'cm-1_s2scp-1.a-b'"},
		{true, "'t'"},
		{false, "'f'"},
		{0, "0"},
		{42, "42"},
		{-1, "(-1)"},
		{int8(-128), "(-128)"},
		{int64(math.MinInt64), "(-9223372036854775808)"},
		{uint64(math.MaxUint64), "18446744073709551615"},
		{1.5, "1.5"},
		{float32(0.1), "0.1"},
		{-2.5e-10, "(-2.5e-10)"},
		{1e21, "1e+21"},
		{2.0, "2.0"},
		{float32(-3), "(-3.0)"},
		{math.Copysign(0, -1), "(-0.0)"},
		{&s, "'x'"},
		{&pp, "'x'"},
		{nilStr, "NULL"},
	}
	for _, tt := range tests {
		got, err := axl.Literal(tt.in)
		require.NoError(t, err, "%#v", tt.in)
		assert.Equal(t, tt.want, got, "%#v", tt.in)
	}
}

func TestLiteralRefuses(t *testing.T) {
	tests := []struct {
		in     any
		reason string
	}{
		{"a\x00b", "U+0000"},
		{"line\nbreak", "U+000A"},
		{"cr\r", "U+000D"},
		{"tab\t", "U+0009"},
		{"esc\x1b", "U+001B"},
		{"del\x7f", "U+007F"},
		{"c1\u0085", "U+0085"},
		{"\uFFFE", "U+FFFE"},
		{"bad\xffutf8", "invalid UTF-8 at byte 3"},
		{`back\slash`, "backslash at byte 4"},
		{`\'; DROP TABLE xmpps2snodes; --`, "backslash at byte 0"},
		{"\xc3", "invalid UTF-8"},
		{[]byte("x"), "BYTE"},
		{time.Now(), "t.Unix()"},
		{math.NaN(), "NaN"},
		{math.Inf(-1), "NaN and infinities"},
		{struct{}{}, "unsupported type"},
		{map[string]int{}, "unsupported type"},
	}
	for _, tt := range tests {
		_, err := axl.Literal(tt.in)
		require.ErrorIs(t, err, axl.ErrUnsafeValue, "%#v", tt.in)
		var ve *axl.ValueError
		require.ErrorAs(t, err, &ve)
		assert.Zero(t, ve.Arg)
		assert.Contains(t, err.Error(), tt.reason, "%#v", tt.in)
	}
}

// A pointer type that points to itself must not recurse forever.
func TestLiteralPointerLoop(t *testing.T) {
	type loop *loop
	var p loop
	p = &p
	_, err := axl.Literal(p)
	assert.ErrorIs(t, err, axl.ErrUnsafeValue)
}

func TestBind(t *testing.T) {
	tests := []struct {
		sql  string
		args []any
		want string
	}{
		{"SELECT 1", nil, "SELECT 1"},
		{"SELECT pkid FROM t WHERE cp_id = ?", []any{"a'b"}, "SELECT pkid FROM t WHERE cp_id = 'a''b'"},
		{"INSERT INTO t (a, b, c) VALUES (?,?,?)", []any{nil, true, 7}, "INSERT INTO t (a, b, c) VALUES (NULL,'t',7)"},
		// Negative numbers cannot turn "x-?" into a comment.
		{"SELECT 1-? AS v", []any{-1}, "SELECT 1-(-1) AS v"},
		// ? inside literals and comments is text.
		{"SELECT '?', ? FROM t WHERE a = 'it''s ?'", []any{1}, "SELECT '?', 1 FROM t WHERE a = 'it''s ?'"},
		{`SELECT "?" AS x, ?`, []any{2}, `SELECT "?" AS x, 2`},
		{"SELECT ? -- why?\n, ?", []any{1, 2}, "SELECT 1 -- why?\n, 2"},
		{"SELECT ? -- trailing?", []any{1}, "SELECT 1 -- trailing?"},
		{"SELECT /* ? */ ?", []any{1}, "SELECT /* ? */ 1"},
		{"SELECT {+ ORDERED ?} ?", []any{1}, "SELECT {+ ORDERED ?} 1"},
		{"SELECT '' || ?", []any{"x"}, "SELECT '' || 'x'"},
		// A bound value cannot open a literal that hides a later ?.
		{"SELECT ?, ?", []any{"'", "?"}, "SELECT '''', '?'"},
	}
	for _, tt := range tests {
		got, err := axl.Bind(tt.sql, tt.args...)
		require.NoError(t, err, tt.sql)
		assert.Equal(t, tt.want, got, tt.sql)
	}
}

func TestBindErrors(t *testing.T) {
	tests := []struct {
		sql  string
		args []any
		is   error
		msg  string
	}{
		{"SELECT ?", nil, axl.ErrBind, "1 placeholders (?), 0 arguments"},
		{"SELECT ?, ?", []any{1}, axl.ErrBind, "2 placeholders"},
		{"SELECT 1", []any{1}, axl.ErrBind, "0 placeholders"},
		{"SELECT 'open", nil, axl.ErrBind, "unterminated '-quoted literal at byte 7"},
		{`SELECT "open ?`, []any{1}, axl.ErrBind, `unterminated "-quoted`},
		{"SELECT /* ?", []any{1}, axl.ErrBind, "unterminated /* comment"},
		{"SELECT { ?", []any{1}, axl.ErrBind, "unterminated { comment"},
		{"SELECT ?, ?", []any{"ok", "a\x00"}, axl.ErrUnsafeValue, "argument 2 (string)"},
	}
	for _, tt := range tests {
		_, err := axl.Bind(tt.sql, tt.args...)
		require.ErrorIs(t, err, tt.is, tt.sql)
		assert.Contains(t, err.Error(), tt.msg, tt.sql)
	}
	_, err := axl.Bind("SELECT ?", []byte("x"))
	var ve *axl.ValueError
	require.True(t, errors.As(err, &ve))
	assert.Equal(t, 1, ve.Arg)
	assert.Equal(t, "[]byte", ve.Type)
}

// A placeholder touching a word, a quote or another placeholder would merge
// with the literal bound in its place.
func TestBindAdjacent(t *testing.T) {
	refused := []struct {
		sql  string
		args []any
		msg  string
	}{
		{"SELECT ??", []any{"a", "b"}, `byte 7 is followed by '?'`}, // would be one literal 'a''b'
		{"SELECT 1?", []any{5}, `follows '1'`},                      // would be 15
		{"SELECT ?1", []any{5}, `followed by '1'`},
		{"SELECT ?e5", []any{1}, `followed by 'e'`},
		{"SELECT x?", []any{1}, `follows 'x'`},
		{"SELECT _?", []any{1}, `follows '_'`},
		{"SELECT ?_", []any{1}, `followed by '_'`},
		{"SELECT 'a'?", []any{"b"}, `follows '\''`}, // would be 'a''b'
		{"SELECT ?'a'", []any{"b"}, `followed by '\''`},
		{`SELECT "a"?`, []any{"b"}, `follows '"'`},
		{"SELECT ?.5", []any{1}, `followed by '.'`}, // would be 1.5
		{"SELECT 1.?", []any{5}, `follows '.'`},
		{"SELECT $?", []any{1}, `follows '$'`},
		{`SELECT \?`, []any{1}, `follows '\\'`},
		{"SELECT é?", []any{1}, `follows 'é'`},
		{"SELECT ?NULL", []any{nil}, `followed by 'N'`},
		{"SELECT 1e-?", []any{5}, `follows "1e-", the start of a number's exponent`}, // would be 1e-5
		{"SELECT .5E+?", []any{5}, `follows ".5E+"`},
	}
	for _, tt := range refused {
		_, err := axl.Bind(tt.sql, tt.args...)
		require.ErrorIs(t, err, axl.ErrBind, tt.sql)
		assert.Contains(t, err.Error(), tt.msg, tt.sql)
		assert.Contains(t, err.Error(), "put a space", tt.sql)
	}
	accepted := []struct {
		sql  string
		args []any
		want string
	}{
		{"SELECT (?),[?]", []any{1, 2}, "SELECT (1),[2]"},
		{"SELECT ?,?;", []any{"a", "b"}, "SELECT 'a','b';"},
		{"SELECT -?+?*?/?%?", []any{-1, 2, 3, 4, 5}, "SELECT -(-1)+2*3/4%5"},
		{"SELECT 1 WHERE ?=?|?<>?", []any{1, 1, 2, 3}, "SELECT 1 WHERE 1=1|2<>3"},
		{"SELECT ?::INT,?!=?", []any{"1", 1, 2}, "SELECT '1'::INT,1!=2"},
		{"SELECT size-?, e-?, x1e-?", []any{1, 2, 3}, "SELECT size-1, e-2, x1e-3"},
		{"SELECT ?{c}?--c", []any{1, 2}, "SELECT 1{c}2--c"},
		{"SELECT\t?\n", []any{1}, "SELECT\t1\n"},
		{"?", []any{nil}, "NULL"},
	}
	for _, tt := range accepted {
		got, err := axl.Bind(tt.sql, tt.args...)
		require.NoError(t, err, tt.sql)
		assert.Equal(t, tt.want, got, tt.sql)
	}
}
