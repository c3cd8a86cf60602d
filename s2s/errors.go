package s2s

import (
	"errors"
	"fmt"

	"mellium.im/xmpp/stanza"
	"mellium.im/xmpp/stream"
)

// Sentinel errors; every error returned by this package that fits one of
// them matches it with errors.Is. They are returned wrapped in *Error, whose
// message adds the "s2s:" prefix and the domains.
var (
	// ErrDialbackInvalid: the receiving server said our dialback key is
	// invalid. The usual cause is a different dialback secret, or a peer
	// that cannot reach our authoritative server.
	ErrDialbackInvalid = errors.New("dialback key refused as invalid: the receiving server's check with our authoritative server failed; make sure every node of our domain has the same dialback secret and that DNS for our domain points only at those nodes")

	// ErrDialbackError: the receiving server answered with a dialback error
	// (for example it could not reach our authoritative server).
	ErrDialbackError = errors.New("dialback error")

	// ErrTimeout: a negotiation step or dialback did not finish in time.
	ErrTimeout = errors.New("timed out")

	// ErrNotAuthorized: sending for a domain pair the stream has not
	// authorized.
	ErrNotAuthorized = errors.New("domain pair not authorized on this stream")

	// ErrWrongDirection: stanzas are sent on outbound streams only (bidi,
	// XEP-0288, is not negotiated).
	ErrWrongDirection = errors.New("stanzas are sent on outbound streams only")

	// ErrPolicy: the Endpoint's RemotePolicy refused the remote domain.
	ErrPolicy = errors.New("refused by federation policy")

	// ErrConfig: the Endpoint lacks a setting it needs.
	ErrConfig = errors.New("endpoint configuration incomplete")

	// ErrPeerStreamError: the peer closed the stream with a stream error.
	ErrPeerStreamError = errors.New("peer sent a stream error")

	// ErrStreamClosed: the stream is closed.
	ErrStreamClosed = errors.New("stream closed")

	// ErrNoTarget: every target of the remote domain failed to connect.
	ErrNoTarget = errors.New("no target of the remote domain could be reached")

	// ErrCertificate: the peer's certificate does not verify and valid
	// certificates are required.
	ErrCertificate = errors.New("peer certificate not valid")

	// ErrSASL: SASL EXTERNAL failed.
	ErrSASL = errors.New("SASL EXTERNAL failed")

	// ErrDomainNotServed: a local domain the Endpoint does not serve.
	ErrDomainNotServed = errors.New("domain not served by this endpoint")
)

// Error describes why a stream failed or was refused.
//
// Condition is the RFC 6120 stream error sent to the peer (Sent) or received
// from it (!Sent); it is zero when no stream error was exchanged. Err is the
// cause. errors.Is matches the condition (mellium stream.Error values such as
// stream.HostUnknown), the cause and its sentinels.
type Error struct {
	Op             string // "dial", "negotiate", "dialback", "serve", ...
	Local, Remote  string // domains, when known
	StreamID       string
	Condition      stream.Error
	Sent           bool         // we sent Condition (else the peer did)
	DialbackAnswer stanza.Error // condition of a dialback error answer, if any
	Err            error
}

func (e *Error) Error() string {
	msg := "s2s: " + e.Op
	if e.Local != "" || e.Remote != "" {
		msg += fmt.Sprintf(" %s→%s", orDash(e.Local), orDash(e.Remote))
	}
	if e.Condition.Err != "" {
		if e.Sent {
			msg += ": sent stream error <" + e.Condition.Err + "/>"
		} else {
			msg += ": peer sent stream error <" + e.Condition.Err + "/>"
			for _, t := range e.Condition.Text {
				if t.Value != "" {
					msg += fmt.Sprintf(" (%q)", t.Value)
					break
				}
			}
		}
	}
	if e.DialbackAnswer.Condition != "" {
		msg += ": dialback error <" + string(e.DialbackAnswer.Condition) + "/>"
	}
	if e.Err != nil {
		msg += ": " + e.Err.Error()
	}
	return msg
}

// Unwrap returns the condition and the cause.
func (e *Error) Unwrap() []error {
	var errs []error
	if e.Condition.Err != "" {
		errs = append(errs, e.Condition)
	}
	if e.DialbackAnswer.Condition != "" {
		errs = append(errs, e.DialbackAnswer)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
