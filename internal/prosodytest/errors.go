package prosodytest

import (
	"errors"
	"fmt"
)

// Sentinel errors, to test with [errors.Is].
var (
	// ErrNotInstalled means the prosody binary or the lua-unbound module it
	// needs is missing. scripts/test installs both on Debian.
	ErrNotInstalled = errors.New("prosody or lua-unbound is not installed (Debian: apt-get install prosody lua-unbound openssl)")

	// ErrInvalidConfig means a Config or a Client argument cannot be turned
	// into a working Prosody configuration or login.
	ErrInvalidConfig = errors.New("invalid prosodytest configuration")

	// ErrAuth means the server rejected the user's credentials; see
	// [*SASLError] for the reason.
	ErrAuth = errors.New("authentication failed")

	// ErrStream means the server closed the stream or sent a stream error;
	// see [*StreamError].
	ErrStream = errors.New("XMPP stream failed")

	// ErrClosed means the Client was closed.
	ErrClosed = errors.New("prosodytest: client closed")
)

// SASLError is a SASL <failure/> from the server. It matches [ErrAuth].
type SASLError struct {
	Condition string // e.g. "not-authorized", "encryption-required"
	Text      string
}

func (e *SASLError) Error() string {
	hint := ""
	switch e.Condition {
	case "not-authorized":
		hint = " (wrong user name or password, or the user is not in Host.Users)"
	case "encryption-required":
		hint = " (the server wants TLS before PLAIN; prosodytest configures allow_unencrypted_plain_auth, so check Extra)"
	}
	if e.Text != "" {
		return fmt.Sprintf("prosodytest: login refused: %s: %s%s", e.Condition, e.Text, hint)
	}
	return fmt.Sprintf("prosodytest: login refused: %s%s", e.Condition, hint)
}

// Is makes a SASLError match [ErrAuth].
func (e *SASLError) Is(target error) bool { return target == ErrAuth }

// StreamError is a stream-level error (<stream:error/>) or an unexpected
// element where the login expected another. It matches [ErrStream].
type StreamError struct {
	Condition string // RFC 6120 condition, e.g. "host-unknown"; or "unexpected-element"
	Text      string
}

func (e *StreamError) Error() string {
	hint := ""
	if e.Condition == "host-unknown" {
		hint = " (the domain is not a VirtualHost of this Prosody: check Config.Hosts)"
	}
	if e.Text != "" {
		return fmt.Sprintf("prosodytest: stream error: %s: %s%s", e.Condition, e.Text, hint)
	}
	return fmt.Sprintf("prosodytest: stream error: %s%s", e.Condition, hint)
}

// Is makes a StreamError match [ErrStream].
func (e *StreamError) Is(target error) bool { return target == ErrStream }
