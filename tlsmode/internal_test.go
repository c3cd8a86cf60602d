package tlsmode

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestHasCertificate(t *testing.T) {
	t.Parallel()
	assert.False(t, hasCertificate(nil))
	assert.False(t, hasCertificate(&tls.Config{}))
	assert.True(t, hasCertificate(&tls.Config{Certificates: []tls.Certificate{{}}}))
	assert.True(t, hasCertificate(&tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) { return nil, nil }}))
	assert.True(t, hasCertificate(&tls.Config{GetConfigForClient: func(*tls.ClientHelloInfo) (*tls.Config, error) { return nil, nil }}))
}

// deadlineConn records read deadlines; other methods are not used.
type deadlineConn struct {
	net.Conn
	mu    sync.Mutex
	calls []time.Time
	err   error
}

func (c *deadlineConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.calls = append(c.calls, t)
	return c.err
}

func (c *deadlineConn) deadlines() []time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]time.Time(nil), c.calls...)
}

func TestInterruptReadUntouchedWithoutCancel(t *testing.T) {
	t.Parallel()
	c := &deadlineConn{}
	ctx, cancel := context.WithCancel(context.Background())
	stop := interruptRead(ctx, c)
	stop()
	cancel()
	time.Sleep(10 * time.Millisecond)
	assert.Empty(t, c.deadlines(), "a deadline set by the caller is left alone")

	interruptRead(context.Background(), nil)() // no connection: no-op
}

// TestInterruptReadRearms: the deadline is moved into the past again and
// again until stop, then cleared, and never touched after stop.
func TestInterruptReadRearms(t *testing.T) {
	t.Parallel()
	c := &deadlineConn{}
	ctx, cancel := context.WithCancel(context.Background())
	stop := interruptRead(ctx, c)
	cancel()
	require.Eventually(t, func() bool { return len(c.deadlines()) >= 3 }, 5*time.Second, time.Millisecond)
	stop()
	got := c.deadlines()
	last := got[len(got)-1]
	assert.True(t, last.IsZero(), "deadline cleared at stop")
	for _, d := range got[:len(got)-1] {
		assert.False(t, d.IsZero())
		assert.False(t, d.After(time.Now()), "deadlines are in the past")
	}
	time.Sleep(20 * time.Millisecond)
	assert.Len(t, c.deadlines(), len(got), "nothing after stop")
}

// TestInterruptReadNoDeadlineSupport: a connection refusing deadlines ends
// the watch at once.
func TestInterruptReadNoDeadlineSupport(t *testing.T) {
	t.Parallel()
	c := &deadlineConn{err: os.ErrNoDeadline}
	ctx, cancel := context.WithCancel(context.Background())
	stop := interruptRead(ctx, c)
	cancel()
	require.Eventually(t, func() bool { return len(c.deadlines()) >= 1 }, 5*time.Second, time.Millisecond)
	time.Sleep(20 * time.Millisecond)
	assert.Len(t, c.deadlines(), 1, "no re-arming")
	stop()
}

// TestInterruptReadSurvivesReset: another watcher clearing the deadline just
// after the context ends (as xmpp.NewSession's does) does not leave the read
// blocked; after stop the connection reads normally.
func TestInterruptReadSurvivesReset(t *testing.T) {
	t.Parallel()
	for range 20 {
		a, b := net.Pipe()
		ctx, cancel := context.WithCancel(context.Background())
		stop := interruptRead(ctx, a)
		resetDone := make(chan struct{})
		go func() {
			defer close(resetDone)
			<-ctx.Done()
			_ = a.SetDeadline(time.Unix(1, 0))
			_ = a.SetDeadline(time.Time{})
		}()
		readErr := make(chan error, 1)
		go func() {
			_, err := a.Read(make([]byte, 1))
			readErr <- err
		}()
		cancel()
		select {
		case err := <-readErr:
			assert.True(t, errors.Is(err, os.ErrDeadlineExceeded), "got %v", err)
		case <-time.After(5 * time.Second):
			t.Fatal("read not interrupted")
		}
		stop()
		<-resetDone

		go func() { _, _ = b.Write([]byte{'x'}) }()
		buf := make([]byte, 1)
		_, err := a.Read(buf)
		require.NoError(t, err, "deadline cleared after stop")
		assert.Equal(t, byte('x'), buf[0])
		_ = a.Close()
		_ = b.Close()
	}
}
