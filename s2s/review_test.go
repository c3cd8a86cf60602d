package s2s_test

import (
	"crypto/tls"
	"encoding/base64"
	"encoding/xml"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// startTLSRaw drives a raw peer through STARTTLS with the given client
// certificate and reopens the stream; it returns the features offered
// after TLS.
func (p *rawPeer) startTLSRaw(cert tls.Certificate, header string) string {
	p.t.Helper()
	p.send(header)
	_, err := p.until("starttls")
	require.NoError(p.t, err)
	p.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	_, err = p.until("proceed")
	require.NoError(p.t, err)
	tc := tls.Client(p.conn, &tls.Config{InsecureSkipVerify: true, ServerName: "b.test", Certificates: []tls.Certificate{cert}})
	require.NoError(p.t, tc.Handshake())
	p.conn = tc
	p.d = xml.NewDecoder(tc)
	p.send(header)
	f, err := p.until("features")
	require.NoError(p.t, err)
	var inner struct {
		Inner string `xml:",innerxml"`
	}
	require.NoError(p.t, p.d.DecodeElement(&inner, &f))
	return inner.Inner
}

func TestInboundSASLExternal(t *testing.T) {
	auth := func(authzid string) string {
		return "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>" + authzid + "</auth>"
	}
	b64 := func(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
	tests := []struct {
		name      string
		cert      func(*testNet) tls.Certificate
		offered   bool
		auth      string
		want      string // success, or the failure condition
		authCount int
	}{
		{name: "valid certificate, authzid", cert: caLeaf("a.test"), offered: true, auth: auth(b64("a.test")), want: "success"},
		{name: "valid certificate, empty authzid", cert: caLeaf("a.test"), offered: true, auth: auth("="), want: "success"},
		{name: "valid certificate, other authzid", cert: caLeaf("a.test"), offered: true, auth: auth(b64("evil.test")), want: "invalid-authzid"},
		{name: "self-signed certificate", cert: selfSigned("a.test"), auth: auth("="), want: "not-authorized"},
		{name: "certificate for another domain", cert: caLeaf("evil.test"), auth: auth("="), want: "not-authorized"},
		{name: "not base64", cert: caLeaf("a.test"), offered: true, auth: auth("!!"), want: "incorrect-encoding"},
		{name: "other mechanism", cert: caLeaf("a.test"), offered: true, auth: "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>AGEAYg==</auth>", want: "invalid-mechanism"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t)
			b := n.server([]string{"b.test"})
			p := dialRaw(t, b)
			feats := p.startTLSRaw(tc.cert(n), rawHeader)
			assert.Equal(t, tc.offered, strings.Contains(feats, "EXTERNAL"), feats)
			p.send(tc.auth)
			if tc.want == "success" {
				_, err := p.until("success")
				require.NoError(t, err)
				p.send(rawHeader)
				_, err = p.until("features")
				require.NoError(t, err)
				p.send("<message from='x@a.test' to='y@b.test'><body>after SASL</body></message>")
				assert.Contains(t, string(b.receive(t).XML), "after SASL")
				return
			}
			_, err := p.until("failure")
			require.NoError(t, err)
			_, err = p.until(tc.want)
			require.NoError(t, err)
			p.send("<message from='x@a.test' to='y@b.test'><body>no</body></message>")
			assert.Equal(t, "not-authorized", p.streamError())
			b.nothing(t)
		})
	}
}

// Failed SASL attempts are bounded (and handled in a loop, not by
// recursion).
func TestInboundSASLRetryLimit(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	p := dialRaw(t, b)
	p.send(rawHeader)
	for range 3 {
		p.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'/>")
	}
	assert.Equal(t, "policy-violation", p.streamError())
}

// Whatever was negotiated before TLS must not carry over: STARTTLS after a
// dialback request is refused.
func TestStartTLSAfterDialbackRefused(t *testing.T) {
	n := newTestNet(t)
	n.server([]string{"a.test"}, withMode(tlsmode.Optional))
	b := n.server([]string{"b.test"}, withMode(tlsmode.Optional))
	p := dialRaw(t, b)
	p.send(rawHeader)
	_, err := p.until("features")
	require.NoError(t, err)
	p.send("<db:result from='a.test' to='b.test'>00</db:result><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	assert.Equal(t, "policy-violation", p.streamError())
}

// Bytes after <starttls/> in the same packet would be read as if they came
// over TLS (the STARTTLS injection class of bugs).
func TestStartTLSInjectionRefused(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.Optional))
	p := dialRaw(t, b)
	p.send(rawHeader)
	_, err := p.until("features")
	require.NoError(t, err)
	p.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><message from='x@a.test' to='y@b.test'/>")
	assert.Equal(t, "policy-violation", p.streamError())
}

// fakePeer is a scripted S2S server: for each connection it reads the
// header, answers with its own and then runs script.
func fakePeer(t *testing.T, n *testNet, domain string, script func(p *rawPeer, id string)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	require.NoError(t, n.dns.Zone().Add(
		fmt.Sprintf("_xmpp-server._tcp.%s. 300 IN SRV 0 0 %s fake.%s.", domain, portOf(ln), domain),
		fmt.Sprintf("fake.%s. 300 IN A 127.0.0.1", domain)))
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(10 * time.Second))
			p := &rawPeer{t: t, conn: c, d: xml.NewDecoder(c)}
			go func() {
				defer c.Close()
				if _, err := p.until("stream"); err != nil {
					return
				}
				id := "fake-stream-id"
				fmt.Fprintf(c, "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='%s' id='%s' version='1.0'>", domain, id)
				script(p, id)
				time.Sleep(50 * time.Millisecond)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
}

// A db:verify answer counts only if it matches the request (from, to and
// id) on the stream it was sent on (dialback.md §9 #7); the Cisco habit of
// echoing the key inside a typed answer is accepted.
func TestVerifyAnswerCorrelation(t *testing.T) {
	tests := []struct {
		name   string
		answer func(from, to, id, key string) string
		ok     bool
	}{
		{name: "matching", ok: true, answer: func(f, to, id, _ string) string {
			return fmt.Sprintf("<db:verify from='%s' to='%s' id='%s' type='valid'/>", to, f, id)
		}},
		{name: "Cisco echoes the key", ok: true, answer: func(f, to, id, key string) string {
			return fmt.Sprintf("<db:verify from='%s' to='%s' id='%s' type='valid'>%s</db:verify>", to, f, id, key)
		}},
		{name: "wrong id", answer: func(f, to, _, _ string) string {
			return fmt.Sprintf("<db:verify from='%s' to='%s' id='other' type='valid'/>", to, f)
		}},
		{name: "wrong domains", answer: func(f, to, id, _ string) string {
			return fmt.Sprintf("<db:verify from='%s' to='%s' id='%s' type='valid'/>", "evil.test", f, id)
		}},
		{name: "typed result instead", answer: func(f, to, _, _ string) string {
			return fmt.Sprintf("<db:result from='%s' to='%s' type='valid'/>", to, f)
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t)
			// a.test's "authoritative server" is scripted.
			fakePeer(t, n, "a.test", func(p *rawPeer, _ string) {
				p.conn.Write([]byte("<stream:features><dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback></stream:features>"))
				v, err := p.until("verify")
				if err != nil {
					return
				}
				var req struct {
					From string `xml:"from,attr"`
					To   string `xml:"to,attr"`
					ID   string `xml:"id,attr"`
					Key  string `xml:",chardata"`
				}
				if p.d.DecodeElement(&req, &v) != nil {
					return
				}
				p.conn.Write([]byte(tc.answer(req.From, req.To, req.ID, req.Key)))
				p.untilClose()
			})
			b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
			b.ep.VerifyTimeout = 500 * time.Millisecond
			a := n.endpoint([]string{"a.test"}, withMode(tlsmode.NoTLS))
			ctx := ctxT(t, 10*time.Second)
			s, err := a.Dial(ctx, "a.test", "b.test")
			if tc.ok {
				require.NoError(t, err)
				s.Close()
				return
			}
			require.ErrorIs(t, err, s2s.ErrDialbackError)
			assert.ErrorIs(t, err, stanza.Error{Condition: stanza.RemoteServerTimeout})
		})
	}
}

// A receiving server that sends data after <proceed/> is refused.
func TestOutboundStartTLSInjectionRefused(t *testing.T) {
	n := newTestNet(t)
	fakePeer(t, n, "b.test", func(p *rawPeer, _ string) {
		p.conn.Write([]byte("<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>"))
		if _, err := p.until("starttls"); err != nil {
			return
		}
		p.conn.Write([]byte("<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/><db:result from='b.test' to='a.test' type='valid'/>"))
		p.untilClose()
	})
	a := n.endpoint([]string{"a.test"})
	_, err := a.Dial(ctxT(t, 10*time.Second), "a.test", "b.test")
	require.ErrorIs(t, err, stream.PolicyViolation)
}

// Target multiplexing sends a dialback key for another domain only to a
// server of that domain.
func TestTargetMultiplexing(t *testing.T) {
	n := newTestNet(t)
	a := n.server([]string{"a.test"}, withMode(tlsmode.NoTLS))
	b := n.server([]string{"b.test", "b2.test"}, withMode(tlsmode.NoTLS)) // same listener serves both
	c := n.server([]string{"c.test"}, withMode(tlsmode.NoTLS))
	ctx := ctxT(t, 10*time.Second)
	s, err := a.ep.Dial(ctx, "a.test", "b.test")
	require.NoError(t, err)
	defer s.Close()

	require.NoError(t, s.Authorize(ctx, "a.test", "b2.test"), "b2.test resolves to this very stream's address")
	require.NoError(t, s.Send(ctx, message(t, "x@a.test", "y@b2.test", "to b2")))
	assert.Equal(t, "b2.test", b.receive(t).To.Domainpart())

	err = s.Authorize(ctx, "a.test", "c.test")
	require.Error(t, err, "c.test is served elsewhere: its key must not go to b")
	assert.Contains(t, err.Error(), "not a server of c.test")
	assert.Empty(t, c.states, "c.test was never contacted")
	assert.NotContains(t, n.log.String(), "to='c.test'>", "no key for c.test was sent")
}

// Dialback verifications per stream are bounded.
func TestPendingVerificationsBounded(t *testing.T) {
	n := newTestNet(t)
	hole := blackHole(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	b.ep.VerifyTimeout = 2 * time.Second
	for i := range 9 {
		require.NoError(t, n.dns.Zone().Add(fmt.Sprintf("_xmpp-server._tcp.s%d.test. 300 IN SRV 0 0 %s hole.test.", i, portOf(hole))))
	}
	require.NoError(t, n.dns.Zone().Add("hole.test. 300 IN A 127.0.0.1"))
	p := dialRaw(t, b)
	p.send(rawHeader)
	for i := range 9 {
		p.send(fmt.Sprintf("<db:result from='s%d.test' to='b.test'>00</db:result>", i))
	}
	res, err := p.until("resource-constraint")
	require.NoError(t, err, "the ninth request is refused at once")
	assert.Equal(t, "resource-constraint", res.Name.Local)
}

// A misconfigured Endpoint is refused up front, not by a panic in a
// goroutine.
func TestEndpointConfigChecked(t *testing.T) {
	ctx := ctxT(t, 5*time.Second)
	_, err := (&s2s.Endpoint{Domains: []string{"a.test"}}).Dial(ctx, "a.test", "b.test")
	assert.ErrorIs(t, err, s2s.ErrConfig)
	c1, c2 := net.Pipe()
	defer c2.Close()
	err = (&s2s.Endpoint{Keys: secretFor("a.test")}).ServeConn(ctx, c1, nil)
	assert.ErrorIs(t, err, s2s.ErrConfig)
}

// untilClose reads until the peer's </stream:stream> (or an error).
func (p *rawPeer) untilClose() {
	for range 1000 {
		tok, err := p.d.Token()
		if err != nil {
			return
		}
		if e, ok := tok.(xml.EndElement); ok && e.Name.Local == "stream" {
			return
		}
	}
}
