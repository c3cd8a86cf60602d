package axl_test

import (
	"context"
	"errors"
	"fmt"
	"log"

	"github.com/xmppfed/xmppfed/axl"
	"github.com/xmppfed/xmppfed/axl/axltest"
)

// imp starts an IM and Presence stand-in holding one S2S node, and returns
// it with a client for it. Against a real node the client would be:
//
//	c := &axl.Client{
//		URL:      "https://imp.example.com:8443/axl/",
//		Username: "axladmin", Password: password,
//		TLSConfig: axl.PinCertificates(impTomcatCert),
//	}
func imp() (*axltest.Server, *axl.Client) {
	s, err := axltest.Start(axltest.Config{Strict: true, Nodes: []axl.S2SNode{
		{PKID: "055c13d9-943d-459d-a3c6-af1d1176936d", CPID: "cm-2_s2scp-1.eft-xwye-a-coluc-com"},
	}})
	if err != nil {
		log.Fatal(err)
	}
	return s, s.Client()
}

func ExampleClient_Query() {
	s, c := imp()
	defer s.Close()

	rows, err := c.Query(context.Background(), "SELECT pkid, cp_id FROM xmpps2snodes WHERE cp_id = ?", "cm-2_s2scp-1.eft-xwye-a-coluc-com")
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range rows {
		cpID, _ := r.Get("cp_id")
		fmt.Println(r.Columns(), cpID)
	}
	// Output:
	// [pkid cp_id] cm-2_s2scp-1.eft-xwye-a-coluc-com
}

func ExampleClient_Update() {
	s, c := imp()
	defer s.Close()
	ctx := context.Background()

	// The hostile value is stored as text, like any other.
	n, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", axl.NewPKID(), "'; drop table xmpps2snodes; --")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("inserted", n)

	n, err = c.Update(ctx, "DELETE FROM xmpps2snodes WHERE cp_id <> ?", "cm-2_s2scp-1.eft-xwye-a-coluc-com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("deleted", n)
	// Output:
	// inserted 1
	// deleted 1
}

// Wrong credentials on the core are the classic cause of one-way
// federation.
func ExampleClient_Update_unauthorized() {
	s, c := imp()
	defer s.Close()
	c.Password = "not the password"

	_, err := c.Update(context.Background(), "DELETE FROM xmpps2snodes WHERE cp_id = ?", "x")
	fmt.Println(errors.Is(err, axl.ErrUnauthorized))
	// Output:
	// true
}

func ExampleClient_ListS2SNodes() {
	s, c := imp()
	defer s.Close()

	nodes, err := c.ListS2SNodes(context.Background())
	if err != nil {
		log.Fatal(err)
	}
	for _, n := range nodes {
		fmt.Println(n.PKID, n.CPID)
	}
	// Output:
	// 055c13d9-943d-459d-a3c6-af1d1176936d cm-2_s2scp-1.eft-xwye-a-coluc-com
}

func ExampleClient_EnsureS2SNode() {
	s, c := imp()
	defer s.Close()
	ctx := context.Background()

	for range 2 {
		node, created, err := c.EnsureS2SNode(ctx, "cm-1_s2scp-1.edge1-example-com")
		if err != nil {
			log.Fatal(err)
		}
		fmt.Println(node.CPID, "created:", created)
	}
	// Output:
	// cm-1_s2scp-1.edge1-example-com created: true
	// cm-1_s2scp-1.edge1-example-com created: false
}

func ExampleClient_RemoveS2SNode() {
	s, c := imp()
	defer s.Close()

	n, err := c.RemoveS2SNode(context.Background(), "cm-2_s2scp-1.eft-xwye-a-coluc-com")
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("removed", n)
	// Output:
	// removed 1
}

func ExampleLiteral() {
	for _, v := range []any{"O'Brien", nil, true, -1, "line\nbreak"} {
		lit, err := axl.Literal(v)
		fmt.Println(lit, err)
	}
	// Output:
	// 'O''Brien' <nil>
	// NULL <nil>
	// 't' <nil>
	// (-1) <nil>
	//  axl: string value: value cannot be written safely as an Informix SQL literal: control or non-character U+000A at byte 4 (NUL, tab, CR, LF and the like are refused: XML cannot carry NUL and Informix rejects newlines in literals unless ALLOW_NEWLINE is set)
}

func ExampleBind() {
	stmt, err := axl.Bind("SELECT pkid FROM xmpps2snodes WHERE cp_id = ? -- is it?", "x'y")
	fmt.Println(stmt, err)
	// Output:
	// SELECT pkid FROM xmpps2snodes WHERE cp_id = 'x''y' -- is it? <nil>
}
