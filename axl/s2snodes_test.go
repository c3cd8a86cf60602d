package axl_test

import (
	"io"
	"net/http"
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

// Several cores ensuring the same node at once store one row, and exactly
// one of them reports creating it.
func TestEnsureS2SNodeConcurrent(t *testing.T) {
	_, c := newServer(t, axltest.Config{})
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
	for _, id := range []string{"", " x", "x ", "\tx"} {
		_, _, err := c.EnsureS2SNode(ctx, id)
		assert.ErrorIs(t, err, axl.ErrInvalidNode, "%q", id)
		_, err = c.RemoveS2SNode(ctx, id)
		assert.ErrorIs(t, err, axl.ErrInvalidNode, "%q", id)
	}
	_, _, err := c.EnsureS2SNode(ctx, "a\nb")
	assert.ErrorIs(t, err, axl.ErrUnsafeValue)
	assert.Empty(t, s.Calls(), "invalid ids are refused before any request")

	// A server answering without the expected columns is reported.
	raw := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return><row><pkid>1</pkid></row></return></n:executeSQLQueryResponse></s:Body></s:Envelope>`)
	})
	_, err = raw.ListS2SNodes(ctx)
	assert.ErrorContains(t, err, `xmpps2snodes row without pkid and cp_id columns: pkid="1"`)
}
