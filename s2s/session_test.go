package s2s_test

import (
	"crypto/tls"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"
	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/tlsmode"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestSecurityModeMatrix(t *testing.T) {
	modes := []tlsmode.Mode{tlsmode.NoTLS, tlsmode.Optional, tlsmode.Required}
	// want[local][peer]: "" plaintext, "tls", or the stream condition we send.
	want := map[tlsmode.Mode]map[tlsmode.Mode]string{
		tlsmode.NoTLS:    {tlsmode.NoTLS: "", tlsmode.Optional: "", tlsmode.Required: "unsupported-feature"},
		tlsmode.Optional: {tlsmode.NoTLS: "", tlsmode.Optional: "tls", tlsmode.Required: "tls"},
		tlsmode.Required: {tlsmode.NoTLS: "policy-violation", tlsmode.Optional: "tls", tlsmode.Required: "tls"},
	}
	for _, local := range modes {
		for _, peer := range modes {
			t.Run(local.String()+"→"+peer.String(), func(t *testing.T) {
				n := newTestNet(t)
				a := n.server([]string{"a.test"}, withMode(local))
				b := n.server([]string{"b.test"}, withMode(peer))
				ctx := ctxT(t, 10*time.Second)
				s, err := a.ep.Dial(ctx, "a.test", "b.test")
				exp := want[local][peer]
				if exp != "" && exp != "tls" {
					require.Error(t, err)
					assert.ErrorIs(t, err, stream.Error{Err: exp})
					var se *s2s.Error
					require.ErrorAs(t, err, &se)
					assert.True(t, se.Sent, "we send the stream error")
					b.nothing(t)
					return
				}
				require.NoError(t, err)
				defer s.Close()
				info := s.Info()
				assert.Equal(t, exp == "tls", info.TLS)
				if exp == "tls" {
					assert.Equal(t, s2s.AuthExternal, info.Auth, "both certificates valid: SASL EXTERNAL")
				} else {
					assert.Equal(t, s2s.AuthDialback, info.Auth)
				}
				in := b.inboundConnected(t)
				assert.Equal(t, exp == "tls", in.TLS)
				assert.Equal(t, "b.test", in.Local)
				assert.Equal(t, "a.test", in.Remote)
				require.NoError(t, s.Send(ctx, message(t, "juliet@a.test/balcony", "romeo@b.test", "hi")))
				got := b.receive(t)
				assert.Equal(t, "romeo@b.test", got.To.String())
				assert.Contains(t, string(got.XML), "<body>hi</body>")
			})
		}
	}
}

func TestDialbackRightSecret(t *testing.T) {
	n := newTestNet(t)
	a := n.server([]string{"a.test"}, withMode(tlsmode.NoTLS))
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	ctx := ctxT(t, 10*time.Second)
	s, err := a.ep.Dial(ctx, "a.test", "b.test")
	require.NoError(t, err)
	defer s.Close()
	info := s.Info()
	assert.Equal(t, s2s.AuthDialback, info.Auth)
	assert.Equal(t, s2s.Connected, info.State)
	assert.Len(t, info.ID, 32, "128-bit hex stream id")
	assert.Equal(t, []s2s.PairAuth{{Pair: s2s.Pair{Local: "a.test", Remote: "b.test"}, Auth: s2s.AuthDialback}}, info.Pairs)
	assert.True(t, contains(n.log.String(), "Scheduling dialback timeout in 30 seconds", "state=PENDING->CONNECTED"))
	in := b.inboundConnected(t)
	assert.Equal(t, s2s.AuthDialback, in.Auth)
	assert.Equal(t, info.ID, in.ID, "both sides agree on the stream id")
	require.NoError(t, s.Send(ctx, message(t, "a@a.test", "b@b.test", "x")))
	b.receive(t)
}

func TestDialbackWrongSecret(t *testing.T) {
	n := newTestNet(t)
	// a.test's authoritative server has a different secret from the node
	// that originates: every key it is asked about is invalid.
	n.server([]string{"a.test"}, withMode(tlsmode.NoTLS))
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	originator := n.endpoint([]string{"a.test"}, withMode(tlsmode.NoTLS))
	originator.Keys = secretFor("somebody else")
	ctx := ctxT(t, 10*time.Second)
	s, err := originator.Dial(ctx, "a.test", "b.test")
	require.Error(t, err)
	assert.Nil(t, s)
	assert.ErrorIs(t, err, s2s.ErrDialbackInvalid)
	b.nothing(t)
	select {
	case err := <-b.errs:
		assert.ErrorIs(t, err, s2s.ErrDialbackInvalid, "receiving side closes the stream after invalid")
	case <-time.After(5 * time.Second):
		t.Fatal("receiving stream not closed after invalid")
	}
	assert.Contains(t, n.log.String(), "dialback key INVALID")
}

func TestSASLExternalOrDialback(t *testing.T) {
	tests := []struct {
		name         string
		aCert, bCert func(n *testNet) tls.Certificate
		requireValid bool
		wantAuth     s2s.AuthMethod
		wantCertErr  error // on a's outbound stream (b's certificate)
		wantErr      error
	}{
		{name: "both valid", wantAuth: s2s.AuthExternal},
		{name: "XmppAddr and SRV-ID only", aCert: xmppAddrOnly("a.test"), bCert: srvIDOnly("b.test"), wantAuth: s2s.AuthExternal},
		{name: "originating cert self-signed", aCert: selfSigned("a.test"), wantAuth: s2s.AuthDialback},
		{name: "originating cert wrong name", aCert: caLeaf("other.test"), wantAuth: s2s.AuthDialback},
		{name: "receiving cert expired", bCert: expired("b.test"), wantAuth: s2s.AuthDialback, wantCertErr: tlsmode.ErrCertExpired},
		{name: "receiving cert unknown issuer", bCert: selfSigned("b.test"), wantAuth: s2s.AuthDialback, wantCertErr: tlsmode.ErrCertUnknownIssuer},
		{name: "receiving cert unknown issuer, valid required", bCert: selfSigned("b.test"), requireValid: true, wantErr: s2s.ErrCertificate},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t)
			var aOpts, bOpts []nodeOpt
			if tc.aCert != nil {
				aOpts = append(aOpts, withCert(tc.aCert(n)))
			}
			if tc.bCert != nil {
				bOpts = append(bOpts, withCert(tc.bCert(n)))
			}
			a := n.server([]string{"a.test"}, aOpts...)
			a.ep.RequireValidCert = tc.requireValid
			b := n.server([]string{"b.test"}, bOpts...)
			ctx := ctxT(t, 10*time.Second)
			s, err := a.ep.Dial(ctx, "a.test", "b.test")
			if tc.wantErr != nil {
				require.ErrorIs(t, err, tc.wantErr)
				return
			}
			require.NoError(t, err)
			defer s.Close()
			info := s.Info()
			assert.True(t, info.TLS)
			assert.Equal(t, tc.wantAuth, info.Auth)
			if tc.wantCertErr != nil {
				assert.ErrorIs(t, info.CertError, tc.wantCertErr)
			} else {
				assert.NoError(t, info.CertError)
			}
			in := b.inboundConnected(t)
			assert.Equal(t, tc.wantAuth, in.Auth)
			require.NoError(t, s.Send(ctx, message(t, "a@a.test", "b@b.test", "x")))
			b.receive(t)
		})
	}
}

func TestMultiplexedPairs(t *testing.T) {
	n := newTestNet(t)
	a := n.server([]string{"a.test", "a2.test"}, withMode(tlsmode.NoTLS))
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	ctx := ctxT(t, 10*time.Second)
	s, err := a.ep.Dial(ctx, "a.test", "b.test")
	require.NoError(t, err)
	defer s.Close()
	// A pair not yet authorized cannot be used.
	err = s.Send(ctx, message(t, "x@a2.test", "y@b.test", "early"))
	require.ErrorIs(t, err, s2s.ErrNotAuthorized)
	require.NoError(t, s.Authorize(ctx, "a2.test", "b.test"))
	assert.Equal(t, []s2s.PairAuth{{Pair: s2s.Pair{Local: "a.test", Remote: "b.test"}, Auth: s2s.AuthDialback}, {Pair: s2s.Pair{Local: "a2.test", Remote: "b.test"}, Auth: s2s.AuthDialback}}, s.Info().Pairs)
	require.NoError(t, s.Send(ctx, message(t, "x@a.test", "y@b.test", "one")))
	require.NoError(t, s.Send(ctx, message(t, "x@a2.test", "y@b.test", "two")))
	assert.Equal(t, "a.test", b.receive(t).From.Domainpart())
	assert.Equal(t, "a2.test", b.receive(t).From.Domainpart())
	err = s.Authorize(ctx, "c.test", "b.test")
	assert.ErrorIs(t, err, s2s.ErrDomainNotServed)
}

func TestDirectTLSTarget(t *testing.T) {
	n := newTestNet(t)
	a := n.server([]string{"a.test"})
	b := n.listen(n.endpoint([]string{"b.test"}), true) // only _xmpps-server
	ctx := ctxT(t, 10*time.Second)
	s, err := a.ep.Dial(ctx, "a.test", "b.test")
	require.NoError(t, err)
	defer s.Close()
	info := s.Info()
	assert.True(t, info.TLS)
	assert.Equal(t, s2s.AuthExternal, info.Auth)
	in := b.inboundConnected(t)
	assert.True(t, in.TLS)
	assert.Contains(t, n.log.String(), "direct_tls=true")

	// A NoTLS node never uses a direct TLS target.
	c := n.endpoint([]string{"c.test"}, withMode(tlsmode.NoTLS))
	_, err = c.Dial(ctx, "c.test", "b.test")
	assert.ErrorIs(t, err, s2s.ErrNoTarget)
}

func TestAuthoritativeNeverAnswers(t *testing.T) {
	tests := []struct {
		name             string
		dialbackTimeout  time.Duration
		verifyTimeout    time.Duration
		wantErr          error
		wantDialbackCond stanza.Condition
	}{
		// The receiving server gives up first and says so.
		{name: "verify timeout", dialbackTimeout: 5 * time.Second, verifyTimeout: 300 * time.Millisecond, wantErr: s2s.ErrDialbackError, wantDialbackCond: stanza.RemoteServerTimeout},
		// We give up first.
		{name: "dialback timeout", dialbackTimeout: 300 * time.Millisecond, verifyTimeout: 5 * time.Second, wantErr: s2s.ErrTimeout},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := newTestNet(t)
			hole := blackHole(t)
			// a.test's authoritative server accepts TCP and never answers.
			require.NoError(t, n.dns.Zone().Add(
				"_xmpp-server._tcp.a.test. 300 IN SRV 0 0 "+portOf(hole)+" host.a.test.",
				"host.a.test. 300 IN A 127.0.0.1"))
			a := n.endpoint([]string{"a.test"}, withMode(tlsmode.NoTLS))
			a.DialbackTimeout = tc.dialbackTimeout
			b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
			b.ep.VerifyTimeout = tc.verifyTimeout
			ctx := ctxT(t, 20*time.Second)
			start := time.Now()
			_, err := a.Dial(ctx, "a.test", "b.test")
			elapsed := time.Since(start)
			require.ErrorIs(t, err, tc.wantErr)
			if tc.wantDialbackCond != "" {
				assert.ErrorIs(t, err, stanza.Error{Condition: tc.wantDialbackCond})
			}
			bound := min(tc.dialbackTimeout, tc.verifyTimeout)
			assert.Less(t, elapsed, bound+2*time.Second, "gave up within the configured bound")
			assert.GreaterOrEqual(t, elapsed, bound)
			b.nothing(t)
		})
	}
}

// Requiring a valid certificate for one remote domain refuses plaintext
// and unverifiable peers of that domain only.
func TestRequireValidCertPerDomain(t *testing.T) {
	n := newTestNet(t)
	a := n.server([]string{"a.test"}, withMode(tlsmode.Optional))
	a.ep.RequireValidCertFor = func(remote string) bool { return remote == "b.test" }
	b := n.server([]string{"b.test"}, withMode(tlsmode.NoTLS))
	c := n.server([]string{"c.test"}, withMode(tlsmode.NoTLS))
	ctx := ctxT(t, 10*time.Second)

	_, err := a.ep.Dial(ctx, "a.test", "b.test")
	require.ErrorIs(t, err, s2s.ErrCertificate)
	assert.ErrorIs(t, err, stream.PolicyViolation)
	b.nothing(t)

	s, err := a.ep.Dial(ctx, "a.test", "c.test") // no requirement for c.test
	require.NoError(t, err)
	s.Close()
	c.inboundConnected(t)

	// Inbound: b.test insists on a valid certificate from a.test, which
	// comes in plaintext: the dialback request is refused.
	b.ep.RequireValidCertFor = func(remote string) bool { return remote == "a.test" }
	noTLS := n.endpoint([]string{"a.test"}, withMode(tlsmode.NoTLS))
	_, err = noTLS.Dial(ctx, "a.test", "b.test")
	require.ErrorIs(t, err, s2s.ErrDialbackError)
	assert.ErrorIs(t, err, stanza.Error{Condition: stanza.PolicyViolation})
}
