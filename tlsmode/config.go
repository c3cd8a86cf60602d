package tlsmode

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/idna"
)

// ALPNProtocol is the ALPN protocol name for server-to-server XMPP over
// direct TLS (XEP-0368).
const ALPNProtocol = "xmpp-server"

// ClientConfig returns the TLS configuration for one outgoing connection to
// the remote XMPP domain, as initiating server, built from cfg (the
// caller's settings: RootCAs, client certificate, …; nil means defaults).
// cfg is never modified, so it may be shared between goroutines; the result
// is a new config.
//
// On top of cfg:
//   - MinVersion is raised to TLS 1.2 if lower (RFC 7590).
//   - ServerName, if empty in cfg, is set to domain in A-label form. It drives
//     both SNI and certificate verification, and the reference identifier of
//     S2S is the XMPP domain (RFC 6120 §13.7.2.1), never the SRV target host
//     that was dialled (unless DNSSEC-secured, which is the caller's call:
//     then set cfg.ServerName). SNI and dNSName SANs are ASCII (RFC 6066 §3,
//     RFC 6125 §6.4.2), hence the A-label. An IP literal ("192.0.2.1",
//     "[2001:db8::1]") is used without brackets.
//   - For direct TLS (XEP-0368), NextProtos is set to ["xmpp-server"] if cfg
//     has none, so that a server multiplexing TLS services on one port can
//     route us. STARTTLS (directTLS false) does not use ALPN.
//
// domain is the remote XMPP domain (a JID domainpart; a trailing dot is
// ignored). It is required, even when cfg.ServerName is set, and an error is
// returned if it is empty or not a valid domain name.
func ClientConfig(cfg *tls.Config, domain string, directTLS bool) (*tls.Config, error) {
	name, err := serverName(domain)
	if err != nil {
		return nil, err
	}
	var c *tls.Config
	if cfg == nil {
		c = &tls.Config{}
	} else {
		c = cfg.Clone()
	}
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ServerName == "" {
		c.ServerName = name
	}
	if directTLS && len(c.NextProtos) == 0 {
		c.NextProtos = []string{ALPNProtocol}
	}
	return c, nil
}

// serverName converts an XMPP domain to the form used for SNI and
// certificate verification.
func serverName(domain string) (string, error) {
	d := strings.TrimSuffix(domain, ".") // RFC 7622 §3.2: not part of the domain
	if d == "" {
		return "", errors.New("tlsmode: no remote XMPP domain to verify the peer's certificate against")
	}
	if strings.HasPrefix(d, "[") && strings.HasSuffix(d, "]") {
		if ip, err := netip.ParseAddr(d[1 : len(d)-1]); err == nil && ip.Is6() && ip.Zone() == "" {
			return ip.String(), nil
		}
		return "", fmt.Errorf("tlsmode: remote domain %q: invalid IP literal", domain)
	}
	if ip, err := netip.ParseAddr(d); err == nil && ip.Is4() {
		return ip.String(), nil
	}
	// jid keeps the Unicode form; Lookup also maps to lower case.
	name, err := idna.Lookup.ToASCII(d)
	if err != nil {
		return "", fmt.Errorf("tlsmode: remote domain %q: %w", domain, err)
	}
	return name, nil
}

// ServerConfig returns the TLS configuration for incoming connections, as
// receiving server, built from cfg (which supplies the certificate:
// Certificates, GetCertificate for SNI-based selection, or
// GetConfigForClient). cfg is never modified; the result is a clone made
// once, to be shared by all connections so that automatically rotated
// session-ticket keys are shared too. nil means an empty config, which
// cannot complete a handshake for lack of a certificate.
//
// On top of cfg:
//   - MinVersion is raised to TLS 1.2 if lower (RFC 7590).
//   - ClientAuth, if left at its zero value tls.NoClientCert, becomes
//     tls.RequestClientCert: the peer's certificate is what SASL EXTERNAL
//     (XEP-0178) and dialback without dialing back (XEP-0344) check, so it
//     must be asked for. It is not verified during the handshake, and a
//     missing or unverifiable one does not fail it: the reference identifier
//     (the peer's claimed domain) is only known from the stream header sent
//     after TLS, and a peer without a usable certificate can still
//     authenticate with dialback. Set VerifyClientCertIfGiven (with
//     ClientCAs) or a stricter value in cfg to have it checked in the
//     handshake instead.
//   - GetConfigForClient, if set, is wrapped so that the config it returns
//     gets the same two adjustments (on a clone when one is needed; the
//     returned config is not modified), since crypto/tls uses that config
//     in place of this one.
func ServerConfig(cfg *tls.Config) *tls.Config {
	var c *tls.Config
	if cfg == nil {
		c = &tls.Config{}
	} else {
		c = cfg.Clone()
	}
	harden(c)
	if get := c.GetConfigForClient; get != nil {
		c.GetConfigForClient = func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			pc, err := get(hello)
			if err != nil || pc == nil || hardened(pc) {
				return pc, err
			}
			pc = pc.Clone()
			harden(pc)
			return pc, nil
		}
	}
	return c
}

// hardened reports whether harden would leave c unchanged.
func hardened(c *tls.Config) bool {
	return c.MinVersion >= tls.VersionTLS12 && c.ClientAuth != tls.NoClientCert
}

// harden applies ServerConfig's adjustments to c, which must be the
// caller's own copy.
func harden(c *tls.Config) {
	if c.MinVersion < tls.VersionTLS12 {
		c.MinVersion = tls.VersionTLS12
	}
	if c.ClientAuth == tls.NoClientCert {
		c.ClientAuth = tls.RequestClientCert
	}
}
