package axltest_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/xmppfed/xmppfed/axl"
	"github.com/xmppfed/xmppfed/axl/axltest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	t.Cleanup(cancel)
	return ctx
}

const envelope = `<?xml version="1.0" encoding="UTF-8"?>
<soapenv:Envelope xmlns:soapenv="http://schemas.xmlsoap.org/soap/envelope/" xmlns:ns="http://www.cisco.com/AXL/API/12.5">
<soapenv:Header/><soapenv:Body><ns:executeSQLQuery sequence="7"><sql>SELECT count(*) FROM xmpps2snodes</sql></ns:executeSQLQuery></soapenv:Body></soapenv:Envelope>`

// post sends a raw request to s and returns the status and body.
func post(t *testing.T, s *axltest.Server, method, path, action, body string, auth bool) (int, http.Header, string) {
	t.Helper()
	hc := &http.Client{Transport: &http.Transport{TLSClientConfig: axl.PinCertificates(s.Certificate())}}
	t.Cleanup(hc.CloseIdleConnections)
	u := strings.TrimSuffix(s.URL(), "/axl/") + path
	req, err := http.NewRequestWithContext(ctxT(t), method, u, strings.NewReader(body))
	require.NoError(t, err)
	if action != "" {
		req.Header.Set("SOAPAction", action)
	}
	if auth {
		req.SetBasicAuth(axltest.DefaultUsername, axltest.DefaultPassword)
	}
	res, err := hc.Do(req)
	require.NoError(t, err)
	defer res.Body.Close()
	b, err := io.ReadAll(res.Body)
	require.NoError(t, err)
	return res.StatusCode, res.Header, string(b)
}

func TestRawRequests(t *testing.T) {
	s := axltest.New(t, axltest.Config{})
	tests := []struct {
		name, method, path, action, body string
		auth                             bool
		status                           int
		contains                         string
	}{
		{"query", "POST", "/axl/", `"CUCM:DB ver=12.5 executeSQLQuery"`, envelope, true, 200,
			`<ns:executeSQLQueryResponse sequence="7" xmlns:ns="http://www.cisco.com/AXL/API/12.5"><return><row><count>0</count></row></return>`},
		{"action without operation or quotes", "POST", "/axl/", `CUCM:DB ver=12.5`, envelope, true, 200, "<count>0</count>"},
		{"no action", "POST", "/axl", "", envelope, true, 200, "<count>0</count>"},
		{"no credentials", "POST", "/axl/", "", envelope, false, 401, "<html>"},
		{"version mismatch", "POST", "/axl/", `"CUCM:DB ver=14.0 executeSQLQuery"`, envelope, true, 500,
			"SOAPAction version 14.0 differs from the request namespace version 12.5"},
		{"operation mismatch", "POST", "/axl/", `"CUCM:DB ver=12.5 executeSQLUpdate"`, envelope, true, 500, "SOAPAction operation executeSQLUpdate differs"},
		{"bad action", "POST", "/axl/", `"urn:x"`, envelope, true, 500, "is not of the form"},
		{"not SOAP", "POST", "/axl/", "", "<html/>", true, 500, "<faultcode>soapenv:Client</faultcode><faultstring>Invalid request: the document element is &lt;html&gt;"},
		{"GET", "GET", "/axl/", "", "", true, 405, "Method Not Allowed"},
		{"wrong path", "POST", "/ccmadmin/", "", envelope, true, 404, "Not Found"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			status, h, body := post(t, s, tt.method, tt.path, tt.action, tt.body, tt.auth)
			assert.Equal(t, tt.status, status)
			assert.Contains(t, body, tt.contains)
			if status == 401 {
				assert.Equal(t, `Basic realm="Cisco AXL"`, h.Get("WWW-Authenticate"))
			}
		})
	}
	calls := s.Calls()
	require.Len(t, calls, len(tests))
	assert.Equal(t, axltest.Call{Username: axltest.DefaultUsername, SOAPAction: `"CUCM:DB ver=12.5 executeSQLQuery"`,
		Function: "executeSQLQuery", Version: "12.5", SQL: "SELECT count(*) FROM xmpps2snodes", Status: 200}, calls[0])
}

func TestColumnNames(t *testing.T) {
	s := axltest.New(t, axltest.Config{})
	c := s.Client()
	rows, err := c.Query(ctxT(t), "SELECT count(*), 1, 'x' AS Mixed_Case, NULL AS n, 1.5 AS f FROM xmpps2snodes")
	require.NoError(t, err)
	require.Len(t, rows, 1)
	assert.Equal(t, []string{"count", "expression", "mixed_case", "n", "f"}, rows[0].Columns())
	assert.Equal(t, []string{"0", "1", "x", "", "1.5"}, rows[0].Values())
}

func TestNewIDAndStatementKinds(t *testing.T) {
	s := axltest.New(t, axltest.Config{})
	c := s.Client()
	ctx := ctxT(t)
	// Cisco's own sample statement, comments in front.
	n, err := c.Update(ctx, "/* c */ -- x\n INSERT INTO xmpps2snodes (pkid, cp_id) VALUES (newid(), 'cm-2_s2scp-1.eft-xwye-a-coluc-com')")
	require.NoError(t, err)
	assert.Equal(t, 1, n)
	var pkid string
	require.NoError(t, s.DB().QueryRow("SELECT pkid FROM xmpps2snodes").Scan(&pkid))
	assert.Regexp(t, `^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$`, pkid)

	_, err = c.Query(ctx, "DELETE FROM xmpps2snodes")
	assert.ErrorContains(t, err, "SELECT statements only; use executeSQLUpdate for DELETE")
	_, err = c.Update(ctx, "SELECT 1")
	assert.ErrorContains(t, err, "not SELECT")
	_, err = c.Update(ctx, "-- only a comment")
	assert.ErrorContains(t, err, "INSERT, UPDATE and DELETE statements only")

	// A failing statement leaves nothing behind: each update is one
	// transaction.
	_, err = c.Update(ctx, "DELETE FROM xmpps2snodes; INSERT INTO nosuchtable VALUES (1)")
	var f *axl.Fault
	require.ErrorAs(t, err, &f)
	assert.Equal(t, -206, f.Code)
	var count int
	require.NoError(t, s.DB().QueryRow("SELECT count(*) FROM xmpps2snodes").Scan(&count))
	assert.Equal(t, 1, count)
}

func TestCredentialsAndVersions(t *testing.T) {
	s := axltest.New(t, axltest.Config{Username: "admin", Password: "pw", Versions: []string{"14.0"}})
	c := s.Client()
	c.Version = "14.0"
	_, err := c.Query(ctxT(t), "SELECT 1 AS one")
	require.NoError(t, err)
	c2 := s.Client()
	c2.Username = "axladmin"
	_, err = c2.Query(ctxT(t), "SELECT 1 AS one")
	require.ErrorIs(t, err, axl.ErrUnauthorized)

	_, err = axltest.Start(axltest.Config{Versions: []string{"14"}})
	assert.ErrorContains(t, err, `Versions[0] = "14"`)
}

// A file database outlives its server, and preloaded nodes are there.
func TestFileDatabase(t *testing.T) {
	dsn := filepath.Join(t.TempDir(), "imp.db")
	s1, err := axltest.Start(axltest.Config{DSN: dsn, Nodes: []axl.S2SNode{{PKID: "p1", CPID: "c1"}}})
	require.NoError(t, err)
	_, _, err = s1.Client().EnsureS2SNode(ctxT(t), "c2")
	require.NoError(t, err)
	require.NoError(t, s1.Close())
	require.NoError(t, s1.Close(), "Close twice")

	s2 := axltest.New(t, axltest.Config{DSN: dsn})
	nodes, err := s2.Client().ListS2SNodes(ctxT(t))
	require.NoError(t, err)
	require.Len(t, nodes, 2)
	assert.Equal(t, axl.S2SNode{PKID: "p1", CPID: "c1"}, nodes[0])
	assert.Equal(t, "c2", nodes[1].CPID)

	_, err = axltest.Start(axltest.Config{DSN: dsn, Nodes: []axl.S2SNode{{PKID: "p1", CPID: "c1"}}})
	assert.ErrorContains(t, err, "preload")
}

func TestCloseReleasesHeldRequests(t *testing.T) {
	s, err := axltest.Start(axltest.Config{})
	require.NoError(t, err)
	c := s.Client()
	arrived, _ := s.Hold()
	done := make(chan error, 1)
	go func() {
		_, err := c.Query(ctxT(t), "SELECT 1 AS one")
		done <- err
	}()
	select {
	case <-arrived:
	case <-time.After(5 * time.Second):
		t.Fatal("request not held")
	}
	closed := make(chan error, 1)
	go func() { closed <- s.Close() }()
	select {
	case err := <-done:
		assert.NoError(t, err, "a held request completes when the server closes")
	case <-time.After(5 * time.Second):
		t.Fatal("held request not released by Close")
	}
	select {
	case err := <-closed:
		assert.NoError(t, err)
	case <-time.After(10 * time.Second):
		t.Fatal("Close did not return")
	}
}

func TestThrottleAndRelease(t *testing.T) {
	s := axltest.New(t, axltest.Config{})
	c := s.Client()
	c.Attempts = 1
	s.Throttle(1, axltest.ThrottleFault)
	_, err := c.Query(ctxT(t), "SELECT 1 AS one")
	var f *axl.Fault
	require.ErrorAs(t, err, &f)
	assert.True(t, f.Throttled())
	assert.Equal(t, "executeSQLQuery", f.Request)
	assert.ErrorIs(t, err, axl.ErrThrottled)

	_, release := s.Hold()
	release()
	release()
	_, err = c.Query(ctxT(t), "SELECT 1 AS one")
	assert.NoError(t, err, "released holds do not hold")
}

// The server can be mounted on another HTTP server.
func TestHandler(t *testing.T) {
	s := axltest.New(t, axltest.Config{Nodes: []axl.S2SNode{{PKID: "p", CPID: "c"}}})
	mux := http.NewServeMux()
	mux.Handle("/axl/", s)
	front := httptest.NewTLSServer(mux)
	t.Cleanup(front.Close)
	c := &axl.Client{URL: front.URL + "/axl/", Username: axltest.DefaultUsername, Password: axltest.DefaultPassword,
		TLSConfig: axl.PinCertificates(front.Certificate())}
	t.Cleanup(c.CloseIdleConnections)
	nodes, err := c.ListS2SNodes(ctxT(t))
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{{PKID: "p", CPID: "c"}}, nodes)
}

// executeSQLQuery cannot write, whatever follows or wraps the SELECT.
func TestQueryReadOnly(t *testing.T) {
	s := axltest.New(t, axltest.Config{Nodes: []axl.S2SNode{{PKID: "p", CPID: "c"}}})
	c := s.Client()
	ctx := ctxT(t)
	attached := filepath.Join(t.TempDir(), "attached.db")
	for _, stmt := range []string{
		"SELECT 1 AS one; DELETE FROM xmpps2snodes",
		"SELECT 1 AS one; DROP TABLE xmpps2snodes",
		"WITH x AS (SELECT 1) DELETE FROM xmpps2snodes",
		"WITH x AS (SELECT 1) INSERT INTO xmpps2snodes (pkid, cp_id) VALUES ('q', 'd')",
		"SELECT 1 AS one; PRAGMA query_only = OFF; DELETE FROM xmpps2snodes",
		"SELECT 1 AS one; ATTACH DATABASE '" + attached + "' AS a",
		"SELECT 1 AS one; BEGIN",
	} {
		_, err := c.Query(ctx, stmt)
		var f *axl.Fault
		require.ErrorAs(t, err, &f, stmt)
		assert.Equal(t, -1, f.Code, stmt)
		assert.Contains(t, f.Message, "executeSQLQuery runs SELECT statements only", stmt)
	}
	assert.NoFileExists(t, attached)
	nodes, err := c.ListS2SNodes(ctx)
	require.NoError(t, err)
	assert.Equal(t, []axl.S2SNode{{PKID: "p", CPID: "c"}}, nodes, "the table is intact")

	// Reads still work, recursive ones too, and updates after them.
	rows, err := c.Query(ctx, "WITH RECURSIVE n(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM n WHERE x < 3) SELECT x, upper('a') AS u FROM n")
	require.NoError(t, err)
	assert.Len(t, rows, 3)
	n, err := c.Update(ctx, "DELETE FROM xmpps2snodes")
	require.NoError(t, err)
	assert.Equal(t, 1, n, "the connection is writable again for updates")
}

// With Strict, the server checks the headers AXL documents; the axl client
// passes.
func TestStrict(t *testing.T) {
	s := axltest.New(t, axltest.Config{Strict: true})
	post := func(ctype, action string, actions ...string) (int, string) {
		t.Helper()
		hc := &http.Client{Transport: &http.Transport{TLSClientConfig: axl.PinCertificates(s.Certificate())}}
		t.Cleanup(hc.CloseIdleConnections)
		req, err := http.NewRequestWithContext(ctxT(t), "POST", s.URL(), strings.NewReader(envelope))
		require.NoError(t, err)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		if action != "" {
			req.Header.Set("SOAPAction", action)
		}
		for _, a := range actions {
			req.Header.Add("SOAPAction", a)
		}
		req.SetBasicAuth(axltest.DefaultUsername, axltest.DefaultPassword)
		res, err := hc.Do(req)
		require.NoError(t, err)
		defer res.Body.Close()
		b, err := io.ReadAll(res.Body)
		require.NoError(t, err)
		return res.StatusCode, string(b)
	}
	const good = `"CUCM:DB ver=12.5 executeSQLQuery"`
	for _, tt := range []struct {
		name, ctype, action string
		extra               []string
		msg                 string
	}{
		{"no Content-Type", "", good, nil, "no Content-Type header"},
		{"SOAP 1.2 type", "application/soap+xml; charset=utf-8", good, nil, "is not text/xml"},
		{"Latin-1", "text/xml; charset=iso-8859-1", good, nil, "the charset must be utf-8"},
		{"no SOAPAction", "text/xml; charset=utf-8", "", nil, "0 SOAPAction headers"},
		{"two SOAPActions", "text/xml; charset=utf-8", good, []string{good}, "2 SOAPAction headers"},
		{"unquoted", "text/xml; charset=utf-8", "CUCM:DB ver=12.5 executeSQLQuery", nil, "not a quoted string"},
		{"no operation", "text/xml; charset=utf-8", `"CUCM:DB ver=12.5"`, nil, "is not of the form"},
	} {
		t.Run(tt.name, func(t *testing.T) {
			status, body := post(tt.ctype, tt.action, tt.extra...)
			assert.Equal(t, http.StatusInternalServerError, status)
			assert.Contains(t, body, "<faultcode>soapenv:Client</faultcode>")
			assert.Contains(t, body, "strict: ")
			assert.Contains(t, body, tt.msg)
		})
	}
	status, body := post("text/xml; charset=utf-8", good)
	assert.Equal(t, http.StatusOK, status)
	assert.Contains(t, body, "<count>0</count>")
	status, _ = post("text/xml", good)
	assert.Equal(t, http.StatusOK, status, "charset may be left out")

	// The client passes, for both operations.
	c := s.Client()
	_, err := c.Update(ctxT(t), "DELETE FROM xmpps2snodes")
	require.NoError(t, err)
	_, err = c.Query(ctxT(t), "SELECT 1 AS one")
	require.NoError(t, err)

	// Without Strict, AXL's leniency: no headers at all is fine.
	lax := axltest.New(t, axltest.Config{})
	s = lax
	status, _ = post("", "")
	assert.Equal(t, http.StatusOK, status)
}
