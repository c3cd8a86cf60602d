package axl

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"strings"
	"time"
)

// Fingerprint returns the SHA-256 fingerprint of cert's DER encoding as
// colon-separated upper-case hex pairs, the form certificate viewers and
// IM and Presence's OS Administration show.
func Fingerprint(cert *x509.Certificate) string {
	sum := sha256.Sum256(cert.Raw)
	var b strings.Builder
	for i, c := range sum {
		if i > 0 {
			b.WriteByte(':')
		}
		fmt.Fprintf(&b, "%02X", c)
	}
	return b.String()
}

// PinCertificates returns a TLS configuration that accepts a server only if
// its certificate is one of certs, compared byte for byte (by SHA-256).
// Issuer, host names and validity dates are not checked: the pin is the
// identity. This is how to trust an IM and Presence node that presents a
// self-signed Tomcat certificate without trusting every certificate; the
// pin must be renewed when that certificate is regenerated.
func PinCertificates(certs ...*x509.Certificate) *tls.Config {
	pins := make(map[[32]byte]bool, len(certs))
	for _, c := range certs {
		pins[sha256.Sum256(c.Raw)] = true
	}
	return pinned(pins)
}

// PinFingerprints is like [PinCertificates] for SHA-256 fingerprints as
// [Fingerprint] writes them; colons, spaces and case are ignored.
func PinFingerprints(fingerprints ...string) (*tls.Config, error) {
	pins := make(map[[32]byte]bool, len(fingerprints))
	for _, fp := range fingerprints {
		clean := strings.NewReplacer(":", "", " ", "").Replace(fp)
		b, err := hex.DecodeString(clean)
		if err != nil || len(b) != sha256.Size {
			return nil, fmt.Errorf("axl: %q is not a SHA-256 certificate fingerprint (32 hex pairs)", fp)
		}
		pins[[32]byte(b)] = true
	}
	if len(pins) == 0 {
		return nil, errors.New("axl: no fingerprint to pin")
	}
	return pinned(pins), nil
}

func pinned(pins map[[32]byte]bool) *tls.Config {
	return &tls.Config{
		MinVersion: tls.VersionTLS12,
		// Chain and name verification are replaced by the pin check below,
		// which crypto/tls still runs on every handshake.
		InsecureSkipVerify: true,
		VerifyConnection: func(cs tls.ConnectionState) error {
			if len(cs.PeerCertificates) == 0 {
				return fmt.Errorf("%w: the server sent no certificate", ErrPinMismatch)
			}
			leaf := cs.PeerCertificates[0]
			if !pins[sha256.Sum256(leaf.Raw)] {
				return fmt.Errorf("%w: got %q with SHA-256 %s", ErrPinMismatch, leaf.Subject.String(), Fingerprint(leaf))
			}
			return nil
		},
	}
}

// classify turns an error from http.Client.Do or from reading a body into
// one of this package's errors. parent is the caller's context, attempt
// the one bounded by the per-attempt timeout.
func classify(parent, attempt context.Context, host string, timeout time.Duration, err error) error {
	switch {
	case parent.Err() != nil && errors.Is(parent.Err(), context.Canceled):
		return fmt.Errorf("request canceled: %w", parent.Err())
	case parent.Err() != nil:
		return fmt.Errorf("%w: %w", ErrTimeout, parent.Err())
	case attempt.Err() != nil:
		return fmt.Errorf("%w (no answer within %v): %w", ErrTimeout, timeout, attempt.Err())
	}
	if te := tlsError(host, err); te != nil {
		return te
	}
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return fmt.Errorf("%w: %w", ErrTimeout, err)
	}
	var oe *net.OpError
	if errors.As(err, &oe) && oe.Op == "dial" {
		return fmt.Errorf("%w: %w", ErrUnreachable, err)
	}
	return err
}

func tlsError(host string, err error) *TLSError {
	var (
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		record   tls.RecordHeaderError
		alert    tls.AlertError
		verify   *tls.CertificateVerificationError
	)
	switch {
	case errors.Is(err, ErrPinMismatch):
		return &TLSError{Host: host, Reason: "certificate does not match the pin", Err: err,
			Hint: "IM and Presence's Tomcat certificate was regenerated, or this is another server; check the certificate, then pin the new one"}
	case errors.As(err, &unknown):
		reason := "certificate signed by unknown authority"
		if c := unknown.Cert; c != nil {
			reason += fmt.Sprintf(" (subject %q, issuer %q)", c.Subject.String(), c.Issuer.String())
		}
		return &TLSError{Host: host, Reason: reason, Err: err,
			Hint: "IM and Presence often presents a self-signed Tomcat certificate: trust it or its CA (Client.TLSConfig RootCAs), or pin it with PinCertificates"}
	case errors.As(err, &hostname):
		names := "no names"
		if c := hostname.Certificate; c != nil {
			var all []string
			all = append(all, c.DNSNames...)
			for _, ip := range c.IPAddresses {
				all = append(all, ip.String())
			}
			if len(all) == 0 && c.Subject.CommonName != "" {
				all = append(all, "CN "+c.Subject.CommonName+" (no subjectAltName)")
			}
			if len(all) > 0 {
				names = strings.Join(all, ", ")
			}
		}
		return &TLSError{Host: host, Reason: fmt.Sprintf("wrong host: the certificate is for %s, not %s", names, hostname.Host), Err: err,
			Hint: "address IM and Presence by a name its Tomcat certificate lists (the node name from IM and Presence server discovery), or reissue the certificate"}
	case errors.As(err, &invalid):
		reason := "certificate not valid: " + invalid.Error()
		if invalid.Reason == x509.Expired && invalid.Cert != nil {
			reason = fmt.Sprintf("certificate expired or not yet valid (valid from %s to %s)",
				invalid.Cert.NotBefore.UTC().Format(time.RFC3339), invalid.Cert.NotAfter.UTC().Format(time.RFC3339))
		}
		return &TLSError{Host: host, Reason: reason, Err: err,
			Hint: "renew IM and Presence's Tomcat certificate, or check the clocks"}
	case errors.As(err, &verify):
		return &TLSError{Host: host, Reason: "certificate rejected: " + verify.Err.Error(), Err: err}
	case errors.As(err, &record) || strings.Contains(err.Error(), "server gave HTTP response to HTTPS client"):
		return &TLSError{Host: host, Reason: "the server did not answer with TLS", Err: err,
			Hint: "check the port: AXL listens with HTTPS on 8443"}
	case errors.As(err, &alert):
		return &TLSError{Host: host, Reason: "the server ended the handshake: " + alert.Error(), Err: err,
			Hint: "check the TLS versions and ciphers both sides allow"}
	}
	return nil
}
