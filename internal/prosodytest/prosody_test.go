package prosodytest_test

import (
	"context"
	"crypto/sha1"
	"encoding/hex"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/xmppfed/xmppfed/internal/prosodytest"
	"github.com/xmppfed/xmppfed/internal/testpki"
	"github.com/xmppfed/xmppfed/srv/srvtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

func TestPingServer(t *testing.T) {
	t.Parallel()
	s := prosodytest.Start(t, prosodytest.Config{
		Hosts: []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw"}}},
	})
	ctx := ctxT(t, 10*time.Second)
	c, err := s.Dial(ctx, "alice@a.test", "pw")
	require.NoError(t, err)
	defer c.Close()
	assert.Equal(t, "alice@a.test/prosodytest", c.JID())

	require.NoError(t, c.Send(ctx, []byte(`<iq type='get' id='p1' to='a.test'><ping xmlns='urn:xmpp:ping'/></iq>`)))
	st, err := c.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, "iq", st.Name.Local)
	assert.Equal(t, "result", st.Get("type"))
	assert.Equal(t, "p1", st.Get("id"))
	assert.Equal(t, "a.test", st.Get("from"))
}

// security is how the two Prosodys of a federation test authenticate.
type security int

const (
	noTLS       security = iota // dialback over plain TCP
	tlsRequired                 // STARTTLS with self-signed certificates, then dialback
	external                    // STARTTLS with CA-signed certificates, then SASL EXTERNAL
)

// federate starts a.test and b.test on two loopback addresses, each
// resolving the other through its own hosts file.
func federate(t *testing.T, sec security) (a, b *prosodytest.Server) {
	addrA := prosodytest.FreeLoopback(t, 5269, 5222)
	addrB := prosodytest.FreeLoopback(t, 5269, 5222)
	cfgA := prosodytest.Config{
		Addr:    addrA,
		Hosts:   []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pa"}}},
		Resolve: map[string]netip.Addr{"b.test": addrB},
		Modules: []string{"admin_shell"}, // for s2s:show()
	}
	cfgB := prosodytest.Config{
		Addr:    addrB,
		Hosts:   []prosodytest.Host{{Domain: "b.test", Users: map[string]string{"bob": "pb"}}},
		Resolve: map[string]netip.Addr{"a.test": addrA},
	}
	switch sec {
	case tlsRequired:
		cfgA.RequireEncryption, cfgB.RequireEncryption = true, true
	case external:
		ca := testpki.NewCA(t)
		caFile := prosodytest.WriteCAFile(t, ca.Certificate())
		for _, cfg := range []*prosodytest.Config{&cfgA, &cfgB} {
			h := &cfg.Hosts[0]
			h.CertPEM, h.KeyPEM = prosodytest.EncodePEM(t, ca.Leaf(t, h.Domain))
			cfg.RequireEncryption, cfg.SecureAuth, cfg.CAFile = true, true, caFile
		}
	}
	return prosodytest.Start(t, cfgA), prosodytest.Start(t, cfgB)
}

func TestFederation(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name           string
		sec            security
		security, auth string // in the s2s:show() line of a's outbound link
	}{
		{"NoTLS", noTLS, "| insecure ", "|            | Completed"},
		{"TLSRequired", tlsRequired, "| TLSv1.3 ", "|            | Completed"},
		{"SASLExternal", external, "| TLSv1.3 ", "| Succeeded  | Not used"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			a, b := federate(t, tc.sec)
			ctx := ctxT(t, 15*time.Second)
			alice, err := a.Dial(ctx, "alice@a.test", "pa")
			require.NoError(t, err)
			defer alice.Close()
			bob, err := b.Dial(ctx, "bob@b.test", "pb")
			require.NoError(t, err)
			defer bob.Close()

			require.NoError(t, alice.Send(ctx, prosodytest.Message("bob@b.test", "m1", "hello <bob> & co")))
			st, err := bob.Recv(ctx)
			require.NoError(t, err)
			assert.Equal(t, "message", st.Name.Local)
			assert.Equal(t, "alice@a.test/prosodytest", st.Get("from"))
			var m struct {
				Body string `xml:"body"`
			}
			require.NoError(t, st.Decode(&m))
			assert.Equal(t, "hello <bob> & co", m.Body)

			// And back, over b's own outbound stream.
			require.NoError(t, bob.Send(ctx, prosodytest.Message("alice@a.test", "m2", "hi")))
			st, err = alice.Recv(ctx)
			require.NoError(t, err)
			assert.Equal(t, "m2", st.Get("id"))

			// Prosody's own view of its outbound link to b.test.
			links, err := a.Shell(ctx, "s2s:show()")
			require.NoError(t, err)
			var out string
			for line := range strings.Lines(links) {
				if strings.HasPrefix(line, "s2sout") {
					out = line
				}
			}
			require.NotEmpty(t, out, "no outbound link in:\n%s", links)
			assert.Contains(t, out, tc.security)
			assert.Contains(t, out, tc.auth)
		})
	}
}

// TestComponent connects an XEP-0114 component to Prosody by hand and has a
// user message it.
func TestComponent(t *testing.T) {
	t.Parallel()
	s := prosodytest.Start(t, prosodytest.Config{
		Hosts:      []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw"}}},
		Components: []prosodytest.Component{{Domain: "comp.a.test", Secret: "s3cret"}},
	})
	ctx := ctxT(t, 10*time.Second)
	require.True(t, s.ComponentAddr().IsValid())

	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", s.ComponentAddr().String())
	require.NoError(t, err)
	defer conn.Close()
	dl, _ := ctx.Deadline()
	require.NoError(t, conn.SetDeadline(dl))
	_, err = io.WriteString(conn, `<stream:stream xmlns='jabber:component:accept' xmlns:stream='http://etherx.jabber.org/streams' to='comp.a.test'>`)
	require.NoError(t, err)
	dec := xml.NewDecoder(conn)
	var id string
	for id == "" {
		tok, err := dec.Token()
		require.NoError(t, err)
		if se, ok := tok.(xml.StartElement); ok && se.Name.Local == "stream" {
			for _, a := range se.Attr {
				if a.Name.Local == "id" {
					id = a.Value
				}
			}
			require.NotEmpty(t, id, "stream header without id")
		}
	}
	sum := sha1.Sum([]byte(id + "s3cret"))
	_, err = fmt.Fprintf(conn, "<handshake>%s</handshake>", hex.EncodeToString(sum[:]))
	require.NoError(t, err)
	next := func() xml.StartElement {
		for {
			tok, err := dec.Token()
			require.NoError(t, err)
			if se, ok := tok.(xml.StartElement); ok {
				return se
			}
		}
	}
	hs := next()
	require.Equal(t, "handshake", hs.Name.Local, "Prosody refused the handshake; log:\n%s", s.Log())
	require.NoError(t, dec.Skip())

	alice, err := s.Dial(ctx, "alice@a.test", "pw")
	require.NoError(t, err)
	defer alice.Close()
	require.NoError(t, alice.Send(ctx, prosodytest.Message("bot@comp.a.test", "c1", "to the component")))
	var msg struct {
		XMLName xml.Name `xml:"message"`
		From    string   `xml:"from,attr"`
		To      string   `xml:"to,attr"`
		Body    string   `xml:"body"`
	}
	start := next()
	require.NoError(t, dec.DecodeElement(&msg, &start))
	assert.Equal(t, "alice@a.test/prosodytest", msg.From)
	assert.Equal(t, "bot@comp.a.test", msg.To)
	assert.Equal(t, "to the component", msg.Body)

	// The component answers; Prosody routes it to alice.
	_, err = io.WriteString(conn, `<message from='bot@comp.a.test' to='alice@a.test/prosodytest' id='c2'><body>pong</body></message>`)
	require.NoError(t, err)
	st, err := alice.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, "c2", st.Get("id"))
	assert.Equal(t, "bot@comp.a.test", st.Get("from"))
}

// TestNameserver has a.test find b.test through SRV records served by an
// in-process DNS server on a high port, with b's S2S on a non-standard
// port; b finds a through its hosts file.
func TestNameserver(t *testing.T) {
	t.Parallel()
	const bPort = 15269
	addrA := prosodytest.FreeLoopback(t, 5269, 5222)
	addrB := prosodytest.FreeLoopback(t, bPort, 5222)
	dns := srvtest.New(t, fmt.Sprintf(`
_xmpp-server._tcp.b.test. 60 IN SRV 0 0 %d xmpp.b.test.
xmpp.b.test. 60 IN A %s
`, bPort, addrB))
	ns, err := netip.ParseAddrPort(dns.Addr())
	require.NoError(t, err)
	require.NotEqual(t, uint16(53), ns.Port())

	a := prosodytest.Start(t, prosodytest.Config{
		Addr:       addrA,
		Hosts:      []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pa"}}},
		Nameserver: ns,
	})
	b := prosodytest.Start(t, prosodytest.Config{
		Addr:    addrB,
		S2SPort: bPort,
		Hosts:   []prosodytest.Host{{Domain: "b.test", Users: map[string]string{"bob": "pb"}}},
		Resolve: map[string]netip.Addr{"a.test": addrA},
	})
	ctx := ctxT(t, 15*time.Second)
	alice, err := a.Dial(ctx, "alice@a.test", "pa")
	require.NoError(t, err)
	defer alice.Close()
	bob, err := b.Dial(ctx, "bob@b.test", "pb")
	require.NoError(t, err)
	defer bob.Close()

	require.NoError(t, alice.Send(ctx, prosodytest.Message("bob@b.test", "n1", "via SRV")))
	st, err := bob.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, "n1", st.Get("id"))
	assert.Positive(t, dns.Queries("_xmpp-server._tcp.b.test.", 33), "Prosody did not ask the DNS server for the SRV record")
}

// TestManyMessages sends 1,000 messages each way across the S2S hop at
// once, checking order and that Recv keeps up.
func TestManyMessages(t *testing.T) {
	t.Parallel()
	const n = 1000
	a, b := federate(t, noTLS)
	ctx := ctxT(t, 20*time.Second)
	alice, err := a.Dial(ctx, "alice@a.test", "pa")
	require.NoError(t, err)
	defer alice.Close()
	bob, err := b.Dial(ctx, "bob@b.test", "pb")
	require.NoError(t, err)
	defer bob.Close()

	begin := time.Now()
	type side struct {
		from, to *prosodytest.Client
		toJID    string
	}
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for _, sd := range []side{{alice, bob, "bob@b.test"}, {bob, alice, "alice@a.test"}} {
		wg.Go(func() {
			for i := range n {
				if err := sd.from.Send(ctx, prosodytest.Message(sd.toJID, strconv.Itoa(i), "payload")); err != nil {
					errs <- err
					return
				}
			}
		})
		wg.Go(func() {
			for i := range n {
				st, err := sd.to.Recv(ctx)
				if err != nil {
					errs <- fmt.Errorf("after %d messages: %w", i, err)
					return
				}
				if st.Name.Local != "message" || st.Get("id") != strconv.Itoa(i) {
					errs <- fmt.Errorf("message %d: got %s", i, st)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		require.NoError(t, err)
	}
	t.Logf("%d messages each way in %v", n, time.Since(begin))
}

func TestLoginErrors(t *testing.T) {
	t.Parallel()
	s := prosodytest.Start(t, prosodytest.Config{
		Hosts: []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw"}}},
	})
	ctx := ctxT(t, 10*time.Second)

	_, err := s.Dial(ctx, "alice@a.test", "wrong")
	require.ErrorIs(t, err, prosodytest.ErrAuth)
	var se *prosodytest.SASLError
	require.ErrorAs(t, err, &se)
	assert.Equal(t, "not-authorized", se.Condition)

	_, err = s.Dial(ctx, "nobody@a.test", "pw")
	require.ErrorIs(t, err, prosodytest.ErrAuth)

	_, err = s.Dial(ctx, "alice@elsewhere.test", "pw")
	require.ErrorIs(t, err, prosodytest.ErrStream)
	var stErr *prosodytest.StreamError
	require.ErrorAs(t, err, &stErr)
	assert.Equal(t, "host-unknown", stErr.Condition)
	assert.Contains(t, err.Error(), "Config.Hosts")

	_, err = s.Dial(ctx, "not-a-jid", "pw")
	require.ErrorIs(t, err, prosodytest.ErrInvalidConfig)

	expired, cancel := context.WithCancel(ctx)
	cancel()
	_, err = s.Dial(expired, "alice@a.test", "pw")
	require.ErrorIs(t, err, context.Canceled)

	// A second resource of the same user and a custom resource both work,
	// and the server stopping ends Recv with an error.
	c1, err := s.Dial(ctx, "alice@a.test/one", "pw")
	require.NoError(t, err)
	defer c1.Close()
	assert.Equal(t, "alice@a.test/one", c1.JID())
	s.Stop()
	for range 10 { // presence of a departing resource may come first
		_, err = c1.Recv(ctx)
		if err != nil {
			break
		}
	}
	// Prosody sends <system-shutdown/>, but may close the socket before
	// it is flushed.
	var shutdown *prosodytest.StreamError
	if !errors.As(err, &shutdown) || shutdown.Condition != "system-shutdown" {
		require.ErrorIs(t, err, io.ErrUnexpectedEOF)
	}
	select {
	case <-s.Exited():
	default:
		t.Fatal("Exited not closed after Stop")
	}
	require.NoError(t, c1.Close())
	require.NoError(t, c1.Close(), "Close is idempotent")
	_, err = c1.Recv(ctx)
	require.Error(t, err)
}

func TestRecvContext(t *testing.T) {
	t.Parallel()
	s := prosodytest.Start(t, prosodytest.Config{
		Hosts: []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw", "bob": "pw"}}},
	})
	ctx := ctxT(t, 10*time.Second)
	alice, err := s.Dial(ctx, "alice@a.test", "pw")
	require.NoError(t, err)
	defer alice.Close()

	// Nothing arrives: Recv gives up with its context and the client stays usable.
	short, cancel := context.WithTimeout(ctx, 50*time.Millisecond)
	defer cancel()
	_, err = alice.Recv(short)
	require.ErrorIs(t, err, context.DeadlineExceeded)

	// A message sent while bob was offline is kept and delivered when he
	// logs in (mod_offline), and Dial hands it to Recv.
	require.NoError(t, alice.Send(ctx, prosodytest.Message("bob@a.test", "off1", "while you were out")))
	require.NoError(t, alice.Send(ctx, []byte(`<iq type='get' id='sync' to='a.test'><ping xmlns='urn:xmpp:ping'/></iq>`)))
	st, err := alice.Recv(ctx)
	require.NoError(t, err)
	require.Equal(t, "sync", st.Get("id"))
	bob, err := s.Dial(ctx, "bob@a.test", "pw")
	require.NoError(t, err)
	defer bob.Close()
	st, err = bob.Recv(ctx)
	require.NoError(t, err)
	assert.Equal(t, "off1", st.Get("id"))
	assert.Contains(t, string(st.Inner), "while you were out")
}

func TestLog(t *testing.T) {
	t.Parallel()
	s := prosodytest.Start(t, prosodytest.Config{
		Hosts: []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw"}}},
	})
	ctx := ctxT(t, 10*time.Second)
	assert.Contains(t, s.Log(), "Hello and welcome to Prosody")
	c, err := s.Dial(ctx, "alice@a.test", "pw")
	require.NoError(t, err)
	require.NoError(t, s.WaitLog(ctx, "Authenticated as alice@a.test"))
	require.NoError(t, c.Close())

	short, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
	defer cancel()
	require.ErrorIs(t, s.WaitLog(short, "never logged"), context.DeadlineExceeded)

	cfg, err := os.ReadFile(s.ConfigPath())
	require.NoError(t, err)
	assert.Contains(t, string(cfg), `VirtualHost "a.test"`)
	assert.Equal(t, filepath.Dir(s.ConfigPath()), s.Dir())
	assert.True(t, s.Addr().IsLoopback())
	assert.Equal(t, netip.AddrPortFrom(s.Addr(), 5222), s.C2SAddr())
	assert.Equal(t, netip.AddrPortFrom(s.Addr(), 5269), s.S2SAddr())
	assert.False(t, s.ComponentAddr().IsValid())
}
