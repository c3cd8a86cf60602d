package s2s

import (
	"context"
	"sync"
)

// DefaultMaxSetupsPerAddr bounds the streams a Pool sets up at the same
// time to one peer address. A server hosting many domains is reached
// through one address, and counts our unauthenticated streams per source
// address (20 by default here, similar elsewhere): past its limit it
// would refuse us.
const DefaultMaxSetupsPerAddr = 8

// setupSlots bounds concurrent stream setups per peer address.
type setupSlots struct {
	max int
	mu  sync.Mutex
	m   map[string]*setupSlot
}

type setupSlot struct {
	ch   chan struct{}
	refs int
}

func newSetupSlots(max int) *setupSlots {
	if max <= 0 {
		return nil
	}
	return &setupSlots{max: max, m: make(map[string]*setupSlot)}
}

// acquire waits for a setup slot for addr; the returned function (safe to
// call more than once) gives it back.
func (g *setupSlots) acquire(ctx context.Context, addr string) (release func(), err error) {
	if g == nil {
		return func() {}, nil
	}
	g.mu.Lock()
	sl := g.m[addr]
	if sl == nil {
		sl = &setupSlot{ch: make(chan struct{}, g.max)}
		g.m[addr] = sl
	}
	sl.refs++
	g.mu.Unlock()
	leave := func() {
		g.mu.Lock()
		if sl.refs--; sl.refs == 0 {
			delete(g.m, addr)
		}
		g.mu.Unlock()
	}
	select {
	case sl.ch <- struct{}{}:
	case <-ctx.Done():
		leave()
		return nil, ctx.Err()
	}
	var once sync.Once
	return func() {
		once.Do(func() {
			<-sl.ch
			leave()
		})
	}, nil
}

// setupSlot takes a setup slot for addr when the engine bounds them.
func (g *engine) setupSlot(ctx context.Context, addr string) (func(), error) {
	if g == nil {
		return func() {}, nil
	}
	return g.setups.acquire(ctx, addr)
}
