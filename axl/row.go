package axl

import (
	"strconv"
	"strings"
)

// Row is one row of an executeSQLQuery result, its columns in the order the
// server sent them. Column names are as AXL reports them: Informix's lower
// case, a computed column under its alias (always write SELECT count(*) AS n,
// so the name is predictable). AXL sends NULL and the empty string alike,
// as an empty element; both read as "".
type Row struct {
	names, values []string
}

// NewRow builds a Row, for tests of code that consumes rows. names and
// values must have the same length.
func NewRow(names, values []string) Row {
	if len(names) != len(values) {
		panic("axl: NewRow: names and values differ in length")
	}
	return Row{names: append([]string(nil), names...), values: append([]string(nil), values...)}
}

// Columns returns the column names in order.
func (r Row) Columns() []string { return append([]string(nil), r.names...) }

// Values returns the values in column order.
func (r Row) Values() []string { return append([]string(nil), r.values...) }

// Len returns the number of columns.
func (r Row) Len() int { return len(r.names) }

// Get returns the value of the named column, and whether the row has it.
// Names match exactly first, then ignoring case, since Informix names are
// case-insensitive; if a name repeats, the first one wins.
func (r Row) Get(name string) (string, bool) {
	for i, n := range r.names {
		if n == name {
			return r.values[i], true
		}
	}
	for i, n := range r.names {
		if strings.EqualFold(n, name) {
			return r.values[i], true
		}
	}
	return "", false
}

// String formats the row as name=value pairs, values quoted, for logs.
func (r Row) String() string {
	var b strings.Builder
	for i, n := range r.names {
		if i > 0 {
			b.WriteByte(' ')
		}
		b.WriteString(n)
		b.WriteByte('=')
		b.WriteString(strconv.Quote(r.values[i]))
	}
	return b.String()
}
