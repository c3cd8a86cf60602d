package main

import (
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"time"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/srv"
	"github.com/xmppfed/xmppfed/srv/srvtest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// zone is the DNS the demo's federation sees: an edge cluster of two nodes
// with weights and a direct-TLS record, a partner without SRV records, a
// domain that opted out of federation, and an internationalised domain.
const zone = `
$TTL 300
_xmpps-server._tcp.edge.example.  IN SRV 5 0 5270 vcse1.edge.example.
_xmpp-server._tcp.edge.example.   IN SRV 10 60 5269 vcse1.edge.example.
_xmpp-server._tcp.edge.example.   IN SRV 10 40 5269 vcse2.edge.example.
vcse1.edge.example.               IN A 127.0.0.11
vcse2.edge.example.               IN A 127.0.0.12
partner.example.                  IN A 127.0.0.21
_xmpp-server._tcp.closed.example. IN SRV 0 0 0 .
_xmpp-server._tcp.xn--mnchen-3ya.example. IN SRV 0 0 5269 xmpp.xn--mnchen-3ya.example.
xmpp.xn--mnchen-3ya.example.      IN A 127.0.0.41
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stdout, &slog.HandlerOptions{Level: slog.LevelInfo}))
	if err := run(ctx, log, os.Stdout); err != nil {
		log.Error("demo failed", "err", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, log *slog.Logger, out io.Writer) error {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()

	dns, err := srvtest.Start("127.0.0.1:0", srvtest.MustParseZone(zone))
	if err != nil {
		return err
	}
	defer dns.Close()
	log.Info("DNS server for the demo zone started", "addr", dns.Addr())

	if err := resolve(ctx, log, out, dns.Addr()); err != nil {
		return err
	}
	securityModes(out)
	if err := dialbackRoundTrip(log, out); err != nil {
		return err
	}
	if err := federate(ctx, log, out, dns); err != nil {
		return err
	}
	return engine(ctx, log, out, dns)
}

// resolve looks up every demo domain the way an edge does before it
// connects out, including one reached through a static route.
func resolve(ctx context.Context, log *slog.Logger, out io.Writer, nameserver string) error {
	section(out, "1. Locating federated domains (DNS SRV, XEP-0368, static routes)")
	r := &srv.Resolver{
		Nameservers:  []string{nameserver},
		Timeout:      time.Second,
		StaticRoutes: map[string][]string{"cisco.example": {"127.0.0.31:5269", "127.0.0.32"}},
		Logger:       log,
	}
	for _, domain := range []string{"edge.example", "partner.example", "münchen.example", "cisco.example", "closed.example", "edge.example"} {
		res, err := r.Lookup(ctx, domain)
		switch {
		case errors.Is(err, srv.ErrNoService):
			fmt.Fprintf(out, "   %-16s → refused: %v\n", domain, err)
			continue
		case err != nil:
			return err
		}
		fmt.Fprintf(out, "   %-16s → method=%s cached=%v targets=%v\n", domain, res.Method, res.Cached, res.Targets)
		first := res.Targets[0]
		addrs, err := r.LookupAddrs(ctx, first.Host)
		if err != nil {
			return fmt.Errorf("addresses of %s: %w", first.Host, err)
		}
		fmt.Fprintf(out, "   %-16s   first target %s has addresses %v\n", "", first, addrs)
	}
	return nil
}

// securityModes prints which pairs of security modes can federate.
func securityModes(out io.Writer) {
	section(out, "2. Security modes (our mode × what the peer does about STARTTLS)")
	peers := []tlsmode.Peer{tlsmode.PeerNoTLS, tlsmode.PeerOptional, tlsmode.PeerRequired}
	fmt.Fprintf(out, "   %-14s", "")
	for _, p := range peers {
		fmt.Fprintf(out, "%-30s", p)
	}
	fmt.Fprintln(out)
	for _, spelling := range []string{"No TLS", "TLS optional", "TLS required"} {
		mode, err := tlsmode.ParseMode(spelling)
		if err != nil {
			panic(err) // the spellings above are the documented ones
		}
		fmt.Fprintf(out, "   %-14s", mode)
		for _, p := range peers {
			useTLS, err := tlsmode.Decide(mode, p)
			var refusal *tlsmode.PolicyError
			cell := "plaintext"
			switch {
			case errors.As(err, &refusal):
				cell = "refuse <" + refusal.Condition.Err + "/>"
			case err != nil:
				cell = "error: " + err.Error()
			case useTLS:
				cell = "TLS"
			}
			fmt.Fprintf(out, "%-30s", cell)
		}
		fmt.Fprintln(out)
	}
}

// dialbackRoundTrip plays XEP-0220 between edge.example (initiating, with
// vcse2 acting as authoritative server: both nodes share the secret) and
// partner.example (receiving), then shows a forged key being refused.
func dialbackRoundTrip(log *slog.Logger, out io.Writer) error {
	section(out, "3. Server dialback (XEP-0220, keys per XEP-0185)")
	secret := dialback.NewSecret() // one secret for every edge.example node
	vcse1 := dialback.Generator{Secret: secret}
	vcse2 := dialback.Generator{Secret: secret}

	streamID := "c4a2f1e07b9d4e6a8f3b2c1d0e9f8a7b" // partner.example's response header id
	req := dialback.Result{From: "edge.example", To: "partner.example",
		Key: vcse1.Key("partner.example", "edge.example", streamID)}
	trace(log, "vcse1.edge.example", "sending", req)

	// partner.example asks edge.example's authoritative server, found by SRV.
	verify := dialback.Verify{From: req.To, To: req.From, ID: streamID, Key: req.Key}
	trace(log, "partner.example", "sending", verify)

	answer := verify.Answer(dialback.TypeInvalid, nil)
	if vcse2.Verify(verify.Key, verify.From, verify.To, verify.ID) {
		answer.Type = dialback.TypeValid
	}
	trace(log, "vcse2.edge.example", "sending", answer)
	trace(log, "partner.example", "sending", req.Answer(answer.Type, nil))

	forged := verify
	forged.Key = dialback.Generator{Secret: []byte("guessed")}.Key(verify.From, verify.To, verify.ID)
	ok := vcse2.Verify(forged.Key, forged.From, forged.To, forged.ID)
	log.Warn("dialback key refused: possible spoofing", "local", "edge.example", "remote", "partner.example", "valid", ok)

	if answer.Type != dialback.TypeValid || ok {
		return errors.New("dialback round trip gave the wrong answers")
	}
	fmt.Fprintln(out, "   edge.example → partner.example authorized by dialback; a forged key was refused.")
	return nil
}

func trace(log *slog.Logger, node, verb string, el any) {
	b, err := xml.Marshal(el)
	if err != nil {
		b = []byte(err.Error())
	}
	log.Info(verb+": "+string(b), "node", node)
}

func section(out io.Writer, title string) {
	fmt.Fprintf(out, "\n%s\n", title)
}
