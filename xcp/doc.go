// Package xcp is the router link between the edge, the core and the IM and
// Presence server: the internal XMPP traffic that Cisco's XCP routers
// exchange on TCP 7400. XCP's own wire protocol is not public, so the link
// speaks the Jabber Component Protocol (XEP-0114), which Prosody, ejabberd
// and Openfire speak too: a stream in jabber:component:accept (the
// component opens the connection) or jabber:component:connect (the router
// does), authenticated by the handshake hex(SHA-1(stream ID + secret)),
// then stanzas with full to and from addresses both ways. The project's
// profile of it is in spec/component.md.
//
// A [Router] routes every stanza by its to domain to the [Link] of the
// component serving that domain, with a default route for the edge's S2S
// component, which serves every domain that is not local and, unlike plain
// XEP-0114, may send stanzas from those foreign domains. Several components
// may serve one domain; they share its load and take over from each other.
// A stanza nobody can take is bounced to its sender with a stanza error
// (<item-not-found/>, <remote-server-not-found/>, <remote-server-timeout/>,
// <resource-constraint/>), never dropped silently; Router.Shutdown delivers
// or bounces what it holds before it closes the links.
// Who dials whom is configured apart from who routes: on Expressway the
// core, inside the firewall, opens 7400 towards the edge in the DMZ, so the
// router dials ([Component.Addr]) and the edge's Link listens
// ([Link.Serve]). Either end may require TLS with certificates on both
// sides; plaintext must be asked for ([Link.Plaintext]).
//
// A Link reconnects by itself with jittered back-off, keeps what is sent
// while the router is away in a bounded queue and delivers it in order once
// the stream is back, and bounces what waits too long. XEP-0114 has no
// acknowledgements, so delivery is at most once: a stanza handed to the
// operating system is not sent again if the connection then fails, one
// that was not is. Both ends send a space when idle and declare a silent
// peer dead. Queues are bounded end to end, in stanzas and in bytes, so a
// slow component slows its senders instead of growing memory. Streams are
// read by a scanner that checks each stanza is well-formed restricted XML
// (RFC 6120 §11) and namespace-well-formed (reserved namespaces, attributes
// compared by resolved name) within the size and depth limits, and that it
// is in the stream's content namespace; its bytes are then forwarded
// untouched but for an xmlns attribute naming that namespace, which is
// dropped so that the stanza takes the namespace of the stream it goes out
// on. Bad input ends the stream with the RFC 6120 stream error that names
// the fault.
package xcp
