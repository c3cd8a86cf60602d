package tlsmode_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp"
	"mellium.im/xmpp/jid"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Bounds for the tests of a silent peer: negotiation gets ctxTimeout, must
// give up within maxGiveUp, and is forcibly unblocked (by closing the
// connection) after hangGuard so that a regression fails instead of hanging.
const (
	ctxTimeout = 200 * time.Millisecond
	maxGiveUp  = time.Second
	hangGuard  = 5 * time.Second
)

// silentPeerHeader is what b.test sends as receiving server: a response
// header and features listing STARTTLS. It then never says another word.
const silentPeerHeader = `<?xml version='1.0'?>` +
	`<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' ` +
	`xmlns:db='jabber:server:dialback' id='s1' from='b.test' to='a.test' version='1.0'>` +
	`<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls></stream:features>`

// lockedBuffer collects what a peer reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// bounded is the outcome of runBounded.
type bounded struct {
	err  error
	took time.Duration
	hung bool // still blocked after hangGuard; err is from after conn was closed
}

// runBounded runs f, which negotiates over conn, and reports its error and
// duration. If f is still running after hangGuard, conn is closed to release
// f, and hung is set. It may run on any goroutine (it does not use t).
func runBounded(conn net.Conn, f func() error) bounded {
	start := time.Now()
	done := make(chan error, 1)
	go func() { done <- f() }()
	select {
	case err := <-done:
		return bounded{err: err, took: time.Since(start)}
	case <-time.After(hangGuard):
		_ = conn.Close()
		return bounded{err: <-done, took: time.Since(start), hung: true}
	}
}

// checkGaveUp asserts that negotiation stopped soon after its context ended,
// with an error wrapping want (the context's error).
func checkGaveUp(t *testing.T, res bounded, want error) {
	t.Helper()
	require.False(t, res.hung, "negotiation ignored its context: still blocked after %v (error once the connection was closed: %v)", hangGuard, res.err)
	require.Error(t, res.err)
	assert.ErrorIs(t, res.err, want)
	assert.Less(t, res.took, maxGiveUp)
}

// TestInitiatorSilentPeerHonoursContext: the receiving server lists
// STARTTLS, then never answers our <starttls/>. Negotiation must give up
// when its context expires.
func TestInitiatorSilentPeerHonoursContext(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()

	var heard lockedBuffer
	peerDone := make(chan struct{})
	go func() {
		defer close(peerDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		if _, err := io.WriteString(c, silentPeerHeader); err != nil {
			return
		}
		_, _ = io.Copy(&heard, c) // until the initiator closes
	}()

	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()

	feature := mustStartTLS(t, tlsmode.Required, &tls.Config{RootCAs: testpki.NewCA(t).Pool()})
	ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
	defer cancel()
	res := runBounded(conn, func() error {
		_, err := xmpp.NewServerSession(ctx, jid.MustParse(remoteDomain), jid.MustParse(localDomain), conn, feature)
		return err
	})
	checkGaveUp(t, res, context.DeadlineExceeded)

	_ = conn.Close()
	<-peerDone
	assert.Contains(t, heard.String(), wireStartTLS, "the wait was for <proceed/>")
}

// TestReceiverSilentPeerHonoursContext: the initiating server starts a
// <starttls> element and never finishes it. Negotiation must give up when
// its context expires, without answering <proceed/>.
func TestReceiverSilentPeerHonoursContext(t *testing.T) {
	t.Parallel()
	ca := testpki.NewCA(t)
	initConn, recvConn := tcpPair(t)
	feature := mustStartTLS(t, tlsmode.Required, &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, remoteDomain)}})

	ctx, cancel := context.WithTimeout(context.Background(), ctxTimeout)
	defer cancel()
	recvDone := make(chan bounded, 1)
	go func() {
		recvDone <- runBounded(recvConn, func() error {
			_, err := receiveSession(ctx, recvConn, feature)
			return err
		})
	}()

	require.NoError(t, initConn.SetDeadline(time.Now().Add(hangGuard)))
	_, err := io.WriteString(initConn, `<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' `+
		`from='a.test' to='b.test' version='1.0'>`)
	require.NoError(t, err)
	readUntil(t, initConn, "</stream:features>")
	_, err = io.WriteString(initConn, `<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'>`) // and nothing more
	require.NoError(t, err)

	checkGaveUp(t, <-recvDone, context.DeadlineExceeded)
	assert.NotContains(t, recvConn.written(), "proceed")
}

// TestInitiatorContextCanceled: cancellation (not only a deadline) ends the
// wait for <proceed/>, and the error is the context's.
func TestInitiatorContextCanceled(t *testing.T) {
	t.Parallel()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	peerDone := make(chan struct{})
	go func() {
		defer close(peerDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		_, _ = io.WriteString(c, silentPeerHeader)
		_, _ = io.Copy(io.Discard, c)
	}()
	conn, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer conn.Close()

	feature := mustStartTLS(t, tlsmode.Optional, nil)
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(ctxTimeout, cancel)
	res := runBounded(conn, func() error {
		_, err := xmpp.NewServerSession(ctx, jid.MustParse(remoteDomain), jid.MustParse(localDomain), conn, feature)
		return err
	})
	checkGaveUp(t, res, context.Canceled)
	assert.False(t, errors.Is(res.err, context.DeadlineExceeded))
	_ = conn.Close()
	<-peerDone
}
