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

func (it item) size() int { return len(it.st.raw) }

var (
	errFull   = errors.New("xcp: queue full")
	errAbort  = errors.New("xcp: gave up waiting for queue room")
	errClosed = ErrClosed
)

// queue is a bounded FIFO of stanzas between the goroutines that produce
// them and the one writer that drains them into a connection. It outlives
// connections: what is queued while a link is down goes out on the next.
//
// It is bounded by count and by bytes. The writer takes stanzas with pop;
// they still count against both bounds ("in flight") until the writer
// reports them written (done) or puts them back (pushFront), so putting
// back what a failed connection did not carry never exceeds the bounds.
//
// A mutex and a ring beat a channel here because the writer takes
// everything queued in one step (then writes it and flushes once), and
// because stanzas that could not be written can be put back at the front.
type queue struct {
	mu            sync.Mutex
	ring          []item
	head, n       int
	bytes         int // of the n queued items
	inflight      int // items popped by the writer and not yet done
	inflightBytes int
	limit         int
	maxBytes      int
	closed        bool

	empty   chan struct{} // closed when nothing is queued or in flight, if someone waits
	ready   chan struct{} // one token when items are waiting for the writer
	room    chan struct{} // closed when room appears or waiters must re-check
	waiters int
}

func newQueue(limit, maxBytes int) *queue {
	return &queue{
		ring:     make([]item, min(limit, 64)),
		limit:    limit,
		maxBytes: maxBytes,
		ready:    make(chan struct{}, 1),
	}
}

// len is the number of stanzas queued or in flight.
func (q *queue) len() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.n + q.inflight
}

// fitsLocked reports whether an item of size bytes fits. A stanza larger
// than the whole byte budget fits an empty queue: it could never be sent
// otherwise, and its size is bounded by the stanza size limit.
func (q *queue) fitsLocked(size int) bool {
	n := q.n + q.inflight
	return n < q.limit && (n == 0 || q.bytes+q.inflightBytes+size <= q.maxBytes)
}

// tryPush adds it if there is room.
func (q *queue) tryPush(it item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushLocked(it, false)
}

// forcePush adds it even past the bounds: for the small error replies a
// closing Router owes the senders of what it could not deliver.
func (q *queue) forcePush(it item) error {
	q.mu.Lock()
	defer q.mu.Unlock()
	return q.pushLocked(it, true)
}

func (q *queue) pushLocked(it item, force bool) error {
	if q.closed {
		return errClosed
	}
	if !force && !q.fitsLocked(it.size()) {
		return errFull
	}
	if q.n == len(q.ring) {
		q.grow()
	}
	q.ring[(q.head+q.n)%len(q.ring)] = it
	q.n++
	q.bytes += it.size()
	if q.n == 1 {
		q.signalLocked()
	}
	return nil
}

// rearm makes sure a writer that starts finds the token if stanzas wait:
// a writer that ended may have taken it without taking the stanzas.
func (q *queue) rearm() {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.n > 0 {
		q.signalLocked()
	}
}

func (q *queue) signalLocked() {
	select {
	case q.ready <- struct{}{}:
	default:
	}
}

// push adds it, waiting for room while wait() says waiting makes sense
// (the queue is being drained). It returns errFull when the queue is full
// and wait() is false, errAbort when abort is closed, and ctx's error.
func (q *queue) push(ctx context.Context, it item, wait func() bool, abort <-chan struct{}) error {
	for {
		q.mu.Lock()
		err := q.pushLocked(it, false)
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

// pop moves up to max items to dst for the writer; they stay in flight
// until done or pushFront. It first completes doneN items of doneBytes
// (what the writer finished since its last call), to save a lock.
func (q *queue) pop(dst []item, max, doneN, doneBytes int) []item {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.doneLocked(doneN, doneBytes)
	for q.n > 0 && max > 0 {
		it := q.ring[q.head]
		dst = append(dst, it)
		q.ring[q.head] = item{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		q.bytes -= it.size()
		q.inflight++
		q.inflightBytes += it.size()
		max--
	}
	if q.n > 0 {
		q.signalLocked()
	}
	return dst
}

// done completes n in-flight items of size bytes: written, or dropped.
func (q *queue) done(n, bytes int) {
	if n == 0 {
		return
	}
	q.mu.Lock()
	defer q.mu.Unlock()
	q.doneLocked(n, bytes)
}

func (q *queue) doneLocked(n, bytes int) {
	if n == 0 {
		return
	}
	q.inflight -= n
	q.inflightBytes -= bytes
	if q.waiters > 0 {
		q.wakeLocked()
	}
	q.notifyEmptyLocked()
}

// popAll removes up to max queued items (not those in flight) for good.
func (q *queue) popAll(dst []item, max int) []item {
	q.mu.Lock()
	defer q.mu.Unlock()
	for q.n > 0 && max > 0 {
		it := q.ring[q.head]
		dst = append(dst, it)
		q.ring[q.head] = item{}
		q.head = (q.head + 1) % len(q.ring)
		q.n--
		q.bytes -= it.size()
		max--
	}
	if q.waiters > 0 {
		q.wakeLocked()
	}
	q.notifyEmptyLocked()
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
		q.bytes -= it.size()
	}
	if len(dst) > 0 && q.waiters > 0 {
		q.wakeLocked()
	}
	q.notifyEmptyLocked()
	return dst
}

// pushFront puts in-flight items back at the front, in their order. They
// still count against the bounds, so this never exceeds them.
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
		q.bytes += items[i].size()
		q.inflight--
		q.inflightBytes -= items[i].size()
	}
	q.signalLocked()
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
	q.bytes = 0
	q.notifyEmptyLocked()
	return out
}

func (q *queue) notifyEmptyLocked() {
	if q.n == 0 && q.inflight == 0 && q.empty != nil {
		close(q.empty)
		q.empty = nil
	}
}

// waitEmpty waits until nothing is queued or in flight, or ctx is done.
func (q *queue) waitEmpty(ctx context.Context) error {
	q.mu.Lock()
	if q.n == 0 && q.inflight == 0 {
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
