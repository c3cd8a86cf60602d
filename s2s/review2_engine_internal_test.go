package s2s

// Second review of the federation engine (issue 4), the Pool's route state
// machine. The tests drive real Pool code (Send, drain, connect,
// streamEnded, failed) over a net.Pipe stream; holding the stream's write
// lock stands for a writer that is in the middle of a write when something
// else happens to its route, which is how they make an interleaving
// deterministic.

import (
	"context"
	"errors"
	"io"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// r2Bounces records the ids of bounced stanzas, in order.
type r2Bounces struct {
	mu  sync.Mutex
	ids []string
}

func (b *r2Bounces) ServeStanza(_ context.Context, st *Stanza) {
	b.mu.Lock()
	b.ids = append(b.ids, st.ID)
	b.mu.Unlock()
}

// wait returns the ids bounced so far once there are n, or after d.
func (b *r2Bounces) wait(n int, d time.Duration) []string {
	deadline := time.Now().Add(d)
	for {
		b.mu.Lock()
		ids := append([]string(nil), b.ids...)
		b.mu.Unlock()
		if len(ids) >= n || time.Now().After(deadline) {
			return ids
		}
		time.Sleep(2 * time.Millisecond)
	}
}

// r2Wire collects what the peer end of a pipe receives.
type r2Wire struct {
	mu   sync.Mutex
	b    strings.Builder
	done chan struct{}
}

func (w *r2Wire) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.Write(p)
}

func (w *r2Wire) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.b.String()
}

// r2Pool returns a Pool for a.test whose new setups to b.test fail at
// once (connection refused), with a short back-off.
func r2Pool(t *testing.T, queueSize int) (*Pool, *r2Bounces) {
	t.Helper()
	ep := &Endpoint{
		Domains:  []string{"a.test"},
		Keys:     dialback.Generator{Secret: []byte("secret of a.test")},
		Security: tlsmode.NoTLS,
		Resolver: &srv.Resolver{StaticRoutes: map[string][]string{"b.test": {"127.0.0.1:1"}}},
		DialContext: func(context.Context, string, string) (net.Conn, error) {
			return nil, errors.New("connection refused (test)")
		},
	}
	rec := &r2Bounces{}
	p := &Pool{Endpoint: ep, Bounce: rec, QueueSize: queueSize, KeepAlive: -1, IdleTimeout: -1,
		Backoff: Backoff{Min: 20 * time.Millisecond, Max: 40 * time.Millisecond}}
	require.NoError(t, p.init())
	t.Cleanup(func() { p.Close() })
	return p, rec
}

// r2UpRoute installs a route a.test → b.test that is up on a pipe stream,
// as connect leaves it.
func r2UpRoute(t *testing.T, p *Pool) (*route, *Stream, *r2Wire) {
	t.Helper()
	c1, c2 := net.Pipe()
	w := &r2Wire{done: make(chan struct{})}
	go func() {
		defer close(w.done)
		io.Copy(w, c2)
	}()
	s := newStream(p.Endpoint, c1, Outbound, p.eng)
	pr := Pair{Local: "a.test", Remote: "b.test"}
	s.mu.Lock()
	s.valid[pr] = AuthDialback
	s.info.State = Connected
	s.mu.Unlock()
	r := &route{pair: pr, state: routeUp, stream: s}
	p.mu.Lock()
	p.routes[pr] = r
	p.mu.Unlock()
	s.whenDone(func(error) { p.streamEnded(r, s) })
	t.Cleanup(func() {
		s.end(nil)
		c2.Close()
		<-w.done
	})
	return r, s, w
}

func r2Msg(t *testing.T, id string) *Stanza {
	t.Helper()
	st, err := ParseStanza([]byte("<message from='x@a.test' to='y@b.test' id='" + id + "'><body>" + id + "</body></message>"))
	require.NoError(t, err)
	return st
}

// r2InWrite waits until the route's writer has taken n stanzas into
// sendBatch (they are counted before the write lock is taken).
func r2InWrite(t *testing.T, s *Stream, n uint64) {
	t.Helper()
	deadline := time.Now().Add(2 * time.Second)
	for s.ctr.stanzasOut.Load() < n {
		require.True(t, time.Now().Before(deadline), "the writer never reached sendBatch")
		time.Sleep(time.Millisecond)
	}
}

// streamEnded deletes a route whose queue is empty even though its writer
// still holds a batch in flight (it checks r.writer only when the queue is
// not empty). The next Send makes a second route for the same pair and a
// second setup, and when the write fails the batch goes back to the
// orphaned route, which sets up a stream of its own: stanzas from one
// sender leave in the wrong order (here the bounces show it: m2 comes back
// before m1), the orphan is invisible to Routes and ignores the new
// route's back-off.
func TestReview2_RouteDeletedUnderWriter(t *testing.T) {
	p, rec := r2Pool(t, 0)
	r, s, _ := r2UpRoute(t, p)
	ctx := context.Background()
	s.wmu.Lock()
	require.NoError(t, p.Send(ctx, r2Msg(t, "m1")))
	r2InWrite(t, s, 1)
	s.end(errors.New("peer went away (test)"))
	p.mu.Lock()
	kept := p.routes[r.pair] == r
	p.mu.Unlock()
	assert.True(t, kept, "the route was forgotten while its writer still holds m1")
	require.NoError(t, p.Send(ctx, r2Msg(t, "m2")))
	rec.wait(1, 300*time.Millisecond)
	s.wmu.Unlock()
	assert.Equal(t, []string{"m1", "m2"}, rec.wait(2, 2*time.Second), "stanzas of one sender must stay in order")
}

// While a writer's batch is in flight on a stream that has ended, the
// route is "idle": the next Send starts a setup of its own. When that
// setup fails, failed() bounces the queue and puts the route in back-off;
// then the old write fails and drain puts its batch back on the queue of a
// route in back-off, which nothing drains: m1 was accepted by Send and is
// neither written nor bounced (until some later Send after the back-off,
// or Shutdown).
func TestReview2_InFlightBatchStrandedInBackoff(t *testing.T) {
	p, rec := r2Pool(t, 0)
	_, s, _ := r2UpRoute(t, p)
	ctx := context.Background()
	s.wmu.Lock()
	require.NoError(t, p.Send(ctx, r2Msg(t, "m1")))
	r2InWrite(t, s, 1)
	require.NoError(t, p.Send(ctx, r2Msg(t, "m2"))) // queued behind the busy writer
	s.end(errors.New("peer went away (test)"))
	require.NoError(t, p.Send(ctx, r2Msg(t, "m3")))
	rec.wait(2, 300*time.Millisecond)
	s.wmu.Unlock()
	got := rec.wait(3, time.Second)
	assert.Equal(t, []string{"m1", "m2", "m3"}, got, "every stanza bounced, in order; routes: %+v", p.Routes())
}

// A Send waiting for room (queue full, writer busy) is woken when the
// writer's stream fails; when that was the stream's maxWriteFailures-th
// failure, drain calls failed() right after unlocking, which nearly always
// gets the lock before the woken Send. The Send then finds the route in
// back-off, does not check it (only the top of Send does), appends its
// stanza to the emptied queue and returns nil: the stanza waits there,
// neither written nor bounced, until a later Send after the back-off.
func TestReview2_WaiterQueuesIntoBackoff(t *testing.T) {
	p, rec := r2Pool(t, 1)
	r, s, _ := r2UpRoute(t, p)
	ctx := context.Background()
	p.mu.Lock()
	r.writeFailures = maxWriteFailures - 1 // two streams failed before this one
	p.mu.Unlock()
	s.wmu.Lock()
	require.NoError(t, p.Send(ctx, r2Msg(t, "m1")))
	r2InWrite(t, s, 1)
	require.NoError(t, p.Send(ctx, r2Msg(t, "m2"))) // the queue is full now
	errc := make(chan error, 1)
	m3 := r2Msg(t, "m3")
	go func() { errc <- p.Send(ctx, m3) }()
	deadline := time.Now().Add(2 * time.Second)
	for {
		p.mu.Lock()
		waiting := r.space != nil
		p.mu.Unlock()
		if waiting {
			break
		}
		require.True(t, time.Now().Before(deadline), "m3's Send never waited for room")
		time.Sleep(time.Millisecond)
	}
	s.end(errors.New("peer went away (test)"))
	s.wmu.Unlock()
	select {
	case err := <-errc:
		require.NoError(t, err)
	case <-time.After(2 * time.Second):
		t.Fatal("m3's Send did not return")
	}
	got := rec.wait(3, time.Second) // the back-off (≤ 40 ms) is long over by then
	assert.Contains(t, got, "m3", "m3 accepted by Send but neither written nor bounced; routes: %+v", p.Routes())
}

// sendBatch checks that the stream is not closing before it takes the
// write lock, and writes without checking again. A closer that gets the
// write lock in between (closeAsync after an idle timeout, failAsync after
// a policy change) writes </stream:stream> (or a stream error) first, and
// the batch goes out after it: the peer discards it, while sendBatch
// reports success, so the stanzas are counted as sent and never bounced.
func TestReview2_StanzaWrittenAfterClosingTag(t *testing.T) {
	p, rec := r2Pool(t, 0)
	r, s, w := r2UpRoute(t, p)
	s.wmu.Lock()
	require.NoError(t, p.Send(context.Background(), r2Msg(t, "m1")))
	r2InWrite(t, s, 1)
	// What closeAsync does once it holds the write lock.
	s.markClosing()
	require.NoError(t, s.writeLocked([]byte("</stream:stream>")))
	s.wmu.Unlock()
	deadline := time.Now().Add(2 * time.Second)
	for {
		p.mu.Lock()
		busy := r.writer != nil
		p.mu.Unlock()
		if !busy || time.Now().After(deadline) {
			break
		}
		time.Sleep(time.Millisecond)
	}
	time.Sleep(20 * time.Millisecond) // let the pipe reader catch up
	wire := w.String()
	i := strings.Index(wire, "</stream:stream>")
	require.GreaterOrEqual(t, i, 0)
	if strings.Contains(wire[i:], "<message") {
		t.Errorf("m1 written after our closing tag (bounced: %v): %q", rec.wait(0, 0), wire)
	}
}
