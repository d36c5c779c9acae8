package upstream

import (
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// The Throttle's rule: over the last ThrottleWindow, a new call is rejected
// locally with probability max(0, (requests − K·accepts) / (requests +
// ThrottlePadding)).
//
// With K = 2, an upstream that accepts C calls a second while R > 2C are
// offered sees about 2C: requests R (the rejected ones count), accepts C, so
// p = (R − 2C)/R and R·(1 − p) = 2C arrive (TestThrottleBoundsLoadAtTwiceCapacity:
// 300 offered to a capacity of 100, 199 a second arrive, the goodput stays
// 100). The window is 5s (10 buckets of 500ms), not the SRE book's 2
// minutes nor grpc-go's 30s: after the overload ends, the rejection falls
// to 0 once the window's accepts outweigh its old overload, 4.5s in that
// test at 50 calls/s, so recovery takes seconds; 5s at 20 calls/s is still
// 100 samples. Nothing is shed while the window holds fewer than
// ThrottleMinRequests requests: a first call's 503 must not refuse its own
// retry (retries and hedges are refused while anything is shed), and an
// upstream called once a second is not loaded by its client. Above it, the
// padding (8, as in grpc-go's RLS throttler) keeps a few failures from
// rejecting much: 10 overload signals and nothing else reject 10/18.
const (
	ThrottleK       = 2.0
	ThrottlePadding = 8.0
	ThrottleWindow  = 5 * time.Second
	// ThrottleMinRequests is the fewest requests in the window for which
	// the throttle rejects anything.
	ThrottleMinRequests = 10
	throttleBins        = 10
	throttleBin         = int64(ThrottleWindow / throttleBins)
)

// Throttle is client-side adaptive throttling for one upstream (Google SRE,
// "Handling Overload"): it counts requests and accepts — answers that are
// not overload signals — over a sliding window, and rejects a new call with
// the probability above, so that a drowning upstream sees about K times
// what it can serve and recovers in seconds when it does.
//
// What counts: Record after each attempt that got an answer or an overload
// signal (an accept when the answer is not 429, 502, 503, 504, a
// first-byte timeout or a reset), and each call Allow rejected (as a
// request). Attempts that ended otherwise (a dial that failed: the Gate's
// business; the caller's cancel) are not counted.
//
// The zero value is ready to use. A Throttle owns no goroutine and is safe
// for concurrent use; it must not be copied after first use. Allow costs
// one atomic load while the window holds no more overload than K allows.
type Throttle struct {
	// active is set when the window may call for rejections: the last
	// computation found requests > K·accepts, or an overload was recorded
	// since.
	active atomic.Bool
	mu     sync.Mutex // guards the bins' rollover
	bins   [throttleBins]bin
	since  atomic.Int64 // UnixNano of when rejections began (0: not rejecting)
	rand   func() float64
}

type bin struct {
	epoch    atomic.Int64 // the bin's index in time (UnixNano / throttleBin)
	req, acc atomic.Int64
}

// at returns the bin for now, reset when it held an older epoch.
func (t *Throttle) at(now int64) *bin {
	e := now / throttleBin
	b := &t.bins[e%throttleBins]
	if b.epoch.Load() != e {
		t.mu.Lock()
		if b.epoch.Load() != e {
			b.req.Store(0)
			b.acc.Store(0)
			b.epoch.Store(e)
		}
		t.mu.Unlock()
	}
	return b
}

// Record notes an attempt's outcome at now (UnixNano): an accept unless
// overload.
func (t *Throttle) Record(now int64, overload bool) {
	b := t.at(now)
	b.req.Add(1)
	if overload {
		t.active.Store(true)
	} else {
		b.acc.Add(1)
	}
}

// Settle notes at now (UnixNano) the outcome of an attempt already counted
// as an overload request when it began (it arrived behind a standing queue:
// Record(t, true) then): one call is one request. An accept adds the
// accept the earlier record lacked; an overload adds nothing.
func (t *Throttle) Settle(now int64, overload bool) {
	if !overload {
		t.at(now).acc.Add(1)
	}
}

// Probability returns the rejection probability at now (UnixNano).
func (t *Throttle) Probability(now int64) float64 {
	if !t.active.Load() {
		return 0
	}
	e := now / throttleBin
	var req, acc int64
	for i := range t.bins {
		b := &t.bins[i]
		if be := b.epoch.Load(); be <= e && be > e-throttleBins {
			req += b.req.Load()
			acc += b.acc.Load()
		}
	}
	p := (float64(req) - ThrottleK*float64(acc)) / (float64(req) + ThrottlePadding)
	if p <= 0 || req < ThrottleMinRequests {
		t.active.Store(false)
		t.since.Store(0)
		return 0
	}
	t.since.CompareAndSwap(0, now)
	return p
}

// Shedding reports whether the throttle rejects calls now: retries and
// hedges are refused while it does (they go first).
func (t *Throttle) Shedding(now int64) bool { return t.Probability(now) > 0 }

// Allow reports whether a new call may go at now (UnixNano); a rejected
// call counts as a request.
func (t *Throttle) Allow(now int64) bool {
	p := t.Probability(now)
	if p == 0 {
		return true
	}
	r := t.rand
	if r == nil {
		r = rand.Float64
	}
	if r() >= p {
		return true
	}
	t.at(now).req.Add(1)
	return false
}

// Since returns when the throttle began rejecting (UnixNano; 0: it is
// not).
func (t *Throttle) Since() int64 { return t.since.Load() }

// Rejected returns the *UnavailableError of a call Allow rejected.
func (t *Throttle) Rejected(upstream string, last error) *UnavailableError {
	e := &UnavailableError{Upstream: upstream, Reason: ReasonShed, Last: last}
	if s := t.since.Load(); s != 0 {
		e.Since = time.Unix(0, s)
	}
	return e
}
