package transport

import (
	"context"
	"errors"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"time"
	"weak"
)

// watch bounds the tries of a Transport: the wait for response headers
// after the request was written (FirstByteTimeout) and every body read
// (StallTimeout).
//
// One goroutine per Transport looks at the tries in flight a few times per
// limit, instead of a timer per try: net/http's ResponseHeaderTimeout costs
// each request a timer, its channel and a deferred stop (four allocations
// and two timer-heap updates), a timer per body Read two more updates per
// Read. A try here takes a slot from a per-P pool (no lock shared across
// cores), an atomic store when the request is written and two per Read,
// and reads no clock: a wait or a Read that began is marked begun (a mark
// of its own, beganMark), and the loop's next look stamps that begin with
// its clock (BenchmarkKeepAliveGET).
//
// The goroutine runs only while tries are in flight, and two ticks after:
// an idle Transport owns no goroutine. A wait is stamped at most a tick
// after it began, never before, so it is cut between limit and limit +
// 2·min(limit/watchTicks, watchTickMax) after it began: never early, at
// most min(limit/8, 100ms) late.
type watch struct {
	firstByte time.Duration // 0: off
	stall     time.Duration // 0: off
	tick      time.Duration
	base      time.Time // the watch's clock: now is time.Since(base)+1
	tel       *telemetry

	// free holds the slots no try is in: per P and without a lock, so
	// that tries on different cores share no lock; a slot the GC takes
	// from it leaves all by itself.
	free    sync.Pool
	running atomic.Bool // the loop's goroutine is on; set under mu
	// wall is the wall clock (Unix nanoseconds) at the loop's last tick,
	// or at its start: a clock for what may be a tick late (roughNow).
	wall atomic.Int64

	mu  sync.Mutex           // guards all, and the loop's start and end
	all []weak.Pointer[slot] // every slot, in a try or free; nil once collected
}

// watchTicks is how many times per limit the watch looks at the tries, at
// least every watchTickMax; the loop ends at the second look that finds no
// try in flight, so that its goroutine outlives the last try by at most
// two ticks.
const (
	watchTicks   = 16
	watchTickMax = 50 * time.Millisecond
)

// newWatch returns the watch of the given limits (0: off), nil when both
// are off.
func newWatch(firstByte, stall time.Duration, tel *telemetry) *watch {
	shortest := firstByte
	switch {
	case shortest == 0:
		shortest = stall
	case stall > 0:
		shortest = min(shortest, stall)
	}
	if shortest <= 0 {
		return nil
	}
	return &watch{firstByte: firstByte, stall: stall, tel: tel,
		tick: min(max(shortest/watchTicks, time.Millisecond), watchTickMax), base: time.Now()}
}

// now is the watch's clock, never 0 or negative (those mark states).
func (w *watch) now() int64 { return int64(time.Since(w.base)) + 1 }

// States of slot.wait besides a time (> 0: the request was written by then
// and no headers came yet) and a begin mark (beganMark).
const (
	waitUnwritten = 0  // the request is not written yet
	waitCut       = -1 // the watch ended the wait (FirstByteTimeout)
	waitDone      = -2 // the headers came, or the try gave up waiting
)

// beganMark is the mark of the n-th begin of a wait (the request written)
// or of a body's n-th Read that the loop has not seen yet: each begin its
// own value, so that the loop stamps the begin it saw and never a later
// one (which may have begun after the loop read its clock).
func beganMark(n uint32) int64 { return -3 - int64(n) }

// isBegun reports whether v is a begin mark.
func isBegun(v int64) bool { return v <= -3 }

// slot is a try's place in the watch. Slots are reused from try to try, so
// that what the watch needs of a try — a place in its list, net/http's
// trace hooks and, for a caller's context that never ends, a context the
// watch can cancel — is made once per slot, not once per request.
type slot struct {
	w  *watch
	tr atomic.Pointer[try] // the try in the slot; nil while free

	// hooked is the try the trace hooks call: the one in the slot, or after
	// it the last one, whose late hooks must not reach another try.
	hooked *try

	wait   atomic.Int64  // waitUnwritten, a begin mark, the loop's clock when it saw the wait, waitCut or waitDone
	writes atomic.Uint32 // the WroteRequest calls so far: their begin marks
	wrote  atomic.Bool   // net/http called the trace's WroteRequest: it calls no hook of this try after

	// ctx outlives tries: the parent of net/http's request context for a
	// try in a tryCtx. It is made when first needed; once cancelled the
	// slot is not reused.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// For a try in a tryCtx whose caller's context can end: that context,
	// and the stop of the AfterFunc (parentDone) that passes its end on to
	// ctx.
	parent     context.Context
	stop       func() bool
	parentDone func()

	// cut ends the try's wait for headers: cancel, cancelReq, or the
	// try's own cancel. Set before the request is sent; read by the watch
	// after it claimed the wait.
	cut context.CancelCauseFunc
	// cancelReq ends an HTTP/1.1 try's request through net/http's
	// CancelRequest (h1cut.go); made once per slot.
	cancelReq context.CancelCauseFunc

	// trace goes to net/http as the request's trace for a try in a
	// tryCtx. Its hooks call the try in the slot; only GotConn,
	// WroteHeaders and WroteRequest are ever set.
	trace        httptrace.ClientTrace
	gotConn      func(httptrace.GotConnInfo)
	wroteHeaders func()
	wroteRequest func(httptrace.WroteRequestInfo)
}

// errFirstByte is the cause with which the watch ends a wait for headers,
// errStalled the error of a Read it failed.
var (
	errFirstByte = errors.New("transport: no response headers within FirstByteTimeout")
	errStalled   = errors.New("transport: body read stalled")
)

// acquire gives tr a slot, starting the loop if it is off.
func (w *watch) acquire(tr *try) *slot {
	s, _ := w.free.Get().(*slot)
	if s == nil {
		s = w.newSlot()
	}
	s.wait.Store(waitUnwritten)
	s.wrote.Store(false)
	s.cut = nil
	// Stored before running is read: a loop that is ending reads the
	// slots after it cleared running, so one of the two sees the other.
	s.hooked = tr
	s.tr.Store(tr)
	if !w.running.Load() {
		w.mu.Lock()
		if !w.running.Load() {
			w.wall.Store(time.Now().UnixNano())
			w.running.Store(true)
			go w.loop()
		}
		w.mu.Unlock()
	}
	return s
}

func (w *watch) newSlot() *slot {
	s := &slot{w: w}
	// The hooks are made once per slot and call whichever try is in it.
	s.gotConn = func(info httptrace.GotConnInfo) { s.hooked.gotConn(info) }
	s.wroteHeaders = func() { s.hooked.wroteHeaders() }
	s.wroteRequest = func(info httptrace.WroteRequestInfo) { s.written() }
	s.parentDone = func() { s.cancel(context.Cause(s.parent)) }
	s.cancelReq = func(error) {
		// A slot whose wait was cut is not reused: the try is this one,
		// or gone (nothing left to cancel). tr.req is the try's own copy,
		// so no other request is cancelled.
		if tr := s.tr.Load(); tr != nil {
			tr.c.st.ht.CancelRequest(tr.req) //lint:ignore SA1019 see h1cut.go: checked by cancelRequestWorks
		}
	}
	w.mu.Lock()
	if len(w.all) == cap(w.all) {
		w.compact()
	}
	w.all = append(w.all, weak.Make(s))
	w.mu.Unlock()
	return s
}

// compact drops the slots the GC has taken from all. w.mu is held.
func (w *watch) compact() {
	live := w.all[:0]
	for _, p := range w.all {
		if p.Value() != nil {
			live = append(live, p)
		}
	}
	clear(w.all[len(live):])
	w.all = live
}

// follow passes the end of the caller's context parent on to the slot's
// context, for the try in the slot.
func (s *slot) follow(parent context.Context) {
	s.parent = parent
	s.stop = context.AfterFunc(parent, s.parentDone)
}

// reusableCtx returns the slot's own cancellable context, made at first use.
func (s *slot) reusableCtx() context.Context {
	if s.ctx == nil {
		s.ctx, s.cancel = context.WithCancelCause(context.Background())
	}
	return s.ctx
}

// written notes that the request was written: the wait for headers starts
// (again, when net/http sends it once more on another conn); the loop's
// next look stamps it.
func (s *slot) written() {
	s.wrote.Store(true)
	mark := beganMark(s.writes.Add(1))
	for {
		old := s.wait.Load()
		if old == waitCut || old == waitDone || s.wait.CompareAndSwap(old, mark) {
			return
		}
	}
}

// headers ends the wait for headers and reports whether the watch had cut
// it first. A cut stays marked: the watch may still be about to call the
// cut, so release must not give the slot to another try.
func (s *slot) headers() (cut bool) {
	for {
		old := s.wait.Load()
		if old == waitCut {
			return true
		}
		if s.wait.CompareAndSwap(old, waitDone) {
			return false
		}
	}
}

// release takes the try out of its slot. The slot is reused only when
// nothing of the try can reach it any more: net/http called the last trace
// hook it would (or had none), and neither the watch nor anyone else
// cancelled the slot's context.
func (s *slot) release(hooked bool) {
	// A parentDone that ran, or will, cancels ctx: stop tells.
	followed := s.stop == nil || s.stop()
	s.stop = nil
	if followed {
		s.parent = nil // the caller's context is not kept by a free slot
	}
	reuse := followed && s.wait.Load() != waitCut && (!hooked || s.wrote.Load()) &&
		(s.ctx == nil || s.ctx.Err() == nil)
	s.tr.Store(nil)
	if reuse {
		s.w.free.Put(s)
	}
	// Else let go: the GC takes it from all, and a late hook finds the
	// old try (s.hooked), never another's.
}

// loop cuts the waits for headers and the body reads that have gone past
// their limits, until it finds no try in flight twice in a row. It is not
// woken when the last try ends: a Transport serving requests one at a time
// would wake it, or start it, once per request.
func (w *watch) loop() {
	t := time.NewTicker(w.tick)
	defer t.Stop()
	type cut struct {
		s *slot
		f context.CancelCauseFunc
	}
	var (
		cuts    []cut   // reused between ticks
		stalled []*body // reused between ticks
		empty   bool    // the last look found no try in flight
	)
	for range t.C {
		w.wall.Store(time.Now().UnixNano())
		// now, read before the look, only decides cuts (a late now cuts
		// later, never earlier). A wait or Read seen begun is stamped with
		// the clock read after it was seen, if it is still that begin: it
		// began before that, even if this goroutine was held up since now
		// was read.
		now := w.now()
		cuts, stalled = cuts[:0], stalled[:0]
		w.mu.Lock()
		busy := false
		for _, p := range w.all {
			s := p.Value()
			if s == nil {
				continue
			}
			tr := s.tr.Load()
			if tr == nil {
				continue
			}
			busy = true
			if w.firstByte > 0 {
				// Stamp a wait that began since the last look, or claim
				// the one stamped at: one that ended or began again since
				// has another mark, and the claim fails.
				switch at := s.wait.Load(); {
				case isBegun(at):
					s.wait.CompareAndSwap(at, w.now())
				case at > 0 && now-at >= int64(w.firstByte) && s.wait.CompareAndSwap(at, waitCut):
					cuts = append(cuts, cut{s, s.cut})
				}
			}
			if b := &tr.body; w.stall > 0 {
				// The same for the Read in progress (0: none, or no body
				// yet).
				switch at := b.reading.Load(); {
				case isBegun(at):
					b.reading.CompareAndSwap(at, w.now())
				case at > 0 && now-at >= int64(w.stall) && b.reading.CompareAndSwap(at, -1):
					stalled = append(stalled, b)
				}
			}
		}
		if busy {
			empty = false
		} else {
			w.compact()
			if empty && w.end() {
				w.mu.Unlock()
				return
			}
			empty = true
		}
		w.mu.Unlock()
		// Outside the lock: cancelling and Close may block. A slot whose
		// wait was cut is not reused, so s.cut is still the try's.
		for i, c := range cuts {
			if c.f != nil {
				c.f(errFirstByte)
			}
			cuts[i] = cut{}
		}
		for i, b := range stalled {
			// Closing net/http's body from another goroutine ends the Read
			// blocked in it, on HTTP/1.1 (the conn is closed) and HTTP/2
			// (the stream is reset).
			_ = b.rc.Close()
			w.tel.stalled(b.tr.ctx)
			stalled[i] = nil
		}
	}
}

// end clears running unless a try came into a slot meanwhile, and reports
// whether the loop may end. w.mu is held.
func (w *watch) end() bool {
	w.running.Store(false)
	for _, p := range w.all {
		if s := p.Value(); s != nil && s.tr.Load() != nil {
			w.running.Store(true)
			return false
		}
	}
	return true
}

// tryCtx is the context of a try the watch bounds: the slot's trace is the
// request's, so that no trace and no context carrying it are made per
// request. The rest is the try's context (own) when something else can end
// the wait: over HTTP/1.1 net/http's CancelRequest (h1cut.go), for a try
// with a cancellable context of its own (a hedge, a try under an
// AttemptTimeout) that context's cancel. Otherwise, for a try that nothing
// of the Transport's but the watch ends before its body (or a hedge that
// overtakes a hedged attempt's first try: try.lose), net/http's
// per-request context becomes a child of the slot's reusable one, which
// the caller's context, when it can end, ends through an AfterFunc
// (slot.follow). Values and the deadline come from the try's context.
type tryCtx struct {
	context.Context
	s   *slot
	own bool // Done, Err and every value but the trace are the try's context's
}

func (c *tryCtx) Done() <-chan struct{} {
	if c.own {
		return c.Context.Done()
	}
	return c.s.ctx.Done()
}

// Err is the try's context's (own), else the caller's context's error once
// that has ended (its end reached the slot's context), else the slot's.
func (c *tryCtx) Err() error {
	if c.own {
		return c.Context.Err()
	}
	err := c.s.ctx.Err()
	if err != nil {
		if perr := c.Context.Err(); perr != nil {
			return perr
		}
	}
	return err
}

// Value answers net/http's trace key with the slot's trace, unless own the
// context package's own key with the slot's context (so that a child
// registers there), and every other key from the try's context.
func (c *tryCtx) Value(key any) any {
	if key == traceKey {
		return &c.s.trace
	}
	if c.own {
		return c.Context.Value(key)
	}
	if v := c.s.ctx.Value(key); v != nil {
		return v
	}
	return c.Context.Value(key)
}

// traceKey is the key under which httptrace finds a request's trace,
// learned by asking a context that notes the keys it is asked for, and
// checked: nil (and tryCtx unused) if httptrace ever looks otherwise.
var traceKey = func() any {
	p := &keyProbe{Context: context.Background()}
	httptrace.ContextClientTrace(p)
	if len(p.keys) != 1 {
		return nil
	}
	want := &httptrace.ClientTrace{}
	if httptrace.ContextClientTrace(&keyAnswer{Context: context.Background(), key: p.keys[0], v: want}) != want {
		return nil
	}
	return p.keys[0]
}()

type keyProbe struct {
	context.Context
	keys []any
}

func (p *keyProbe) Value(key any) any {
	p.keys = append(p.keys, key)
	return nil
}

type keyAnswer struct {
	context.Context
	key, v any
}

func (a *keyAnswer) Value(key any) any {
	if key == a.key {
		return a.v
	}
	return nil
}
