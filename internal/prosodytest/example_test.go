package prosodytest_test

import (
	"context"
	"fmt"
	"net/netip"
	"testing"
	"time"

	"github.com/xmppfed/xmppfed/internal/prosodytest"
)

// A test federating two Prosody servers and chatting across them. Each
// finds the other through its own hosts file, so both listen on 5269, each
// on its own loopback address. (Not run here: it needs a *testing.T.)
func ExampleStart() {
	var t *testing.T // the test's own
	addrA := prosodytest.FreeLoopback(t, 5269, 5222)
	addrB := prosodytest.FreeLoopback(t, 5269, 5222)
	a := prosodytest.Start(t, prosodytest.Config{
		Addr:    addrA,
		Hosts:   []prosodytest.Host{{Domain: "a.test", Users: map[string]string{"alice": "pw"}}},
		Resolve: map[string]netip.Addr{"b.test": addrB},
	})
	b := prosodytest.Start(t, prosodytest.Config{
		Addr:    addrB,
		Hosts:   []prosodytest.Host{{Domain: "b.test", Users: map[string]string{"bob": "pw"}}},
		Resolve: map[string]netip.Addr{"a.test": addrA},
	})

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	alice, err := a.Dial(ctx, "alice@a.test", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer alice.Close()
	bob, err := b.Dial(ctx, "bob@b.test", "pw")
	if err != nil {
		t.Fatal(err)
	}
	defer bob.Close()

	if err := alice.Send(ctx, prosodytest.Message("bob@b.test", "m1", "hello")); err != nil {
		t.Fatal(err)
	}
	msg, err := bob.Recv(ctx)
	if err != nil {
		t.Fatal(err, a.Log())
	}
	fmt.Println(msg.Get("from"), string(msg.Inner))
}

// Our Go server as a.test, Prosody as b.test: Prosody must reach a.test on
// port 5269 at the Go server's address, and the Go server finds b.test at
// Prosody's (through srv static routes or an srvtest zone). With an srvtest
// server as Config.Nameserver instead, SRV records can name any port.
func ExampleConfig_goPeer() {
	var t *testing.T
	goAddr := prosodytest.FreeLoopback(t, 5269) // the Go server listens here
	p := prosodytest.Start(t, prosodytest.Config{
		Hosts:             []prosodytest.Host{{Domain: "b.test"}},
		Resolve:           map[string]netip.Addr{"a.test": goAddr},
		RequireEncryption: true, // self-signed certificate, dialback
	})
	fmt.Println("Prosody's S2S listener:", p.S2SAddr())
}

func ExampleMessage() {
	fmt.Printf("%s\n", prosodytest.Message("bob@b.test", "m1", "1 < 2 & 'so on'"))
	// Output:
	// <message type='chat' to='bob@b.test' id='m1'><body>1 &lt; 2 &amp; &#39;so on&#39;</body></message>
}
