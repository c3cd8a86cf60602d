package xcp

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"syscall"

	"mellium.im/xmpp/stream"
)

// Content namespaces of XEP-0114: NSAccept when the component opens the
// connection, NSConnect when the router does.
const (
	NSAccept  = "jabber:component:accept"
	NSConnect = "jabber:component:connect"
)

// DefaultAddr is where a Router listens when Addr is empty: TCP 7400, the
// port Expressway uses between XCP routers.
const DefaultAddr = ":7400"

// Sentinel errors. Test for them with [errors.Is]; the errors returned wrap
// them with the component, address and detail involved.
var (
	// ErrNotAuthorized: the handshake failed because the secrets differ
	// (stream error <not-authorized/>).
	ErrNotAuthorized = errors.New("xcp: router link handshake refused (not-authorized)")

	// ErrHostUnknown: the responder does not serve the component name the
	// initiator asked for (stream error <host-unknown/>).
	ErrHostUnknown = errors.New("xcp: component name not configured on the other end (host-unknown)")

	// ErrConflict: a link with this component name is already up
	// (stream error <conflict/>).
	ErrConflict = errors.New("xcp: component already connected (conflict)")

	// ErrQueueFull: Send refused a stanza because the link is down (or
	// went down while Send waited) and its queue is full. The stanza was
	// not bounced: the caller may retry it, or answer its sender.
	ErrQueueFull = errors.New("xcp: link queue full while the router is unreachable")

	// ErrClosed: the Link or Router has been closed.
	ErrClosed = errors.New("xcp: closed")

	// ErrNoTLS: neither a TLS configuration nor Plaintext was given.
	ErrNoTLS = errors.New("xcp: no TLSConfig: the router link carries all federated traffic; " +
		"configure TLS with certificates on both ends, or set Plaintext on a trusted network")

	// ErrInvalidStanza: Send was given something the router would refuse
	// (missing to or from, not a stanza).
	ErrInvalidStanza = errors.New("xcp: invalid stanza")

	// ErrPeerClosed: the other end closed the stream (</stream:stream>).
	ErrPeerClosed = errors.New("xcp: the other end closed the stream")
)

// StreamError is a stream error (RFC 6120 §4.9) sent or received on a
// router link. It matches its Condition with errors.Is (for example
// errors.Is(err, stream.NotAuthorized)), and ErrNotAuthorized,
// ErrHostUnknown or ErrConflict for those conditions.
type StreamError struct {
	Condition stream.Error
	Text      string // detail for the log; sent to the peer as <text/> when ours
	Remote    bool   // true if the peer sent it, false if we sent it
}

func (e *StreamError) Error() string {
	who := "sent"
	if e.Remote {
		who = "received"
	}
	if e.Text == "" {
		return fmt.Sprintf("xcp: stream error <%s/> %s", e.Condition.Err, who)
	}
	return fmt.Sprintf("xcp: stream error <%s/> %s: %s", e.Condition.Err, who, e.Text)
}

// Unwrap returns the condition and the matching sentinel, if any.
func (e *StreamError) Unwrap() []error {
	errs := []error{e.Condition}
	switch e.Condition.Err {
	case stream.NotAuthorized.Err:
		errs = append(errs, ErrNotAuthorized)
	case stream.HostUnknown.Err:
		errs = append(errs, ErrHostUnknown)
	case stream.Conflict.Err:
		errs = append(errs, ErrConflict)
	}
	return errs
}

// LinkError describes why a router link could not be set up or was lost,
// with a hint for the administrator.
type LinkError struct {
	Component string // component name
	Addr      string // the other end's network address
	Op        string // "dial", "tls", "handshake" or "stream"
	Err       error
}

func (e *LinkError) Error() string {
	msg := fmt.Sprintf("xcp: router link with %s: %s: %v", e.Addr, e.Op, e.Err)
	if e.Component != "" {
		msg = fmt.Sprintf("xcp: router link for component %q with %s: %s: %v", e.Component, e.Addr, e.Op, e.Err)
	}
	if h := hint(e.Err); h != "" {
		msg += " (" + h + ")"
	}
	return msg
}

// Unwrap returns Err.
func (e *LinkError) Unwrap() error { return e.Err }

// hint says what an administrator should check for err.
func hint(err error) string {
	var (
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		alert    tls.AlertError
		netErr   net.Error
	)
	switch {
	case errors.Is(err, ErrNotAuthorized):
		return "the router link secret differs between the two ends: configure the same secret for this component on the router and on the component"
	case errors.Is(err, ErrHostUnknown):
		return "the other end has no component of this name: add it to the router's component list, or fix the name on the component"
	case errors.Is(err, ErrConflict):
		return "another node is connected with the same component name: give every node its own component name, or stop the duplicate"
	case errors.Is(err, stream.InvalidFrom):
		return "a from address was refused: a component may send only from its own domains (the S2S default route also from non-local ones), and each end must answer with the component name the other expects"
	case errors.Is(err, stream.InvalidNamespace):
		return "the other end speaks another protocol on this port: the router dials components with jabber:component:connect, components dial the router with jabber:component:accept"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "nothing listens there: check the address, that port 7400 is open in the firewall, and which side is configured to dial"
	case errors.As(err, &certErr), errors.As(err, &unknown), errors.As(err, &hostname), errors.As(err, &alert):
		return "TLS certificate rejected: each end must trust the CA that signed the other's certificate, and the certificate must name the host dialled"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "no answer in time: check routing and firewalls between the nodes"
	}
	return ""
}

// permanent reports errors that retrying will not fix until someone changes
// the configuration on one end.
func permanent(err error) bool {
	var (
		certErr  *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		alert    tls.AlertError
	)
	return errors.Is(err, ErrNotAuthorized) || errors.Is(err, ErrHostUnknown) ||
		errors.Is(err, stream.InvalidNamespace) ||
		errors.As(err, &certErr) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &alert)
}
