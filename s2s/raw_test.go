package s2s_test

import (
	"crypto/tls"
	"encoding/xml"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/tlsmode"
)

func selfSigned(names ...string) func(*testNet) tls.Certificate {
	return func(n *testNet) tls.Certificate { return testpki.SelfSigned(n.t, names...) }
}

func caLeaf(names ...string) func(*testNet) tls.Certificate {
	return func(n *testNet) tls.Certificate { return n.ca.Leaf(n.t, names...) }
}

func xmppAddrOnly(domain string) func(*testNet) tls.Certificate {
	return func(n *testNet) tls.Certificate {
		return n.ca.Issue(n.t, testpki.Spec{XmppAddrs: []string{domain}, CommonName: "not-the-domain"})
	}
}

func srvIDOnly(domain string) func(*testNet) tls.Certificate {
	return func(n *testNet) tls.Certificate {
		return n.ca.Issue(n.t, testpki.Spec{SRVNames: []string{"_xmpp-server." + domain}, CommonName: "not-the-domain"})
	}
}

func expired(names ...string) func(*testNet) tls.Certificate {
	return func(n *testNet) tls.Certificate {
		return n.ca.Issue(n.t, testpki.Spec{DNSNames: names, NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	}
}

// blackHole accepts TCP connections and never writes.
func blackHole(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				for _, c := range conns {
					c.Close()
				}
				return
			}
			conns = append(conns, c)
		}
	}()
	t.Cleanup(func() { ln.Close(); <-done })
	return ln
}

func portOf(ln net.Listener) string { return strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) }

// rawPeer is a hand-driven S2S connection for protocol-violation tests.
type rawPeer struct {
	t    *testing.T
	conn net.Conn
	d    *xml.Decoder
}

func dialRaw(t *testing.T, nd *node) *rawPeer {
	t.Helper()
	c, err := net.Dial("tcp", nd.addr.String())
	require.NoError(t, err)
	c.SetDeadline(time.Now().Add(10 * time.Second))
	t.Cleanup(func() { c.Close() })
	return &rawPeer{t: t, conn: c, d: xml.NewDecoder(c)}
}

func (p *rawPeer) send(s string) {
	p.t.Helper()
	_, err := io.WriteString(p.conn, s)
	require.NoError(p.t, err)
}

const rawHeader = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' xmlns:db='jabber:server:dialback' from='a.test' to='b.test' version='1.0'>"

// until reads tokens until a start element with the given local name, and
// returns it with the element's inner text for stream errors.
func (p *rawPeer) until(local string) (xml.StartElement, error) {
	for range 1000 {
		tok, err := p.d.Token()
		if err != nil {
			return xml.StartElement{}, err
		}
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == local {
			return se.Copy(), nil
		}
	}
	return xml.StartElement{}, errors.New("not found")
}

// streamError reads up to the peer's stream error and returns its condition.
func (p *rawPeer) streamError() string {
	p.t.Helper()
	_, err := p.until("error")
	require.NoError(p.t, err, "expected a stream error")
	for range 100 {
		tok, err := p.d.Token()
		require.NoError(p.t, err)
		if se, ok := tok.(xml.StartElement); ok && se.Name.Space == "urn:ietf:params:xml:ns:xmpp-streams" {
			return se.Name.Local
		}
	}
	return ""
}

func TestInboundStreamErrors(t *testing.T) {
	tests := []struct {
		name string
		mode tlsmode.Mode
		send []string
		want string
	}{
		{name: "unknown host", mode: tlsmode.NoTLS, send: []string{strings.Replace(rawHeader, "to='b.test'", "to='nothere.test'", 1)}, want: "host-unknown"},
		{name: "wrong stream namespace", mode: tlsmode.NoTLS, send: []string{"<stream:stream xmlns='jabber:server' xmlns:stream='urn:wrong' to='b.test' version='1.0'>"}, want: "invalid-namespace"},
		{name: "wrong content namespace", mode: tlsmode.NoTLS, send: []string{strings.Replace(rawHeader, "xmlns='jabber:server'", "xmlns='jabber:client'", 1)}, want: "invalid-namespace"},
		{name: "no version with TLS required", mode: tlsmode.Required, send: []string{strings.Replace(rawHeader, " version='1.0'", "", 1)}, want: "unsupported-version"},
		{name: "malformed version", mode: tlsmode.NoTLS, send: []string{strings.Replace(rawHeader, "version='1.0'", "version='one'", 1)}, want: "unsupported-version"},
		{name: "invalid from", mode: tlsmode.NoTLS, send: []string{strings.Replace(rawHeader, "from='a.test'", "from='not a domain'", 1)}, want: "invalid-from"},
		{name: "not well-formed", mode: tlsmode.NoTLS, send: []string{rawHeader, "<<>"}, want: "not-well-formed"},
		{name: "comment", mode: tlsmode.NoTLS, send: []string{rawHeader, "<!-- hi -->"}, want: "restricted-xml"},
		{name: "processing instruction", mode: tlsmode.NoTLS, send: []string{rawHeader, "<?foo bar?>"}, want: "restricted-xml"},
		{name: "entity", mode: tlsmode.NoTLS, send: []string{rawHeader, "<db:result from='a.test' to='b.test'>&xxe;</db:result>"}, want: "restricted-xml"},
		{name: "stanza before auth", mode: tlsmode.NoTLS, send: []string{rawHeader, "<message from='juliet@a.test' to='romeo@b.test'><body>hi</body></message>"}, want: "not-authorized"},
		{name: "stanza while dialback pending", mode: tlsmode.NoTLS, send: []string{rawHeader, "<db:result from='a.test' to='b.test'>0123</db:result><message from='juliet@a.test' to='romeo@b.test'><body>hi</body></message>"}, want: "not-authorized"},
		{name: "unknown element", mode: tlsmode.NoTLS, send: []string{rawHeader, "<foo xmlns='urn:example'/>"}, want: "unsupported-stanza-type"},
		{name: "malformed dialback", mode: tlsmode.NoTLS, send: []string{rawHeader, "<db:result from='a.test'>key</db:result>"}, want: "improper-addressing"},
		{name: "oversized element", mode: tlsmode.NoTLS, send: []string{rawHeader, "<db:result from='a.test' to='b.test'>" + strings.Repeat("x", 70000) + "</db:result>"}, want: "policy-violation"},
		{name: "text at top level", mode: tlsmode.NoTLS, send: []string{rawHeader, "hello<foo/>"}, want: "bad-format"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t)
			ep := n.endpoint([]string{"b.test"}, withMode(tc.mode))
			ep.MaxStanzaSize = 64 << 10
			b := n.listen(ep, false)
			p := dialRaw(t, b)
			for _, s := range tc.send {
				p.send(s)
			}
			assert.Equal(t, tc.want, p.streamError())
			b.nothing(t)
		})
	}
}

// The stream is closed with <connection-timeout/> when a peer does not
// authenticate in time.
func TestInboundNegotiationTimeout(t *testing.T) {
	n := newTestNet(t)
	ep := n.endpoint([]string{"b.test"}, withMode(tlsmode.NoTLS))
	ep.NegotiationTimeout = 300 * time.Millisecond
	b := n.listen(ep, false)
	p := dialRaw(t, b)
	start := time.Now()
	p.send(rawHeader)
	assert.Equal(t, "connection-timeout", p.streamError())
	assert.Less(t, time.Since(start), 3*time.Second)
}

// In TLS-required mode a db:result before STARTTLS gets a dialback error
// <policy-violation/> and the stream stays open (XEP-0220, spec §13.2).
func TestDialbackBeforeTLSRequired(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.Required))
	p := dialRaw(t, b)
	p.send(rawHeader)
	feat, err := p.until("starttls")
	require.NoError(t, err)
	assert.Equal(t, tlsmode.NS, feat.Name.Space)
	_, err = p.until("required")
	require.NoError(t, err)
	p.send("<db:result from='a.test' to='b.test'>abcd</db:result>")
	res, err := p.until("result")
	require.NoError(t, err)
	assert.Contains(t, res.Attr, xml.Attr{Name: xml.Name{Local: "type"}, Value: "error"})
	_, err = p.until("policy-violation")
	require.NoError(t, err)
	// Unknown target domain: item-not-found, stream still open.
	p.send("<db:result from='a.test' to='other.test'>abcd</db:result>")
	_, err = p.until("item-not-found")
	require.NoError(t, err)
}

// A NoTLS server answers <starttls/> with <failure/> and closes.
func TestStartTLSRefusedInNoTLSMode(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	p := dialRaw(t, b)
	p.send(rawHeader)
	_, err := p.until("features")
	require.NoError(t, err)
	p.send("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
	f, err := p.until("failure")
	require.NoError(t, err)
	assert.Equal(t, tlsmode.NS, f.Name.Space)
}

// The authoritative role answers db:verify with the shared secret, without
// any authentication.
func TestAuthoritativeRole(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	key := secretFor("b.test").Key("a.test", "b.test", "S1")
	tests := []struct{ verify, want string }{
		{"<db:verify from='a.test' to='b.test' id='S1'>" + key + "</db:verify>", "valid"},
		{"<db:verify from='a.test' to='b.test' id='S2'>" + key + "</db:verify>", "invalid"},
		{"<db:verify from='a.test' to='b.test' id='S1'>\n " + key + " \n</db:verify>", "valid"},
		{"<db:verify from='a.test' to='c.test' id='S1'>" + key + "</db:verify>", "error"},
	}
	p := dialRaw(t, b)
	p.send(rawHeader)
	for _, tc := range tests {
		p.send(tc.verify)
		v, err := p.until("verify")
		require.NoError(t, err)
		typ := ""
		for _, a := range v.Attr {
			if a.Name.Local == "type" {
				typ = a.Value
			}
		}
		assert.Equal(t, tc.want, typ, tc.verify)
	}
}

// authenticatedRaw opens a raw stream to b claiming a.test and authenticates
// it with a correct dialback key (a.test's authoritative server is a real
// node), so that post-authentication violations can be sent by hand.
func authenticatedRaw(t *testing.T) (*rawPeer, *node) {
	n := newTestNet(t)
	n.server([]string{"a.test", "a2.test"}, withMode(tlsmode.NoTLS))
	b := n.server([]string{"b.test", "b2.test"}, withMode(tlsmode.NoTLS))
	p := dialRaw(t, b)
	p.send(rawHeader)
	h, err := p.until("stream")
	require.NoError(t, err)
	var id string
	for _, a := range h.Attr {
		if a.Name.Local == "id" {
			id = a.Value
		}
	}
	require.NotEmpty(t, id)
	p.send("<db:result from='a.test' to='b.test'>" + secretFor("a.test").Key("b.test", "a.test", id) + "</db:result>")
	res, err := p.until("result")
	require.NoError(t, err)
	require.Contains(t, res.Attr, xml.Attr{Name: xml.Name{Local: "type"}, Value: "valid"})
	return p, b
}

func TestAuthorizedStreamAddressing(t *testing.T) {
	tests := []struct{ name, stanza, want string }{
		{"no to", "<message from='juliet@a.test'><body>x</body></message>", "improper-addressing"},
		{"no from", "<message to='romeo@b.test'><body>x</body></message>", "improper-addressing"},
		{"invalid to", "<message from='juliet@a.test' to='@@b.test'><body>x</body></message>", "improper-addressing"},
		{"forged from domain", "<message from='eve@evil.test' to='romeo@b.test'><body>x</body></message>", "invalid-from"},
		{"to a domain not served", "<message from='juliet@a.test' to='romeo@c.test'><body>x</body></message>", "host-unknown"},
		{"to a served domain not validated for the sender", "<message from='juliet@a.test' to='romeo@b2.test'><body>x</body></message>", "host-unknown"},
		{"not a stanza", "<foo xmlns='jabber:server'/>", "unsupported-stanza-type"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			p, b := authenticatedRaw(t)
			// A good stanza is delivered first, proving the stream works.
			p.send("<message from='juliet@a.test' to='romeo@b.test'><body>ok</body></message>")
			assert.Contains(t, string(b.receive(t).XML), "<body>ok</body>")
			p.send(tc.stanza)
			assert.Equal(t, tc.want, p.streamError())
			b.nothing(t)
		})
	}
}

// XEP-0220 §3.1: a typed db:result on an inbound stream is unsolicited and
// must not authorize anything.
func TestUnsolicitedDialbackResultIgnored(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	p := dialRaw(t, b)
	p.send(rawHeader)
	p.send("<db:result from='a.test' to='b.test' type='valid'/>")
	p.send("<message from='juliet@a.test' to='romeo@b.test'><body>x</body></message>")
	assert.Equal(t, "not-authorized", p.streamError())
	b.nothing(t)
}

// A stanza keeps its payload namespaces and escaping when it crosses.
func TestStanzaCanonicalForm(t *testing.T) {
	p, b := authenticatedRaw(t)
	p.send(`<message from='juliet@a.test' to='romeo@b.test' xml:lang='en'><body>a &lt; b &amp; "c"</body><x:x xmlns:x='urn:example:x' x:attr='1'><y/></x:x></message>`)
	got := b.receive(t)
	assert.Equal(t, `<message from='juliet@a.test' to='romeo@b.test' xml:lang='en'><body>a &lt; b &amp; "c"</body><x xmlns='urn:example:x' xmlns:a0='urn:example:x' a0:attr='1'><y xmlns='jabber:server'></y></x></message>`, string(got.XML))
	again, err := s2s.ParseStanza(got.XML)
	require.NoError(t, err)
	assert.Equal(t, got.XML, again.XML, "canonical form is stable")
}
