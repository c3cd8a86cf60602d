package axl

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The wait after attempt n is drawn from [d/2, d], d = Backoff·2^(n-1)
// capped at MaxBackoff, as DefaultBackoff documents; a longer Retry-After
// wins, capped too.
func TestBackoffAsDocumented(t *testing.T) {
	c := &Client{}
	for attempt := 1; attempt <= 8; attempt++ {
		d := min(DefaultBackoff<<(attempt-1), MaxBackoff)
		lo, hi := d, time.Duration(0)
		for range 200 {
			w := c.backoff(attempt, 0)
			require.GreaterOrEqual(t, w, d/2, "attempt %d", attempt)
			require.LessOrEqual(t, w, d, "attempt %d", attempt)
			lo, hi = min(lo, w), max(hi, w)
		}
		assert.Less(t, lo, d*3/4, "jittered down, attempt %d", attempt)
		assert.Greater(t, hi, d*3/4, "jittered up, attempt %d", attempt)
	}
	assert.Equal(t, 30*time.Second, c.backoff(1, 30*time.Second), "Retry-After wins")
	assert.Equal(t, MaxBackoff, c.backoff(1, time.Hour), "capped")
	c.Backoff = time.Millisecond
	assert.LessOrEqual(t, c.backoff(1, 0), time.Millisecond)
}

// The default transport drops idle connections after IdleConnTimeout.
func TestDefaultTransport(t *testing.T) {
	tr := newHTTPClient(nil).Transport.(*http.Transport)
	assert.Equal(t, 15*time.Second, tr.IdleConnTimeout)
	assert.Equal(t, IdleConnTimeout, tr.IdleConnTimeout)
	assert.Nil(t, tr.Proxy)
}
