package axltest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"time"
	"unicode"

	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"github.com/xmppfed/xmppfed/axl/internal/wire"
)

// query runs a SELECT and returns its rows, or the fault AXL would send.
// The statement runs read-only (see readOnly), so that neither a second
// statement ("SELECT 1; DELETE …") nor a data-modifying one behind a WITH
// can change the database.
func (s *Server) query(ctx context.Context, stmt string) (_ [][]wire.Column, f *wire.Fault) {
	if kw := firstKeyword(stmt); kw != "select" && kw != "with" {
		return nil, clientFault(wire.OpQuery, -1, "executeSQLQuery runs SELECT statements only; use executeSQLUpdate for "+strings.ToUpper(kw))
	}
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, sqlFault(wire.OpQuery, err)
	}
	defer conn.Close()
	if err := setAuthorizer(conn, readOnly); err != nil {
		return nil, sqlFault(wire.OpQuery, err)
	}
	defer func() {
		// The connection goes back to the pool, and with an in-memory
		// database it is the database: it must come back writable.
		if err := setAuthorizer(conn, nil); err != nil && f == nil {
			f = sqlFault(wire.OpQuery, err)
		}
	}()
	return s.queryOn(ctx, conn, stmt)
}

// setAuthorizer installs fn (nil: none) on conn's SQLite connection.
func setAuthorizer(conn *sql.Conn, fn sqlite.AuthorizerFn) error {
	return conn.Raw(func(dc any) error {
		r, ok := dc.(sqlite.AuthorizerRegisterer)
		if !ok {
			return errors.New("the SQLite driver has no authorizer")
		}
		return r.RegisterAuthorizer(fn)
	})
}

// readOnly lets SQLite compile reads only: SELECT, reading columns,
// functions other than load_extension, recursive CTEs. Unlike PRAGMA
// query_only, a statement cannot turn it off.
func readOnly(action sqlite.AuthorizerActionCode, _, arg2, _, _ string) sqlite.AuthorizerReturnCode {
	switch action {
	case sqlite.AuthSelect, sqlite.AuthRead, sqlite.AuthRecursive:
		return sqlite.AuthorizerOK
	case sqlite.AuthFunction:
		if !strings.EqualFold(arg2, "load_extension") {
			return sqlite.AuthorizerOK
		}
	}
	return sqlite.AuthorizerDeny
}

func (s *Server) queryOn(ctx context.Context, conn *sql.Conn, stmt string) ([][]wire.Column, *wire.Fault) {
	rows, err := conn.QueryContext(ctx, stmt)
	if err != nil {
		return nil, sqlFault(wire.OpQuery, err)
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, sqlFault(wire.OpQuery, err)
	}
	names := make([]string, len(cols))
	for i, c := range cols {
		names[i] = columnName(c)
	}
	out := [][]wire.Column{}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, sqlFault(wire.OpQuery, err)
		}
		row := make([]wire.Column, len(cols))
		for i, v := range vals {
			row[i] = wire.Column{Name: names[i], Value: text(v)}
		}
		out = append(out, row)
	}
	if err := rows.Err(); err != nil {
		return nil, sqlFault(wire.OpQuery, err)
	}
	if s.cfg.MaxRows > 0 && len(out) > s.cfg.MaxRows {
		msg := fmt.Sprintf("Query request too large. Total rows matched: %d rows. Suggestive Row Fetch: less than %d rows", len(out), s.cfg.MaxRows+1)
		return nil, &wire.Fault{FaultCode: "soapenv:Server", FaultString: msg, AXLCode: -1, HasAXLCode: true, AXLMessage: msg, Request: wire.OpQuery}
	}
	return out, nil
}

// update runs an INSERT, UPDATE or DELETE in a transaction of its own and
// returns the number of rows it changed.
func (s *Server) update(ctx context.Context, stmt string) (int, *wire.Fault) {
	switch kw := firstKeyword(stmt); kw {
	case "insert", "update", "delete":
	default:
		return 0, clientFault(wire.OpUpdate, -1, "executeSQLUpdate runs INSERT, UPDATE and DELETE statements only, not "+strings.ToUpper(kw))
	}
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return 0, sqlFault(wire.OpUpdate, err)
	}
	res, err := tx.ExecContext(ctx, stmt)
	if err != nil {
		_ = tx.Rollback()
		return 0, sqlFault(wire.OpUpdate, err)
	}
	n, err := res.RowsAffected()
	if err != nil {
		_ = tx.Rollback()
		return 0, sqlFault(wire.OpUpdate, err)
	}
	if err := tx.Commit(); err != nil {
		return 0, sqlFault(wire.OpUpdate, err)
	}
	return int(n), nil
}

// firstKeyword returns the first word of stmt in lower case, after blanks
// and comments.
func firstKeyword(stmt string) string {
	for {
		stmt = strings.TrimLeftFunc(stmt, unicode.IsSpace)
		var end int
		switch {
		case strings.HasPrefix(stmt, "--"):
			end = strings.IndexByte(stmt, '\n')
		case strings.HasPrefix(stmt, "/*"):
			if end = strings.Index(stmt, "*/"); end >= 0 {
				end += 2
			}
		case strings.HasPrefix(stmt, "{"):
			if end = strings.IndexByte(stmt, '}'); end >= 0 {
				end++
			}
		default:
			i := strings.IndexFunc(stmt, func(r rune) bool { return !unicode.IsLetter(r) })
			if i < 0 {
				i = len(stmt)
			}
			return strings.ToLower(stmt[:i])
		}
		if end < 0 {
			return ""
		}
		stmt = stmt[end:]
	}
}

var identRE = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*`)

// columnName turns a SQLite result column name into the element name AXL
// would use: Informix's lower case, and for an expression without an alias
// its leading word ("count(*)" gives "count"), else "expression".
func columnName(c string) string {
	c = strings.TrimLeft(c, "( ")
	if m := identRE.FindString(c); m != "" && wire.ValidName(strings.ToLower(m)) {
		return strings.ToLower(m)
	}
	return "expression"
}

// text formats a database value as AXL does: NULL as empty.
func text(v any) string {
	switch x := v.(type) {
	case nil:
		return ""
	case string:
		return x
	case []byte:
		return string(x)
	case int64:
		return strconv.FormatInt(x, 10)
	case float64:
		return strconv.FormatFloat(x, 'g', -1, 64)
	case bool:
		if x {
			return "t"
		}
		return "f"
	case time.Time:
		return x.UTC().Format("2006-01-02 15:04:05")
	}
	return fmt.Sprint(v)
}

func clientFault(op string, code int, msg string) *wire.Fault {
	return &wire.Fault{FaultCode: "soapenv:Client", FaultString: msg, AXLCode: code, HasAXLCode: true, AXLMessage: msg, Request: op}
}

var (
	noTableRE  = regexp.MustCompile(`no such table: (\S+)`)
	noColumnRE = regexp.MustCompile(`no such column: (\S+)`)
	notNullRE  = regexp.MustCompile(`NOT NULL constraint failed: (\S+)`)
	uniqueRE   = regexp.MustCompile(`(?:UNIQUE|PRIMARY KEY) constraint failed: (\S+)`)
)

// sqlFault maps a SQLite error to the Informix error number and text AXL
// would report, keeping SQLite's message in parentheses for debugging.
func sqlFault(op string, err error) *wire.Fault {
	msg := err.Error()
	var se *sqlite.Error
	code := 0
	if errors.As(err, &se) {
		code = se.Code()
	}
	sub := func(re *regexp.Regexp) string {
		if m := re.FindStringSubmatch(msg); m != nil {
			return m[1]
		}
		return ""
	}
	var (
		ifx  int
		text string
	)
	switch {
	case code == sqlite3.SQLITE_CONSTRAINT_UNIQUE || code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY:
		ifx, text = -239, fmt.Sprintf("Could not insert new row - duplicate value in a UNIQUE INDEX column (Unique Index:%s).", sub(uniqueRE))
	case code == sqlite3.SQLITE_CONSTRAINT_NOTNULL:
		ifx, text = -391, fmt.Sprintf("Cannot insert a null into column (%s).", sub(notNullRE))
	case code == sqlite3.SQLITE_CONSTRAINT_CHECK:
		ifx, text = -530, "Check constraint failed."
	case strings.Contains(msg, "no such table"):
		ifx, text = -206, fmt.Sprintf("The specified table (%s) is not in the database.", sub(noTableRE))
	case strings.Contains(msg, "no such column"):
		ifx, text = -217, fmt.Sprintf("Column (%s) not found in any table in the query (or SLV is undefined).", sub(noColumnRE))
	case strings.Contains(msg, "syntax error") || strings.Contains(msg, "incomplete input") || strings.Contains(msg, "unrecognized token"):
		ifx, text = -201, "A syntax error has occurred."
	case code == sqlite3.SQLITE_AUTH || strings.Contains(msg, "not authorized"):
		// What executeSQLQuery answers for a statement that writes.
		ifx, text = -1, "executeSQLQuery runs SELECT statements only."
	default:
		ifx, text = -746, "SQL error."
	}
	text += " (" + msg + ")"
	return clientFault(op, ifx, text)
}
