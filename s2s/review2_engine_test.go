package s2s_test

// Second review of the federation engine (issue 4), after the fixes of
// 76030e2 and 7322fd3. Each TestReview2_* test fails because of the finding
// it is named after; see the review report.

import (
	"context"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// r2Dialer is an Endpoint.DialContext that hands out rvStallConns (review_engine_test.go) that signal entered when a stalled write begins. If gate is
// set, the first gate dials wait for each other (at most 2 s) before they
// connect.
type r2Dialer struct {
	stallFor time.Duration
	entered  chan struct{} // a stalled write has begun

	gate     int
	gateOpen chan struct{}

	mu    sync.Mutex
	dials int
	conns []*rvStallConn
}

func newR2Dialer(stallFor time.Duration, gate int) *r2Dialer {
	return &r2Dialer{stallFor: stallFor, entered: make(chan struct{}, 1), gate: gate, gateOpen: make(chan struct{})}
}

func (d *r2Dialer) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	d.mu.Lock()
	d.dials++
	n := d.dials
	if n == d.gate {
		close(d.gateOpen)
	}
	d.mu.Unlock()
	if n <= d.gate {
		select {
		case <-d.gateOpen:
		case <-time.After(2 * time.Second):
		}
	}
	var nd net.Dialer
	c, err := nd.DialContext(ctx, network, addr)
	if err != nil {
		return nil, err
	}
	rc := newStallConn(c, d.stallFor)
	rc.entered = d.entered
	d.mu.Lock()
	d.conns = append(d.conns, rc)
	d.mu.Unlock()
	return rc, nil
}

// stallAll makes the writes on every connection made so far stall.
func (d *r2Dialer) stallAll() {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, c := range d.conns {
		c.stalled.Store(true)
	}
}

// r2StalledWriter sets up a.test → b.test, then stalls a's connections and
// sends one more stanza, so that the Pool's writer is stuck in a write
// when it returns.
func r2StalledWriter(t *testing.T, stallFor time.Duration) (a, b *s2stest.Domain) {
	t.Helper()
	n := s2stest.New(t)
	d := newR2Dialer(stallFor, 0)
	a = n.AddDomain("a.test", s2stest.Options{Configure: func(e *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) {
		e.DialContext = d.dial
		p.KeepAlive = -1
	}})
	b = n.AddDomain("b.test", s2stest.Options{})
	ctx := context.Background()
	require.NoError(t, a.Send(ctx, a.Message("x@a.test", "y@b.test", "one")))
	b.Inbox.Next(t, 5*time.Second)
	d.stallAll()
	require.NoError(t, a.Send(ctx, a.Message("x@a.test", "y@b.test", "two")))
	select {
	case <-d.entered:
	case <-time.After(2 * time.Second):
		t.Fatal("the Pool's writer never wrote the second stanza")
	}
	return a, b
}

// Setup slots deadlock dialback between two servers of this engine. An
// outbound setup keeps its slot for the peer's address until dialback has
// authorized it (dialWith: defer s.releaseSetup()), and the receiving
// role's verification stream back to that peer takes a slot of the same
// engine for the same address. When a and b set up streams to each other
// at the same time with all their slots taken (one here; 8 by default, so
// eight domain pairs each way), each side's verification waits for a slot
// held by a setup that waits for the other side's verification: both
// stall until VerifyTimeout and every queued stanza is bounced.
func TestReview2_SetupSlotsDeadlockDialback(t *testing.T) {
	n := s2stest.New(t)
	d := newR2Dialer(0, 2) // the two setups connect together
	opts := s2stest.Options{Policy: s2s.PolicyConfig{Security: tlsmode.NoTLS}, NoCertificate: true,
		Configure: func(e *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) {
			e.DialContext = d.dial
			e.VerifyTimeout = 1500 * time.Millisecond
			e.DialbackTimeout = 2 * time.Second
			p.MaxSetupsPerAddr = 1
		}}
	a := n.AddDomain("a.test", opts)
	b := n.AddDomain("b.test", opts)
	ctx := context.Background()
	require.NoError(t, a.Send(ctx, a.Message("x@a.test", "y@b.test", "from a")))
	require.NoError(t, b.Send(ctx, b.Message("y@b.test", "x@a.test", "from b")))
	for _, c := range []struct {
		in   *s2stest.Domain
		want string
	}{{b, "from a"}, {a, "from b"}} {
		rctx, cancel := context.WithTimeout(ctx, 1200*time.Millisecond)
		st, err := c.in.Inbox.Receive(rctx)
		cancel()
		if !assert.NoError(t, err, "%q not delivered within 1.2 s: the setups wait for each other's verification", c.want) {
			continue
		}
		assert.Contains(t, string(st.XML), c.want, "got %s (%s)", st.XML, s2stest.ErrorCondition(st))
	}
}

// The Pool counts a stanza in StanzasOut before writing it (sendBatch) and
// again each time it is written on a new stream after a failed write, so
// StanzasOut exceeds what was written. Here one write fails and the stanza
// is delivered on a second stream: 2 stanzas, StanzasOut 3.
func TestReview2_StanzasOutCountsFailedWrites(t *testing.T) {
	a, b := r2StalledWriter(t, 300*time.Millisecond)
	st := b.Inbox.Next(t, 5*time.Second) // on a new stream after the failed write
	require.Contains(t, string(st.XML), "two")
	assert.Equal(t, uint64(2), a.Pool.Counters().StanzasOut, "two stanzas were written to b.test")
}

// Server.Shutdown closes the listeners and cuts every inbound stream
// before it lets the Pool finish the setups it promises to wait for, but an
// outbound setup by dialback needs the peer to connect back to our
// authoritative role: with the listener closed the verification fails and
// the stanzas queued for the setup are bounced instead of delivered.
func TestReview2_ShutdownBreaksDialbackSetups(t *testing.T) {
	n := s2stest.New(t)
	d := newR2Dialer(0, 2) // holds a's first dial (the setup) until released
	a := n.AddDomain("a.test", s2stest.Options{Policy: s2s.PolicyConfig{Security: tlsmode.NoTLS}, NoCertificate: true,
		Configure: func(e *s2s.Endpoint, _ *s2s.Server, p *s2s.Pool) {
			e.DialContext = d.dial
			e.DialbackTimeout = 2 * time.Second
		}})
	b := n.AddDomain("b.test", s2stest.Options{Policy: s2s.PolicyConfig{Security: tlsmode.NoTLS}, NoCertificate: true})
	require.NoError(t, a.Send(context.Background(), a.Message("x@a.test", "y@b.test", "queued before shutdown")))
	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		done <- a.Server.Shutdown(ctx)
	}()
	// Wait for Shutdown to have closed a's listener.
	deadline := time.Now().Add(2 * time.Second)
	for time.Now().Before(deadline) {
		c, err := net.DialTimeout("tcp", a.Addr.String(), 100*time.Millisecond)
		if err != nil {
			break
		}
		c.Close()
		time.Sleep(5 * time.Millisecond)
	}
	d.dial(context.Background(), "tcp", "127.0.0.1:1") // opens the gate; its own result does not matter
	rctx, cancel := context.WithTimeout(context.Background(), 2500*time.Millisecond)
	defer cancel()
	st, err := b.Inbox.Receive(rctx)
	if assert.NoError(t, err, "stanza queued before Shutdown not delivered; a's inbox has %d bounce(s)", a.Inbox.Len()) {
		assert.Contains(t, string(st.XML), "queued before shutdown")
	}
	if a.Inbox.Len() > 0 {
		bounce := a.Inbox.Next(t, time.Second)
		t.Logf("bounced during a graceful Shutdown: %s", s2stest.ErrorCondition(bounce))
	}
	select {
	case <-done:
	case <-time.After(4 * time.Second):
		t.Error("Shutdown did not return")
	}
}
