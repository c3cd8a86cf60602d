package xcp

import (
	"context"
	"crypto/tls"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/xmppfed/xmppfed/internal/logkey"
)

// endpoint is what Link and Router share to open and accept router links:
// their options, their lifetime and the listeners their Serve runs on.
type endpoint struct {
	o         *options
	log       *slog.Logger
	serverTLS *tls.Config
	ctx       context.Context
	cancel    context.CancelFunc
	wg        sync.WaitGroup
	pending   chan struct{} // a token per connection in the handshake (Serve)
	refused   rateLog

	// mu guards closed and listeners, and the owner's own mutable state.
	mu        sync.Mutex
	closed    bool
	listeners map[net.Listener]struct{}
}

// use sets the options, and what follows from them.
func (e *endpoint) use(o *options) {
	e.o = o
	e.pending = make(chan struct{}, o.maxPending)
	if o.tls != nil {
		e.serverTLS = serverTLS(o.tls)
	}
}

// tick calls f every quarter of d (at least every second, at most every
// millisecond) until e closes, then calls e.wg.Done.
func (e *endpoint) tick(d time.Duration, f func(now time.Time)) {
	defer e.wg.Done()
	t := time.NewTicker(min(time.Second, max(d/4, time.Millisecond)))
	defer t.Stop()
	for {
		select {
		case <-e.ctx.Done():
			return
		case now := <-t.C:
			f(now)
		}
	}
}

// addListener registers ln for Close to close, or returns ErrClosed.
func (e *endpoint) addListener(ln net.Listener) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return ErrClosed
	}
	if e.listeners == nil {
		e.listeners = make(map[net.Listener]struct{})
	}
	e.listeners[ln] = struct{}{}
	return nil
}

func (e *endpoint) removeListener(ln net.Listener) {
	e.mu.Lock()
	delete(e.listeners, ln)
	e.mu.Unlock()
}

// listenerList returns the registered listeners; e.mu is held.
func (e *endpoint) listenerList() []net.Listener {
	lns := make([]net.Listener, 0, len(e.listeners))
	for ln := range e.listeners {
		lns = append(lns, ln)
	}
	return lns
}

// acceptLoop accepts connections on ln until it fails or e closes, and
// runs handle on each in a goroutine counted in e.wg. handle must release
// the connection's pending token; a connection that finds none left is
// closed at once, with tooMany logged (at most every ten seconds).
func (e *endpoint) acceptLoop(ln net.Listener, tooMany string, handle func(net.Conn)) error {
	for {
		nc, err := ln.Accept()
		if err != nil {
			if e.ctx.Err() != nil {
				return ErrClosed
			}
			return err
		}
		// Add under the lock Close takes before it waits, so that Close
		// never misses a connection accepted as it closes.
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			_ = nc.Close()
			return ErrClosed
		}
		e.wg.Add(1)
		e.mu.Unlock()
		select {
		case e.pending <- struct{}{}:
		default:
			e.wg.Done()
			_ = nc.Close()
			e.refused.warn(e.log, tooMany,
				logkey.PeerAddr, nc.RemoteAddr().String(), logkey.Count, cap(e.pending))
			continue
		}
		go func() {
			defer e.wg.Done()
			handle(nc)
		}()
	}
}

// handshakeIn secures nc, a connection acceptLoop handed over, and runs
// the receiving side (ns) of the handshake on it with respond, holding the
// connection's pending token until then. If TLS fails, it closes nc, calls
// tlsRefused and returns a nil conn. Otherwise it returns the conn and
// respond's error (ErrClosed if e closed meanwhile), having closed the
// connection if there is one.
func (e *endpoint) handshakeIn(nc net.Conn, ns string, tlsRefused func(addr string, err error), respond func(c *conn) error) (c *conn, addr string, err error) {
	released := false
	release := func() {
		if !released {
			released = true
			<-e.pending
		}
	}
	defer release()
	stop := context.AfterFunc(e.ctx, func() { _ = nc.Close() })
	addr = nc.RemoteAddr().String()
	nc2, err := secureServer(e.ctx, nc, e.serverTLS, e.o.handshakeTimeout)
	if err != nil {
		stop()
		_ = nc.Close()
		tlsRefused(addr, err)
		return nil, addr, err
	}
	c = newConn(nc2, e.o, ns)
	err = respond(c)
	if !stop() {
		err = ErrClosed
	}
	release()
	if err != nil {
		_ = nc2.Close()
	}
	return c, addr, err
}

// dialLink dials addr and runs the initiating side (ns) of the handshake
// as component name, within the handshake timeout; check, if not nil,
// vets the secured connection first. ctx ending closes the connection.
// Errors are *LinkError.
func (e *endpoint) dialLink(ns, name, secret, addr string, check func(net.Conn) error) (*conn, error) {
	ctx, cancel := context.WithTimeout(e.ctx, e.o.handshakeTimeout)
	defer cancel()
	nc, err := e.o.dial(ctx, "tcp", addr)
	if err != nil {
		return nil, &LinkError{Component: name, Addr: addr, Op: "dial", Err: err}
	}
	nc2, err := secureClient(ctx, nc, e.o.tls, addr, e.o.handshakeTimeout)
	if err != nil {
		_ = nc.Close()
		return nil, &LinkError{Component: name, Addr: addr, Op: "tls", Err: err}
	}
	if check != nil {
		if err := check(nc2); err != nil {
			_ = nc2.Close()
			return nil, &LinkError{Component: name, Addr: addr, Op: "tls", Err: err}
		}
	}
	stop := context.AfterFunc(e.ctx, func() { _ = nc2.Close() })
	defer stop()
	c := newConn(nc2, e.o, ns)
	if err := c.initiate(name, secret); err != nil {
		_ = nc2.Close()
		return nil, &LinkError{Component: name, Addr: addr, Op: "handshake", Err: err}
	}
	return c, nil
}
