package xcp

import (
	"context"
	"errors"
	"sync"
	"time"
)

// item is a queued stanza.
type item struct {
	st      Stanza
	expires time.Time // zero: never
}

var (
	errFull   = errors.New("xcp: queue full")
	errAbort  = errors.New("xcp: gave up waiting for queue room")
	errClosed = ErrClosed
)

// queue is a bounded FIFO of stanzas between the goroutines that produce
// them and the one writer that drains them into a connection. It outlives
// connections: what is queued while a link is down goes out on the next.
//
// A mutex and a ring beat a channel here because the writer takes
// everything queued in one step (then writes it and flushes once), and
// because stanzas that could not be written can be put back at the front.
type queue struct {
	mu      sync.Mutex
	ring    []item
	head, n int
	limit   int
	closed  bool

	empty   chan struct{} // closed when the queue becomes empty, if someone waits
	ready   chan struct{} // one token when items are waiting for the writer
	room    chan struct{} // closed when room appears or waiters must re-check
	waiters int
}

func newQueue(limit int) *queue {
	return &queue{
		ring:  make([]item, limit),
		limit: limit,
		ready: make(chan struct{}, 1),
	}
}

func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n
}

// tryPush adds it if there is room.
func (q *queue) tryPush(it item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushLocked(it)
}

func (q *queue) pushLocked(it item) error {
	if q.closed {
		return errClosed
	}
	if q.n >= q.limit {
		return errFull
	}
	if q.n == len(q.ring) {
		q.grow()
	}
	q.ring[(q.head+q.n)%len(q.ring)] = it
	q.n++
	if q.n == 1 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return nil
}

// push adds it, waiting for room while wait() says waiting makes sense
// (the queue is being drained). It returns errFull when the queue is full
// and wait() is false, errAbort when abort is closed, and ctx's error.
func (q *queue) push(ctx context.Context, it item, wait func() bool, abort <-chan struct{}) error {
	for {
		q.mu.Lock()
		err := q.pushLocked(it)
		if err != errFull || !wait() {
			q.mu.Unlock()
			return err
		}
		if q.room == nil {
			q.room = make(chan struct{})
		}
		room := q.room
		q.waiters++
		q.mu.Unlock()

		err = nil
		select {
		case <-room:
		case <-ctx.Done():
			err = ctx.Err()
		case <-abort:
			err = errAbort
		}
		q.mu.Lock()
		q.waiters--
		q.mu.Unlock()
		if err != nil {
			return err
		}
	}
}

// kick wakes every waiting pusher so that it calls wait() again.
func (q *queue) kick() {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.wakeLocked()
}

func (q *queue) wakeLocked() {
	if q.room != nil {
		close(q.room)
		q.room = nil
	}
}

// popAll moves up to max items to dst.
func (q *queue) popAll(dst []item, max int) []item {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > 0 && max > 0 {
		dst = append(dst, q.ring[q.head])
		q.ring[q.head] = item{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		max--
	}
	if q.waiters > 0 {
		q.wakeLocked()
	}
	q.notifyEmptyLocked()
	if q.n > 0 {
		select {
		case q.ready <- struct{}{}:
		default:
		}
	}
	return dst
}

// expire removes the items at the front whose deadline has passed. Items
// are queued with deadlines in order, so the expired ones are at the front.
func (q *queue) expire(now time.Time, dst []item) []item {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > 0 {
		it := q.ring[q.head]
		if it.expires.IsZero() || it.expires.After(now) {
			break
		}
		dst = append(dst, it)
		q.ring[q.head] = item{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	if len(dst) > 0 && q.waiters > 0 {
		q.wakeLocked()
	}
	q.notifyEmptyLocked()
	return dst
}

// pushFront puts items back at the front, in their order, even past the
// limit: they were in the queue before.
func (q *queue) pushFront(items []item) {
	if len(items) == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	for i := len(items) - 1; i >= 0; i-- {
		if q.n == len(q.ring) {
			q.grow()
		}
		q.head = (q.head - 1 + len(q.ring)) % len(q.ring)
		q.ring[q.head] = items[i]
		q.n++
	}
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// close refuses further pushes, wakes waiters and returns what is queued.
func (q *queue) close() []item {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.closed = true
	q.wakeLocked()
	out := make([]item, 0, q.n)
	for q.n > 0 {
		out = append(out, q.ring[q.head])
		q.ring[q.head] = item{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
	}
	q.notifyEmptyLocked()
	return out
}

func (q *queue) notifyEmptyLocked() {
	if q.n == 0 && q.empty != nil {
		close(q.empty)
		q.empty = nil
	}
}

// waitEmpty waits until the queue is empty or ctx is done.
func (q *queue) waitEmpty(ctx context.Context) error {
	q.mu.Lock()
	if q.n == 0 {
		q.mu.Unlock()
		return nil
	}
	if q.empty == nil {
		q.empty = make(chan struct{})
	}
	ch := q.empty
	q.mu.Unlock()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func (q *queue) grow() {
	nr := make([]item, max(2*len(q.ring), 1))
	for i := 0; i < q.n; i++ {
		nr[i] = q.ring[(q.head+i)%len(q.ring)]
	}
	q.ring, q.head = nr, 0
}
