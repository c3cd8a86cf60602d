// Package dialback implements server dialback for XMPP server-to-server
// federation: the key derivation of XEP-0185 and the wire elements of
// XEP-0220.
//
// Dialback lets a receiving server check that a connection really comes from
// the domain it claims, without certificates: the initiating server sends a
// key in <db:result/>, the receiving server asks the claimed domain's
// authoritative server (found through DNS) whether that key is right with
// <db:verify/>, and only then accepts stanzas from that domain on the stream.
// Every node of a domain (every Expressway edge node behind the domain's SRV
// records) shares one dialback secret, so any of them can vouch for a key
// another made; [Generator] derives and checks those keys, [Keyring] accepts
// keys made under a previous secret or another algorithm during a rotation.
//
// The elements [Result] and [Verify] marshal in the prefixed form old peers
// expect (<db:result/>, relying on xmlns:db declared on the stream header) and
// unmarshal by namespace, whatever prefix the peer used. Input is validated
// strictly where it matters for security (required addresses, the type
// attribute, key size) and leniently where interoperability needs it (Cisco
// XCP echoes the key inside typed answers; some peers omit the error
// condition). Bad input is reported as a [*MalformedError] carrying the
// RFC 6120 stream-error condition to send the peer; an element that breaks
// XEP-0220 is never written ([ErrInvalid]). [Feature] is the
// urn:xmpp:features:dialback stream feature with <errors/> (XEP-0220 §2.5).
package dialback
