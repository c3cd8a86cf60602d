package s2s_test

import (
	"context"
	"fmt"
	"net"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/srv/srvtest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Two servers federate over loopback: a.example dials b.example, which
// verifies the dialback key with a.example's authoritative server and then
// accepts a message. (No TLS here to keep the example short; see
// tlsmode.Mode for the other security modes.)
func Example() {
	ctx := context.Background()
	dns, err := srvtest.Start("127.0.0.1:0", srvtest.NewZone())
	if err != nil {
		panic(err)
	}
	defer dns.Close()

	received := make(chan *s2s.Stanza, 1)
	serve := func(ep *s2s.Endpoint, domain string) func() {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		port := ln.Addr().(*net.TCPAddr).Port
		dns.Zone().Add(
			fmt.Sprintf("_xmpp-server._tcp.%s. 300 IN SRV 0 0 %d xmpp.%s.", domain, port, domain),
			fmt.Sprintf("xmpp.%s. 300 IN A 127.0.0.1", domain))
		ctx, cancel := context.WithCancel(ctx)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go ep.ServeConn(ctx, c, s2s.HandlerFunc(func(_ context.Context, st *s2s.Stanza) { received <- st }))
			}
		}()
		return func() { cancel(); ln.Close(); <-done }
	}
	endpoint := func(domain string) *s2s.Endpoint {
		return &s2s.Endpoint{
			Domains:  []string{domain},
			Keys:     dialback.Generator{Secret: []byte("secret of " + domain)},
			Security: tlsmode.NoTLS,
			Resolver: dns.Resolver(),
		}
	}
	a, b := endpoint("a.example"), endpoint("b.example")
	defer serve(a, "a.example")()
	defer serve(b, "b.example")()

	s, err := a.Dial(ctx, "a.example", "b.example")
	if err != nil {
		panic(err)
	}
	defer s.Close()
	fmt.Println("authorized by", s.Info().Auth)

	msg, _ := s2s.ParseStanza([]byte(`<message from='juliet@a.example' to='romeo@b.example'><body>Art thou not Romeo?</body></message>`))
	if err := s.Send(ctx, msg); err != nil {
		panic(err)
	}
	got := <-received
	fmt.Println(got.To, string(got.XML))
	// Output:
	// authorized by dialback
	// romeo@b.example <message from='juliet@a.example' to='romeo@b.example'><body>Art thou not Romeo?</body></message>
}
