package xcp_test

import (
	"context"
	"encoding/xml"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmlstream"
	"mellium.im/xmpp"
	"mellium.im/xmpp/component"
	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stanza"

	"github.com/xmppfed/xmppfed/internal/prosodytest"
	"github.com/xmppfed/xmppfed/xcp"
)

// TestMelliumComponentToRouter connects a component built with another
// implementation, mellium.im/xmpp/component, to our Router.
func TestMelliumComponentToRouter(t *testing.T) {
	addr := startRouter(t, &xcp.Router{Components: []xcp.Component{
		{Name: "mellium.example", Secret: secretA},
		{Name: "b.example", Secret: secretB},
	}})
	hb := newCollector()
	b := startLink(t, &xcp.Link{Name: "b.example", Secret: secretB, Addr: addr, Handler: hb})
	ready(t, b)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := net.Dial("tcp", addr)
	require.NoError(t, err)
	defer conn.Close()
	sess, err := component.NewSession(ctx, jid.MustParse("mellium.example"), []byte(secretA), conn)
	require.NoError(t, err)

	type message struct {
		XMLName xml.Name
		From    string `xml:"from,attr"`
		To      string `xml:"to,attr"`
		Body    string `xml:"body"`
	}
	got := make(chan message, 10)
	served := make(chan error, 1)
	go func() {
		served <- sess.Serve(xmpp.HandlerFunc(func(r xmlstream.TokenReadEncoder, start *xml.StartElement) error {
			var m message
			// r starts inside the element: put the start back for the decoder.
			if err := xml.NewTokenDecoder(xmlstream.MultiReader(xmlstream.Token(*start), r)).Decode(&m); err != nil {
				return err
			}
			got <- m
			return nil
		}))
	}()

	// mellium → our Link.
	body := xmlstream.Wrap(xmlstream.Token(xml.CharData("hello from mellium")), xml.StartElement{Name: xml.Name{Local: "body"}})
	require.NoError(t, sess.Send(ctx, stanza.Message{
		From: jid.MustParse("bot@mellium.example"),
		To:   jid.MustParse("bob@b.example"),
		Type: stanza.ChatMessage,
	}.Wrap(body)))
	st := hb.next(t)
	assert.Equal(t, "bot@mellium.example", st.From())
	assert.Equal(t, "bob@b.example", st.To())
	var m message
	require.NoError(t, st.Decode(&m))
	assert.Equal(t, "hello from mellium", m.Body)

	// our Link → mellium, built with mellium's stanza package.
	reply, err := xcp.NewStanza(stanza.Message{
		From: jid.MustParse("bob@b.example/desk"),
		To:   jid.MustParse("bot@mellium.example"),
		Type: stanza.ChatMessage,
	}.Wrap(xmlstream.Wrap(xmlstream.Token(xml.CharData("hello mellium")), xml.StartElement{Name: xml.Name{Local: "body"}})))
	require.NoError(t, err)
	send(t, b, reply)
	select {
	case m := <-got:
		assert.Equal(t, "message", m.XMLName.Local)
		assert.Equal(t, "bob@b.example/desk", m.From)
		assert.Equal(t, "hello mellium", m.Body)
	case err := <-served:
		t.Fatalf("mellium's Serve ended: %v", err)
	case <-time.After(5 * time.Second):
		t.Fatal("mellium received nothing")
	}

	require.NoError(t, sess.Close())
	select {
	case <-served:
	case <-time.After(5 * time.Second):
		t.Fatal("the router did not close its side")
	}
}

const prosodySecret = "prosody-component-secret-0123"

// TestProsodyLink connects our Link as an external component to a real
// Prosody and exchanges stanzas with a user logged in to it.
func TestProsodyLink(t *testing.T) {
	prosodytest.Require(t)
	s := prosodytest.Start(t, prosodytest.Config{
		Hosts:      []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw"}}},
		Components: []prosodytest.Component{{Domain: "comp.a.test", Secret: prosodySecret}},
	})
	h := newCollector()
	l := startLink(t, &xcp.Link{Name: "comp.a.test", Secret: prosodySecret, Addr: s.ComponentAddr().String(), Handler: h})
	ready(t, l)

	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	alice, err := s.Dial(ctx, "alice@a.test", "pw")
	require.NoError(t, err)
	defer alice.Close()

	// User → component.
	require.NoError(t, alice.Send(ctx, prosodytest.Message("bot@comp.a.test", "m1", "hello <component> & co")))
	st := nextNamed(t, h, "message")
	assert.Equal(t, alice.JID(), st.From())
	assert.Equal(t, "bot@comp.a.test", st.To())
	var body struct {
		Body string `xml:"body"`
	}
	require.NoError(t, st.Decode(&body))
	assert.Equal(t, "hello <component> & co", body.Body)

	// Component → user.
	send(t, l, msg(t, "bot@comp.a.test/x", alice.JID(), "hello-alice"))
	for {
		got, err := alice.Recv(ctx)
		require.NoError(t, err)
		if got.Name.Local != "message" {
			continue
		}
		assert.Equal(t, "bot@comp.a.test/x", got.Get("from"))
		assert.Contains(t, got.String(), "<body>hello-alice</body>")
		break
	}

	// An IQ to the server, answered by Prosody itself.
	ping, err := xcp.ParseStanza([]byte(`<iq type='get' id='ping1' from='comp.a.test' to='a.test'><ping xmlns='urn:xmpp:ping'/></iq>`))
	require.NoError(t, err)
	send(t, l, ping)
	res := nextNamed(t, h, "iq")
	assert.Equal(t, "result", res.Type())
	assert.Equal(t, "ping1", res.ID())
	assert.Equal(t, "a.test", res.From())

	// A burst, in order.
	const n = 200
	for i := range n {
		send(t, l, msg(t, "bot@comp.a.test", alice.JID(), "burst"+strings.Repeat("x", i%7)+string(rune('a'+i%26))))
	}
	for i := 0; i < n; {
		got, err := alice.Recv(ctx)
		require.NoError(t, err)
		if got.Name.Local == "message" {
			assert.Contains(t, got.String(), "burst"+strings.Repeat("x", i%7)+string(rune('a'+i%26))+"</body>")
			i++
		}
	}
}

// TestProsodyWrongSecret: Prosody refuses a wrong secret with
// <not-authorized/>, and the Link says so clearly.
func TestProsodyWrongSecret(t *testing.T) {
	prosodytest.Require(t)
	s := prosodytest.Start(t, prosodytest.Config{
		Hosts:      []prosodytest.Host{{Domain: "a.test"}},
		Components: []prosodytest.Component{{Domain: "comp.a.test", Secret: prosodySecret}},
	})
	l := startLink(t, &xcp.Link{Name: "comp.a.test", Secret: "wrong-secret-0123456789", Addr: s.ComponentAddr().String()})
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	err := l.Ready(ctx)
	require.ErrorIs(t, err, xcp.ErrNotAuthorized)
	assert.Contains(t, err.Error(), "secret differs")
}

func nextNamed(t *testing.T, c collector, name string) xcp.Stanza {
	t.Helper()
	for range 100 {
		if st := c.next(t); st.Name() == name {
			return st
		}
	}
	t.Fatalf("no <%s/> arrived", name)
	return xcp.Stanza{}
}

// TestProsodyRestart: Prosody goes away and comes back on the same
// address; the Link finds it again by itself and delivers what was queued
// meanwhile.
func TestProsodyRestart(t *testing.T) {
	prosodytest.Require(t)
	cfg := prosodytest.Config{
		Addr:       prosodytest.FreeLoopback(t, prosodytest.DefaultC2SPort, prosodytest.DefaultS2SPort, prosodytest.DefaultComponentPort),
		Hosts:      []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw"}}},
		Components: []prosodytest.Component{{Domain: "comp.a.test", Secret: prosodySecret}},
		Modules:    []string{"offline"}, // messages for alice wait until she logs in again
	}
	s1 := prosodytest.Start(t, cfg)
	l := &xcp.Link{Name: "comp.a.test", Secret: prosodySecret, Addr: s1.ComponentAddr().String()}
	w := watch(l)
	startLink(t, l)
	ready(t, l)

	s1.Stop()
	w.waitFor(t, xcp.StateDisconnected)
	for i := range 5 {
		send(t, l, msg(t, "bot@comp.a.test", "alice@a.test", "queued"+string(rune('0'+i))))
	}

	s2 := prosodytest.Start(t, cfg)
	ready(t, l)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	alice, err := s2.Dial(ctx, "alice@a.test", "pw")
	require.NoError(t, err)
	defer alice.Close()
	for i := 0; i < 5; {
		got, err := alice.Recv(ctx)
		require.NoError(t, err)
		if got.Name.Local == "message" {
			assert.Contains(t, got.String(), "<body>queued"+string(rune('0'+i))+"</body>")
			i++
		}
	}
}
