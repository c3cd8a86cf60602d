package xcp

import (
	"errors"
	"net"
	"sync"
	"time"

	"mellium.im/xmpp/stream"
)

// session runs an authenticated stream: one goroutine reads and hands each
// stanza to handle, the caller's goroutine writes what the queue holds.
// Nothing runs per stanza but the work itself.
type session struct {
	*conn
	out     *queue
	handle  func(Stanza) error // a *StreamError closes the stream with it
	expired func([]item)       // items whose deadline passed before they were written

	stopCh   chan struct{}
	stopOnce sync.Once
	readDone chan struct{}
	readErr  error
	dying    chan struct{} // closed once the writer has stopped
}

func newSession(c *conn, out *queue, handle func(Stanza) error, expired func([]item)) *session {
	return &session{
		conn:     c,
		out:      out,
		handle:   handle,
		expired:  expired,
		stopCh:   make(chan struct{}),
		readDone: make(chan struct{}),
		dying:    make(chan struct{}),
	}
}

// stop asks for a graceful close: </stream:stream> is sent, and stanzas
// the peer sends until it closes its side are still handled.
func (s *session) stop() { s.stopOnce.Do(func() { close(s.stopCh) }) }

// run serves the stream until it ends and returns why: nil after stop,
// ErrPeerClosed, a *StreamError (ours or the peer's), or an I/O error.
func (s *session) run() error {
	if s.o.idleTimeout > 0 {
		s.rd.idle = s.o.idleTimeout
	}
	go s.readLoop()
	err := s.writeLoop()
	close(s.dying)
	_ = s.nc.Close()
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
			if err := s.handle(makeStanza(el)); err != nil {
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
	batch := make([]item, 0, maxBatch)
	active := false
	for {
		select {
		case <-s.out.ready:
			if err := s.drain(&batch); err != nil {
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
				if err := s.w.Flush(); err != nil {
					return err
				}
			}
			active = false
		case <-s.readDone:
			return s.closeAfterRead()
		case <-s.stopCh:
			return s.closeGracefully()
		}
	}
}

func (s *session) setWriteDeadline(d time.Duration) {
	if d > 0 {
		_ = s.nc.SetWriteDeadline(time.Now().Add(d))
	}
}

// drain writes everything queued, flushing once the queue is empty.
func (s *session) drain(batch *[]item) error {
	for {
		b := s.out.popAll((*batch)[:0], maxBatch)
		*batch = b
		if len(b) == 0 {
			return s.w.Flush()
		}
		s.setWriteDeadline(s.o.idleTimeout)
		var expired []item
		var now time.Time
		for i, it := range b {
			if !it.expires.IsZero() {
				if now.IsZero() {
					now = time.Now()
				}
				if now.After(it.expires) && s.expired != nil {
					expired = append(expired, it)
					continue
				}
			}
			if _, err := s.w.WriteString(it.st.raw); err != nil {
				// Put back what never reached the connection: the failed one
				// can at most have gone out in part, which the peer drops.
				s.out.pushFront(b[i:])
				s.bounceExpired(expired)
				return err
			}
		}
		clear(b) // do not pin stanzas until the next batch
		s.bounceExpired(expired)
		select {
		case <-s.readDone:
			return s.w.Flush()
		case <-s.stopCh:
			return s.w.Flush()
		default:
		}
	}
}

func (s *session) bounceExpired(items []item) {
	if len(items) > 0 {
		s.expired(items)
	}
}

// closeAfterRead ends the stream after the reader stopped.
func (s *session) closeAfterRead() error {
	err := s.readErr
	var se *StreamError
	_ = s.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
	switch {
	case errors.As(err, &se) && !se.Remote:
		_ = s.w.Flush()
		s.w.WriteString(streamErrorXML(se) + "</stream:stream>")
		_ = s.w.Flush()
	case errors.Is(err, ErrPeerClosed), errors.As(err, &se):
		_ = s.w.Flush()
		s.w.WriteString("</stream:stream>")
		_ = s.w.Flush()
	}
	return err
}

// closeGracefully sends </stream:stream> and waits a little for the peer
// to close its side, handling what it still sends.
func (s *session) closeGracefully() error {
	_ = s.nc.SetWriteDeadline(time.Now().Add(closeTimeout))
	s.w.WriteString("</stream:stream>")
	if err := s.w.Flush(); err != nil {
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
