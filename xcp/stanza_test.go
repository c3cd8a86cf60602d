package xcp_test

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"mellium.im/xmpp/stanza"

	"github.com/xmppfed/xmppfed/xcp"
)

// TestErrorReplyCondition: a condition that is not an XML name cannot
// inject markup into the reply; it becomes <undefined-condition/>, and the
// reply is always a stanza ParseStanza accepts.
func TestErrorReplyCondition(t *testing.T) {
	st, err := xcp.ParseStanza([]byte(`<message from='a@a.example' to='b@b.example' id='1'/>`))
	require.NoError(t, err)
	for _, tc := range []struct {
		cond stanza.Condition
		want string
	}{
		{stanza.ItemNotFound, "item-not-found"},
		{"", "undefined-condition"},
		{"x/><body>injected</body><y", "undefined-condition"},
		{"a b", "undefined-condition"},
		{"1abc", "undefined-condition"},
		{"p:q", "undefined-condition"},
	} {
		reply, ok := st.ErrorReply(stanza.Error{Condition: tc.cond})
		require.True(t, ok)
		again, err := xcp.ParseStanza([]byte(reply.String()))
		require.NoError(t, err, "%q", reply)
		assert.Equal(t, reply, again)
		assert.Contains(t, reply.String(), "<"+tc.want+" xmlns='urn:ietf:params:xml:ns:xmpp-stanzas'/>")
		assert.NotContains(t, reply.String(), "injected")
	}
}
