package s2s

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"sync/atomic"

	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// PrivacyMode is Expressway's federation "Privacy mode": which remote
// domains may federate with us.
type PrivacyMode uint8

const (
	PrivacyOff       PrivacyMode = iota // every domain may federate
	PrivacyAllowList                    // only the Allow domains (and static-route domains)
	PrivacyDenyList                     // every domain except the Deny domains
)

func (m PrivacyMode) String() string {
	switch m {
	case PrivacyOff:
		return "off"
	case PrivacyAllowList:
		return "allow list"
	case PrivacyDenyList:
		return "deny list"
	}
	return fmt.Sprintf("PrivacyMode(%d)", uint8(m))
}

// PeerPolicy overrides the federation settings for one remote domain.
type PeerPolicy struct {
	// RequireValidCert refuses streams with this domain unless its
	// certificate verifies (no dialback fallback after a bad certificate).
	RequireValidCert bool
	// RequireTLS makes TLS mandatory with this domain whatever the global
	// security mode: outbound streams need STARTTLS (or direct TLS) and
	// inbound dialback without TLS is refused with <policy-violation/>.
	RequireTLS bool
}

// PolicyConfig is one version of the federation settings that may change
// while the server runs (Expressway's federation page).
type PolicyConfig struct {
	// Security is the security mode (TLS required is the zero value). It
	// replaces the Endpoint's Security field for every Endpoint using the
	// Policy.
	Security tlsmode.Mode

	// Privacy selects which of Allow and Deny applies. Entries are exact
	// domain names (no wildcards), compared in A-label form.
	Privacy PrivacyMode
	Allow   []string
	Deny    []string

	// StaticRoutes send a domain's streams to fixed "host[:port]" targets
	// instead of DNS SRV. As on Expressway, a domain with a static route is
	// allowed in AllowList mode without being listed. The table replaces
	// the Resolver's own static routes.
	StaticRoutes map[string][]string

	// Peers are per-remote-domain overrides, keyed by domain.
	Peers map[string]PeerPolicy
}

// ErrDenied matches errors for remote domains that the privacy mode refuses.
var ErrDenied = errors.New("remote domain denied by the federation privacy mode")

// A Policy holds the federation settings that can change at runtime:
// security mode, privacy mode with its allow and deny lists, static routes
// and per-domain overrides. Endpoints (and so Servers and Pools) consult it
// for every new stream; Update swaps the settings atomically, and Servers
// and Pools then close the streams the new settings no longer allow.
//
// The zero value is TLS required, privacy off, no routes. A Policy is safe
// for concurrent use.
type Policy struct {
	cur atomic.Pointer[compiledPolicy]

	mu     sync.Mutex
	nextID int
	subs   map[int]func()
}

type compiledPolicy struct {
	version int64
	cfg     PolicyConfig
	allow   map[string]bool
	deny    map[string]bool
	routes  map[string]bool
	peers   map[string]PeerPolicy
}

var policyVersion atomic.Int64 // distinguishes every compiled config, across Policies

// NewPolicy returns a Policy holding cfg, or an error if cfg is invalid.
func NewPolicy(cfg PolicyConfig) (*Policy, error) {
	p := &Policy{}
	if err := p.Update(cfg); err != nil {
		return nil, err
	}
	return p, nil
}

// Update replaces the settings. An invalid configuration (unknown mode, a
// malformed domain or route) is refused whole and the old one stays. After
// the swap, every Server and Pool using the Policy closes the streams that
// the new settings refuse (a denied domain, plaintext where TLS is now
// required); new streams follow the new settings at once.
func (p *Policy) Update(cfg PolicyConfig) error {
	c, err := compilePolicy(cfg)
	if err != nil {
		return err
	}
	p.cur.Store(c)
	p.mu.Lock()
	subs := slices.Collect(maps.Values(p.subs))
	p.mu.Unlock()
	for _, f := range subs {
		f()
	}
	return nil
}

// Config returns a copy of the current settings.
func (p *Policy) Config() PolicyConfig {
	c := p.load()
	cfg := c.cfg
	cfg.Allow = slices.Clone(cfg.Allow)
	cfg.Deny = slices.Clone(cfg.Deny)
	cfg.StaticRoutes = maps.Clone(cfg.StaticRoutes)
	cfg.Peers = maps.Clone(cfg.Peers)
	return cfg
}

var zeroPolicy = &compiledPolicy{}

func (p *Policy) load() *compiledPolicy {
	if p == nil {
		return zeroPolicy
	}
	if c := p.cur.Load(); c != nil {
		return c
	}
	return zeroPolicy
}

// Check reports whether the privacy mode lets remote federate: nil, or an
// error matching ErrDenied that says why.
func (p *Policy) Check(remote string) error {
	c := p.load()
	d := norm(remote)
	switch c.cfg.Privacy {
	case PrivacyAllowList:
		if !c.allow[d] && !c.routes[d] {
			return fmt.Errorf("%w: %s is not on the allow list (privacy mode: allow list)", ErrDenied, d)
		}
	case PrivacyDenyList:
		if c.deny[d] {
			return fmt.Errorf("%w: %s is on the deny list (privacy mode: deny list)", ErrDenied, d)
		}
	}
	return nil
}

// SecurityFor returns the security mode that applies to remote: the global
// mode, or TLS required when the domain's PeerPolicy says so.
func (p *Policy) SecurityFor(remote string) tlsmode.Mode {
	c := p.load()
	if c.peers[norm(remote)].RequireTLS {
		return tlsmode.Required
	}
	return c.cfg.Security
}

// RequireValidCert reports whether remote's PeerPolicy demands a valid
// certificate.
func (p *Policy) RequireValidCert(remote string) bool {
	return p.load().peers[norm(remote)].RequireValidCert
}

// subscribe registers f to run after every Update; the returned function
// removes it.
func (p *Policy) subscribe(f func()) (cancel func()) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.subs == nil {
		p.subs = make(map[int]func())
	}
	id := p.nextID
	p.nextID++
	p.subs[id] = f
	return func() {
		p.mu.Lock()
		delete(p.subs, id)
		p.mu.Unlock()
	}
}

func compilePolicy(cfg PolicyConfig) (*compiledPolicy, error) {
	if cfg.Security > tlsmode.NoTLS {
		return nil, fmt.Errorf("%w: invalid security mode %d", ErrConfig, cfg.Security)
	}
	if cfg.Privacy > PrivacyDenyList {
		return nil, fmt.Errorf("%w: invalid privacy mode %d", ErrConfig, cfg.Privacy)
	}
	set := func(list []string, what string) (map[string]bool, error) {
		m := make(map[string]bool, len(list))
		for _, d := range list {
			n, err := srv.NormalizeDomain(d)
			if err != nil {
				return nil, fmt.Errorf("%w: %s entry %q: %v", ErrConfig, what, d, err)
			}
			m[n] = true
		}
		return m, nil
	}
	c := &compiledPolicy{version: policyVersion.Add(1), peers: make(map[string]PeerPolicy, len(cfg.Peers))}
	var err error
	if c.allow, err = set(cfg.Allow, "allow list"); err != nil {
		return nil, err
	}
	if c.deny, err = set(cfg.Deny, "deny list"); err != nil {
		return nil, err
	}
	if err := srv.ValidateStaticRoutes(cfg.StaticRoutes); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrConfig, err)
	}
	c.routes = make(map[string]bool, len(cfg.StaticRoutes))
	for d := range cfg.StaticRoutes {
		n, _ := srv.NormalizeDomain(d) // validated above
		c.routes[n] = true
	}
	for d, pp := range cfg.Peers {
		n, err := srv.NormalizeDomain(d)
		if err != nil {
			return nil, fmt.Errorf("%w: peer policy %q: %v", ErrConfig, d, err)
		}
		c.peers[n] = pp
	}
	c.cfg = cfg
	c.cfg.Allow = slices.Clone(cfg.Allow)
	c.cfg.Deny = slices.Clone(cfg.Deny)
	c.cfg.StaticRoutes = maps.Clone(cfg.StaticRoutes)
	c.cfg.Peers = maps.Clone(cfg.Peers)
	return c, nil
}
