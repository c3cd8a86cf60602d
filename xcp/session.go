package xcp

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"mellium.im/xmpp/stream"
)

// session runs an authenticated stream: one goroutine reads and hands each
// stanza to handle, the caller's goroutine writes what the queue holds.
// Nothing runs per stanza but the work itself.
//
// Delivery is at most once for what the writer has handed to the kernel:
// XEP-0114 has no acknowledgements, so a stanza whose bytes all left in a
// write that succeeded is not sent again if the connection fails later.
// A stanza whose bytes did not all leave (still in the write buffer, or
// cut short by the failed write) goes back to the front of the queue, in
// order, for the next stream; the peer drops the part it may have got with
// the broken stream.
type session struct {
	*conn
	out     *queue
	handle  func(Stanza) error // a *StreamError closes the stream with it
	expired func([]item)       // items whose deadline passed before they were written; must not block
	// writerDone, if set, runs when the writer has stopped, before the
	// session waits for the reader: the reader may be blocked on
	// something only the owner can release (a full queue, a Handler).
	writerDone func(error)

	ctx    context.Context // for handle; cancelled when the writer stops
	cancel context.CancelFunc

	stopCh      chan struct{}
	stopOnce    sync.Once
	drainOnStop atomic.Bool
	readDone    chan struct{}
	readErr     error
	dying       chan struct{} // closed once the writer has stopped
	winding     chan struct{} // closed once the writer has stopped, or the owner cuts the stream
	windOnce    sync.Once

	batch   []item
	pending []pendingItem // written to the buffer, not yet wholly to the kernel
	doneN   int           // pending items completed since the queue last heard of it
	doneB   int
}

// pendingItem is a stanza in the write buffer: its last byte is byte end
// of the connection's output.
type pendingItem struct {
	it  item
	end int64
}

func newSession(parent context.Context, c *conn, out *queue, handle func(Stanza) error, expired func([]item)) *session {
	ctx, cancel := context.WithCancel(parent)
	return &session{
		conn:     c,
		out:      out,
		handle:   handle,
		expired:  expired,
		ctx:      ctx,
		cancel:   cancel,
		stopCh:   make(chan struct{}),
		readDone: make(chan struct{}),
		dying:    make(chan struct{}),
		winding:  make(chan struct{}),
		batch:    make([]item, 0, maxBatch),
	}
}

// stop asks for a graceful close: </stream:stream> is sent, and stanzas
// the peer sends until it closes its side are still handled.
func (s *session) stop() { s.stopOnce.Do(func() { close(s.stopCh) }) }

// stopAfterQueue is stop, but what is queued is written first.
func (s *session) stopAfterQueue() {
	s.drainOnStop.Store(true)
	s.stop()
}

// run serves the stream until it ends and returns why: nil after stop,
// ErrPeerClosed, a *StreamError (ours or the peer's), or an I/O error.
func (s *session) run() error {
	if s.o.idleTimeout > 0 {
		s.rd.idle = s.o.idleTimeout
	}
	go s.readLoop()
	err := s.writeLoop()
	// Nothing is pending after a clean flush, and a failed write put it
	// back; this only makes sure, before another stream can take the queue.
	s.putBack(nil)
	s.windDown()
	close(s.dying)
	_ = s.nc.Close()
	s.cancel()
	if s.writerDone != nil {
		s.writerDone(err)
	}
	<-s.readDone
	return err
}

func (s *session) readLoop() {
	defer close(s.readDone)
	for {
		el, err := s.sc.next()
		if err != nil {
			var ne net.Error
			switch {
			case err == errStreamEnd:
				err = ErrPeerClosed
			case errors.As(err, &ne) && ne.Timeout():
				err = violation(stream.ConnectionTimeout, "nothing received for %s", s.o.idleTimeout)
			}
			s.readErr = err
			return
		}
		switch {
		case el.kind.stanza():
			if err := s.handle(makeStanza(el, s.sc.hdr.ns)); err != nil {
				s.readErr = err
				return
			}
		case el.kind == kindStreamError:
			s.readErr = remoteError(el.raw)
			return
		default:
			s.readErr = violation(stream.UnsupportedStanzaType, "<%s/> is not a stanza", el.kind)
			if el.kind == kindOther {
				s.readErr = violation(stream.UnsupportedStanzaType, "<%s xmlns='%s'/> is not a stanza", el.name, el.unsupportedNSForErr)
			}
			return
		}
	}
}

func (s *session) writeLoop() error {
	var tick <-chan time.Time
	if s.o.keepAlive > 0 {
		t := time.NewTicker(s.o.keepAlive)
		defer t.Stop()
		tick = t.C
	}
	active := false
	s.out.rearm()
	for {
		select {
		case <-s.out.ready:
			if s.readEnded() {
				return s.closeAfterRead()
			}
			if err := s.drain(); err != nil {
				return err
			}
			active = true
		case <-tick:
			if !active {
				// Whitespace keepalive: lets the peer's dead-peer detection
				// tell an idle link from a dead one.
				s.setWriteDeadline(s.o.idleTimeout)
				if err := s.w.WriteByte(' '); err != nil {
					return err
				}
				if err := s.flush(); err != nil {
					return err
				}
			}
			active = false
		case <-s.readDone:
			return s.closeAfterRead()
		case <-s.stopCh:
			if s.drainOnStop.Load() {
				if err := s.drain(); err != nil {
					return err
				}
			}
			return s.closeGracefully()
		}
	}
}

func (s *session) setWriteDeadline(d time.Duration) {
	if d > 0 {
		_ = s.nc.SetWriteDeadline(time.Now().Add(d))
	}
}

// readEnded reports whether the reader has stopped: after the peer's
// </stream:stream>, or with the stream broken, nothing more should be
// written but our own closing (RFC 6120 §4.4), and what is still queued
// waits for the next stream.
func (s *session) readEnded() bool {
	select {
	case <-s.readDone:
		return true
	default:
		return false
	}
}

// drain writes everything queued, flushing once the queue is empty.
func (s *session) drain() error {
	for {
		if s.readEnded() {
			return s.flush()
		}
		s.batch = s.out.pop(s.batch[:0], maxBatch, s.doneN, s.doneB)
		s.doneN, s.doneB = 0, 0
		b := s.batch
		if len(b) == 0 {
			return s.flush()
		}
		s.setWriteDeadline(s.o.idleTimeout)
		var expired []item
		var now time.Time
		for i, it := range b {
			if !it.expires.IsZero() && s.expired != nil {
				if now.IsZero() {
					now = time.Now()
				}
				if now.After(it.expires) {
					expired = append(expired, it)
					s.doneN++
					s.doneB += it.size()
					continue
				}
			}
			if _, err := s.w.WriteString(it.st.raw); err != nil {
				s.putBack(b[i:])
				s.bounceExpired(expired)
				return err
			}
			s.pending = append(s.pending, pendingItem{it: it, end: s.cw.n + int64(s.w.Buffered())})
		}
		clear(b) // do not pin stanzas until the next batch
		s.confirm()
		s.bounceExpired(expired)
		select {
		case <-s.stopCh:
			if !s.drainOnStop.Load() {
				return s.flush()
			}
		default:
		}
	}
}

// flush writes out the buffer, then completes or puts back the pending
// stanzas.
func (s *session) flush() error {
	if err := s.w.Flush(); err != nil {
		s.putBack(nil)
		return err
	}
	s.confirm()
	if s.doneN > 0 {
		s.out.done(s.doneN, s.doneB)
		s.doneN, s.doneB = 0, 0
	}
	return nil
}

// confirm drops from pending the stanzas wholly handed to the kernel; the
// queue hears of them with the next pop or flush.
func (s *session) confirm() {
	k := 0
	for k < len(s.pending) && s.pending[k].end <= s.cw.n {
		s.doneN++
		s.doneB += s.pending[k].it.size()
		k++
	}
	if k == 0 {
		return
	}
	n := copy(s.pending, s.pending[k:])
	clear(s.pending[n:])
	s.pending = s.pending[:n]
}

// putBack, after a failed write, completes what reached the kernel and
// puts back at the front of the queue, in order, the pending stanzas that
// did not, then rest (the stanzas of the batch not written yet).
func (s *session) putBack(rest []item) {
	s.confirm()
	s.out.done(s.doneN, s.doneB)
	s.doneN, s.doneB = 0, 0
	if len(s.pending) == 0 && len(rest) == 0 {
		return
	}
	back := make([]item, 0, len(s.pending)+len(rest))
	for _, p := range s.pending {
		back = append(back, p.it)
	}
	back = append(back, rest...)
	clear(s.pending)
	s.pending = s.pending[:0]
	s.out.pushFront(back)
}

func (s *session) bounceExpired(items []item) {
	if len(items) > 0 {
		s.expired(items)
	}
}

// windDown tells the reader to stop waiting for room in a queue (its own,
// or a full one) for what it read: the stream ends now.
func (s *session) windDown() { s.windOnce.Do(func() { close(s.winding) }) }

// cut ends the stream at once: no closing tag, and the reader waits for
// nothing.
func (s *session) cut() {
	s.windDown()
	s.stop()
	_ = s.nc.Close()
}

// closeAfterRead ends the stream after the reader stopped.
func (s *session) closeAfterRead() error {
	err := s.readErr
	var se *StreamError
	_ = s.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
	switch {
	case errors.As(err, &se) && !se.Remote:
		_, _ = s.w.WriteString(streamErrorXML(se) + "</stream:stream>")
		_ = s.flush()
	case errors.Is(err, ErrPeerClosed), errors.As(err, &se):
		_, _ = s.w.WriteString("</stream:stream>")
		_ = s.flush()
	}
	return err
}

// closeGracefully sends </stream:stream> and waits a little for the peer
// to close its side, handling what it still sends.
func (s *session) closeGracefully() error {
	_ = s.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
	_, _ = s.w.WriteString("</stream:stream>")
	if err := s.flush(); err != nil {
		return nil
	}
	t := time.NewTimer(closeTimeout)
	defer t.Stop()
	select {
	case <-s.readDone:
	case <-t.C:
	}
	return nil
}
