package tlsmode

import (
	"bytes"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/net/idna"
)

// Object identifiers of the subjectAltName extension (RFC 5280 §4.2.1.6) and
// of the otherName types XMPP uses in it.
var (
	oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}
	// id-on-xmppAddr, RFC 6120 §13.7.1.4: UTF8String holding a JID.
	oidXmppAddr = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 5}
	// id-on-dnsSRV, RFC 4985: IA5String "_service.domain" (SRV-ID).
	oidDNSSRV = asn1.ObjectIdentifier{1, 3, 6, 1, 5, 5, 7, 8, 7}
)

// GeneralName CHOICE tags used here (RFC 5280 §4.2.1.6).
const (
	tagOtherName = 0
	tagDNSName   = 2
)

// srvServices are the SRV-ID service labels that identify an S2S service:
// STARTTLS (RFC 6120 §13.7.1.2.1) and direct TLS (XEP-0368).
var srvServices = []string{"_xmpp-server.", "_xmpps-server."}

// Identities are the identifiers a certificate presents (RFC 6125 §1.8),
// as written in it, before any normalization.
type Identities struct {
	// DNS are the subjectAltName dNSName entries (DNS-IDs); any may start
	// with a "*." wildcard label.
	DNS []string
	// SRV are the subjectAltName otherName id-on-dnsSRV entries (SRV-IDs)
	// of every service, e.g. "_xmpp-server.example.com"; only the S2S
	// services "_xmpp-server" and "_xmpps-server" can match.
	SRV []string
	// XmppAddr are the subjectAltName otherName id-on-xmppAddr entries
	// (RFC 6120 §13.7.1.4), JIDs in UTF-8, so possibly with U-labels; only
	// bare domains can match.
	XmppAddr []string
	// CN is the subject common name (the last one, if several). It is a
	// CN-ID only if the other three fields are all empty (RFC 6125 §6.4.4).
	CN string
}

// PeerIdentities returns the identifiers cert presents. crypto/x509 skips
// otherName entries, so the subjectAltName extension is decoded here, all of
// it, with DNS names included.
//
// It is an error (the certificate is malformed) if the extension is not
// valid DER, or if an XmppAddr is not a valid UTF8String or an SRV-ID not
// an IA5String: such a value would be neither usable nor safe to ignore,
// because ignoring it could let the CN stand in for it. Other kinds of
// names (e-mail, URI, IP address, other otherName types) are skipped.
func PeerIdentities(cert *x509.Certificate) (Identities, error) {
	if cert == nil {
		return Identities{}, errors.New("tlsmode: no certificate")
	}
	ids := Identities{CN: cert.Subject.CommonName}
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		if err := parseSubjectAltName(ext.Value, &ids); err != nil {
			return Identities{}, err
		}
	}
	return ids, nil
}

// parseSubjectAltName appends the names of a DER GeneralNames to ids.
func parseSubjectAltName(der []byte, ids *Identities) error {
	var seq asn1.RawValue
	rest, err := asn1.Unmarshal(der, &seq)
	if err != nil {
		return fmt.Errorf("tlsmode: subjectAltName: %w", err)
	}
	if len(rest) > 0 {
		return errors.New("tlsmode: subjectAltName: trailing data")
	}
	if seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
		return errors.New("tlsmode: subjectAltName: not a SEQUENCE")
	}
	for b := seq.Bytes; len(b) > 0; {
		var gn asn1.RawValue
		if b, err = asn1.Unmarshal(b, &gn); err != nil {
			return fmt.Errorf("tlsmode: subjectAltName: %w", err)
		}
		if gn.Class != asn1.ClassContextSpecific {
			return fmt.Errorf("tlsmode: subjectAltName: entry with tag %d of class %d is not a GeneralName", gn.Tag, gn.Class)
		}
		switch gn.Tag {
		case tagDNSName:
			if gn.IsCompound || !isIA5(gn.Bytes) {
				return fmt.Errorf("tlsmode: subjectAltName: DNS name %s is not an IA5String", quote(string(gn.Bytes)))
			}
			ids.DNS = append(ids.DNS, string(gn.Bytes))
		case tagOtherName:
			if !gn.IsCompound {
				return errors.New("tlsmode: subjectAltName: otherName is not constructed")
			}
			if err := parseOtherName(gn.Bytes, ids); err != nil {
				return err
			}
		}
	}
	return nil
}

// parseOtherName decodes the body of OtherName ::= SEQUENCE { type-id OID,
// value [0] EXPLICIT ANY DEFINED BY type-id } (its tag is the IMPLICIT [0]
// of GeneralName) and appends XmppAddr and SRV-ID values to ids.
func parseOtherName(b []byte, ids *Identities) error {
	var typeID asn1.ObjectIdentifier
	b, err := asn1.Unmarshal(b, &typeID)
	if err != nil {
		return fmt.Errorf("tlsmode: subjectAltName: otherName type: %w", err)
	}
	var explicit asn1.RawValue
	if b, err = asn1.Unmarshal(b, &explicit); err != nil {
		return fmt.Errorf("tlsmode: subjectAltName: otherName %v: %w", typeID, err)
	}
	if len(b) > 0 || explicit.Class != asn1.ClassContextSpecific || explicit.Tag != 0 || !explicit.IsCompound {
		return fmt.Errorf("tlsmode: subjectAltName: otherName %v: value is not [0] EXPLICIT", typeID)
	}
	var (
		want     int
		wantName string
		field    *[]string
	)
	switch {
	case typeID.Equal(oidXmppAddr):
		want, wantName, field = asn1.TagUTF8String, "UTF8String", &ids.XmppAddr
	case typeID.Equal(oidDNSSRV):
		want, wantName, field = asn1.TagIA5String, "IA5String", &ids.SRV
	default:
		return nil // e.g. a Microsoft UPN: not ours to judge
	}
	var str asn1.RawValue
	rest, err := asn1.Unmarshal(explicit.Bytes, &str)
	if err != nil {
		return fmt.Errorf("tlsmode: subjectAltName: %s: %w", otherNameType(typeID), err)
	}
	ok := len(rest) == 0 && str.Class == asn1.ClassUniversal && str.Tag == want && !str.IsCompound
	if want == asn1.TagUTF8String {
		ok = ok && utf8.Valid(str.Bytes)
	} else {
		ok = ok && isIA5(str.Bytes)
	}
	if !ok {
		return fmt.Errorf("tlsmode: subjectAltName: %s %s is not a valid %s",
			otherNameType(typeID), quote(string(str.Bytes)), wantName)
	}
	*field = append(*field, string(str.Bytes))
	return nil
}

func otherNameType(oid asn1.ObjectIdentifier) string {
	if oid.Equal(oidXmppAddr) {
		return "XmppAddr"
	}
	return "SRV-ID"
}

func isIA5(b []byte) bool {
	for _, c := range b {
		if c >= utf8.RuneSelf {
			return false
		}
	}
	return true
}

// hasSANIdentifiers reports whether any subjectAltName identifier type that
// XMPP supports is present, which rules out the CN-ID (RFC 6125 §6.4.4).
func (ids Identities) hasSANIdentifiers() bool {
	return len(ids.DNS) > 0 || len(ids.SRV) > 0 || len(ids.XmppAddr) > 0
}

// Match reports whether the identities are valid for the XMPP domain
// (RFC 6125 §6 as profiled by RFC 6120 §13.7.2.1 and XEP-0178): a DNS-ID
// equal to domain, or a wildcard DNS-ID "*.rest" where domain is one label
// followed by rest ("*.example.com" matches "chat.example.com", but neither
// "example.com" nor "a.b.example.com"); an SRV-ID "_xmpp-server.domain" or
// "_xmpps-server.domain"; an XmppAddr equal to domain; or, only when there
// is none of these three types at all, a CN matched like a DNS-ID.
//
// Names are compared case-insensitively in A-label (punycode) form, a
// trailing dot ignored, so "bücher.example" matches a DNS-ID
// "xn--bcher-kva.example". domain is an XMPP domain in either form; if it
// is not a valid domain name, or is an IP literal, nothing matches.
func (ids Identities) Match(domain string) bool {
	ref, ok := referenceName(domain)
	return ok && ids.match(ref)
}

// referenceName returns the reference identifier for domain, in the form
// that canonical gives presented names, if it can match at all.
func referenceName(domain string) (string, bool) {
	ref, err := serverName(domain)
	if err != nil {
		return "", false
	}
	if _, err := netip.ParseAddr(ref); err == nil {
		return "", false // RFC 6125 has no IP identifiers
	}
	return ref, true
}

// match is Match for a reference name from referenceName.
func (ids Identities) match(ref string) bool {
	for _, name := range ids.DNS {
		if matchDNSID(name, ref) {
			return true
		}
	}
	for _, name := range ids.SRV {
		for _, svc := range srvServices {
			if len(name) > len(svc) && strings.EqualFold(name[:len(svc)], svc) {
				if c, ok := canonical(name[len(svc):]); ok && c == ref {
					return true
				}
			}
		}
	}
	for _, name := range ids.XmppAddr {
		if c, ok := canonical(name); ok && c == ref {
			return true
		}
	}
	return !ids.hasSANIdentifiers() && matchDNSID(ids.CN, ref)
}

// matchDNSID matches a presented DNS-ID (or CN-ID) against ref, allowing a
// wildcard only as the whole left-most label, and only above a name of at
// least two labels, so that "*.com" matches nothing.
func matchDNSID(name, ref string) bool {
	if rest, ok := strings.CutPrefix(name, "*."); ok {
		base, ok := canonical(rest)
		if !ok || !strings.Contains(base, ".") {
			return false
		}
		i := strings.IndexByte(ref, '.')
		return i > 0 && ref[i+1:] == base
	}
	c, ok := canonical(name)
	return ok && c == ref
}

// canonical returns a presented name in the form reference names have:
// lower-case A-labels without a trailing dot. ASCII names are only
// lower-cased: they are already A-labels or cannot equal a reference name,
// which serverName validated. ok is false for names that cannot be domains.
func canonical(name string) (string, bool) {
	name = strings.TrimSuffix(name, ".")
	if name == "" {
		return "", false
	}
	if isIA5([]byte(name)) {
		return strings.ToLower(name), true
	}
	a, err := idna.Lookup.ToASCII(name)
	if err != nil {
		return "", false
	}
	return a, true
}

// maxListed bounds how many names String lists, so that a certificate with
// thousands of names cannot flood a log line.
const maxListed = 10

// String lists the identities for an administrator, e.g. "DNS:example.com,
// SRV:_xmpp-server.example.com, XmppAddr:example.com", with at most ten
// names. The CN is listed too when it is a CN-ID, or when it differs from
// the DNS names and XmppAddrs, then marked as not used. Names that are not
// printable are quoted.
func (ids Identities) String() string {
	var parts []string
	add := func(kind string, names []string) {
		for _, n := range names {
			parts = append(parts, kind+":"+printable(n))
		}
	}
	add("DNS", ids.DNS)
	add("SRV", ids.SRV)
	add("XmppAddr", ids.XmppAddr)
	switch {
	case ids.CN == "":
	case !ids.hasSANIdentifiers():
		parts = append(parts, "CN:"+printable(ids.CN))
	case !slices.ContainsFunc(slices.Concat(ids.DNS, ids.XmppAddr), func(n string) bool { return strings.EqualFold(n, ids.CN) }):
		// Only worth a mention when it differs: an admin may think it counts.
		parts = append(parts, "CN:"+printable(ids.CN)+" (not used: the certificate has subjectAltNames)")
	}
	if len(parts) == 0 {
		return "no names"
	}
	if len(parts) > maxListed {
		more := len(parts) - maxListed
		parts = append(parts[:maxListed], strconv.Itoa(more)+" more")
	}
	return strings.Join(parts, ", ")
}

// printable returns s unchanged if it is safe to show in a log line, and
// quoted otherwise: names come from the peer.
func printable(s string) string {
	for _, r := range s {
		if !unicode.IsGraphic(r) || unicode.IsSpace(r) || r == ',' || r == '"' || r == utf8.RuneError {
			return quote(s)
		}
	}
	if s == "" {
		return `""`
	}
	return s
}

// quote quotes s, shortened if long.
func quote(s string) string {
	const maxLen = 256
	if len(s) > maxLen {
		return strconv.Quote(s[:maxLen]) + "…"
	}
	return strconv.Quote(s)
}

// CertProblem is what is wrong with a peer's certificate.
type CertProblem int

// Certificate problems, reported by a *CertError.
const (
	// CertMissing: the peer presented no certificate.
	CertMissing CertProblem = iota + 1
	// CertMalformed: the certificate or its subjectAltName cannot be read.
	CertMalformed
	// CertExpired: the certificate, or a CA certificate the peer sent with
	// it, is past its NotAfter.
	CertExpired
	// CertNotYetValid: it is before the certificate's (or a CA
	// certificate's) NotBefore; often a clock problem.
	CertNotYetValid
	// CertUnknownIssuer: the certificate does not chain to a trusted root:
	// it is self-signed, from a CA that is not trusted, or the peer did not
	// send the intermediate CA certificates.
	CertUnknownIssuer
	// CertBadUsage: the extended key usage allows neither TLS server nor
	// TLS client authentication.
	CertBadUsage
	// CertWrongName: the certificate is not valid for the domain.
	CertWrongName
	// CertInvalid: any other reason the chain is rejected (insecure
	// signature algorithm, name constraints, …); see CertError.Err.
	CertInvalid
)

// String names the problem for logs.
func (p CertProblem) String() string {
	switch p {
	case CertMissing:
		return "missing"
	case CertMalformed:
		return "malformed"
	case CertExpired:
		return "expired"
	case CertNotYetValid:
		return "not yet valid"
	case CertUnknownIssuer:
		return "unknown issuer"
	case CertBadUsage:
		return "wrong key usage"
	case CertWrongName:
		return "wrong name"
	case CertInvalid:
		return "invalid"
	}
	return "CertProblem(" + strconv.Itoa(int(p)) + ")"
}

// Sentinels matched (errors.Is) by a *CertError, one per CertProblem.
var (
	ErrCertMissing       = errors.New("tlsmode: no peer certificate")
	ErrCertMalformed     = errors.New("tlsmode: malformed certificate")
	ErrCertExpired       = errors.New("tlsmode: certificate expired")
	ErrCertNotYetValid   = errors.New("tlsmode: certificate not yet valid")
	ErrCertUnknownIssuer = errors.New("tlsmode: certificate issuer not trusted")
	ErrCertBadUsage      = errors.New("tlsmode: certificate not for TLS authentication")
	ErrCertWrongName     = errors.New("tlsmode: certificate not valid for the domain")
	ErrCertInvalid       = errors.New("tlsmode: certificate invalid")
)

func (p CertProblem) sentinel() error {
	switch p {
	case CertMissing:
		return ErrCertMissing
	case CertMalformed:
		return ErrCertMalformed
	case CertExpired:
		return ErrCertExpired
	case CertNotYetValid:
		return ErrCertNotYetValid
	case CertUnknownIssuer:
		return ErrCertUnknownIssuer
	case CertBadUsage:
		return ErrCertBadUsage
	case CertWrongName:
		return ErrCertWrongName
	}
	return ErrCertInvalid
}

// CertError is why a peer's certificate does not authenticate it for a
// domain. Problem is the first problem found, chain problems before the
// name; when the name does not match either, NameMismatch is set, the
// message says so too, and errors.Is matches ErrCertWrongName as well.
type CertError struct {
	// Domain is the reference identifier, as given to VerifyPeer.
	Domain  string
	Problem CertProblem
	// NameMismatch: the leaf is not valid for Domain (always so with
	// CertWrongName; not checked with CertMissing and CertMalformed).
	NameMismatch bool
	// Names are the leaf's identities (empty with CertMissing and
	// CertMalformed).
	Names Identities
	// Cert is the certificate the problem is about: the leaf, or for
	// CertExpired and CertNotYetValid possibly a CA certificate the peer
	// sent; nil with CertMissing. NotBefore and NotAfter are its validity.
	Cert                *x509.Certificate
	NotBefore, NotAfter time.Time
	// Issuer names, with CertUnknownIssuer, the CA that would have to be
	// trusted: the issuer of the last certificate the peer sent, or that
	// certificate itself if it is self-signed.
	Issuer string
	// SelfSigned: with CertUnknownIssuer, the leaf is self-signed.
	SelfSigned bool
	// Err is the underlying error from crypto/x509 or the parser, if any.
	Err error

	caCert bool // Cert is a CA certificate from the chain, not the leaf
}

// timeFormat shows certificate dates to administrators.
const timeFormat = "2006-01-02 15:04:05 MST"

// Error says what is wrong and what an administrator can do about it.
func (e *CertError) Error() string {
	var b strings.Builder
	by := "the certificate presented by " + printable(e.Domain)
	isLeaf := !e.caCert
	switch e.Problem {
	case CertMissing:
		fmt.Fprintf(&b, "tlsmode: %s presented no certificate; the peer must have a certificate for %s configured",
			printable(e.Domain), printable(e.Domain))
	case CertMalformed:
		fmt.Fprintf(&b, "tlsmode: %s is malformed (%v); the peer needs a new certificate", by, e.Err)
	case CertExpired:
		if isLeaf {
			fmt.Fprintf(&b, "tlsmode: %s expired on %s (subject %s); the peer must renew it",
				by, e.NotAfter.UTC().Format(timeFormat), subject(e.Cert))
		} else {
			fmt.Fprintf(&b, "tlsmode: %s depends on CA certificate %s, which expired on %s; the peer must send its current intermediate CA certificates",
				by, subject(e.Cert), e.NotAfter.UTC().Format(timeFormat))
		}
	case CertNotYetValid:
		what := "is not valid until"
		if !isLeaf {
			what = "depends on CA certificate " + subject(e.Cert) + ", which is not valid until"
		} else if e.Cert != nil {
			what = "(subject " + subject(e.Cert) + ") is not valid until"
		}
		fmt.Fprintf(&b, "tlsmode: %s %s %s; check the clocks of both servers",
			by, what, e.NotBefore.UTC().Format(timeFormat))
	case CertUnknownIssuer:
		if e.SelfSigned {
			fmt.Fprintf(&b, "tlsmode: %s is self-signed (subject %s), so its issuer is unknown; the peer needs a certificate from a trusted CA, or add this certificate to the trusted CA certificates",
				by, subject(e.Cert))
		} else {
			fmt.Fprintf(&b, "tlsmode: %s is issued by %s, an unknown CA; add that CA's certificate to the trusted CA certificates, or the peer must also send its intermediate CA certificates",
				by, quote(e.Issuer))
		}
		// crypto/x509 sometimes knows more, e.g. a CA of that name whose
		// signature does not fit, or that there are no system roots.
		var ua x509.UnknownAuthorityError
		if e.Err != nil && (!errors.As(e.Err, &ua) || strings.Contains(ua.Error(), "possibly because")) {
			fmt.Fprintf(&b, " (%v)", e.Err)
		}
	case CertBadUsage:
		fmt.Fprintf(&b, "tlsmode: %s is not for TLS server or client authentication (extended key usage); the peer needs a certificate with the serverAuth usage", by)
	case CertWrongName:
		fmt.Fprintf(&b, "tlsmode: %s is not valid for %s: it names %v; the peer needs a certificate that lists %s",
			by, domainForms(e.Domain), e.Names, printable(e.Domain))
	default:
		fmt.Fprintf(&b, "tlsmode: %s is not valid (%v)", by, e.Err)
	}
	if e.NameMismatch && e.Problem != CertWrongName {
		fmt.Fprintf(&b, "; it is also not valid for %s: it names %v", domainForms(e.Domain), e.Names)
	}
	return b.String()
}

// Unwrap returns the sentinel of Problem, ErrCertWrongName if the name does
// not match either, and Err, so that errors.Is and errors.As see them all.
func (e *CertError) Unwrap() []error {
	errs := []error{e.Problem.sentinel()}
	if e.NameMismatch && e.Problem != CertWrongName {
		errs = append(errs, ErrCertWrongName)
	}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// domainForms shows domain, and its A-label form when that differs, so an
// administrator can compare it with the names in the certificate.
func domainForms(domain string) string {
	s := printable(domain)
	if ref, ok := referenceName(domain); ok && ref != strings.ToLower(strings.TrimSuffix(domain, ".")) {
		s += " (" + ref + ")"
	}
	return s
}

// subject describes a certificate's subject: its CN, or the whole name.
func subject(c *x509.Certificate) string {
	if c == nil {
		return `""`
	}
	return nameOf(c.Subject)
}

func nameOf(n pkix.Name) string { return quote(plainName(n)) }

func plainName(n pkix.Name) string {
	if n.CommonName != "" {
		return n.CommonName
	}
	return n.String()
}

// VerifyOptions are the parameters of VerifyPeer. The zero value uses the
// system's trusted roots and the current time.
type VerifyOptions struct {
	// Roots are the trusted CA certificates; nil means the system's.
	Roots *x509.CertPool
	// Now is when the certificates must be valid; zero means time.Now().
	Now time.Time
}

// peerKeyUsages are the extended key usages accepted for an S2S peer in
// either direction. A server is TLS client on its outbound connections,
// but many XMPP certificates carry only serverAuth (public CAs are
// dropping clientAuth), which XMPP servers accept there too; so either
// will do, whatever the direction. Certificates without the extension are accepted
// as well (crypto/x509 reads that as any usage); ExtKeyUsageAny is not
// requested, so a certificate for, say, only e-mail protection is refused.
var peerKeyUsages = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}

// VerifyPeer checks that chain, a peer's certificates leaf first (as in
// tls.ConnectionState.PeerCertificates, the rest used as intermediates in
// any order), authenticates the peer as the XMPP domain: RFC 6120 §13.7.2,
// RFC 7590 and XEP-0178, for the project's S2S spec §5.3. It returns nil if
// so, else a *CertError.
//
// The chain must lead to opts.Roots, be valid at opts.Now, and allow TLS
// server or client authentication (either, in both directions: see
// CertBadUsage). The leaf must then match domain per Identities.Match:
// DNS-ID, SRV-ID, XmppAddr or, failing all three, CN-ID. The domain is the
// reference identifier: as initiating server the domain we wanted to reach
// (never the SRV target host), as receiving server the domain the peer
// claims in its stream header or dialback request. A critical
// subjectAltName holding only otherNames, which crypto/x509 alone refuses,
// is accepted: it is handled here.
//
// When several problems apply, Problem is the first of: missing,
// malformed, the leaf's dates, the chain (issuer, key usage, CA dates,
// other), the name. A name mismatch found together with a chain problem
// is reported too (CertError.NameMismatch).
//
// domain must be a valid domain name (Unicode or A-labels) or IP literal,
// as for ClientConfig; otherwise VerifyPeer returns a plain error that is
// not a *CertError, since that is a fault of the caller, not of the peer.
func VerifyPeer(chain []*x509.Certificate, domain string, opts VerifyOptions) error {
	if _, err := serverName(domain); err != nil {
		return err
	}
	if len(chain) == 0 || chain[0] == nil {
		return &CertError{Domain: domain, Problem: CertMissing}
	}
	leaf := chain[0]
	e := &CertError{Domain: domain, Cert: leaf, NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter}
	ids, err := PeerIdentities(leaf)
	if err != nil {
		e.Problem, e.Err = CertMalformed, err
		return e
	}
	for _, c := range chain[1:] {
		if c == nil {
			e.Problem, e.Err = CertMalformed, errors.New("tlsmode: nil certificate in chain")
			return e
		}
	}
	e.Names = ids
	ref, ok := referenceName(domain)
	e.NameMismatch = !ok || !ids.match(ref)

	now := opts.Now
	if now.IsZero() {
		now = time.Now()
	}
	checkChain(e, chain, now, opts.Roots)
	if e.Problem == 0 {
		if !e.NameMismatch {
			return nil
		}
		e.Problem = CertWrongName
	}
	return e
}

// checkChain sets e.Problem (and the details) if chain is not trusted at
// now; it leaves it zero otherwise.
func checkChain(e *CertError, chain []*x509.Certificate, now time.Time, roots *x509.CertPool) {
	leaf := chain[0]
	// crypto/x509 would find these too, but its error has no dates.
	if problem := validity(leaf, now); problem != 0 {
		e.Problem = problem
		return
	}
	intermediates := x509.NewCertPool()
	for _, c := range chain[1:] {
		intermediates.AddCert(c)
	}
	_, err := handledSAN(leaf).Verify(x509.VerifyOptions{
		Intermediates: intermediates,
		Roots:         roots,
		CurrentTime:   now,
		KeyUsages:     peerKeyUsages,
	})
	if err == nil {
		return
	}
	e.Err = err
	var (
		unknown  x509.UnknownAuthorityError
		invalid  x509.CertificateInvalidError
		sysRoots x509.SystemRootsError
	)
	switch {
	case errors.As(err, &unknown), errors.As(err, &sysRoots):
		// No chain was found. An out-of-date CA certificate the peer sent
		// is the likelier reason, and its dates tell the admin more; peers
		// that send an extra expired cross-signature still verify, so
		// this only applies when verification failed.
		for _, c := range chain[1:] {
			if problem := validity(c, now); problem != 0 {
				e.Problem, e.Cert, e.NotBefore, e.NotAfter, e.caCert = problem, c, c.NotBefore, c.NotAfter, true
				return
			}
		}
		e.Problem = CertUnknownIssuer
		e.SelfSigned = len(chain) == 1 && selfSigned(leaf)
		// The CA to trust: the last certificate sent if it is a root,
		// else its issuer (which the peer may also have failed to send).
		top := chain[len(chain)-1]
		if selfSigned(top) {
			e.Issuer = plainName(top.Subject)
		} else {
			e.Issuer = plainName(top.Issuer)
		}
	case errors.As(err, &invalid):
		switch invalid.Reason {
		case x509.Expired:
			// The leaf's dates were checked above, so a CA's (the
			// platform verifiers report them this way).
			c := invalid.Cert
			if c == nil {
				e.Problem = CertInvalid
				return
			}
			e.Problem, e.Cert, e.NotBefore, e.NotAfter, e.caCert = validity(c, now), c, c.NotBefore, c.NotAfter, c != leaf
			if e.Problem == 0 {
				e.Problem = CertExpired
			}
		case x509.IncompatibleUsage:
			e.Problem = CertBadUsage
		default:
			e.Problem = CertInvalid
		}
	default:
		e.Problem = CertInvalid
	}
}

// handledSAN returns leaf, or a shallow copy of it that no longer lists
// the subjectAltName extension as unhandled. crypto/x509 leaves a critical
// subjectAltName with no names of the kinds it knows (only otherNames, as
// in a certificate with an empty subject, RFC 5280 §4.2.1.6) to the
// application, and refuses to verify the certificate otherwise; VerifyPeer
// has parsed that extension with PeerIdentities.
func handledSAN(leaf *x509.Certificate) *x509.Certificate {
	i := slices.IndexFunc(leaf.UnhandledCriticalExtensions, oidSubjectAltName.Equal)
	if i < 0 {
		return leaf
	}
	c := *leaf
	c.UnhandledCriticalExtensions = slices.Delete(slices.Clone(leaf.UnhandledCriticalExtensions), i, i+1)
	return &c
}

// validity returns CertExpired or CertNotYetValid if c is not valid at now.
func validity(c *x509.Certificate, now time.Time) CertProblem {
	switch {
	case now.Before(c.NotBefore):
		return CertNotYetValid
	case now.After(c.NotAfter):
		return CertExpired
	}
	return 0
}

// selfSigned reports whether c is signed by its own key under its own name.
// CheckSignatureFrom would insist that c be a CA, and self-signed leaves are
// not.
func selfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawIssuer, c.RawSubject) &&
		c.CheckSignature(c.SignatureAlgorithm, c.RawTBSCertificate, c.Signature) == nil
}

// VerifyState is VerifyPeer for the certificates of a completed TLS
// handshake, cs.PeerCertificates: the server's certificate on a
// connection we initiated, the client's on one we accepted (ServerConfig
// asks for it).
//
// A handshake only gets this far with a certificate crypto/tls could not
// verify for domain if verification was left to us: set
// InsecureSkipVerify in the client config, so that a certificate with only
// an SRV-ID or XmppAddr, or an unverifiable one, still yields encryption,
// then call VerifyState and fall back to dialback on error. To refuse such
// peers during the handshake instead, also set
//
//	cfg.VerifyConnection = func(cs tls.ConnectionState) error {
//		return tlsmode.VerifyState(cs, domain, opts)
//	}
func VerifyState(cs tls.ConnectionState, domain string, opts VerifyOptions) error {
	return VerifyPeer(cs.PeerCertificates, domain, opts)
}
