package s2s_test

// Tests for the inbound-side review findings (issue 4) that came without a
// failing test in review_engine_test.go.

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// fxFeatures reads the next <stream:features/> and returns its inner XML.
func fxFeatures(t *testing.T, p *rawPeer) string {
	t.Helper()
	f, err := p.until("features")
	require.NoError(t, err)
	var inner struct {
		Inner string `xml:",innerxml"`
	}
	require.NoError(t, p.d.DecodeElement(&inner, &f))
	return inner.Inner
}

// fxStreamID reads our peer's response header and returns its id.
func fxStreamID(t *testing.T, p *rawPeer) string {
	t.Helper()
	h, err := p.until("stream")
	require.NoError(t, err)
	for _, a := range h.Attr {
		if a.Name.Local == "id" {
			return a.Value
		}
	}
	t.Fatal("response header without id")
	return ""
}

// Finding 14: a connection over the unauthenticated limit on the direct
// TLS port is closed without a TLS handshake (which would cost as much as
// serving it).
func TestReviewFix_DirectTLSOverLimitClosedWithoutHandshake(t *testing.T) {
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{DirectTLS: true, Configure: func(_ *s2s.Endpoint, srv *s2s.Server, _ *s2s.Pool) {
		srv.MaxUnauthenticated = 1
	}})
	handshake := func(c net.Conn) error {
		c.SetDeadline(time.Now().Add(5 * time.Second))
		return tls.Client(c, &tls.Config{RootCAs: n.Roots(), ServerName: "b.test", NextProtos: []string{"xmpp-server"}}).Handshake()
	}
	first, err := net.Dial("tcp", b.TLSAddr.String())
	require.NoError(t, err)
	defer first.Close()
	// The Server accepts in order: first holds the only slot from here on.
	second, err := net.Dial("tcp", b.TLSAddr.String())
	require.NoError(t, err)
	defer second.Close()
	assert.Error(t, handshake(second), "over-limit direct TLS connection got a TLS handshake")
	assert.Equal(t, uint64(1), b.Server.Counters().RefusedConnections["resource-constraint"])
	assert.NoError(t, handshake(first), "the connection within the limit is served")
}

// Finding 15, SASL EXTERNAL: beyond MaxStreamsPerDomain streams for a
// domain pair, authentication fails with <temporary-auth-failure/>; once
// one of them ends, a new one is admitted.
func TestReviewFix_MaxStreamsPerDomainSASL(t *testing.T) {
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{Configure: func(_ *s2s.Endpoint, srv *s2s.Server, _ *s2s.Pool) {
		srv.MaxStreamsPerDomain = 1
	}})
	p1 := rvDial(t, b.Addr)
	rvSASL(t, n, p1, nil)

	p2 := rvDial(t, b.Addr)
	p2.startTLSRaw(n.Certificate("a.test"), rawHeader)
	p2.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
	f, err := p2.until("failure")
	require.NoError(t, err)
	var failure struct {
		Inner string `xml:",innerxml"`
	}
	require.NoError(t, p2.d.DecodeElement(&failure, &f))
	assert.Contains(t, failure.Inner, "temporary-auth-failure")
	assert.Equal(t, uint64(1), b.Server.Counters().RefusedConnections["streams-per-domain"])

	// The first stream still carries stanzas.
	p1.send("<message from='x@a.test' to='y@b.test'><body>one</body></message>")
	assert.Contains(t, string(b.Inbox.Next(t, 5*time.Second).XML), "one")

	p1.send("</stream:stream>")
	deadline := time.Now().Add(5 * time.Second)
	for rvInbound(b.Server.Status(), "a.test") && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	require.False(t, rvInbound(b.Server.Status(), "a.test"), "first stream not closed")
	p3 := rvDial(t, b.Addr)
	rvSASL(t, n, p3, nil)
	p3.send("<message from='x@a.test' to='y@b.test'><body>three</body></message>")
	assert.Contains(t, string(b.Inbox.Next(t, 5*time.Second).XML), "three")
}

// Finding 15, dialback: the stream over the limit gets a dialback error
// <resource-constraint/> (and is not authorized); the limit is per domain
// pair, so the same sender may still reach another served domain.
func TestReviewFix_MaxStreamsPerDomainDialback(t *testing.T) {
	n := s2stest.New(t)
	noTLS := s2s.PolicyConfig{Security: tlsmode.NoTLS}
	n.AddDomain("a.test", s2stest.Options{Policy: noTLS, NoCertificate: true})
	b := n.AddDomain("b.test", s2stest.Options{Aliases: []string{"b2.test"}, Policy: noTLS, NoCertificate: true, Configure: func(_ *s2s.Endpoint, srv *s2s.Server, _ *s2s.Pool) {
		srv.MaxStreamsPerDomain = 1
	}})
	keys := dialback.Generator{Secret: []byte("secret of a.test")}
	dial := func(to string) (*rawPeer, xml.StartElement) {
		p := rvDial(t, b.Addr)
		p.send(strings.Replace(rawHeader, "to='b.test'", "to='"+to+"'", 1))
		id := fxStreamID(t, p)
		p.send("<db:result from='a.test' to='" + to + "'>" + keys.Key(to, "a.test", id) + "</db:result>")
		res, err := p.until("result")
		require.NoError(t, err)
		return p, res
	}
	typeOf := func(se xml.StartElement) string {
		for _, a := range se.Attr {
			if a.Name.Local == "type" {
				return a.Value
			}
		}
		return ""
	}
	p1, res := dial("b.test")
	require.Equal(t, "valid", typeOf(res))
	p2, res := dial("b.test")
	require.Equal(t, "error", typeOf(res))
	_, err := p2.until("resource-constraint")
	assert.NoError(t, err, "dialback error condition")
	assert.Equal(t, uint64(1), b.Server.Counters().RefusedConnections["streams-per-domain"])
	// Not authorized: a stanza on it is refused.
	p2.send("<message from='x@a.test' to='y@b.test'><body>no</body></message>")
	assert.Equal(t, "not-authorized", rvStreamError(p2, 3*time.Second))

	_, res = dial("b2.test")
	assert.Equal(t, "valid", typeOf(res), "another pair has its own count")
	p1.send("<message from='x@a.test' to='y@b.test'><body>one</body></message>")
	assert.Contains(t, string(b.Inbox.Next(t, 5*time.Second).XML), "one")
}

// Finding 16: an Endpoint Policy without static routes leaves the
// Resolver's own static routes in force.
func TestReviewFix_PolicyWithoutRoutesKeepsResolverRoutes(t *testing.T) {
	n := s2stest.New(t)
	// b also serves c.test, which has no DNS record: only a static route
	// reaches it.
	b := n.AddDomain("b.test", s2stest.Options{Aliases: []string{"c.test"}, Unlisted: true})
	n.Publish("b.test", b.Addr, nil)
	a := n.AddDomain("a.test", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
		e.Resolver.SetStaticRoutes(map[string][]string{"c.test": {b.Addr.String()}})
	}})
	require.NoError(t, a.Send(context.Background(), a.Message("x@a.test", "y@c.test", "routed")))
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := b.Inbox.Receive(ctx)
	if !assert.NoError(t, err, "not delivered over the Resolver's static route") {
		if a.Inbox.Len() > 0 {
			t.Logf("bounce: %s", a.Inbox.Next(t, time.Second).XML)
		}
		return
	}
	assert.Contains(t, string(st.XML), "routed")
}

// Finding 17: with TLS optional and a certificate, bidi is neither offered
// nor accepted before TLS (our stanzas would flow in plaintext where our
// own stream would use TLS); after TLS it is. Without a certificate TLS is
// impossible, and bidi is offered at once as before.
func TestReviewFix_BidiNotBeforeTLSWhenTLSPossible(t *testing.T) {
	n := s2stest.New(t)
	optional := s2s.PolicyConfig{Security: tlsmode.Optional}
	b := n.AddDomain("b.test", s2stest.Options{Policy: optional, Configure: withBidi})

	p := rvDial(t, b.Addr)
	p.send(rawHeader)
	f := fxFeatures(t, p)
	assert.Contains(t, f, "starttls")
	assert.NotContains(t, f, "bidi", "bidi offered before TLS")
	p.send("<bidi xmlns='urn:xmpp:bidi'/>")
	assert.Equal(t, "policy-violation", rvStreamError(p, 3*time.Second))

	p = rvDial(t, b.Addr)
	f = p.startTLSRaw(n.Certificate("a.test"), rawHeader)
	assert.Contains(t, f, "bidi", "bidi offered after TLS")

	c := n.AddDomain("c.test", s2stest.Options{Policy: optional, NoCertificate: true, Configure: withBidi})
	p = rvDial(t, c.Addr)
	p.send(strings.Replace(rawHeader, "to='b.test'", "to='c.test'", 1))
	assert.Contains(t, fxFeatures(t, p), "bidi", "no certificate: TLS impossible, bidi offered in plaintext")
}

// Finding 2/3, the other side: a graceful close (idle) still delivers the
// stanzas the peer sent before it saw our closing tag.
func TestReviewFix_IdleCloseStillDelivers(t *testing.T) {
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{Configure: func(_ *s2s.Endpoint, srv *s2s.Server, _ *s2s.Pool) {
		srv.IdleTimeout = 200 * time.Millisecond
	}})
	p := rvDial(t, b.Addr)
	rvSASL(t, n, p, nil)
	// Wait for b's closing tag.
	p.conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	closed := false
	for range 1000 {
		tok, err := p.d.Token()
		require.NoError(t, err, "no closing tag from the idle stream")
		if ee, ok := tok.(xml.EndElement); ok && ee.Name.Local == "stream" {
			closed = true
			break
		}
	}
	require.True(t, closed)
	p.send("<message from='x@a.test' to='y@b.test'><body>in flight</body></message></stream:stream>")
	assert.Contains(t, string(b.Inbox.Next(t, 3*time.Second).XML), "in flight")
}

// Finding 5: Close does not wait for a Handler that is still running.
func TestReviewFix_CloseDoesNotWaitForHandler(t *testing.T) {
	busy := make(chan struct{})
	release := make(chan struct{})
	var once sync.Once
	free := func() { once.Do(func() { close(release) }) }
	defer free()
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{Configure: func(_ *s2s.Endpoint, srv *s2s.Server, _ *s2s.Pool) {
		srv.Handler = s2s.HandlerFunc(func(context.Context, *s2s.Stanza) {
			close(busy)
			<-release
		})
	}})
	p := rvDial(t, b.Addr)
	rvSASL(t, n, p, nil)
	p.send("<message from='x@a.test' to='y@b.test'><body>one</body></message>")
	select {
	case <-busy:
	case <-time.After(5 * time.Second):
		t.Fatal("stanza not delivered")
	}
	timer := time.AfterFunc(3*time.Second, free) // so that the test ends either way
	defer timer.Stop()
	start := time.Now()
	b.Server.Close()
	assert.Less(t, time.Since(start), 1500*time.Millisecond, "Close waited for the Handler")
	// Cut off without a stream error.
	p.conn.SetReadDeadline(time.Now().Add(3 * time.Second))
	for range 1000 {
		tok, err := p.d.Token()
		if err != nil {
			break
		}
		if se, ok := tok.(xml.StartElement); ok {
			assert.NotEqual(t, "error", se.Name.Local, "Close sent a stream error")
		}
	}
}

// Finding 9: Shutdown called from a Handler returns when its ctx ends
// instead of waiting for itself forever.
func TestReviewFix_ShutdownFromHandler(t *testing.T) {
	type result struct {
		err     error
		elapsed time.Duration
	}
	got := make(chan result, 1)
	var srv *s2s.Server
	n := s2stest.New(t)
	b := n.AddDomain("b.test", s2stest.Options{Configure: func(_ *s2s.Endpoint, s *s2s.Server, _ *s2s.Pool) {
		srv = s
		s.Handler = s2s.HandlerFunc(func(context.Context, *s2s.Stanza) {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			start := time.Now()
			err := srv.Shutdown(ctx)
			got <- result{err, time.Since(start)}
		})
	}})
	p := rvDial(t, b.Addr)
	rvSASL(t, n, p, nil)
	p.send("<message from='x@a.test' to='y@b.test'><body>stop</body></message>")
	select {
	case r := <-got:
		assert.ErrorIs(t, r.err, context.DeadlineExceeded)
		assert.Less(t, r.elapsed, 1500*time.Millisecond)
	case <-time.After(5 * time.Second):
		t.Fatal("Shutdown called from a Handler did not return")
	}
	assert.Equal(t, "system-shutdown", rvStreamError(p, 3*time.Second))
}

// SASL EXTERNAL after dialback has authorized a pair would restart the
// stream under it (and start keepalives before the new header): refused.
func TestSASLRefusedAfterDialback(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.Optional))
	p := dialRaw(t, b)
	p.startTLSRaw(n.ca.Leaf(t, "a.test"), rawHeader)
	// The certificate proves a.test, so dialback succeeds without dialing
	// back (XEP-0344), whatever the key.
	p.send("<db:result from='a.test' to='b.test'>00</db:result>")
	res, err := p.until("result")
	require.NoError(t, err)
	require.Equal(t, "valid", attrValue(res, "type"))
	p.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
	_, err = p.until("invalid-mechanism")
	require.NoError(t, err)
}

func attrValue(se xml.StartElement, name string) string {
	for _, a := range se.Attr {
		if a.Name.Local == name && a.Name.Space == "" {
			return a.Value
		}
	}
	return ""
}
