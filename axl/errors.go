package axl

import (
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// Sentinel errors. Test for them with [errors.Is]. Every error from the
// Client's methods is an [*Error] naming the AXL function and URL (also
// when found before any request: configuration, [Bind], [Literal], cp_id),
// wrapping these sentinels and, where there is more to say, the typed
// errors below. [Bind] and [Literal] called directly return theirs bare.
var (
	// ErrUnauthorized means IM and Presence answered HTTP 401: the AXL user
	// name or password is wrong. On Expressway this is the most common cause
	// of one-way federation: the core cannot record the edge's S2S nodes in
	// xmpps2snodes, so IM and Presence never routes federated traffic to
	// the edge.
	ErrUnauthorized = errors.New("IM and Presence rejected the AXL user name or password (HTTP 401 Unauthorized): " +
		"check the credentials of the IM and Presence application user configured on the core " +
		"(the user needs the Standard AXL API Access role), then refresh IM and Presence server discovery")

	// ErrForbidden means IM and Presence answered HTTP 403: the user
	// authenticated but may not use AXL.
	ErrForbidden = errors.New("IM and Presence refused AXL access (HTTP 403 Forbidden): " +
		"give the application user the Standard AXL API Access role (with Standard CCM Admin Users) through its access control group")

	// ErrThrottled means AXL rejected the request because it is busy (HTTP
	// 503, or a fault saying so). The request was not executed. Query and
	// Update retry it with back-off before returning this.
	ErrThrottled = errors.New("IM and Presence is throttling AXL requests (HTTP 503 or an AXL throttle fault): " +
		"the request was not executed; retry later, and keep the AXL request rate low")

	// ErrNotAXL means the server answered, but not with an AXL SOAP
	// response: a wrong URL, an HTML login or error page, a proxy.
	ErrNotAXL = errors.New("the server's answer is not an AXL SOAP response: " +
		"check that the URL is https://<IM and Presence node>:8443/axl/ and that the Cisco AXL Web Service is activated on that node")

	// ErrVersionUnsupported means the server does not serve the requested
	// AXL schema version (HTTP 599). The client switches once to the
	// highest version the server lists before returning this.
	ErrVersionUnsupported = errors.New("IM and Presence does not support the requested AXL schema version")

	// ErrTLS means the TLS connection to the server failed; see [*TLSError].
	ErrTLS = errors.New("TLS connection to IM and Presence failed")

	// ErrPinMismatch means the server's certificate is not one pinned with
	// [PinCertificates] or [PinFingerprints].
	ErrPinMismatch = errors.New("the server's certificate is not the pinned IM and Presence certificate")

	// ErrTimeout means no answer came before the context's deadline or the
	// client's per-attempt timeout.
	ErrTimeout = errors.New("IM and Presence did not answer in time")

	// ErrUnreachable means the TCP connection could not be set up.
	ErrUnreachable = errors.New("cannot connect to the IM and Presence AXL service (is port 8443 reachable from the core?)")

	// ErrUnsafeValue means a value cannot be written as an Informix SQL
	// literal; see [*ValueError].
	ErrUnsafeValue = errors.New("value cannot be written safely as an Informix SQL literal")

	// ErrBind means the placeholders of a statement and its arguments do
	// not match, or the statement has an unterminated literal or comment.
	ErrBind = errors.New("the SQL statement and its arguments do not match")

	// ErrDuplicate matches a [*Fault] for a duplicate value in a unique
	// index (Informix -239, -268, ISAM -100): the row already exists.
	ErrDuplicate = errors.New("a row with this unique key already exists")

	// ErrResultTooLarge matches a [*Fault] saying the result exceeds AXL's
	// 8 MB limit ("Query request too large"). Fetch fewer rows.
	ErrResultTooLarge = errors.New("the query result is too large for AXL (over 8 MB): fetch fewer rows (SKIP n FIRST m)")

	// ErrInvalidNode means a component id given to EnsureS2SNode or
	// RemoveS2SNode is not of the form XCP gives them; see [*NodeError].
	ErrInvalidNode = errors.New("invalid xmpps2snodes component id (cp_id)")

	// ErrConfig means the Client's fields cannot work: no or a wrong URL,
	// an unknown Version, TLSConfig together with HTTPClient.
	ErrConfig = errors.New("invalid AXL client configuration")
)

// Error is every error Query, Update and the xmpps2snodes helpers return:
// the AXL function, the endpoint and the cause, whether a request failed or
// none could be made.
type Error struct {
	Function string // "executeSQLQuery" or "executeSQLUpdate"
	URL      string // the endpoint; empty if Client.URL is unusable
	Err      error
}

func (e *Error) Error() string {
	// Bind's and Literal's own errors start with "axl:" too.
	msg := strings.TrimPrefix(e.Err.Error(), "axl: ")
	if e.URL == "" {
		return fmt.Sprintf("axl: %s: %s", e.Function, msg)
	}
	return fmt.Sprintf("axl: %s %s: %s", e.Function, e.URL, msg)
}

// Unwrap returns Err.
func (e *Error) Unwrap() error { return e.Err }

// Timeout reports whether the request timed out, like net.Error.
func (e *Error) Timeout() bool { return errors.Is(e.Err, ErrTimeout) }

// HTTPError is an HTTP answer that is not an AXL result or fault. Err is
// [ErrUnauthorized], [ErrForbidden], [ErrThrottled], [ErrVersionUnsupported]
// or [ErrNotAXL].
type HTTPError struct {
	StatusCode  int
	ContentType string
	// Reason says why the body was not accepted as AXL, if it was read.
	Reason string
	// Body is the start of the body, for a log.
	Body string
	// Supported lists the schema versions a 599 answer named.
	Supported []string
	Err       error
}

func (e *HTTPError) Error() string {
	var b strings.Builder
	b.WriteString(e.Err.Error())
	var detail []string
	if status := fmt.Sprintf("HTTP %d", e.StatusCode); !strings.Contains(b.String(), status) {
		detail = append(detail, strings.TrimSpace(status+" "+http.StatusText(e.StatusCode)))
	}
	if errors.Is(e.Err, ErrNotAXL) && e.ContentType != "" {
		detail = append(detail, e.ContentType)
	}
	if e.Reason != "" {
		detail = append(detail, e.Reason)
	}
	if len(e.Supported) > 0 {
		detail = append(detail, "supported versions: "+strings.Join(e.Supported, ", "))
	}
	if e.Body != "" && errors.Is(e.Err, ErrNotAXL) {
		detail = append(detail, fmt.Sprintf("body starts %q", e.Body))
	}
	if len(detail) > 0 {
		b.WriteString(" [" + strings.Join(detail, "; ") + "]")
	}
	return b.String()
}

// Unwrap returns Err.
func (e *HTTPError) Unwrap() error { return e.Err }

// Fault is a SOAP fault from AXL: a failed SQL statement (the Code is then
// the Informix error number, negative) or a refused request.
type Fault struct {
	HTTPStatus  int
	FaultCode   string // "soapenv:Client" (the request is wrong) or "soapenv:Server"
	FaultString string
	// Code is <axlcode>; HasCode is false when the fault had no AXL detail.
	Code    int
	HasCode bool
	Message string // <axlmessage>
	Request string // the AXL operation, e.g. "executeSQLUpdate"
}

func (f *Fault) Error() string {
	msg := f.Message
	if msg == "" {
		msg = f.FaultString
	}
	var b strings.Builder
	b.WriteString("AXL fault")
	if f.HasCode {
		fmt.Fprintf(&b, " %d", f.Code)
	}
	if f.Request != "" {
		b.WriteString(" in " + f.Request)
	}
	fmt.Fprintf(&b, ": %s", msg)
	if f.FaultCode != "" {
		b.WriteString(" (" + f.FaultCode + ")")
	}
	if hint := f.hint(); hint != "" {
		b.WriteString(": " + hint)
	}
	return b.String()
}

func (f *Fault) hint() string {
	switch {
	case f.Throttled():
		return "AXL is busy; retry later"
	case f.Is(ErrResultTooLarge):
		return "fetch fewer rows"
	case f.Is(ErrDuplicate):
		return "the row already exists"
	case f.HasCode && (f.Code == -201 || f.Code == 201):
		return "SQL syntax error"
	}
	return ""
}

// Throttled reports whether the fault is AXL's read throttle, so that the
// request may be retried unchanged: a Server fault (the request was fine)
// saying "Maximum AXL Memory Allocation Consumed", with no AXL code or the
// code -1 that Cisco's example of it carries. Text alone is not enough: a
// fault quoting the statement ("Column (throttled) not found", -217) must
// not be retried. Write throttling is HTTP 503, not a fault.
func (f *Fault) Throttled() bool {
	return serverFault(f.FaultCode) &&
		(!f.HasCode || f.Code == throttleCode) &&
		strings.Contains(strings.ToLower(f.FaultString+" "+f.Message), throttleText)
}

// The read-throttle fault in Cisco's AXL developer guide: faultcode
// soapenv:Server, axlcode -1, "Maximum AXL Memory Allocation Consumed.
// Please retry once requests in progress have completed".
const (
	throttleCode = -1
	throttleText = "maximum axl memory allocation consumed"
)

// serverFault reports whether a SOAP 1.1 faultcode (a QName) is Server or
// a refinement of it ("Server.Busy").
func serverFault(code string) bool {
	if i := strings.LastIndexByte(code, ':'); i >= 0 {
		code = code[i+1:]
	}
	return code == "Server" || strings.HasPrefix(code, "Server.")
}

// Is makes a Fault match [ErrThrottled], [ErrDuplicate] and
// [ErrResultTooLarge] when it says so.
func (f *Fault) Is(target error) bool {
	switch target {
	case ErrThrottled:
		return f.Throttled()
	case ErrDuplicate:
		return f.HasCode && (f.Code == -239 || f.Code == -268 || f.Code == -100)
	case ErrResultTooLarge:
		return strings.Contains(strings.ToLower(f.FaultString+" "+f.Message), "query request too large")
	}
	return false
}

// NodeError is a cp_id that EnsureS2SNode or RemoveS2SNode refused before
// building any SQL. It matches [ErrInvalidNode] with [errors.Is].
type NodeError struct {
	CPID   string
	Reason string
}

func (e *NodeError) Error() string {
	return fmt.Sprintf("%v %q: %s: an XCP component id is lower-case letters, digits, '.', '_' and '-', "+
		"starting with a letter or digit, at most 128 characters (e.g. cm-2_s2scp-1.edge1-example-com); "+
		"check the Expressway-E node names configured on the core", ErrInvalidNode, e.CPID, e.Reason)
}

// Unwrap returns ErrInvalidNode.
func (e *NodeError) Unwrap() error { return ErrInvalidNode }

// TLSError is a failed TLS connection, with the reason in words an
// administrator can act on. It matches [ErrTLS] with [errors.Is], and the
// underlying crypto/tls or crypto/x509 error (x509.UnknownAuthorityError,
// x509.HostnameError, x509.CertificateInvalidError) with [errors.As].
type TLSError struct {
	Host   string
	Reason string // e.g. "certificate signed by unknown authority"
	Hint   string
	Err    error
}

func (e *TLSError) Error() string {
	s := fmt.Sprintf("%v (%s): %s", ErrTLS, e.Host, e.Reason)
	if e.Hint != "" {
		s += ": " + e.Hint
	}
	return s
}

// Unwrap returns ErrTLS and Err.
func (e *TLSError) Unwrap() []error { return []error{ErrTLS, e.Err} }
