package s2stest

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/xml"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/internal/wire"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/srv/srvtest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Net is a set of federated domains sharing a CA, a DNS zone and a log.
type Net struct {
	tb  testing.TB
	ca  *testpki.CA
	dns *srvtest.Server
	log *logBuffer
}

// New returns an empty Net whose DNS server and domains stop when the test
// ends.
func New(tb testing.TB) *Net {
	tb.Helper()
	n := &Net{tb: tb, ca: testpki.NewCA(tb), dns: srvtest.New(tb, ""), log: &logBuffer{}}
	tb.Cleanup(func() {
		if tb.Failed() {
			tb.Logf("s2stest log:\n%s", n.log.String())
		}
	})
	return n
}

// DNS returns the DNS server, for adding records or faults.
func (n *Net) DNS() *srvtest.Server { return n.dns }

// Roots returns the pool holding the Net's CA certificate.
func (n *Net) Roots() *x509.CertPool { return n.ca.Pool() }

// CACertificate returns the Net's CA certificate (for example to give it
// to a peer server as its trust anchor).
func (n *Net) CACertificate() *x509.Certificate { return n.ca.Certificate() }

// Certificate issues a certificate from the Net's CA valid for names.
func (n *Net) Certificate(names ...string) tls.Certificate { return n.ca.Leaf(n.tb, names...) }

// Resolver returns a resolver that asks the Net's DNS server patiently
// (race-detector builds are slow) and fails on DNS errors instead of
// guessing. A domain without SRV records falls back, as RFC 6120 says, to
// its own name on port 5269, which has no address in the zone unless the
// test adds one: such a domain is unreachable.
func (n *Net) Resolver() *srv.Resolver {
	r := n.dns.Resolver()
	r.Timeout = 5 * time.Second
	r.Attempts = 3
	r.StrictSRV = true
	return r
}

// Logger returns a logger writing, at debug level, into the Net's log
// (printed when the test fails), tagged with name.
func (n *Net) Logger(name string) *slog.Logger {
	return slog.New(slog.NewTextHandler(n.log, &slog.HandlerOptions{Level: slog.LevelDebug})).With("node", name)
}

// Log returns everything logged so far.
func (n *Net) Log() string { return n.log.String() }

// Options configure one domain. The zero value is TLS required with a
// certificate from the Net's CA, the domain's own dialback secret, privacy
// off and the s2s defaults.
type Options struct {
	// Aliases are more domains served by the same server.
	Aliases []string
	// Policy is the domain's federation policy (security mode, privacy
	// mode, routes, per-peer overrides), changeable later through
	// Domain.Policy.
	Policy s2s.PolicyConfig
	// Certificate overrides the CA-issued certificate; NoCertificate
	// gives the domain none (only usable with security mode No TLS).
	Certificate   *tls.Certificate
	NoCertificate bool
	// Secret is the dialback secret; empty means "secret of <domain>".
	Secret string
	// DirectTLS also serves XEP-0368 direct TLS and publishes an
	// _xmpps-server._tcp record for it.
	DirectTLS bool
	// Unlisted publishes no DNS records for the domain.
	Unlisted bool
	// Configure, if set, may change the Endpoint, Server and Pool before
	// the server starts.
	Configure func(*s2s.Endpoint, *s2s.Server, *s2s.Pool)
}

// Domain is one federated server in a Net.
type Domain struct {
	Name     string
	Endpoint *s2s.Endpoint
	Server   *s2s.Server
	Pool     *s2s.Pool
	Policy   *s2s.Policy
	// Addr is the plain S2S listener; TLSAddr the direct TLS one (nil
	// unless Options.DirectTLS).
	Addr, TLSAddr *net.TCPAddr
	// Inbox receives the stanzas delivered to the domain and the bounces
	// of its Pool.
	Inbox *Inbox
}

// AddDomain starts a server for name (and opts.Aliases) on loopback and
// publishes its DNS records.
func (n *Net) AddDomain(name string, opts Options) *Domain {
	tb := n.tb
	tb.Helper()
	domains := append([]string{name}, opts.Aliases...)
	pol, err := s2s.NewPolicy(opts.Policy)
	if err != nil {
		tb.Fatalf("s2stest: policy for %s: %v", name, err)
	}
	secret := opts.Secret
	if secret == "" {
		secret = "secret of " + name
	}
	d := &Domain{Name: name, Policy: pol, Inbox: newInbox()}
	d.Endpoint = &s2s.Endpoint{
		Domains:  domains,
		Keys:     dialback.Generator{Secret: []byte(secret)},
		Roots:    n.ca.Pool(),
		Resolver: n.Resolver(),
		Logger:   n.Logger(name),
		Policy:   pol,
	}
	d.Endpoint.Resolver.Logger = d.Endpoint.Logger // "resolved … method=SRV dns-timings=…"
	switch {
	case opts.Certificate != nil:
		d.Endpoint.TLS = &tls.Config{Certificates: []tls.Certificate{*opts.Certificate}}
	case !opts.NoCertificate:
		d.Endpoint.TLS = &tls.Config{Certificates: []tls.Certificate{n.ca.Leaf(tb, domains...)}}
	}
	d.Pool = &s2s.Pool{Endpoint: d.Endpoint, Bounce: d.Inbox}
	d.Server = &s2s.Server{Endpoint: d.Endpoint, Handler: d.Inbox, Pool: d.Pool}
	if opts.Configure != nil {
		opts.Configure(d.Endpoint, d.Server, d.Pool)
	}

	// Set the Server up now rather than in the Serve goroutines, so that a
	// Send right after AddDomain already finds it (for example as the
	// receiver of bidi streams).
	if _, err := d.Server.OutboundPool(); err != nil {
		tb.Fatalf("s2stest: %s: %v", name, err)
	}
	var wg sync.WaitGroup
	serve := func(direct bool) *net.TCPAddr {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			tb.Fatalf("s2stest: listen: %v", err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if direct {
				d.Server.ServeTLS(ln)
			} else {
				d.Server.Serve(ln)
			}
		}()
		return ln.Addr().(*net.TCPAddr)
	}
	d.Addr = serve(false)
	if opts.DirectTLS {
		d.TLSAddr = serve(true)
	}
	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		d.Server.Shutdown(ctx)
		d.Server.Close()
		wg.Wait()
	})
	if !opts.Unlisted {
		for _, dom := range domains {
			n.Publish(dom, d.Addr, d.TLSAddr)
		}
	}
	return d
}

// Publish adds the SRV records of domain: _xmpp-server._tcp pointing at
// plain, and _xmpps-server._tcp at direct when it is not nil.
func (n *Net) Publish(domain string, plain, direct *net.TCPAddr) {
	n.tb.Helper()
	add := func(service string, a *net.TCPAddr) {
		host := "host-" + fmt.Sprint(a.Port) + "." + domain
		err := n.dns.Zone().Add(
			fmt.Sprintf("%s._tcp.%s. 60 IN SRV 0 0 %d %s.", service, domain, a.Port, host),
			fmt.Sprintf("%s. 60 IN A %s", host, a.IP),
		)
		if err != nil {
			n.tb.Fatalf("s2stest: publishing %s: %v", domain, err)
		}
	}
	if plain != nil {
		add("_xmpp-server", plain)
	}
	if direct != nil {
		add("_xmpps-server", direct)
	}
}

// Message returns a chat message stanza from one address to another.
func (d *Domain) Message(from, to, body string) *s2s.Stanza {
	return Message(from, to, body)
}

// Message returns a chat message stanza; it panics on invalid addresses
// (a bug in the test).
func Message(from, to, body string) *s2s.Stanza {
	st, err := s2s.ParseStanza([]byte("<message from='" + wire.EscapeAttr(from) + "' to='" + wire.EscapeAttr(to) +
		"' type='chat'><body>" + wire.EscapeText(body) + "</body></message>"))
	if err != nil {
		panic("s2stest: " + err.Error())
	}
	return st
}

// Send sends st through the domain's Pool.
func (d *Domain) Send(ctx context.Context, st *s2s.Stanza) error {
	return d.Pool.Send(ctx, st)
}

// SecurityMode returns the domain's current security mode.
func (d *Domain) SecurityMode() tlsmode.Mode { return d.Policy.Config().Security }

// Inbox collects stanzas without ever blocking the stream that delivers
// them. The zero Inbox is ready to use (for example as the Handler of a
// Server built by hand).
type Inbox struct {
	mu     sync.Mutex
	queue  []*s2s.Stanza
	notify chan struct{} // made on first use; holds at most one wake-up
}

func newInbox() *Inbox { return &Inbox{} }

// wakeLocked returns the channel that says a stanza may be waiting; b.mu
// is held.
func (b *Inbox) wakeLocked() chan struct{} {
	if b.notify == nil {
		b.notify = make(chan struct{}, 1)
	}
	return b.notify
}

// signalLocked wakes one receiver, if none is due to wake already; b.mu is
// held.
func (b *Inbox) signalLocked() {
	select {
	case b.wakeLocked() <- struct{}{}:
	default:
	}
}

// ServeStanza implements s2s.Handler.
func (b *Inbox) ServeStanza(_ context.Context, st *s2s.Stanza) {
	b.mu.Lock()
	b.queue = append(b.queue, st)
	b.signalLocked()
	b.mu.Unlock()
}

// Len returns how many stanzas are waiting.
func (b *Inbox) Len() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return len(b.queue)
}

// Receive returns the next stanza, waiting until ctx is done. Several
// goroutines may receive from one Inbox; each stanza goes to one of them.
func (b *Inbox) Receive(ctx context.Context) (*s2s.Stanza, error) {
	for {
		b.mu.Lock()
		if len(b.queue) > 0 {
			st := b.queue[0]
			b.queue[0] = nil
			b.queue = b.queue[1:]
			if len(b.queue) > 0 {
				// The wake-ups of stanzas that arrived together may have
				// merged into one: pass it on to the next receiver.
				b.signalLocked()
			}
			b.mu.Unlock()
			return st, nil
		}
		wake := b.wakeLocked()
		b.mu.Unlock()
		select {
		case <-wake:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// Next returns the next stanza, failing the test if none arrives within
// timeout.
func (b *Inbox) Next(tb testing.TB, timeout time.Duration) *s2s.Stanza {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	st, err := b.Receive(ctx)
	if err != nil {
		tb.Fatalf("s2stest: no stanza within %s", timeout)
	}
	return st
}

// Empty fails the test if a stanza arrives within wait.
func (b *Inbox) Empty(tb testing.TB, wait time.Duration) {
	tb.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), wait)
	defer cancel()
	if st, err := b.Receive(ctx); err == nil {
		tb.Fatalf("s2stest: unexpected stanza: %s", st.XML)
	}
}

// ErrorCondition returns the defined condition of an error stanza
// ("remote-server-not-found", …): the first child of the stanza's <error/>
// in the urn:ietf:params:xml:ns:xmpp-stanzas namespace other than <text/>.
// It returns "" if st is not an error stanza or names no condition.
func ErrorCondition(st *s2s.Stanza) string {
	if st == nil || st.Type != "error" {
		return ""
	}
	d := xml.NewDecoder(bytes.NewReader(st.XML))
	depth, inError := 0, false
	for range len(st.XML) + 1 { // every token takes at least one byte
		tok, err := d.Token()
		if err != nil {
			return ""
		}
		switch t := tok.(type) {
		case xml.StartElement:
			depth++
			switch {
			case depth == 2 && t.Name.Local == "error":
				inError = true
			case depth == 3 && inError && t.Name.Space == nsStanzas && t.Name.Local != "text":
				return t.Name.Local
			}
		case xml.EndElement:
			if depth == 2 {
				inError = false
			}
			depth--
		}
	}
	return ""
}

const nsStanzas = "urn:ietf:params:xml:ns:xmpp-stanzas"

// logBuffer collects log output.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}
