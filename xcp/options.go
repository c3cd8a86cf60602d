package xcp

import (
	"context"
	"crypto/tls"
	"log/slog"
	"math/rand/v2"
	"net"
	"time"
)

// Defaults for timing, from the project's router link profile
// (spec/component.md §4-5).
const (
	DefaultHandshakeTimeout     = 10 * time.Second
	DefaultKeepAlive            = 30 * time.Second // whitespace when idle this long
	DefaultIdleTimeout          = 90 * time.Second // peer presumed dead after this much silence
	DefaultMinBackoff           = time.Second
	DefaultMaxBackoff           = 60 * time.Second
	DefaultQueueSize            = 1024
	DefaultQueueBytes           = 4 << 20 // per queue: a few large stanzas, or many small ones
	DefaultMaxPendingHandshakes = 64
	DefaultMaxQueueWait         = 60 * time.Second
	DefaultHoldTime             = 10 * time.Second

	closeTimeout  = 5 * time.Second // how long to wait for the peer's </stream:stream>
	shutdownGrace = time.Second     // for a Router's last bounces once Shutdown's ctx is done
	maxBatch      = 256             // stanzas taken from a queue at once
	writeBufSize  = 64 << 10
)

// options is what Router and Link share, with defaults applied.
type options struct {
	tls              *tls.Config
	plaintext        bool
	handshakeTimeout time.Duration
	keepAlive        time.Duration // <0: none
	idleTimeout      time.Duration // <0: none
	lim              limits
	log              *slog.Logger
	dial             func(ctx context.Context, network, addr string) (net.Conn, error)
	minBackoff       time.Duration
	maxBackoff       time.Duration
	queueSize        int
	queueBytes       int
	maxPending       int
}

type optionFields struct {
	TLSConfig            *tls.Config
	Plaintext            bool
	HandshakeTimeout     time.Duration
	KeepAlive            time.Duration
	IdleTimeout          time.Duration
	MaxStanzaSize        int
	MaxDepth             int
	Logger               *slog.Logger
	DialContext          func(ctx context.Context, network, addr string) (net.Conn, error)
	MinBackoff           time.Duration
	MaxBackoff           time.Duration
	QueueSize            int
	QueueBytes           int
	MaxPendingHandshakes int
}

func (f optionFields) options() (*options, error) {
	if f.TLSConfig == nil && !f.Plaintext {
		return nil, ErrNoTLS
	}
	o := &options{
		tls:              f.TLSConfig,
		plaintext:        f.Plaintext && f.TLSConfig == nil,
		handshakeTimeout: orDefault(f.HandshakeTimeout, DefaultHandshakeTimeout),
		keepAlive:        orDefault(f.KeepAlive, DefaultKeepAlive),
		idleTimeout:      orDefault(f.IdleTimeout, DefaultIdleTimeout),
		lim: limits{
			maxElem:  orDefault(f.MaxStanzaSize, DefaultMaxStanzaSize),
			maxDepth: orDefault(f.MaxDepth, DefaultMaxDepth),
			maxAttrs: defaultMaxAttrs,
		},
		log:        f.Logger,
		dial:       f.DialContext,
		minBackoff: orDefault(f.MinBackoff, DefaultMinBackoff),
		maxBackoff: orDefault(f.MaxBackoff, DefaultMaxBackoff),
		queueSize:  orDefault(f.QueueSize, DefaultQueueSize),
		queueBytes: orDefault(f.QueueBytes, DefaultQueueBytes),
		maxPending: orDefault(f.MaxPendingHandshakes, DefaultMaxPendingHandshakes),
	}
	if o.maxBackoff < o.minBackoff {
		o.maxBackoff = o.minBackoff
	}
	if o.log == nil {
		o.log = slog.New(slog.DiscardHandler)
	}
	if o.dial == nil {
		d := &net.Dialer{KeepAlive: -1} // we run our own keepalive at the XMPP level
		o.dial = d.DialContext
	}
	return o, nil
}

func orDefault[T int | time.Duration](v, def T) T {
	if v == 0 {
		return def
	}
	return v
}

// serverTLS is the configuration for the side that accepts the TCP
// connection: the peer must present a certificate our CAs trust, unless the
// caller chose otherwise.
func serverTLS(cfg *tls.Config) *tls.Config {
	c := cfg.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ClientAuth == tls.NoClientCert {
		c.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return c
}

// clientTLS is the configuration for the side that dials addr.
func clientTLS(cfg *tls.Config, addr string) *tls.Config {
	c := cfg.Clone()
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ServerName == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			host = addr
		}
		c.ServerName = host
	}
	return c
}

// backoff produces exponentially growing, jittered delays: half the
// nominal delay plus a random part up to the other half, so that many
// links cut by one router restart do not all come back at once.
type backoff struct {
	min, max, cur time.Duration
}

func (b *backoff) next() time.Duration {
	if b.cur < b.min {
		b.cur = b.min
	} else {
		b.cur = min(2*b.cur, b.max)
	}
	half := b.cur / 2
	return half + rand.N(half+1)
}

func (b *backoff) reset() { b.cur = 0 }

// sleep waits for d or until done is closed; it reports whether d passed.
func sleep(done <-chan struct{}, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-done:
		return false
	}
}
