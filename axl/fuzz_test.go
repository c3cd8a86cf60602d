package axl_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/xmppfed/xmppfed/axl"
	"github.com/xmppfed/xmppfed/axl/axltest"
)

var hostileSeeds = []string{
	"", "x", "O'Brien", "'", "''", "'''", "'; drop table xmpps2snodes; --",
	"x'); DROP TABLE xmpps2snodes; --", `\'`, `\`, `"`, "?", "??", "--", "/*", "*/", "{", "}",
	"]]>", "<sql>", "&amp;", "&#39;", "\u2019", "\uff07", "Zürich 😀", "\u202e", "a\x00b", "\n", "\r\n", "\xff", "\xc0\xa7",
	"' || (SELECT count(*) FROM xmpps2snodes) || '", "'; DELETE FROM xmpps2snodes WHERE 'a'='a",
}

// unquote is an oracle independent of the package: it checks that lit is
// one single-quoted SQL literal in which every quote is doubled, and
// returns its value.
func unquote(lit string) (string, bool) {
	if len(lit) < 2 || lit[0] != '\'' || lit[len(lit)-1] != '\'' {
		return "", false
	}
	inner := lit[1 : len(lit)-1]
	if strings.Contains(strings.ReplaceAll(inner, "''", ""), "'") {
		return "", false // a lone quote would end the literal early
	}
	return strings.ReplaceAll(inner, "''", "'"), true
}

func refusable(s string) bool {
	if !utf8.ValidString(s) || strings.Contains(s, `\`) {
		return true
	}
	for _, r := range s {
		if unicode.IsControl(r) || r == 0xFFFE || r == 0xFFFF {
			return true
		}
	}
	return false
}

// FuzzLiteral proves that no string breaks out of its literal. Each value
// is quoted, checked to be exactly one literal by an independent oracle,
// and sent to the axltest server, whose SQLite database quotes literals as
// Informix does: bound into SELECT ? AS v it must come back verbatim, and
// stored in xmpps2snodes it must be read back verbatim with the table
// intact.
func FuzzLiteral(f *testing.F) {
	for _, s := range hostileSeeds {
		f.Add(s)
	}
	s := axltest.New(f, axltest.Config{Strict: true})
	c := s.Client()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	f.Cleanup(cancel)

	f.Fuzz(func(t *testing.T, v string) {
		lit, err := axl.Literal(v)
		if err != nil {
			if !errors.Is(err, axl.ErrUnsafeValue) || !refusable(v) {
				t.Fatalf("Literal(%q) refused: %v", v, err)
			}
			return
		}
		if refusable(v) {
			t.Fatalf("Literal(%q) = %s, want an error", v, lit)
		}
		got, ok := unquote(lit)
		if !ok || got != v {
			t.Fatalf("Literal(%q) = %s: not one literal with that value", v, lit)
		}
		stmt, err := axl.Bind("SELECT ? AS v", v)
		if err != nil || stmt != "SELECT "+lit+" AS v" {
			t.Fatalf("Bind: %q, %v", stmt, err)
		}

		rows, err := c.Query(ctx, "SELECT ? AS v, count(*) AS n FROM xmpps2snodes", v)
		if err != nil {
			t.Fatalf("query with %q: %v", v, err)
		}
		if len(rows) != 1 || rows[0].Len() != 2 {
			t.Fatalf("query with %q: %d rows %v", v, len(rows), rows)
		}
		if got, _ := rows[0].Get("v"); got != v {
			t.Fatalf("round trip of %q gave %q", v, got)
		}
		if n, _ := rows[0].Get("n"); n != "0" {
			t.Fatalf("xmpps2snodes has %s rows, want 0", n)
		}

		pkid := axl.NewPKID()
		if n, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", pkid, v); err != nil || n != 1 {
			t.Fatalf("insert %q: %d, %v", v, n, err)
		}
		rows, err = c.Query(ctx, "SELECT cp_id FROM xmpps2snodes WHERE pkid = ?", pkid)
		if err != nil || len(rows) != 1 {
			t.Fatalf("read back %q: %v, %v", v, rows, err)
		}
		if got, _ := rows[0].Get("cp_id"); got != v {
			t.Fatalf("stored %q, read back %q", v, got)
		}
		if n, err := c.Update(ctx, "DELETE FROM xmpps2snodes WHERE cp_id = ? AND pkid = ?", v, pkid); err != nil || n != 1 {
			t.Fatalf("delete %q: %d, %v", v, n, err)
		}
	})
}
