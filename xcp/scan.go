package xcp

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"unicode/utf8"

	"mellium.im/xmpp/stream"
)

// The scanner reads one XML stream without building tokens: it finds where
// each top-level element ends, checks it is well-formed restricted XML
// (RFC 6120 §11) and notes where its routing attributes are. The element's
// bytes are then forwarded verbatim, so a relayed stanza costs one pass over
// its bytes and one copy.
//
// It is a byte-level state machine that resumes where it stopped when more
// input arrives, so a peer that trickles a large stanza in tiny pieces
// costs linear time, and it never buffers more than the element limit.
//
// To keep forwarding verbatim safe, it is stricter than XML 1.0 in ways real
// XMPP traffic never notices: element and attribute names are ASCII, and a
// stanza may use no namespace prefix that only the stream header declares.

// Namespaces.
const (
	nsStream       = "http://etherx.jabber.org/streams"
	nsStreamErrors = "urn:ietf:params:xml:ns:xmpp-streams"
	nsStanzaErrors = "urn:ietf:params:xml:ns:xmpp-stanzas"
	nsXML          = "http://www.w3.org/XML/1998/namespace"
	nsXMLNS        = "http://www.w3.org/2000/xmlns/"
	nsClient       = "jabber:client"
	nsServer       = "jabber:server"
)

// Bounds that are not configurable: they only stop abuse.
const (
	maxHeaderSize = 8 << 10 // the stream header, XML declaration included
	maxRefLen     = 12      // "&#x10FFFF;" is the longest valid reference
	minRead       = 4 << 10 // read at least this much at once
	initialBuf    = 32 << 10
	maxScopeDecls = 128 // namespace declarations in scope
)

type scanState uint8

const (
	stTop       scanState = iota // between top-level elements
	stText                       // character data inside an element
	stLT                         // after '<'
	stStartName                  // in a start tag's name
	stTagSpace                   // in a start tag, between attributes
	stAttrName                   // in an attribute name
	stAttrEq                     // after an attribute name, before '='
	stAttrQuote                  // after '=', before the opening quote
	stAttrValue                  // in an attribute value
	stEmptyEnd                   // after '/' in a start tag
	stEndName                    // in an end tag's name
	stEndSpace                   // after an end tag's name
	stBang                       // after "<!"
	stCDATA                      // in a CDATA section
	stRef                        // in an entity or character reference
	stDecl                       // in the XML declaration, before the header
)

// kind classifies a top-level element.
type kind uint8

const (
	kindOther kind = iota
	kindMessage
	kindPresence
	kindIQ
	kindHandshake
	kindStreamError
)

func (k kind) stanza() bool { return k >= kindMessage && k <= kindIQ }

func (k kind) String() string {
	switch k {
	case kindMessage:
		return "message"
	case kindPresence:
		return "presence"
	case kindIQ:
		return "iq"
	case kindHandshake:
		return "handshake"
	case kindStreamError:
		return "stream:error"
	}
	return "unknown"
}

// span locates bytes relative to the start of the element being scanned.
// start < 0 means absent.
type span struct{ start, end int32 }

var noSpan = span{-1, -1}

func (s span) ok() bool { return s.start >= 0 }

type attrSpan struct{ name, value span }

// scopeEntry is a namespace declaration on an open element. id is the
// same for declarations of equal namespace names (after unescaping), so
// that resolved attribute names compare as integers.
type scopeEntry struct {
	prefix, value span
	id            int32
	hash          uint64
	depth         int
}

// binding is a prefix declared on the stream header.
type binding struct {
	prefix, ns string
	id         int32
	hash       uint64
}

// xmlNSID is the namespace identity of the xml prefix, which no other
// prefix may share.
const xmlNSID = -1

// header is a peer's stream header.
type header struct {
	qname    string // e.g. "stream:stream", to match the closing tag
	local    string // "stream" if the peer got it right
	streamNS string // namespace of the element: must be nsStream
	ns       string // content namespace (the default namespace)
	to, from string
	id       string
	version  string
}

// element is a complete top-level element. raw aliases the scanner's
// buffer and is valid until the next call to next.
type element struct {
	kind                kind
	raw                 []byte
	name                string // qualified name, only for kindOther (error text)
	to, from, typ, id   span
	strip               span // the stanza's own xmlns attribute, with the white space before it
	usesHeaderPrefix    bool
	unsupportedNSForErr string
}

// errStreamEnd reports the peer's </stream:stream>.
var errStreamEnd = errors.New("xcp: peer closed the stream")

// limits bounds what a scanner accepts.
type limits struct {
	maxElem  int
	maxDepth int
	maxAttrs int
}

type scanner struct {
	r   io.Reader
	buf []byte
	// base is where the current element (or unconsumed input) starts, pos
	// how far it has been scanned, end where the input read so far ends.
	base, pos, end int
	rerr           error // sticky read error

	lim        limits
	headerMode bool // reading the stream header
	standalone bool // parsing one element with no stream around it
	atStart    bool // nothing but an optional BOM consumed

	hdr      header
	hdrScope []binding
	hdrIDs   int32 // namespace identities used by hdrScope
	nextID   int32 // next fresh namespace identity

	st       scanState
	ret      scanState // state to resume after a reference
	depth    int
	k        int // progress through a multi-byte construct
	quote    byte
	sawSpace bool
	mark     int // relative start of the current name, reference or value
	tagName  span
	curAttr  span
	attrs    []attrSpan
	names    []span
	scope    []scopeEntry
	attrIDs  []int32 // resolved namespace of each attribute of the start tag
	top      element

	// Backing arrays that spare allocations for typical stanzas.
	attrsBuf   [8]attrSpan
	namesBuf   [8]span
	attrIDsBuf [8]int32
}

func newScanner(r io.Reader, lim limits) *scanner {
	s := &scanner{
		r:          r,
		buf:        make([]byte, initialBuf),
		lim:        lim,
		headerMode: true,
		atStart:    true,
	}
	s.attrs, s.names, s.attrIDs = s.attrsBuf[:0], s.namesBuf[:0], s.attrIDsBuf[:0]
	return s
}

// newElementScanner parses one element held entirely in b, as if it came
// from a component stream. b is not modified.
func newElementScanner(b []byte, lim limits) *scanner {
	s := &scanner{
		buf:        b,
		end:        len(b),
		rerr:       io.EOF,
		lim:        lim,
		standalone: true,
		hdr:        header{ns: NSAccept, streamNS: nsStream},
	}
	s.attrs, s.names, s.attrIDs = s.attrsBuf[:0], s.namesBuf[:0], s.attrIDsBuf[:0]
	return s
}

func violation(cond stream.Error, format string, args ...any) *StreamError {
	return &StreamError{Condition: cond, Text: fmt.Sprintf(format, args...)}
}

func (s *scanner) rel(p int) int32 { return int32(p - s.base) }

func (s *scanner) bytesOf(sp span) []byte {
	return s.buf[s.base+int(sp.start) : s.base+int(sp.end)]
}

// readHeader reads up to and including the peer's stream header.
func (s *scanner) readHeader() (header, error) {
	for {
		done, err := s.run()
		if err != nil {
			return header{}, err
		}
		if done {
			return s.hdr, nil
		}
		if s.end-s.base > maxHeaderSize {
			return header{}, violation(stream.PolicyViolation, "stream header longer than %d bytes", maxHeaderSize)
		}
		if err := s.fill(); err != nil {
			return header{}, s.readFailure(err)
		}
	}
}

// next returns the next top-level element. It returns errStreamEnd at the
// peer's closing tag, a *StreamError for bad input, and the read error
// (io.ErrUnexpectedEOF for a clean EOF) when the input fails.
func (s *scanner) next() (element, error) {
	s.consumed()
	for {
		done, err := s.run()
		if err != nil {
			return element{}, err
		}
		if done {
			return s.finishElement()
		}
		if s.pos-s.base > s.lim.maxElem {
			return element{}, violation(stream.PolicyViolation, "element larger than %d bytes", s.lim.maxElem)
		}
		if err := s.fill(); err != nil {
			return element{}, s.readFailure(err)
		}
	}
}

func (s *scanner) readFailure(err error) error {
	if err == io.EOF {
		if s.standalone {
			if s.st == stTop && s.pos == s.base {
				return io.EOF
			}
			return violation(stream.NotWellFormed, "element is incomplete")
		}
		return io.ErrUnexpectedEOF
	}
	return err
}

// consumed drops the element returned last and shrinks a buffer that a
// large element made big, so idle links do not pin memory.
func (s *scanner) consumed() {
	s.base = s.pos
	if s.standalone || len(s.buf) <= 4*initialBuf || s.end-s.base > initialBuf/2 {
		return
	}
	nb := make([]byte, initialBuf)
	n := copy(nb, s.buf[s.base:s.end])
	s.buf, s.base, s.pos, s.end = nb, 0, s.pos-s.base, n
}

func (s *scanner) fill() error {
	if s.rerr != nil {
		return s.rerr
	}
	if len(s.buf)-s.end < minRead {
		if s.base > 0 {
			n := copy(s.buf, s.buf[s.base:s.end])
			s.pos -= s.base
			s.end = n
			s.base = 0
		}
		if len(s.buf)-s.end < minRead {
			limit := s.lim.maxElem + minRead
			if s.headerMode {
				limit = maxHeaderSize + minRead
			}
			size := max(2*len(s.buf), s.end+minRead)
			size = min(size, limit)
			if size > len(s.buf) {
				nb := make([]byte, size)
				copy(nb, s.buf[:s.end])
				s.buf = nb
			}
		}
	}
	if s.end == len(s.buf) {
		// Only possible past the limits, which the callers check first.
		return violation(stream.PolicyViolation, "element too large")
	}
	n, err := s.r.Read(s.buf[s.end:])
	s.end += n
	if err != nil {
		s.rerr = err
		if n > 0 {
			return nil
		}
		return err
	}
	return nil
}

// run scans the buffered input. It reports true when a top-level element
// or the stream header is complete (s.pos just past it).
func (s *scanner) run() (bool, error) {
	b := s.buf
	for s.pos < s.end {
		c := b[s.pos]
		switch s.st {
		case stTop:
			switch {
			case isSpace(c):
				s.pos++
				s.base = s.pos
				s.atStart = false // the XML declaration must come first
			case c == '<':
				s.base = s.pos
				s.st = stLT
				s.pos++
			case s.atStart && c == 0xEF:
				// A UTF-8 byte order mark may precede the header.
				if s.end-s.pos < 3 {
					return false, nil
				}
				if b[s.pos+1] != 0xBB || b[s.pos+2] != 0xBF {
					return false, violation(stream.NotWellFormed, "text before the stream header")
				}
				s.pos += 3
				s.base = s.pos
			default:
				if s.headerMode {
					return false, violation(stream.NotWellFormed, "text before the stream header")
				}
				return false, violation(stream.BadFormat, "text between stanzas")
			}

		case stText:
			rest := b[s.pos:s.end]
			i := bytes.IndexByte(rest, '<')
			if i < 0 {
				i = len(rest)
			}
			j, bracket := scanText(rest[:i])
			seg := rest[:i]
			if j >= 0 {
				seg = rest[:j]
			}
			// "]]>" may not appear in character data (XML 1.0 §2.4).
			if bracket && bytes.Contains(seg, []byte("]]>")) {
				return false, violation(stream.NotWellFormed, "\"]]>\" in character data")
			}
			switch {
			case j >= 0:
				s.pos += j + 1
				s.ret, s.st, s.k = stText, stRef, 0
			case i < len(rest):
				s.pos += i + 1
				s.st = stLT
			default:
				// Out of input: keep trailing ']'s, they may start "]]>".
				keep := 0
				for keep < 2 && keep < len(seg) && seg[len(seg)-1-keep] == ']' {
					keep++
				}
				s.pos += len(seg) - keep
				return false, nil
			}

		case stLT:
			switch {
			case c == '/':
				s.st = stEndName
				s.mark = int(s.rel(s.pos + 1))
			case c == '!':
				s.st, s.k = stBang, 0
			case c == '?':
				if s.atStart && s.headerMode {
					s.st, s.k = stDecl, 0
					s.mark = int(s.rel(s.pos - 1))
				} else {
					return false, violation(stream.RestrictedXML, "processing instruction")
				}
			case isNameStart(c):
				s.st = stStartName
				s.mark = int(s.rel(s.pos))
				s.attrs = s.attrs[:0]
			default:
				return false, violation(stream.NotWellFormed, "'<' not followed by a name")
			}
			s.atStart = false
			s.pos++

		case stStartName:
			if isNameChar(c) {
				s.pos++
				continue
			}
			s.tagName = span{int32(s.mark), s.rel(s.pos)}
			if !validQName(s.bytesOf(s.tagName)) {
				return false, violation(stream.NotWellFormed, "invalid element name %q", truncBytes(s.bytesOf(s.tagName)))
			}
			s.st, s.sawSpace = stTagSpace, false

		case stTagSpace:
			switch {
			case isSpace(c):
				s.sawSpace = true
				s.pos++
			case c == '>':
				s.pos++
				done, err := s.startTag(false)
				if err != nil || done {
					return done, err
				}
			case c == '/':
				s.st = stEmptyEnd
				s.pos++
			case isNameStart(c) && s.sawSpace:
				s.st = stAttrName
				s.mark = int(s.rel(s.pos))
				s.pos++
			default:
				return false, violation(stream.NotWellFormed, "unexpected %q in a start tag", c)
			}

		case stAttrName:
			if isNameChar(c) {
				s.pos++
				continue
			}
			s.curAttr = span{int32(s.mark), s.rel(s.pos)}
			if !validQName(s.bytesOf(s.curAttr)) {
				return false, violation(stream.NotWellFormed, "invalid attribute name %q", truncBytes(s.bytesOf(s.curAttr)))
			}
			s.st = stAttrEq

		case stAttrEq:
			switch {
			case isSpace(c):
				s.pos++
			case c == '=':
				s.st = stAttrQuote
				s.pos++
			default:
				return false, violation(stream.NotWellFormed, "attribute without a value")
			}

		case stAttrQuote:
			switch {
			case isSpace(c):
				s.pos++
			case c == '\'' || c == '"':
				s.quote = c
				s.st = stAttrValue
				s.pos++
				s.mark = int(s.rel(s.pos))
			default:
				return false, violation(stream.NotWellFormed, "attribute value not quoted")
			}

		case stAttrValue:
			rest := b[s.pos:s.end]
			i := bytes.IndexByte(rest, s.quote)
			if i < 0 {
				i = len(rest)
			}
			lt, amp := scanAttr(rest[:i])
			if lt >= 0 && (amp < 0 || lt < amp) {
				return false, violation(stream.NotWellFormed, "'<' in an attribute value")
			}
			if amp >= 0 {
				s.pos += amp + 1
				s.ret, s.st, s.k = stAttrValue, stRef, 0
				continue
			}
			s.pos += i
			if i == len(rest) {
				continue
			}
			if len(s.attrs) >= s.lim.maxAttrs {
				return false, violation(stream.PolicyViolation, "more than %d attributes on an element", s.lim.maxAttrs)
			}
			s.attrs = append(s.attrs, attrSpan{name: s.curAttr, value: span{int32(s.mark), s.rel(s.pos)}})
			s.pos++
			s.st, s.sawSpace = stTagSpace, false

		case stEmptyEnd:
			if c != '>' {
				return false, violation(stream.NotWellFormed, "'/' not followed by '>' in a start tag")
			}
			s.pos++
			done, err := s.startTag(true)
			if err != nil || done {
				return done, err
			}

		case stEndName:
			if isNameChar(c) && (int(s.rel(s.pos)) > s.mark || isNameStart(c)) {
				s.pos++
				continue
			}
			s.tagName = span{int32(s.mark), s.rel(s.pos)}
			s.st = stEndSpace

		case stEndSpace:
			switch {
			case isSpace(c):
				s.pos++
			case c == '>':
				s.pos++
				done, err := s.endTag()
				if err != nil || done {
					return done, err
				}
			default:
				return false, violation(stream.NotWellFormed, "unexpected %q in an end tag", c)
			}

		case stBang:
			const cdata = "[CDATA["
			if s.k == 0 && c == '-' {
				return false, violation(stream.RestrictedXML, "comment")
			}
			if c != cdata[s.k] {
				if s.k == 0 && c == 'D' {
					return false, violation(stream.RestrictedXML, "document type declaration")
				}
				return false, violation(stream.NotWellFormed, "'<!' not followed by a CDATA section")
			}
			if s.depth == 0 {
				return false, violation(stream.NotWellFormed, "CDATA section outside an element")
			}
			s.k++
			s.pos++
			if s.k == len(cdata) {
				s.st = stCDATA
			}

		case stCDATA:
			rest := b[s.pos:s.end]
			if i := bytes.Index(rest, []byte("]]>")); i >= 0 {
				s.pos += i + 3
				s.st = stText
				continue
			}
			// Keep the last two bytes: they may start the terminator.
			s.pos += max(0, len(rest)-2)
			return false, nil

		case stRef:
			if c == ';' {
				if err := checkRef(b[s.pos-s.k : s.pos]); err != nil {
					return false, err
				}
				s.pos++
				s.st = s.ret
				continue
			}
			if s.k >= maxRefLen || !(isNameChar(c) || c == '#') {
				return false, violation(stream.NotWellFormed, "malformed entity reference")
			}
			s.k++
			s.pos++

		case stDecl:
			rest := b[s.pos:s.end]
			i := bytes.Index(rest, []byte("?>"))
			if i < 0 {
				s.pos += max(0, len(rest)-1)
				return false, nil
			}
			decl := b[s.base : s.pos+i+2]
			s.pos += i + 2
			if err := checkDecl(decl); err != nil {
				return false, err
			}
			s.st = stTop
			s.base = s.pos
		}
	}
	return false, nil
}

// startTag handles a complete start tag.
func (s *scanner) startTag(empty bool) (bool, error) {
	s.depth++
	if s.depth > s.lim.maxDepth {
		return false, violation(stream.PolicyViolation, "elements nested deeper than %d", s.lim.maxDepth)
	}
	if s.depth == 1 && !s.headerMode {
		s.top = element{to: noSpan, from: noSpan, typ: noSpan, id: noSpan, strip: noSpan}
		s.nextID = s.hdrIDs
	}
	// Duplicate attributes, and namespace declarations.
	prefixed := 0
	for i, a := range s.attrs {
		name := s.bytesOf(a.name)
		for _, o := range s.attrs[:i] {
			if o.name.end-o.name.start == a.name.end-a.name.start && bytes.Equal(s.bytesOf(o.name), name) {
				return false, violation(stream.NotWellFormed, "attribute %q repeated", truncBytes(name))
			}
		}
		p, _, ok := cutColon(name)
		switch {
		case !ok:
			if string(name) == "xmlns" {
				if v := s.bytesOf(a.value); attrIs(v, nsXML) || attrIs(v, nsXMLNS) {
					return false, violation(stream.BadNamespacePrefix, "reserved namespace %q declared as the default namespace", truncString(unescape(v)))
				}
			}
		case string(p) == "xmlns":
			if err := s.declare(a, name[len("xmlns:"):]); err != nil {
				return false, err
			}
		default:
			prefixed++
		}
	}
	// Every prefix used must be declared.
	if p, _, ok := cutColon(s.bytesOf(s.tagName)); ok {
		if string(p) == "xml" || string(p) == "xmlns" {
			return false, violation(stream.BadNamespacePrefix, "element with reserved prefix %q", p)
		}
		if _, err := s.resolveID(p); err != nil {
			return false, err
		}
	}
	if prefixed > 0 {
		if err := s.checkPrefixedAttrs(prefixed); err != nil {
			return false, err
		}
	}

	if s.depth == 1 {
		if s.headerMode {
			if empty {
				return false, violation(stream.NotWellFormed, "stream header closed at once")
			}
			return true, s.takeHeader()
		}
		if err := s.noteTop(); err != nil {
			return false, err
		}
	}
	if len(s.names) >= s.lim.maxDepth {
		return false, violation(stream.PolicyViolation, "elements nested deeper than %d", s.lim.maxDepth)
	}
	s.names = append(s.names, s.tagName)
	if empty {
		return s.closeElement(), nil
	}
	s.st = stText
	return false, nil
}

// declare records the namespace declaration a (xmlns:p='…') on the
// element being opened, refusing what Namespaces in XML 1.0 §3 reserves:
// the xmlns prefix, the xml prefix bound to anything but its namespace,
// and another prefix bound to either reserved namespace.
func (s *scanner) declare(a attrSpan, p []byte) error {
	v := s.bytesOf(a.value)
	isXML, isXMLNS := attrIs(v, nsXML), attrIs(v, nsXMLNS)
	switch {
	case len(v) == 0:
		return violation(stream.NotWellFormed, "namespace prefix %q bound to nothing", truncBytes(p))
	case string(p) == "xmlns":
		return violation(stream.BadNamespacePrefix, "reserved prefix %q declared", p)
	case string(p) == "xml":
		if !isXML {
			return violation(stream.BadNamespacePrefix, "reserved prefix %q bound to %q", p, truncString(unescape(v)))
		}
		return nil // the xml prefix is always bound; nothing to record
	case isXML || isXMLNS:
		return violation(stream.BadNamespacePrefix, "prefix %q bound to the reserved namespace %q", truncBytes(p), truncString(unescape(v)))
	}
	if len(s.scope) >= maxScopeDecls {
		return violation(stream.PolicyViolation, "more than %d namespace declarations in scope", maxScopeDecls)
	}
	e := scopeEntry{
		prefix: span{a.name.start + int32(len("xmlns:")), a.name.end},
		value:  a.value,
		hash:   nsHash(v),
		depth:  s.depth,
	}
	e.id = s.nsID(e.hash, v)
	s.scope = append(s.scope, e)
	return nil
}

// nsID returns the identity of the namespace name v (raw, as written),
// whose hash is h: that of an equal name in scope, or a fresh one.
func (s *scanner) nsID(h uint64, v []byte) int32 {
	for _, b := range s.hdrScope {
		if b.hash == h && unescape(v) == b.ns {
			return b.id
		}
	}
	for _, o := range s.scope {
		if o.hash == h && sameAttrValue(s.bytesOf(o.value), v) {
			return o.id
		}
	}
	s.nextID++
	return s.nextID - 1
}

// checkPrefixedAttrs refuses two attributes with the same local name whose
// prefixes are bound to the same namespace (Namespaces in XML 1.0 §6.3).
func (s *scanner) checkPrefixedAttrs(n int) error {
	s.attrIDs = s.attrIDs[:0]
	var (
		last   []byte // the last prefix resolved: often the next one's
		lastID int32
	)
	for _, a := range s.attrs {
		p, _, ok := cutColon(s.bytesOf(a.name))
		switch {
		case !ok || string(p) == "xmlns":
			s.attrIDs = append(s.attrIDs, xmlNSID-1) // not a namespaced attribute
		case string(p) == "xml":
			s.attrIDs = append(s.attrIDs, xmlNSID)
		case last != nil && bytes.Equal(p, last):
			s.attrIDs = append(s.attrIDs, lastID)
		default:
			id, err := s.resolveID(p)
			if err != nil {
				return err
			}
			s.attrIDs = append(s.attrIDs, id)
			last, lastID = p, id
		}
	}
	if n < 2 {
		return nil
	}
	for i, a := range s.attrs {
		id := s.attrIDs[i]
		if id < xmlNSID {
			continue
		}
		_, local, _ := cutColon(s.bytesOf(a.name))
		for j, o := range s.attrs[:i] {
			if s.attrIDs[j] != id {
				continue
			}
			if _, l, _ := cutColon(s.bytesOf(o.name)); bytes.Equal(l, local) {
				return violation(stream.NotWellFormed, "attributes %q and %q have the same namespace and name",
					truncBytes(s.bytesOf(o.name)), truncBytes(s.bytesOf(a.name)))
			}
		}
	}
	return nil
}

// resolveID finds the identity of the namespace a prefix is bound to: on
// the element or its ancestors first, then on the stream header.
func (s *scanner) resolveID(p []byte) (int32, error) {
	for i := len(s.scope) - 1; i >= 0; i-- {
		e := &s.scope[i]
		if int(e.prefix.end-e.prefix.start) == len(p) && bytes.Equal(s.bytesOf(e.prefix), p) {
			return e.id, nil
		}
	}
	if !s.headerMode {
		for _, b := range s.hdrScope {
			if string(p) == b.prefix {
				s.top.usesHeaderPrefix = true
				return b.id, nil
			}
		}
	}
	return 0, violation(stream.BadNamespacePrefix, "undeclared namespace prefix %q", truncBytes(p))
}

// resolve finds the namespace a prefix is bound to, as resolveID.
func (s *scanner) resolve(p []byte) (string, error) {
	for i := len(s.scope) - 1; i >= 0; i-- {
		if bytes.Equal(s.bytesOf(s.scope[i].prefix), p) {
			return unescape(s.bytesOf(s.scope[i].value)), nil
		}
	}
	if !s.headerMode {
		for _, b := range s.hdrScope {
			if string(p) == b.prefix {
				s.top.usesHeaderPrefix = true
				return b.ns, nil
			}
		}
	}
	return "", violation(stream.BadNamespacePrefix, "undeclared namespace prefix %q", truncBytes(p))
}

// noteTop records what the router needs from a top-level start tag, and
// checks a stanza's namespace: a stanza is in the stream's content
// namespace, by inheriting it or by naming it in an xmlns attribute that
// the copy drops (so that the stanza takes the namespace of whatever stream
// it is written to). A stanza in another content namespace would be
// forwarded into a stream where it means something else, or where the
// receiver (Prosody, for one) ends the stream: it is refused with
// <invalid-namespace/>. Standalone parsing (ParseStanza) takes any of the
// content namespaces, and drops it the same way.
func (s *scanner) noteTop() error {
	qname := s.bytesOf(s.tagName)
	prefix, local, prefixed := cutColon(qname)
	if !prefixed {
		local, prefix = prefix, nil
	}
	var (
		nsVal []byte
		nsAt  = -1
	)
	for i, a := range s.attrs {
		n := s.bytesOf(a.name)
		switch string(n) {
		case "to":
			s.top.to = a.value
		case "from":
			s.top.from = a.value
		case "type":
			s.top.typ = a.value
		case "id":
			s.top.id = a.value
		case "xmlns":
			nsVal, nsAt = s.bytesOf(a.value), i
		}
	}
	k := kindOther
	switch string(local) {
	case "message":
		k = kindMessage
	case "presence":
		k = kindPresence
	case "iq":
		k = kindIQ
	case "handshake":
		k = kindHandshake
	case "error":
		if prefixed {
			if ns, _ := s.resolve(prefix); ns == s.hdr.streamNS { // prefix checked by startTag
				s.top.kind = kindStreamError
				return nil
			}
		}
	}
	var ns string // the element's namespace, when not the stream's
	switch {
	case prefixed:
		ns, _ = s.resolve(prefix)
		if k != kindOther && contentNS(ns) {
			return violation(stream.BadNamespacePrefix, "<%s/> with a namespace prefix: stanzas use the default namespace", truncBytes(qname))
		}
		k = kindOther
	case nsAt < 0 || attrIs(nsVal, s.hdr.ns):
		// The stream's content namespace.
	case s.standalone && k != kindHandshake && contentNS(unescape(nsVal)):
		// ParseStanza: any content namespace, rewritten below.
	default:
		ns = unescape(nsVal)
		if k != kindOther && contentNS(ns) {
			return violation(stream.InvalidNamespace, "<%s xmlns='%s'/> on a %s stream", local, truncString(ns), s.hdr.ns)
		}
		k = kindOther
	}
	if k != kindOther && nsAt >= 0 {
		a := s.attrs[nsAt]
		start := a.name.start
		for start > 0 && isSpace(s.buf[s.base+int(start)-1]) {
			start--
		}
		s.top.strip = span{start, a.value.end + 1}
	}
	s.top.kind = k
	if k == kindOther {
		s.top.name = truncBytes(qname)
		if ns == "" {
			ns = s.hdr.ns
		}
		s.top.unsupportedNSForErr = truncString(ns)
	}
	return nil
}

// contentNS reports the namespaces XMPP stanzas are qualified by.
func contentNS(ns string) bool {
	return ns == NSAccept || ns == NSConnect || ns == nsClient || ns == nsServer
}

// attrIs reports whether the raw attribute value v means s, without
// allocating in the common case of a value with no reference or white
// space to normalise.
func attrIs(v []byte, s string) bool {
	if !needsUnescape(v) {
		return string(v) == s
	}
	return unescape(v) == s
}

func sameAttrValue(a, b []byte) bool {
	if !needsUnescape(a) && !needsUnescape(b) {
		return bytes.Equal(a, b)
	}
	return unescape(a) == unescape(b)
}

func needsUnescape(v []byte) bool {
	for _, c := range v {
		switch c {
		case '&', '\t', '\n', '\r':
			return true
		}
	}
	return false
}

// nsHash is FNV-1a over the unescaped attribute value v.
func nsHash(v []byte) uint64 {
	if needsUnescape(v) {
		v = []byte(unescape(v))
	}
	h := uint64(14695981039346656037)
	for _, c := range v {
		h ^= uint64(c)
		h *= 1099511628211
	}
	return h
}

// endTag handles a complete end tag.
func (s *scanner) endTag() (bool, error) {
	name := s.bytesOf(s.tagName)
	if s.depth == 0 {
		if s.standalone || s.headerMode || string(name) != s.hdr.qname {
			return false, violation(stream.NotWellFormed, "unexpected end tag %q", truncBytes(name))
		}
		return true, errStreamEnd
	}
	if !bytes.Equal(s.bytesOf(s.names[len(s.names)-1]), name) {
		return false, violation(stream.NotWellFormed, "end tag %q does not match %q",
			truncBytes(name), truncBytes(s.bytesOf(s.names[len(s.names)-1])))
	}
	return s.closeElement(), nil
}

// closeElement pops the innermost element and reports whether that
// completed a top-level element.
func (s *scanner) closeElement() bool {
	s.names = s.names[:len(s.names)-1]
	for len(s.scope) > 0 && s.scope[len(s.scope)-1].depth == s.depth {
		s.scope = s.scope[:len(s.scope)-1]
	}
	s.depth--
	if s.depth > 0 {
		s.st = stText
		return false
	}
	s.st = stTop
	return true
}

func (s *scanner) finishElement() (element, error) {
	raw := s.buf[s.base:s.pos]
	if len(raw) > s.lim.maxElem {
		return element{}, violation(stream.PolicyViolation, "element larger than %d bytes", s.lim.maxElem)
	}
	if err := checkChars(raw); err != nil {
		return element{}, err
	}
	el := s.top
	el.raw = raw
	if el.kind.stanza() && el.usesHeaderPrefix {
		return element{}, violation(stream.BadNamespacePrefix, "a stanza uses a namespace prefix declared only on the stream header")
	}
	return el, nil
}

// takeHeader records the stream header just scanned and switches to
// reading elements.
func (s *scanner) takeHeader() error {
	if err := checkChars(s.buf[s.base:s.pos]); err != nil {
		return err
	}
	qname := s.bytesOf(s.tagName)
	prefix, local, prefixed := cutColon(qname)
	if !prefixed {
		local, prefix = prefix, nil
	}
	h := header{qname: string(qname), local: string(local)}
	for _, a := range s.attrs {
		n, v := s.bytesOf(a.name), unescape(s.bytesOf(a.value))
		switch {
		case string(n) == "xmlns":
			h.ns = v
		case string(n) == "to":
			h.to = v
		case string(n) == "from":
			h.from = v
		case string(n) == "id":
			h.id = v
		case string(n) == "version":
			h.version = v
		}
	}
	for _, e := range s.scope {
		b := binding{prefix: string(s.bytesOf(e.prefix)), ns: unescape(s.bytesOf(e.value)), id: e.id, hash: e.hash}
		s.hdrScope = append(s.hdrScope, b)
		if b.prefix == string(prefix) {
			h.streamNS = b.ns
		}
	}
	s.hdrIDs = s.nextID
	if !prefixed {
		h.streamNS = h.ns
	}
	s.hdr = h
	s.headerMode = false
	s.depth = 0
	s.names = s.names[:0]
	s.scope = s.scope[:0]
	s.st = stTop
	s.base = s.pos
	return nil
}

// scanText finds the first '&' in a run of character data, and whether it
// has a ']'. Short runs (the common case) are cheaper to walk than to hand
// to the vectorised search twice.
func scanText(b []byte) (amp int, bracket bool) {
	if len(b) > 64 {
		amp = bytes.IndexByte(b, '&')
		end := b
		if amp >= 0 {
			end = b[:amp]
		}
		return amp, bytes.IndexByte(end, ']') >= 0
	}
	for i, c := range b {
		switch c {
		case '&':
			return i, bracket
		case ']':
			bracket = true
		}
	}
	return -1, bracket
}

// scanAttr finds the first '<' and '&' in part of an attribute value.
func scanAttr(b []byte) (lt, amp int) {
	if len(b) > 64 {
		return bytes.IndexByte(b, '<'), bytes.IndexByte(b, '&')
	}
	lt, amp = -1, -1
	for i, c := range b {
		switch c {
		case '<':
			if lt < 0 {
				lt = i
			}
		case '&':
			if amp < 0 {
				amp = i
			}
		}
		if lt >= 0 && amp >= 0 {
			break
		}
	}
	return lt, amp
}

// cutColon splits a qualified name at its colon.
func cutColon(n []byte) (prefix, local []byte, ok bool) {
	if i := bytes.IndexByte(n, ':'); i >= 0 {
		return n[:i], n[i+1:], true
	}
	return n, nil, false
}

// checkRef validates the name of a reference (between '&' and ';').
func checkRef(name []byte) error {
	switch string(name) {
	case "amp", "lt", "gt", "quot", "apos":
		return nil
	}
	if len(name) < 2 || name[0] != '#' {
		return violation(stream.RestrictedXML, "entity reference &%s;", truncBytes(name))
	}
	base, digits := 10, name[1:]
	if digits[0] == 'x' {
		base, digits = 16, digits[1:]
	}
	v, err := strconv.ParseUint(string(digits), base, 32)
	if err != nil || len(digits) == 0 || digits[0] == '+' || !isXMLChar(rune(v)) {
		return violation(stream.NotWellFormed, "invalid character reference &%s;", truncBytes(name))
	}
	return nil
}

// checkDecl validates the XML declaration "<?xml ...?>".
func checkDecl(decl []byte) error {
	body, ok := bytes.CutPrefix(decl, []byte("<?xml"))
	if !ok || len(body) < 3 || !isSpace(body[0]) {
		return violation(stream.RestrictedXML, "processing instruction")
	}
	if i := bytes.Index(body, []byte("encoding")); i >= 0 {
		rest := bytes.TrimLeft(body[i+len("encoding"):], " \t\r\n")
		rest, _ = bytes.CutPrefix(rest, []byte("="))
		rest = bytes.TrimLeft(rest, " \t\r\n")
		if len(rest) > 0 && (rest[0] == '\'' || rest[0] == '"') {
			if j := bytes.IndexByte(rest[1:], rest[0]); j >= 0 {
				if enc := string(rest[1 : 1+j]); !strings.EqualFold(enc, "utf-8") {
					return violation(stream.UnsupportedEncoding, "encoding %q", truncString(enc))
				}
			}
		}
	}
	return checkChars(decl)
}

// checkChars reports bytes that are not UTF-8 or not XML 1.0 characters.
func checkChars(b []byte) error {
	i := 0
	for i < len(b) {
		// Eight bytes at a time while they are printable ASCII, the
		// common case.
		for i+8 <= len(b) {
			x := binary.LittleEndian.Uint64(b[i:])
			const lo, hi = 0x2020202020202020, 0x8080808080808080
			if (x|(x-lo))&hi != 0 { // a byte >= 0x80 or < 0x20
				break
			}
			i += 8
		}
		if i >= len(b) {
			break
		}
		c := b[i]
		if c < utf8.RuneSelf {
			if c < 0x20 && c != '\t' && c != '\n' && c != '\r' {
				return violation(stream.NotWellFormed, "control character %#02x", c)
			}
			i++
			continue
		}
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n == 1 {
			return violation(stream.NotWellFormed, "invalid UTF-8")
		}
		if r == 0xFFFE || r == 0xFFFF {
			return violation(stream.NotWellFormed, "non-character U+%04X", r)
		}
		i += n
	}
	return nil
}

func isXMLChar(r rune) bool {
	return r == 0x09 || r == 0x0A || r == 0x0D ||
		r >= 0x20 && r <= 0xD7FF || r >= 0xE000 && r <= 0xFFFD || r >= 0x10000 && r <= 0x10FFFF
}

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

func isNameStart(c byte) bool { return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_' }

func isNameChar(c byte) bool {
	return isNameStart(c) || '0' <= c && c <= '9' || c == '-' || c == '.' || c == ':'
}

// validQName: a name, or prefix:local with both parts names.
func validQName(n []byte) bool {
	p, l, ok := cutColon(n)
	if !ok {
		return len(n) > 0 && isNameStart(n[0])
	}
	return len(p) > 0 && isNameStart(p[0]) && len(l) > 0 && isNameStart(l[0]) && bytes.IndexByte(l, ':') < 0
}

// unescape decodes an attribute value already checked by the scanner:
// references are expanded and white space normalised as XML 1.0 §3.3.3
// says for CDATA attributes.
func unescape(v []byte) string {
	if !bytes.ContainsAny(v, "&\t\n\r") {
		return string(v)
	}
	var sb strings.Builder
	sb.Grow(len(v))
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch c {
		case '\r':
			if i+1 < len(v) && v[i+1] == '\n' {
				i++
			}
			sb.WriteByte(' ')
		case '\t', '\n':
			sb.WriteByte(' ')
		case '&':
			j := bytes.IndexByte(v[i:], ';')
			if j < 0 {
				sb.Write(v[i:])
				return sb.String()
			}
			sb.WriteString(decodeRef(v[i+1 : i+j]))
			i += j
		default:
			sb.WriteByte(c)
		}
	}
	return sb.String()
}

func decodeRef(name []byte) string {
	switch string(name) {
	case "amp":
		return "&"
	case "lt":
		return "<"
	case "gt":
		return ">"
	case "quot":
		return `"`
	case "apos":
		return "'"
	}
	if len(name) < 2 {
		return ""
	}
	base, digits := 10, name[1:]
	if digits[0] == 'x' {
		base, digits = 16, digits[1:]
	}
	v, err := strconv.ParseUint(string(digits), base, 32)
	if err != nil {
		return ""
	}
	return string(rune(v))
}

func truncBytes(b []byte) string { return truncString(string(b[:min(len(b), 64)])) }

func truncString(s string) string {
	if len(s) > 64 {
		s = s[:64] + "…"
	}
	return strings.ToValidUTF8(s, "\uFFFD")
}
