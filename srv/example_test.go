package srv_test

import (
	"context"
	"fmt"
	"time"

	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/srv/srvtest"
)

func ExampleResolver_LookupServer() {
	// A loopback DNS server stands in for the real DNS here.
	dnsServer, err := srvtest.Start("", srvtest.MustParseZone(`
_xmpps-server._tcp.example.org. 3600 IN SRV 5  0 5270 xmpp.example.org.
_xmpp-server._tcp.example.org.  3600 IN SRV 10 0 5269 xmpp.example.org.
_xmpp-server._tcp.example.org.  3600 IN SRV 20 0 5269 backup.example.org.
`))
	if err != nil {
		panic(err)
	}
	defer dnsServer.Close()

	r := &srv.Resolver{Nameservers: []string{dnsServer.Addr()}, Timeout: time.Second}
	targets, err := r.LookupServer(context.Background(), "example.org")
	if err != nil {
		panic(err)
	}
	for _, t := range targets {
		fmt.Println(t)
	}

	res, err := r.Lookup(context.Background(), "example.org")
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Method, "cached:", res.Cached)
	// Output:
	// xmpp.example.org:5270 (direct TLS)
	// xmpp.example.org:5269
	// backup.example.org:5269
	// SRV cached: true
}

func ExampleResolver_SetStaticRoutes() {
	// Static routes bypass DNS SRV entirely, so this needs no nameserver.
	var r srv.Resolver
	r.SetStaticRoutes(map[string][]string{
		"Partner.Example": {"edge1.partner.example:5269", "[2001:db8::5]:5270", "edge2.partner.example"},
	})
	res, err := r.Lookup(context.Background(), "partner.example")
	if err != nil {
		panic(err)
	}
	fmt.Println(res.Method)
	for _, t := range res.Targets {
		fmt.Println(t.HostPort())
	}
	// Output:
	// static
	// edge1.partner.example:5269
	// [2001:db8::5]:5270
	// edge2.partner.example:5269
}

func ExampleValidateStaticRoutes() {
	err := srv.ValidateStaticRoutes(map[string][]string{
		"partner.example": {"edge.partner.example:xmpp"},
	})
	fmt.Println(err)
	// Output:
	// srv: static route for "partner.example": target "edge.partner.example:xmpp": port "xmpp" is not a number between 1 and 65535
}

func ExampleOrder() {
	// The records of srv.md §3.1, ordered with the draws 75, 0, 50.
	records := []srv.Record{
		{Priority: 10, Weight: 60, Port: 5269, Target: "a.example.net."},
		{Priority: 10, Weight: 30, Port: 5269, Target: "b.example.net."},
		{Priority: 10, Weight: 10, Port: 5269, Target: "c.example.net."},
		{Priority: 10, Weight: 0, Port: 5269, Target: "z.example.net."},
		{Priority: 20, Weight: 0, Port: 5269, Target: "backup.example.net."},
		{Priority: 5, Weight: 0, Port: 5270, Target: "primary.example.net."},
	}
	draws := []int{75, 0, 50}
	draw := func(n int) int {
		d := draws[0]
		draws = draws[1:]
		return d
	}
	for _, t := range srv.Order(records, draw) {
		fmt.Println(t)
	}
	// Output:
	// primary.example.net:5270
	// b.example.net:5269
	// z.example.net:5269
	// a.example.net:5269
	// c.example.net:5269
	// backup.example.net:5269
}

func ExampleNormalizeDomain() {
	fmt.Println(srv.NormalizeDomain("München.Example."))
	// Output:
	// xn--mnchen-3ya.example <nil>
}
