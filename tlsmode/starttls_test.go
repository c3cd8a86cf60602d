package tlsmode_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"io"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// We are a.test connecting to b.test.
const (
	localDomain  = "a.test"
	remoteDomain = "b.test"
)

// Exact wire forms.
const (
	wireStartTLS = `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`
	wireProceed  = `<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`
	wireFailure  = `<failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`
	// What the xml.Encoder behind a mellium session makes of List's tokens.
	listedOptional = `<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"></starttls>`
	listedRequired = `<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"><required></required></starttls>`
)

func TestStartTLSNotOfferedInNoTLS(t *testing.T) {
	t.Parallel()
	f, ok := tlsmode.StartTLS(tlsmode.NoTLS, &tls.Config{})
	assert.False(t, ok)
	assert.Empty(t, f.Name.Local)
	assert.Nil(t, f.List)
	assert.Nil(t, f.Negotiate)
}

func TestStartTLSList(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		mode tlsmode.Mode
		want string
	}{
		{tlsmode.Optional, listedOptional},
		{tlsmode.Required, listedRequired},
		{tlsmode.Mode(9), listedRequired}, // invalid fails closed
	} {
		f, ok := tlsmode.StartTLS(tc.mode, nil)
		require.True(t, ok, tc.mode)
		assert.Equal(t, xml.Name{Space: tlsmode.NS, Local: "starttls"}, f.Name)
		assert.Equal(t, xmpp.Secure, f.Prohibited, "never re-offered once TLS is up")
		assert.Zero(t, f.Necessary)

		var b bytes.Buffer
		e := xml.NewEncoder(&b)
		req, err := f.List(context.Background(), e, xml.StartElement{Name: f.Name})
		require.NoError(t, err)
		require.NoError(t, e.Flush())
		assert.Equal(t, tc.want, b.String(), tc.mode)
		// Always true for mellium's negotiator, so that the stream restarts
		// after TLS; the wire marker is the <required/> child.
		assert.True(t, req)

		// What we list, we parse back as the same peer behaviour.
		peer := parse(t, f, b.String())
		_, required := tc.mode.Offer()
		assert.Equal(t, required, peer == tlsmode.PeerRequired)
	}
}

func parse(t *testing.T, f xmpp.StreamFeature, listing string) tlsmode.Peer {
	t.Helper()
	d := xml.NewDecoder(strings.NewReader(listing))
	tok, err := d.Token()
	require.NoError(t, err)
	start := tok.(xml.StartElement)
	req, data, err := f.Parse(context.Background(), d, &start)
	require.NoError(t, err)
	assert.True(t, req)
	peer, ok := data.(tlsmode.Peer)
	require.True(t, ok, "data is a Peer, got %T", data)
	return peer
}

func TestStartTLSParse(t *testing.T) {
	t.Parallel()
	f, ok := tlsmode.StartTLS(tlsmode.Optional, nil)
	require.True(t, ok)
	for _, tc := range []struct {
		listing string
		want    tlsmode.Peer
	}{
		{`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`, tlsmode.PeerOptional},
		{`<starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"></starttls>`, tlsmode.PeerOptional},
		{`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>`, tlsmode.PeerRequired},
		{`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required></required></starttls>`, tlsmode.PeerRequired},
		{`<tls:starttls xmlns:tls='urn:ietf:params:xml:ns:xmpp-tls'><tls:required/></tls:starttls>`, tlsmode.PeerRequired},
		{"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>\n  <required/>\n</starttls>", tlsmode.PeerRequired},
		// <required/> in another namespace is not the STARTTLS marker.
		{`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required xmlns='urn:example'/></starttls>`, tlsmode.PeerOptional},
		{`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><x xmlns='urn:example'><required/></x></starttls>`, tlsmode.PeerOptional},
	} {
		assert.Equal(t, tc.want, parse(t, f, tc.listing), tc.listing)
	}

	for _, bad := range []string{
		`<endtls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>`,
		`<starttls xmlns='urn:example'/>`,
		`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required></starttls>`,
	} {
		d := xml.NewDecoder(strings.NewReader(bad))
		tok, err := d.Token()
		require.NoError(t, err)
		start := tok.(xml.StartElement)
		_, _, err = f.Parse(context.Background(), d, &start)
		assert.Error(t, err, bad)
	}
}

// recConn records what is written to a connection (before TLS this is the
// XML; after, ciphertext).
type recConn struct {
	net.Conn
	mu  sync.Mutex
	out bytes.Buffer
}

func (c *recConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	c.out.Write(p)
	c.mu.Unlock()
	return c.Conn.Write(p)
}

func (c *recConn) written() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String()
}

// tcpPair connects two loopback TCP sockets.
func tcpPair(t *testing.T) (initiating, receiving *recConn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	ic, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	rc := <-accepted
	require.NotNil(t, rc)
	initiating, receiving = &recConn{Conn: ic}, &recConn{Conn: rc}
	t.Cleanup(func() {
		_ = initiating.Close()
		_ = receiving.Close()
	})
	return initiating, receiving
}

type outcome struct {
	session *xmpp.Session
	err     error
}

// testTimeout bounds every negotiation. Connection deadlines back up the
// context: mellium resets the deadline right after a context fires, so a
// blocked read may miss the cancellation.
const testTimeout = 10 * time.Second

// receiveSession is the receiving side of an S2S session from a.test.
//
// It is xmpp.ReceiveServerSession except that the origin is known up front:
// in mellium v0.22.0 ReceiveServerSession fails on every initial header that
// carries a 'from' (the negotiator compares the new 'from' with an origin
// it captured before reading the header), and S2S initiators must send one.
func receiveSession(ctx context.Context, conn net.Conn, features ...xmpp.StreamFeature) (*xmpp.Session, error) {
	return xmpp.NewSession(ctx, jid.MustParse(remoteDomain), jid.MustParse(localDomain), conn, xmpp.Received|xmpp.S2S,
		xmpp.NewNegotiator(func(*xmpp.Session, *xmpp.StreamConfig) xmpp.StreamConfig {
			return xmpp.StreamConfig{Features: features}
		}))
}

// negotiate runs an initiating (a.test → b.test) and a receiving mellium S2S
// session against each other over loopback TCP. A side that fails closes
// its connection so that the other does not wait. If wantBoth is false the
// receiving side is not expected to finish on its own, so the initiating
// connection is closed once that side is done.
func negotiate(t *testing.T, initFeatures, recvFeatures []xmpp.StreamFeature, wantBoth bool) (init, recv outcome, initConn, recvConn *recConn) {
	t.Helper()
	initConn, recvConn = tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	require.NoError(t, initConn.SetDeadline(time.Now().Add(testTimeout+time.Second)))
	require.NoError(t, recvConn.SetDeadline(time.Now().Add(testTimeout+time.Second)))

	recvDone := make(chan outcome, 1)
	go func() {
		s, err := receiveSession(ctx, recvConn, recvFeatures...)
		if err != nil {
			_ = recvConn.Close()
		}
		recvDone <- outcome{s, err}
	}()
	s, err := xmpp.NewServerSession(ctx, jid.MustParse(remoteDomain), jid.MustParse(localDomain), initConn, initFeatures...)
	init = outcome{s, err}
	if err != nil || !wantBoth {
		_ = initConn.Close()
	}
	recv = <-recvDone
	return init, recv, initConn, recvConn
}

const doneNS = "urn:xmppfed:test:done"

// doneFeature ends negotiation after TLS, as resource binding does for c2s.
// Without a feature to negotiate, mellium's receiving side waits for the
// initiator to pick one (S2S authentication, dialback, is not a mellium
// stream feature). It is listed only on a secure stream, so its running
// (counted in ran) proves that the stream was restarted after TLS.
func doneFeature(ran *atomic.Int32) xmpp.StreamFeature {
	name := xml.Name{Space: doneNS, Local: "done"}
	return xmpp.StreamFeature{
		Name:      name,
		Necessary: xmpp.Secure,
		List: func(_ context.Context, w xmlstream.TokenWriter, start xml.StartElement) (bool, error) {
			if err := w.EncodeToken(start); err != nil {
				return true, err
			}
			return true, w.EncodeToken(start.End())
		},
		Parse: func(_ context.Context, d *xml.Decoder, _ *xml.StartElement) (bool, any, error) {
			return true, nil, d.Skip()
		},
		Negotiate: func(_ context.Context, s *xmpp.Session, _ any) (xmpp.SessionState, io.ReadWriter, error) {
			ran.Add(1)
			if s.State()&xmpp.Received != 0 {
				r := s.TokenReader()
				defer r.Close()
				d := xml.NewTokenDecoder(r)
				if _, err := d.Token(); err != nil {
					return 0, nil, err
				}
				return xmpp.Ready, nil, d.Skip()
			}
			w := s.TokenWriter()
			defer w.Close()
			start := xml.StartElement{Name: name}
			if err := w.EncodeToken(start); err != nil {
				return 0, nil, err
			}
			if err := w.EncodeToken(start.End()); err != nil {
				return 0, nil, err
			}
			return xmpp.Ready, nil, w.Flush()
		},
	}
}

// dialbackListing is what a peer without TLS typically lists: the
// informational dialback feature (not negotiated through mellium).
func dialbackListing() xmpp.StreamFeature {
	return xmpp.StreamFeature{
		Name: xml.Name{Space: "urn:xmpp:features:dialback", Local: "dialback"},
		List: func(_ context.Context, w xmlstream.TokenWriter, start xml.StartElement) (bool, error) {
			errs := xml.StartElement{Name: xml.Name{Local: "errors"}}
			for _, tok := range []xml.Token{start, errs, errs.End(), start.End()} {
				if err := w.EncodeToken(tok); err != nil {
					return false, err
				}
			}
			return false, nil
		},
		Parse: func(_ context.Context, d *xml.Decoder, _ *xml.StartElement) (bool, any, error) {
			return false, nil, d.Skip()
		},
	}
}

func mustStartTLS(t *testing.T, mode tlsmode.Mode, cfg *tls.Config) xmpp.StreamFeature {
	t.Helper()
	f, ok := tlsmode.StartTLS(mode, cfg)
	require.True(t, ok)
	return f
}

// TestStartTLSNegotiation brings TLS up between two mellium sessions for
// every pair of modes that use TLS. The subtests share one client and one
// server tls.Config to let the race detector catch any write to them.
func TestStartTLSNegotiation(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, remoteDomain)}}
	clientCfg := &tls.Config{RootCAs: ca.Pool()} // no ServerName: the feature must set it

	modes := []tlsmode.Mode{tlsmode.Optional, tlsmode.Required}
	t.Run("group", func(t *testing.T) {
		for _, initMode := range modes {
			for _, recvMode := range modes {
				t.Run(initMode.String()+"→"+recvMode.String(), func(t *testing.T) {
					t.Parallel()
					var initRestarted, recvRestarted atomic.Int32
					init, recv, initConn, recvConn := negotiate(t,
						[]xmpp.StreamFeature{mustStartTLS(t, initMode, clientCfg), doneFeature(&initRestarted)},
						[]xmpp.StreamFeature{mustStartTLS(t, recvMode, serverCfg), doneFeature(&recvRestarted)},
						true)
					require.NoError(t, init.err)
					require.NoError(t, recv.err)
					assert.Equal(t, int32(1), initRestarted.Load(), "initiating side restarted the stream after TLS")
					assert.Equal(t, int32(1), recvRestarted.Load(), "receiving side restarted the stream after TLS")

					for side, s := range map[string]*xmpp.Session{"initiating": init.session, "receiving": recv.session} {
						assert.NotZero(t, s.State()&xmpp.Secure, side)
						assert.NotZero(t, s.State()&xmpp.Ready, side, "stream restarted and negotiation finished")
						cs := s.ConnectionState()
						assert.True(t, cs.HandshakeComplete, side)
						assert.Equal(t, remoteDomain, cs.ServerName, side)
						assert.GreaterOrEqual(t, cs.Version, uint16(tls.VersionTLS12), side)
					}
					peerCerts := init.session.ConnectionState().PeerCertificates
					require.NotEmpty(t, peerCerts)
					assert.Equal(t, []string{remoteDomain}, peerCerts[0].DNSNames)

					listing := listedOptional
					if recvMode == tlsmode.Required {
						listing = listedRequired
					}
					assert.Contains(t, recvConn.written(), listing+"</stream:features>"+wireProceed)
					assert.Equal(t, 1, strings.Count(initConn.written(), wireStartTLS))
				})
			}
		}
	})
	assert.Empty(t, clientCfg.ServerName, "caller's config untouched")
	assert.Zero(t, clientCfg.MinVersion, "caller's config untouched")
	assert.Zero(t, serverCfg.MinVersion, "caller's config untouched")
}

// TestStartTLSRequestsClientCertificate: the receiving side asks for the
// initiator's certificate (for XEP-0178/XEP-0344) and accepts one it cannot
// verify, leaving identity to later checks (ServerConfig).
func TestStartTLSRequestsClientCertificate(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	serverCfg := &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, remoteDomain)}}
	clientCfg := &tls.Config{RootCAs: ca.Pool(), Certificates: []tls.Certificate{testpki.SelfSigned(t, localDomain)}}
	var initRestarted, recvRestarted atomic.Int32
	init, recv, _, _ := negotiate(t,
		[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, clientCfg), doneFeature(&initRestarted)},
		[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, serverCfg), doneFeature(&recvRestarted)},
		true)
	require.NoError(t, init.err)
	require.NoError(t, recv.err)
	peerCerts := recv.session.ConnectionState().PeerCertificates
	require.Len(t, peerCerts, 1)
	assert.Equal(t, []string{localDomain}, peerCerts[0].DNSNames)
	assert.Zero(t, serverCfg.ClientAuth, "caller's config untouched")
}

// TestStartTLSPeerWithoutTLS: the receiving server lists no STARTTLS (§6.2
// first column). Mellium still calls the feature, to resist downgrades;
// Decide governs what happens.
func TestStartTLSPeerWithoutTLS(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	clientCfg := &tls.Config{RootCAs: ca.Pool()}

	t.Run("optional stays plaintext", func(t *testing.T) {
		t.Parallel()
		init, _, initConn, _ := negotiate(t,
			[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Optional, clientCfg)},
			[]xmpp.StreamFeature{dialbackListing()},
			false)
		require.NoError(t, init.err)
		assert.NotZero(t, init.session.State()&xmpp.Ready)
		assert.Zero(t, init.session.State()&xmpp.Secure)
		assert.False(t, init.session.ConnectionState().HandshakeComplete)
		assert.NotContains(t, initConn.written(), "starttls")
	})

	t.Run("required refuses", func(t *testing.T) {
		t.Parallel()
		init, _, initConn, _ := negotiate(t,
			[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, clientCfg)},
			[]xmpp.StreamFeature{dialbackListing()},
			false)
		require.Error(t, init.err)
		assert.ErrorIs(t, init.err, tlsmode.ErrTLSRequired)
		assert.ErrorIs(t, init.err, stream.PolicyViolation)
		var pe *tlsmode.PolicyError
		require.ErrorAs(t, init.err, &pe)
		assert.Equal(t, tlsmode.PeerNoTLS, pe.Peer)
		assert.NotContains(t, initConn.written(), "starttls", "refused before sending anything")
	})
}

// TestStartTLSVerifiesRemoteDomain: the certificate must name the remote
// domain. One for our own (local) domain, which is what mellium's
// xmpp.StartTLS would check by default, is refused.
func TestStartTLSVerifiesRemoteDomain(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	for _, tc := range []struct {
		name  string
		cert  tls.Certificate
		roots *x509.CertPool
	}{
		{"local domain", ca.Leaf(t, localDomain), ca.Pool()},
		{"other domain", ca.Leaf(t, "c.test"), ca.Pool()},
		{"srv target host", ca.Leaf(t, "xmpp.b.test"), ca.Pool()},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			init, recv, _, _ := negotiate(t,
				[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, &tls.Config{RootCAs: tc.roots})},
				[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, &tls.Config{Certificates: []tls.Certificate{tc.cert}})},
				false)
			var hostErr x509.HostnameError
			require.ErrorAs(t, init.err, &hostErr)
			assert.Equal(t, remoteDomain, hostErr.Host)
			assert.Error(t, recv.err)
		})
	}

	t.Run("untrusted CA", func(t *testing.T) {
		t.Parallel()
		init, recv, _, _ := negotiate(t,
			[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, &tls.Config{RootCAs: testpki.NewCA(t).Pool()})},
			[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, remoteDomain)}})},
			false)
		var unknown x509.UnknownAuthorityError
		require.ErrorAs(t, init.err, &unknown)
		assert.Error(t, recv.err)
	})
}

// TestStartTLSReceiverWithoutCertificate: a receiving server that cannot do
// TLS answers <failure/> and closes the stream (RFC 6120 §5.4.2.2), never
// <proceed/>.
func TestStartTLSReceiverWithoutCertificate(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	for name, cfg := range map[string]*tls.Config{
		"nil":          nil,
		"empty":        {},
		"only roots":   {ClientCAs: ca.Pool()},
		"old versions": {MinVersion: tls.VersionTLS10},
	} {
		for _, recvMode := range []tlsmode.Mode{tlsmode.Optional, tlsmode.Required} {
			t.Run(name+"/"+recvMode.String(), func(t *testing.T) {
				t.Parallel()
				init, recv, initConn, recvConn := negotiate(t,
					[]xmpp.StreamFeature{mustStartTLS(t, tlsmode.Required, &tls.Config{RootCAs: ca.Pool()})},
					[]xmpp.StreamFeature{mustStartTLS(t, recvMode, cfg)},
					false)
				assert.ErrorIs(t, init.err, tlsmode.ErrTLSFailure)
				assert.ErrorIs(t, recv.err, tlsmode.ErrNoCertificate)
				assert.True(t, strings.HasSuffix(recvConn.written(), "</stream:features>"+wireFailure+"</stream:stream>"),
					"got %q", recvConn.written())
				assert.NotContains(t, recvConn.written(), "proceed")
				assert.True(t, strings.HasSuffix(initConn.written(), wireStartTLS), "got %q", initConn.written())
			})
		}
	}
}

// TestStartTLSReceiverRejectsOtherElement: mellium dispatches on namespace
// only; an element in the STARTTLS namespace other than <starttls/> gets
// <failure/>.
func TestStartTLSReceiverRejectsOtherElement(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	initConn, recvConn := tcpPair(t)
	ctx, cancel := context.WithTimeout(context.Background(), testTimeout)
	defer cancel()
	require.NoError(t, initConn.SetDeadline(time.Now().Add(testTimeout)))
	require.NoError(t, recvConn.SetDeadline(time.Now().Add(testTimeout)))
	feature := mustStartTLS(t, tlsmode.Required, &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, remoteDomain)}})
	recvDone := make(chan error, 1)
	go func() {
		_, err := receiveSession(ctx, recvConn, feature)
		recvDone <- err
	}()

	_, err := io.WriteString(initConn, `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' `+
		`from='a.test' to='b.test' version='1.0'>`)
	require.NoError(t, err)
	got := readUntil(t, initConn, "</stream:features>")
	assert.Contains(t, got, listedRequired)

	_, err = io.WriteString(initConn, wireProceed)
	require.NoError(t, err)
	assert.Equal(t, wireFailure+"</stream:stream>", readUntil(t, initConn, "</stream:stream>"))
	assert.Error(t, <-recvDone)
}

func readUntil(t *testing.T, r io.Reader, suffix string) string {
	t.Helper()
	var b []byte
	buf := make([]byte, 1)
	for !bytes.HasSuffix(b, []byte(suffix)) {
		_, err := r.Read(buf)
		require.NoError(t, err, "read so far: %q", b)
		b = append(b, buf[0])
	}
	return string(b)
}
