package axl_test

import (
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/axl"
	"github.com/xmppfed/xmppfed/axl/axltest"
)

var uuidRE = `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`

func TestNewPKID(t *testing.T) {
	seen := map[string]bool{}
	for range 100 {
		id := axl.NewPKID()
		assert.Regexp(t, uuidRE, id)
		assert.False(t, seen[id])
		seen[id] = true
	}
}

func TestS2SNodes(t *testing.T) {
	existing := axl.S2SNode{PKID: "055c13d9-943d-459d-a3c6-af1d1176936d", CPID: "cm-2_s2scp-1.eft-xwye-a-coluc-com"}
	s, c := newServer(t, axltest.Config{Nodes: []axl.S2SNode{existing}})
	ctx := ctxT(t)

	nodes, err := c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{existing}, nodes)

	// Ensuring an existing node changes nothing.
	n, created, err := c.EnsureS2SNode(ctx, existing.CPID)
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, existing, n)

	// A new one is inserted once with a fresh pkid.
	n, created, err = c.EnsureS2SNode(ctx, "cm-1_s2scp-1.exp-e2-example-com")
	require.NoError(t, err)
	assert.True(t, created)
	assert.Regexp(t, uuidRE, n.PKID)
	again, created, err := c.EnsureS2SNode(ctx, "cm-1_s2scp-1.exp-e2-example-com")
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, n, again)

	nodes, err = c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{n, existing}, nodes, "ordered by cp_id")

	removed, err := c.RemoveS2SNode(ctx, existing.CPID)
	require.NoError(t, err)
	assert.Equal(t, 1, removed)
	removed, err = c.RemoveS2SNode(ctx, existing.CPID)
	require.NoError(t, err)
	assert.Zero(t, removed)

	nodes, err = c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{n}, nodes)

	var updates []string
	for _, call := range s.Calls() {
		if call.Function == "executeSQLUpdate" {
			updates = append(updates, call.SQL)
		}
	}
	assert.Equal(t, []string{
		"INSERT INTO xmpps2snodes (pkid, cp_id) VALUES ('" + n.PKID + "', 'cm-1_s2scp-1.exp-e2-example-com')",
		"DELETE FROM xmpps2snodes WHERE cp_id = 'cm-2_s2scp-1.eft-xwye-a-coluc-com'",
		"DELETE FROM xmpps2snodes WHERE cp_id = 'cm-2_s2scp-1.eft-xwye-a-coluc-com'",
	}, updates)
}

// With axltest's unique index on cp_id, several cores ensuring the same
// node at once store one row, and exactly one of them reports creating it:
// the losers' inserts fail with -239 and they return the winner's row.
// This proves the duplicate-key path, not that IM and Presence has such an
// index (see TestS2SNodesDuplicates for a table without it).
func TestEnsureS2SNodeConcurrent(t *testing.T) {
	_, c := newServer(t, axltest.Config{})
	c.MaxConcurrent = -1 // let the requests interleave
	ctx := ctxT(t)
	const n = 8
	var (
		wg      sync.WaitGroup
		mu      sync.Mutex
		created int
		pkids   = map[string]bool{}
	)
	for range n {
		wg.Go(func() {
			node, ok, err := c.EnsureS2SNode(ctx, "cm-1_s2scp-1.edge-example-com")
			if !assert.NoError(t, err) {
				return
			}
			mu.Lock()
			defer mu.Unlock()
			pkids[node.PKID] = true
			if ok {
				created++
			}
		})
	}
	wg.Wait()
	assert.Equal(t, 1, created)
	assert.Len(t, pkids, 1, "every caller sees the stored row")
	nodes, err := c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Len(t, nodes, 1)
}

// IM and Presence's table may lack a unique index on cp_id, and hold
// several rows for one: List shows them all, Ensure uses the one with the
// lowest pkid without inserting, Remove deletes them all.
func TestS2SNodesDuplicates(t *testing.T) {
	s, c := newServer(t, axltest.Config{})
	ctx := ctxT(t)
	db := s.DB()
	_, err := db.Exec("DROP TABLE xmpps2snodes")
	require.NoError(t, err)
	_, err = db.Exec("CREATE TABLE xmpps2snodes (pkid VARCHAR(36) NOT NULL PRIMARY KEY, cp_id VARCHAR(128) NOT NULL)")
	require.NoError(t, err)
	const id = "cm-1_s2scp-1.edge-example-com"
	for _, pkid := range []string{"b0000000-0000-4000-8000-000000000000", "a0000000-0000-4000-8000-000000000000", "c0000000-0000-4000-8000-000000000000"} {
		cp := id
		if pkid[0] == 'c' {
			cp = "cm-1_s2scp-1.other-example-com"
		}
		_, err = db.Exec("INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", pkid, cp)
		require.NoError(t, err)
	}

	nodes, err := c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{
		{PKID: "a0000000-0000-4000-8000-000000000000", CPID: id},
		{PKID: "b0000000-0000-4000-8000-000000000000", CPID: id},
		{PKID: "c0000000-0000-4000-8000-000000000000", CPID: "cm-1_s2scp-1.other-example-com"},
	}, nodes)

	before := len(s.Calls())
	n, created, err := c.EnsureS2SNode(ctx, id)
	require.NoError(t, err)
	assert.False(t, created)
	assert.Equal(t, axl.S2SNode{PKID: "a0000000-0000-4000-8000-000000000000", CPID: id}, n)
	for _, call := range s.Calls()[before:] {
		assert.Equal(t, "executeSQLQuery", call.Function, "nothing inserted")
	}

	removed, err := c.RemoveS2SNode(ctx, id)
	require.NoError(t, err)
	assert.Equal(t, 2, removed)
	nodes, err = c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{{PKID: "c0000000-0000-4000-8000-000000000000", CPID: "cm-1_s2scp-1.other-example-com"}}, nodes)
}

func TestS2SNodesPaddedColumns(t *testing.T) {
	// Informix CHAR columns come back padded with blanks.
	_, c := newServer(t, axltest.Config{Nodes: []axl.S2SNode{{PKID: "p  ", CPID: "cm-1_s2scp-1.a   "}}})
	nodes, err := c.ListS2SNodes(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{{PKID: "p", CPID: "cm-1_s2scp-1.a"}}, nodes)
}

func TestS2SNodesInvalid(t *testing.T) {
	s, c := newServer(t, axltest.Config{})
	ctx := ctxT(t)
	for _, tt := range []struct{ id, reason string }{
		{"", "empty"},
		{" x", "white space"},
		{"x ", "white space"},
		{"\tx", "white space"},
		{"a\nb", "characters other than"},
		{"Cm-1_s2scp-1.edge", "upper-case"},
		{"-cm-1", "not starting with a letter or digit"},
		{".cm-1", "not starting with a letter or digit"},
		{"cm 1", "characters other than"},
		{"cm-1/s2s", "characters other than"},
		{"zürich", "characters other than"},
		{"'; drop table xmpps2snodes; --", "characters other than"},
		{"x'); DROP TABLE xmpps2snodes; --", "upper-case"},
		{strings.Repeat("a", 129), "129 bytes long"},
	} {
		_, _, err := c.EnsureS2SNode(ctx, tt.id)
		require.ErrorIs(t, err, axl.ErrInvalidNode, "%q", tt.id)
		var ne *axl.NodeError
		require.ErrorAs(t, err, &ne, "%q", tt.id)
		assert.Equal(t, tt.id, ne.CPID)
		assert.Contains(t, ne.Reason, tt.reason, "%q", tt.id)
		assert.Contains(t, err.Error(), "check the Expressway-E node names configured on the core")
		var ae *axl.Error
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, "executeSQLUpdate", ae.Function)
		assert.Equal(t, s.URL(), ae.URL)

		_, err = c.RemoveS2SNode(ctx, tt.id)
		assert.ErrorIs(t, err, axl.ErrInvalidNode, "%q", tt.id)
	}
	for _, id := range []string{"a", "0", strings.Repeat("a", 128), "cm-2_s2scp-1.eft-xwye-a-coluc-com", "x..y__z--"} {
		_, err := c.RemoveS2SNode(ctx, id)
		assert.NoError(t, err, id)
	}
	assert.Len(t, s.Calls(), 5, "invalid ids are refused before any request")

	// A server answering without the expected columns is reported.
	raw := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return><row><pkid>1</pkid></row></return></n:executeSQLQueryResponse></s:Body></s:Envelope>`)
	})
	_, err := raw.ListS2SNodes(ctx)
	assert.ErrorContains(t, err, `xmpps2snodes row without pkid and cp_id columns: pkid="1"`)
	var ae *axl.Error
	assert.ErrorAs(t, err, &ae)
}

// The helpers refuse the hostile value, but Query and Update still
// store and read it back verbatim (TestHostileValues): the check is a
// second line of defence, not the quoting.
func TestS2SNodesHostileThroughUpdate(t *testing.T) {
	_, c := newServer(t, axltest.Config{})
	ctx := ctxT(t)
	const hostile = "'; drop table xmpps2snodes; --"
	_, _, err := c.EnsureS2SNode(ctx, hostile)
	require.ErrorIs(t, err, axl.ErrInvalidNode)
	n, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", axl.NewPKID(), hostile)
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	nodes, err := c.ListS2SNodes(ctx)
	require.NoError(t, err)
	require.Len(t, nodes, 1)
	assert.Equal(t, hostile, nodes[0].CPID)
}
