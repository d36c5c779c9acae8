package transport

import (
	"errors"
	"sync"
	"sync/atomic"
	"time"
)

// watch bounds the tries of a Transport: the wait for response headers
// after the request was written (FirstByteTimeout), and the progress of
// the request body's upload and of every response body read
// (StallTimeout).
//
// One goroutine per Transport looks at the tries in flight a few times per
// limit, instead of a timer per try. The tries in flight are a list under
// the watch's lock: a try joins it when it starts and leaves it when it
// ends (try.finish). Nothing in the list is ever reused: a try is one
// request's, and a hook of net/http's that comes late (net/http calls the
// trace of a request it retried on another conn after the retry began)
// reaches that try and no other. The loop touches only the tries it finds
// in the list; what it decided to cut it cuts through the try's own
// context (or, for a body read, the try's own response body), which is
// harmless once the try has ended.
//
// A try's hot path reads no clock: a wait or a Read that began is marked
// begun (a mark of its own, beganMark), and the loop's next look stamps
// that begin with its clock. The goroutine runs only while tries are in
// flight, and two ticks after: an idle Transport owns no goroutine. A wait
// is stamped at most a tick after it began, never before, so it is cut
// between limit and limit + 2·min(limit/watchTicks, watchTickMax) after it
// began: never early, at most min(limit/8, 100ms) late.
type watch struct {
	firstByte time.Duration // 0: off
	stall     time.Duration // 0: off
	connWait  time.Duration // 0: off
	tick      time.Duration
	base      time.Time // the watch's clock: now is time.Since(base)+1
	tel       *telemetry

	// wall is the wall clock (Unix nanoseconds) at the loop's last tick,
	// or at its start: a clock for what may be a tick late (roughNow).
	wall    atomic.Int64
	running atomic.Bool // the loop's goroutine is on; changed under mu

	mu    sync.Mutex // guards tries, n and every try's prev, next and listed
	tries *try       // the tries in flight, linked through try.next
	n     int
}

// watchTicks is how many times per limit the watch looks at the tries, at
// least every watchTickMax; the loop ends at the second look that finds no
// try in flight, so that its goroutine outlives the last try by at most
// two ticks.
const (
	watchTicks   = 16
	watchTickMax = 50 * time.Millisecond
)

// newWatch returns the watch of the Transport's limits (0: off), which
// set its tick; each try is held to its call's limits (callLimits), which
// a call's options may make shorter than the tick was made for: such a
// limit is cut at most two ticks (100ms) late. connWait bounds the wait
// for a conn (the Dialer's Timeout) of a watched try.
func newWatch(firstByte, stall, connWait time.Duration, tel *telemetry) *watch {
	shortest := time.Duration(0)
	for _, d := range []time.Duration{firstByte, stall, connWait} {
		if d > 0 && (shortest == 0 || d < shortest) {
			shortest = d
		}
	}
	w := &watch{firstByte: firstByte, stall: stall, connWait: connWait, tel: tel,
		tick: watchTickMax, base: time.Now()}
	if shortest > 0 {
		w.tick = min(max(shortest/watchTicks, time.Millisecond), watchTickMax)
	}
	return w
}

// now is the watch's clock, never 0 or negative (those mark states).
func (w *watch) now() int64 { return int64(time.Since(w.base)) + 1 }

// States of try.wait, the phase of a try before its response headers,
// besides a begin mark (beganMark) and a time (> 0: the request was
// written and the loop saw it at that time of its clock).
//
// A try goes acquiring (net/http is getting it a conn: the Dialer's limits
// bound that) → held (it has a conn; writing the request, and its body's
// upload is bounded by StallTimeout) → written (a begin mark, then a time:
// FirstByteTimeout bounds the wait) → done. net/http's GetConn hook puts
// the try back to acquiring (a retry of its own on another conn): a
// WroteRequest that comes while acquiring, or while the current body is
// still being sent, is the late hook of an earlier write and is ignored.
// An ignored hook leaves the try in an earlier phase, which has its own
// bound.
const (
	waitAcquiring = 0  // getting a conn
	waitHeld      = -1 // writing the request on a conn
	waitCut       = -2 // the watch ended the wait for headers (FirstByteTimeout)
	waitUpCut     = -3 // the watch ended the upload (StallTimeout)
	waitDone      = -4 // the headers came, or the try gave up waiting
	waitConnCut   = -5 // the watch ended the wait for a conn (the Dialer's Timeout)
)

// beganMark is the mark of the n-th begin of a wait (the request written)
// or of a body's n-th Read that the loop has not seen yet: each begin its
// own value, so that the loop stamps the begin it saw and never a later
// one (which may have begun after the loop read its clock).
func beganMark(n uint32) int64 { return -6 - int64(n) }

// isBegun reports whether v is a begin mark.
func isBegun(v int64) bool { return v <= -6 }

// errFirstByte is the cause with which the watch ends a wait for headers,
// errUploadStall the cause with which it ends an upload that made no
// progress, errStalled the error of a body Read it failed.
var (
	errFirstByte   = errors.New("transport: no response headers within FirstByteTimeout")
	errUploadStall = errors.New("transport: request body upload stalled")
	errStalled     = errors.New("transport: body read stalled")
	errConnWait    = errors.New("transport: no conn within the Dialer's Timeout")
)

// add puts tr in the list of tries in flight, starting the loop if it is
// off.
func (w *watch) add(tr *try) {
	w.mu.Lock()
	tr.next = w.tries
	if w.tries != nil {
		w.tries.prev = tr
	}
	w.tries, tr.listed = tr, true
	w.n++
	if !w.running.Load() {
		w.wall.Store(time.Now().UnixNano())
		w.running.Store(true)
		go w.loop()
	}
	w.mu.Unlock()
}

// remove takes tr out of the list; the loop does not look at it again.
func (w *watch) remove(tr *try) {
	w.mu.Lock()
	if tr.listed {
		if tr.prev != nil {
			tr.prev.next = tr.next
		} else {
			w.tries = tr.next
		}
		if tr.next != nil {
			tr.next.prev = tr.prev
		}
		tr.prev, tr.next, tr.listed = nil, nil, false
		w.n--
	}
	w.mu.Unlock()
}

// cutKind is what the loop ends.
type cutKind uint8

const (
	cutFirstByte cutKind = iota
	cutUpload
	cutBody
	cutConnWait
)

type cut struct {
	tr   *try
	kind cutKind
}

// loop cuts the waits for headers, the uploads and the body reads that
// have gone past their limits, until it finds no try in flight twice in a
// row. It is not woken when the last try ends: a Transport serving
// requests one at a time would wake it, or start it, once per request.
func (w *watch) loop() {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	var (
		cuts  []cut // reused between ticks
		empty bool  // the last look found no try in flight
	)
	for range t.C {
		w.wall.Store(time.Now().UnixNano())
		// now, read before the look, only decides cuts (a late now cuts
		// later, never earlier). A wait, an upload's progress or a Read
		// seen is stamped with the clock read after it was seen: it
		// happened before that, even if this goroutine was held up since
		// now was read.
		now := w.now()
		cuts = cuts[:0]
		w.mu.Lock()
		for tr := w.tries; tr != nil; tr = tr.next {
			cuts = w.look(tr, now, cuts)
		}
		if w.n > 0 {
			empty = false
		} else {
			if empty {
				w.running.Store(false)
				w.mu.Unlock()
				return
			}
			empty = true
		}
		w.mu.Unlock()
		// Outside the lock: cancelling and Close may block. Each cut
		// touches only its own try, which nothing reuses: one that has
		// ended meanwhile is not harmed.
		for i, c := range cuts {
			switch c.kind {
			case cutFirstByte:
				c.tr.cancel(errFirstByte)
			case cutConnWait:
				c.tr.cancel(errConnWait)
			case cutUpload:
				c.tr.cancel(errUploadStall)
				w.tel.stalled(c.tr.ctx)
			case cutBody:
				// Closing net/http's body from another goroutine ends the
				// Read blocked in it, on HTTP/1.1 (the conn is closed)
				// and HTTP/2 (the stream is reset).
				_ = c.tr.body.rc.Close()
				w.tel.stalled(c.tr.ctx)
			}
			cuts[i] = cut{}
		}
	}
}

// look decides for one try in flight what has gone past its limit, and
// claims it (cuts). w.mu is held: the loop-owned fields of tr are its.
func (w *watch) look(tr *try, now int64, cuts []cut) []cut {
	at := tr.wait.Load()
	// The wait for a conn: net/http dialing one, or waiting for one at
	// MaxConnsPerHost or for an idle one. A dial of the call's in flight
	// (dialInFlight) has its own limits (and its own error, which says
	// where it broke); any other wait gets the Dialer's Timeout, counted
	// from the look that last saw the try waiting with no dial of its call
	// under way.
	switch {
	case at != waitAcquiring || w.connWait <= 0:
		tr.acqAt = 0
	case tr.acqAt == 0 || tr.c.dialInFlight():
		tr.acqAt = w.now()
	case now-tr.acqAt >= int64(w.connWait) && tr.wait.CompareAndSwap(waitAcquiring, waitConnCut):
		cuts = append(cuts, cut{tr, cutConnWait})
	}
	lim := tr.c.lim
	if tr.timed {
		// Stamp a wait that began since the last look, or claim the one
		// stamped at: one that ended or began again since has another
		// mark, and the claim fails.
		switch {
		case isBegun(at):
			tr.wait.CompareAndSwap(at, w.now())
		case at > 0 && now-at >= int64(lim.firstByte) && tr.wait.CompareAndSwap(at, waitCut):
			cuts = append(cuts, cut{tr, cutFirstByte})
		}
	}
	stall := lim.stall
	if stall <= 0 {
		return cuts
	}
	if up := &tr.up; at == waitHeld && (up.started.Load() || !tr.wrote.Load() && tr.conn.Load() != nil) {
		// The upload, of the request's headers (a header block larger
		// than the socket buffers, to a peer that does not read) or of
		// its body: progress is a byte written to the conn, or a Read of
		// the caller's body that returned; time inside such a Read is the
		// caller's, not the peer's. (Between the headers and the body,
		// net/http may wait for "100 Continue": its own timer bounds
		// that.) Sample, then read the clock.
		conn := tr.conn.Load()
		var written uint64
		if conn != nil {
			written = conn.uploaded()
		}
		reads := up.reads.Load()
		switch {
		case up.at == 0 || conn != up.conn || written != up.written || reads != up.seenReads || up.reading.Load() != 0:
			up.conn, up.written, up.seenReads = conn, written, reads
			up.at = w.now()
		case now-up.at >= int64(stall) && tr.wait.CompareAndSwap(waitHeld, waitUpCut):
			cuts = append(cuts, cut{tr, cutUpload})
		}
	} else {
		tr.up.at = 0
	}
	// The response body's Read in progress (0: none, or no body yet): a
	// byte from the peer on an HTTP/1.1 conn (b.conn) is progress even
	// when net/http's reader keeps it inside one Read (chunked); on
	// HTTP/2 a Read returns as soon as its stream has a byte.
	b := &tr.body
	switch r := b.reading.Load(); {
	case isBegun(r):
		if b.conn != nil {
			b.seen = b.conn.read.Load()
		}
		b.reading.CompareAndSwap(r, w.now())
	case r > 0 && b.conn != nil && b.conn.read.Load() != b.seen:
		b.seen = b.conn.read.Load()
		b.reading.CompareAndSwap(r, w.now())
	case r > 0 && now-r >= int64(stall) && b.reading.CompareAndSwap(r, -1):
		cuts = append(cuts, cut{tr, cutBody})
	}
	return cuts
}
