package main

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/srv/srvtest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// inbox is a Handler that collects stanzas.
type inbox chan *s2s.Stanza

func (b inbox) ServeStanza(_ context.Context, st *s2s.Stanza) {
	select {
	case b <- st:
	default: // the demo reads what it expects; never block a stream
	}
}

func (b inbox) next(what string) (*s2s.Stanza, error) {
	select {
	case st := <-b:
		return st, nil
	case <-time.After(10 * time.Second):
		return nil, fmt.Errorf("%s: nothing arrived", what)
	}
}

// engine runs the federation engine as an edge embeds it: a Server and
// its Pool per domain, a runtime Policy (security mode, privacy mode),
// messages both ways, a ping answered by the server itself, bounces for an
// unreachable domain and for one the privacy mode denies after a runtime
// change, and the federation status page.
func engine(ctx context.Context, log *slog.Logger, out io.Writer, dns *srvtest.Server) error {
	section(out, "5. The federation engine (Server, Pool, Policy, Status)")
	ca, err := newDemoCA()
	if err != nil {
		return err
	}
	type edge struct {
		srv    *s2s.Server
		policy *s2s.Policy
		in     inbox
	}
	var wg sync.WaitGroup
	var edges []*edge
	defer func() {
		for _, e := range edges {
			sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			e.srv.Shutdown(sctx)
			cancel()
		}
		wg.Wait()
	}()
	start := func(domain string) (*edge, error) {
		cert, err := ca.issue(domain)
		if err != nil {
			return nil, err
		}
		policy, err := s2s.NewPolicy(s2s.PolicyConfig{Security: tlsmode.Required})
		if err != nil {
			return nil, err
		}
		e := &edge{policy: policy, in: make(inbox, 16)}
		e.srv = &s2s.Server{
			Endpoint: &s2s.Endpoint{
				Domains:  []string{domain},
				Keys:     dialback.Generator{Secret: []byte("dialback secret of " + domain)},
				TLS:      &tls.Config{Certificates: []tls.Certificate{cert}},
				Roots:    ca.pool,
				Resolver: dns.Resolver(),
				Logger:   log.With("node", domain),
				Policy:   policy,
			},
			Handler: e.in,
		}
		ln, err := listenPublished(dns, domain, "edge")
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() { defer wg.Done(); e.srv.Serve(ln) }()
		edges = append(edges, e)
		return e, nil
	}
	rome, err := start("rome.example")
	if err != nil {
		return err
	}
	mantua, err := start("mantua.example")
	if err != nil {
		return err
	}
	send := func(e *edge, xml string) error {
		st, err := s2s.ParseStanza([]byte(xml))
		if err != nil {
			return err
		}
		pool, err := e.srv.OutboundPool()
		if err != nil {
			return err
		}
		return pool.Send(ctx, st)
	}

	if err := send(rome, "<message type='chat' id='m1' from='juliet@rome.example/balcony' to='romeo@mantua.example'><body>Come, gentle night</body></message>"); err != nil {
		return err
	}
	st, err := mantua.in.next("message to mantua")
	if err != nil {
		return err
	}
	fmt.Fprintf(out, "   mantua.example Handler got: %s\n", st.XML)
	if err := send(mantua, "<message type='chat' id='m2' from='romeo@mantua.example' to='juliet@rome.example/balcony'><body>I come, I come</body></message>"); err != nil {
		return err
	}
	if st, err = rome.in.next("reply to rome"); err != nil {
		return err
	}
	fmt.Fprintf(out, "   rome.example Handler got:   %s\n", st.XML)

	if err := send(rome, "<iq type='get' id='ping1' from='juliet@rome.example/balcony' to='mantua.example'><ping xmlns='urn:xmpp:ping'/></iq>"); err != nil {
		return err
	}
	if st, err = rome.in.next("pong"); err != nil {
		return err
	}
	fmt.Fprintf(out, "   XEP-0199 ping to mantua.example answered by its Server: %s\n", st.XML)

	// closed.example publishes "no service" (SRV target "."): the Pool
	// bounces instead of dropping.
	if err := send(rome, "<message id='m3' from='juliet@rome.example' to='nurse@closed.example'><body>Hello?</body></message>"); err != nil {
		return err
	}
	if st, err = rome.in.next("bounce"); err != nil {
		return err
	}
	fmt.Fprintf(out, "   bounced: %s\n", st.XML)

	// The operator switches rome.example's privacy mode to a deny list
	// naming mantua.example: the stream closes and sends bounce.
	cfg := rome.policy.Config()
	cfg.Privacy, cfg.Deny = s2s.PrivacyDenyList, []string{"mantua.example"}
	if err := rome.policy.Update(cfg); err != nil {
		return err
	}
	fmt.Fprintln(out, "   rome.example privacy mode → deny list [mantua.example]")
	if err := send(rome, "<message id='m4' from='juliet@rome.example' to='romeo@mantua.example'><body>Banished?</body></message>"); err != nil {
		return err
	}
	if st, err = rome.in.next("policy bounce"); err != nil {
		return err
	}
	fmt.Fprintf(out, "   bounced: %s\n", st.XML)
	cfg.Privacy = s2s.PrivacyOff
	if err := rome.policy.Update(cfg); err != nil {
		return err
	}

	if err := send(rome, "<message id='m5' from='juliet@rome.example' to='romeo@mantua.example'><body>Privacy off again</body></message>"); err != nil {
		return err
	}
	if _, err = mantua.in.next("message after privacy off"); err != nil {
		return err
	}
	fmt.Fprintln(out, "\n   Federation status of rome.example:")
	fmt.Fprintf(out, "   %-9s %-15s %-9s %-8s %-14s %6s %6s\n", "DIRECTION", "REMOTE", "STATE", "TLS", "AUTH", "IN", "OUT")
	for _, i := range rome.srv.Status() {
		fmt.Fprintf(out, "   %-9s %-15s %-9s %-8s %-14s %6d %6d\n", i.Direction, i.Remote, i.State, i.TLSVersionName(), i.Auth, i.StanzasIn, i.StanzasOut)
	}
	c := rome.srv.Counters()
	fmt.Fprintf(out, "   counters: streams opened in=%d out=%d, stanzas in=%d out=%d, bounced=%s\n",
		c.InboundOpened, c.OutboundOpened, c.StanzasIn, c.StanzasOut, formatCounts(c.Bounced))
	return nil
}

func formatCounts(m map[string]uint64) string {
	var parts []string
	for _, k := range []string{"remote-server-not-found", "remote-server-timeout", "service-unavailable", "resource-constraint"} {
		if m[k] > 0 {
			parts = append(parts, fmt.Sprintf("%s:%d", k, m[k]))
		}
	}
	return "[" + strings.Join(parts, " ") + "]"
}
