package axltest

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/subtle"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"mime"
	"net"
	"net/http"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"modernc.org/sqlite"

	"github.com/xmppfed/xmppfed/axl"
	"github.com/xmppfed/xmppfed/axl/internal/wire"
	"github.com/xmppfed/xmppfed/internal/logkey"
)

// Credentials a Server accepts when Config leaves them empty.
const (
	DefaultUsername = "axladmin"
	DefaultPassword = "axl-test-password"
)

const (
	// maxRequest bounds a request body; AXL SQL statements are small.
	maxRequest = 1 << 20
	// closeTimeout bounds the graceful part of Close.
	closeTimeout = 5 * time.Second
)

// Schema is the table the server creates: xmpps2snodes as IM and Presence's
// CLI shows it (two columns, pkid and cp_id). The column sizes and the
// uniqueness of cp_id are assumptions.
const Schema = `CREATE TABLE IF NOT EXISTS xmpps2snodes (
	pkid  VARCHAR(36)  NOT NULL PRIMARY KEY,
	cp_id VARCHAR(128) NOT NULL UNIQUE
)`

// Config configures a Server. The zero value serves on a free loopback port
// with DefaultUsername and DefaultPassword, a self-signed certificate and a
// private in-memory database.
type Config struct {
	// Addr is the listening address; empty means "127.0.0.1:0".
	Addr string
	// Username and Password are the only credentials accepted.
	Username, Password string
	// Certificate is presented to clients; nil means a new self-signed
	// certificate for localhost, 127.0.0.1 and ::1.
	Certificate *tls.Certificate
	// DSN names the SQLite database (see modernc.org/sqlite); empty means a
	// private in-memory database that lives as long as the Server.
	DSN string
	// Versions lists the AXL schema versions served, e.g. "12.5", "14.0";
	// a request for another one gets HTTP 599 as from AXL. Nil serves any.
	Versions []string
	// MaxRows, if positive, makes a query returning more rows fail with
	// AXL's "Query request too large" fault, which AXL sends for results
	// over 8 MB.
	MaxRows int
	// Nodes are inserted into xmpps2snodes at start.
	Nodes []axl.S2SNode
	// Logger receives a debug line per request; nil means no logging.
	Logger *slog.Logger
	// Strict makes the server refuse, with a SOAP Client fault, requests
	// without a Content-Type of text/xml (charset, if given, UTF-8) or
	// without a SOAPAction header quoted as SOAP 1.1 wants and naming the
	// operation ("CUCM:DB ver=12.5 executeSQLQuery"). AXL itself is more
	// lenient, which is why this is off by default; turn it on to check
	// that a client sends what AXL documents.
	Strict bool
}

// Throttling is how [Server.Throttle] refuses requests.
type Throttling int

const (
	// ThrottleHTTP answers HTTP 503 Service Unavailable with an HTML page,
	// as AXL does when it throttles writes.
	ThrottleHTTP Throttling = iota
	// ThrottleFault answers with an AXL fault saying the service is out of
	// memory for requests, as AXL does when too many queries run at once.
	ThrottleFault
)

func (t Throttling) String() string {
	switch t {
	case ThrottleHTTP:
		return "ThrottleHTTP"
	case ThrottleFault:
		return "ThrottleFault"
	}
	return fmt.Sprintf("Throttling(%d)", int(t))
}

// Call is a request the server received, in arrival order.
type Call struct {
	Username   string // from basic authentication, whether accepted or not
	SOAPAction string
	Function   string // the operation, e.g. "executeSQLQuery"; empty if unread
	Version    string // the schema version of the request's namespace
	SQL        string
	Status     int // the HTTP status answered
}

// Server is an AXL server over HTTPS backed by SQLite. Its methods are safe
// for concurrent use.
type Server struct {
	cfg  Config
	url  string
	addr string
	cert *x509.Certificate
	db   *sql.DB
	hs   *http.Server
	log  *slog.Logger
	done chan struct{} // closed when the serving goroutine ends

	mu       sync.Mutex
	closed   bool
	fresh    map[net.Conn]bool // connections that have not sent a request yet
	throttle []Throttling
	hold     chan struct{} // closed by release; nil when not holding
	arrived  chan struct{}
	calls    []Call
	clients  []*axl.Client
}

// New starts a Server for a test and stops it when the test ends.
func New(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := Start(cfg)
	if err != nil {
		tb.Fatalf("axltest: %v", err)
	}
	tb.Cleanup(func() {
		if err := s.Close(); err != nil {
			tb.Errorf("axltest: close: %v", err)
		}
	})
	return s
}

// Start starts a Server; stop it with Close.
func Start(cfg Config) (*Server, error) {
	if cfg.Username == "" && cfg.Password == "" {
		cfg.Username, cfg.Password = DefaultUsername, DefaultPassword
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	for i, v := range cfg.Versions {
		if !wire.ValidVersion(v) {
			return nil, fmt.Errorf("axltest: Versions[%d] = %q is not a schema version such as 12.5", i, v)
		}
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	cert := cfg.Certificate
	if cert == nil {
		c, err := selfSigned()
		if err != nil {
			return nil, fmt.Errorf("axltest: certificate: %w", err)
		}
		cert = &c
	}
	leaf := cert.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(cert.Certificate[0]); err != nil {
			return nil, fmt.Errorf("axltest: certificate: %w", err)
		}
	}
	db, err := openDB(cfg.DSN)
	if err != nil {
		return nil, err
	}
	if err := load(db, cfg.Nodes); err != nil {
		db.Close()
		return nil, err
	}
	ln, err := net.Listen("tcp", cfg.Addr)
	if err != nil {
		db.Close()
		return nil, fmt.Errorf("axltest: %w", err)
	}
	s := &Server{
		cfg:   cfg,
		addr:  ln.Addr().String(),
		url:   "https://" + ln.Addr().String() + "/axl/",
		cert:  leaf,
		db:    db,
		log:   log,
		done:  make(chan struct{}),
		fresh: make(map[net.Conn]bool),
	}
	s.hs = &http.Server{
		Handler:           s,
		TLSConfig:         &tls.Config{Certificates: []tls.Certificate{*cert}, MinVersion: tls.VersionTLS12},
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       30 * time.Second,
		// Failed handshakes are what some tests are about; keep them out
		// of stderr.
		ErrorLog:  slog.NewLogLogger(log.Handler(), slog.LevelDebug),
		ConnState: s.track,
	}
	go func() {
		defer close(s.done)
		_ = s.hs.ServeTLS(ln, "", "") // ends with ErrServerClosed
	}()
	return s, nil
}

// connector opens connections of a private sqlite.Driver, so that newid()
// is registered for this server's database only, not process-wide.
type connector struct {
	drv *sqlite.Driver
	dsn string
}

func (c connector) Connect(context.Context) (driver.Conn, error) { return c.drv.Open(c.dsn) }
func (c connector) Driver() driver.Driver                        { return c.drv }

func openDB(dsn string) (*sql.DB, error) {
	if dsn == "" {
		dsn = ":memory:"
	}
	drv := &sqlite.Driver{}
	err := drv.RegisterScalarFunction("newid", 0, func(*sqlite.FunctionContext, []driver.Value) (driver.Value, error) {
		return axl.NewPKID(), nil
	})
	if err != nil {
		return nil, fmt.Errorf("axltest: %w", err)
	}
	db := sql.OpenDB(connector{drv: drv, dsn: dsn})
	// One connection: an in-memory database exists per connection, and AXL
	// serialises database work anyway.
	db.SetMaxOpenConns(1)
	db.SetMaxIdleConns(1)
	db.SetConnMaxLifetime(0)
	db.SetConnMaxIdleTime(0)
	return db, nil
}

func load(db *sql.DB, nodes []axl.S2SNode) error {
	if _, err := db.Exec(Schema); err != nil {
		return fmt.Errorf("axltest: create xmpps2snodes: %w", err)
	}
	for _, n := range nodes {
		if _, err := db.Exec("INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", n.PKID, n.CPID); err != nil {
			return fmt.Errorf("axltest: preload %v: %w", n, err)
		}
	}
	return nil
}

// URL returns the AXL endpoint, e.g. https://127.0.0.1:41234/axl/.
func (s *Server) URL() string { return s.url }

// Addr returns the listening address.
func (s *Server) Addr() string { return s.addr }

// Certificate returns the server's certificate, to pin or trust.
func (s *Server) Certificate() *x509.Certificate { return s.cert }

// DB returns the database the server executes statements on, to set up or
// check its content directly.
func (s *Server) DB() *sql.DB { return s.db }

// Client returns a new axl.Client for this server: its URL, credentials and
// a TLS configuration pinning its certificate. Its idle connections are
// closed by Close. Fields may be changed before its first use.
func (s *Server) Client() *axl.Client {
	c := &axl.Client{
		URL:       s.url,
		Username:  s.cfg.Username,
		Password:  s.cfg.Password,
		TLSConfig: axl.PinCertificates(s.cert),
	}
	s.mu.Lock()
	s.clients = append(s.clients, c)
	s.mu.Unlock()
	return c
}

// Throttle makes the next n authenticated requests fail as throttled, in
// the given way; calls add up.
func (s *Server) Throttle(n int, how Throttling) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for range n {
		s.throttle = append(s.throttle, how)
	}
}

// Hold makes authenticated requests wait before they execute, until release
// is called or their client gives up. arrived receives a value as each
// request starts waiting (it holds up to 64; more are not signalled).
// Close releases held requests. release may be called more than once.
func (s *Server) Hold() (arrived <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.hold == nil {
		s.hold = make(chan struct{})
		s.arrived = make(chan struct{}, 64)
	}
	hold := s.hold
	return s.arrived, func() {
		s.mu.Lock()
		defer s.mu.Unlock()
		if s.hold == hold {
			close(s.hold)
			s.hold = nil
		}
	}
}

// Calls returns the requests received so far.
func (s *Server) Calls() []Call {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.calls)
}

// Close stops the server: it releases held requests, waits for requests in
// progress (up to a few seconds), closes the idle connections of the clients
// made by Client, and closes the database. Later calls do nothing.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	if s.hold != nil {
		close(s.hold)
		s.hold = nil
	}
	clients := s.clients
	s.mu.Unlock()

	// Clients' idle connections first, so that their transports wind down
	// now; then connections that never sent a request, which Shutdown
	// would otherwise wait 5 s for.
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	s.mu.Lock()
	for c := range s.fresh {
		c.Close()
	}
	s.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), closeTimeout)
	defer cancel()
	err := s.hs.Shutdown(ctx)
	if err != nil {
		err = errors.Join(err, s.hs.Close())
	}
	<-s.done
	for _, c := range clients {
		c.CloseIdleConnections()
	}
	return errors.Join(err, s.db.Close())
}

// track keeps the set of connections that have not started a request.
func (s *Server) track(c net.Conn, st http.ConnState) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if st == http.StateNew {
		s.fresh[c] = true
	} else {
		delete(s.fresh, c)
	}
}

// ServeHTTP answers AXL requests on /axl/. A Server is its own handler; it
// can also be mounted on another HTTP server.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	call := Call{SOAPAction: r.Header.Get("SOAPAction")}
	call.Username, _, _ = r.BasicAuth()
	status := s.serve(w, r, &call)
	call.Status = status
	s.mu.Lock()
	s.calls = append(s.calls, call)
	s.mu.Unlock()
	s.log.Debug("AXL request", logkey.Function, call.Function, logkey.Status, status, logkey.AXLVersion, call.Version)
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request, call *Call) int {
	if r.URL.Path != "/axl/" && r.URL.Path != "/axl" {
		return page(w, http.StatusNotFound, "Not Found")
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		return page(w, http.StatusMethodNotAllowed, "Method Not Allowed")
	}
	if !s.authorized(r) {
		w.Header().Set("WWW-Authenticate", `Basic realm="Cisco AXL"`)
		return page(w, http.StatusUnauthorized, "Unauthorized")
	}
	if s.cfg.Strict {
		if err := strict(r); err != nil {
			return fault(w, http.StatusInternalServerError, wire.Fault{FaultCode: "soapenv:Client", FaultString: err.Error(),
				AXLCode: -1, HasAXLCode: true, AXLMessage: err.Error(), Request: opFromAction(call.SOAPAction)})
		}
	}
	if how, ok := s.nextThrottle(); ok {
		if how == ThrottleHTTP {
			return page(w, http.StatusServiceUnavailable, "Service Unavailable")
		}
		const msg = "Maximum AXL Memory Allocation Consumed. Please retry once your previous large requests have completed."
		return fault(w, http.StatusInternalServerError, wire.Fault{FaultCode: "soapenv:Server", FaultString: msg,
			AXLCode: -1, HasAXLCode: true, AXLMessage: msg, Request: opFromAction(call.SOAPAction)})
	}
	if err := s.wait(r.Context()); err != nil {
		return 499 // the client went away; nothing is written
	}

	req, err := wire.ParseRequest(http.MaxBytesReader(w, r.Body, maxRequest))
	if err != nil {
		return fault(w, http.StatusInternalServerError, wire.Fault{FaultCode: "soapenv:Client", FaultString: "Invalid request: " + err.Error()})
	}
	call.Function, call.Version, call.SQL = req.Op, req.Version, req.SQL
	if len(s.cfg.Versions) > 0 && !slices.Contains(s.cfg.Versions, req.Version) {
		return page(w, 599, "Incorrect axl version. Supported axl versions: "+strings.Join(s.cfg.Versions, ","))
	}
	if err := checkAction(call.SOAPAction, req); err != nil {
		return fault(w, http.StatusInternalServerError, wire.Fault{FaultCode: "soapenv:Client", FaultString: err.Error(),
			AXLCode: -1, HasAXLCode: true, AXLMessage: err.Error(), Request: req.Op})
	}
	var buf bytes.Buffer
	if req.Op == wire.OpQuery {
		rows, f := s.query(r.Context(), req.SQL)
		if f != nil {
			return fault(w, http.StatusInternalServerError, *f)
		}
		err = wire.WriteQueryResponse(&buf, req.Version, req.Sequence, rows)
	} else {
		n, f := s.update(r.Context(), req.SQL)
		if f != nil {
			return fault(w, http.StatusInternalServerError, *f)
		}
		err = wire.WriteUpdateResponse(&buf, req.Version, req.Sequence, n)
	}
	if err != nil {
		return fault(w, http.StatusInternalServerError, wire.Fault{FaultCode: "soapenv:Server", FaultString: err.Error(),
			AXLCode: -1, HasAXLCode: true, AXLMessage: err.Error(), Request: req.Op})
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(buf.Bytes())
	return http.StatusOK
}

func (s *Server) authorized(r *http.Request) bool {
	user, pass, ok := r.BasicAuth()
	// Compare both in full, whatever the first gives, in constant time.
	u := subtle.ConstantTimeCompare([]byte(user), []byte(s.cfg.Username))
	p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.cfg.Password))
	return ok && u&p == 1
}

func (s *Server) nextThrottle() (Throttling, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.throttle) == 0 {
		return 0, false
	}
	how := s.throttle[0]
	s.throttle = s.throttle[1:]
	return how, true
}

// wait blocks while requests are held.
func (s *Server) wait(ctx context.Context) error {
	s.mu.Lock()
	hold, arrived := s.hold, s.arrived
	s.mu.Unlock()
	if hold == nil {
		return nil
	}
	select {
	case arrived <- struct{}{}:
	default:
	}
	select {
	case <-hold:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

var actionRE = regexp.MustCompile(`^CUCM:DB ver=([0-9]+\.[0-9]+)(?:\s+(\S+))?$`)

// checkAction compares the SOAPAction header with the request: AXL wants
// the same version in both. A missing header is accepted, as AXL does.
func checkAction(action string, req wire.Request) error {
	action = strings.TrimSpace(strings.Trim(strings.TrimSpace(action), `"`))
	if action == "" {
		return nil
	}
	m := actionRE.FindStringSubmatch(action)
	switch {
	case m == nil:
		return fmt.Errorf("SOAPAction %q is not of the form CUCM:DB ver=X.Y operation", action)
	case m[1] != req.Version:
		return fmt.Errorf("SOAPAction version %s differs from the request namespace version %s", m[1], req.Version)
	case m[2] != "" && m[2] != req.Op:
		return fmt.Errorf("SOAPAction operation %s differs from the request's %s", m[2], req.Op)
	}
	return nil
}

// strict checks the headers AXL documents (Config.Strict).
func strict(r *http.Request) error {
	ct := r.Header.Get("Content-Type")
	mt, params, err := mime.ParseMediaType(ct)
	switch {
	case ct == "":
		return errors.New("strict: no Content-Type header; send text/xml; charset=utf-8")
	case err != nil || mt != "text/xml":
		return fmt.Errorf("strict: Content-Type %q is not text/xml (SOAP 1.1)", ct)
	case params["charset"] != "" && !strings.EqualFold(params["charset"], "utf-8"):
		return fmt.Errorf("strict: Content-Type %q: the charset must be utf-8", ct)
	}
	values := r.Header.Values("SOAPAction")
	if len(values) != 1 {
		return fmt.Errorf("strict: %d SOAPAction headers; send one, e.g. \"CUCM:DB ver=12.5 executeSQLQuery\"", len(values))
	}
	action := values[0]
	if len(action) < 2 || action[0] != '"' || action[len(action)-1] != '"' {
		return fmt.Errorf("strict: SOAPAction %s is not a quoted string as SOAP 1.1 requires", action)
	}
	if m := actionRE.FindStringSubmatch(action[1 : len(action)-1]); m == nil || m[2] == "" {
		return fmt.Errorf("strict: SOAPAction %s is not of the form \"CUCM:DB ver=X.Y operation\"", action)
	}
	return nil
}

func opFromAction(action string) string {
	m := actionRE.FindStringSubmatch(strings.Trim(strings.TrimSpace(action), `"`))
	if m == nil {
		return ""
	}
	return m[2]
}

// page writes an HTML page, as the web server in front of AXL does for
// errors outside AXL.
func page(w http.ResponseWriter, status int, title string) int {
	w.Header().Set("Content-Type", "text/html;charset=utf-8")
	w.WriteHeader(status)
	fmt.Fprintf(w, "<!doctype html><html><head><title>HTTP Status %d – %s</title></head><body><h1>HTTP Status %d – %s</h1></body></html>",
		status, title, status, title)
	return status
}

func fault(w http.ResponseWriter, status int, f wire.Fault) int {
	var buf bytes.Buffer
	if err := wire.WriteFault(&buf, f); err != nil {
		// Only text XML cannot carry gets here (from SQLite's message).
		f.FaultString, f.AXLMessage = "fault text not representable in XML", ""
		buf.Reset()
		_ = wire.WriteFault(&buf, f)
	}
	w.Header().Set("Content-Type", "text/xml; charset=utf-8")
	w.WriteHeader(status)
	_, _ = io.Copy(w, &buf)
	return status
}

// selfSigned makes the certificate a Server presents by default, as IM and
// Presence's Tomcat presents a self-signed one.
func selfSigned() (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	serial, err := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 128))
	if err != nil {
		return tls.Certificate{}, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "localhost", Organization: []string{"axltest IM and Presence stand-in"}},
		DNSNames:              []string{"localhost"},
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return tls.Certificate{}, err
	}
	leaf, err := x509.ParseCertificate(der)
	if err != nil {
		return tls.Certificate{}, err
	}
	return tls.Certificate{Certificate: [][]byte{der}, PrivateKey: key, Leaf: leaf}, nil
}
