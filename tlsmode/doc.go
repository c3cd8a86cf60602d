// Package tlsmode implements the per-domain security mode of an XMPP
// server-to-server link, modelled on Cisco Expressway's "Security mode"
// setting: "No TLS", "TLS optional" or "TLS required". The zero Mode is
// Required, so a domain nobody configured is never federated in plaintext.
//
// A mode decides two things. As receiving server it decides what we
// advertise: nothing, <starttls/>, or <starttls><required/></starttls>
// (RFC 6120 §5, see Mode.Offer and StartTLS). As initiating server, and for a
// peer that does or does not ask for TLS, Decide says whether to run STARTTLS,
// stay in plaintext, or refuse the stream and with which stream error
// condition. Following RFC 7590, TLS is used whenever both sides can do it;
// plaintext is only ever the result of a mode that allows it meeting a peer
// that cannot (or, in No TLS mode, does not insist).
//
// StartTLS provides the STARTTLS exchange as a mellium.im/xmpp stream
// feature for both directions. Compared with xmpp.StartTLS it honours the
// optional mode, verifies the peer's certificate against the remote XMPP
// domain (the S2S reference identifier, never the SRV target host), enforces
// TLS 1.2 or newer, and never modifies the caller's tls.Config.
//
// For code that drives the stream itself (a No TLS server, direct TLS), the
// pieces are exported: ParseFeature reads a peer's <starttls/> listing,
// WriteFailure refuses a <starttls/>, and ClientConfig and ServerConfig
// build the TLS configurations for either side.
//
// VerifyPeer (or VerifyState, for a tls.ConnectionState) says whether a
// peer's certificate authenticates it as an XMPP domain (RFC 6120 §13.7.2,
// RFC 6125, RFC 7590, XEP-0178): the chain must lead to a trusted root, and
// the leaf must name the domain as a DNS-ID, an SRV-ID
// ("_xmpp-server.example.com"), an XmppAddr or, failing all three, its CN,
// compared in A-label form. crypto/x509 ignores the otherName entries that
// carry SRV-IDs and XmppAddrs, so the chain is verified without a host name
// and the names are matched here; to use this rather than crypto/tls's
// DNS-ID check, set InsecureSkipVerify and call VerifyState after the
// handshake. A failure is a *CertError saying what an administrator should
// fix. It need not end the stream: a peer can still authenticate with
// dialback unless valid certificates are required.
package tlsmode
