package axl_test

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"math"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/xmppfed/xmppfed/axl"
	"github.com/xmppfed/xmppfed/axl/axltest"
)

// token is a lexical unit of Informix SQL as the oracle below sees it.
type token struct {
	kind byte   // 'w' word or number, 's' '…' literal, 'd' "…" literal, '?' placeholder, 'c' comment, 'p' punctuation
	text string // for 's' and 'd' the value, doubled quotes undone
	at   int    // byte offset in the statement
}

func wordByte(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '$' || c >= 0x80
}

// lex is the oracle's tokenizer, written apart from the package's scanner.
// Words are greedy (letters, digits, _, ., $ and non-ASCII bytes, and a
// sign right after a number's e), so that any literal that merges with
// its neighbour shows up as a different token sequence. It reports false
// for an unterminated literal or comment.
func lex(sql string) ([]token, bool) {
	var toks []token
	for i := 0; i < len(sql); {
		c := sql[i]
		switch {
		case strings.IndexByte(" \t\n\r\f\v", c) >= 0:
			i++
		case strings.HasPrefix(sql[i:], "--"):
			end := strings.IndexByte(sql[i:], '\n')
			if end < 0 {
				end = len(sql) - i
			}
			toks = append(toks, token{'c', sql[i : i+end], i})
			i += end
		case strings.HasPrefix(sql[i:], "/*"):
			end := strings.Index(sql[i+2:], "*/")
			if end < 0 {
				return nil, false
			}
			toks = append(toks, token{'c', sql[i : i+end+4], i})
			i += end + 4
		case c == '{':
			end := strings.IndexByte(sql[i:], '}')
			if end < 0 {
				return nil, false
			}
			toks = append(toks, token{'c', sql[i : i+end+1], i})
			i += end + 1
		case c == '\'' || c == '"':
			var b strings.Builder
			j := i + 1
			for {
				if j >= len(sql) {
					return nil, false
				}
				if sql[j] == c {
					if j+1 < len(sql) && sql[j+1] == c {
						b.WriteByte(c)
						j += 2
						continue
					}
					break
				}
				b.WriteByte(sql[j])
				j++
			}
			kind := byte('s')
			if c == '"' {
				kind = 'd'
			}
			toks = append(toks, token{kind, b.String(), i})
			i = j + 1
		case c == '?':
			toks = append(toks, token{'?', "?", i})
			i++
		case wordByte(c):
			j := i
			for j < len(sql) {
				if wordByte(sql[j]) {
					j++
					continue
				}
				// 1e-5, .5E+3: the sign belongs to the number.
				if (sql[j] == '-' || sql[j] == '+') && j+1 < len(sql) && sql[j+1] >= '0' && sql[j+1] <= '9' &&
					sql[j-1]|0x20 == 'e' && (sql[i] >= '0' && sql[i] <= '9' || sql[i] == '.') {
					j++
					continue
				}
				break
			}
			toks = append(toks, token{'w', sql[i:j], i})
			i = j
		default:
			toks = append(toks, token{'p', sql[i : i+1], i})
			i++
		}
	}
	return toks, true
}

// checkLiteral consumes from got the tokens of the literal for arg and
// checks their value, without using the package's formatting.
func checkLiteral(got []token, arg any) (rest []token, err error) {
	take := func(n int) ([]token, error) {
		if len(got) < n {
			return nil, fmt.Errorf("statement ends inside the literal for %#v", arg)
		}
		return got[:n], nil
	}
	number := func(neg bool, ok func(string) bool) ([]token, error) {
		if !neg {
			t, err := take(1)
			if err != nil {
				return nil, err
			}
			if t[0].kind != 'w' || !ok(t[0].text) {
				return nil, fmt.Errorf("literal for %#v is %v", arg, t)
			}
			return got[1:], nil
		}
		t, err := take(4)
		if err != nil {
			return nil, err
		}
		if t[0].text != "(" || t[1].text != "-" || t[2].kind != 'w' || !ok(t[2].text) || t[3].text != ")" {
			return nil, fmt.Errorf("literal for %#v is %v", arg, t)
		}
		return got[4:], nil
	}
	switch v := arg.(type) {
	case nil:
		t, err := take(1)
		if err != nil || t[0] != (token{'w', "NULL", t[0].at}) {
			return nil, fmt.Errorf("literal for nil is %v", t)
		}
		return got[1:], nil
	case bool:
		want := map[bool]string{true: "t", false: "f"}[v]
		t, err := take(1)
		if err != nil || t[0].kind != 's' || t[0].text != want {
			return nil, fmt.Errorf("literal for %v is %v", v, t)
		}
		return got[1:], nil
	case string:
		t, err := take(1)
		if err != nil || t[0].kind != 's' || t[0].text != v {
			return nil, fmt.Errorf("literal for %q is %v", v, t)
		}
		return got[1:], nil
	case int64:
		abs := uint64(v)
		if v < 0 {
			abs = -abs
		}
		return number(v < 0, func(s string) bool {
			n, err := strconv.ParseUint(s, 10, 64)
			return err == nil && n == abs
		})
	case float64:
		return number(math.Signbit(v), func(s string) bool {
			f, err := strconv.ParseFloat(s, 64)
			return err == nil && f == math.Abs(v) && strings.ContainsAny(s, ".e")
		})
	}
	return nil, fmt.Errorf("unexpected argument %#v", arg)
}

// bindOracle checks that stmt is template with each placeholder replaced by
// exactly the tokens of one literal holding its argument.
func bindOracle(template []token, stmt string, args []any) error {
	got, ok := lex(stmt)
	if !ok {
		return errors.New("the bound statement has an unterminated literal or comment")
	}
	k := 0
	for _, want := range template {
		if want.kind == '?' {
			var err error
			if got, err = checkLiteral(got, args[k]); err != nil {
				return err
			}
			k++
			continue
		}
		if len(got) == 0 || got[0].kind != want.kind || got[0].text != want.text {
			return fmt.Errorf("token %q of the template became %v", want.text, got[:min(1, len(got))])
		}
		got = got[1:]
	}
	if len(got) > 0 {
		return fmt.Errorf("extra tokens %v", got)
	}
	return nil
}

// outcome is what a statement did: its rows and the table afterwards.
type outcome struct {
	rows  [][]any
	table [][]any
	err   error
}

func collect(rows *sql.Rows) ([][]any, error) {
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	var out [][]any
	for rows.Next() {
		vals := make([]any, len(cols))
		ptrs := make([]any, len(cols))
		for i := range vals {
			ptrs[i] = &vals[i]
		}
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		for i, v := range vals {
			if b, ok := v.([]byte); ok {
				vals[i] = "blob:" + string(b)
			}
		}
		out = append(out, vals)
	}
	return out, rows.Err()
}

// run executes stmt in a transaction it rolls back, and reports the rows
// and the content of xmpps2snodes before the rollback.
func run(db *sql.DB, stmt string, args ...any) outcome {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	tx, err := db.BeginTx(ctx, nil)
	if err != nil {
		return outcome{err: err}
	}
	defer tx.Rollback()
	var o outcome
	rows, err := tx.QueryContext(ctx, stmt, args...)
	if err == nil {
		o.rows, err = collect(rows)
	}
	if err != nil {
		return outcome{err: err}
	}
	rows, err = tx.QueryContext(ctx, "SELECT pkid, cp_id FROM xmpps2snodes ORDER BY pkid")
	if err == nil {
		o.table, err = collect(rows)
	}
	o.err = err
	return o
}

// executable reports whether the differential run may execute template: a
// single SELECT, INSERT, UPDATE or DELETE (no ; that could start another
// statement), without SQLite's other parameter forms (:a @a $a) and
// bracket or backtick identifiers, which Informix does not have.
func executable(toks []token) bool {
	first := ""
	for _, t := range toks {
		switch {
		case t.kind == 'c':
			continue
		case t.kind == 'p' && strings.Contains(";:@[]`", t.text):
			return false
		case t.kind == 'w' && strings.HasPrefix(t.text, "$"):
			return false
		}
		if first == "" {
			first = strings.ToLower(t.text)
		}
	}
	switch first {
	case "select", "with", "insert", "update", "delete":
		return true
	}
	return false
}

// spaced puts blanks around the placeholders of template.
func spaced(sql string, toks []token) string {
	var b strings.Builder
	prev := 0
	for _, t := range toks {
		if t.kind == '?' {
			b.WriteString(sql[prev:t.at])
			b.WriteString(" ? ")
			prev = t.at + 1
		}
	}
	b.WriteString(sql[prev:])
	return b.String()
}

// FuzzBind checks Bind against two oracles independent of its code, with
// fuzzed statement templates and arguments of mixed types (strings, signed
// integers, floats, booleans, nil):
//
//   - a tokenizer of its own: the bound statement must be the template's
//     token sequence with each placeholder replaced by the tokens of one
//     literal that holds its argument's value. A literal merging with a
//     neighbour, a value opening or closing a quote or comment, or a
//     placeholder missed or invented all change that sequence.
//   - SQLite, which has real bind parameters with the same ? syntax: a
//     template SQLite accepts must give the same rows and leave
//     xmpps2snodes in the same state with Bind's text as with SQLite's own
//     binding of the same values (run on the axltest server's database,
//     in a transaction that is rolled back).
//
// Bind may refuse only for a reason the oracle confirms: an unterminated
// literal or comment, an argument Literal refuses, or a placeholder that
// touches its neighbour (the template then binds once the placeholders
// are spaced out).
func FuzzBind(f *testing.F) {
	templates := []string{
		"SELECT ? AS v", "SELECT ?, ? FROM xmpps2snodes", "SELECT '?' , ?", `SELECT "?", ?`,
		"SELECT ? -- ?\n, ?", "SELECT /* ? */ ?", "SELECT {?} ?", "SELECT 'it''s', ?",
		"SELECT ?-?, ?+?, ?*?, ?/?", "SELECT 1-?", "SELECT ?||?", "SELECT ?/2, 3/?",
		"SELECT ??", "SELECT 1?", "SELECT 'a'?", "SELECT 1e-?", "SELECT '", "SELECT x?",
		"SELECT pkid FROM xmpps2snodes WHERE cp_id = ? OR pkid = ?",
		"SELECT count(*) AS n FROM xmpps2snodes WHERE cp_id <> ?",
		"SELECT CASE WHEN ? IS NULL THEN 1 ELSE ? END",
		"INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)",
		"UPDATE xmpps2snodes SET cp_id = ? WHERE pkid = ?",
		"DELETE FROM xmpps2snodes WHERE cp_id = ?",
		"DELETE FROM xmpps2snodes WHERE cp_id = ? -- '\n AND pkid <> ?",
	}
	values := []string{"x", "'; drop table xmpps2snodes; --", "O'Brien", "?", "--", "/*", "{", "'"}
	for i, tmpl := range templates {
		f.Add(tmpl, values[i%len(values)], int64(i-3), float64(i)/4-1, i%2 == 0, uint64(0x0123456789abcdef)>>(i%8))
	}
	f.Add("DELETE FROM xmpps2snodes WHERE cp_id = ?", "x", int64(0), 0.0, false, uint64(0))
	f.Add("UPDATE xmpps2snodes SET cp_id = ? || 'y' WHERE cp_id = ?", "x", int64(0), 0.0, false, uint64(0))
	f.Add("SELECT length(zeroblob(?))", "", int64(1<<30), 0.0, false, uint64(1))
	f.Add("SELECT ?, ?, ?", "a", int64(math.MinInt64), 1e21, true, uint64(0x321))
	f.Add("SELECT ?, ?", "b", int64(0), math.Copysign(0, -1), false, uint64(0x33))
	f.Add("SELECT ?, ?", "c", int64(7), 5e-324, false, uint64(0x43))

	s := axltest.New(f, axltest.Config{Nodes: []axl.S2SNode{
		{PKID: "055c13d9-943d-459d-a3c6-af1d1176936d", CPID: "cm-2_s2scp-1.eft-xwye-a-coluc-com"},
		{PKID: "5f0b1a52-7c1e-4a8e-9a37-0d1c2b3e4f50", CPID: "x"},
	}})
	db := s.DB()
	// A fuzzed zeroblob(n) or printf('%*d', n) must not allocate
	// gigabytes: limit values to 1 MB on the database's one connection.
	conn, err := db.Conn(context.Background())
	if err != nil {
		f.Fatal(err)
	}
	if _, err := sqlite.Limit(conn, sqlite3.SQLITE_LIMIT_LENGTH, 1<<20); err != nil {
		f.Fatal(err)
	}
	conn.Close()
	intact := run(db, "SELECT 1").table

	f.Fuzz(func(t *testing.T, template, str string, n int64, fl float64, b bool, kinds uint64) {
		toks, ok := lex(template)
		if !ok {
			if _, err := axl.Bind(template); !errors.Is(err, axl.ErrBind) {
				t.Fatalf("Bind(%q) with an unterminated literal or comment: %v", template, err)
			}
			return
		}
		var args, native []any
		for _, tk := range toks {
			if tk.kind != '?' {
				continue
			}
			if len(args) == 16 {
				return
			}
			var a, na any
			switch kind := kinds >> (4 * len(args)) & 0xf; kind % 7 {
			case 0:
				a, na = str, str
			case 1:
				a, na = n, n
			case 2:
				a, na = -n, -n
			case 3:
				a, na = fl, fl
			case 4:
				a, na = b, map[bool]string{true: "t", false: "f"}[b]
			case 5:
				a, na = nil, nil
			case 6:
				a, na = "'"+str, "'"+str
			}
			if f, ok := a.(float64); ok && (math.IsNaN(f) || math.IsInf(f, 0)) {
				a, na = 1.5, 1.5
			}
			args, native = append(args, a), append(native, na)
		}

		stmt, err := axl.Bind(template, args...)
		if err != nil {
			var ve *axl.ValueError
			if errors.As(err, &ve) {
				if _, lerr := axl.Literal(args[ve.Arg-1]); lerr == nil {
					t.Fatalf("Bind refused argument %d (%#v), which Literal accepts: %v", ve.Arg, args[ve.Arg-1], err)
				}
				return
			}
			if !errors.Is(err, axl.ErrBind) {
				t.Fatalf("Bind(%q): %v", template, err)
			}
			if _, serr := axl.Bind(spaced(template, toks), args...); serr != nil && !errors.As(serr, &ve) {
				t.Fatalf("Bind(%q) refused (%v), and still refuses with the placeholders spaced out: %v", template, err, serr)
			}
			return
		}
		if err := bindOracle(toks, stmt, args); err != nil {
			t.Fatalf("Bind(%q, %#v) = %q: %v", template, args, stmt, err)
		}

		if !executable(toks) {
			return
		}
		want := run(db, template, native...)
		if want.err != nil {
			return // SQLite refuses the template itself
		}
		got := run(db, stmt)
		if got.err != nil {
			t.Fatalf("%q with %#v runs with bind parameters, but Bind's %q fails: %v", template, native, stmt, got.err)
		}
		if !reflect.DeepEqual(want.rows, got.rows) {
			t.Fatalf("%q with %#v: rows %v with bind parameters, %v with Bind's %q", template, native, want.rows, got.rows, stmt)
		}
		if !reflect.DeepEqual(want.table, got.table) {
			t.Fatalf("%q with %#v: table %v with bind parameters, %v with Bind's %q", template, native, want.table, got.table, stmt)
		}
		if after := run(db, "SELECT 1").table; !reflect.DeepEqual(after, intact) {
			t.Fatalf("xmpps2snodes changed after %q: %v", stmt, after)
		}
	})
}
