package retry

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// Defaults of the zero [Budget].
const (
	// DefaultBudgetRatio is the zero Budget's ratio: retries may add 10% to the calls.
	DefaultBudgetRatio = 0.1
	// DefaultBudgetMinPerSecond is the zero Budget's floor of retries per second.
	DefaultBudgetMinPerSecond = 10.0
)

// budgetWindow is how many seconds of the time-based refill the bucket can
// hold; with the floor of 10 tokens it is the burst of retries an outage can
// start with before the budget's steady rate takes over.
const (
	budgetWindow   = 10.0
	budgetMinBurst = 10.0
)

// Budget is a token bucket of retries shared by every call (and goroutine)
// whose [Policy] points at it, so that during an outage retries add at most a
// fixed fraction to the load instead of multiplying it (incident 05's storm).
//
// Every call to Do deposits ratio tokens; the bucket also refills by
// minPerSecond tokens per second of wall time, computed from the elapsed time
// when the budget is used (no goroutine). Every retry — an attempt after the
// first — withdraws one token, and is refused when less than one token is
// left: Do then returns the last error with [ErrBudgetExhausted] in its chain.
// The first attempt of a call is never refused. The bucket holds at most
// max(10, 10·minPerSecond) tokens and starts full, so over any period T with
// N calls the retries are at most ratio·N + minPerSecond·T plus that burst.
//
// The zero value is ready to use and behaves as NewBudget(0.1, 10). A Budget
// is safe for concurrent use and must not be copied after first use. It owns
// no goroutine and needs no closing.
type Budget struct {
	mu sync.Mutex
	// full is set while the bucket is full, when a deposit changes nothing:
	// a healthy caller's deposits then read one shared flag instead of
	// taking mu (BenchmarkKeepAliveGET). Written under mu.
	full atomic.Bool
	// Guarded by mu.
	init         bool
	ratio        float64
	minPerSecond float64
	capacity     float64
	tokens       float64
	last         time.Time // of the last refill; zero until first use
}

// NewBudget returns a [Budget] that lets retries add at most ratio of the
// calls plus minPerSecond retries per second (see Budget for the burst).
// NewBudget(0.1, 0) allows one retry per ten calls; NewBudget(0, 0) refuses
// every retry beyond the starting burst of 10. Negative or NaN arguments are
// clamped to 0 (fewer retries, never more).
func NewBudget(ratio, minPerSecond float64) *Budget {
	b := &Budget{}
	b.setup(ratio, minPerSecond)
	return b
}

func clampRate(v float64) float64 {
	if math.IsNaN(v) || v < 0 {
		return 0
	}
	return v
}

// setup fills the configuration; callers hold mu or own b exclusively.
func (b *Budget) setup(ratio, minPerSecond float64) {
	b.init = true
	b.ratio = clampRate(ratio)
	b.minPerSecond = clampRate(minPerSecond)
	b.capacity = max(budgetMinBurst, budgetWindow*b.minPerSecond)
	b.tokens = b.capacity
	b.full.Store(true)
}

// refill brings the bucket up to now. Callers hold mu.
func (b *Budget) refill(now time.Time) {
	if !b.init {
		b.setup(DefaultBudgetRatio, DefaultBudgetMinPerSecond)
	}
	if b.minPerSecond == 0 {
		return
	}
	if !b.last.IsZero() {
		if dt := now.Sub(b.last).Seconds(); dt > 0 {
			b.tokens = min(b.capacity, b.tokens+dt*b.minPerSecond)
			b.full.Store(b.tokens >= b.capacity)
		}
	}
	b.last = now
}

// deposit credits one call.
//
// It does not refill: the time-based refill only adds, so the next
// withdraw (or Available) credits the same elapsed time, and a call that
// succeeds at once reads no clock here (BenchmarkKeepAliveGET). Into a
// full bucket it deposits nothing, without taking mu.
func (b *Budget) deposit() {
	if b.full.Load() {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.init {
		b.setup(DefaultBudgetRatio, DefaultBudgetMinPerSecond)
	}
	b.tokens = min(b.capacity, b.tokens+b.ratio)
	b.full.Store(b.tokens >= b.capacity)
}

// withdraw takes one token for a retry and reports whether there was one.
func (b *Budget) withdraw() bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(time.Now())
	if b.tokens < 1 {
		return false
	}
	b.tokens--
	b.full.Store(false)
	return true
}

// Withdraw takes one token for an extra attempt that is not a retry — a
// hedged request — and reports whether there was one; with none, the
// extra attempt must not be made. A nil *Budget allows every one. Safe for
// concurrent use.
func (b *Budget) Withdraw() bool {
	if b == nil {
		return true
	}
	return b.withdraw()
}

// refund returns a token taken for a retry that did not happen (the caller's
// context ended during the wait).
func (b *Budget) refund() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.tokens = min(b.capacity, b.tokens+1)
	b.full.Store(b.tokens >= b.capacity)
}

// Available returns the tokens in the bucket now: the number of retries it
// would allow if no call deposited more. A nil *Budget is no budget at all
// (as in [Policy.Budget]) and returns +Inf. Safe for concurrent use.
func (b *Budget) Available() float64 {
	if b == nil {
		return math.Inf(1)
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.refill(time.Now())
	return b.tokens
}
