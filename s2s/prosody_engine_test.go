package s2s_test

import (
	"context"
	"encoding/xml"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/prosodytest"
	"github.com/xmppfed/xmppfed/s2s"
	"github.com/xmppfed/xmppfed/s2s/s2stest"
	"github.com/xmppfed/xmppfed/tlsmode"
)

// Names of the interop tests' domains and user. .example rather than .test:
// libunbound answers .test itself.
const (
	peOurs     = "xmppfed.example"
	peProsody  = "p.example"
	peAlice    = "alice@" + peProsody
	peAlicePW  = "pw"
	peEcho     = "echo@" + peOurs
	peMessages = 1000
)

// peNet is our domain, served by an s2s.Server and Pool from
// s2stest, federated with a real Prosody whose user alice is logged in over
// c2s.
type peNet struct {
	n     *s2stest.Net
	ours  *s2stest.Domain
	p     *prosodytest.Server
	alice *prosodytest.Client
}

// peOptions choose the Prosody side: with ca, its certificate
// is issued by the Net's CA and it requires certificates chaining to that
// CA (s2s_secure_auth, so SASL EXTERNAL both ways); without, it has a
// self-signed certificate and both sides fall back to dialback.
type peOptions struct {
	ca     bool
	policy s2s.PolicyConfig // ours; Security is forced to Required
}

func startPE(t *testing.T, o peOptions) *peNet {
	t.Helper()
	n := s2stest.New(t)
	o.policy.Security = tlsmode.Required
	ours := n.AddDomain(peOurs, s2stest.Options{Policy: o.policy})

	ns, err := netip.ParseAddrPort(n.DNS().Addr())
	require.NoError(t, err)
	host := prosodytest.Host{Domain: peProsody, Users: map[string]string{"alice": peAlicePW}}
	cfg := prosodytest.Config{
		Hosts:             []prosodytest.Host{host},
		RequireEncryption: true,
		Nameserver:        ns,
	}
	if o.ca {
		cfg.Hosts[0].CertPEM, cfg.Hosts[0].KeyPEM = prosodytest.EncodePEM(t, n.Certificate(peProsody))
		cfg.SecureAuth = true
		cfg.CAFile = prosodytest.WriteCAFile(t, n.CACertificate())
	}
	p := prosodytest.Start(t, cfg)
	s2sAddr := p.S2SAddr()
	n.Publish(peProsody, net.TCPAddrFromAddrPort(s2sAddr), nil)
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("Prosody log:\n%s", tail(p.Log()))
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	alice, err := p.Dial(ctx, peAlice, peAlicePW)
	require.NoError(t, err)
	t.Cleanup(func() { alice.Close() })
	return &peNet{n: n, ours: ours, p: p, alice: alice}
}

// recvUntil returns the first stanza alice receives within timeout that
// match accepts, skipping (and logging) at most 100 others.
func (e *peNet) recvUntil(t *testing.T, timeout time.Duration, what string, match func(prosodytest.Stanza) bool) prosodytest.Stanza {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for range 100 {
		st, err := e.alice.Recv(ctx)
		require.NoError(t, err, "alice waiting for %s", what)
		if match(st) {
			return st
		}
		t.Logf("alice skips %s", st)
	}
	t.Fatalf("alice: no %s among 100 stanzas", what)
	return prosodytest.Stanza{}
}

// peSeq extracts the sequence number from a body "<prefix> <n>".
func peSeq(body, prefix string) (int, bool) {
	rest, ok := strings.CutPrefix(body, prefix+" ")
	if !ok {
		return 0, false
	}
	i, err := strconv.Atoi(rest)
	return i, err == nil
}

// peBody returns the text of a stanza's <body/> child.
func peBody(raw []byte) string {
	var m struct {
		Body string `xml:"body"`
	}
	if err := (prosodytest.Stanza{Raw: raw}).Decode(&m); err != nil {
		return ""
	}
	return m.Body
}

// peStream returns the one connected stream in infos in direction dir with
// Prosody that carries stanzas (not a verify-only one).
func peStream(t *testing.T, infos []s2s.Info, dir s2s.Direction) s2s.Info {
	t.Helper()
	var found []s2s.Info
	for _, in := range infos {
		if in.Direction == dir && in.Remote == peProsody && in.State == s2s.Connected && !in.VerifyOnly {
			found = append(found, in)
		}
	}
	require.Len(t, found, 1, "%s streams with %s in %+v", dir, peProsody, infos)
	return found[0]
}

// TestProsodyEngine1000Messages: a Prosody user sends 1,000 messages to a
// handler on our domain over Prosody's S2S stream to our Server, and our
// Pool sends 1,000 back to her; none lost or duplicated either way, with
// security mode TLS required. Once with Prosody's self-signed certificate
// (both directions authenticated by dialback), once with certificates from
// a CA both sides trust and s2s_secure_auth (SASL EXTERNAL both ways).
func TestProsodyEngine1000Messages(t *testing.T) {
	tests := []struct {
		name       string
		ca         bool
		wantAuth   s2s.AuthMethod
		wantCertOK bool
		// ordered: Prosody delivers alice's messages in the order she
		// sent them. Prosody 0.12 does not over SASL EXTERNAL: between its
		// <success/> and the restarted stream's features it writes new
		// stanzas at once, ahead of those queued during setup (seen in its
		// debug log: "sending 235 queued stanzas" after in-235…in-280).
		ordered bool
	}{
		{name: "self-signed dialback", wantAuth: s2s.AuthDialback, ordered: true},
		{name: "CA SASL EXTERNAL", ca: true, wantAuth: s2s.AuthExternal, wantCertOK: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			prosodytest.Require(t)
			e := startPE(t, peOptions{ca: tt.ca})
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()

			// Alice → our handler, over c2s and Prosody's S2S stream. The
			// stanzas are written in batches so that the Prosody c2s reader
			// sees a steady stream rather than 1,000 tiny writes.
			start := time.Now()
			const batch = 50
			for i := 0; i < peMessages; i += batch {
				var b []byte
				for j := i; j < min(i+batch, peMessages); j++ {
					b = append(b, prosodytest.Message(peEcho, "in-"+strconv.Itoa(j), "in "+strconv.Itoa(j))...)
				}
				require.NoError(t, e.alice.Send(ctx, b))
			}
			seen := make([]bool, peMessages)
			outOfOrder, last := 0, -1
			var inFirst, outFirst time.Duration // stream setup included
			for got := 0; got < peMessages; {
				st, err := e.ours.Inbox.Receive(ctx)
				require.NoError(t, err, "after %d of %d messages from alice", got, peMessages)
				if got == 0 {
					inFirst = time.Since(start)
				}
				require.Equal(t, "message", st.Name, "%s", st.XML)
				require.Empty(t, s2stest.ErrorCondition(st), "%s", st.XML)
				assert.Equal(t, peProsody, st.From.Domainpart())
				assert.Equal(t, peEcho, st.To.String())
				i, ok := peSeq(peBody(st.XML), "in")
				require.True(t, ok, "unexpected body in %s", st.XML)
				require.True(t, i >= 0 && i < peMessages, "sequence number %d", i)
				require.False(t, seen[i], "message %d delivered twice", i)
				seen[i] = true
				if i < last {
					outOfOrder++
					t.Logf("message %d arrived after %d", i, last)
				}
				last = i
				got++
			}
			inElapsed := time.Since(start)
			if tt.ordered {
				assert.Zero(t, outOfOrder, "messages of one stream arrive in order")
			}

			// Our Pool → alice, over a new outbound stream.
			start = time.Now()
			done := make(chan error, 1)
			go func() {
				for i := range peMessages {
					if err := e.ours.Send(ctx, s2stest.Message(peEcho, peAlice, "out "+strconv.Itoa(i))); err != nil {
						done <- fmt.Errorf("send %d: %w", i, err)
						return
					}
				}
				done <- nil
			}()
			seen = make([]bool, peMessages)
			outOfOrder, last = 0, -1
			for got := 0; got < peMessages; {
				st, err := e.alice.Recv(ctx)
				require.NoError(t, err, "after %d of %d messages to alice", got, peMessages)
				if got == 0 {
					outFirst = time.Since(start)
				}
				if st.Name.Local != "message" {
					t.Logf("alice skips %s", st)
					continue
				}
				require.NotEqual(t, "error", st.Get("type"), "%s", st)
				assert.Equal(t, peEcho, st.Get("from"))
				i, ok := peSeq(peBody(st.Raw), "out")
				require.True(t, ok, "unexpected body in %s", st)
				require.True(t, i >= 0 && i < peMessages, "sequence number %d", i)
				require.False(t, seen[i], "message %d delivered twice", i)
				seen[i] = true
				if i < last {
					outOfOrder++
					t.Logf("message %d arrived after %d", i, last)
				}
				last = i
				got++
			}
			outElapsed := time.Since(start)
			// Our Pool keeps the order of one sender's stanzas, queue
			// flush included.
			assert.Zero(t, outOfOrder, "messages from our Pool arrive in order")
			require.NoError(t, <-done)
			// Nothing bounced, nothing else delivered.
			assert.Zero(t, e.ours.Inbox.Len(), "stanzas in our Inbox after the run (bounces?)")

			// Informational: the machine is shared and -race slows us, not
			// Prosody.
			t.Logf("alice → %s: %d messages in %s (%.0f/s), the first after %s", peOurs, peMessages,
				inElapsed.Round(time.Millisecond), float64(peMessages)/inElapsed.Seconds(), inFirst.Round(time.Millisecond))
			t.Logf("%s → alice: %d messages in %s (%.0f/s), the first after %s", peOurs, peMessages,
				outElapsed.Round(time.Millisecond), float64(peMessages)/outElapsed.Seconds(), outFirst.Round(time.Millisecond))

			status := e.ours.Server.Status()
			in := peStream(t, status, s2s.Inbound)
			out := peStream(t, status, s2s.Outbound)
			for _, info := range []s2s.Info{in, out} {
				assert.True(t, info.TLS, "%s stream without TLS", info.Direction)
				assert.Equal(t, tt.wantAuth, info.Auth, "%s stream's auth method", info.Direction)
				assert.Equal(t, peOurs, info.Local)
				if tt.wantCertOK {
					assert.NoError(t, info.CertError, "%s stream: Prosody's CA-issued certificate", info.Direction)
				} else {
					assert.ErrorIs(t, info.CertError, tlsmode.ErrCertUnknownIssuer, "%s stream: Prosody's certificate is self-signed", info.Direction)
				}
			}
			assert.GreaterOrEqual(t, in.StanzasIn, uint64(peMessages), "inbound stream's stanzas in")
			assert.GreaterOrEqual(t, out.StanzasOut, uint64(peMessages), "outbound stream's stanzas out")
			assert.Greater(t, in.BytesIn, in.StanzasIn*50, "inbound bytes in")
			assert.Greater(t, out.BytesOut, out.StanzasOut*50, "outbound bytes out")

			c := e.ours.Server.Counters()
			assert.GreaterOrEqual(t, c.StanzasIn, uint64(peMessages))
			assert.GreaterOrEqual(t, c.StanzasOut, uint64(peMessages))
			assert.Empty(t, c.Bounced)
		})
	}
}

// TestProsodyEnginePing: a Prosody user pings our domain (XEP-0199) and
// asks it for disco#info (XEP-0030). Prosody carries the iqs over its S2S
// stream to our Server, whose builtins answer them through our Pool, over a
// new outbound stream to Prosody.
func TestProsodyEnginePing(t *testing.T) {
	prosodytest.Require(t)
	e := startPE(t, peOptions{})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	require.NoError(t, e.alice.Send(ctx, []byte("<iq type='get' to='"+peOurs+"' id='ping-1'><ping xmlns='urn:xmpp:ping'/></iq>")))
	pong := e.recvUntil(t, 10*time.Second, "the pong", func(st prosodytest.Stanza) bool {
		return st.Name.Local == "iq" && st.Get("id") == "ping-1"
	})
	assert.Equal(t, "result", pong.Get("type"), "%s", pong)
	assert.Equal(t, peOurs, pong.Get("from"))
	assert.Equal(t, e.alice.JID(), pong.Get("to"))

	require.NoError(t, e.alice.Send(ctx, []byte("<iq type='get' to='"+peOurs+"' id='disco-1'><query xmlns='http://jabber.org/protocol/disco#info'/></iq>")))
	disco := e.recvUntil(t, 10*time.Second, "the disco#info result", func(st prosodytest.Stanza) bool {
		return st.Name.Local == "iq" && st.Get("id") == "disco-1"
	})
	assert.Equal(t, "result", disco.Get("type"), "%s", disco)
	assert.Equal(t, peOurs, disco.Get("from"))
	var info struct {
		Query struct {
			XMLName    xml.Name
			Identities []struct {
				Category string `xml:"category,attr"`
				Type     string `xml:"type,attr"`
			} `xml:"identity"`
			Features []struct {
				Var string `xml:"var,attr"`
			} `xml:"feature"`
		} `xml:"query"`
	}
	require.NoError(t, disco.Decode(&info), "%s", disco)
	assert.Equal(t, s2s.NSDiscoInfo, info.Query.XMLName.Space)
	require.NotEmpty(t, info.Query.Identities, "%s", disco)
	assert.Equal(t, "server", info.Query.Identities[0].Category)
	var features []string
	for _, f := range info.Query.Features {
		features = append(features, f.Var)
	}
	assert.Contains(t, features, s2s.NSPing)

	// The answers went out through our Pool, not back down the inbound
	// stream (Prosody 0.12 does not offer XEP-0288 bidirectional streams).
	status := e.ours.Server.Status()
	out := peStream(t, status, s2s.Outbound)
	assert.GreaterOrEqual(t, out.StanzasOut, uint64(2), "the pong and the disco#info result")
	assert.True(t, out.TLS)
	in := peStream(t, status, s2s.Inbound)
	assert.GreaterOrEqual(t, in.StanzasIn, uint64(2), "the ping and the disco#info query")
	assert.Zero(t, e.ours.Inbox.Len(), "builtins do not reach the Handler")
}

// TestProsodyEngineBounce: while our privacy policy denies Prosody's
// domain, our Server refuses Prosody's dialback, so Prosody returns
// alice's message to her as an error; and our Pool bounces what we send to
// Prosody's domain with <service-unavailable/> without connecting.
func TestProsodyEngineBounce(t *testing.T) {
	prosodytest.Require(t)
	e := startPE(t, peOptions{policy: s2s.PolicyConfig{
		Privacy: s2s.PrivacyDenyList,
		Deny:    []string{peProsody},
	}})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()

	require.NoError(t, e.alice.Send(ctx, prosodytest.Message(peEcho, "denied-1", "are you there?")))
	bounce := e.recvUntil(t, 10*time.Second, "the bounce of her message", func(st prosodytest.Stanza) bool {
		return st.Name.Local == "message" && st.Get("id") == "denied-1"
	})
	assert.Equal(t, "error", bounce.Get("type"), "%s", bounce)
	// Prosody 0.12 answers in the name of the original recipient, with
	// by='p.example' on the error.
	assert.Equal(t, peEcho, bounce.Get("from"), "%s", bounce)
	var errEl struct {
		Error struct {
			Type     string `xml:"type,attr"`
			By       string `xml:"by,attr"`
			Children []struct {
				XMLName xml.Name
				Text    string `xml:",chardata"`
			} `xml:",any"`
		} `xml:"error"`
	}
	require.NoError(t, bounce.Decode(&errEl), "%s", bounce)
	var cond, text string
	for _, ch := range errEl.Error.Children {
		if ch.XMLName.Space != "urn:ietf:params:xml:ns:xmpp-stanzas" {
			continue
		}
		if ch.XMLName.Local == "text" {
			text = ch.Text
		} else {
			cond = ch.XMLName.Local
		}
	}
	t.Logf("Prosody's bounce: type=%s by=%s condition=%s text=%q", errEl.Error.Type, errEl.Error.By, cond, text)
	assert.NotEmpty(t, cond, "a defined condition in %s", bounce)
	assert.NotEmpty(t, errEl.Error.Type, "an error type in %s", bounce)
	// The refusal was ours, by policy, not a failure to connect.
	assert.Contains(t, e.n.Log(), "dialback refused by federation policy")
	assert.Zero(t, e.ours.Inbox.Len(), "the denied domain's message reached our Handler")
	c := e.ours.Server.Counters()
	assert.Zero(t, c.InboundOpened, "no inbound stream authorized for a denied domain")
	assert.Zero(t, c.StanzasIn)

	require.NoError(t, e.ours.Send(ctx, s2stest.Message(peEcho, peAlice, "hello?")))
	st := e.ours.Inbox.Next(t, 5*time.Second)
	assert.Equal(t, "service-unavailable", s2stest.ErrorCondition(st), "%s", st.XML)
	assert.Equal(t, peEcho, st.To.String())
	assert.Equal(t, peAlice, st.From.String())
	for _, info := range e.ours.Server.Status() {
		assert.NotEqual(t, s2s.Outbound, info.Direction, "no outbound stream to a denied domain: %+v", info)
	}
	assert.Equal(t, uint64(1), e.ours.Server.Counters().Bounced["service-unavailable"])
}
