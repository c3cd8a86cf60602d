package axl

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"strings"
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

// ListS2SNodes returns the rows of xmpps2snodes, ordered by cp_id.
func (c *Client) ListS2SNodes(ctx context.Context) ([]S2SNode, error) {
	rows, err := c.Query(ctx, "SELECT pkid, cp_id FROM xmpps2snodes ORDER BY cp_id")
	if err != nil {
		return nil, err
	}
	return s2sNodes(rows)
}

// EnsureS2SNode makes sure xmpps2snodes has a row for cpID, inserting one
// with a new pkid if there is none. It returns the row and whether it was
// inserted. It is idempotent, and safe against a concurrent insert of the
// same cp_id: a duplicate-key fault makes it read the row the other writer
// stored. Changes to xmpps2snodes take effect on IM and Presence after its
// XCP Router restarts.
func (c *Client) EnsureS2SNode(ctx context.Context, cpID string) (S2SNode, bool, error) {
	if err := checkCPID(cpID); err != nil {
		return S2SNode{}, false, err
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

// RemoveS2SNode deletes the rows of xmpps2snodes for cpID and returns how
// many there were; 0 means there was nothing to remove.
func (c *Client) RemoveS2SNode(ctx context.Context, cpID string) (int, error) {
	if err := checkCPID(cpID); err != nil {
		return 0, err
	}
	return c.Update(ctx, "DELETE FROM xmpps2snodes WHERE cp_id = ?", cpID)
}

func (c *Client) findS2SNode(ctx context.Context, cpID string) (S2SNode, bool, error) {
	rows, err := c.Query(ctx, "SELECT pkid, cp_id FROM xmpps2snodes WHERE cp_id = ?", cpID)
	if err != nil {
		return S2SNode{}, false, err
	}
	nodes, err := s2sNodes(rows)
	if err != nil || len(nodes) == 0 {
		return S2SNode{}, false, err
	}
	return nodes[0], true, nil
}

func s2sNodes(rows []Row) ([]S2SNode, error) {
	nodes := make([]S2SNode, 0, len(rows))
	for _, r := range rows {
		pkid, ok1 := r.Get("pkid")
		cpID, ok2 := r.Get("cp_id")
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("axl: xmpps2snodes row without pkid and cp_id columns: %s", r)
		}
		// Informix pads CHAR columns with blanks; compare as it does.
		nodes = append(nodes, S2SNode{PKID: strings.TrimRight(pkid, " "), CPID: strings.TrimRight(cpID, " ")})
	}
	return nodes, nil
}

// checkCPID refuses what Informix could not tell apart from another value
// (CHAR comparison ignores trailing blanks) or that cannot be a component
// id. Anything else is left to Literal.
func checkCPID(cpID string) error {
	switch {
	case cpID == "":
		return fmt.Errorf("axl: %w: empty", ErrInvalidNode)
	case strings.TrimSpace(cpID) != cpID:
		return fmt.Errorf("axl: %w: %q has leading or trailing spaces", ErrInvalidNode, cpID)
	}
	return nil
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
