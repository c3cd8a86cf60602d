package srvtest_test

import (
	"context"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/xmppfed/xmppfed/srv/srvtest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const zone = `
test.                     300 IN SOA ns.test. admin.test. 1 3600 600 86400 60
_xmpp-server._tcp.a.test. 300 IN SRV 0 0 5269 xmpp.a.test.
xmpp.a.test.              300 IN A   127.0.0.1
xmpp.a.test.                  IN AAAA ::1
alias.a.test.             300 IN CNAME xmpp.a.test.
loop.a.test.              300 IN CNAME loop.a.test.
`

// ask sends one query to s over network ("udp" or "tcp"); ednsSize 0 means
// no EDNS0.
func ask(t *testing.T, s *srvtest.Server, network, name string, qtype uint16, ednsSize uint16) *dns.Msg {
	t.Helper()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	if ednsSize > 0 {
		m.SetEdns0(ednsSize, false)
	}
	c := dns.Client{Net: network, Timeout: 2 * time.Second, UDPSize: 65000}
	resp, _, err := c.Exchange(m, s.Addr())
	require.NoError(t, err)
	return resp
}

func TestAuthoritativeAnswers(t *testing.T) {
	s := srvtest.New(t, zone)
	tests := []struct {
		name      string
		qtype     uint16
		rcode     int
		answers   []string // RR types in order
		soa       bool
		wantValue string
	}{
		{name: "_xmpp-server._tcp.a.test.", qtype: dns.TypeSRV, rcode: dns.RcodeSuccess, answers: []string{"SRV"}, wantValue: "xmpp.a.test."},
		{name: "XMPP.A.TEST.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answers: []string{"A"}, wantValue: "127.0.0.1"},
		{name: "xmpp.a.test.", qtype: dns.TypeAAAA, rcode: dns.RcodeSuccess, answers: []string{"AAAA"}, wantValue: "::1"},
		{name: "xmpp.a.test.", qtype: dns.TypeMX, rcode: dns.RcodeSuccess, soa: true},  // NODATA
		{name: "_tcp.a.test.", qtype: dns.TypeSRV, rcode: dns.RcodeSuccess, soa: true}, // empty non-terminal
		{name: "a.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, soa: true},        // empty non-terminal
		{name: "nope.a.test.", qtype: dns.TypeA, rcode: dns.RcodeNameError, soa: true}, // NXDOMAIN
		{name: "nope.other.", qtype: dns.TypeA, rcode: dns.RcodeNameError},             // no SOA above
		{name: "alias.a.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answers: []string{"CNAME", "A"}},
		{name: "alias.a.test.", qtype: dns.TypeCNAME, rcode: dns.RcodeSuccess, answers: []string{"CNAME"}},
		{name: "loop.a.test.", qtype: dns.TypeA, rcode: dns.RcodeSuccess, answers: []string{"CNAME"}},
	}
	for _, tt := range tests {
		for _, network := range []string{"udp", "tcp"} {
			t.Run(network+" "+tt.name+" "+dns.TypeToString[tt.qtype], func(t *testing.T) {
				resp := ask(t, s, network, tt.name, tt.qtype, 1232)
				assert.True(t, resp.Authoritative, "AA bit")
				assert.True(t, resp.Response)
				assert.False(t, resp.Truncated)
				assert.Equal(t, dns.RcodeToString[tt.rcode], dns.RcodeToString[resp.Rcode])
				var types []string
				for _, rr := range resp.Answer {
					types = append(types, dns.TypeToString[rr.Header().Rrtype])
				}
				assert.Equal(t, tt.answers, types)
				if tt.soa {
					require.Len(t, resp.Ns, 1)
					assert.Equal(t, "test.", resp.Ns[0].Header().Name)
				} else {
					assert.Empty(t, resp.Ns)
				}
				if tt.wantValue != "" {
					assert.Contains(t, resp.Answer[0].String(), tt.wantValue)
				}
				require.NotNil(t, resp.IsEdns0(), "EDNS0 query gets an OPT back")
			})
		}
	}
	assert.Equal(t, 2, s.Queries("xmpp.a.test", dns.TypeA), "case-insensitive count, UDP and TCP")
	assert.Equal(t, 2*len(tests), s.TotalQueries())
}

func TestDefaultTTL(t *testing.T) {
	s := srvtest.New(t, zone)
	resp := ask(t, s, "udp", "xmpp.a.test.", dns.TypeAAAA, 0)
	require.Len(t, resp.Answer, 1)
	assert.Equal(t, uint32(srvtest.DefaultTTL), resp.Answer[0].Header().Ttl)
	assert.Nil(t, resp.IsEdns0(), "no OPT for a query without one")
}

func TestFaults(t *testing.T) {
	s := srvtest.New(t, zone)
	z := s.Zone()
	name := "_xmpp-server._tcp.a.test."

	z.SetFault(name, dns.TypeSRV, srvtest.ServFail)
	assert.Equal(t, dns.RcodeServerFailure, ask(t, s, "udp", name, dns.TypeSRV, 1232).Rcode)
	z.SetFault(name, dns.TypeSRV, srvtest.Refused)
	assert.Equal(t, dns.RcodeRefused, ask(t, s, "udp", name, dns.TypeSRV, 1232).Rcode)

	z.SetFault(name, dns.TypeSRV, srvtest.Truncate)
	resp := ask(t, s, "udp", name, dns.TypeSRV, 1232)
	assert.True(t, resp.Truncated)
	assert.Empty(t, resp.Answer)
	resp = ask(t, s, "tcp", name, dns.TypeSRV, 1232)
	assert.False(t, resp.Truncated)
	assert.Len(t, resp.Answer, 1)

	// TypeANY faults every type at the name; a specific fault wins.
	z.SetFault("xmpp.a.test.", dns.TypeANY, srvtest.ServFail)
	z.SetFault("xmpp.a.test.", dns.TypeAAAA, srvtest.Refused)
	assert.Equal(t, dns.RcodeServerFailure, ask(t, s, "udp", "xmpp.a.test.", dns.TypeA, 0).Rcode)
	assert.Equal(t, dns.RcodeRefused, ask(t, s, "udp", "xmpp.a.test.", dns.TypeAAAA, 0).Rcode)

	z.SetFault(name, dns.TypeSRV, srvtest.Drop)
	m := new(dns.Msg)
	m.SetQuestion(name, dns.TypeSRV)
	start := time.Now()
	_, _, err := (&dns.Client{Timeout: 150 * time.Millisecond}).Exchange(m, s.Addr())
	require.Error(t, err)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	assert.Less(t, time.Since(start), 2*time.Second)
	assert.Equal(t, 5, s.Queries(name, dns.TypeSRV), "dropped queries are counted too")

	z.SetFault(name, dns.TypeSRV, srvtest.NoFault)
	assert.Len(t, ask(t, s, "udp", name, dns.TypeSRV, 1232).Answer, 1)
	assert.Equal(t, "Drop", srvtest.Drop.String())
	assert.Equal(t, "Fault(42)", srvtest.Fault(42).String())
}

func TestNaturalTruncation(t *testing.T) {
	var b strings.Builder
	for i := range 40 {
		fmt.Fprintf(&b, "_xmpp-server._tcp.big.test. IN SRV 10 %d 5269 host-number-%02d.a-rather-long-domain-name.big.test.\n", i, i)
	}
	s := srvtest.New(t, b.String())
	name := "_xmpp-server._tcp.big.test."

	resp := ask(t, s, "udp", name, dns.TypeSRV, 0)
	assert.True(t, resp.Truncated, "over 512 bytes without EDNS0")
	assert.Less(t, len(resp.Answer), 40)
	resp = ask(t, s, "udp", name, dns.TypeSRV, 1232)
	assert.True(t, resp.Truncated, "over 1232 bytes")
	resp = ask(t, s, "udp", name, dns.TypeSRV, 4096)
	assert.False(t, resp.Truncated, "fits the client's 4096 bytes")
	assert.Len(t, resp.Answer, 40)
	resp = ask(t, s, "tcp", name, dns.TypeSRV, 0)
	assert.False(t, resp.Truncated)
	assert.Len(t, resp.Answer, 40)
}

// TestOversizedAnswers checks that an answer too large for the transport
// still gets a reply: compressed if that is enough, else the records that fit
// with TC set, never silence.
func TestOversizedAnswers(t *testing.T) {
	// SRV targets are never compressed (RFC 2782), owner names are: an
	// answer with a long owner name fits in 64 KB only compressed, one with
	// long targets does not fit at all.
	long := strings.Repeat(strings.Repeat("x", 60)+".", 3)
	fits := "_xmpp-server._tcp." + long + "fits.test."
	var b strings.Builder
	for i := range 1000 {
		fmt.Fprintf(&b, "%s IN SRV 10 0 5269 h%04d.test.\n", fits, i)
		// With 43 x's, the records that fit in 65535 bytes make 65525,
		// more than a UDP datagram carries (65507).
		fmt.Fprintf(&b, "huge.test. IN SRV 10 0 5269 host-%04d-%s.huge.test.\n", i, strings.Repeat("x", 43))
	}
	s := srvtest.New(t, b.String())

	for _, edns := range []uint16{0, 1232} {
		resp := ask(t, s, "tcp", fits, dns.TypeSRV, edns)
		assert.Equal(t, dns.RcodeSuccess, resp.Rcode)
		assert.False(t, resp.Truncated, "compression makes it fit")
		assert.Equal(t, 1000, len(resp.Answer))

		resp = ask(t, s, "tcp", "huge.test.", dns.TypeSRV, edns)
		assert.Equal(t, dns.RcodeSuccess, resp.Rcode)
		assert.True(t, resp.Truncated, "TC: not everything fit")
		assert.Greater(t, len(resp.Answer), 500, "as many records as fit")
		assert.Less(t, len(resp.Answer), 1000)
		if edns > 0 {
			assert.NotNil(t, resp.IsEdns0(), "the OPT record survives truncation")
		}
	}

	// A UDP client may advertise more than a datagram can carry.
	resp := ask(t, s, "udp", "huge.test.", dns.TypeSRV, dns.MaxMsgSize)
	assert.True(t, resp.Truncated)
	assert.NotZero(t, len(resp.Answer))
}

// TestUnencodableAnswer checks that a record that cannot be put on the wire
// yields SERVFAIL rather than no answer.
func TestUnencodableAnswer(t *testing.T) {
	s := srvtest.New(t, zone)
	s.Zone().AddRR(&dns.SRV{
		Hdr:    dns.RR_Header{Name: "bad.a.test.", Rrtype: dns.TypeSRV, Class: dns.ClassINET, Ttl: 60},
		Target: "not-fully-qualified",
	})
	for _, network := range []string{"udp", "tcp"} {
		resp := ask(t, s, network, "bad.a.test.", dns.TypeSRV, 1232)
		assert.Equal(t, "SERVFAIL", dns.RcodeToString[resp.Rcode], network)
		assert.Empty(t, resp.Answer)
	}
	assert.Len(t, ask(t, s, "udp", "xmpp.a.test.", dns.TypeA, 0).Answer, 1, "other names still answer")
}

func TestZoneEditing(t *testing.T) {
	s := srvtest.New(t, zone)
	z := s.Zone()
	require.NoError(t, z.Add("new.a.test. 60 IN A 127.0.0.2", "new.a.test. A 127.0.0.3\nnew.a.test. A 127.0.0.3"))
	resp := ask(t, s, "udp", "new.a.test.", dns.TypeA, 0)
	assert.Len(t, resp.Answer, 2, "exact duplicates are ignored")

	err := z.Add("ok.a.test. A 127.0.0.9", "bad.a.test. IN A not-an-address")
	require.Error(t, err)
	assert.Contains(t, err.Error(), "srvtest:")
	assert.Equal(t, dns.RcodeNameError, ask(t, s, "udp", "ok.a.test.", dns.TypeA, 0).Rcode, "nothing added on error")

	z.Remove("xmpp.a.test.", dns.TypeA)
	resp = ask(t, s, "udp", "xmpp.a.test.", dns.TypeA, 0)
	assert.Equal(t, dns.RcodeSuccess, resp.Rcode)
	assert.Empty(t, resp.Answer, "NODATA: AAAA still there")
	z.Remove("xmpp.a.test.", dns.TypeANY)
	z.Remove("alias.a.test.", dns.TypeANY)
	assert.Equal(t, dns.RcodeNameError, ask(t, s, "udp", "xmpp.a.test.", dns.TypeA, 0).Rcode)

	_, err = srvtest.ParseZone("a.test. IN SRV 1 2")
	require.Error(t, err)
	assert.Panics(t, func() { srvtest.MustParseZone("a.test. IN BOGUS x") })
}

func TestMalformedQueries(t *testing.T) {
	s := srvtest.New(t, zone)
	c := dns.Client{Timeout: 2 * time.Second}

	m := new(dns.Msg)
	m.Id = dns.Id()
	resp, _, err := c.Exchange(m, s.Addr()) // no question
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeFormatError, resp.Rcode)

	m = new(dns.Msg)
	m.SetQuestion("xmpp.a.test.", dns.TypeA)
	m.Question[0].Qclass = dns.ClassCHAOS
	resp, _, err = c.Exchange(m, s.Addr())
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeRefused, resp.Rcode)

	m = new(dns.Msg)
	m.SetNotify("a.test.")
	resp, _, err = c.Exchange(m, s.Addr())
	require.NoError(t, err)
	assert.Equal(t, dns.RcodeNotImplemented, resp.Rcode)

	// Garbage is ignored; the server keeps answering.
	conn, err := net.Dial("udp", s.Addr())
	require.NoError(t, err)
	_, err = conn.Write([]byte{1, 2, 3})
	require.NoError(t, err)
	require.NoError(t, conn.Close())
	assert.Len(t, ask(t, s, "udp", "xmpp.a.test.", dns.TypeA, 0).Answer, 1)
}

func TestStartAndClose(t *testing.T) {
	z := srvtest.MustParseZone(zone)
	s, err := srvtest.Start("", z)
	require.NoError(t, err)
	assert.True(t, strings.HasPrefix(s.Addr(), "127.0.0.1:"))

	// A TCP client that never closes its connection must not block Close.
	conn, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer conn.Close()

	// A second server on the same fixed port fails cleanly.
	_, err = srvtest.Start(s.Addr(), z)
	require.Error(t, err)

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked")
	}
	assert.NoError(t, s.Close(), "Close is idempotent")

	_, err = srvtest.Start("", nil)
	require.Error(t, err)
	_, err = srvtest.Start("127.0.0.1", z)
	require.Error(t, err, "port missing")
}

// A client that sends queries but never reads the answers must not stall
// Close once the socket buffers are full.
func TestCloseWithStalledClient(t *testing.T) {
	var b strings.Builder
	for i := range 500 {
		fmt.Fprintf(&b, "big.test. IN SRV 10 %d 5269 host-number-%03d.a-rather-long-domain-name.big.test.\n", i, i)
	}
	s, err := srvtest.Start("", srvtest.MustParseZone(b.String()))
	require.NoError(t, err)
	t.Cleanup(func() { _ = s.Close() }) // on early failure
	conn, err := net.Dial("tcp", s.Addr())
	require.NoError(t, err)
	defer conn.Close()
	m := new(dns.Msg)
	m.SetQuestion("big.test.", dns.TypeSRV)
	q, err := m.Pack()
	require.NoError(t, err)
	frame := append([]byte{byte(len(q) >> 8), byte(len(q))}, q...)
	const n = 300 // about 12 MB of answers, more than socket buffers hold
	for range n {
		_, err := conn.Write(frame)
		require.NoError(t, err)
	}
	// The server counts a query before answering it: once the count stops
	// growing short of n, the server is blocked writing an answer.
	deadline := time.Now().Add(5 * time.Second)
	for last := -1; last <= 0 || last != s.TotalQueries(); {
		require.True(t, time.Now().Before(deadline), "server never settled")
		last = s.TotalQueries()
		time.Sleep(50 * time.Millisecond)
	}
	require.Less(t, s.TotalQueries(), n, "server not blocked")

	done := make(chan error, 1)
	go func() { done <- s.Close() }()
	select {
	case err := <-done:
		require.NoError(t, err)
	case <-time.After(5 * time.Second):
		t.Fatal("Close blocked")
	}
}

// recorder is a dns.ResponseWriter for calling ServeDNS directly; only
// LocalAddr and WriteMsg work.
type recorder struct {
	dns.ResponseWriter
	local net.Addr
	msgs  []*dns.Msg
}

func (r *recorder) LocalAddr() net.Addr { return r.local }

func (r *recorder) WriteMsg(m *dns.Msg) error {
	r.msgs = append(r.msgs, m)
	return nil
}

func TestZoneServeDNS(t *testing.T) {
	z := srvtest.MustParseZone(zone)
	z.SetFault("xmpp.a.test.", dns.TypeA, srvtest.Truncate)
	udp := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	tcp := &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 53}
	serve := func(local net.Addr, req *dns.Msg) *dns.Msg {
		t.Helper()
		w := &recorder{local: local}
		z.ServeDNS(w, req)
		require.LessOrEqual(t, len(w.msgs), 1)
		if len(w.msgs) == 0 {
			return nil
		}
		return w.msgs[0]
	}
	q := new(dns.Msg).SetQuestion("xmpp.a.test.", dns.TypeA)

	resp := serve(udp, q)
	assert.True(t, resp.Truncated, "Truncate fault over UDP")
	assert.Empty(t, resp.Answer)
	resp = serve(tcp, q)
	assert.False(t, resp.Truncated, "no Truncate fault over TCP")
	assert.Len(t, resp.Answer, 1)

	// What dns.Server's default MsgAcceptFunc keeps from its handler.
	r := q.Copy()
	r.Response = true
	assert.Nil(t, serve(udp, r), "responses are not answered")
	r = q.Copy()
	r.Question = append(r.Question, r.Question[0])
	assert.Equal(t, dns.RcodeFormatError, serve(udp, r).Rcode)
	r = q.Copy()
	r.Opcode = dns.OpcodeUpdate
	assert.Equal(t, dns.RcodeNotImplemented, serve(udp, r).Rcode)
}

func TestResolverHelper(t *testing.T) {
	s := srvtest.New(t, zone)
	r := s.Resolver()
	assert.Equal(t, []string{s.Addr()}, r.Nameservers)
	targets, err := r.LookupServer(context.Background(), "a.test")
	require.NoError(t, err)
	require.Len(t, targets, 1)
	assert.Equal(t, "xmpp.a.test:5269", targets[0].String())
	addrs, err := r.LookupAddrs(context.Background(), "alias.a.test")
	require.NoError(t, err)
	assert.Equal(t, "[::1 127.0.0.1]", fmt.Sprint(addrs))
}

// FuzzHandle feeds arbitrary bytes to the server as UDP and TCP queries; it
// must neither crash nor stop answering.
func FuzzHandle(f *testing.F) {
	m := new(dns.Msg)
	m.SetQuestion("_xmpp-server._tcp.a.test.", dns.TypeSRV)
	m.SetEdns0(1232, false)
	seed, err := m.Pack()
	require.NoError(f, err)
	f.Add(seed)
	f.Add([]byte{})
	f.Add([]byte{0, 1, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 1})

	s, err := srvtest.Start("", srvtest.MustParseZone(zone))
	require.NoError(f, err)
	f.Cleanup(func() { _ = s.Close() })
	udp, err := net.Dial("udp", s.Addr())
	require.NoError(f, err)
	f.Cleanup(func() { _ = udp.Close() })

	f.Fuzz(func(t *testing.T, msg []byte) {
		if len(msg) > dns.MaxMsgSize {
			return
		}
		_, _ = udp.Write(msg)
		tcp, err := net.Dial("tcp", s.Addr())
		require.NoError(t, err)
		defer tcp.Close()
		frame := append([]byte{byte(len(msg) >> 8), byte(len(msg))}, msg...)
		_, _ = tcp.Write(frame)
		// The server still answers a well-formed query.
		c := dns.Client{Timeout: 2 * time.Second}
		q := new(dns.Msg)
		q.SetQuestion("xmpp.a.test.", dns.TypeA)
		resp, _, err := c.Exchange(q, s.Addr())
		require.NoError(t, err)
		require.Len(t, resp.Answer, 1)
	})
}

func FuzzParseZone(f *testing.F) {
	f.Add(zone)
	f.Add("$ORIGIN a.test.\n@ IN SRV 0 0 5269 x\n")
	f.Add("a. IN TXT \"unterminated")
	f.Fuzz(func(t *testing.T, text string) {
		z, err := srvtest.ParseZone(text)
		if err == nil && z == nil {
			t.Fatal("nil zone without error")
		}
	})
}

func ExampleZone_ServeDNS() {
	// A Zone is a dns.Handler: mount it on your own server or ServeMux.
	mux := dns.NewServeMux()
	mux.Handle("a.test.", srvtest.MustParseZone(`xmpp.a.test. 300 IN A 127.0.0.1`))
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	started := make(chan struct{})
	server := &dns.Server{PacketConn: pc, Handler: mux, NotifyStartedFunc: func() { close(started) }}
	done := make(chan error, 1)
	go func() { done <- server.ActivateAndServe() }()
	<-started
	defer func() {
		_ = server.Shutdown()
		<-done
	}()

	var c dns.Client
	for _, name := range []string{"xmpp.a.test.", "xmpp.b.test."} {
		m := new(dns.Msg)
		m.SetQuestion(name, dns.TypeA)
		resp, _, err := c.Exchange(m, pc.LocalAddr().String())
		if err != nil {
			panic(err)
		}
		fmt.Println(name, dns.RcodeToString[resp.Rcode], resp.Authoritative, len(resp.Answer))
	}
	// Output:
	// xmpp.a.test. NOERROR true 1
	// xmpp.b.test. REFUSED false 0
}

func ExampleNew() {
	// In a test: s := srvtest.New(t, zoneText). Outside one, Start and Close.
	// Owner names start in the first column: leading white space means
	// "same owner as the previous record" in master-file syntax.
	s, err := srvtest.Start("", srvtest.MustParseZone(`
_xmpp-server._tcp.a.test. 300 IN SRV 0 0 5269 xmpp.a.test.
xmpp.a.test.              300 IN A   127.0.0.1
`))
	if err != nil {
		panic(err)
	}
	defer s.Close()

	r := s.Resolver()
	targets, err := r.LookupServer(context.Background(), "a.test")
	fmt.Println(targets, err)
	addrs, err := r.LookupAddrs(context.Background(), targets[0].Host)
	fmt.Println(addrs, err)
	fmt.Println("SRV queries:", s.Queries("_xmpp-server._tcp.a.test.", dns.TypeSRV))
	// Output:
	// [xmpp.a.test:5269] <nil>
	// [127.0.0.1] <nil>
	// SRV queries: 1
}
