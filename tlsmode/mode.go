package tlsmode

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Mode is a per-domain security mode, as Cisco Expressway calls it.
//
// The zero value is Required so that a forgotten setting is secure (Prosody's
// s2s_require_encryption defaults to true for the same reason). Values other
// than the three constants are invalid: Offer, Decide and StartTLS treat them
// as Required (fail closed), and MarshalText refuses them.
type Mode uint8

// Security modes.
const (
	// Required offers STARTTLS with <required/> and refuses peers that cannot
	// do TLS ("TLS required").
	Required Mode = iota
	// Optional offers STARTTLS without <required/>, uses TLS whenever the peer
	// can, and falls back to plaintext only with a peer that cannot
	// ("TLS optional").
	Optional
	// NoTLS never offers or starts TLS ("No TLS"). A peer that insists on TLS
	// is refused.
	NoTLS
)

// ErrUnknownMode is matched (errors.Is) by errors for strings or values that
// are not a security mode.
var ErrUnknownMode = errors.New("tlsmode: unknown security mode")

// validSpellings is shown to an operator who typed something else.
const validSpellings = `"TLS required" (or "required"), "TLS optional" (or "optional"), "No TLS" (or "none", "off")`

// maxInputInError caps how much of a bad input an error message repeats, so
// a huge config value cannot flood the logs.
const maxInputInError = 64

// ParseError reports a string that ParseMode does not accept.
type ParseError struct {
	Input string // the string as given, untrimmed
}

func (e *ParseError) Error() string {
	in := e.Input
	if len(in) > maxInputInError {
		cut := maxInputInError
		for cut > 0 && !utf8.RuneStart(in[cut]) {
			cut--
		}
		in = in[:cut] + "..."
	}
	return fmt.Sprintf("tlsmode: unknown security mode %q: use %s", in, validSpellings)
}

// Unwrap lets errors.Is(err, ErrUnknownMode) match.
func (e *ParseError) Unwrap() error { return ErrUnknownMode }

// String returns the Expressway spelling: "TLS required", "TLS optional" or
// "No TLS"; an invalid value prints as "Mode(N)".
func (m Mode) String() string {
	switch m {
	case Required:
		return "TLS required"
	case Optional:
		return "TLS optional"
	case NoTLS:
		return "No TLS"
	}
	return "Mode(" + strconv.Itoa(int(m)) + ")"
}

func (m Mode) valid() bool { return m <= NoTLS }

// Offer says what a receiving server in mode m advertises: whether it lists
// STARTTLS at all, and whether the listing carries <required/>.
func (m Mode) Offer() (offer, required bool) {
	switch m {
	case NoTLS:
		return false, false
	case Optional:
		return true, false
	}
	return true, true // Required, and invalid values fail closed
}

// ParseMode parses an operator's spelling of a security mode. It accepts
// "TLS required", "required", "TLS optional", "optional", "No TLS", "none" and
// "off", ignoring ASCII case and surrounding white space. Runs of white space
// between words count as one space ("No  TLS" is accepted) because the
// spelling is unambiguous and such values come from hand-edited files and
// web forms. Case folding is ASCII-only so that look-alike letters such as
// U+017F (long s) are rejected.
//
// Anything else returns a *ParseError matching ErrUnknownMode.
func ParseMode(s string) (Mode, error) {
	switch strings.Join(strings.Fields(asciiLower(s)), " ") {
	case "tls required", "required":
		return Required, nil
	case "tls optional", "optional":
		return Optional, nil
	case "no tls", "none", "off":
		return NoTLS, nil
	}
	return Required, &ParseError{Input: s}
}

// asciiLower lowercases A-Z only; strings.ToLower would also map non-ASCII
// letters (e.g. KELVIN SIGN to k), which we do not want to accept.
func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
	}
	return string(b)
}

// MarshalText implements encoding.TextMarshaler with the short spellings
// "required", "optional" and "none", which are easy to write in config
// files. An invalid Mode is an error rather than being silently saved.
func (m Mode) MarshalText() ([]byte, error) {
	switch m {
	case Required:
		return []byte("required"), nil
	case Optional:
		return []byte("optional"), nil
	case NoTLS:
		return []byte("none"), nil
	}
	return nil, fmt.Errorf("tlsmode: cannot marshal %v: %w", m, ErrUnknownMode)
}

// UnmarshalText implements encoding.TextUnmarshaler with ParseMode. On error
// *m is left unchanged.
func (m *Mode) UnmarshalText(text []byte) error {
	v, err := ParseMode(string(text))
	if err != nil {
		return err
	}
	*m = v
	return nil
}
