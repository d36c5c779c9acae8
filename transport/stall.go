package transport

import (
	"errors"
	"sync"
	"time"
)

// stallWatch fails body reads that get no byte for the stall limit.
//
// One goroutine per Transport looks at the open bodies a few times per
// limit, instead of a timer per body that every Read would reset and stop:
// a timer costs two allocations per response and two timer-heap updates
// per Read (BenchmarkKeepAliveGET), the watch an atomic store per Read.
// The goroutine runs only while bodies are open and stallLinger after: an
// idle Transport owns no goroutine.
// A Read is failed between limit and limit + limit/stallTicks after it
// began.
type stallWatch struct {
	limit time.Duration
	tick  time.Duration
	base  time.Time     // the watch's clock: reads note time.Since(base)+1
	kick  chan struct{} // the list became empty: the loop re-checks it

	mu      sync.Mutex // guards the fields below
	head    *body      // the open bodies, a list through body.prev/next
	running bool       // the loop's goroutine is on
}

// stallTicks is how many times per limit the watch looks at the bodies;
// stallLinger how long its goroutine outlives the last open body.
const (
	stallTicks  = 8
	stallLinger = 100 * time.Millisecond
)

func newStallWatch(limit time.Duration) *stallWatch {
	return &stallWatch{limit: limit, tick: max(limit/stallTicks, time.Millisecond),
		base: time.Now(), kick: make(chan struct{}, 1)}
}

// now is the watch's clock, never 0 (0 marks a body not in a Read).
func (w *stallWatch) now() int64 { return int64(time.Since(w.base)) + 1 }

// add starts watching b, starting the loop if it is off.
func (w *stallWatch) add(b *body) {
	w.mu.Lock()
	b.prev, b.next = nil, w.head
	if w.head != nil {
		w.head.prev = b
	}
	w.head = b
	start := !w.running
	w.running = true
	w.mu.Unlock()
	if start {
		go w.loop()
	}
}

// remove stops watching b; b must have been added and not yet removed.
func (w *stallWatch) remove(b *body) {
	w.mu.Lock()
	if b.prev != nil {
		b.prev.next = b.next
	} else {
		w.head = b.next
	}
	if b.next != nil {
		b.next.prev = b.prev
	}
	b.prev, b.next = nil, nil
	empty := w.head == nil
	w.mu.Unlock()
	if empty {
		select {
		case w.kick <- struct{}{}:
		default:
		}
	}
}

// errStalled stands for the error of a Read the watch failed.
var errStalled = errors.New("transport: body read stalled")

// loop fails the reads that have waited past the limit, until no body has
// been open for stallLinger (a Transport serving requests one after the
// other would otherwise start a goroutine per request).
func (w *stallWatch) loop() {
	linger := min(w.tick, stallLinger)
	t := time.NewTimer(w.tick)
	defer t.Stop()
	var (
		stalled    []*body   // reused between ticks
		emptySince time.Time // when the list was first seen empty; zero: not empty
	)
	for {
		select {
		case <-t.C:
			t.Reset(w.tick)
		case <-w.kick:
		}
		w.mu.Lock()
		if w.head == nil {
			switch {
			case emptySince.IsZero():
				emptySince = time.Now()
				t.Reset(linger)
			case time.Since(emptySince) >= linger:
				w.running = false
				w.mu.Unlock()
				return
			}
			w.mu.Unlock()
			continue
		}
		emptySince = time.Time{}
		now := w.now()
		stalled = stalled[:0]
		for b := w.head; b != nil; b = b.next {
			// Claim the Read that began at s: a Read that ended or began
			// since has another mark, and the claim fails.
			if s := b.reading.Load(); s > 0 && now-s >= int64(w.limit) && b.reading.CompareAndSwap(s, -1) {
				stalled = append(stalled, b)
			}
		}
		w.mu.Unlock()
		for i, b := range stalled {
			// Closing net/http's body from another goroutine ends the Read
			// blocked in it, on HTTP/1.1 (the conn is closed) and HTTP/2
			// (the stream is reset). Outside the lock: Close may block.
			_ = b.rc.Close()
			b.tr.c.st.tel.stalled(b.tr.ctx)
			stalled[i] = nil
		}
	}
}
