package s2s_test

// The federation engine (Server + Pool) between s2stest domains, when
// things go right: every security mode, queueing while a stream is set up,
// multiplexing, counters, idle close, keepalives, graceful shutdown, the
// server's own answers to ping and disco#info, and XEP-0368 direct TLS.
// Helpers here start with "ea" to stay clear of the other test files of
// the package.

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"reflect"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// eaStreams returns the streams of d's Status in direction dir, leaving out
// verify-only ones.
func eaStreams(d *s2stest.Domain, dir s2s.Direction) []s2s.Info {
	var out []s2s.Info
	for _, i := range d.Server.Status() {
		if i.Direction == dir && !i.VerifyOnly {
			out = append(out, i)
		}
	}
	return out
}

// eaOne waits until d has exactly one stream in direction dir and returns
// it.
func eaOne(t *testing.T, d *s2stest.Domain, dir s2s.Direction) s2s.Info {
	t.Helper()
	var streams []s2s.Info
	eaEventually(t, 5*time.Second, fmt.Sprintf("one %s stream on %s", dir, d.Name), func() bool {
		streams = eaStreams(d, dir)
		return len(streams) == 1
	})
	return streams[0]
}

// eaEventually polls cond every 5 ms until it holds, failing the test if it
// does not within the given time.
func eaEventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(within)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("not within %s: %s", within, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// eaGate holds the outbound TCP connections of an Endpoint until opened:
// a stream setup that stays "connecting" for as long as a test wants.
type eaGate struct {
	open  chan struct{}
	dials atomic.Int32
}

func newEAGate() *eaGate { return &eaGate{open: make(chan struct{})} }

func (g *eaGate) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	g.dials.Add(1)
	select {
	case <-g.open:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	var d net.Dialer
	return d.DialContext(ctx, network, addr)
}

// held waits until a connection is being held.
func (g *eaGate) held(t *testing.T) {
	t.Helper()
	eaEventually(t, 5*time.Second, "a connection attempt at the gate", func() bool { return g.dials.Load() > 0 })
}

// eaStates records the streams of an Endpoint that close.
type eaStates struct {
	mu     sync.Mutex
	closed []s2s.StateChange
}

func (s *eaStates) record(c s2s.StateChange) {
	if c.To == s2s.Closed && !c.Info.VerifyOnly {
		s.mu.Lock()
		s.closed = append(s.closed, c)
		s.mu.Unlock()
	}
}

// next waits for, and takes, the first recorded close of a stream in
// direction dir.
func (s *eaStates) next(t *testing.T, dir s2s.Direction) s2s.StateChange {
	t.Helper()
	var c s2s.StateChange
	eaEventually(t, 5*time.Second, "a "+dir.String()+" stream closed", func() bool {
		s.mu.Lock()
		defer s.mu.Unlock()
		for i, x := range s.closed {
			if x.Info.Direction == dir {
				c = x
				s.closed = append(s.closed[:i], s.closed[i+1:]...)
				return true
			}
		}
		return false
	})
	return c
}

// eaCounters waits until d's counters equal want, and fails the test with
// the difference if they do not within a few seconds.
func eaCounters(t *testing.T, d *s2stest.Domain, want s2s.Counters) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !reflect.DeepEqual(d.Server.Counters(), want) && time.Now().Before(deadline) {
		time.Sleep(5 * time.Millisecond)
	}
	assert.Equal(t, want, d.Server.Counters(), d.Name)
}

// eaParse parses a stanza.
func eaParse(t *testing.T, x string) *s2s.Stanza {
	t.Helper()
	st, err := s2s.ParseStanza([]byte(x))
	require.NoError(t, err)
	return st
}

func eaBody(i int) string { return fmt.Sprintf("m%03d", i) }

// eaReceiveInOrder takes count messages from inbox and checks their bodies
// are eaBody(0), eaBody(1), ….
func eaReceiveInOrder(t *testing.T, inbox *s2stest.Inbox, count int) {
	t.Helper()
	for i := range count {
		st := inbox.Next(t, 10*time.Second)
		require.Contains(t, string(st.XML), "<body>"+eaBody(i)+"</body>", "stanza %d", i)
		require.Empty(t, s2stest.ErrorCondition(st), "stanza %d is a bounce: %s", i, st.XML)
	}
}

func TestEngineSecurityModes(t *testing.T) {
	selfSigned := func(name string) *tls.Certificate {
		c := testpki.SelfSigned(t, name)
		return &c
	}
	tests := []struct {
		name    string
		mode    tlsmode.Mode
		noCert  bool
		cert    func(string) *tls.Certificate
		wantTLS bool
		auth    s2s.AuthMethod
	}{
		{name: "required/CA", mode: tlsmode.Required, wantTLS: true, auth: s2s.AuthExternal},
		{name: "required/self-signed", mode: tlsmode.Required, cert: selfSigned, wantTLS: true, auth: s2s.AuthDialback},
		{name: "optional/CA", mode: tlsmode.Optional, wantTLS: true, auth: s2s.AuthExternal},
		{name: "optional/no-certificates", mode: tlsmode.Optional, noCert: true, wantTLS: false, auth: s2s.AuthDialback},
		{name: "no-tls/no-certificates", mode: tlsmode.NoTLS, noCert: true, wantTLS: false, auth: s2s.AuthDialback},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := s2stest.New(t)
			opts := func(name string) s2stest.Options {
				o := s2stest.Options{Policy: s2s.PolicyConfig{Security: tc.mode}, NoCertificate: tc.noCert}
				if tc.cert != nil {
					o.Certificate = tc.cert(name)
				}
				return o
			}
			a := n.AddDomain("a.example", opts("a.example"))
			b := n.AddDomain("b.example", opts("b.example"))
			ctx := context.Background()

			require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "to b")))
			st := b.Inbox.Next(t, 10*time.Second)
			assert.Equal(t, "alice@a.example", st.From.String())
			assert.Equal(t, "bob@b.example", st.To.String())
			assert.Contains(t, string(st.XML), "<body>to b</body>")

			require.NoError(t, b.Send(ctx, b.Message("bob@b.example", "alice@a.example", "to a")))
			st = a.Inbox.Next(t, 10*time.Second)
			assert.Equal(t, "bob@b.example", st.From.String())
			assert.Equal(t, "alice@a.example", st.To.String())
			assert.Contains(t, string(st.XML), "<body>to a</body>")

			ids := map[string]string{}
			for _, d := range []*s2stest.Domain{a, b} {
				peer := map[string]string{"a.example": "b.example", "b.example": "a.example"}[d.Name]
				for _, dir := range []s2s.Direction{s2s.Outbound, s2s.Inbound} {
					var i s2s.Info
					// The receiving side counts a stanza once its Handler
					// has it, which is what the Inbox waited for; a moment
					// may pass before the counter shows.
					eaEventually(t, 5*time.Second, d.Name+" "+dir.String()+" stream carrying one stanza", func() bool {
						streams := eaStreams(d, dir)
						if len(streams) != 1 {
							return false
						}
						i = streams[0]
						return i.StanzasIn+i.StanzasOut == 1
					})
					assert.Equal(t, d.Name, i.Local)
					assert.Equal(t, peer, i.Remote)
					assert.Equal(t, s2s.Connected, i.State)
					assert.Equal(t, tc.auth, i.Auth)
					assert.Equal(t, []s2s.PairAuth{{Pair: s2s.Pair{Local: d.Name, Remote: peer}, Auth: tc.auth}}, i.Pairs)
					assert.Equal(t, tc.wantTLS, i.TLS)
					if tc.wantTLS {
						assert.Equal(t, uint16(tls.VersionTLS13), i.TLSVersion)
						assert.Equal(t, "TLS 1.3", i.TLSVersionName())
					} else {
						assert.Zero(t, i.TLSVersion)
						assert.Equal(t, "none", i.TLSVersionName())
					}
					if tc.cert != nil {
						assert.Error(t, i.CertError, "a self-signed certificate does not verify")
					} else {
						assert.NoError(t, i.CertError)
					}
					if dir == s2s.Outbound {
						assert.EqualValues(t, 1, i.StanzasOut)
						assert.Zero(t, i.StanzasIn)
					} else {
						assert.EqualValues(t, 1, i.StanzasIn)
						assert.Zero(t, i.StanzasOut)
					}
					assert.NotZero(t, i.BytesIn)
					assert.NotZero(t, i.BytesOut)
					assert.NotEmpty(t, i.RemoteAddr)
					assert.WithinDuration(t, time.Now(), i.Since, time.Minute)
					require.NotEmpty(t, i.ID)
					ids[d.Name+" "+dir.String()] = i.ID
				}
			}
			// Each stream is the same stream seen from both ends.
			assert.Equal(t, ids["a.example outbound"], ids["b.example inbound"])
			assert.Equal(t, ids["b.example outbound"], ids["a.example inbound"])
			assert.NotEqual(t, ids["a.example outbound"], ids["b.example outbound"])
		})
	}
}

func TestEngineQueueFlushAfterSetup(t *testing.T) {
	const count = 200
	n := s2stest.New(t)
	gate := newEAGate()
	a := n.AddDomain("a.example", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
		e.DialContext = gate.dial
	}})
	b := n.AddDomain("b.example", s2stest.Options{})
	ctx := context.Background()

	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(0))))
	gate.held(t)
	for i := 1; i < count; i++ {
		require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(i))))
	}
	routes := a.Pool.Routes()
	require.Len(t, routes, 1)
	assert.Equal(t, s2s.Pair{Local: "a.example", Remote: "b.example"}, routes[0].Pair)
	assert.Equal(t, "connecting", routes[0].State)
	assert.Equal(t, count, routes[0].Queued)
	assert.Empty(t, eaStreams(a, s2s.Outbound), "no stream while the connection is held")
	assert.Zero(t, b.Inbox.Len())

	close(gate.open)
	eaReceiveInOrder(t, b.Inbox, count)
	eaEventually(t, 5*time.Second, "route up", func() bool {
		r := a.Pool.Routes()
		return len(r) == 1 && r[0].State == "up"
	})
	routes = a.Pool.Routes()
	assert.Zero(t, routes[0].Queued)
	assert.Zero(t, routes[0].Failures)
	assert.NoError(t, routes[0].LastError)
	assert.EqualValues(t, 1, gate.dials.Load(), "one connection for the whole queue")

	c := a.Server.Counters()
	assert.EqualValues(t, count, c.StanzasOut)
	assert.Empty(t, c.Bounced)
	assert.Empty(t, c.Dropped)
	a.Inbox.Empty(t, 50*time.Millisecond) // no bounce
	b.Inbox.Empty(t, 50*time.Millisecond) // no duplicate
}

func TestEngineMultiplexedLocalDomains(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{Aliases: []string{"a2.example"}})
	b := n.AddDomain("b.example", s2stest.Options{})
	ctx := context.Background()

	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "from a")))
	assert.Equal(t, "alice@a.example", b.Inbox.Next(t, 10*time.Second).From.String())
	first := eaOne(t, a, s2s.Outbound)
	// The Pool multiplexes onto streams that are up; the first stanza may
	// arrive a moment before its route says so.
	eaEventually(t, 5*time.Second, "route up", func() bool {
		r := a.Pool.Routes()
		return len(r) == 1 && r[0].State == "up"
	})

	require.NoError(t, a.Send(ctx, a.Message("carol@a2.example", "bob@b.example", "from a2")))
	assert.Equal(t, "carol@a2.example", b.Inbox.Next(t, 10*time.Second).From.String())

	// Counters and route states follow the write a moment later.
	eaEventually(t, 5*time.Second, "both routes up, two stanzas counted", func() bool {
		r := a.Pool.Routes()
		return len(r) == 2 && r[0].State == "up" && r[1].State == "up" && eaOne(t, a, s2s.Outbound).StanzasOut == 2
	})
	out := eaOne(t, a, s2s.Outbound)
	assert.Equal(t, first.ID, out.ID, "the second local domain reuses the stream")
	assert.Equal(t, "a.example", out.Local, "the header keeps the first pair")
	assert.Equal(t, []s2s.PairAuth{
		{Pair: s2s.Pair{Local: "a.example", Remote: "b.example"}, Auth: s2s.AuthExternal},
		{Pair: s2s.Pair{Local: "a2.example", Remote: "b.example"}, Auth: s2s.AuthDialback},
	}, out.Pairs)

	in := eaOne(t, b, s2s.Inbound)
	assert.Equal(t, out.ID, in.ID)
	assert.Equal(t, []s2s.PairAuth{
		{Pair: s2s.Pair{Local: "b.example", Remote: "a.example"}, Auth: s2s.AuthExternal},
		{Pair: s2s.Pair{Local: "b.example", Remote: "a2.example"}, Auth: s2s.AuthDialback},
	}, in.Pairs)

	routes := a.Pool.Routes()
	assert.Equal(t, s2s.Pair{Local: "a.example", Remote: "b.example"}, routes[0].Pair)
	assert.Equal(t, s2s.Pair{Local: "a2.example", Remote: "b.example"}, routes[1].Pair)
	assert.EqualValues(t, 1, a.Server.Counters().OutboundOpened)
}

func TestEngineCountersDialback(t *testing.T) {
	n := s2stest.New(t)
	var closedA, closedB atomic.Int32 // streams ended: here, only b's verification stream
	opts := func(closed *atomic.Int32) s2stest.Options {
		return s2stest.Options{Policy: s2s.PolicyConfig{Security: tlsmode.NoTLS}, NoCertificate: true,
			Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
				e.OnStateChange = func(c s2s.StateChange) {
					if c.To == s2s.Closed {
						closed.Add(1)
					}
				}
			}}
	}
	a := n.AddDomain("a.example", opts(&closedA))
	b := n.AddDomain("b.example", opts(&closedB))
	ctx := context.Background()
	const count = 3
	for i := range count {
		require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(i))))
	}
	eaReceiveInOrder(t, b.Inbox, count)

	// Counters move just after what they count (a stanza written, a
	// verdict sent), so they are compared until they settle.
	wantA := s2s.Counters{
		OutboundOpened:     1,
		StanzasOut:         count,
		AuthoritativeValid: 1, // a answered b's db:verify
	}
	wantB := s2s.Counters{
		InboundOpened: 1,
		StanzasIn:     count,
		DialbackValid: 1, // b verified a's key
	}
	eaCounters(t, a, wantA)
	eaCounters(t, b, wantB)

	// b closes its verification stream once it has the answer; neither
	// end counts it as a failed stream.
	eaEventually(t, 5*time.Second, "verification stream closed at both ends", func() bool {
		return closedA.Load() == 1 && closedB.Load() == 1
	})
	assert.Equal(t, wantA, a.Server.Counters())
	assert.Equal(t, wantB, b.Server.Counters())
	ca := a.Server.Counters()
	// The Pool and the Server share one set of counters.
	assert.Equal(t, ca, a.Pool.Counters())
}

func TestEngineIdleCloseAndReconnect(t *testing.T) {
	const idle = 300 * time.Millisecond
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{Configure: func(_ *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) {
		p.IdleTimeout = idle
	}})
	b := n.AddDomain("b.example", s2stest.Options{})
	ctx := context.Background()

	start := time.Now()
	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(0))))
	eaReceiveInOrder(t, b.Inbox, 1)
	first := eaOne(t, a, s2s.Outbound)

	// Stanzas keep the stream open past the idle time.
	for i := 1; i <= 6; i++ {
		time.Sleep(idle / 3) // pacing, not synchronisation
		require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(i))))
	}
	b.Inbox.Next(t, 5*time.Second) // drain; order is checked elsewhere
	for range 5 {
		b.Inbox.Next(t, 5*time.Second)
	}
	assert.Equal(t, first.ID, eaOne(t, a, s2s.Outbound).ID, "an active stream is not idle")
	last := time.Now()

	eaEventually(t, 5*time.Second, "idle stream closed on both sides", func() bool {
		return len(eaStreams(a, s2s.Outbound)) == 0 && len(eaStreams(b, s2s.Inbound)) == 0
	})
	assert.GreaterOrEqual(t, time.Since(last), idle-idle/3, "closed too early")
	assert.Greater(t, time.Since(start), idle+2*idle)
	eaEventually(t, 5*time.Second, "route forgotten", func() bool { return len(a.Pool.Routes()) == 0 })
	assert.EqualValues(t, 1, a.Server.Counters().OutboundOpened)

	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "again")))
	assert.Contains(t, string(b.Inbox.Next(t, 10*time.Second).XML), "again")
	var second s2s.Info
	eaEventually(t, 5*time.Second, "stanza counted on the new stream", func() bool {
		second = eaOne(t, a, s2s.Outbound)
		return second.StanzasOut == 1
	})
	assert.NotEqual(t, first.ID, second.ID, "a new stream")
	assert.EqualValues(t, 2, a.Server.Counters().OutboundOpened)
	assert.Empty(t, a.Server.Counters().StreamsFailed, "an idle close is no failure")
	assert.Empty(t, b.Server.Counters().StreamsFailed)
	a.Inbox.Empty(t, 50*time.Millisecond) // nothing bounced
}

func TestEngineKeepAlive(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{Configure: func(_ *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) {
		p.KeepAlive = 50 * time.Millisecond
		p.IdleTimeout = -1
	}})
	b := n.AddDomain("b.example", s2stest.Options{})
	ctx := context.Background()
	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "hi")))
	b.Inbox.Next(t, 10*time.Second)

	// The stanza is counted just after it is written.
	eaEventually(t, 5*time.Second, "stanza counted", func() bool { return eaOne(t, a, s2s.Outbound).StanzasOut == 1 })
	out := eaOne(t, a, s2s.Outbound)
	in := eaOne(t, b, s2s.Inbound)
	var now s2s.Info
	eaEventually(t, 5*time.Second, "keepalives written", func() bool {
		now = eaOne(t, a, s2s.Outbound)
		// A space in a TLS 1.3 record is 23 bytes on the wire; several of
		// them show the timer at work, not one stray write.
		return now.BytesOut >= out.BytesOut+3*23
	})
	assert.Equal(t, out.ID, now.ID, "same stream")
	assert.Equal(t, s2s.Connected, now.State)
	assert.EqualValues(t, 1, now.StanzasOut, "keepalives are not stanzas")
	var inNow s2s.Info
	eaEventually(t, 5*time.Second, "the peer reads the keepalives", func() bool {
		inNow = eaOne(t, b, s2s.Inbound)
		return inNow.BytesIn >= in.BytesIn+3*23
	})
	assert.Equal(t, in.ID, inNow.ID)
	assert.Equal(t, s2s.Connected, inNow.State)
	assert.EqualValues(t, 1, inNow.StanzasIn)
}

// eaProxy relays TCP connections to target; cut resets them all, as when
// the peer's host vanishes.
type eaProxy struct {
	ln     net.Listener
	target string
	mu     sync.Mutex
	conns  []*net.TCPConn
	wg     sync.WaitGroup
}

func newEAProxy(t *testing.T, target string) *eaProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	p := &eaProxy{ln: ln, target: target}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c.(*net.TCPConn), u.(*net.TCPConn))
			p.mu.Unlock()
			relay := func(dst, src net.Conn) {
				defer p.wg.Done()
				io.Copy(dst, src)
				dst.Close()
				src.Close()
			}
			p.wg.Add(2)
			go relay(u, c)
			go relay(c, u)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.cut()
		p.wg.Wait()
	})
	return p
}

func (p *eaProxy) addr() *net.TCPAddr { return p.ln.Addr().(*net.TCPAddr) }

// cut resets every relayed connection (RST, no FIN, no stream close).
func (p *eaProxy) cut() {
	p.mu.Lock()
	conns := p.conns
	p.conns = nil
	p.mu.Unlock()
	for _, c := range conns {
		c.SetLinger(0)
		c.Close()
	}
}

func TestEnginePeerVanishes(t *testing.T) {
	n := s2stest.New(t)
	states := &eaStates{}
	a := n.AddDomain("a.example", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) {
		e.OnStateChange = states.record
		p.KeepAlive = 50 * time.Millisecond
	}})
	b := n.AddDomain("b.example", s2stest.Options{Unlisted: true})
	proxy := newEAProxy(t, b.Addr.String())
	n.Publish("b.example", proxy.addr(), nil)
	ctx := context.Background()

	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "before")))
	b.Inbox.Next(t, 10*time.Second)
	first := eaOne(t, a, s2s.Outbound)

	cutAt := time.Now()
	proxy.cut()
	c := states.next(t, s2s.Outbound)
	assert.Less(t, time.Since(cutAt), 5*time.Second)
	assert.Equal(t, first.ID, c.Info.ID)
	assert.Equal(t, s2s.Connected, c.From)
	assert.Error(t, c.Err, "a reset is not a clean close")
	eaEventually(t, 5*time.Second, "outbound stream gone from Status", func() bool {
		return len(eaStreams(a, s2s.Outbound)) == 0
	})

	// The next stanza sets up a new stream (the proxy relays again).
	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "after")))
	assert.Contains(t, string(b.Inbox.Next(t, 10*time.Second).XML), "after")
	assert.NotEqual(t, first.ID, eaOne(t, a, s2s.Outbound).ID)
	a.Inbox.Empty(t, 50*time.Millisecond)
}

func TestEngineGracefulShutdown(t *testing.T) {
	t.Run("peer sees system-shutdown", func(t *testing.T) {
		n := s2stest.New(t)
		states := &eaStates{}
		a := n.AddDomain("a.example", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
			e.OnStateChange = states.record
		}})
		b := n.AddDomain("b.example", s2stest.Options{})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		require.NoError(t, err)
		served := make(chan error, 1)
		go func() { served <- b.Server.Serve(ln) }()
		ctx := context.Background()

		require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "hi")))
		b.Inbox.Next(t, 10*time.Second)
		require.NoError(t, b.Send(ctx, b.Message("bob@b.example", "alice@a.example", "hi")))
		a.Inbox.Next(t, 10*time.Second)

		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		require.NoError(t, b.Server.Shutdown(sctx))
		select {
		case err := <-served:
			assert.ErrorIs(t, err, s2s.ErrServerClosed)
		case <-time.After(5 * time.Second):
			t.Fatal("Serve did not return")
		}
		assert.Empty(t, b.Server.Status())

		// Both of a's streams were closed by b with <system-shutdown/>:
		// the inbound one by b's Server, the outbound one by b's Pool.
		for _, dir := range []s2s.Direction{s2s.Outbound, s2s.Inbound} {
			c := states.next(t, dir)
			assert.ErrorIs(t, c.Err, stream.SystemShutdown, dir.String())
			var se *s2s.Error
			if assert.ErrorAs(t, c.Err, &se) {
				assert.False(t, se.Sent, "b sent it")
			}
		}
		eaEventually(t, 5*time.Second, "a's streams gone", func() bool { return len(a.Server.Status()) == 0 })

		err = b.Send(ctx, b.Message("bob@b.example", "alice@a.example", "too late"))
		assert.ErrorIs(t, err, s2s.ErrPoolClosed)
		err = b.Server.Serve(newEAListener(t))
		assert.ErrorIs(t, err, s2s.ErrServerClosed)

		// b is gone: a's next stanza comes back.
		require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "anyone?")))
		bounce := a.Inbox.Next(t, 10*time.Second)
		assert.Equal(t, "remote-server-not-found", s2stest.ErrorCondition(bounce))
	})

	t.Run("queued stanzas flushed", func(t *testing.T) {
		const count = 50
		n := s2stest.New(t)
		gate := newEAGate()
		a := n.AddDomain("a.example", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
			e.DialContext = gate.dial
		}})
		states := &eaStates{}
		b := n.AddDomain("b.example", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
			e.OnStateChange = states.record
		}})
		ctx := context.Background()
		require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(0))))
		gate.held(t)
		for i := 1; i < count; i++ {
			require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(i))))
		}

		sctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		shut := make(chan error, 1)
		go func() { shut <- a.Server.Shutdown(sctx) }()
		// Stanzas are taken until the Pool closes; those taken join the
		// queue.
		sent := count
		eaEventually(t, 5*time.Second, "Send refused after Shutdown", func() bool {
			err := a.Send(ctx, a.Message("alice@a.example", "bob@b.example", eaBody(sent)))
			if err == nil {
				sent++
				return false
			}
			require.ErrorIs(t, err, s2s.ErrPoolClosed)
			return true
		})
		select {
		case err := <-shut:
			t.Fatalf("Shutdown returned %v before the queue was delivered", err)
		default:
		}

		close(gate.open)
		eaReceiveInOrder(t, b.Inbox, sent)
		select {
		case err := <-shut:
			require.NoError(t, err)
		case <-time.After(10 * time.Second):
			t.Fatal("Shutdown did not return")
		}
		c := states.next(t, s2s.Inbound)
		assert.ErrorIs(t, c.Err, stream.SystemShutdown, "a's Pool closed its stream with <system-shutdown/>")
		assert.Empty(t, a.Server.Status())
		a.Inbox.Empty(t, 50*time.Millisecond) // nothing bounced
		assert.Empty(t, a.Server.Counters().Bounced)
	})

	t.Run("deadline bounces the queue", func(t *testing.T) {
		const count = 5
		n := s2stest.New(t)
		gate := newEAGate()
		a := n.AddDomain("a.example", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, _ *s2s.Pool) {
			e.DialContext = gate.dial
		}})
		b := n.AddDomain("b.example", s2stest.Options{})
		ctx := context.Background()
		for i := range count {
			st := eaParse(t, fmt.Sprintf("<message from='alice@a.example/phone' to='bob@b.example' type='chat' id='%s'><body>%[1]s</body></message>", eaBody(i)))
			require.NoError(t, a.Send(ctx, st))
		}
		gate.held(t)

		sctx, cancel := context.WithTimeout(ctx, 200*time.Millisecond)
		defer cancel()
		start := time.Now()
		err := a.Server.Shutdown(sctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Less(t, time.Since(start), 5*time.Second)
		for i := range count {
			st := a.Inbox.Next(t, 5*time.Second)
			assert.Equal(t, "remote-server-timeout", s2stest.ErrorCondition(st), "%s", st.XML)
			assert.Contains(t, string(st.XML), "type='wait'")
			assert.Equal(t, eaBody(i), st.ID)
			assert.Equal(t, "alice@a.example/phone", st.To.String())
			assert.Equal(t, "bob@b.example", st.From.String())
		}
		assert.EqualValues(t, count, a.Server.Counters().Bounced["remote-server-timeout"])
		b.Inbox.Empty(t, 50*time.Millisecond)
		assert.ErrorIs(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "late")), s2s.ErrPoolClosed)
	})
}

func newEAListener(t *testing.T) net.Listener {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	t.Cleanup(func() { ln.Close() })
	return ln
}

// eaDisco is the part of a disco#info result the tests look at.
type eaDisco struct {
	Query struct {
		Identities []struct {
			Category string `xml:"category,attr"`
			Type     string `xml:"type,attr"`
		} `xml:"identity"`
		Features []struct {
			Var string `xml:"var,attr"`
		} `xml:"feature"`
	} `xml:"http://jabber.org/protocol/disco#info query"`
}

func TestEngineBuiltins(t *testing.T) {
	const (
		ping      = `<iq type='get' id='p1' from='u@a.example/r' to='%s'><ping xmlns='urn:xmpp:ping'/></iq>`
		disco     = `<iq type='get' id='d1' from='u@a.example/r' to='%s'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>`
		discoNode = `<iq type='get' id='n1' from='u@a.example/r' to='%s'><query xmlns='http://jabber.org/protocol/disco#info' node='x'/></iq>`
		version   = `<iq type='get' id='v1' from='u@a.example/r' to='%s'><query xmlns='jabber:iq:version'/></iq>`
	)
	tests := []struct {
		name       string
		iq, to     string
		noBuiltins bool
		answered   bool // by b's Server, else handed to b's Handler
		check      func(t *testing.T, reply *s2s.Stanza)
	}{
		{name: "ping", iq: ping, to: "b.example", answered: true, check: func(t *testing.T, r *s2s.Stanza) {
			assert.Equal(t, "p1", r.ID)
		}},
		{name: "ping to alias", iq: ping, to: "b2.example", answered: true, check: func(t *testing.T, r *s2s.Stanza) {
			assert.Equal(t, "b2.example", r.From.String())
		}},
		{name: "disco#info", iq: disco, to: "b.example", answered: true, check: func(t *testing.T, r *s2s.Stanza) {
			assert.Equal(t, "d1", r.ID)
			var d eaDisco
			require.NoError(t, xml.Unmarshal(r.XML, &d), "%s", r.XML)
			require.Len(t, d.Query.Identities, 1, "%s", r.XML)
			assert.Equal(t, "server", d.Query.Identities[0].Category)
			assert.Equal(t, "im", d.Query.Identities[0].Type)
			var vars []string
			for _, f := range d.Query.Features {
				vars = append(vars, f.Var)
			}
			assert.Contains(t, vars, "urn:xmpp:ping")
			assert.Contains(t, vars, "http://jabber.org/protocol/disco#info")
		}},
		{name: "ping with NoBuiltins", iq: ping, to: "b.example", noBuiltins: true},
		{name: "disco#info with NoBuiltins", iq: disco, to: "b.example", noBuiltins: true},
		{name: "ping to a user", iq: ping, to: "bob@b.example"},
		{name: "ping to a resource of the domain", iq: ping, to: "b.example/admin"},
		{name: "disco#info of a node", iq: discoNode, to: "b.example"},
		{name: "other query", iq: version, to: "b.example"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			n := s2stest.New(t)
			a := n.AddDomain("a.example", s2stest.Options{})
			b := n.AddDomain("b.example", s2stest.Options{Aliases: []string{"b2.example"}, Configure: func(_ *s2s.Endpoint, s *s2s.Server, _ *s2s.Pool) {
				s.NoBuiltins = tc.noBuiltins
			}})
			iq := eaParse(t, fmt.Sprintf(tc.iq, tc.to))
			require.NoError(t, a.Send(context.Background(), iq))
			if !tc.answered {
				got := b.Inbox.Next(t, 10*time.Second)
				assert.Equal(t, iq.XML, got.XML)
				a.Inbox.Empty(t, 100*time.Millisecond)
				return
			}
			r := a.Inbox.Next(t, 10*time.Second)
			assert.Equal(t, "iq", r.Name)
			assert.Equal(t, "result", r.Type)
			assert.Equal(t, iq.ID, r.ID)
			assert.Equal(t, "u@a.example/r", r.To.String())
			assert.Equal(t, tc.to, r.From.String())
			tc.check(t, r)
			b.Inbox.Empty(t, 100*time.Millisecond)
		})
	}
}

func TestEngineDirectTLS(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{})
	b := n.AddDomain("b.example", s2stest.Options{DirectTLS: true})
	require.NotNil(t, b.TLSAddr)
	ctx := context.Background()
	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "direct")))
	assert.Contains(t, string(b.Inbox.Next(t, 10*time.Second).XML), "direct")

	out := eaOne(t, a, s2s.Outbound)
	assert.Equal(t, b.TLSAddr.String(), out.RemoteAddr, "the _xmpps-server target was used")
	assert.True(t, out.TLS)
	assert.Equal(t, "TLS 1.3", out.TLSVersionName())
	assert.Equal(t, s2s.AuthExternal, out.Auth)
	in := eaOne(t, b, s2s.Inbound)
	assert.True(t, in.TLS)
	assert.Equal(t, out.ID, in.ID)

	// And back, to a domain with only the plain port.
	require.NoError(t, b.Send(ctx, b.Message("bob@b.example", "alice@a.example", "starttls")))
	a.Inbox.Next(t, 10*time.Second)
	back := eaOne(t, b, s2s.Outbound)
	assert.Equal(t, a.Addr.String(), back.RemoteAddr)
	assert.True(t, back.TLS)
}

// Send rejects what it cannot take at all, without bouncing.
func TestEngineSendRefusals(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{Aliases: []string{"a2.example"}})
	ctx := context.Background()
	err := a.Send(ctx, a.Message("alice@a.example", "bob@a2.example", "local"))
	assert.ErrorIs(t, err, s2s.ErrLocalDomain)
	err = a.Send(ctx, a.Message("mallory@c.example", "bob@b.example", "not ours"))
	assert.ErrorIs(t, err, s2s.ErrDomainNotServed)
	err = a.Send(ctx, &s2s.Stanza{})
	assert.ErrorIs(t, err, s2s.ErrBadStanza)
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	err = a.Send(cctx, a.Message("alice@a.example", "bob@b.example", "cancelled"))
	assert.True(t, errors.Is(err, context.Canceled), "%v", err)
	assert.Empty(t, a.Pool.Routes())
	a.Inbox.Empty(t, 50*time.Millisecond)
}
