package prosodytest_test

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/xmppfed/xmppfed/internal/prosodytest"
)

// recordingTB records Skip and Fatal instead of stopping the test.
type recordingTB struct {
	testing.TB
	skipped, failed string
}

func (r *recordingTB) Helper()                       {}
func (r *recordingTB) Skipf(format string, a ...any) { r.skipped = fmt.Sprintf(format, a...) }
func (r *recordingTB) Fatalf(format string, a ...any) {
	r.failed = fmt.Sprintf(format, a...)
}

func TestRequireWithoutProsody(t *testing.T) {
	// Not parallel: it changes the environment.
	t.Setenv("PATH", t.TempDir())
	err := prosodytest.Available()
	require.ErrorIs(t, err, prosodytest.ErrNotInstalled)

	t.Setenv("CI", "")
	tb := &recordingTB{TB: t}
	prosodytest.Require(tb)
	assert.Contains(t, tb.skipped, "not installed")
	assert.Empty(t, tb.failed)

	t.Setenv("CI", "true")
	tb = &recordingTB{TB: t}
	prosodytest.Require(tb)
	assert.Contains(t, tb.failed, "CI must run the Prosody interop tests")
	assert.Empty(t, tb.skipped)
}

func TestRequireWithProsody(t *testing.T) {
	t.Parallel()
	if prosodytest.Available() != nil {
		t.Skip("prosody not installed")
	}
	tb := &recordingTB{TB: t}
	prosodytest.Require(tb)
	assert.Empty(t, tb.skipped)
	assert.Empty(t, tb.failed)
}

func TestFreeLoopback(t *testing.T) {
	t.Parallel()
	seen := map[netip.Addr]bool{}
	for range 5 {
		addr := prosodytest.FreeLoopback(t, 5269, 5222, 5347)
		require.True(t, addr.Is4() && addr.IsLoopback(), "%v", addr)
		assert.NotEqual(t, netip.MustParseAddr("127.0.0.1"), addr)
		seen[addr] = true
		// The ports really are free there.
		ln, err := net.Listen("tcp", net.JoinHostPort(addr.String(), strconv.Itoa(5269)))
		require.NoError(t, err)
		ln.Close()
	}
	assert.Greater(t, len(seen), 1, "addresses are random")
	assert.True(t, prosodytest.FreeLoopback(t).IsLoopback())
}
