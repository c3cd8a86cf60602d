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

// AXL keys, named after the attributes of Expressway's network.axl log
// lines (URL="…" Function="executeSQLQuery" Status="401").
const (
	URL      = "url"      // an endpoint, without credentials
	Function = "function" // an AXL operation, e.g. "executeSQLUpdate"
	Status   = "status"   // an HTTP status code
	Attempt  = "attempt"  // 1 for the first try of a retried request
	Wait     = "wait"     // how long until the next attempt
	Rows     = "rows"     // rows returned or updated
	Elapsed  = "elapsed"  // how long a request took

	AXLVersion = "axl_version" // an AXL schema version, e.g. "12.5"
)

// Router link keys (xcp).
const (
	Component = "component" // an XEP-0114 component name, e.g. "s2s-1.edge-1.example.com"
	PeerAddr  = "peer_addr" // the other end of a connection, "host:port"
	Queued    = "queued"    // stanzas waiting in a queue
	Condition = "condition" // an XMPP stream or stanza error condition, e.g. "not-authorized"
	Count     = "count"     // how many of something, e.g. stanzas bounced
)
