package s2s_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/srv/srvtest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// logBuffer collects log output for assertions and for failure reports.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// testNet is a DNS zone, a CA and a log shared by the nodes of one test.
type testNet struct {
	t   testing.TB
	ca  *testpki.CA
	dns *srvtest.Server
	log *logBuffer
}

func newTestNet(t testing.TB) *testNet {
	t.Helper()
	n := &testNet{t: t, ca: testpki.NewCA(t), dns: srvtest.New(t, ""), log: &logBuffer{}}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("log:\n%s", n.log.String())
		}
	})
	return n
}

// resolver asks the test DNS, patiently (-race slows everything) and never
// falling back to A records: a missing SRV record is a test bug.
func (n *testNet) resolver() *srv.Resolver {
	r := n.dns.Resolver()
	r.Timeout = 5 * time.Second
	r.Attempts = 3
	r.StrictSRV = true
	return r
}

func (n *testNet) logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// node is one server: an Endpoint, a listener serving it, and what its
// handler received.
type node struct {
	ep     *s2s.Endpoint
	addr   *net.TCPAddr
	got    chan *s2s.Stanza
	states chan s2s.StateChange
	errs   chan error // ServeConn results
}

type nodeOpt func(*s2s.Endpoint)

func withMode(m tlsmode.Mode) nodeOpt { return func(e *s2s.Endpoint) { e.Security = m } }

func withCert(c tls.Certificate) nodeOpt {
	return func(e *s2s.Endpoint) { e.TLS = &tls.Config{Certificates: []tls.Certificate{c}} }
}

// secretFor is each domain's dialback secret in these tests.
func secretFor(domain string) dialback.Generator {
	return dialback.Generator{Secret: []byte("secret of " + domain)}
}

// endpoint returns an Endpoint for domains with a CA-issued certificate,
// TLS required, the domain's own secret and the test DNS.
func (n *testNet) endpoint(domains []string, opts ...nodeOpt) *s2s.Endpoint {
	ep := &s2s.Endpoint{
		Domains:  domains,
		Keys:     secretFor(domains[0]),
		Security: tlsmode.Required,
		TLS:      &tls.Config{Certificates: []tls.Certificate{n.ca.Leaf(n.t, domains...)}},
		Roots:    n.ca.Pool(),
		Resolver: n.resolver(),
		Logger:   n.logger(domains[0]),
	}
	for _, o := range opts {
		o(ep)
	}
	return ep
}

// listen serves ep on a loopback listener (direct TLS when directTLS) and
// publishes SRV records for every domain of ep.
func (n *testNet) listen(ep *s2s.Endpoint, directTLS bool) *node {
	t := n.t
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	nd := &node{ep: ep, addr: ln.Addr().(*net.TCPAddr), got: make(chan *s2s.Stanza, 1000), states: make(chan s2s.StateChange, 1000), errs: make(chan error, 100)}
	prev := ep.OnStateChange
	ep.OnStateChange = func(c s2s.StateChange) {
		if prev != nil {
			prev(c)
		}
		select {
		case nd.states <- c:
		default:
		}
	}
	service := "_xmpp-server"
	var l net.Listener = ln
	if directTLS {
		service = "_xmpps-server"
		l = tls.NewListener(ln, tlsmode.ServerConfig(ep.TLS))
	}
	for _, d := range ep.Domains {
		require.NoError(t, n.dns.Zone().Add(
			fmt.Sprintf("%s._tcp.%s. 300 IN SRV 0 0 %d host.%s.", service, d, nd.addr.Port, d),
			fmt.Sprintf("host.%s. 300 IN A 127.0.0.1", d),
		))
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				err := ep.ServeConn(ctx, c, s2s.HandlerFunc(func(_ context.Context, st *s2s.Stanza) { nd.got <- st }))
				select {
				case nd.errs <- err:
				default:
				}
			}()
		}
	}()
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
	})
	return nd
}

// server is endpoint + listen.
func (n *testNet) server(domains []string, opts ...nodeOpt) *node {
	return n.listen(n.endpoint(domains, opts...), false)
}

func ctxT(t testing.TB, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func message(t testing.TB, from, to, body string) *s2s.Stanza {
	t.Helper()
	st, err := s2s.ParseStanza([]byte(fmt.Sprintf("<message xmlns='jabber:server' from='%s' to='%s' type='chat' id='m1'><body>%s</body></message>", from, to, body)))
	require.NoError(t, err)
	return st
}

// receive waits for one stanza on nd.
func (nd *node) receive(t testing.TB) *s2s.Stanza {
	t.Helper()
	select {
	case st := <-nd.got:
		return st
	case <-time.After(5 * time.Second):
		t.Fatal("no stanza received")
		return nil
	}
}

// nothing asserts that nd received no stanza for a short while.
func (nd *node) nothing(t testing.TB) {
	t.Helper()
	select {
	case st := <-nd.got:
		t.Fatalf("unexpected stanza delivered: %s", st.XML)
	case <-time.After(100 * time.Millisecond):
	}
}

// inboundConnected waits for an inbound stream on nd to reach CONNECTED.
func (nd *node) inboundConnected(t testing.TB) s2s.Info {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case c := <-nd.states:
			if c.Info.Direction == s2s.Inbound && c.To == s2s.Connected {
				return c.Info
			}
		case <-deadline:
			t.Fatal("no inbound stream connected")
		}
	}
}

func contains(s string, subs ...string) bool {
	for _, x := range subs {
		if !strings.Contains(s, x) {
			return false
		}
	}
	return true
}
