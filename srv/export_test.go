package srv

import "time"

// Test hooks for the external test package.

// SetDraw injects the RFC 2782 random draws.
func SetDraw(r *Resolver, draw func(n int) int) { r.draw = draw }

// SetClock injects the clock used for cache expiry.
func SetClock(r *Resolver, now func() time.Time) { r.now = now }
