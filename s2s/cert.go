package s2s

import (
	"crypto/tls"
	"crypto/x509"
	"time"

	"github.com/xmppfed/xmppfed/tlsmode"
)

// verifyPeer checks the peer's certificate on a TLS connection for domain
// (chain against Roots, identity per RFC 6125 / XEP-0178). A nil error means
// the certificate proves the peer is domain.
func (e *Endpoint) verifyPeer(cs tls.ConnectionState, domain string) error {
	return tlsmode.VerifyState(cs, domain, tlsmode.VerifyOptions{Roots: e.Roots})
}

// ownCertValid reports whether the certificate we present as domain would
// verify for domain against our own roots: the condition for offering SASL
// EXTERNAL as the initiating server.
func (e *Endpoint) ownCertValid(domain string) bool {
	c := e.certificateFor(domain)
	if c == nil || len(c.Certificate) == 0 {
		return false
	}
	chain := make([]*x509.Certificate, 0, len(c.Certificate))
	for _, der := range c.Certificate {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return false
		}
		chain = append(chain, cert)
	}
	return tlsmode.VerifyPeer(chain, domain, tlsmode.VerifyOptions{Roots: e.Roots, Now: time.Now()}) == nil
}

// clientTLS returns the TLS configuration for an outbound connection from
// local to remote. Verification is done by verifyPeer after the handshake so
// that a bad certificate can fall back to dialback instead of failing the
// handshake.
func (e *Endpoint) clientTLS(local, remote string, direct bool) (*tls.Config, error) {
	// A fresh client config: Endpoint.TLS is a server configuration, and
	// its ServerName, NextProtos, ClientAuth or verification hooks must
	// not leak into the client role. Only the cryptographic preferences
	// and the session cache carry over.
	base := &tls.Config{
		InsecureSkipVerify: true, //nolint:gosec // verified by verifyPeer, with RFC 6125 rules crypto/tls does not implement
		GetClientCertificate: func(*tls.CertificateRequestInfo) (*tls.Certificate, error) {
			if c := e.certificateFor(local); c != nil {
				return c, nil
			}
			return &tls.Certificate{}, nil
		},
	}
	if e.TLS != nil {
		base.MinVersion = e.TLS.MinVersion
		base.MaxVersion = e.TLS.MaxVersion
		base.CipherSuites = e.TLS.CipherSuites
		base.CurvePreferences = e.TLS.CurvePreferences
		base.ClientSessionCache = e.TLS.ClientSessionCache
	}
	return tlsmode.ClientConfig(base, remote, direct)
}
