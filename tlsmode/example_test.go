package tlsmode_test

import (
	"context"
	"crypto/tls"
	"encoding/xml"
	"errors"
	"fmt"
	"os"

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
