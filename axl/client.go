package axl

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/xmppfed/xmppfed/axl/internal/wire"
	"github.com/xmppfed/xmppfed/internal/logkey"
)

// Defaults for a zero Client.
const (
	// DefaultVersion is the AXL schema version sent when Client.Version is
	// empty. If the server refuses it (HTTP 599) the client switches to the
	// highest version the server lists.
	DefaultVersion = "12.5"
	// DefaultAttempts is how often a throttled request is tried in all.
	DefaultAttempts = 5
	// DefaultBackoff is the base of the wait after a throttled attempt.
	// The wait after attempt n is drawn at random between d/2 and d, where
	// d = Backoff·2^(n-1) capped at MaxBackoff, so that several cores do
	// not retry in step; a longer Retry-After from the server wins. Cisco
	// asks for "several seconds" between retries of a throttled write.
	DefaultBackoff = 2 * time.Second
	// MaxBackoff caps every wait, including a server's Retry-After.
	MaxBackoff = time.Minute
	// DefaultTimeout bounds one attempt (connect, send, answer) when the
	// context allows longer.
	DefaultTimeout = time.Minute
	// DefaultMaxConcurrent is how many requests a Client has in flight at
	// once by default. AXL throttles concurrent reads; Cisco's advice is to
	// serialise them per node, and a second slot keeps a slow query from
	// holding up an update behind it.
	DefaultMaxConcurrent = 2
	// IdleConnTimeout is how long the default HTTP client keeps an unused
	// connection: long enough for the requests of one synchronisation, short
	// enough not to hold a Tomcat connection slot on IM and Presence.
	IdleConnTimeout = 15 * time.Second
)

// DefaultMaxResponse bounds the response body read: AXL refuses results
// over 8 MB itself; the rest leaves room for the envelope.
const DefaultMaxResponse = 9 << 20

// Client calls AXL's executeSQLQuery and executeSQLUpdate on an IM and
// Presence (or Unified CM) node. The zero value plus URL, Username and
// Password is ready to use. A Client is safe for concurrent use; do not
// change its fields after the first call.
type Client struct {
	// URL is the AXL endpoint, e.g. https://imp.example.com:8443/axl/. It
	// must use https: the credentials travel with every request.
	URL string
	// Username and Password are those of an IM and Presence application
	// user with the Standard AXL API Access role, sent with HTTP basic
	// authentication on every request.
	Username, Password string
	// Version is the AXL schema version, e.g. "12.5" or "14.0" ("14" means
	// "14.0"); empty means DefaultVersion.
	Version string
	// HTTPClient sends the requests. Nil means a client of this package with
	// timeouts, a keep-alive connection pool (idle connections closed after
	// IdleConnTimeout), a cookie jar (AXL's session cookies spare it
	// re-authenticating each request), no proxy, no redirects, and
	// TLSConfig. A client given here should not follow redirects either:
	// AXL never redirects, a login page does.
	HTTPClient *http.Client
	// TLSConfig is the TLS configuration of the default HTTP client: nil
	// means the system's trusted CAs. Use RootCAs for IM and Presence's CA,
	// or PinCertificates for its self-signed certificate. Set it or
	// HTTPClient, not both: the requests fail with [ErrConfig] otherwise,
	// since the TLS settings of HTTPClient's transport would silently win.
	TLSConfig *tls.Config
	// Logger receives a debug line per request and a warning per retry;
	// nil means no logging.
	Logger *slog.Logger
	// Attempts is how often a throttled request is tried in all; 0 means
	// DefaultAttempts, 1 means no retry.
	Attempts int
	// Backoff is the first wait after a throttled attempt; 0 means
	// DefaultBackoff.
	Backoff time.Duration
	// Timeout bounds each attempt; 0 means DefaultTimeout. The context
	// bounds the whole call, retries included.
	Timeout time.Duration
	// MaxResponse bounds the size of a response body in bytes; 0 means
	// DefaultMaxResponse.
	MaxResponse int64
	// MaxConcurrent bounds the requests in flight at once; more wait for
	// a slot (within their context). 0 means DefaultMaxConcurrent, a
	// negative value no limit.
	MaxConcurrent int

	mu         sync.Mutex
	hc         *http.Client  // the default client, made on first use
	slots      chan struct{} // a token per request in flight; nil: no limit
	slotsMade  bool
	negotiated string // schema version chosen after a 599 answer
	seq        atomic.Uint64
}

// Query runs a SELECT statement with executeSQLQuery and returns its rows.
// Each ? in sql outside quotes and comments is replaced by the next
// argument, written as a literal by [Literal]; see [Bind]. Every error is
// an [*Error].
func (c *Client) Query(ctx context.Context, sql string, args ...any) ([]Row, error) {
	stmt, err := Bind(sql, args...)
	if err != nil {
		return nil, c.wrap(wire.OpQuery, err)
	}
	resp, err := c.call(ctx, wire.OpQuery, stmt)
	if err != nil {
		return nil, err
	}
	rows := make([]Row, len(resp.Rows))
	for i, cols := range resp.Rows {
		r := Row{names: make([]string, len(cols)), values: make([]string, len(cols))}
		for j, col := range cols {
			r.names[j], r.values[j] = col.Name, col.Value
		}
		rows[i] = r
	}
	return rows, nil
}

// Update runs an INSERT, UPDATE or DELETE statement with executeSQLUpdate
// and returns the number of rows it changed. Arguments are bound as for
// Query. Each statement is its own transaction on the server. Every error
// is an [*Error].
func (c *Client) Update(ctx context.Context, sql string, args ...any) (int, error) {
	stmt, err := Bind(sql, args...)
	if err != nil {
		return 0, c.wrap(wire.OpUpdate, err)
	}
	resp, err := c.call(ctx, wire.OpUpdate, stmt)
	if err != nil {
		return 0, err
	}
	return resp.RowsUpdated, nil
}

// CloseIdleConnections closes the kept-alive connections of the client's
// pool. Call it when done with the Client.
func (c *Client) CloseIdleConnections() {
	c.mu.Lock()
	hc := c.hc
	c.mu.Unlock()
	if hc != nil {
		hc.CloseIdleConnections()
	}
	if c.HTTPClient != nil {
		c.HTTPClient.CloseIdleConnections()
	}
}

func (c *Client) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

func (c *Client) httpClient() (*http.Client, error) {
	if c.HTTPClient != nil {
		if c.TLSConfig != nil {
			return nil, fmt.Errorf("%w: Client.TLSConfig and Client.HTTPClient are both set; put the TLS configuration in HTTPClient's transport, or leave HTTPClient nil", ErrConfig)
		}
		return c.HTTPClient, nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hc == nil {
		c.hc = newHTTPClient(c.TLSConfig)
	}
	return c.hc, nil
}

// acquire waits for a request slot; release returns it.
func (c *Client) acquire(ctx context.Context) (release func(), err error) {
	c.mu.Lock()
	if !c.slotsMade {
		n := c.MaxConcurrent
		if n == 0 {
			n = DefaultMaxConcurrent
		}
		if n > 0 {
			c.slots = make(chan struct{}, n)
		}
		c.slotsMade = true
	}
	slots := c.slots
	c.mu.Unlock()
	if slots == nil {
		return func() {}, nil
	}
	select {
	case slots <- struct{}{}:
		return func() { <-slots }, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func newHTTPClient(cfg *tls.Config) *http.Client {
	if cfg == nil {
		cfg = &tls.Config{MinVersion: tls.VersionTLS12}
	} else {
		cfg = cfg.Clone()
	}
	dialer := &net.Dialer{Timeout: 10 * time.Second, KeepAlive: 30 * time.Second}
	jar, _ := cookiejar.New(nil) // fails only with a bad public-suffix list
	return &http.Client{
		Transport: &http.Transport{
			// IM and Presence sits on the internal network, next to the
			// core: no proxy from the environment.
			Proxy:                 nil,
			DialContext:           dialer.DialContext,
			TLSClientConfig:       cfg,
			TLSHandshakeTimeout:   10 * time.Second,
			IdleConnTimeout:       IdleConnTimeout,
			MaxIdleConnsPerHost:   4,
			ExpectContinueTimeout: time.Second,
		},
		Jar: jar,
		// A redirect from /axl/ leads to a login page, never to AXL:
		// report it instead of following it.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// endpoint validates c.URL and returns it without credentials.
func (c *Client) endpoint() (string, error) {
	if c.URL == "" {
		return "", fmt.Errorf("%w: Client.URL is empty: set it to https://<IM and Presence node>:8443/axl/", ErrConfig)
	}
	u, err := url.Parse(c.URL)
	if err != nil {
		// url.Error repeats the URL, password included: keep only why.
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err
		}
		return "", fmt.Errorf("%w: invalid AXL URL: %w", ErrConfig, err)
	}
	switch {
	case u.User != nil:
		return "", fmt.Errorf("%w: AXL URL %s: put the credentials in Client.Username and Client.Password, not in the URL", ErrConfig, u.Redacted())
	case u.Scheme != "https":
		return "", fmt.Errorf("%w: AXL URL %s: must start with https:// (AXL serves https://<IM and Presence node>:8443/axl/; the credentials must not travel in clear)", ErrConfig, u.Redacted())
	case u.Host == "":
		return "", fmt.Errorf("%w: AXL URL %s has no host", ErrConfig, u.Redacted())
	}
	return u.String(), nil
}

// wrap makes err, found before or without a request, an *Error for op.
func (c *Client) wrap(op string, err error) error {
	var e *Error
	if errors.As(err, &e) {
		return err
	}
	endpoint, _ := c.endpoint() // "" when the URL itself is the problem
	return &Error{Function: op, URL: endpoint, Err: err}
}

// version returns the schema version to send.
func (c *Client) version() (string, error) {
	c.mu.Lock()
	v := c.negotiated
	c.mu.Unlock()
	if v != "" {
		return v, nil
	}
	if c.Version == "" {
		return DefaultVersion, nil
	}
	v = normalizeVersion(c.Version)
	if !wire.ValidVersion(v) {
		return "", fmt.Errorf("%w: Client.Version %q is not an AXL schema version such as 12.5 or 14.0", ErrConfig, c.Version)
	}
	return v, nil
}

func normalizeVersion(v string) string {
	v = strings.TrimSpace(v)
	if v != "" && !strings.Contains(v, ".") {
		v += ".0"
	}
	return v
}

// call sends stmt with op, retrying throttled attempts, and returns the
// decoded result; faults and failures come back as errors.
func (c *Client) call(ctx context.Context, op, stmt string) (*wire.Response, error) {
	endpoint, err := c.endpoint()
	if err != nil {
		return nil, &Error{Function: op, Err: err}
	}
	fail := func(err error) error { return &Error{Function: op, URL: endpoint, Err: err} }
	if !wire.ValidText(stmt) {
		return nil, fail(errors.New("the SQL statement contains characters XML cannot carry (invalid UTF-8, or control characters other than tab, CR and LF)"))
	}
	version, err := c.version()
	if err != nil {
		return nil, fail(err)
	}
	if _, err := c.httpClient(); err != nil {
		return nil, fail(err)
	}
	host := hostOf(endpoint)
	attempts := c.Attempts
	if attempts <= 0 {
		attempts = DefaultAttempts
	}
	log := c.logger().With(logkey.Function, op, logkey.URL, endpoint)
	switched := false
	for attempt := 1; ; attempt++ {
		resp, retryAfter, err := c.attempt(ctx, log, endpoint, host, op, version, stmt)
		if err == nil {
			return resp, nil
		}
		var he *HTTPError
		if !switched && errors.As(err, &he) && he.Err == ErrVersionUnsupported {
			if v := highest(he.Supported); v != "" && v != version {
				log.Info("AXL schema version not supported by the server, switching to the highest it lists: "+strings.Join(he.Supported, ", "),
					logkey.AXLVersion, v)
				c.mu.Lock()
				c.negotiated = v
				c.mu.Unlock()
				version, switched = v, true
				attempt-- // a version switch is not a throttling retry
				continue
			}
		}
		if !errors.Is(err, ErrThrottled) {
			return nil, fail(err)
		}
		if attempt >= attempts {
			return nil, fail(fmt.Errorf("gave up after %d attempts: %w", attempt, err))
		}
		wait := c.backoff(attempt, retryAfter)
		if deadline, ok := ctx.Deadline(); ok && time.Until(deadline) < wait {
			return nil, fail(fmt.Errorf("gave up after %d attempts, the next would come after the deadline: %w", attempt, err))
		}
		log.Warn("AXL request throttled, retrying", logkey.Attempt, attempt, logkey.Wait, wait, logkey.Err, err)
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			return nil, fail(classify(ctx, ctx, host, 0, ctx.Err()))
		case <-t.C:
		}
	}
}

// attempt makes one HTTP request. retryAfter is the server's Retry-After
// on a 503.
func (c *Client) attempt(ctx context.Context, log *slog.Logger, endpoint, host, op, version, stmt string) (_ *wire.Response, retryAfter time.Duration, _ error) {
	timeout := c.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	release, err := c.acquire(ctx)
	if err != nil {
		return nil, 0, fmt.Errorf("waiting for one of the Client's requests in flight (Client.MaxConcurrent): %w", classify(ctx, ctx, host, 0, err))
	}
	defer release()
	actx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	var body bytes.Buffer
	seq := strconv.FormatUint(c.seq.Add(1), 10)
	if err := wire.WriteRequest(&body, wire.Request{Op: op, Version: version, Sequence: seq, SQL: stmt}); err != nil {
		return nil, 0, err
	}
	req, err := http.NewRequestWithContext(actx, http.MethodPost, endpoint, &body)
	if err != nil {
		return nil, 0, err
	}
	req.Header.Set("Content-Type", "text/xml; charset=utf-8")
	req.Header.Set("Accept", "text/xml")
	// SOAP 1.1 wants the action quoted; the version must equal the one in
	// the body's namespace.
	req.Header.Set("SOAPAction", `"CUCM:DB ver=`+version+` `+op+`"`)
	req.SetBasicAuth(c.Username, c.Password)

	hc, err := c.httpClient()
	if err != nil {
		return nil, 0, err
	}
	start := time.Now()
	res, err := hc.Do(req)
	if err != nil {
		err = classify(ctx, actx, host, timeout, err)
		log.Debug("AXL request failed", logkey.Elapsed, time.Since(start), logkey.Err, err)
		return nil, 0, err
	}
	defer func() {
		// Drain a little so that the connection can be reused.
		_, _ = io.CopyN(io.Discard, res.Body, 64<<10)
		res.Body.Close()
	}()
	limit := c.MaxResponse
	if limit <= 0 {
		limit = DefaultMaxResponse
	}
	resp, err := decode(res, op, limit)
	if err != nil {
		var he *HTTPError
		var f *Fault
		if !errors.As(err, &he) && !errors.As(err, &f) {
			err = classify(ctx, actx, host, timeout, err)
		}
		if he != nil && he.StatusCode == http.StatusServiceUnavailable {
			retryAfter = parseRetryAfter(res.Header.Get("Retry-After"), time.Now())
		}
		log.Debug("AXL request failed", logkey.Status, res.StatusCode, logkey.Elapsed, time.Since(start), logkey.Err, err)
		return nil, retryAfter, err
	}
	n := resp.RowsUpdated
	if op == wire.OpQuery {
		n = len(resp.Rows)
	}
	log.Debug("AXL request", logkey.Status, res.StatusCode, logkey.Rows, n, logkey.Elapsed, time.Since(start), logkey.AXLVersion, version)
	return resp, 0, nil
}

// decode reads an HTTP answer: statuses first, because 401, 403 and 503
// bodies are HTML pages from the web server, not from AXL.
func decode(res *http.Response, op string, limit int64) (*wire.Response, error) {
	he := &HTTPError{StatusCode: res.StatusCode, ContentType: res.Header.Get("Content-Type")}
	switch res.StatusCode {
	case http.StatusUnauthorized:
		he.Err = ErrUnauthorized
		return nil, he
	case http.StatusForbidden:
		he.Err = ErrForbidden
		return nil, he
	case http.StatusServiceUnavailable:
		he.Err = ErrThrottled
		return nil, he
	case 599: // AXL's "Incorrect axl version"
		b, _ := io.ReadAll(io.LimitReader(res.Body, 64<<10))
		he.Err, he.Supported, he.Body = ErrVersionUnsupported, supportedVersions(string(b)), snippet(b)
		return nil, he
	}
	start := &capped{max: 200}
	lr := &limitReader{r: res.Body, n: limit, limit: limit}
	resp, err := wire.ParseResponse(io.TeeReader(lr, start), op)
	if err != nil {
		var me *wire.MalformedError
		if !errors.As(err, &me) {
			return nil, err // an I/O error, classified by the caller
		}
		he.Err, he.Reason, he.Body = ErrNotAXL, me.Reason, snippet(start.buf)
		if res.StatusCode/100 == 3 {
			he.Reason = "redirect to " + res.Header.Get("Location")
		}
		return nil, he
	}
	if resp.Fault != nil {
		f := resp.Fault
		return nil, &Fault{HTTPStatus: res.StatusCode, FaultCode: f.FaultCode, FaultString: f.FaultString,
			Code: f.AXLCode, HasCode: f.HasAXLCode, Message: f.AXLMessage, Request: f.Request}
	}
	if res.StatusCode != http.StatusOK {
		he.Err, he.Reason = ErrNotAXL, "an AXL result with a status other than 200 OK"
		return nil, he
	}
	return resp, nil
}

// limitReader fails, instead of ending quietly, past n bytes.
type limitReader struct {
	r     io.Reader
	n     int64
	limit int64
}

func (l *limitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, fmt.Errorf("the response is larger than %d bytes (Client.MaxResponse)", l.limit)
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// capped keeps the first max bytes written to it.
type capped struct {
	buf []byte
	max int
}

func (c *capped) Write(p []byte) (int, error) {
	if room := c.max - len(c.buf); room > 0 {
		c.buf = append(c.buf, p[:min(room, len(p))]...)
	}
	return len(p), nil
}

// snippet returns the start of a body as printable text for an error.
func snippet(b []byte) string {
	s := strings.ToValidUTF8(string(b), "?")
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 160 {
		s = s[:160] + "…"
	}
	return strings.ToValidUTF8(s, "")
}

func hostOf(endpoint string) string {
	if u, err := url.Parse(endpoint); err == nil {
		return u.Host
	}
	return endpoint
}

// backoff returns the wait before attempt+1: exponential with jitter (so
// that several cores do not retry in step), or the server's Retry-After if
// that is longer, capped at MaxBackoff.
func (c *Client) backoff(attempt int, retryAfter time.Duration) time.Duration {
	base := c.Backoff
	if base <= 0 {
		base = DefaultBackoff
	}
	d := base
	for i := 1; i < attempt && d < MaxBackoff; i++ {
		d *= 2
	}
	d = min(d, MaxBackoff)
	d = d/2 + rand.N(d/2+1)
	if retryAfter > d {
		d = min(retryAfter, MaxBackoff)
	}
	return d
}

func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if s, err := strconv.Atoi(v); err == nil && s >= 0 {
		return time.Duration(min(s, 3600)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now)
	}
	return 0
}

var supportedRE = regexp.MustCompile(`(?i)supported\s+axl\s+versions?\s*[:=]?\s*([0-9][0-9.,\s]*)`)

// supportedVersions reads the list in AXL's 599 answer, e.g. "Incorrect
// axl version. Supported axl versions: 11.5,12.5,14".
func supportedVersions(body string) []string {
	m := supportedRE.FindStringSubmatch(body)
	if m == nil {
		return nil
	}
	var out []string
	for _, f := range strings.FieldsFunc(m[1], func(r rune) bool { return r == ',' || r == ' ' || r == '\t' || r == '\n' || r == '\r' }) {
		if v := normalizeVersion(strings.TrimRight(f, ".")); wire.ValidVersion(v) {
			out = append(out, v)
		}
	}
	return out
}

// highest returns the highest of the versions, compared numerically.
func highest(versions []string) string {
	best, bestMajor, bestMinor := "", -1, -1
	for _, v := range versions {
		a, b, _ := strings.Cut(v, ".")
		major, err1 := strconv.Atoi(a)
		minor, err2 := strconv.Atoi(b)
		if err1 != nil || err2 != nil {
			continue
		}
		if major > bestMajor || major == bestMajor && minor > bestMinor {
			best, bestMajor, bestMinor = v, major, minor
		}
	}
	return best
}
