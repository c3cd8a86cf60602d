package tlsmode_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"encoding/xml"
	"errors"
	"fmt"
	"os"
	"strings"
	"time"

	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/tlsmode"
)

func ExampleParseMode() {
	for _, s := range []string{"TLS optional", " none ", "REQUIRED", "tls"} {
		m, err := tlsmode.ParseMode(s)
		if err != nil {
			fmt.Println(errors.Is(err, tlsmode.ErrUnknownMode), err)
			continue
		}
		text, _ := m.MarshalText()
		fmt.Printf("%q: %v (saved as %q)\n", s, m, text)
	}
	// Output:
	// "TLS optional": TLS optional (saved as "optional")
	// " none ": No TLS (saved as "none")
	// "REQUIRED": TLS required (saved as "required")
	// true tlsmode: unknown security mode "tls": use "TLS required" (or "required"), "TLS optional" (or "optional"), "No TLS" (or "none", "off")
}

func ExampleDecide() {
	for _, local := range []tlsmode.Mode{tlsmode.NoTLS, tlsmode.Optional, tlsmode.Required} {
		for _, peer := range []tlsmode.Peer{tlsmode.PeerNoTLS, tlsmode.PeerOptional, tlsmode.PeerRequired} {
			useTLS, err := tlsmode.Decide(local, peer)
			var cond stream.Error
			switch {
			case errors.As(err, &cond):
				fmt.Printf("%-12s × %-17s → refuse with <%s/>\n", local, peer, cond.Err)
			case useTLS:
				fmt.Printf("%-12s × %-17s → STARTTLS\n", local, peer)
			default:
				fmt.Printf("%-12s × %-17s → plaintext\n", local, peer)
			}
		}
	}

	_, err := tlsmode.Decide(tlsmode.Required, tlsmode.PeerNoTLS)
	fmt.Println(err)
	// Output:
	// No TLS       × no STARTTLS       → plaintext
	// No TLS       × STARTTLS optional → plaintext
	// No TLS       × STARTTLS required → refuse with <unsupported-feature/>
	// TLS optional × no STARTTLS       → plaintext
	// TLS optional × STARTTLS optional → STARTTLS
	// TLS optional × STARTTLS required → STARTTLS
	// TLS required × no STARTTLS       → refuse with <policy-violation/>
	// TLS required × STARTTLS optional → STARTTLS
	// TLS required × STARTTLS required → STARTTLS
	// tlsmode: security mode is TLS required but the peer does not support STARTTLS (no STARTTLS): the peer must enable TLS, or set this domain's security mode to TLS optional
}

func ExampleStartTLS() {
	// The receiving side needs a certificate in cfg; listing works without.
	var cfg *tls.Config
	for _, mode := range []tlsmode.Mode{tlsmode.NoTLS, tlsmode.Optional, tlsmode.Required} {
		feature, ok := tlsmode.StartTLS(mode, cfg)
		if !ok {
			fmt.Printf("%v: not offered\n", mode)
			continue
		}
		fmt.Printf("%v: ", mode)
		e := xml.NewEncoder(os.Stdout)
		if _, err := feature.List(context.Background(), e, xml.StartElement{Name: feature.Name}); err != nil {
			panic(err)
		}
		if err := e.Flush(); err != nil {
			panic(err)
		}
		fmt.Println()
	}
	// Output:
	// No TLS: not offered
	// TLS optional: <starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"></starttls>
	// TLS required: <starttls xmlns="urn:ietf:params:xml:ns:xmpp-tls"><required></required></starttls>
}

// A server in No TLS mode does not use the StartTLS feature; as initiating
// server it reads the peer's listing itself and lets Decide judge it.
func ExampleParseFeature() {
	for _, features := range []string{
		`<stream:features xmlns:stream='http://etherx.jabber.org/streams'>` +
			`<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>` +
			`</stream:features>`,
		`<stream:features xmlns:stream='http://etherx.jabber.org/streams'>` +
			`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>` +
			`<dialback xmlns='urn:xmpp:features:dialback'><errors/></dialback>` +
			`</stream:features>`,
		`<stream:features xmlns:stream='http://etherx.jabber.org/streams'>` +
			`<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>` +
			`</stream:features>`,
	} {
		d := xml.NewDecoder(strings.NewReader(features))
		peer := tlsmode.PeerNoTLS // unless the peer lists STARTTLS
		for {
			tok, err := d.Token()
			if err != nil {
				break // io.EOF here; a real stream ends at </stream:features>
			}
			start, ok := tok.(xml.StartElement)
			if ok && start.Name == (xml.Name{Space: tlsmode.NS, Local: "starttls"}) {
				if peer, err = tlsmode.ParseFeature(d, &start); err != nil {
					panic(err)
				}
			}
		}

		useTLS, err := tlsmode.Decide(tlsmode.NoTLS, peer)
		var cond stream.Error
		switch {
		case errors.As(err, &cond):
			fmt.Printf("%v: close the stream with <%s/>\n", peer, cond.Err)
		case useTLS:
			fmt.Printf("%v: STARTTLS\n", peer) // never in No TLS mode
		default:
			fmt.Printf("%v: stay in plaintext, use dialback\n", peer)
		}
	}
	// Output:
	// no STARTTLS: stay in plaintext, use dialback
	// STARTTLS optional: stay in plaintext, use dialback
	// STARTTLS required: close the stream with <unsupported-feature/>
}

// A server in No TLS mode answers a <starttls/> from the initiating server
// with <failure/> and closes the stream, then the connection.
func ExampleWriteFailure() {
	conn := os.Stdout // in real use, the xmpp.Session's Conn()
	if err := tlsmode.WriteFailure(conn); err != nil {
		panic(err)
	}
	// Output:
	// <failure xmlns='urn:ietf:params:xml:ns:xmpp-tls'/></stream:stream>
}

// The initiating server's config for a direct TLS (XEP-0368) connection to
// an internationalized domain.
func ExampleClientConfig() {
	shared := &tls.Config{} // e.g. with RootCAs and a client certificate
	cfg, err := tlsmode.ClientConfig(shared, "bücher.example", true)
	if err != nil {
		panic(err)
	}
	fmt.Println(cfg.ServerName, cfg.NextProtos, cfg.MinVersion == tls.VersionTLS12)
	fmt.Printf("%q\n", shared.ServerName)
	// Output:
	// xn--bcher-kva.example [xmpp-server] true
	// ""
}

// Identity matching alone, for the names a certificate presents (see
// PeerIdentities).
func ExampleIdentities_Match() {
	ids := tlsmode.Identities{
		DNS:      []string{"*.example.com"},
		SRV:      []string{"_xmpp-server.example.net"},
		XmppAddr: []string{"bücher.example"},
		CN:       "example.org", // not used: there are SAN identifiers
	}
	for _, domain := range []string{
		"chat.example.com", "example.com", "a.b.example.com",
		"example.net", "xn--bcher-kva.example", "example.org",
	} {
		fmt.Println(domain, ids.Match(domain))
	}
	// Output:
	// chat.example.com true
	// example.com false
	// a.b.example.com false
	// example.net true
	// xn--bcher-kva.example true
	// example.org false
}

// Checking the certificate a peer presented, here read from files: one for
// a.example with DNS-ID, SRV-ID and XmppAddr, valid during 2026, and the
// CA that issued it.
func ExampleVerifyPeer() {
	read := func(name string) *x509.Certificate {
		data, err := os.ReadFile("testdata/" + name)
		if err != nil {
			panic(err)
		}
		block, _ := pem.Decode(data)
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			panic(err)
		}
		return cert
	}
	chain := []*x509.Certificate{read("example-a.example.pem")} // leaf first
	roots := x509.NewCertPool()
	roots.AddCert(read("example-ca.pem"))
	now := time.Date(2026, 6, 1, 0, 0, 0, 0, time.UTC)

	fmt.Println(tlsmode.VerifyPeer(chain, "a.example", tlsmode.VerifyOptions{Roots: roots, Now: now}))

	err := tlsmode.VerifyPeer(chain, "b.example", tlsmode.VerifyOptions{Roots: roots, Now: now})
	fmt.Println(errors.Is(err, tlsmode.ErrCertWrongName), err)

	err = tlsmode.VerifyPeer(chain, "a.example", tlsmode.VerifyOptions{Roots: roots, Now: now.AddDate(1, 0, 0)})
	fmt.Println(errors.Is(err, tlsmode.ErrCertExpired), err)

	err = tlsmode.VerifyPeer(chain, "a.example", tlsmode.VerifyOptions{Roots: x509.NewCertPool(), Now: now})
	var certErr *tlsmode.CertError
	if errors.As(err, &certErr) {
		fmt.Println(certErr.Problem, certErr.Issuer)
	}

	err = tlsmode.VerifyPeer(nil, "a.example", tlsmode.VerifyOptions{})
	fmt.Println(errors.Is(err, tlsmode.ErrCertMissing), err)
	// Output:
	// <nil>
	// true tlsmode: the certificate presented by b.example is not valid for b.example: it names DNS:a.example, SRV:_xmpp-server.a.example, XmppAddr:a.example; the peer needs a certificate that lists b.example
	// true tlsmode: the certificate presented by a.example expired on 2027-01-01 00:00:00 UTC (subject "a.example"); the peer must renew it
	// unknown issuer Example Federation CA
	// true tlsmode: a.example presented no certificate; the peer must have a certificate for a.example configured
}

// The initiating server's two ways to check the peer's certificate for
// the remote domain (the receiving server does the same with the domain the
// peer claims, after the handshake).
func ExampleVerifyState() {
	const remote = "b.example"
	opts := tlsmode.VerifyOptions{} // system roots, current time

	// Encryption whatever the certificate; judged after the handshake:
	// authenticated by certificate, or dialback.
	lenient, err := tlsmode.ClientConfig(&tls.Config{InsecureSkipVerify: true}, remote, false)
	if err != nil {
		panic(err)
	}
	// tlsConn := tls.Client(conn, lenient); tlsConn.HandshakeContext(ctx)
	// err := tlsmode.VerifyState(tlsConn.ConnectionState(), remote, opts)

	// Valid certificates required: refuse others in the handshake.
	strict := lenient.Clone()
	strict.VerifyConnection = func(cs tls.ConnectionState) error {
		return tlsmode.VerifyState(cs, remote, opts)
	}

	// The verdict on a handshake without a peer certificate:
	err = strict.VerifyConnection(tls.ConnectionState{})
	fmt.Println(errors.Is(err, tlsmode.ErrCertMissing), err)
	// Output:
	// true tlsmode: b.example presented no certificate; the peer must have a certificate for b.example configured
}
