package logkey

// Attribute keys. Keep them short, lowercase and stable: operators build
// alerts on them.
const (
	Local      = "local"       // our domain on a stream or lookup
	Remote     = "remote"      // the peer's domain
	StreamID   = "stream_id"   // the id attribute of a stream header
	State      = "state"       // connection state change, e.g. "PENDING->CONNECTED"
	Domain     = "domain"      // a domain being looked up or configured
	Puny       = "puny"        // the IDNA A-label (punycode) form of Domain
	Service    = "service"     // an SRV service label, e.g. "_xmpp-server._tcp"
	Method     = "method"      // how a peer was located: "SRV", "static", "fallback"
	DNSTimings = "dns-timings" // "(TOTAL:… SRV:…)", as Expressway logs it
	Targets    = "targets"     // connection candidates, in order
	Security   = "security"    // a tlsmode.Mode
	Err        = "err"         // an error value
)
