package prosodytest

import (
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"testing"
)

// loopbackTries bounds the search for a free loopback address.
const loopbackTries = 64

// FreeLoopback returns a random IPv4 loopback address 127.x.y.z (never
// 127.0.0.1, nor one ending in .0 or .255) on which every given TCP port can
// be bound now, so that parallel tests and test binaries can each give their
// servers the standard ports (5269, 5222, 5347) without colliding. With no
// ports it checks that the address can be bound at all. It fails the test
// when no such address is found, which happens when something listens on a
// wildcard address (0.0.0.0:5269), typically a system-wide Prosody.
//
// Linux routes all of 127.0.0.0/8 to the loopback interface, so no set-up
// is needed.
func FreeLoopback(tb testing.TB, ports ...int) netip.Addr {
	tb.Helper()
	addr, err := freeLoopback(rand.Uint32, ports)
	if err != nil {
		tb.Fatalf("prosodytest: %v%s", err, systemProsodyHint())
	}
	return addr
}

func freeLoopback(random func() uint32, ports []int) (netip.Addr, error) {
	if len(ports) == 0 {
		ports = []int{0}
	}
	for _, p := range ports {
		if p < 0 || p > 65535 {
			return netip.Addr{}, fmt.Errorf("%w: port %d out of range", ErrInvalidConfig, p)
		}
	}
	var lastErr error
	for range loopbackTries {
		addr := randomLoopback(random())
		if lastErr = tryBind(addr, ports); lastErr == nil {
			return addr, nil
		}
	}
	return netip.Addr{}, fmt.Errorf("no loopback address with TCP ports %v free after %d tries (is a system-wide Prosody or another server listening on 0.0.0.0?): %w", ports, loopbackTries, lastErr)
}

// randomLoopback maps r to 127.x.y.z avoiding 127.0.0.0/24 (127.0.0.1 and
// 127.0.0.53 are used by system services) and host parts 0 and 255.
func randomLoopback(r uint32) netip.Addr {
	x := byte(1 + r%255)       // 1..255
	y := byte(r >> 8)          // 0..255
	z := byte(1 + (r>>16)%254) // 1..254
	return netip.AddrFrom4([4]byte{127, x, y, z})
}

func tryBind(addr netip.Addr, ports []int) error {
	var lns []net.Listener
	defer func() {
		for _, ln := range lns {
			ln.Close()
		}
	}()
	for _, p := range ports {
		ln, err := listenTCP(addr, p)
		if err != nil {
			return err
		}
		lns = append(lns, ln)
	}
	return nil
}

func listenTCP(addr netip.Addr, port int) (net.Listener, error) {
	return net.Listen("tcp4", net.JoinHostPort(addr.String(), strconv.Itoa(port)))
}

// systemPidfile is where Debian's prosody service keeps its pid. Tests never
// signal that process; they only name it when it is in their way.
const systemPidfile = "/run/prosody/prosody.pid"

// systemProsodyHint explains a port conflict when a system-wide Prosody is
// running: Debian's default configuration listens on every address.
func systemProsodyHint() string {
	pid, err := os.ReadFile(systemPidfile)
	if err != nil {
		return ""
	}
	return fmt.Sprintf("; a system-wide Prosody is running (pid %s in %s) and its default configuration listens on 0.0.0.0:5222 and :5269: stop it (service prosody stop) before running the interop tests",
		strings.TrimSpace(string(pid)), systemPidfile)
}
