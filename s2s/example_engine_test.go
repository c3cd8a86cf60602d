package s2s_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"time"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Two federating servers, each an s2s.Server with its Pool, find each other
// through static routes (no DNS). a.example's Pool sets up a stream on the
// first Send; b.example's Server verifies the dialback key with
// a.example's authoritative role, hands the message to its Handler, and
// answers a ping to its domain by itself.
func ExampleServer() {
	ctx := context.Background()
	type node struct {
		srv  *s2s.Server
		ln   net.Listener
		got  chan *s2s.Stanza
		done chan struct{}
	}
	listen := func() net.Listener {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			panic(err)
		}
		return ln
	}
	lnA, lnB := listen(), listen()
	routes := map[string][]string{"a.example": {lnA.Addr().String()}, "b.example": {lnB.Addr().String()}}
	start := func(domain string, ln net.Listener) *node {
		policy, err := s2s.NewPolicy(s2s.PolicyConfig{Security: tlsmode.NoTLS, StaticRoutes: routes})
		if err != nil {
			panic(err)
		}
		n := &node{ln: ln, got: make(chan *s2s.Stanza, 10), done: make(chan struct{})}
		n.srv = &s2s.Server{
			Endpoint: &s2s.Endpoint{
				Domains: []string{domain},
				Keys:    dialback.Generator{Secret: []byte("secret of " + domain)},
				Policy:  policy,
			},
			Handler: s2s.HandlerFunc(func(_ context.Context, st *s2s.Stanza) { n.got <- st }),
		}
		go func() { defer close(n.done); n.srv.Serve(ln) }()
		return n
	}
	a, b := start("a.example", lnA), start("b.example", lnB)
	defer func() {
		for _, n := range []*node{a, b} {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			n.srv.Shutdown(ctx)
			cancel()
			<-n.done
		}
	}()

	pool, _ := a.srv.OutboundPool()
	msg, _ := s2s.ParseStanza([]byte(`<message from='juliet@a.example' to='romeo@b.example'><body>Art thou not Romeo?</body></message>`))
	if err := pool.Send(ctx, msg); err != nil {
		panic(err)
	}
	fmt.Println(string((<-b.got).XML))

	ping, _ := s2s.ParseStanza([]byte(`<iq type='get' id='p1' from='juliet@a.example/balcony' to='b.example'><ping xmlns='urn:xmpp:ping'/></iq>`))
	pool.Send(ctx, ping)
	pong := <-a.got
	fmt.Println(pong.Type, pong.ID, "from", pong.From)

	for _, i := range a.srv.Status() {
		fmt.Println(i.Direction, i.Local, i.Remote, i.State, i.Auth)
	}
	// Output:
	// <message from='juliet@a.example' to='romeo@b.example'><body>Art thou not Romeo?</body></message>
	// result p1 from b.example
	// outbound a.example b.example CONNECTED dialback
	// inbound a.example b.example CONNECTED dialback
}

// A Policy is Expressway's federation settings; Update changes them while
// the server runs.
func ExamplePolicy() {
	policy, err := s2s.NewPolicy(s2s.PolicyConfig{
		Privacy:      s2s.PrivacyAllowList,
		Allow:        []string{"partner.example"},
		StaticRoutes: map[string][]string{"routed.example": {"192.0.2.10:5269"}},
	})
	if err != nil {
		panic(err)
	}
	for _, d := range []string{"partner.example", "routed.example", "other.example"} {
		fmt.Println(d, policy.Check(d) == nil)
	}

	cfg := policy.Config()
	cfg.Privacy = s2s.PrivacyDenyList
	cfg.Deny = []string{"spam.example"}
	if err := policy.Update(cfg); err != nil {
		panic(err)
	}
	err = policy.Check("spam.example")
	fmt.Println(errors.Is(err, s2s.ErrDenied), err)
	// Output:
	// partner.example true
	// routed.example true
	// other.example false
	// true remote domain denied by the federation privacy mode: spam.example is on the deny list (privacy mode: deny list)
}

// Backoff spaces attempts to an unreachable domain: a random wait in
// [d/2, d], d doubling from Min up to Max.
func ExampleBackoff() {
	b := s2s.Backoff{Min: time.Second, Max: 8 * time.Second}
	for n := 1; n <= 5; n++ {
		d := b.Delay(n)
		lo := min(time.Second<<(n-1), 8*time.Second) / 2
		fmt.Println(n, d >= lo && d <= 2*lo)
	}
	// Output:
	// 1 true
	// 2 true
	// 3 true
	// 4 true
	// 5 true
}
