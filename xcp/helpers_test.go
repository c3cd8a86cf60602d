package xcp_test

import (
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/xmppfed/xmppfed/xcp"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// Secrets of 16+ bytes, as the package recommends.
const (
	secretA   = "secret-for-a-0123456789"
	secretB   = "secret-for-b-0123456789"
	secretS2S = "secret-for-s2s-01234567"
	secretIMP = "secret-for-imp-01234567"
)

// testLogger logs to the test output when XCP_TEST_LOG is set.
func testLogger(t testing.TB) *slog.Logger {
	if os.Getenv("XCP_TEST_LOG") == "" {
		return nil
	}
	return slog.New(slog.NewTextHandler(tlogWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tlogWriter struct{ t testing.TB }

func (w tlogWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimSpace(string(p)))
	return len(p), nil
}

func listen(t testing.TB) net.Listener {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	return ln
}

// fast applies test timings to a router.
func fastRouter(t testing.TB, r *xcp.Router) *xcp.Router {
	r.Plaintext = r.TLSConfig == nil
	r.MinBackoff = 10 * time.Millisecond
	r.MaxBackoff = 100 * time.Millisecond
	if r.HandshakeTimeout == 0 {
		r.HandshakeTimeout = 2 * time.Second
	}
	if r.Logger == nil {
		r.Logger = testLogger(t)
	}
	return r
}

// startRouter serves r on a new loopback listener until the test ends.
func startRouter(t testing.TB, r *xcp.Router) string {
	t.Helper()
	fastRouter(t, r)
	ln := listen(t)
	return serveRouter(t, r, ln)
}

func serveRouter(t testing.TB, r *xcp.Router, ln net.Listener) string {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- r.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, r.Close())
		require.ErrorIs(t, <-done, xcp.ErrClosed)
	})
	return ln.Addr().String()
}

func fastLink(t testing.TB, l *xcp.Link) *xcp.Link {
	l.Plaintext = l.TLSConfig == nil
	l.MinBackoff = 10 * time.Millisecond
	l.MaxBackoff = 100 * time.Millisecond
	if l.HandshakeTimeout == 0 {
		l.HandshakeTimeout = 2 * time.Second
	}
	if l.Logger == nil {
		l.Logger = testLogger(t)
	}
	return l
}

// startLink starts l dialling addr until the test ends.
func startLink(t testing.TB, l *xcp.Link) *xcp.Link {
	t.Helper()
	fastLink(t, l)
	require.NoError(t, l.Start())
	t.Cleanup(func() { require.NoError(t, l.Close()) })
	return l
}

// serveLink makes l wait for the router on a new listener; it returns the
// listener's address.
func serveLink(t testing.TB, l *xcp.Link) string {
	t.Helper()
	fastLink(t, l)
	ln := listen(t)
	done := make(chan error, 1)
	go func() { done <- l.Serve(ln) }()
	t.Cleanup(func() {
		require.NoError(t, l.Close())
		require.ErrorIs(t, <-done, xcp.ErrClosed)
	})
	return ln.Addr().String()
}

func ready(t testing.TB, links ...*xcp.Link) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	for _, l := range links {
		require.NoError(t, l.Ready(ctx), "link %s", l.Name)
	}
}

// collector is a Handler that keeps what arrives.
type collector chan xcp.Stanza

func newCollector() collector { return make(collector, 10000) }

func (c collector) HandleStanza(_ context.Context, st xcp.Stanza) { c <- st }

// next returns the next stanza or fails the test after a timeout.
func (c collector) next(t testing.TB) xcp.Stanza {
	t.Helper()
	select {
	case st := <-c:
		return st
	case <-time.After(5 * time.Second):
		t.Fatal("no stanza arrived")
		return xcp.Stanza{}
	}
}

// none checks that nothing more arrives for a moment.
func (c collector) none(t testing.TB) {
	t.Helper()
	select {
	case st := <-c:
		t.Fatalf("unexpected stanza %s", st)
	case <-time.After(50 * time.Millisecond):
	}
}

func msg(t testing.TB, from, to, body string) xcp.Stanza {
	t.Helper()
	st, err := xcp.ParseStanza(fmt.Appendf(nil, `<message from='%s' to='%s' id='%s' type='chat'><body>%s</body></message>`, from, to, body, body))
	require.NoError(t, err)
	return st
}

func send(t testing.TB, l *xcp.Link, st xcp.Stanza) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	require.NoError(t, l.Send(ctx, st))
}

// stateWatcher records a link's state changes.
type stateWatcher chan xcp.State

func watch(l *xcp.Link) stateWatcher {
	w := make(stateWatcher, 1000)
	l.OnStateChange = func(s xcp.State, _ error) {
		select {
		case w <- s:
		default:
		}
	}
	return w
}

func (w stateWatcher) waitFor(t testing.TB, want xcp.State) {
	t.Helper()
	deadline := time.After(5 * time.Second)
	for {
		select {
		case s := <-w:
			if s == want {
				return
			}
		case <-deadline:
			t.Fatalf("link never reached %s", want)
		}
	}
}

// syncBuffer collects log output from several goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newTextLogger(w *syncBuffer) *slog.Logger {
	return slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// listenOn listens on a given loopback address, retrying briefly: the old
// listener's port may take a moment to be free.
func listenOn(addr string) (net.Listener, error) {
	var err error
	for range 100 {
		var ln net.Listener
		if ln, err = net.Listen("tcp", addr); err == nil {
			return ln, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	return nil, err
}
