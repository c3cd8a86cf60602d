package s2s

import (
	"bytes"
	"context"
	"encoding/xml"
	"errors"
	"fmt"
	"io"
	"strings"

	"mellium.im/xmpp/jid"
	"mellium.im/xmpp/stream"

	"github.com/xmppfed/xmppfed/internal/wire"
)

// Stanza is one message, presence or iq crossing a server-to-server stream.
//
// XML is the whole element in canonical form: it carries no namespace
// declaration for the stanza itself, so it inherits the content namespace of
// whatever stream it is written into (jabber:server here, jabber:component
// on a router link), and every other namespace is declared where it is used.
// It can be copied between streams as is. The other fields are parsed from
// the element's attributes and must agree with it.
type Stanza struct {
	Name     string // "message", "presence" or "iq"
	From, To jid.JID
	Type, ID string
	XML      []byte
}

// ErrBadStanza matches errors from ParseStanza.
var ErrBadStanza = errors.New("s2s: not a valid stanza")

// ParseStanza parses one message, presence or iq element from XML text (in
// the jabber:server or jabber:client namespace, or none) into a Stanza with
// canonical XML. Both from and to must be valid addresses.
func ParseStanza(b []byte) (*Stanza, error) {
	// Read the element as if it were on an S2S stream, so that an element
	// without a namespace declaration is in jabber:server, as on the wire.
	const open = "<stream:stream xmlns='jabber:server' xmlns:stream='http://etherx.jabber.org/streams'>"
	r := wire.NewReader(io.MultiReader(strings.NewReader(open), bytes.NewReader(b), strings.NewReader("</stream:stream>")),
		wire.Limits{MaxElement: len(b) + 64})
	if _, err := r.Header(); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStanza, err)
	}
	start, err := r.Next()
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStanza, err)
	}
	switch start.Name.Space {
	case NSServer, "jabber:client":
	default:
		return nil, fmt.Errorf("%w: namespace %q", ErrBadStanza, start.Name.Space)
	}
	r.SetContent(start.Name.Space)
	st, err := stanzaHeader(start)
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStanza, err)
	}
	if st.XML, err = r.Element(start); err != nil {
		return nil, fmt.Errorf("%w: %v", ErrBadStanza, err)
	}
	if _, err := r.Next(); !errors.Is(err, wire.ErrClosed) {
		return nil, fmt.Errorf("%w: more than one element", ErrBadStanza)
	}
	return st, nil
}

// MarshalStanza encodes v (for example a mellium stanza.Message wrapped
// with its payload, or any struct with an XMLName of message, presence or
// iq) and parses the result with ParseStanza.
func MarshalStanza(v any) (*Stanza, error) {
	b, err := xml.Marshal(v)
	if err != nil {
		return nil, err
	}
	return ParseStanza(b)
}

// stanzaHeader checks the name and addresses of a stanza's start element.
// Errors carry the stream condition for a peer that sent it.
func stanzaHeader(start xml.StartElement) (*Stanza, error) {
	if !isStanzaName(start.Name.Local) {
		return nil, &wire.Error{Condition: stream.UnsupportedStanzaType, Reason: "<" + start.Name.Local + "/> is not a stanza"}
	}
	st := &Stanza{Name: start.Name.Local, Type: wire.Attr(start, "", "type"), ID: wire.Attr(start, "", "id")}
	from, to := wire.Attr(start, "", "from"), wire.Attr(start, "", "to")
	if from == "" || to == "" {
		return nil, &wire.Error{Condition: stream.ImproperAddressing, Reason: "stanza without from or to"}
	}
	var err error
	if st.From, err = jid.Parse(from); err != nil {
		return nil, &wire.Error{Condition: stream.ImproperAddressing, Reason: "invalid from address", Err: err}
	}
	if st.To, err = jid.Parse(to); err != nil {
		return nil, &wire.Error{Condition: stream.ImproperAddressing, Reason: "invalid to address", Err: err}
	}
	return st, nil
}

// Handler receives the stanzas of authorized inbound streams.
type Handler interface {
	// ServeStanza handles one stanza. It is called from the stream's read
	// loop, so a slow handler slows that peer (back-pressure). The Stanza
	// and its XML belong to the handler.
	ServeStanza(ctx context.Context, st *Stanza)
}

// HandlerFunc adapts a function to Handler.
type HandlerFunc func(ctx context.Context, st *Stanza)

// ServeStanza calls f(ctx, st).
func (f HandlerFunc) ServeStanza(ctx context.Context, st *Stanza) { f(ctx, st) }
