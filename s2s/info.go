package s2s

import (
	"crypto/tls"
	"time"
)

// Direction says who opened a stream.
type Direction uint8

const (
	Outbound Direction = iota + 1 // we are the initiating server
	Inbound                       // the peer opened it
)

func (d Direction) String() string {
	switch d {
	case Outbound:
		return "outbound"
	case Inbound:
		return "inbound"
	}
	return "unknown"
}

// State is a stream's connection state, as Expressway names them.
type State uint8

const (
	Pending   State = iota + 1 // connecting or negotiating
	Connected                  // at least one domain pair authorized
	Closed                     // gone
)

func (s State) String() string {
	switch s {
	case Pending:
		return "PENDING"
	case Connected:
		return "CONNECTED"
	case Closed:
		return "CLOSED"
	}
	return "UNKNOWN"
}

// AuthMethod is how the remote domain was authenticated.
type AuthMethod uint8

const (
	AuthNone     AuthMethod = iota // not (yet) authenticated
	AuthDialback                   // XEP-0220
	AuthExternal                   // SASL EXTERNAL with a certificate (XEP-0178)
)

func (a AuthMethod) String() string {
	switch a {
	case AuthDialback:
		return "dialback"
	case AuthExternal:
		return "sasl-external"
	}
	return "none"
}

// Pair is a domain pair authorized on a stream: stanzas from Remote to Local
// (inbound) or from Local to Remote (outbound).
type Pair struct {
	Local, Remote string
}

// PairAuth is an authorized pair and how it was authenticated.
type PairAuth struct {
	Pair
	Auth AuthMethod
}

// Info describes a stream at one moment.
type Info struct {
	ID         string // stream ID (the receiving side's, after the last restart)
	Direction  Direction
	Local      string // our domain in the stream header
	Remote     string // the peer's domain in the stream header
	State      State
	Auth       AuthMethod // how the header's domain pair was authenticated
	Pairs      []PairAuth // every authorized pair (several with multiplexing), sorted
	TLS        bool
	TLSVersion uint16 // tls.VersionTLS13 etc., when TLS
	// CertError is why the peer's certificate was not accepted (nil when it
	// verified or no TLS).
	CertError error
	// VerifyOnly: a stream used only for db:verify (ours, opened to
	// verify a key; or a peer's that has so far only asked us to verify).
	VerifyOnly bool
	// Bidi: XEP-0288 bidirectional stream; stanzas for the authorized
	// pairs flow both ways on it.
	Bidi       bool
	Since      time.Time
	RemoteAddr string

	// Traffic so far: stanzas of authorized pairs, and bytes on the wire
	// (TLS records included).
	StanzasIn, StanzasOut uint64
	BytesIn, BytesOut     uint64
}

// TLSVersionName returns the TLS version as text ("TLS 1.3"), or "none".
func (i Info) TLSVersionName() string {
	if !i.TLS {
		return "none"
	}
	return tls.VersionName(i.TLSVersion)
}

// StateChange reports a stream moving from one state to another.
type StateChange struct {
	Info     Info
	From, To State
	Err      error // why the stream closed, if it failed
}
