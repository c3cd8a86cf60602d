package s2s_test

import (
	"errors"
	"fmt"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stanza"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// A second pair whose key is invalid is refused with <forbidden/>; the
// stream and its first pair keep working (XEP-0220 §2.4).
func TestInvalidSecondPairForbidden(t *testing.T) {
	p, b := authenticatedRaw(t)
	p.send("<db:result from='a2.test' to='b.test'>0000</db:result>")
	_, err := p.until("forbidden")
	require.NoError(t, err)
	p.send("<message from='juliet@a.test' to='romeo@b.test'><body>still here</body></message>")
	assert.Contains(t, string(b.receive(t).XML), "still here")
	p.send("<message from='juliet@a2.test' to='romeo@b.test'><body>no</body></message>")
	assert.Equal(t, "invalid-from", p.streamError())
	b.nothing(t)
}

// A dialback verdict still pending must not land inside a SASL restart.
func TestSASLRefusedWhileDialbackPending(t *testing.T) {
	n := newTestNet(t)
	hole := blackHole(t)
	require.NoError(t, n.dns.Zone().Add(
		"_xmpp-server._tcp.slow.test. 300 IN SRV 0 0 "+portOf(hole)+" hole.test.",
		"hole.test. 300 IN A 127.0.0.1"))
	b := n.server([]string{"b.test"})
	b.ep.VerifyTimeout = 3 * time.Second
	p := dialRaw(t, b)
	p.startTLSRaw(n.ca.Leaf(t, "a.test"), rawHeader)
	p.send("<db:result from='slow.test' to='b.test'>00</db:result>")
	p.send("<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>")
	_, err := p.until("temporary-auth-failure")
	require.NoError(t, err)
}

// A target that accepts TCP and then says nothing does not stop Dial from
// trying the next SRV target.
func TestSilentTargetFailover(t *testing.T) {
	n := newTestNet(t)
	hole := blackHole(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	_ = b
	// b.test's real listener is at priority 0 (published by server);
	// republish: the black hole first, the real server second.
	n.dns.Zone().Remove("_xmpp-server._tcp.b.test.", 33)
	require.NoError(t, n.dns.Zone().Add(
		"_xmpp-server._tcp.b.test. 300 IN SRV 0 0 "+portOf(hole)+" hole.test.",
		fmt.Sprintf("_xmpp-server._tcp.b.test. 300 IN SRV 10 0 %d host.b.test.", b.addr.Port),
		"hole.test. 300 IN A 127.0.0.1"))
	n.server([]string{"a.test"}, withMode(tlsmode.NoTLS))
	a := n.endpoint([]string{"a.test"}, withMode(tlsmode.NoTLS))
	a.NegotiationTimeout = 300 * time.Millisecond
	s, err := a.Dial(ctxT(t, 10*time.Second), "a.test", "b.test")
	require.NoError(t, err)
	s.Close()
	assert.Contains(t, n.log.String(), "target failed, trying the next one")
}

// A per-domain valid-certificate requirement also holds for a target
// multiplexed onto another domain's stream.
func TestTargetMultiplexingHonoursRequireValidCert(t *testing.T) {
	n := newTestNet(t)
	a := n.server([]string{"a.test"}, withMode(tlsmode.Optional))
	n.server([]string{"b.test", "b2.test"}, withMode(tlsmode.NoTLS))
	a.ep.RequireValidCertFor = func(remote string) bool { return remote == "b2.test" }
	ctx := ctxT(t, 10*time.Second)
	s, err := a.ep.Dial(ctx, "a.test", "b.test")
	require.NoError(t, err)
	defer s.Close()
	err = s.Authorize(ctx, "a.test", "b2.test")
	require.ErrorIs(t, err, s2s.ErrCertificate)
	assert.False(t, s.Authorized("a.test", "b2.test"))
}

// The federation policy is asked before anything is done for a domain.
func TestRemotePolicy(t *testing.T) {
	n := newTestNet(t)
	denied := errors.New("domain on the deny list")
	a := n.server([]string{"a.test"}, withMode(tlsmode.NoTLS))
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	ctx := ctxT(t, 10*time.Second)

	a.ep.RemotePolicy = func(_, remote string) error {
		if remote == "b.test" {
			return denied
		}
		return nil
	}
	_, err := a.ep.Dial(ctx, "a.test", "b.test")
	require.ErrorIs(t, err, s2s.ErrPolicy)
	assert.ErrorIs(t, err, denied)
	assert.Empty(t, b.states, "b.test was never contacted")

	// Inbound: b denies a.test; a's authoritative server is never asked.
	a.ep.RemotePolicy = nil
	b.ep.RemotePolicy = func(_, remote string) error {
		if remote == "a.test" {
			return denied
		}
		return nil
	}
	_, err = a.ep.Dial(ctx, "a.test", "b.test")
	require.ErrorIs(t, err, s2s.ErrDialbackError)
	assert.ErrorIs(t, err, stanza.Error{Condition: stanza.PolicyViolation})
	assert.NotContains(t, n.log.String(), "node=b.test direction=outbound", "b opened no verify stream")
}

// Dialback for an IP address is refused without connecting anywhere.
func TestDialbackForIPLiteralRefused(t *testing.T) {
	n := newTestNet(t)
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	p := dialRaw(t, b)
	p.send(rawHeader)
	p.send("<db:result from='127.0.0.1' to='b.test'>00</db:result>")
	_, err := p.until("policy-violation")
	require.NoError(t, err)
}

func TestEndpointConfigRefused(t *testing.T) {
	ctx := ctxT(t, 5*time.Second)
	tests := []struct {
		name string
		ep   *s2s.Endpoint
	}{
		{"invalid mode", &s2s.Endpoint{Domains: []string{"a.test"}, Keys: secretFor("a.test"), Security: tlsmode.Mode(7)}},
		{"empty keyring", &s2s.Endpoint{Domains: []string{"a.test"}, Keys: dialback.Keyring{}, Security: tlsmode.NoTLS}},
		{"empty secret", &s2s.Endpoint{Domains: []string{"a.test"}, Keys: dialback.Generator{}, Security: tlsmode.NoTLS}},
		{"TLS required without a certificate", &s2s.Endpoint{Domains: []string{"a.test"}, Keys: secretFor("a.test")}},
		{"bad domain", &s2s.Endpoint{Domains: []string{"not a domain"}, Keys: secretFor("a.test"), Security: tlsmode.NoTLS}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c1, c2 := net.Pipe()
			defer c2.Close()
			err := tc.ep.ServeConn(ctx, c1, nil)
			assert.ErrorIs(t, err, s2s.ErrConfig)
		})
	}
}
