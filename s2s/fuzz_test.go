package s2s_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"time"

	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/srv/srvtest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// FuzzServeConn feeds arbitrary bytes to the receiving side's stream header,
// feature and element parsing. Whatever arrives, ServeConn must return
// within its bounds, and nothing can be delivered: no peer can authenticate
// (the DNS knows no authoritative server). The first argument picks the
// security mode, so the STARTTLS and SASL paths are reached too.
func FuzzServeConn(f *testing.F) {
	for _, s := range []string{
		rawHeader + "</stream:stream>",
		rawHeader + "<db:result from='a.test' to='b.test'>abc</db:result>",
		rawHeader + "<db:verify from='a.test' to='b.test' id='x'>abc</db:verify>",
		rawHeader + "<message from='a@a.test' to='b@b.test'/>",
		rawHeader + "<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>",
		rawHeader + "<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='EXTERNAL'>=</auth>",
		"<?xml version='1.0'?><stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams' to='b.test'>",
		"<stream:stream xmlns:stream='http://etherx.jabber.org/streams' xmlns='jabber:server' to='b.test' version='2.5'><stream:error><host-gone xmlns='urn:ietf:params:xml:ns:xmpp-streams'/></stream:error>",
	} {
		f.Add(uint8(tlsmode.NoTLS), []byte(s))
		f.Add(uint8(tlsmode.Optional), []byte(s))
	}
	dns := srvtest.New(f, "")
	cert := testpki.SelfSigned(f, "b.test")
	f.Fuzz(func(t *testing.T, mode uint8, in []byte) {
		var delivered atomic.Int32
		ep := &s2s.Endpoint{
			Domains:            []string{"b.test"},
			Keys:               secretFor("b.test"),
			Security:           tlsmode.Mode(mode % 3),
			TLS:                &tls.Config{Certificates: []tls.Certificate{cert}},
			Resolver:           dns.Resolver(),
			NegotiationTimeout: time.Second,
			VerifyTimeout:      time.Second,
			MaxStanzaSize:      4096,
		}
		client, server := net.Pipe()
		go func() {
			client.SetDeadline(time.Now().Add(3 * time.Second))
			go io.Copy(io.Discard, client)
			client.Write(in)
			client.Close()
		}()
		done := make(chan struct{})
		go func() {
			defer close(done)
			ep.ServeConn(context.Background(), server, s2s.HandlerFunc(func(context.Context, *s2s.Stanza) { delivered.Add(1) }))
		}()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatal("ServeConn did not return")
		}
		if delivered.Load() != 0 {
			t.Fatal("a stanza was delivered on an unauthenticated stream")
		}
	})
}

func FuzzParseStanza(f *testing.F) {
	for _, s := range []string{
		"<message from='a@b.test' to='c@d.test'><body>x</body></message>",
		"<iq xmlns='jabber:client' type='get' id='1' from='b.test' to='d.test'><ping xmlns='urn:xmpp:ping'/></iq>",
		"<presence from='a@b.test/r' to='c@d.test' xml:lang='en'/>",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		st, err := s2s.ParseStanza(in)
		if err != nil {
			return
		}
		again, err := s2s.ParseStanza(st.XML)
		if err != nil {
			t.Fatalf("canonical stanza %q does not parse: %v", st.XML, err)
		}
		if string(again.XML) != string(st.XML) || !again.From.Equal(st.From) || !again.To.Equal(st.To) || again.Name != st.Name {
			t.Fatalf("not stable: %q -> %q", st.XML, again.XML)
		}
	})
}
