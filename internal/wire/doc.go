// Package wire reads and writes the XML of one XMPP stream with the limits a
// server facing the internet needs: a bound on the bytes of each top-level
// element (enforced while reading, so an oversized stanza is never buffered
// whole), a bound on element depth, and the restricted XML of RFC 6120 §11.1
// (no comments, processing instructions, DTDs or entity references beyond
// the five predefined ones).
//
// A Reader returns the stream header and then each top-level element, either
// as tokens (for negotiation elements decoded in place) or as canonical bytes:
// the element re-serialised so that it inherits the default namespace of
// whatever stream it is written into, with every other namespace declared on
// the element that uses it. Canonical bytes can be copied verbatim from one
// stream to another, which is how stanzas are relayed without re-encoding.
//
// Violations are reported as *Error values carrying the RFC 6120 stream error
// condition to send before closing.
package wire
