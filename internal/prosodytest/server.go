package prosodytest

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/xmppfed/xmppfed/internal/testpki"
)

// Time bounds.
const (
	startTimeout = 15 * time.Second       // until every listener accepts
	stopGrace    = 5 * time.Second        // SIGTERM to SIGKILL
	pollEvery    = 20 * time.Millisecond  // listener readiness polling
	dialTimeout  = 500 * time.Millisecond // one readiness probe
	logTailBytes = 16 << 10               // log shown when a test fails
)

// Server is a running Prosody process. Its methods are safe for concurrent
// use.
type Server struct {
	cfg    Config
	addr   netip.Addr
	files  layout
	cmd    *exec.Cmd
	exited chan struct{} // closed when the process has been reaped
	err    error         // cmd.Wait's result, set before exited closes

	stopOnce sync.Once
}

// Start writes cfg as a Prosody configuration in a new directory from
// tb.TempDir, creates the users, starts `prosody --config … -F` and returns
// once every configured listener accepts TCP connections (at most 15 s). It
// stops Prosody in tb.Cleanup, and then, if the test failed, logs the tail
// of Prosody's log. It calls [Require] first, so without Prosody the test is
// skipped (or fails in CI).
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	Require(tb)
	s, err := start(tb, cfg)
	if err != nil {
		tb.Fatalf("prosodytest: %v", err)
	}
	return s
}

func start(tb testing.TB, cfg Config) (*Server, error) {
	tb.Helper()
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	addr := cfg.Addr
	if !addr.IsValid() {
		addr = FreeLoopback(tb, cfg.ports()...)
	} else if err := tryBind(addr, cfg.ports()); err != nil {
		// Prosody would log the failure and run on, and the readiness
		// probe would reach whoever holds the port.
		return nil, fmt.Errorf("%w: a port Prosody needs on %s is taken: %v%s", ErrInvalidConfig, addr, err, systemProsodyHint())
	}
	dir := tb.TempDir() // short: the admin_shell socket path is limited
	s := &Server{cfg: cfg, addr: addr, files: newLayout(dir), exited: make(chan struct{})}
	if err := s.writeFiles(tb); err != nil {
		return nil, err
	}

	bin, err := exec.LookPath("prosody")
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrNotInstalled, err)
	}
	console, err := os.Create(s.files.console)
	if err != nil {
		return nil, err
	}
	defer console.Close() // the child holds its own descriptor
	s.cmd = exec.Command(bin, "--config", s.files.config, "-F")
	s.cmd.Dir = dir
	s.cmd.Stdout, s.cmd.Stderr = console, console
	s.cmd.SysProcAttr = sysProcAttr()
	if err := s.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start prosody: %w", err)
	}
	go func() {
		s.err = s.cmd.Wait()
		close(s.exited)
	}()
	tb.Cleanup(func() {
		s.Stop()
		if tb.Failed() {
			tb.Logf("prosodytest: Prosody on %s (%s), last log lines:\n%s", s.addr, dir, s.logTail())
		}
	})

	ctx, cancel := context.WithTimeout(context.Background(), startTimeout)
	defer cancel()
	if err := s.waitListening(ctx); err != nil {
		return nil, err
	}
	if err := s.startupErrors(); err != nil {
		return nil, err
	}
	tb.Logf("prosodytest: Prosody pid %d ready on %s (c2s %d, s2s %d, component %d; dir %s)",
		s.cmd.Process.Pid, addr, s.port(s.cfg.C2SPort, DefaultC2SPort), s.port(s.cfg.S2SPort, DefaultS2SPort), s.componentPort(), dir)
	return s, nil
}

// ports lists the TCP ports this configuration listens on.
func (c *Config) ports() []int {
	var ps []int
	if p := port(c.S2SPort, DefaultS2SPort); p != Disabled {
		ps = append(ps, p)
	}
	if p := port(c.C2SPort, DefaultC2SPort); p != Disabled {
		ps = append(ps, p)
	}
	if len(c.Components) > 0 {
		ps = append(ps, port(c.ComponentPort, DefaultComponentPort))
	}
	return ps
}

func (s *Server) port(p, def int) int {
	if p = port(p, def); p == Disabled {
		return 0
	}
	return p
}

func (s *Server) componentPort() int {
	if len(s.cfg.Components) == 0 {
		return 0
	}
	return port(s.cfg.ComponentPort, DefaultComponentPort)
}

// writeFiles lays out the instance directory: certificates, accounts,
// hosts file and configuration.
func (s *Server) writeFiles(tb testing.TB) error {
	tb.Helper()
	l := s.files
	for _, d := range []string{l.data, l.certs} {
		if err := os.MkdirAll(d, 0o750); err != nil {
			return err
		}
	}
	certs := map[string][2]string{}
	for _, h := range s.cfg.Hosts {
		certPEM, keyPEM := h.CertPEM, h.KeyPEM
		if len(certPEM) == 0 && (s.cfg.RequireEncryption || s.cfg.SecureAuth) {
			certPEM, keyPEM = selfSignedPEM(tb, h.Domain)
		}
		if len(certPEM) == 0 {
			continue
		}
		crt := filepath.Join(l.certs, h.Domain+".crt")
		key := filepath.Join(l.certs, h.Domain+".key")
		// Prosody reports an unusable certificate only in its log, and at a
		// moment that races with its listeners coming up: check it here.
		if _, err := tls.X509KeyPair(certPEM, keyPEM); err != nil {
			return fmt.Errorf("%w: host %s: certificate %s or key %s unusable: %v", ErrInvalidConfig, h.Domain, crt, key, err)
		}
		if err := os.WriteFile(crt, certPEM, 0o640); err != nil {
			return err
		}
		if err := os.WriteFile(key, keyPEM, 0o600); err != nil {
			return err
		}
		certs[h.Domain] = [2]string{crt, key}
	}
	for _, h := range s.cfg.Hosts {
		if err := writeAccounts(l.data, h); err != nil {
			return err
		}
	}
	if err := os.WriteFile(l.hosts, []byte(s.cfg.hostsFile()), 0o640); err != nil {
		return err
	}
	text := s.cfg.render(l, s.addr, certs, len(certs) > 0 || s.cfg.RequireEncryption || s.cfg.SecureAuth)
	return os.WriteFile(l.config, []byte(text), 0o640)
}

// writeAccounts stores users the way `prosodyctl register` does with
// authentication = "internal_plain" (data/<host>/accounts/<user>.dat), which
// takes microseconds where prosodyctl takes over half a second per user.
func writeAccounts(data string, h Host) error {
	if len(h.Users) == 0 {
		return nil
	}
	dir := filepath.Join(data, datamanagerEncode(h.Domain), "accounts")
	if err := os.MkdirAll(dir, 0o750); err != nil {
		return err
	}
	for u, pw := range h.Users {
		body := "return {\n\t[\"password\"] = " + luaString(pw) + ";\n};\n"
		if err := os.WriteFile(filepath.Join(dir, datamanagerEncode(u)+".dat"), []byte(body), 0o640); err != nil {
			return err
		}
	}
	return nil
}

// selfSignedPEM makes a self-signed certificate for domain.
func selfSignedPEM(tb testing.TB, domain string) (certPEM, keyPEM []byte) {
	tb.Helper()
	return EncodePEM(tb, testpki.SelfSigned(tb, domain))
}

// waitListening polls every listener until it accepts a TCP connection.
// Prosody loads every host before its event loop runs, so a listener that
// accepts means the whole configuration is in effect.
func (s *Server) waitListening(ctx context.Context) error {
	ticker := time.NewTicker(pollEvery)
	defer ticker.Stop()
	pending := s.cfg.ports()
	d := net.Dialer{Timeout: dialTimeout}
	for {
		for len(pending) > 0 {
			c, err := d.DialContext(ctx, "tcp", netip.AddrPortFrom(s.addr, uint16(pending[0])).String())
			if err != nil {
				break
			}
			c.Close()
			pending = pending[1:]
		}
		if len(pending) == 0 {
			return nil
		}
		select {
		case <-s.exited:
			return fmt.Errorf("prosody exited during start-up (%v); its output:\n%s", s.err, s.logTail())
		case <-ctx.Done():
			return fmt.Errorf("prosody did not listen on %s port %d within %v; its output:\n%s", s.addr, pending[0], startTimeout, s.logTail())
		case <-ticker.C:
		}
	}
}

// startupErrors fails the start when Prosody logged that a listener,
// certificate or TLS context could not be set up: it keeps running in that
// case, but not as configured.
func (s *Server) startupErrors() error {
	for line := range strings.Lines(s.Log()) {
		if strings.Contains(line, "portmanager\terror\t") || strings.Contains(line, "certmanager\terror\t") {
			return fmt.Errorf("prosody could not set up a listener or certificate: %s; its output:\n%s", strings.TrimSpace(line), s.logTail())
		}
	}
	return nil
}

// Addr returns the loopback address all listeners bind.
func (s *Server) Addr() netip.Addr { return s.addr }

// S2SAddr returns the S2S listener's address, or the zero AddrPort if
// disabled.
func (s *Server) S2SAddr() netip.AddrPort { return s.addrPort(s.port(s.cfg.S2SPort, DefaultS2SPort)) }

// C2SAddr returns the c2s listener's address, or the zero AddrPort if
// disabled.
func (s *Server) C2SAddr() netip.AddrPort { return s.addrPort(s.port(s.cfg.C2SPort, DefaultC2SPort)) }

// ComponentAddr returns the XEP-0114 listener's address, or the zero
// AddrPort when there are no components.
func (s *Server) ComponentAddr() netip.AddrPort { return s.addrPort(s.componentPort()) }

func (s *Server) addrPort(p int) netip.AddrPort {
	if p == 0 {
		return netip.AddrPort{}
	}
	return netip.AddrPortFrom(s.addr, uint16(p))
}

// Dir returns the instance's directory (configuration, log, data).
func (s *Server) Dir() string { return s.files.dir }

// ConfigPath returns the path of the generated configuration file, for
// `prosodyctl --config <path> shell` while debugging.
func (s *Server) ConfigPath() string { return s.files.config }

// Log returns Prosody's log so far, preceded by anything it printed on its
// console (start-up errors such as a bad configuration land there).
func (s *Server) Log() string {
	logText, _ := os.ReadFile(s.files.log)
	console, _ := os.ReadFile(s.files.console)
	if len(bytes.TrimSpace(console)) == 0 {
		return string(logText)
	}
	return "[console]\n" + string(console) + "[log]\n" + string(logText)
}

func (s *Server) logTail() string {
	text := s.Log()
	if len(text) > logTailBytes {
		text = text[len(text)-logTailBytes:]
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			text = text[i+1:]
		}
		text = "…\n" + text
	}
	return text
}

// WaitLog waits until Prosody's log contains substr, or ctx ends. It polls
// the log file, reading only what was added since the last poll. Use
// Config.Debug for the detailed lines (stanzas, dialback, SASL).
func (s *Server) WaitLog(ctx context.Context, substr string) error {
	ticker := time.NewTicker(pollEvery)
	defer ticker.Stop()
	f, err := os.Open(s.files.log)
	if err != nil {
		return fmt.Errorf("prosodytest: %w", err)
	}
	defer f.Close()
	var window []byte // unread tail, plus an overlap of len(substr)-1 bytes
	buf := make([]byte, 64<<10)
	for {
		for {
			n, err := f.Read(buf)
			window = append(window, buf[:n]...)
			if bytes.Contains(window, []byte(substr)) {
				return nil
			}
			if keep := len(substr) - 1; len(window) > keep {
				window = window[:copy(window, window[len(window)-keep:])]
			}
			if n == 0 || err != nil {
				break
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("prosodytest: %q not in Prosody's log: %w", substr, ctx.Err())
		case <-s.exited:
			if strings.Contains(s.Log(), substr) {
				return nil
			}
			return fmt.Errorf("prosodytest: Prosody exited (%v) without logging %q", s.err, substr)
		case <-ticker.C:
		}
	}
}

// Shell runs one command of Prosody's admin shell, such as "s2s:show()"
// (each S2S link with its TLS and authentication state) or "c2s:show()",
// and returns its output. It needs Config.Modules to include
// "admin_shell", whose socket lives in the data directory; Unix sockets
// limit that path to 107 bytes, so keep test names short.
func (s *Server) Shell(ctx context.Context, command string) (string, error) {
	out, err := exec.CommandContext(ctx, "prosodyctl", "--config", s.files.config, "shell", command).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("prosodytest: prosodyctl shell %q: %w: %s", command, err, bytes.TrimSpace(out))
	}
	return string(out), nil
}

// Exited returns a channel closed when the Prosody process has ended.
func (s *Server) Exited() <-chan struct{} { return s.exited }

// Stop stops Prosody: SIGTERM, then SIGKILL if it has not exited after 5 s.
// It returns once the process is gone. Stop is idempotent; Start's cleanup
// calls it.
func (s *Server) Stop() {
	s.stopOnce.Do(func() {
		select {
		case <-s.exited:
			return
		default:
		}
		_ = s.cmd.Process.Signal(syscall.SIGTERM)
		timer := time.NewTimer(stopGrace)
		defer timer.Stop()
		select {
		case <-s.exited:
		case <-timer.C:
			_ = s.cmd.Process.Kill()
			<-s.exited
		}
	})
}
