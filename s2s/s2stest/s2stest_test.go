package s2stest_test

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stanza"

	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/tlsmode"
)

func TestTwoDomainsBothWays(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{})
	b := n.AddDomain("b.example", s2stest.Options{})
	ctx := context.Background()

	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "hi")))
	st := b.Inbox.Next(t, 10*time.Second)
	assert.Equal(t, "alice@a.example", st.From.String())
	assert.Equal(t, "bob@b.example", st.To.String())
	assert.Equal(t, "<message from='alice@a.example' to='bob@b.example' type='chat'><body>hi</body></message>", string(st.XML))

	require.NoError(t, b.Send(ctx, b.Message("bob@b.example", "alice@a.example", "hello")))
	st = a.Inbox.Next(t, 10*time.Second)
	assert.Equal(t, "bob@b.example", st.From.String())
	assert.Contains(t, string(st.XML), "<body>hello</body>")

	assert.Equal(t, tlsmode.Required, a.SecurityMode(), "the default")
	assert.Contains(t, n.Log(), "Connection state change", "every domain logs into the Net's log")
	assert.Contains(t, n.Log(), "node=a.example")
	assert.Contains(t, n.Log(), "node=b.example")
}

func TestAddDomainOptions(t *testing.T) {
	n := s2stest.New(t)
	configured := false
	a := n.AddDomain("a.example", s2stest.Options{
		Aliases:   []string{"a2.example"},
		DirectTLS: true,
		Policy:    s2s.PolicyConfig{Security: tlsmode.Optional},
		Configure: func(e *s2s.Endpoint, srv *s2s.Server, p *s2s.Pool) {
			configured = e != nil && srv != nil && p != nil && srv.Pool == p && srv.Endpoint == e && p.Endpoint == e
		},
	})
	assert.True(t, configured, "Configure sees the Endpoint, Server and Pool before the start")
	assert.Equal(t, []string{"a.example", "a2.example"}, a.Endpoint.Domains)
	assert.Equal(t, tlsmode.Optional, a.SecurityMode())
	assert.Same(t, a.Policy, a.Endpoint.Policy)
	require.NotNil(t, a.TLSAddr)
	assert.True(t, a.Addr.IP.IsLoopback())
	assert.True(t, a.TLSAddr.IP.IsLoopback())

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := n.Resolver()
	for _, d := range []string{"a.example", "a2.example"} {
		targets, err := r.LookupServer(ctx, d)
		require.NoError(t, err, d)
		ports := map[uint16]bool{}
		for _, tg := range targets {
			ports[tg.Port] = tg.DirectTLS
		}
		assert.Equal(t, map[uint16]bool{uint16(a.Addr.Port): false, uint16(a.TLSAddr.Port): true}, ports, d)
	}

	// The certificate from the Net's CA names every domain of the server.
	c := a.Endpoint.TLS.Certificates[0]
	require.NotNil(t, c.Leaf)
	assert.ElementsMatch(t, []string{"a.example", "a2.example"}, c.Leaf.DNSNames)
	_, err := c.Leaf.Verify(x509.VerifyOptions{DNSName: "a2.example", Roots: n.Roots()})
	assert.NoError(t, err)
	assert.True(t, n.CACertificate().IsCA)

	u := n.AddDomain("unlisted.example", s2stest.Options{Unlisted: true, NoCertificate: true, Policy: s2s.PolicyConfig{Security: tlsmode.NoTLS}})
	assert.Nil(t, u.Endpoint.TLS)
	assert.Nil(t, u.TLSAddr)
	// No SRV records: the RFC 6120 fallback, to a name without address.
	targets, err := r.LookupServer(ctx, "unlisted.example")
	require.NoError(t, err)
	assert.Equal(t, []srv.Target{{Host: "unlisted.example", Port: srv.DefaultPort}}, targets)
	_, err = r.LookupAddrs(ctx, "unlisted.example")
	assert.Error(t, err, "no address for an unlisted domain")

	own := n.Certificate("own.example")
	o := n.AddDomain("own.example", s2stest.Options{Certificate: &own})
	assert.Equal(t, own.Certificate, o.Endpoint.TLS.Certificates[0].Certificate)
}

// A domain's dialback secret is its own unless set: two servers sharing
// one (a cluster) can vouch for each other's keys.
func TestAddDomainSecret(t *testing.T) {
	n := s2stest.New(t)
	plain := s2stest.Options{NoCertificate: true, Policy: s2s.PolicyConfig{Security: tlsmode.NoTLS}}
	a := n.AddDomain("a.example", plain)
	b := n.AddDomain("b.example", plain)
	shared := plain
	shared.Secret = "cluster secret"
	c1 := n.AddDomain("c1.example", shared)
	c2 := n.AddDomain("c2.example", shared)

	const id = "0123456789abcdef"
	ka := a.Endpoint.Keys.Key("b.example", "a.example", id)
	assert.True(t, a.Endpoint.Keys.Verify(ka, "b.example", "a.example", id))
	assert.False(t, b.Endpoint.Keys.Verify(ka, "b.example", "a.example", id), "different domains, different secrets")
	kc := c1.Endpoint.Keys.Key("b.example", "c1.example", id)
	assert.True(t, c2.Endpoint.Keys.Verify(kc, "b.example", "c1.example", id), "same secret")
}

func TestPublish(t *testing.T) {
	n := s2stest.New(t)
	plain := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 15269}
	direct := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 2), Port: 15270}
	n.Publish("x.example", plain, direct)
	n.Publish("y.example", plain, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	r := n.Resolver()

	targets, err := r.LookupServer(ctx, "x.example")
	require.NoError(t, err)
	require.Len(t, targets, 2)
	byTLS := map[bool]uint16{}
	for _, tg := range targets {
		byTLS[tg.DirectTLS] = tg.Port
		addrs, err := r.LookupAddrs(ctx, tg.Host)
		require.NoError(t, err, tg.Host)
		want := plain.IP
		if tg.DirectTLS {
			want = direct.IP
		}
		require.Len(t, addrs, 1)
		assert.Equal(t, want.String(), addrs[0].String())
	}
	assert.Equal(t, map[bool]uint16{false: 15269, true: 15270}, byTLS)

	targets, err = r.LookupServer(ctx, "y.example")
	require.NoError(t, err)
	require.Len(t, targets, 1)
	assert.False(t, targets[0].DirectTLS)
	assert.Equal(t, uint16(15269), targets[0].Port)

	assert.Positive(t, n.DNS().TotalQueries())
}

func TestMessage(t *testing.T) {
	st := s2stest.Message("alice@a.example/a&b", "bob@b.example/o'neil<y>\"", "1 < 2 & 'q'")
	assert.Equal(t, "message", st.Name)
	assert.Equal(t, "chat", st.Type)
	assert.Equal(t, `alice@a.example/a&b`, st.From.String())
	assert.Equal(t, `bob@b.example/o'neil<y>"`, st.To.String())
	back, err := s2s.ParseStanza(st.XML)
	require.NoError(t, err)
	assert.Equal(t, st.XML, back.XML, "canonical")
	assert.Contains(t, string(st.XML), "<body>1 &lt; 2 &amp; 'q'</body>")
	assert.Panics(t, func() { s2stest.Message("", "b.example", "x") })
}

func TestInboxOrder(t *testing.T) {
	const count = 500
	var in s2stest.Inbox // the zero value is ready
	go func() {
		for i := range count {
			in.ServeStanza(context.Background(), s2stest.Message("a@a.example", "b@b.example", fmt.Sprint(i)))
		}
	}()
	for i := range count {
		st := in.Next(t, 5*time.Second)
		require.Contains(t, string(st.XML), fmt.Sprintf("<body>%d</body>", i))
	}
	assert.Zero(t, in.Len())

	for i := range 3 {
		in.ServeStanza(context.Background(), s2stest.Message("a@a.example", "b@b.example", fmt.Sprint(i)))
	}
	assert.Equal(t, 3, in.Len())
}

// Stanzas that arrive together wake every receiver waiting for them.
func TestInboxConcurrentReceivers(t *testing.T) {
	for round := range 50 {
		var in s2stest.Inbox
		var wg sync.WaitGroup
		got := make(chan string, 2)
		for range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
				defer cancel()
				st, err := in.Receive(ctx)
				if err != nil {
					got <- err.Error()
					return
				}
				got <- string(st.XML)
			}()
		}
		time.Sleep(time.Millisecond) // let both receivers wait (the race this test is about)
		in.ServeStanza(context.Background(), s2stest.Message("a@a.example", "b@b.example", "1"))
		in.ServeStanza(context.Background(), s2stest.Message("a@a.example", "b@b.example", "2"))
		wg.Wait()
		close(got)
		var bodies []string
		for x := range got {
			require.Contains(t, x, "<body>", "round %d: a receiver missed its stanza", round)
			bodies = append(bodies, x[strings.Index(x, "<body>"):])
		}
		assert.ElementsMatch(t, []string{"<body>1</body></message>", "<body>2</body></message>"}, bodies)
	}
}

func TestInboxReceiveContext(t *testing.T) {
	var in s2stest.Inbox
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	start := time.Now()
	st, err := in.Receive(ctx)
	assert.Nil(t, st)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 5*time.Second)
}

// Next and Empty fail their test when the Inbox is not as expected.
func TestInboxHelpersFail(t *testing.T) {
	var in s2stest.Inbox
	fake := &standIn{}
	assert.Equal(t, "s2stest: no stanza within 10ms", fatalOf(func() { in.Next(fake, 10*time.Millisecond) }))
	assert.Empty(t, fatalOf(func() { in.Empty(fake, 10*time.Millisecond) }))

	in.ServeStanza(context.Background(), s2stest.Message("a@a.example", "b@b.example", "surprise"))
	msg := fatalOf(func() { in.Empty(fake, 10*time.Millisecond) })
	assert.Contains(t, msg, "unexpected stanza")
	assert.Contains(t, msg, "surprise")
	assert.True(t, fake.Failed())

	in.ServeStanza(context.Background(), s2stest.Message("a@a.example", "b@b.example", "expected"))
	ok := &standIn{}
	var st *s2s.Stanza
	assert.Empty(t, fatalOf(func() { st = in.Next(ok, time.Second) }))
	assert.Contains(t, string(st.XML), "expected")
	assert.False(t, ok.Failed())
}

// A Net prints its log when its test fails, and only then.
func TestLogOnFailure(t *testing.T) {
	for _, failed := range []bool{false, true} {
		fake := &standIn{}
		n := s2stest.New(fake)
		n.Logger("x.example").Info("something to see")
		fake.failed = failed
		fake.finish()
		if !failed {
			assert.Empty(t, fake.logs)
			continue
		}
		require.Len(t, fake.logs, 1)
		assert.Contains(t, fake.logs[0], "something to see")
		assert.Contains(t, fake.logs[0], "node=x.example")
	}
}

func TestErrorCondition(t *testing.T) {
	msg := s2stest.Message("alice@a.example/r", "bob@b.example", "hi")
	parse := func(x string) *s2s.Stanza {
		st, err := s2s.ParseStanza([]byte(x))
		require.NoError(t, err, x)
		return st
	}
	tests := []struct {
		name string
		st   *s2s.Stanza
		want string
	}{
		{name: "nil", st: nil, want: ""},
		{name: "not an error", st: msg, want: ""},
		{name: "bounce", st: s2s.ErrorReply(msg, stanza.Cancel, stanza.RemoteServerNotFound, "gone"), want: "remote-server-not-found"},
		{name: "bounce without text", st: s2s.ErrorReply(msg, stanza.Wait, stanza.ResourceConstraint, ""), want: "resource-constraint"},
		{name: "text first", st: parse(`<message from='b.example' to='alice@a.example' type='error'><error type='wait'><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'>busy</text><remote-server-timeout xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`), want: "remote-server-timeout"},
		{name: "double quotes and a prefix", st: parse(`<iq xmlns:e="urn:ietf:params:xml:ns:xmpp-stanzas" from="b.example" to="alice@a.example" type="error" id="1"><error type="cancel"><e:service-unavailable/></error></iq>`), want: "service-unavailable"},
		{name: "application condition after", st: parse(`<iq from='b.example' to='alice@a.example' type='error' id='1'><error type='modify'><bad-request xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><x xmlns='urn:example'/></error></iq>`), want: "bad-request"},
		{name: "no defined condition", st: parse(`<message from='b.example' to='alice@a.example' type='error'><error type='cancel'><x xmlns='urn:example'/></error></message>`), want: ""},
		{name: "condition outside error", st: parse(`<message from='b.example' to='alice@a.example' type='error'><body>&lt;item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/&gt;</body><x><item-not-found xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></x></message>`), want: ""},
		{name: "not parsed", st: &s2s.Stanza{Type: "error", XML: []byte("<message type='error'><error><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'")}, want: ""},
		{name: "type not error", st: parse(`<message from='b.example' to='alice@a.example' type='chat'><error type='cancel'><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`), want: ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, s2stest.ErrorCondition(tc.st))
		})
	}
}

func FuzzErrorCondition(f *testing.F) {
	msg := s2stest.Message("alice@a.example/r", "bob@b.example", "hi")
	f.Add(string(s2s.ErrorReply(msg, stanza.Cancel, stanza.RemoteServerNotFound, "gone").XML))
	f.Add(`<message type='error'><error><text xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/><gone xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></error></message>`)
	f.Add(`<iq type='error'><error><a><b xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/></a></error></iq>`)
	f.Add(`<message type='error'><error`)
	f.Add(``)
	f.Fuzz(func(t *testing.T, x string) {
		got := s2stest.ErrorCondition(&s2s.Stanza{Type: "error", XML: []byte(x)})
		if got == "" {
			return
		}
		// A condition is an element name the input spells, in the stanza
		// error namespace.
		if got == "text" || !strings.Contains(x, got) || !strings.Contains(x, "urn:ietf:params:xml:ns:xmpp-stanzas") {
			t.Fatalf("ErrorCondition(%q) = %q", x, got)
		}
	})
}
