package s2stest_test

import (
	"context"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/s2s/s2stest"
)

func TestTwoDomainsBothWays(t *testing.T) {
	n := s2stest.New(t)
	a := n.AddDomain("a.example", s2stest.Options{})
	b := n.AddDomain("b.example", s2stest.Options{})
	ctx := context.Background()
	require.NoError(t, a.Send(ctx, a.Message("alice@a.example", "bob@b.example", "hi")))
	st := b.Inbox.Next(t, 10*time.Second)
	require.Equal(t, "alice@a.example", st.From.String())
	require.NoError(t, b.Send(ctx, b.Message("bob@b.example", "alice@a.example", "hello")))
	st = a.Inbox.Next(t, 10*time.Second)
	require.Equal(t, "bob@b.example", st.From.String())
	t.Logf("a status: %+v", a.Server.Status())
	t.Logf("a counters: %+v", a.Server.Counters())
}
