// Package s2s turns TCP connections into authenticated XMPP
// server-to-server streams (RFC 6120), in the three roles of server
// dialback (XEP-0220): the originating server that asks to send for a
// domain (Endpoint.Dial), the receiving server that checks the request with
// the sender's authoritative server over a separate stream and then accepts
// stanzas (Endpoint.ServeConn), and the authoritative server that answers
// db:verify by recomputing the key from the shared dialback secret
// (XEP-0185), so that any node of a cluster can vouch for any other.
//
// An Endpoint holds the served domains, the dialback secret, the
// certificates and the security mode (tlsmode: No TLS, TLS optional, TLS
// required; the matrix of what each pair of modes does is in
// tlsmode.Decide). Streams are found by DNS SRV (package srv), including
// XEP-0368 direct TLS targets. Over TLS the peer's certificate is checked
// against the configured roots and the remote domain (RFC 6125 DNS-ID,
// SRV-ID, XmppAddr); when both certificates are valid the initiating side
// authenticates with SASL EXTERNAL (XEP-0178), otherwise with dialback, and
// a receiving server whose peer presents a valid certificate confirms
// dialback without dialing back (XEP-0344). Several domain pairs can share
// one stream (XEP-0220 multiplexing, Stream.Authorize).
//
// Every refusal is a stream error with the RFC 6120 condition a peer
// expects (host-unknown, invalid-from, not-authorized, policy-violation,
// …), and every returned error is an *Error matching both that condition
// (mellium stream.Error values) and this package's sentinels. Each stream
// reports its state (PENDING → CONNECTED → CLOSED) through
// Endpoint.OnStateChange and logs it with slog as Expressway does
// ("Connection state change", "Scheduling dialback timeout in 30 seconds").
//
// On top of the streams sits the federation engine that an edge server
// embeds. A Server accepts inbound streams on its listeners (the plain S2S
// port and, per XEP-0368, a direct TLS port), hands each stanza of an
// authorized pair to its Handler, and answers XEP-0199 pings and XEP-0030
// disco#info queries to a served domain itself. A Pool sends stanzas to
// remote domains: it reuses or sets up one authorized stream per domain
// pair, queues stanzas meanwhile (bounded), and returns every stanza it
// cannot deliver to its sender as an RFC 6120 error stanza
// (<remote-server-not-found/>, <remote-server-timeout/>,
// <service-unavailable/> for a domain the privacy mode refuses) — never a
// silent drop. Failed domains are retried with jittered exponential
// back-off; idle streams are closed, and whitespace keepalives expose dead
// peers. A Policy holds Expressway's runtime settings (security mode,
// privacy mode with allow and deny lists, static routes, per-domain
// overrides); Policy.Update applies at once, closing the streams the new
// settings refuse. Status and Counters give the federation status page
// and the figures to monitor; limits on unauthenticated connections (in
// total and per source address), verifications, stanza size, depth and
// queue length are enforced before anything is allocated for the peer.
// With Endpoint.Bidi, XEP-0288 bidirectional streams carry both
// directions of a domain pair on one connection, as Prosody and ejabberd
// can. Package s2stest stands up federated domains in a test.
//
// The stream layer is this package's own (internal/wire) rather than
// mellium's xmpp.Session: mellium has no dialback, rejects S2S headers with
// a from attribute, and re-encodes every token; here each stanza is read
// once within a size budget into canonical bytes that are relayed as they
// are.
package s2s
