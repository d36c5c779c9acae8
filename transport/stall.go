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
// The goroutine runs only while bodies are open, and two ticks after: an
// idle Transport owns no goroutine.
// A Read is failed between limit and limit + min(limit/stallTicks,
// stallTickMax) after it began.
type stallWatch struct {
	limit time.Duration
	tick  time.Duration
	base  time.Time // the watch's clock: reads note time.Since(base)+1

	mu      sync.Mutex // guards the fields below
	head    *body      // the open bodies, a list through body.prev/next
	running bool       // the loop's goroutine is on
}

// stallTicks is how many times per limit the watch looks at the bodies,
// at least every stallTickMax; the loop ends at the second look that finds
// no body open, so that its goroutine outlives the last body by at most
// two ticks.
const (
	stallTicks   = 8
	stallTickMax = 100 * time.Millisecond
)

func newStallWatch(limit time.Duration) *stallWatch {
	return &stallWatch{limit: limit, tick: min(max(limit/stallTicks, time.Millisecond), stallTickMax),
		base: time.Now()}
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
	w.mu.Unlock()
}

// errStalled stands for the error of a Read the watch failed.
var errStalled = errors.New("transport: body read stalled")

// loop fails the reads that have waited past the limit, until it finds no
// body open twice in a row. It is not woken when the last body closes: a
// Transport serving requests one at a time would wake it, or start it,
// once per request.
func (w *stallWatch) loop() {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	var (
		stalled []*body // reused between ticks
		empty   bool    // the last look found no body open
	)
	for range t.C {
		w.mu.Lock()
		if w.head == nil {
			if empty {
				w.running = false
				w.mu.Unlock()
				return
			}
			empty = true
			w.mu.Unlock()
			continue
		}
		empty = false
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
