package xcp_test

import (
	"bytes"
	"errors"
	"io"
	"net"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/xcp"
)

// rawConn is a hand-driven peer, to check the exact bytes of the protocol.
type rawConn struct {
	t   testing.TB
	c   net.Conn
	buf []byte
}

func dialRaw(t testing.TB, addr string) *rawConn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	t.Cleanup(func() { _ = c.Close() })
	return &rawConn{t: t, c: c}
}

func (r *rawConn) send(s string) {
	r.t.Helper()
	_, err := io.WriteString(r.c, s)
	require.NoError(r.t, err)
}

// until reads until want has been received and returns everything up to
// and including it.
func (r *rawConn) until(want string) string {
	r.t.Helper()
	require.NoError(r.t, r.c.SetReadDeadline(time.Now().Add(5*time.Second)))
	var b [4096]byte
	for !bytes.Contains(r.buf, []byte(want)) {
		n, err := r.c.Read(b[:])
		r.buf = append(r.buf, b[:n]...)
		if err != nil {
			r.t.Fatalf("waiting for %q: %v; got %q", want, err, r.buf)
		}
	}
	i := bytes.Index(r.buf, []byte(want)) + len(want)
	out := string(r.buf[:i])
	r.buf = r.buf[i:]
	return out
}

// closed checks that the other end closes the connection (no hang).
func (r *rawConn) closed() {
	r.t.Helper()
	require.NoError(r.t, r.c.SetReadDeadline(time.Now().Add(5*time.Second)))
	rest, err := io.ReadAll(r.c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		r.t.Fatalf("connection still open; got %q", rest)
	}
	assert.Empty(r.t, strings.TrimSpace(string(rest)), "data after the stream closed")
}

var idRe = regexp.MustCompile(`id='([^']+)'`)

func streamID(t testing.TB, header string) string {
	t.Helper()
	m := idRe.FindStringSubmatch(header)
	require.NotNil(t, m, "no id in %q", header)
	return m[1]
}

const (
	acceptHeader = `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='%s'>`
	streamErr    = `<stream:error><%s xmlns='urn:ietf:params:xml:ns:xmpp-streams'/>`
)

func header(ns, attr, name string) string {
	return `<stream:stream xmlns='` + ns + `' xmlns:stream='http://etherx.jabber.org/streams' ` + attr + `='` + name + `'>`
}

// authed opens a component stream to a router and completes the handshake.
// waitGone waits until the router has let go of a component's previous
// stream, which may still be winding down.
func waitGone(t *testing.T, r *xcp.Router, name string) {
	t.Helper()
	require.Eventually(t, func() bool {
		for _, rt := range r.Routes() {
			if rt.Component == name {
				return false
			}
		}
		return true
	}, 5*time.Second, time.Millisecond)
}

func authed(t *testing.T, r *xcp.Router, addr, name, secret string) *rawConn {
	t.Helper()
	waitGone(t, r, name)
	c := dialRaw(t, addr)
	c.send(header(xcp.NSAccept, "to", name))
	h := c.until(">")
	assert.Contains(t, h, "from='"+name+"'")
	c.send("<handshake>" + xcp.Handshake(streamID(t, h), secret) + "</handshake>")
	assert.Equal(t, "<handshake/>", c.until("<handshake/>"))
	return c
}

func TestHandshakeVectors(t *testing.T) {
	// spec/component.md §2.3; row 1 is XEP-0114's own example.
	for _, v := range []struct{ id, secret, want string }{
		{"3BF96D32", "test", "aaee83c26aeeafcbabeabfcbcd50df997e0a2a1e"},
		{"3BF96D32", "secret", "b09ea9b3b7f586be8a08d0a3dd7466f110aeb136"},
		{"a7f3c9e2b1d04e55", "s3cr3t-r0ut3r-l1nk", "17978313d4158baedfa02b8e1f97fe06921b5f69"},
		{"1327B794B", "Expr3ssw@y!", "ce7c0b091ed595aa08c3194cb538a6c95e3191ca"},
		{"abc", "sécret", "79eea6c23edd969730f095ada478e8cabe54876c"},
	} {
		assert.Equal(t, v.want, xcp.Handshake(v.id, v.secret))
	}
}

func TestRouterWire(t *testing.T) {
	r := &xcp.Router{
		Components:       []xcp.Component{{Name: "plays.shakespeare.lit", Secret: "test"}, {Name: "b.example", Secret: secretB}},
		HandshakeTimeout: 200 * time.Millisecond,
		MaxStanzaSize:    1024,
		MaxDepth:         4,
	}
	ln := listen(t)
	addr := serveRouter(t, fastRouter(t, r), ln)

	t.Run("happy path", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.send(`<?xml version='1.0'?>` + header(xcp.NSAccept, "to", "plays.shakespeare.lit"))
		h := c.until(">")
		assert.Regexp(t, `^<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='plays.shakespeare.lit' id='[0-9a-f]{32}'>$`, h)
		c.send("<handshake>" + strings.ToUpper(xcp.Handshake(streamID(t, h), "test")) + "</handshake>")
		c.until("<handshake/>")
		c.send("</stream:stream>")
		c.until("</stream:stream>")
		c.closed()
	})

	for _, tc := range []struct {
		name string
		send func(t *testing.T, c *rawConn)
		cond stream.Error
	}{
		{"wrong secret", func(t *testing.T, c *rawConn) {
			c.send(header(xcp.NSAccept, "to", "plays.shakespeare.lit"))
			c.until(">")
			c.send("<handshake>b09ea9b3b7f586be8a08d0a3dd7466f110aeb136</handshake>")
		}, stream.NotAuthorized},
		{"stanza before handshake", func(t *testing.T, c *rawConn) {
			c.send(header(xcp.NSAccept, "to", "plays.shakespeare.lit"))
			c.until(">")
			c.send("<message to='b.example' from='plays.shakespeare.lit'/>")
		}, stream.NotAuthorized},
		{"unknown component", func(t *testing.T, c *rawConn) {
			c.send(header(xcp.NSAccept, "to", "nobody.example"))
			assert.Contains(t, c.until(">"), "from='nobody.example'")
		}, stream.HostUnknown},
		{"jabber:client", func(t *testing.T, c *rawConn) {
			c.send(header("jabber:client", "to", "plays.shakespeare.lit"))
			// Our header comes first, then the error (RFC 6120 §4.9.1.1).
			assert.Contains(t, c.until(">"), "<stream:stream ")
		}, stream.InvalidNamespace},
		{"connect on the accept port", func(t *testing.T, c *rawConn) {
			c.send(header(xcp.NSConnect, "from", "plays.shakespeare.lit"))
		}, stream.InvalidNamespace},
		{"garbage", func(t *testing.T, c *rawConn) { c.send("GET / HTTP/1.1\r\n\r\n") }, stream.NotWellFormed},
		{"silence", func(t *testing.T, c *rawConn) {}, stream.ConnectionTimeout},
		{"header only", func(t *testing.T, c *rawConn) {
			c.send(header(xcp.NSAccept, "to", "plays.shakespeare.lit"))
		}, stream.ConnectionTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			waitGone(t, r, "plays.shakespeare.lit")
			c := dialRaw(t, addr)
			tc.send(t, c)
			got := c.until("</stream:stream>")
			assert.Contains(t, got, strings.Replace(streamErr, "%s", tc.cond.Err, 1))
			c.closed()
		})
	}

	for _, tc := range []struct {
		name, send string
		cond       stream.Error
	}{
		{"not well-formed", `<message to='b.example' from='plays.shakespeare.lit'></presence>`, stream.NotWellFormed},
		{"too big", `<message to='b.example' from='plays.shakespeare.lit'><body>` + strings.Repeat("x", 2000) + `</body></message>`, stream.PolicyViolation},
		{"too deep", `<message to='b.example' from='plays.shakespeare.lit'><a><b><c><d/></c></b></a></message>`, stream.PolicyViolation},
		{"comment", `<!-- hello -->`, stream.RestrictedXML},
		{"unknown element", `<db:result xmlns:db='jabber:server:dialback' from='a' to='b'>k</db:result>`, stream.UnsupportedStanzaType},
		{"no from", `<message to='b.example'/>`, stream.ImproperAddressing},
		{"no to", `<message from='plays.shakespeare.lit'/>`, stream.ImproperAddressing},
		{"foreign from", `<message to='b.example' from='alice@coluc.com'/>`, stream.InvalidFrom},
		{"another component's from", `<message to='b.example' from='bob@b.example'/>`, stream.InvalidFrom},
		{"bad encoding", "<message to='b.example' from='plays.shakespeare.lit'>\xff</message>", stream.NotWellFormed},
	} {
		t.Run("after handshake: "+tc.name, func(t *testing.T) {
			c := authed(t, r, addr, "plays.shakespeare.lit", "test")
			c.send(tc.send)
			got := c.until("</stream:stream>")
			assert.True(t, strings.HasPrefix(got, "<stream:error>"), got)
			assert.Contains(t, got, strings.Replace(streamErr, "%s", tc.cond.Err, 1))
			c.closed()
		})
	}

	t.Run("peer stream error", func(t *testing.T) {
		c := authed(t, r, addr, "plays.shakespeare.lit", "test")
		c.send(`<stream:error><system-shutdown xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>`)
		c.until("</stream:stream>")
		c.closed()
	})

	t.Run("one byte at a time", func(t *testing.T) {
		c := authed(t, r, addr, "plays.shakespeare.lit", "test")
		in := "<message to='plays.shakespeare.lit/x' from='plays.shakespeare.lit' id='trickle'><body>a &amp; b</body></message>"
		for i := range len(in) {
			c.send(in[i : i+1])
		}
		got := c.until("</message>")
		assert.Equal(t, in, strings.TrimSpace(got))
	})
}

// TestLinkWireConnect drives a Link that waits for the router
// (jabber:component:connect) by hand.
func TestLinkWireConnect(t *testing.T) {
	h := newCollector()
	l := &xcp.Link{Name: "s2s-1.edge-1.example.com", Secret: secretS2S, Handler: h}
	ws := watch(l)
	addr := serveLink(t, l)

	c := dialRaw(t, addr)
	c.send(header(xcp.NSConnect, "from", "s2s-1.edge-1.example.com"))
	hdr := c.until(">")
	assert.Contains(t, hdr, "xmlns='jabber:component:connect'")
	c.send("<handshake>" + xcp.Handshake(streamID(t, hdr), secretS2S) + "</handshake>")
	c.until("<handshake/>")
	ready(t, l)

	c.send(`<message from='bob@vngtp.lab' to='alice@coluc.com'><body>out</body></message>`)
	assert.Equal(t, "alice@coluc.com", h.next(t).To())
	send(t, l, msg(t, "alice@coluc.com", "bob@vngtp.lab", "in"))
	assert.Contains(t, c.until("</message>"), "<body>in</body>")

	// A second router connection is refused while the first is up.
	c2 := dialRaw(t, addr)
	c2.send(header(xcp.NSConnect, "from", "s2s-1.edge-1.example.com"))
	got := c2.until("</stream:stream>")
	assert.Contains(t, got, strings.Replace(streamErr, "%s", "conflict", 1))

	// Wrong secret.
	c.send("</stream:stream>")
	c.until("</stream:stream>")
	c.closed()
	// The Link may see the first connection go a moment after we do; a
	// new one before that would be refused with <conflict/>.
	ws.waitFor(t, xcp.StateDisconnected)
	c3 := dialRaw(t, addr)
	c3.send(header(xcp.NSConnect, "from", "s2s-1.edge-1.example.com"))
	c3.until(">")
	c3.send("<handshake>0000000000000000000000000000000000000000</handshake>")
	assert.Contains(t, c3.until("</stream:stream>"), strings.Replace(streamErr, "%s", "not-authorized", 1))
	c3.closed()
}

// TestKeepAliveAndDeadPeer: an idle link sends white space; a router that
// stops answering is detected, and the link dials again.
func TestKeepAliveAndDeadPeer(t *testing.T) {
	ln := listen(t)
	accepted := make(chan net.Conn, 4)
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				close(accepted)
				return
			}
			accepted <- c
		}
	}()
	defer func() {
		_ = ln.Close()
		for c := range accepted {
			_ = c.Close()
		}
	}()

	var (
		states = make(stateWatcher, 100)
		errs   = make(chan error, 100)
	)
	l := &xcp.Link{Name: "a.example", Secret: secretA, Addr: ln.Addr().String(),
		KeepAlive: 20 * time.Millisecond, IdleTimeout: 300 * time.Millisecond,
		OnStateChange: func(s xcp.State, err error) {
			states <- s
			if err != nil {
				errs <- err
			}
		}}
	startLink(t, l)

	// A router that completes the handshake, then stays silent.
	nc := <-accepted
	c := &rawConn{t: t, c: nc}
	c.until(">")
	c.send(`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='a.example' id='abc'>`)
	assert.Equal(t, "<handshake>"+xcp.Handshake("abc", secretA)+"</handshake>", c.until("</handshake>"))
	c.send("<handshake/>")
	states.waitFor(t, xcp.StateConnected)

	assert.Equal(t, " ", c.until(" "), "keepalive")
	states.waitFor(t, xcp.StateDisconnected)
	err := <-errs
	assert.ErrorIs(t, err, stream.ConnectionTimeout)
	assert.Contains(t, c.until("</stream:stream>"), strings.Replace(streamErr, "%s", "connection-timeout", 1))

	// It dials again.
	select {
	case nc2 := <-accepted:
		_ = nc2.Close()
	case <-time.After(5 * time.Second):
		t.Fatal("the link did not dial again")
	}
}

// TestPreAuthLimits: before the handshake succeeds, elements are limited
// to 1 KiB (a <handshake/> is 60 bytes), and only so many connections may
// be in the handshake at once; the next ones are closed at once.
func TestPreAuthLimits(t *testing.T) {
	r := &xcp.Router{Components: twoComponents(), HandshakeTimeout: 3 * time.Second, MaxPendingHandshakes: 2}
	addr := startRouter(t, r)

	t.Run("large handshake", func(t *testing.T) {
		c := dialRaw(t, addr)
		c.send(header(xcp.NSAccept, "to", "a.example"))
		c.until(">")
		c.send("<handshake>" + strings.Repeat("a", 2000) + "</handshake>")
		assert.Contains(t, c.until("</stream:stream>"), strings.Replace(streamErr, "%s", "policy-violation", 1))
		c.closed()
	})

	t.Run("pending handshakes", func(t *testing.T) {
		waitGone(t, r, "a.example")
		p1, p2 := dialRaw(t, addr), dialRaw(t, addr)
		p1.send(header(xcp.NSAccept, "to", "a.example"))
		p1.until(">")
		p2.send(header(xcp.NSAccept, "to", "b.example"))
		p2.until(">")
		// A third is refused well before the handshake timeout.
		c := dialRaw(t, addr)
		require.NoError(t, c.c.SetReadDeadline(time.Now().Add(time.Second)))
		_, err := io.ReadAll(c.c)
		var ne net.Error
		require.False(t, errors.As(err, &ne) && ne.Timeout(), "a third connection waits in the handshake")
		// Once one of them is done, there is room again.
		p1.send("<handshake>" + strings.Repeat("0", 40) + "</handshake>")
		p1.until("</stream:stream>")
		p1.closed()
		require.Eventually(t, func() bool {
			c := dialRaw(t, addr)
			c.send(header(xcp.NSAccept, "to", "a.example"))
			require.NoError(t, c.c.SetReadDeadline(time.Now().Add(time.Second)))
			var b [512]byte
			n, _ := c.c.Read(b[:])
			return strings.Contains(string(b[:n]), "id='")
		}, 5*time.Second, 50*time.Millisecond)
	})
}

// fakeComponent accepts one connection from a router that dials it and
// answers its stream header with hdr; it returns what the router sent.
func fakeComponent(t *testing.T, hdr string) (string, <-chan string) {
	t.Helper()
	ln := listen(t)
	out := make(chan string, 1)
	go func() {
		defer close(out)
		nc, err := ln.Accept()
		_ = ln.Close()
		if err != nil {
			return
		}
		defer nc.Close()
		c := &rawConn{t: t, c: nc}
		_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
		var b [4096]byte
		for !bytes.Contains(c.buf, []byte(">")) {
			n, err := nc.Read(b[:])
			c.buf = append(c.buf, b[:n]...)
			if err != nil {
				out <- string(c.buf)
				return
			}
		}
		_, _ = io.WriteString(nc, hdr)
		rest, _ := io.ReadAll(nc)
		out <- string(c.buf) + string(rest)
	}()
	t.Cleanup(func() { _ = ln.Close() })
	return ln.Addr().String(), out
}

// TestRouterSignsOnlyItsComponent: when the router dials a component it
// computes the handshake over the stream ID the component chose, as
// XEP-0114 requires, but only for a component that names itself as the
// one dialled, and only over a plausible stream ID: it is no signing
// oracle for whoever answers at the address.
func TestRouterSignsOnlyItsComponent(t *testing.T) {
	for _, tc := range []struct {
		name, hdr, cond string
	}{
		{"another component", header(xcp.NSConnect, "from", "b.example")[:len(header(xcp.NSConnect, "from", "b.example"))-1] + " id='abc'>", "invalid-from"},
		{"no from", `<stream:stream xmlns='jabber:component:connect' xmlns:stream='http://etherx.jabber.org/streams' id='abc'>`, "invalid-from"},
		{"long id", header(xcp.NSConnect, "from", "a.example")[:len(header(xcp.NSConnect, "from", "a.example"))-1] + " id='" + strings.Repeat("x", 200) + "'>", "policy-violation"},
		{"id with white space", header(xcp.NSConnect, "from", "a.example")[:len(header(xcp.NSConnect, "from", "a.example"))-1] + " id='a b'>", "policy-violation"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			addr, out := fakeComponent(t, tc.hdr)
			comps := twoComponents()
			comps[0].Addr = addr
			r := fastRouter(t, &xcp.Router{Components: comps})
			require.NoError(t, r.Start())
			t.Cleanup(func() { require.NoError(t, r.Close()) })
			var got string
			select {
			case got = <-out:
			case <-time.After(5 * time.Second):
				t.Fatal("the router never dialled")
			}
			assert.NotContains(t, got, "<handshake>", "the router signed")
			assert.Contains(t, got, strings.Replace(streamErr, "%s", tc.cond, 1))
		})
	}
}

// TestLinkChecksRouterHeader: a Link dialling a router checks that the
// router's header is for its component before it sends the handshake.
func TestLinkChecksRouterHeader(t *testing.T) {
	ln := listen(t)
	defer ln.Close()
	errs := make(chan error, 10)
	l := startLink(t, &xcp.Link{Name: "a.example", Secret: secretA, Addr: ln.Addr().String(),
		OnStateChange: func(_ xcp.State, err error) {
			if err != nil {
				select {
				case errs <- err:
				default:
				}
			}
		}})
	nc, err := ln.Accept()
	require.NoError(t, err)
	defer nc.Close()
	c := &rawConn{t: t, c: nc}
	c.until(">")
	c.send(`<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' from='b.example' id='abc'>`)
	got := c.until("</stream:stream>")
	assert.NotContains(t, got, "<handshake>")
	assert.Contains(t, got, strings.Replace(streamErr, "%s", "invalid-from", 1))
	select {
	case err := <-errs:
		assert.ErrorIs(t, err, stream.InvalidFrom)
	case <-time.After(5 * time.Second):
		t.Fatal("no error reported")
	}
	assert.NotEqual(t, xcp.StateConnected, l.State())
}

// lateListener hands out one connection after Close has begun, as a real
// listener may when a connection is accepted just as it closes.
type lateListener struct {
	closed   chan struct{}
	once     sync.Once
	waitOnce sync.Once
	handed   atomic.Bool
	conn     *spyConn
	accepted chan struct{}
}

func newLateListener() *lateListener {
	return &lateListener{closed: make(chan struct{}), accepted: make(chan struct{}), conn: &spyConn{}}
}

func (l *lateListener) Accept() (net.Conn, error) {
	l.waitOnce.Do(func() { close(l.accepted) })
	<-l.closed
	if l.handed.CompareAndSwap(false, true) {
		return l.conn, nil
	}
	return nil, net.ErrClosed
}

func (l *lateListener) Close() error {
	l.once.Do(func() { close(l.closed) })
	return nil
}

func (l *lateListener) Addr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }

// spyConn records whether anything but Close was called.
type spyConn struct {
	used, closed atomic.Bool
}

func (c *spyConn) Read([]byte) (int, error)         { c.used.Store(true); return 0, io.EOF }
func (c *spyConn) Write(p []byte) (int, error)      { c.used.Store(true); return len(p), nil }
func (c *spyConn) Close() error                     { c.closed.Store(true); return nil }
func (c *spyConn) LocalAddr() net.Addr              { return &net.TCPAddr{} }
func (c *spyConn) RemoteAddr() net.Addr             { c.used.Store(true); return &net.TCPAddr{} }
func (c *spyConn) SetDeadline(time.Time) error      { return nil }
func (c *spyConn) SetReadDeadline(time.Time) error  { return nil }
func (c *spyConn) SetWriteDeadline(time.Time) error { return nil }

// TestAcceptAfterClose: a connection accepted while the Router or Link
// closes is closed unused, not served by a goroutine Close did not wait for.
func TestAcceptAfterClose(t *testing.T) {
	t.Run("router", func(t *testing.T) {
		ln := newLateListener()
		r := fastRouter(t, &xcp.Router{Components: twoComponents()})
		done := make(chan error, 1)
		go func() { done <- r.Serve(ln) }()
		<-ln.accepted // Serve is in Accept
		require.NoError(t, r.Close())
		require.ErrorIs(t, <-done, xcp.ErrClosed)
		require.Eventually(t, ln.conn.closed.Load, time.Second, time.Millisecond)
		assert.False(t, ln.conn.used.Load(), "a connection was served after Close")
	})
	t.Run("link", func(t *testing.T) {
		ln := newLateListener()
		l := fastLink(t, &xcp.Link{Name: "a.example", Secret: secretA})
		done := make(chan error, 1)
		go func() { done <- l.Serve(ln) }()
		<-ln.accepted
		require.NoError(t, l.Close())
		require.ErrorIs(t, <-done, xcp.ErrClosed)
		require.Eventually(t, ln.conn.closed.Load, time.Second, time.Millisecond)
		assert.False(t, ln.conn.used.Load(), "a connection was served after Close")
	})
}
