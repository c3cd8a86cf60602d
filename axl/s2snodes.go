package axl

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"regexp"
	"strings"

	"github.com/xmppfed/xmppfed/axl/internal/wire"
)

// S2SNode is a row of IM and Presence's xmpps2snodes table, which lists the
// XCP components that handle server-to-server federation for the cluster.
// When federation moves to the Expressway edge, the core records each edge
// S2S component there, and IM and Presence's XCP router sends federated
// traffic to them.
type S2SNode struct {
	// PKID is the row's primary key, a lower-case UUID without braces.
	PKID string
	// CPID is the XCP component id, e.g. "cm-2_s2scp-1.eft-xwye-a-coluc-com"
	// (apparently <cm id>_s2scp-<n>.<edge FQDN with dashes>; treated as
	// opaque here).
	CPID string
}

// ListS2SNodes returns the rows of xmpps2snodes, ordered by cp_id, then
// pkid. It returns every row, including several with the same cp_id, which
// the table may hold (see EnsureS2SNode).
func (c *Client) ListS2SNodes(ctx context.Context) ([]S2SNode, error) {
	rows, err := c.Query(ctx, "SELECT pkid, cp_id FROM xmpps2snodes ORDER BY cp_id, pkid")
	if err != nil {
		return nil, err
	}
	nodes, err := s2sNodes(rows)
	if err != nil {
		return nil, c.wrap(wire.OpQuery, err)
	}
	return nodes, nil
}

// EnsureS2SNode makes sure xmpps2snodes has a row for cpID, inserting one
// with a new pkid if there is none. It returns the row and whether it was
// inserted. If there are several rows for cpID, it returns the one with
// the lowest pkid and inserts nothing.
//
// It is idempotent, but not atomic: it reads, then inserts. Whether IM and
// Presence's table has a unique index on cp_id is not documented. If it
// has one (axltest's has), a concurrent insert of the same cp_id fails with
// a duplicate-key fault and EnsureS2SNode returns the row the other writer
// stored. If it has none, two cores ensuring the same cp_id at the same
// moment can both insert, leaving two rows: ListS2SNodes shows them,
// EnsureS2SNode keeps working with the first, and RemoveS2SNode removes
// them all. Run one synchronisation per cluster at a time to avoid that.
//
// Changes to xmpps2snodes take effect on IM and Presence after its XCP
// Router restarts.
func (c *Client) EnsureS2SNode(ctx context.Context, cpID string) (S2SNode, bool, error) {
	if err := checkCPID(cpID); err != nil {
		return S2SNode{}, false, c.wrap(wire.OpUpdate, err)
	}
	if n, ok, err := c.findS2SNode(ctx, cpID); err != nil || ok {
		return n, false, err
	}
	n := S2SNode{PKID: NewPKID(), CPID: cpID}
	_, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", n.PKID, n.CPID)
	if errors.Is(err, ErrDuplicate) {
		if found, ok, ferr := c.findS2SNode(ctx, cpID); ferr == nil && ok {
			return found, false, nil
		}
	}
	if err != nil {
		return S2SNode{}, false, err
	}
	return n, true, nil
}

// RemoveS2SNode deletes the rows of xmpps2snodes for cpID, however many
// there are, and returns how many there were; 0 means there was nothing to
// remove.
func (c *Client) RemoveS2SNode(ctx context.Context, cpID string) (int, error) {
	if err := checkCPID(cpID); err != nil {
		return 0, c.wrap(wire.OpUpdate, err)
	}
	return c.Update(ctx, "DELETE FROM xmpps2snodes WHERE cp_id = ?", cpID)
}

// findS2SNode returns the row for cpID with the lowest pkid, if any.
func (c *Client) findS2SNode(ctx context.Context, cpID string) (S2SNode, bool, error) {
	rows, err := c.Query(ctx, "SELECT pkid, cp_id FROM xmpps2snodes WHERE cp_id = ? ORDER BY pkid", cpID)
	if err != nil {
		return S2SNode{}, false, err
	}
	nodes, err := s2sNodes(rows)
	if err != nil {
		return S2SNode{}, false, c.wrap(wire.OpQuery, err)
	}
	if len(nodes) == 0 {
		return S2SNode{}, false, nil
	}
	return nodes[0], true, nil
}

func s2sNodes(rows []Row) ([]S2SNode, error) {
	nodes := make([]S2SNode, 0, len(rows))
	for _, r := range rows {
		pkid, ok1 := r.Get("pkid")
		cpID, ok2 := r.Get("cp_id")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("xmpps2snodes row without pkid and cp_id columns: %s", r)
		}
		// Informix pads CHAR columns with blanks; compare as it does.
		nodes = append(nodes, S2SNode{PKID: strings.TrimRight(pkid, " "), CPID: strings.TrimRight(cpID, " ")})
	}
	return nodes, nil
}

// cpIDRE is the form of an XCP component id (spec notes §5). Values come
// from configuration, and Literal would quote anything safely; this is a
// second line of defence, and it catches typing errors before IM and
// Presence stores a component id its XCP router can never match.
var cpIDRE = regexp.MustCompile(`^[a-z0-9][a-z0-9._-]{0,127}$`)

// checkCPID refuses what cannot be a component id.
func checkCPID(cpID string) error {
	var reason string
	switch {
	case cpID == "":
		reason = "empty"
	case len(cpID) > 128:
		reason = fmt.Sprintf("%d bytes long", len(cpID))
	case strings.TrimSpace(cpID) != cpID:
		reason = "leading or trailing white space"
	case strings.ToLower(cpID) != cpID:
		reason = "upper-case letters (use the lower-case form)"
	case !cpIDRE.MatchString(cpID):
		reason = "characters other than a-z, 0-9, '.', '_' and '-', or not starting with a letter or digit"
	default:
		return nil
	}
	return &NodeError{CPID: cpID, Reason: reason}
}

// NewPKID returns a new random (version 4) UUID in the form IM and
// Presence uses for pkid columns: lower case, no braces.
func NewPKID() string {
	var b [16]byte
	// crypto/rand.Read never returns an error: it crashes the program
	// rather than return predictable bytes.
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40 // version 4
	b[8] = b[8]&0x3f | 0x80 // RFC 4122 variant
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
