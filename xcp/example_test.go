package xcp_test

import (
	"context"
	"fmt"
	"net"
	"time"

	"mellium.im/xmpp/stanza"

	"github.com/xmppfed/xmppfed/xcp"
)

// The handshake of XEP-0114's example: stream ID 3BF96D32, secret "test".
func ExampleHandshake() {
	fmt.Println(xcp.Handshake("3BF96D32", "test"))
	// Output: aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e
}

// A core router with the edge's S2S component as default route and the
// IM&P link for the users' domain; both components dial the router here.
func ExampleRouter() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	router := &xcp.Router{
		Components: []xcp.Component{
			{Name: "s2s-1.edge-1.example.com", Secret: "s2s-secret-0123456789", DefaultRoute: true},
			{Name: "imp.vngtp.lab", Secret: "imp-secret-0123456789", Domains: []string{"vngtp.lab"}},
		},
		Plaintext: true, // a trusted test network; use TLSConfig otherwise
	}
	go router.Serve(ln)
	defer router.Close()

	got := make(chan xcp.Stanza, 1)
	edge := &xcp.Link{
		Name: "s2s-1.edge-1.example.com", Secret: "s2s-secret-0123456789",
		Addr: ln.Addr().String(), Plaintext: true,
		Handler: xcp.HandlerFunc(func(_ context.Context, st xcp.Stanza) { got <- st }),
	}
	imp := &xcp.Link{
		Name: "imp.vngtp.lab", Secret: "imp-secret-0123456789",
		Addr: ln.Addr().String(), Plaintext: true,
	}
	for _, l := range []*xcp.Link{edge, imp} {
		if err := l.Start(); err != nil {
			panic(err)
		}
		defer l.Close()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := imp.Ready(ctx); err != nil {
		panic(err)
	}
	if err := edge.Ready(ctx); err != nil {
		panic(err)
	}

	// A local user writes to a federated domain: it goes to the edge.
	st, err := xcp.ParseStanza([]byte(`<message from='bob@vngtp.lab/desk' to='alice@coluc.com' type='chat'><body>hi</body></message>`))
	if err != nil {
		panic(err)
	}
	if err := imp.Send(ctx, st); err != nil {
		panic(err)
	}
	fmt.Println((<-got).String())
	for _, r := range router.Routes() {
		fmt.Println(r.Domain, "->", r.Component)
	}
	// Output:
	// <message from='bob@vngtp.lab/desk' to='alice@coluc.com' type='chat'><body>hi</body></message>
	// * -> s2s-1.edge-1.example.com
	// imp.vngtp.lab -> imp.vngtp.lab
	// s2s-1.edge-1.example.com -> s2s-1.edge-1.example.com
	// vngtp.lab -> imp.vngtp.lab
}

// The Expressway shape: the edge's Link waits on 7400 in the DMZ and the
// core's router dials it (jabber:component:connect).
func ExampleLink_Serve() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	edge := &xcp.Link{Name: "s2s-1.edge-1.example.com", Secret: "s2s-secret-0123456789", Plaintext: true}
	go edge.Serve(ln)
	defer edge.Close()

	core := &xcp.Router{
		Components: []xcp.Component{{
			Name: "s2s-1.edge-1.example.com", Secret: "s2s-secret-0123456789",
			DefaultRoute: true, Addr: ln.Addr().String(),
		}},
		Plaintext: true,
	}
	if err := core.Start(); err != nil {
		panic(err)
	}
	defer core.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := core.Ready(ctx, "s2s-1.edge-1.example.com"); err != nil {
		panic(err)
	}
	for _, r := range core.Routes() {
		fmt.Println(r.Domain, r.Component, "dialled by the router:", r.Dialed)
	}
	// Output:
	// * s2s-1.edge-1.example.com dialled by the router: true
	// s2s-1.edge-1.example.com s2s-1.edge-1.example.com dialled by the router: true
}

// Building a stanza error for a stanza that cannot be delivered.
func ExampleStanza_ErrorReply() {
	st, _ := xcp.ParseStanza([]byte(`<iq type='get' id='v1' from='alice@coluc.com/x' to='bob@vngtp.lab/desk'><query xmlns='jabber:iq:version'/></iq>`))
	reply, ok := st.ErrorReply(stanza.Error{Type: stanza.Cancel, Condition: stanza.ServiceUnavailable})
	fmt.Println(ok)
	fmt.Println(reply)
	// Output:
	// true
	// <iq from='bob@vngtp.lab/desk' to='alice@coluc.com/x' type='error' id='v1'><error type='cancel'><service-unavailable xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></iq>
}
