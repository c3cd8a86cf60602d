package tlsmode

import (
	"errors"
	"fmt"
	"strconv"

	"mellium.im/xmpp/stream"
)

// Peer is what the other server does about TLS, as seen on the wire.
//
// Outbound (we initiate) it is read from the peer's stream features; inbound
// (we receive) it is whether the peer sends <starttls/> before trying to
// authenticate.
type Peer uint8

// Peer behaviours.
const (
	// PeerNoTLS offers no STARTTLS, will not send <starttls/>, or opened a
	// pre-1.0 stream (no version attribute, so no stream features).
	PeerNoTLS Peer = iota
	// PeerOptional offers STARTTLS without <required/>, or would start TLS
	// when offered but does not insist.
	PeerOptional
	// PeerRequired offers STARTTLS with <required/>, or insists on TLS.
	PeerRequired
)

// String describes the peer for logs.
func (p Peer) String() string {
	switch p {
	case PeerNoTLS:
		return "no STARTTLS"
	case PeerOptional:
		return "STARTTLS optional"
	case PeerRequired:
		return "STARTTLS required"
	}
	return "Peer(" + strconv.Itoa(int(p)) + ")"
}

// Sentinels matched (errors.Is) by a *PolicyError.
var (
	// ErrTLSRequired: our mode is TLS required and the peer cannot do TLS.
	ErrTLSRequired = errors.New("tlsmode: TLS required by local policy")
	// ErrPeerRequiresTLS: our mode is No TLS and the peer insists on TLS.
	ErrPeerRequiresTLS = errors.New("tlsmode: peer requires TLS")
)

// PolicyError is a refusal by Decide: the local mode and the peer cannot
// agree on TLS. Condition is the stream error to close the stream with
// (stream.PolicyViolation or stream.UnsupportedFeature); get it with
// errors.As(err, &cond) where cond is a stream.Error.
type PolicyError struct {
	Local     Mode
	Peer      Peer
	Condition stream.Error
}

// Error tells an administrator what went wrong and what to change.
func (e *PolicyError) Error() string {
	switch e.Condition.Err {
	case stream.PolicyViolation.Err:
		return fmt.Sprintf("tlsmode: security mode is %v but the peer does not support STARTTLS (%v): "+
			"the peer must enable TLS, or set this domain's security mode to %v", e.Local, e.Peer, Optional)
	case stream.UnsupportedFeature.Err:
		return fmt.Sprintf("tlsmode: security mode is %v but the peer requires TLS (%v): "+
			"set this domain's security mode to %v or %v, or the peer must make TLS optional",
			e.Local, e.Peer, Optional, Required)
	}
	return fmt.Sprintf("tlsmode: security mode %v cannot talk to a peer with %v (%s)", e.Local, e.Peer, e.Condition.Err)
}

// Unwrap returns the sentinel matching the condition and the condition
// itself, so that errors.Is works with either (stream.Error has an Is
// method comparing condition names).
func (e *PolicyError) Unwrap() []error {
	switch e.Condition.Err {
	case stream.PolicyViolation.Err:
		return []error{ErrTLSRequired, e.Condition}
	case stream.UnsupportedFeature.Err:
		return []error{ErrPeerRequiresTLS, e.Condition}
	}
	return []error{e.Condition}
}

// Decide applies the security-mode matrix below (the project's S2S spec,
// §6.1 inbound and §6.2 outbound): it reports whether to use TLS with a
// peer, or why the stream must be refused. TLS is used whenever both sides
// can (RFC 7590); plaintext only when our mode allows it and the peer cannot
// or (in No TLS mode) does not insist.
//
//	local \ peer   PeerNoTLS                PeerOptional  PeerRequired
//	NoTLS          plaintext                plaintext     refuse: unsupported-feature
//	Optional       plaintext                TLS           TLS
//	Required       refuse: policy-violation TLS           TLS
//
// A refusal is a *PolicyError. An invalid local Mode is treated as Required;
// an invalid Peer is a programming error and yields a plain error.
func Decide(local Mode, peer Peer) (useTLS bool, err error) {
	if peer > PeerRequired {
		return false, fmt.Errorf("tlsmode: invalid peer behaviour %v", peer)
	}
	switch local {
	case NoTLS:
		if peer == PeerRequired {
			return false, &PolicyError{Local: local, Peer: peer, Condition: stream.UnsupportedFeature}
		}
		return false, nil
	case Optional:
		return peer != PeerNoTLS, nil
	}
	// Required, and invalid modes (fail closed).
	if peer == PeerNoTLS {
		return false, &PolicyError{Local: local, Peer: peer, Condition: stream.PolicyViolation}
	}
	return true, nil
}
