package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"sync"
	"time"

	"github.com/xmppfed/xmppfed/dialback"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/srv/srvtest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// federate runs real S2S streams on loopback: capulet.example (TLS
// required, certificate from the demo CA) reaches montague.example (TLS
// optional) with SASL EXTERNAL; verona.example (No TLS, no certificate)
// reaches montague.example with dialback, montague verifying the key with
// verona's authoritative server; a node of verona.example with the wrong
// dialback secret is refused.
func federate(ctx context.Context, log *slog.Logger, out io.Writer, dns *srvtest.Server) error {
	section(out, "4. Live S2S streams on loopback (STARTTLS, SASL EXTERNAL, dialback)")
	ca, err := newDemoCA()
	if err != nil {
		return err
	}
	received := make(chan *s2s.Stanza, 4)
	var wg sync.WaitGroup
	defer wg.Wait()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()

	node := func(domain string, mode tlsmode.Mode, withCert bool) (*s2s.Endpoint, error) {
		ep := &s2s.Endpoint{
			Domains:  []string{domain},
			Keys:     dialback.Generator{Secret: []byte("dialback secret of " + domain)},
			Security: mode,
			Roots:    ca.pool,
			Resolver: dns.Resolver(),
			Logger:   log.With("node", domain),
		}
		if withCert {
			cert, err := ca.issue(domain)
			if err != nil {
				return nil, err
			}
			ep.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		}
		ln, err := listenPublished(dns, domain, "xmpp")
		if err != nil {
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			context.AfterFunc(ctx, func() { ln.Close() })
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				wg.Add(1)
				go func() {
					defer wg.Done()
					ep.ServeConn(ctx, c, s2s.HandlerFunc(func(_ context.Context, st *s2s.Stanza) { received <- st }))
				}()
			}
		}()
		return ep, nil
	}
	capulet, err := node("capulet.example", tlsmode.Required, true)
	if err != nil {
		return err
	}
	if _, err := node("montague.example", tlsmode.Optional, true); err != nil {
		return err
	}
	verona, err := node("verona.example", tlsmode.NoTLS, false)
	if err != nil {
		return err
	}

	send := func(from *s2s.Endpoint, fromDomain, body string) error {
		s, err := from.Dial(ctx, fromDomain, "montague.example")
		if err != nil {
			return err
		}
		defer s.Close()
		i := s.Info()
		fmt.Fprintf(out, "   %-16s → montague.example  %-9s tls=%-7s auth=%-13s stream=%s…\n", fromDomain, i.State, i.TLSVersionName(), i.Auth, i.ID[:8])
		msg, err := s2s.ParseStanza([]byte("<message type='chat' from='juliet@" + fromDomain + "/balcony' to='romeo@montague.example'><body>" + body + "</body></message>"))
		if err != nil {
			return err
		}
		if err := s.Send(ctx, msg); err != nil {
			return err
		}
		select {
		case st := <-received:
			fmt.Fprintf(out, "   montague.example received from %s: %s\n", st.From, st.XML)
		case <-time.After(10 * time.Second):
			return fmt.Errorf("message from %s not delivered", fromDomain)
		}
		return nil
	}
	if err := send(capulet, "capulet.example", "Wherefore art thou Romeo?"); err != nil {
		return err
	}
	if err := send(verona, "verona.example", "Two households, both alike in dignity"); err != nil {
		return err
	}

	impostor := &s2s.Endpoint{
		Domains:  verona.Domains,
		Keys:     dialback.Generator{Secret: []byte("a guessed secret")},
		Security: verona.Security,
		Resolver: verona.Resolver,
		Logger:   log.With("node", "impostor of verona.example"),
	}
	_, err = impostor.Dial(ctx, "verona.example", "montague.example")
	if err == nil {
		return fmt.Errorf("a dialback key made with the wrong secret was accepted")
	}
	fmt.Fprintf(out, "   impostor of verona.example refused: %v\n", err)
	return nil
}

// listenPublished listens on a loopback port and publishes it as
// domain's _xmpp-server._tcp target host.domain.
func listenPublished(dns *srvtest.Server, domain, host string) (net.Listener, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	port := ln.Addr().(*net.TCPAddr).Port
	if err := dns.Zone().Add(
		fmt.Sprintf("_xmpp-server._tcp.%s. 300 IN SRV 0 0 %d %s.%s.", domain, port, host, domain),
		fmt.Sprintf("%s.%s. 300 IN A 127.0.0.1", host, domain)); err != nil {
		ln.Close()
		return nil, err
	}
	return ln, nil
}

// demoCA is a throw-away certificate authority for the demo's domains.
type demoCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
}

func newDemoCA() (*demoCA, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "xmppfed demo CA"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		IsCA:                  true,
		BasicConstraintsValid: true,
		KeyUsage:              x509.KeyUsageCertSign,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, err
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &demoCA{cert: cert, key: key, pool: pool}, nil
}

// issue makes a certificate for an XMPP domain, usable as TLS server and
// client (an S2S peer is both).
func (ca *demoCA) issue(domain string) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, big.NewInt(1<<62))
	if err != nil {
		return tls.Certificate{}, err
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject:      pkix.Name{CommonName: domain},
		DNSNames:     []string{domain},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key}, nil
}
