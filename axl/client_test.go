package axl_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/axl"
	"github.com/xmppfed/xmppfed/axl/axltest"
	"github.com/xmppfed/xmppfed/internal/testpki"
)

// newServer starts an axltest server and a client pinning its certificate,
// with retries that do not slow the tests down.
func newServer(t *testing.T, cfg axltest.Config) (*axltest.Server, *axl.Client) {
	t.Helper()
	cfg.Strict = true // the client must send what AXL documents
	s := axltest.New(t, cfg)
	c := s.Client()
	c.Backoff = time.Millisecond
	return s, c
}

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// Query and update round trips over HTTPS, with the server's certificate
// issued by a test CA and verified by name.
func TestRoundTripVerifiedTLS(t *testing.T) {
	ca := testpki.NewCA(t)
	leaf := ca.Leaf(t, "imp.example.test")
	s := axltest.New(t, axltest.Config{Certificate: &leaf})
	c := &axl.Client{
		URL: s.URL(), Username: axltest.DefaultUsername, Password: axltest.DefaultPassword,
		TLSConfig: &tls.Config{RootCAs: ca.Pool(), ServerName: "imp.example.test"},
	}
	t.Cleanup(c.CloseIdleConnections)
	ctx := ctxT(t)

	n, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", "055c13d9-943d-459d-a3c6-af1d1176936d", "cm-2_s2scp-1.eft-xwye-a-coluc-com")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	n, err = c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (newid(), ?)", "cm-1_s2scp-1.exp-e2-example-com")
	require.NoError(t, err)
	assert.Equal(t, 1, n)

	rows, err := c.Query(ctx, "SELECT pkid, cp_id FROM xmpps2snodes WHERE cp_id = ?", "cm-2_s2scp-1.eft-xwye-a-coluc-com")
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, []string{"pkid", "cp_id"}, rows[0].Columns())
	assert.Equal(t, []string{"055c13d9-943d-459d-a3c6-af1d1176936d", "cm-2_s2scp-1.eft-xwye-a-coluc-com"}, rows[0].Values())
	v, ok := rows[0].Get("CP_ID")
	assert.True(t, ok)
	assert.Equal(t, "cm-2_s2scp-1.eft-xwye-a-coluc-com", v)
	_, ok = rows[0].Get("nope")
	assert.False(t, ok)

	rows, err = c.Query(ctx, "SELECT count(*) AS n, NULL AS empty FROM xmpps2snodes")
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, `n="2" empty=""`, rows[0].String())

	rows, err = c.Query(ctx, "SELECT pkid FROM xmpps2snodes WHERE 1 = 0")
	require.NoError(t, err)
	assert.Empty(t, rows)

	n, err = c.Update(ctx, "DELETE FROM xmpps2snodes")
	require.NoError(t, err)
	assert.Equal(t, 2, n)

	calls := s.Calls()
	require.Len(t, calls, 6)
	assert.Equal(t, `"CUCM:DB ver=12.5 executeSQLUpdate"`, calls[0].SOAPAction)
	assert.Equal(t, `"CUCM:DB ver=12.5 executeSQLQuery"`, calls[2].SOAPAction)
	assert.Equal(t, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES ('055c13d9-943d-459d-a3c6-af1d1176936d', 'cm-2_s2scp-1.eft-xwye-a-coluc-com')", calls[0].SQL)
	assert.Equal(t, axltest.DefaultUsername, calls[0].Username)
}

// Test vector 13 of the spec notes: the headers, and the connection pool
// (one TLS connection for several requests).
func TestHeadersAndKeepAlive(t *testing.T) {
	s := axltest.New(t, axltest.Config{Username: "axluser", Password: "axlpass"})
	var (
		mu      sync.Mutex
		headers []http.Header
		conns   atomic.Int32
	)
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		headers = append(headers, r.Header.Clone())
		mu.Unlock()
		s.ServeHTTP(w, r)
	}))
	front.Config.ConnState = func(_ net.Conn, st http.ConnState) {
		if st == http.StateNew {
			conns.Add(1)
		}
	}
	cert := testpki.SelfSigned(t, "imp.example.test")
	front.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	front.StartTLS()
	t.Cleanup(front.Close)

	c := &axl.Client{URL: front.URL + "/axl/", Username: "axluser", Password: "axlpass", TLSConfig: axl.PinCertificates(cert.Leaf)}
	t.Cleanup(c.CloseIdleConnections)
	for range 5 {
		_, err := c.Query(ctxT(t), "SELECT pkid FROM xmpps2snodes")
		require.NoError(t, err)
	}
	assert.EqualValues(t, 1, conns.Load(), "requests should share one kept-alive connection")
	require.Len(t, headers, 5)
	h := headers[0]
	assert.Equal(t, `"CUCM:DB ver=12.5 executeSQLQuery"`, h.Get("SOAPAction"))
	assert.Equal(t, "text/xml; charset=utf-8", h.Get("Content-Type"))
	assert.Equal(t, "Basic YXhsdXNlcjpheGxwYXNz", h.Get("Authorization"))
}

func TestUnauthorized(t *testing.T) {
	s, c := newServer(t, axltest.Config{})
	c.Password = "wrong"
	_, err := c.Query(ctxT(t), "SELECT pkid FROM xmpps2snodes")
	require.ErrorIs(t, err, axl.ErrUnauthorized)
	var he *axl.HTTPError
	require.ErrorAs(t, err, &he)
	assert.Equal(t, http.StatusUnauthorized, he.StatusCode)
	var ae *axl.Error
	require.ErrorAs(t, err, &ae)
	assert.Equal(t, "executeSQLQuery", ae.Function)
	assert.Equal(t, s.URL(), ae.URL)
	msg := err.Error()
	assert.Contains(t, msg, "HTTP 401")
	assert.Contains(t, msg, "check the credentials of the IM and Presence application user configured on the core")
	assert.Contains(t, msg, "refresh IM and Presence server discovery")
	assert.NotContains(t, msg, "wrong", "the password must not appear in errors")
	assert.Len(t, s.Calls(), 1, "a 401 is not retried")
}

func TestFaults(t *testing.T) {
	_, c := newServer(t, axltest.Config{})
	ctx := ctxT(t)
	_, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES ('a', 'x')")
	require.NoError(t, err)

	tests := []struct {
		name   string
		update bool
		sql    string
		code   int
		is     error
		msg    string
	}{
		{"duplicate", true, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES ('b', 'x')", -239, axl.ErrDuplicate, "duplicate value in a UNIQUE INDEX"},
		{"syntax", false, "SELEC pkid FROM xmpps2snodes", -1, nil, "SELECT statements only"},
		{"syntax in select", false, "SELECT pkid FROM xmpps2snodes WHERE", -201, nil, "A syntax error has occurred"},
		{"no table", false, "SELECT pkid FROM nosuchtable", -206, nil, "The specified table (nosuchtable) is not in the database"},
		{"no column", false, "SELECT nosuchcolumn FROM xmpps2snodes", -217, nil, "Column (nosuchcolumn) not found"},
		{"not null", true, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES ('c', NULL)", -391, nil, "Cannot insert a null into column"},
		{"ddl refused", true, "DROP TABLE xmpps2snodes", -1, nil, "INSERT, UPDATE and DELETE statements only"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if tt.update {
				_, err = c.Update(ctx, tt.sql)
			} else {
				_, err = c.Query(ctx, tt.sql)
			}
			var f *axl.Fault
			require.ErrorAs(t, err, &f)
			assert.True(t, f.HasCode)
			assert.Equal(t, tt.code, f.Code)
			assert.Equal(t, "soapenv:Client", f.FaultCode)
			assert.Equal(t, http.StatusInternalServerError, f.HTTPStatus)
			assert.Contains(t, f.Message, tt.msg)
			assert.Contains(t, err.Error(), fmt.Sprintf("AXL fault %d", tt.code))
			if tt.is != nil {
				assert.ErrorIs(t, err, tt.is)
			}
			assert.NotErrorIs(t, err, axl.ErrThrottled)
		})
	}
	rows, err := c.Query(ctx, "SELECT count(*) AS n FROM xmpps2snodes")
	require.NoError(t, err)
	v, _ := rows[0].Get("n")
	assert.Equal(t, "1", v, "the table survives")
}

func TestResultTooLarge(t *testing.T) {
	_, c := newServer(t, axltest.Config{MaxRows: 1, Nodes: []axl.S2SNode{{PKID: "1", CPID: "a"}, {PKID: "2", CPID: "b"}}})
	_, err := c.Query(ctxT(t), "SELECT * FROM xmpps2snodes")
	require.ErrorIs(t, err, axl.ErrResultTooLarge)
	assert.Contains(t, err.Error(), "Query request too large")
	assert.NotErrorIs(t, err, axl.ErrThrottled)
}

func TestThrottlingRetried(t *testing.T) {
	for _, how := range []axltest.Throttling{axltest.ThrottleHTTP, axltest.ThrottleFault} {
		t.Run(fmt.Sprint(how), func(t *testing.T) {
			s, c := newServer(t, axltest.Config{})
			s.Throttle(2, how)
			n, err := c.Update(ctxT(t), "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", "p", "c")
			require.NoError(t, err)
			assert.Equal(t, 1, n)
			calls := s.Calls()
			require.Len(t, calls, 3)
			want := http.StatusServiceUnavailable
			if how == axltest.ThrottleFault {
				want = http.StatusInternalServerError
			}
			assert.Equal(t, []int{want, want, http.StatusOK}, []int{calls[0].Status, calls[1].Status, calls[2].Status})
			rows, err := c.Query(ctxT(t), "SELECT cp_id FROM xmpps2snodes")
			require.NoError(t, err)
			assert.Len(t, rows, 1, "the insert ran exactly once")
		})
	}
}

func TestThrottlingGivesUp(t *testing.T) {
	s, c := newServer(t, axltest.Config{})
	c.Attempts = 3
	s.Throttle(10, axltest.ThrottleHTTP)
	_, err := c.Query(ctxT(t), "SELECT pkid FROM xmpps2snodes")
	require.ErrorIs(t, err, axl.ErrThrottled)
	assert.Contains(t, err.Error(), "gave up after 3 attempts")
	assert.Len(t, s.Calls(), 3)

	// A retry that would come after the deadline is not attempted.
	c.Backoff = time.Minute
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	start := time.Now()
	_, err = c.Query(ctx, "SELECT pkid FROM xmpps2snodes")
	require.ErrorIs(t, err, axl.ErrThrottled)
	assert.Contains(t, err.Error(), "after the deadline")
	assert.Less(t, time.Since(start), time.Second)
}

// notify is a slog handler that signals each record at or above a level,
// with the attributes added by With.
type notify struct {
	level slog.Level
	ch    chan slog.Record
	attrs []slog.Attr
}

func (n notify) Enabled(_ context.Context, l slog.Level) bool { return l >= n.level }
func (n notify) Handle(_ context.Context, r slog.Record) error {
	r = r.Clone()
	r.AddAttrs(n.attrs...)
	select {
	case n.ch <- r:
	default:
	}
	return nil
}
func (n notify) WithAttrs(as []slog.Attr) slog.Handler {
	n.attrs = append(append([]slog.Attr(nil), n.attrs...), as...)
	return n
}
func (n notify) WithGroup(string) slog.Handler { return n }

func TestCancellation(t *testing.T) {
	t.Run("while the server holds the request", func(t *testing.T) {
		s, c := newServer(t, axltest.Config{})
		arrived, release := s.Hold()
		defer release()
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := c.Query(ctx, "SELECT pkid FROM xmpps2snodes")
			done <- err
		}()
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the request did not reach the server")
		}
		cancel()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled)
			assert.NotErrorIs(t, err, axl.ErrTimeout)
		case <-time.After(5 * time.Second):
			t.Fatal("Query did not return after its context was canceled")
		}
	})
	t.Run("deadline", func(t *testing.T) {
		s, c := newServer(t, axltest.Config{})
		_, release := s.Hold()
		defer release()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		_, err := c.Update(ctx, "DELETE FROM xmpps2snodes")
		require.ErrorIs(t, err, axl.ErrTimeout)
		require.ErrorIs(t, err, context.DeadlineExceeded)
		var ae *axl.Error
		require.ErrorAs(t, err, &ae)
		assert.True(t, ae.Timeout())
	})
	t.Run("per-attempt timeout", func(t *testing.T) {
		s, c := newServer(t, axltest.Config{})
		_, release := s.Hold()
		defer release()
		c.Timeout = 100 * time.Millisecond
		_, err := c.Query(ctxT(t), "SELECT 1 AS one")
		require.ErrorIs(t, err, axl.ErrTimeout)
		assert.Contains(t, err.Error(), "no answer within 100ms")
	})
	t.Run("during back-off", func(t *testing.T) {
		s, c := newServer(t, axltest.Config{})
		warned := make(chan slog.Record, 1)
		c.Logger = slog.New(notify{level: slog.LevelWarn, ch: warned})
		c.Backoff = time.Minute
		s.Throttle(1, axltest.ThrottleHTTP)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() {
			_, err := c.Query(ctx, "SELECT pkid FROM xmpps2snodes")
			done <- err
		}()
		select {
		case r := <-warned:
			assert.Contains(t, r.Message, "throttled")
		case <-time.After(5 * time.Second):
			t.Fatal("no throttling warning")
		}
		cancel()
		select {
		case err := <-done:
			require.ErrorIs(t, err, context.Canceled)
		case <-time.After(5 * time.Second):
			t.Fatal("Query did not return after its context was canceled")
		}
		assert.Len(t, s.Calls(), 1)
	})
}

// The hostile value of the issue, and others, are stored and read back
// verbatim, and the table survives.
func TestHostileValues(t *testing.T) {
	_, c := newServer(t, axltest.Config{})
	ctx := ctxT(t)
	hostile := []string{
		"'; drop table xmpps2snodes; --",
		"x'); DROP TABLE xmpps2snodes; --",
		"'' OR 1=1 --",
		"O'Brien",
		"'",
		"''",
		"?",
		"-- comment",
		"/* open",
		"{ open",
		`"`,
		"]]><sql>DROP TABLE xmpps2snodes</sql>",
		"&amp; &lt; <",
		"Zürich 😀 \u202e",
	}
	for i, v := range hostile {
		pkid := fmt.Sprintf("pkid-%02d", i)
		n, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", pkid, v)
		require.NoError(t, err, v)
		require.Equal(t, 1, n, v)
		rows, err := c.Query(ctx, "SELECT cp_id, ? AS echo FROM xmpps2snodes WHERE pkid = ?", v, pkid)
		require.NoError(t, err, v)
		require.Len(t, rows, 1, v)
		assert.Equal(t, []string{v, v}, rows[0].Values())
	}
	nodes, err := c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Len(t, nodes, len(hostile))
	var got []string
	for _, n := range nodes {
		got = append(got, n.CPID)
	}
	assert.ElementsMatch(t, hostile, got)
}

func TestTLSFailures(t *testing.T) {
	ca := testpki.NewCA(t)
	good := ca.Leaf(t, "imp.example.test")
	expired := ca.Issue(t, testpki.Spec{DNSNames: []string{"imp.example.test"},
		NotBefore: time.Now().Add(-48 * time.Hour), NotAfter: time.Now().Add(-24 * time.Hour)})
	other := testpki.SelfSigned(t, "other.example.test")

	tests := []struct {
		name   string
		cert   tls.Certificate
		cfg    *tls.Config
		reason string
		as     any
	}{
		{"unknown authority", good, &tls.Config{ServerName: "imp.example.test"}, "certificate signed by unknown authority", &x509.UnknownAuthorityError{}},
		{"wrong host", good, &tls.Config{RootCAs: ca.Pool(), ServerName: "imp2.example.test"}, "wrong host: the certificate is for imp.example.test, not imp2.example.test", &x509.HostnameError{}},
		{"wrong host by IP", good, &tls.Config{RootCAs: ca.Pool()}, "wrong host", &x509.HostnameError{}},
		{"expired", expired, &tls.Config{RootCAs: ca.Pool(), ServerName: "imp.example.test"}, "certificate expired or not yet valid", &x509.CertificateInvalidError{}},
		{"pin mismatch", good, axl.PinCertificates(other.Leaf), "certificate does not match the pin", nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cert := tt.cert
			s := axltest.New(t, axltest.Config{Certificate: &cert})
			c := &axl.Client{URL: s.URL(), Username: axltest.DefaultUsername, Password: axltest.DefaultPassword, TLSConfig: tt.cfg}
			t.Cleanup(c.CloseIdleConnections)
			_, err := c.Query(ctxT(t), "SELECT 1 AS one")
			require.ErrorIs(t, err, axl.ErrTLS)
			var te *axl.TLSError
			require.ErrorAs(t, err, &te)
			assert.Contains(t, te.Reason, tt.reason)
			assert.Equal(t, s.Addr(), te.Host)
			switch want := tt.as.(type) {
			case *x509.UnknownAuthorityError:
				assert.ErrorAs(t, err, want)
			case *x509.HostnameError:
				assert.ErrorAs(t, err, want)
			case *x509.CertificateInvalidError:
				assert.ErrorAs(t, err, want)
			case nil:
				assert.ErrorIs(t, err, axl.ErrPinMismatch)
			}
			assert.Empty(t, s.Calls(), "no request may pass a failed handshake")
		})
	}

	t.Run("not TLS", func(t *testing.T) {
		plain := httptest.NewServer(http.NotFoundHandler())
		t.Cleanup(plain.Close)
		c := &axl.Client{URL: strings.Replace(plain.URL, "http://", "https://", 1) + "/axl/"}
		t.Cleanup(c.CloseIdleConnections)
		_, err := c.Query(ctxT(t), "SELECT 1 AS one")
		var te *axl.TLSError
		require.ErrorAs(t, err, &te)
		assert.Contains(t, err.Error(), "did not answer with TLS")
	})
}

func TestPinFingerprints(t *testing.T) {
	s := axltest.New(t, axltest.Config{})
	fp := axl.Fingerprint(s.Certificate())
	assert.Regexp(t, `^([0-9A-F]{2}:){31}[0-9A-F]{2}$`, fp)
	cfg, err := axl.PinFingerprints("00:11", strings.ToLower(fp))
	assert.Error(t, err, "a short fingerprint is refused")
	assert.Nil(t, cfg)
	cfg, err = axl.PinFingerprints(strings.ToLower(strings.ReplaceAll(fp, ":", " ")))
	require.NoError(t, err)
	c := &axl.Client{URL: s.URL(), Username: axltest.DefaultUsername, Password: axltest.DefaultPassword, TLSConfig: cfg}
	t.Cleanup(c.CloseIdleConnections)
	_, err = c.Query(ctxT(t), "SELECT 1 AS one")
	require.NoError(t, err)
	_, err = axl.PinFingerprints()
	assert.Error(t, err)
}

// rawServer serves h over HTTPS with a pinned self-signed certificate.
func rawServer(t *testing.T, h http.HandlerFunc) *axl.Client {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	cert := testpki.SelfSigned(t, "imp.example.test")
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	c := &axl.Client{URL: srv.URL + "/axl/", Username: "u", Password: "p", TLSConfig: axl.PinCertificates(cert.Leaf), Backoff: time.Millisecond}
	t.Cleanup(c.CloseIdleConnections)
	return c
}

func TestNotAXL(t *testing.T) {
	tests := []struct {
		name   string
		status int
		ctype  string
		body   string
		reason string
	}{
		{"login page", 200, "text/html", "<!DOCTYPE html><html><head><title>Cisco Unified CM IM and Presence Administration</title></head><body></body></html>", "the document element is <html>"},
		{"not found", 404, "text/html", "<html><body>Not Found</body></html>", "the document element is <html>"},
		{"JSON", 200, "application/json", `{"ok":true}`, "text before the document element"},
		{"bad XML", 200, "text/xml", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><a></b>`, "not well-formed XML"},
		{"empty", 200, "text/xml", "", "empty document"},
		{"other SOAP service", 200, "text/xml", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><r:selectCmDeviceResponse xmlns:r="http://schemas.cisco.com/ast/soap"/></s:Body></s:Envelope>`, "not an AXL executeSQLQueryResponse"},
		{"redirect", 302, "text/html", "", "redirect to https://imp.example.test/ccmadmin/"},
		{"error status with result", 404, "text/xml", `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"/></s:Body></s:Envelope>`, "status other than 200"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", tt.ctype)
				if tt.status == 302 {
					w.Header().Set("Location", "https://imp.example.test/ccmadmin/")
				}
				w.WriteHeader(tt.status)
				io.WriteString(w, tt.body)
			})
			_, err := c.Query(ctxT(t), "SELECT 1 AS one")
			require.ErrorIs(t, err, axl.ErrNotAXL)
			var he *axl.HTTPError
			require.ErrorAs(t, err, &he)
			assert.Equal(t, tt.status, he.StatusCode)
			assert.Contains(t, he.Reason, tt.reason)
			assert.Contains(t, err.Error(), "https://<IM and Presence node>:8443/axl/")
		})
	}
}

func TestHTTPStatuses(t *testing.T) {
	t.Run("403", func(t *testing.T) {
		c := rawServer(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusForbidden) })
		_, err := c.Update(ctxT(t), "DELETE FROM t")
		require.ErrorIs(t, err, axl.ErrForbidden)
		assert.Contains(t, err.Error(), "Standard AXL API Access")
	})
	t.Run("503 with Retry-After", func(t *testing.T) {
		var n atomic.Int32
		var first, second time.Time
		c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				first = time.Now()
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusServiceUnavailable)
				return
			}
			second = time.Now()
			w.Header().Set("Content-Type", "text/xml")
			io.WriteString(w, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLUpdateResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return><rowsUpdated>3</rowsUpdated></return></n:executeSQLUpdateResponse></s:Body></s:Envelope>`)
		})
		got, err := c.Update(ctxT(t), "DELETE FROM t")
		require.NoError(t, err)
		assert.Equal(t, 3, got)
		assert.GreaterOrEqual(t, second.Sub(first), 900*time.Millisecond, "Retry-After is honoured")
	})
	t.Run("response too large", func(t *testing.T) {
		c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/xml")
			io.WriteString(w, `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return><row><v>`)
			chunk := strings.Repeat("x", 64<<10)
			for range 17 {
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		})
		c.MaxResponse = 1 << 20
		_, err := c.Query(ctxT(t), "SELECT 1 AS one")
		require.Error(t, err)
		assert.Contains(t, err.Error(), "larger than 1048576 bytes")
	})
}

func TestVersionNegotiation(t *testing.T) {
	s, c := newServer(t, axltest.Config{Versions: []string{"11.5", "14.0"}})
	ctx := ctxT(t)
	_, err := c.Query(ctx, "SELECT 1 AS one")
	require.NoError(t, err)
	_, err = c.Query(ctx, "SELECT 1 AS one")
	require.NoError(t, err)
	var versions []string
	for _, call := range s.Calls() {
		versions = append(versions, call.Version)
	}
	assert.Equal(t, []string{"12.5", "14.0", "14.0"}, versions)
	assert.Equal(t, 599, s.Calls()[0].Status)

	// "14" means "14.0"; a version the server lacks and cannot replace
	// after one switch is reported.
	c2 := s.Client()
	c2.Version = "14"
	_, err = c2.Query(ctx, "SELECT 1 AS one")
	require.NoError(t, err)
	assert.Equal(t, `"CUCM:DB ver=14.0 executeSQLQuery"`, s.Calls()[3].SOAPAction)

	c3 := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(599)
		io.WriteString(w, "Incorrect axl version. Supported axl versions: 11.5,12.5")
	})
	_, err = c3.Query(ctx, "SELECT 1 AS one")
	require.ErrorIs(t, err, axl.ErrVersionUnsupported)
	assert.Contains(t, err.Error(), "supported versions: 11.5, 12.5")

	c4 := s.Client()
	c4.Version = "twelve"
	_, err = c4.Query(ctx, "SELECT 1 AS one")
	assert.ErrorContains(t, err, `Client.Version "twelve"`)
}

func TestConfigErrors(t *testing.T) {
	ctx := ctxT(t)
	for _, tt := range []struct{ url, msg string }{
		{"", "Client.URL is empty"},
		{"http://imp.example.test:8080/axl/", "must start with https://"},
		{"https://admin:secret@imp.example.test:8443/axl/", "not in the URL"},
		{"https:///axl/", "has no host"},
		{"https://imp.example.test:8443/axl/%zz", "invalid AXL URL"},
	} {
		c := &axl.Client{URL: tt.url}
		_, err := c.Query(ctx, "SELECT 1 AS one")
		require.Error(t, err, tt.url)
		assert.Contains(t, err.Error(), tt.msg)
		assert.NotContains(t, err.Error(), "secret")
	}
	c := &axl.Client{URL: "https://imp.example.test:8443/axl/"}
	_, err := c.Query(ctx, "SELECT 1 AS one -- \x00")
	assert.ErrorContains(t, err, "characters XML cannot carry")
	_, err = c.Query(ctx, "SELECT ? AS one", "\x00")
	assert.ErrorIs(t, err, axl.ErrUnsafeValue)
}

func TestUnreachable(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := ln.Addr().String()
	require.NoError(t, ln.Close())
	c := &axl.Client{URL: "https://" + addr + "/axl/"}
	t.Cleanup(c.CloseIdleConnections)
	_, err = c.Query(ctxT(t), "SELECT 1 AS one")
	require.ErrorIs(t, err, axl.ErrUnreachable)
	assert.Contains(t, err.Error(), "connection refused")
}

func TestConcurrentUse(t *testing.T) {
	_, c := newServer(t, axltest.Config{})
	ctx := ctxT(t)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for i := range 20 {
		wg.Go(func() {
			if _, err := c.Update(ctx, "INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (?, ?)", i, fmt.Sprint("c", i)); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	nodes, err := c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Len(t, nodes, 20)
}

func TestDebugLogging(t *testing.T) {
	_, c := newServer(t, axltest.Config{})
	ch := make(chan slog.Record, 4)
	c.Logger = slog.New(notify{level: slog.LevelDebug, ch: ch})
	_, err := c.Query(ctxT(t), "SELECT 1 AS one")
	require.NoError(t, err)
	r := <-ch
	attrs := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	assert.Equal(t, "executeSQLQuery", attrs["function"])
	assert.Equal(t, "200", attrs["status"])
	assert.Equal(t, "1", attrs["rows"])
}

func TestErrorsAreDistinct(t *testing.T) {
	all := []error{axl.ErrUnauthorized, axl.ErrForbidden, axl.ErrThrottled, axl.ErrNotAXL, axl.ErrVersionUnsupported,
		axl.ErrTLS, axl.ErrPinMismatch, axl.ErrTimeout, axl.ErrUnreachable, axl.ErrUnsafeValue, axl.ErrBind,
		axl.ErrDuplicate, axl.ErrResultTooLarge, axl.ErrInvalidNode, axl.ErrConfig}
	for i, a := range all {
		for j, b := range all {
			assert.Equal(t, i == j, errors.Is(a, b), "%v / %v", a, b)
		}
	}
}

// Only AXL's read-throttle fault is retried: a Server fault with the
// "Maximum AXL Memory Allocation Consumed" text and no code or -1. A fault
// that merely mentions throttling, like one quoting the statement, is not.
func TestFaultThrottled(t *testing.T) {
	const memory = "Maximum AXL Memory Allocation Consumed. Please retry once requests in progress have completed"
	tests := []struct {
		name string
		f    axl.Fault
		want bool
	}{
		{"Cisco's example", axl.Fault{FaultCode: "soapenv:Server", FaultString: memory, Code: -1, HasCode: true, Message: memory}, true},
		{"no detail", axl.Fault{FaultCode: "SOAP-ENV:Server", FaultString: memory}, true},
		{"unprefixed, refined", axl.Fault{FaultCode: "Server.Busy", Message: strings.ToUpper(memory)}, true},
		{"column named throttled", axl.Fault{FaultCode: "soapenv:Client", FaultString: "Column (throttled) not found in any table in the query (or SLV is undefined).", Code: -217, HasCode: true}, false},
		{"throttl anywhere", axl.Fault{FaultCode: "soapenv:Server", FaultString: "request throttled, try again later"}, false},
		{"client fault with the text", axl.Fault{FaultCode: "soapenv:Client", FaultString: memory, Code: -1, HasCode: true}, false},
		{"other code with the text", axl.Fault{FaultCode: "soapenv:Server", FaultString: memory, Code: -239, HasCode: true}, false},
		{"result too large", axl.Fault{FaultCode: "soapenv:Server", FaultString: "Query request too large. Total rows matched: 2816 rows.", Code: -1, HasCode: true}, false},
		{"Serverless", axl.Fault{FaultCode: "soapenv:ServerX", FaultString: memory}, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			assert.Equal(t, tt.want, tt.f.Throttled())
			assert.Equal(t, tt.want, errors.Is(&tt.f, axl.ErrThrottled))
		})
	}
}

// "SELECT throttled FROM …" fails once; it was retried five times when any
// fault text mentioning throttling counted.
func TestFaultQuotingThrottledNotRetried(t *testing.T) {
	s, c := newServer(t, axltest.Config{})
	_, err := c.Query(ctxT(t), "SELECT throttled FROM xmpps2snodes")
	var f *axl.Fault
	require.ErrorAs(t, err, &f)
	assert.Equal(t, -217, f.Code)
	assert.NotErrorIs(t, err, axl.ErrThrottled)
	assert.Len(t, s.Calls(), 1)
}

// A hostile server cannot make the client hold more than a bounded amount:
// deep nesting and floods of empty cells are refused as not AXL.
func TestHostileResponses(t *testing.T) {
	const head = `<s:Envelope xmlns:s="http://schemas.xmlsoap.org/soap/envelope/"><s:Body><n:executeSQLQueryResponse xmlns:n="http://www.cisco.com/AXL/API/12.5"><return>`
	tests := []struct {
		name   string
		body   func(w io.Writer)
		reason string
	}{
		{"nested tags", func(w io.Writer) {
			// In an element the parser skips.
			io.WriteString(w, head+"<extension>")
			for range 1 << 16 {
				if _, err := io.WriteString(w, "<a>"); err != nil {
					return
				}
			}
		}, "nested deeper than 32 levels"},
		{"many empty columns", func(w io.Writer) {
			io.WriteString(w, head+"<row>")
			chunk := strings.Repeat("<c/>", 1<<12)
			for range 512 { // 8 MB
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		}, "more than 262144 rows and columns"},
		{"many empty rows", func(w io.Writer) {
			io.WriteString(w, head)
			chunk := strings.Repeat("<row/>", 1<<12)
			for range 340 { // 8 MB
				if _, err := io.WriteString(w, chunk); err != nil {
					return
				}
			}
		}, "more than 262144 rows and columns"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := rawServer(t, func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/xml")
				tt.body(w)
			})
			_, err := c.Query(ctxT(t), "SELECT 1 AS one")
			require.ErrorIs(t, err, axl.ErrNotAXL)
			var he *axl.HTTPError
			require.ErrorAs(t, err, &he)
			assert.Contains(t, he.Reason, tt.reason)
		})
	}
	assert.EqualValues(t, 9<<20, axl.DefaultMaxResponse, "AXL's 8 MB and an envelope")
}

// TLSConfig would be silently ignored next to HTTPClient: both set is an
// error, before any request.
func TestHTTPClientField(t *testing.T) {
	s := axltest.New(t, axltest.Config{Strict: true})
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: axl.PinCertificates(s.Certificate())}}
	t.Cleanup(hc.CloseIdleConnections)
	c := &axl.Client{URL: s.URL(), Username: axltest.DefaultUsername, Password: axltest.DefaultPassword, HTTPClient: hc}
	rows, err := c.Query(ctxT(t), "SELECT 1 AS one")
	require.NoError(t, err)
	assert.Len(t, rows, 1)

	c.TLSConfig = &tls.Config{InsecureSkipVerify: true}
	_, err = c.Query(ctxT(t), "SELECT 1 AS one")
	require.ErrorIs(t, err, axl.ErrConfig)
	assert.Contains(t, err.Error(), "Client.TLSConfig and Client.HTTPClient are both set")
	var ae *axl.Error
	require.ErrorAs(t, err, &ae)
	assert.Len(t, s.Calls(), 1, "no request with an ambiguous configuration")
}

// Every error from the Client's methods is an *Error, including those
// found before a request, and still matches its sentinel.
func TestErrorsWrapped(t *testing.T) {
	s, c := newServer(t, axltest.Config{})
	ctx := ctxT(t)
	check := func(err error, sentinel error, op, url string) {
		t.Helper()
		require.ErrorIs(t, err, sentinel)
		var ae *axl.Error
		require.ErrorAs(t, err, &ae)
		assert.Equal(t, op, ae.Function)
		assert.Equal(t, url, ae.URL)
		assert.NotContains(t, err.Error(), "axl: axl:")
		assert.True(t, strings.HasPrefix(err.Error(), "axl: "+op), err.Error())
	}
	_, err := c.Query(ctx, "SELECT ?, ?", 1)
	check(err, axl.ErrBind, "executeSQLQuery", s.URL())
	_, err = c.Update(ctx, "DELETE FROM xmpps2snodes WHERE cp_id = ?", "a\x00")
	check(err, axl.ErrUnsafeValue, "executeSQLUpdate", s.URL())
	var ve *axl.ValueError
	assert.ErrorAs(t, err, &ve)
	_, _, err = c.EnsureS2SNode(ctx, "")
	check(err, axl.ErrInvalidNode, "executeSQLUpdate", s.URL())

	c2 := s.Client()
	c2.Version = "twelve"
	_, err = c2.Query(ctx, "SELECT 1 AS one")
	check(err, axl.ErrConfig, "executeSQLQuery", s.URL())
	_, err = (&axl.Client{}).Update(ctx, "DELETE FROM xmpps2snodes")
	check(err, axl.ErrConfig, "executeSQLUpdate", "")
	assert.Contains(t, err.Error(), "Client.URL is empty")
	_, err = (&axl.Client{URL: "https://admin:secret@imp.example.test/%zz"}).Query(ctx, "SELECT ?", 1)
	check(err, axl.ErrConfig, "executeSQLQuery", "")
	assert.NotContains(t, err.Error(), "secret")
	assert.Empty(t, s.Calls())
}

// A Client has at most MaxConcurrent (default 2) requests in flight; the
// others wait for a slot within their context.
func TestMaxConcurrent(t *testing.T) {
	s := axltest.New(t, axltest.Config{Strict: true})
	var seen atomic.Int32
	front := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		seen.Add(1)
		s.ServeHTTP(w, r)
	}))
	cert := testpki.SelfSigned(t, "imp.example.test")
	front.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
	front.StartTLS()
	t.Cleanup(front.Close)
	c := &axl.Client{URL: front.URL + "/axl/", Username: axltest.DefaultUsername, Password: axltest.DefaultPassword, TLSConfig: axl.PinCertificates(cert.Leaf)}
	t.Cleanup(c.CloseIdleConnections)

	arrived, release := s.Hold()
	defer release()
	done := make(chan error, 2)
	for range 2 {
		go func() {
			_, err := c.Query(ctxT(t), "SELECT 1 AS one")
			done <- err
		}()
	}
	for range 2 {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("the first two requests did not reach the server")
		}
	}
	// A third waits for a slot and gives up with its context, unsent.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.Query(ctx, "SELECT 1 AS one")
	require.ErrorIs(t, err, axl.ErrTimeout)
	assert.Contains(t, err.Error(), "Client.MaxConcurrent")
	assert.EqualValues(t, 2, seen.Load())

	release()
	for range 2 {
		select {
		case err := <-done:
			require.NoError(t, err)
		case <-time.After(5 * time.Second):
			t.Fatal("held requests did not complete")
		}
	}
	_, err = c.Query(ctxT(t), "SELECT 1 AS one")
	require.NoError(t, err, "slots are returned")

	// No limit: all four reach the server together.
	c.CloseIdleConnections()
	c2 := &axl.Client{URL: c.URL, Username: c.Username, Password: c.Password, TLSConfig: c.TLSConfig, MaxConcurrent: -1}
	t.Cleanup(c2.CloseIdleConnections)
	arrived, release2 := s.Hold()
	defer release2()
	for range 4 {
		go func() {
			_, err := c2.Query(ctxT(t), "SELECT 1 AS one")
			done <- err
		}()
	}
	for range 4 {
		select {
		case <-arrived:
		case <-time.After(5 * time.Second):
			t.Fatal("MaxConcurrent -1 still limits")
		}
	}
	release2()
	for range 4 {
		require.NoError(t, <-done)
	}
}
