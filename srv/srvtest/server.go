package srvtest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/xmppfed/xmppfed/srv"
)

const (
	// idleTimeout closes TCP connections a client forgot, so that a leaked
	// client cannot pin a server goroutine forever.
	idleTimeout = 10 * time.Second
	// writeTimeout bounds TCP writes, which dns.Server does not, so that a
	// client that stopped reading cannot stall Close; closeTimeout bounds
	// the graceful part of Close and exceeds it, so such a write ends first.
	writeTimeout = 2 * time.Second
	closeTimeout = 5 * time.Second
	// bindTries bounds the search for a port free for both UDP and TCP.
	bindTries = 20
)

// Server is an authoritative DNS server answering from a [Zone] over UDP and
// TCP on the same address: two [dns.Server]s sharing one handler that counts
// each query and passes it to the zone. It is safe for concurrent use.
type Server struct {
	zone     *Zone
	addr     string
	udp, tcp *dns.Server
	wg       sync.WaitGroup // the two ActivateAndServe goroutines

	mu      sync.Mutex
	closed  bool
	queries map[qkey]int
	total   int
}

// Start serves z on addr (UDP and TCP, same port). An empty addr means
// "127.0.0.1:0", a free loopback port. Start returns once both transports
// answer queries. Stop the server with Close.
func Start(addr string, z *Zone) (*Server, error) {
	if z == nil {
		return nil, errors.New("srvtest: nil zone")
	}
	if addr == "" {
		addr = "127.0.0.1:0"
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("srvtest: %w", err)
	}
	var lastErr error
	for range bindTries {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, fmt.Errorf("srvtest: %w", err)
		}
		// The kernel picked a free UDP port; the same TCP port may be taken,
		// in which case try another one unless the caller fixed the port.
		_, udpPort, _ := net.SplitHostPort(pc.LocalAddr().String())
		ln, err := net.Listen("tcp", net.JoinHostPort(host, udpPort))
		if err != nil {
			pc.Close()
			lastErr = err
			if port != "0" {
				break
			}
			continue
		}
		s := &Server{zone: z, addr: pc.LocalAddr().String(), queries: make(map[qkey]int)}
		if err := s.serve(pc, ln); err != nil {
			return nil, fmt.Errorf("srvtest: %w", err)
		}
		return s, nil
	}
	return nil, fmt.Errorf("srvtest: no port free for both UDP and TCP: %w", lastErr)
}

// serve runs a dns.Server on each of pc and ln and waits until both have
// started, so that Close cannot race with their start.
func (s *Server) serve(pc net.PacketConn, ln net.Listener) error {
	h := dns.HandlerFunc(s.count)
	s.udp = &dns.Server{PacketConn: pc, Handler: h, UDPSize: dns.MaxMsgSize}
	s.tcp = &dns.Server{
		Listener:      writeDeadlineListener{ln},
		Handler:       h,
		ReadTimeout:   idleTimeout,
		IdleTimeout:   func() time.Duration { return idleTimeout },
		MaxTCPQueries: -1, // until the client closes or idles out
	}
	// Each server reports nil when it starts and an error if it stops on
	// its own; the buffer keeps reports nobody waits for from blocking.
	report := make(chan error, 4)
	for _, ds := range []*dns.Server{s.udp, s.tcp} {
		ds.NotifyStartedFunc = func() { report <- nil }
		s.wg.Go(func() {
			if err := ds.ActivateAndServe(); err != nil {
				report <- err
			}
		})
	}
	for range 2 {
		if err := <-report; err != nil {
			// Closing the sockets stops whichever server did start.
			pc.Close()
			ln.Close()
			s.wg.Wait()
			return err
		}
	}
	return nil
}

// New starts a server on loopback answering from zone, given in the syntax
// of [ParseZone]. It fails the test on error and closes the server when the
// test ends.
func New(tb testing.TB, zone string) *Server {
	tb.Helper()
	z, err := ParseZone(zone)
	if err != nil {
		tb.Fatalf("srvtest: parsing zone: %v", err)
	}
	s, err := Start("", z)
	if err != nil {
		tb.Fatalf("srvtest: %v", err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Addr returns the "host:port" the server listens on.
func (s *Server) Addr() string { return s.addr }

// Zone returns the zone served, for changing it during a test.
func (s *Server) Zone() *Zone { return s.zone }

// Resolver returns a new resolver that asks only this server, with a one
// second timeout and a single attempt, so failures show up fast. Adjust its
// fields before first use if needed.
func (s *Server) Resolver() *srv.Resolver {
	return &srv.Resolver{Nameservers: []string{s.Addr()}, Timeout: time.Second, Attempts: 1}
}

// Queries returns how many queries for name and qtype the server received
// over UDP and TCP, counting those answered with a fault but not messages
// [dns.Server] turns away before the zone sees them: undecodable ones,
// responses, those without exactly one question or with an opcode other than
// QUERY or NOTIFY.
func (s *Server) Queries(name string, qtype uint16) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.queries[qkey{dns.CanonicalName(name), qtype}]
}

// TotalQueries returns how many queries the server received in all.
func (s *Server) TotalQueries() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.total
}

// count, the servers' handler, counts the query and lets the zone answer it.
func (s *Server) count(w dns.ResponseWriter, r *dns.Msg) {
	if !r.Response && len(r.Question) == 1 {
		s.mu.Lock()
		s.queries[qkey{dns.CanonicalName(r.Question[0].Name), r.Question[0].Qtype}]++
		s.total++
		s.mu.Unlock()
	}
	s.zone.ServeDNS(w, r)
}

// Close stops the server, cutting open TCP connections, and waits until its
// goroutines have exited. Closing a closed server does nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	closed := s.closed
	s.closed = true
	s.mu.Unlock()
	if closed {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := errors.Join(s.udp.ShutdownContext(ctx), s.tcp.ShutdownContext(ctx))
	s.wg.Wait()
	return err
}

// writeDeadlineListener hands out connections whose writes time out.
type writeDeadlineListener struct{ net.Listener }

func (l writeDeadlineListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err
	}
	return writeDeadlineConn{c}, nil
}

type writeDeadlineConn struct{ net.Conn }

func (c writeDeadlineConn) Write(b []byte) (int, error) {
	_ = c.SetWriteDeadline(time.Now().Add(writeTimeout))
	return c.Conn.Write(b)
}
