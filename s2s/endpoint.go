package s2s

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Default timers (s2s-stream.md §12). Cisco XCP waits 30 s for a dialback
// answer; the receiving side's verification must finish before that.
const (
	DefaultDialbackTimeout    = 30 * time.Second
	DefaultVerifyTimeout      = 20 * time.Second
	DefaultNegotiationTimeout = 30 * time.Second
	DefaultConnectTimeout     = 10 * time.Second
)

// An Endpoint is one XMPP server's server-to-server identity and settings:
// the domains it serves, its dialback secret, its TLS certificates and
// security mode. It originates streams (Dial) and serves inbound ones
// (ServeConn); the federation engine builds on it.
//
// Fields must not be changed while the Endpoint is in use, except through
// the methods that say they may. The zero value is not usable: at least
// Domains and Keys must be set.
type Endpoint struct {
	// Domains are the XMPP domains served here (A-labels or U-labels; they
	// are normalised). The first is the default, used as the 'from' of a
	// response header when the requested domain is not served.
	Domains []string

	// Keys makes and verifies dialback keys (dialback.Generator or
	// dialback.Keyring). Every node of a cluster holds the same secret, so any
	// node can verify any other node's keys.
	Keys dialback.KeyAlgorithm

	// Security is the security mode: TLS required (the zero value), optional,
	// or no TLS.
	Security tlsmode.Mode

	// TLS holds the certificates presented for the served domains, chosen by
	// SNI (GetCertificate) or from Certificates by name. It is also the
	// source of the client certificate presented on outbound streams. Nil
	// means no certificate: STARTTLS is then not offered to peers.
	TLS *tls.Config

	// Roots verify peers' certificates; nil means the system roots.
	Roots *x509.CertPool

	// RequireValidCert refuses a TLS stream whose peer certificate does not
	// verify for the remote domain instead of falling back to dialback.
	// RequireValidCertFor does the same for individual remote domains.
	RequireValidCert    bool
	RequireValidCertFor func(remote string) bool

	// Resolver finds remote servers. Nil means a Resolver with defaults
	// (the system's nameservers).
	Resolver *srv.Resolver

	// DialContext opens TCP connections; nil means a net.Dialer with
	// ConnectTimeout.
	DialContext func(ctx context.Context, network, addr string) (net.Conn, error)

	// Timers; zero means the default.
	DialbackTimeout    time.Duration // wait for db:result valid (originating)
	VerifyTimeout      time.Duration // wait for db:verify answer (receiving)
	NegotiationTimeout time.Duration // stream setup, and an inbound stream's life until authenticated
	ConnectTimeout     time.Duration // per TCP connect

	// Limits on what a peer may send.
	MaxStanzaSize int // bytes; default 512 KiB
	MaxDepth      int // default 64

	// Logger receives structured logs; nil discards them.
	Logger *slog.Logger

	// RemotePolicy, if set, is asked before anything is done for a remote
	// domain: before Dial connects out, before a db:result is verified
	// (so a denied domain cannot make us connect anywhere) and before SASL
	// EXTERNAL succeeds. A non-nil error refuses: Dial returns it wrapped
	// with ErrPolicy; inbound, the dialback answer is <policy-violation/>
	// and SASL fails with <not-authorized/>. It must be fast and safe for
	// concurrent use; the federation engine puts its privacy mode here.
	RemotePolicy func(local, remote string) error

	// Bidi enables XEP-0288 bidirectional streams: inbound streams offer
	// it, and outbound streams request it when the peer offers it and
	// someone receives the peer's stanzas (a Server, once its first Serve
	// or OutboundPool call has set it up). One TCP connection then
	// carries both directions for a domain pair, as Prosody and ejabberd
	// do. Not in TLS-required mode before TLS.
	Bidi bool

	// Policy, if set, holds the settings that may change at runtime: its
	// security mode replaces Security, its privacy mode refuses domains in
	// addition to RemotePolicy, its static routes replace the Resolver's
	// (from the first version that has any; until then the Resolver's own
	// stay), and its per-domain overrides add to RequireValidCertFor.
	// Several Endpoints may share one Policy.
	Policy *Policy

	// OnStateChange, if set, is called on every state change of every stream,
	// synchronously from the goroutine that caused it: keep it fast, and do
	// not call the stream's Close from it (Close waits for that goroutine).
	OnStateChange func(StateChange)

	resolverOnce  sync.Once
	defResolver   *srv.Resolver
	routesVersion atomic.Int64 // the Policy version whose routes the resolver holds
	routesApplied atomic.Bool  // the Policy's routes have replaced the Resolver's
}

// check refuses to run with a configuration that would fail later, inside a
// goroutine, where it could not be reported.
func (e *Endpoint) check(op string) error {
	switch {
	case len(e.Domains) == 0:
		return &Error{Op: op, Err: fmt.Errorf("%w: no Domains", ErrConfig)}
	case e.Keys == nil:
		return &Error{Op: op, Err: fmt.Errorf("%w: no dialback Keys (secret)", ErrConfig)}
	case e.Policy == nil && e.Security > tlsmode.NoTLS:
		return &Error{Op: op, Err: fmt.Errorf("%w: invalid security mode %d", ErrConfig, e.Security)}
	}
	switch k := e.Keys.(type) {
	case dialback.Keyring:
		if len(k) == 0 {
			return &Error{Op: op, Err: fmt.Errorf("%w: empty dialback Keyring", ErrConfig)}
		}
	case dialback.Generator:
		if len(k.Secret) == 0 {
			return &Error{Op: op, Err: fmt.Errorf("%w: empty dialback secret", ErrConfig)}
		}
	}
	if op == "serve" && e.security("") == tlsmode.Required && !e.hasCertificate(e.defaultDomain()) {
		return &Error{Op: op, Err: fmt.Errorf("%w: security mode is TLS required but no certificate is configured, so no peer could connect", ErrConfig)}
	}
	for _, d := range e.Domains {
		if _, err := srv.NormalizeDomain(d); err != nil {
			return &Error{Op: op, Err: fmt.Errorf("%w: domain %q: %v", ErrConfig, d, err)}
		}
	}
	return nil
}

func (e *Endpoint) logger() *slog.Logger {
	if e.Logger != nil {
		return e.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (e *Endpoint) dialbackTimeout() time.Duration {
	return orDefault(e.DialbackTimeout, DefaultDialbackTimeout)
}
func (e *Endpoint) verifyTimeout() time.Duration {
	return orDefault(e.VerifyTimeout, DefaultVerifyTimeout)
}
func (e *Endpoint) negotiationTimeout() time.Duration {
	return orDefault(e.NegotiationTimeout, DefaultNegotiationTimeout)
}
func (e *Endpoint) connectTimeout() time.Duration {
	return orDefault(e.ConnectTimeout, DefaultConnectTimeout)
}

func orDefault(d, def time.Duration) time.Duration {
	if d > 0 {
		return d
	}
	return def
}

// Serves reports whether domain is one of the Endpoint's domains.
func (e *Endpoint) Serves(domain string) bool {
	d, err := srv.NormalizeDomain(domain)
	if err != nil {
		return false
	}
	for _, own := range e.Domains {
		if o, err := srv.NormalizeDomain(own); err == nil && o == d {
			return true
		}
	}
	return false
}

func (e *Endpoint) defaultDomain() string {
	for _, own := range e.Domains {
		if o, err := srv.NormalizeDomain(own); err == nil {
			return o
		}
	}
	return "localhost"
}

// policy asks the Policy's privacy mode and RemotePolicy about a pair.
func (e *Endpoint) policy(local, remote string) error {
	if e.Policy != nil {
		if err := e.Policy.Check(remote); err != nil {
			return fmt.Errorf("%w: %w", ErrPolicy, err)
		}
	}
	if e.RemotePolicy == nil {
		return nil
	}
	if err := e.RemotePolicy(local, remote); err != nil {
		return fmt.Errorf("%w: %w", ErrPolicy, err)
	}
	return nil
}

// security returns the security mode for streams with remote ("" when the
// peer's domain is not known yet).
func (e *Endpoint) security(remote string) tlsmode.Mode {
	if e.Policy != nil {
		return e.Policy.SecurityFor(remote)
	}
	return e.Security
}

func (e *Endpoint) requireValidCert(remote string) bool {
	return e.RequireValidCert || (e.RequireValidCertFor != nil && e.RequireValidCertFor(remote)) ||
		(e.Policy != nil && e.Policy.RequireValidCert(remote))
}

// resolver returns the Resolver (one default Resolver per Endpoint, so that
// its cache is kept), with the Policy's static routes applied.
func (e *Endpoint) resolver() *srv.Resolver {
	r := e.Resolver
	if r == nil {
		e.resolverOnce.Do(func() { e.defResolver = &srv.Resolver{} })
		r = e.defResolver
	}
	if e.Policy != nil {
		if c := e.Policy.load(); c.version != 0 && e.routesVersion.Load() != c.version {
			// A Policy that never had routes leaves the Resolver's own
			// alone; once it has had some, it owns them, and a change to
			// none clears them.
			if len(c.cfg.StaticRoutes) > 0 || e.routesApplied.Load() {
				r.SetStaticRoutes(c.cfg.StaticRoutes)
				e.routesApplied.Store(true)
			}
			e.routesVersion.Store(c.version)
		}
	}
	return r
}

func (e *Endpoint) dial(ctx context.Context, addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, e.connectTimeout())
	defer cancel()
	if e.DialContext != nil {
		return e.DialContext(ctx, "tcp", addr)
	}
	var d net.Dialer
	return d.DialContext(ctx, "tcp", addr)
}

// certificateFor returns the certificate to present as domain, or nil.
func (e *Endpoint) certificateFor(domain string) *tls.Certificate {
	if e.TLS == nil {
		return nil
	}
	if e.TLS.GetCertificate != nil {
		c, err := e.TLS.GetCertificate(&tls.ClientHelloInfo{ServerName: domain})
		if err == nil && c != nil {
			return c
		}
	}
	for i := range e.TLS.Certificates {
		c := &e.TLS.Certificates[i]
		leaf := c.Leaf
		if leaf == nil && len(c.Certificate) > 0 {
			l, err := x509.ParseCertificate(c.Certificate[0])
			if err != nil {
				continue
			}
			leaf = l
		}
		if ids, err := tlsmode.PeerIdentities(leaf); err == nil && ids.Match(domain) {
			return c
		}
	}
	if len(e.TLS.Certificates) > 0 {
		return &e.TLS.Certificates[0]
	}
	return nil
}

// hasCertificate reports whether STARTTLS can be offered for domain.
func (e *Endpoint) hasCertificate(domain string) bool { return e.certificateFor(domain) != nil }

// norm returns the normalised form of a domain, or the input if it is not a
// valid domain (it then matches nothing served).
func norm(domain string) string {
	if d, err := srv.NormalizeDomain(domain); err == nil {
		return d
	}
	return domain
}
