package upstream

import (
	"context"
	"errors"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// State is a [Gate]'s state.
type State int32

// The states of a Gate.
const (
	// Ready: calls go.
	Ready State = iota
	// Down: establishment failed or hangs; calls fail at once but for a
	// paced probe and the calls that wait for ready.
	Down
	// Paused: the server asked for a pause; calls wait for its end (or
	// fail at once when their deadline ends first), then one probe goes.
	Paused
)

func (s State) String() string {
	switch s {
	case Ready:
		return "ready"
	case Down:
		return "down"
	case Paused:
		return "paused"
	}
	return "unknown"
}

// The Gate's thresholds.
const (
	// FailureThreshold consecutive establishment failures with no success
	// between take a Ready gate Down (Envoy's and gobreaker's 5).
	FailureThreshold = 5
	// HangingThreshold dials pending longer than the suspect time, with no
	// success since the oldest of them started, take it Down.
	HangingThreshold = 3
	// MinSuspectAfter is the least time a dial may be pending before it
	// counts as hanging; the suspect time is the larger of this and
	// SuspectFactor times the average of the upstream's successful
	// establishment times (ColdSuspectAfter before the first).
	MinSuspectAfter = time.Second
	SuspectFactor   = 4
	// ColdSuspectAfter is the suspect time while no dial of the upstream
	// has established yet: nothing is known of its usual time, and a far
	// upstream on a slow but healthy network (DNS, TCP and TLS over a
	// long round trip) takes more than MinSuspectAfter.
	ColdSuspectAfter = 3 * time.Second
	// ProbeInterval is the pace of probes for the first FastProbing of an
	// outage (±ProbeJitter), so that a recovery is seen within about
	// 1.2s; then the interval grows by ProbeMultiplier per probe up to
	// MaxProbeInterval (gRPC's reconnect backoff: 1s ×1.6, jitter 0.2).
	ProbeInterval    = time.Second
	ProbeJitter      = 0.2
	FastProbing      = 30 * time.Second
	ProbeMultiplier  = 1.6
	MaxProbeInterval = 30 * time.Second
	// MinPause is the pause after a 429 without Retry-After; it doubles
	// while 429s continue, up to the cap given to Pause.
	MinPause = time.Second
	// MaxPauseWaits is how many times a waiting call without a deadline
	// sees the pause renewed (the probe got another 429) before it fails
	// as one whose deadline ends before the pause: such a call gets
	// the server's answer in about the time its own retries would have
	// taken, not at the end of a storm that lasts hours.
	MaxPauseWaits = 2
)

// Withdrawer is a retry budget (a *retry.Budget): a probe takes a token.
type Withdrawer interface{ Withdraw() bool }

// Gate is one upstream's reachability and the pause its server advised.
//
// Ready → Down after FailureThreshold consecutive establishment failures
// (Failure, FailureSince) with no success between — of first-byte
// failures (FailureSince) with no answer between: a dial that establishes
// a conn the server then does not answer on forgives none — or when
// HangingThreshold dials (DialStart) are pending longer than the suspect
// time with no success since the oldest of them started. While Down, Enter fails at once with
// an *UnavailableError (Reason "down", Last the last real failure) unless
// the call is admitted as a probe: the first call at or after the next
// probe time, which goes through (paid from its retry budget when it has
// one; unpaid when the budget refuses and no probe went for
// MaxProbeInterval) and moves the next probe time on. With a prober
// (SetProber) the gate probes by itself instead, and no call is a probe.
// The first success anywhere
// (Success, an established dial) re-opens the gate for everyone and wakes
// the calls that wait for ready.
//
// Pause (a 429, a Retry-After) makes it Paused until a time T: calls whose
// deadline ends before T fail at once (Reason "paused"); others wait for T
// within their context, then one goes as a probe and the rest wait for its
// outcome: a success re-opens the gate, another pause pauses again (a
// call without a deadline that saw the pause renewed MaxPauseWaits times
// fails then; one with a deadline waits within it); a probe
// with no outcome after ProbeInterval (a long poll) is joined by another.
//
// The zero value is a Ready gate. A Gate owns no goroutine and is safe for
// concurrent use; it must not be copied after first use. Upstream names it
// in errors and must be set before first use.
type Gate struct {
	// Upstream is the upstream's host:port, for errors.
	Upstream string

	// hot is non-zero when Enter or Success must look further than one
	// load: the gate is not Ready, a dial is pending, or a failure is
	// counted.
	hot atomic.Uint32
	// cur is state, for Current: written under mu, read without it.
	cur atomic.Int32

	mu         sync.Mutex
	state      State
	fails      int           // consecutive failures
	stalls     int           // consecutive first-byte failures counted (FailureSince) with no answer between
	last       error         // the last real failure
	lastOK     time.Time     // the last success
	since      time.Time     // of the current Down or Paused state
	downs      atomic.Uint64 // times the gate went Down (Downs)
	credit     atomic.Uint64 // answers noted less the failures they excused: Credit
	probation  atomic.Bool   // re-opened by a dial, no answer since (success)
	nextProbe  time.Time     // Down: when the next probe may go
	lastProbe  time.Time     // Down: when the last probe went (or the gate went down)
	interval   time.Duration // Down: the last probe interval drawn
	until      time.Time     // Paused: the end of the pause
	pause      time.Duration // the last pause without advice (doubles)
	probing    bool          // Paused: a probe is out
	probeAt    time.Time     // Paused: when it went
	probeGen   uint64        // which probe is out
	pending    []*Dial       // dials under way
	ewma       time.Duration // of successful establishment times
	known      bool          // a dial established once: ewma is the upstream's
	wake       chan struct{} // closed on a change a waiter cares for; nil: nobody waits
	transition func(from, to State)

	// The background probe (SetProber): nil prober: calls probe.
	prober   func() error
	budget   Withdrawer
	timer    *time.Timer // armed for the next probe; nil: none
	probeOut bool        // a background probe is under way
	demand   bool        // a call met the Down gate since the last probe went
	waiters  int         // calls waiting for ready on a Down gate

	changes    []change // changes of state not yet given to transition
	delivering bool     // a goroutine gives changes to transition
	deliverErr error    // the last failure as of the change being given (LastLocked)
}

// change is a change of state, for OnTransition's function, with the last
// failure as of it.
type change struct {
	from, to State
	last     error
}

// Dial is one establishment under way, from DialStart to its end.
type Dial struct {
	g     *Gate
	start time.Time
	hang  func() error
	done  bool
}

// SetProber makes the gate probe the upstream itself while it is Down,
// instead of admitting a caller's call as the probe: when a probe is due
// (the same pace: about ProbeInterval, then growing to MaxProbeInterval)
// and a call met the Down gate since the last probe went (or waits for
// ready), the gate takes a token from budget (when not nil; a refused
// token defers the probe by an interval) and runs probe on a goroutine of
// its own — at most one at a time. probe establishes a connection to the
// upstream, closes it and returns nil when it established (the gate
// re-opens for everyone and wakes the calls that wait for ready), an
// error wrapping context.Canceled when it was abandoned (nothing learnt),
// or the failure. While Down every call that does not wait for ready then
// fails at once: no caller pays a probe.
//
// The gate owns no goroutine but probe's, which lives as long as one
// probe (probe must be bounded), and no timer but the one armed for the
// next probe while Down; with no call meeting the gate, at most one more
// probe goes. Set before first use.
func (g *Gate) SetProber(probe func() error, budget Withdrawer) {
	g.prober, g.budget = probe, budget
}

// StopProbes disarms the next background probe (a probe under way ends by
// its own context): the gate probes again when a call meets it Down. So a
// client closed and dropped is not kept alive by a timer.
func (g *Gate) StopProbes() {
	g.mu.Lock()
	if g.timer != nil {
		g.timer.Stop()
		g.timer = nil
	}
	g.demand = false
	g.unlock()
}

// want notes a call that met the Down gate, and arms the next background
// probe if none is armed or under way. g.mu is held.
func (g *Gate) want(now time.Time) {
	g.demand = true
	if g.timer == nil && !g.probeOut {
		g.timer = time.AfterFunc(max(g.nextProbe.Sub(now), 0), g.runProbe)
	}
}

// runProbe is the armed timer's: one background probe, if still due and
// wanted.
func (g *Gate) runProbe() {
	g.mu.Lock()
	g.timer = nil
	if g.state != Down || g.probeOut || !(g.demand || g.waiters > 0) {
		g.unlock()
		return
	}
	now := time.Now()
	if now.Before(g.nextProbe) {
		g.timer = time.AfterFunc(g.nextProbe.Sub(now), g.runProbe)
		g.unlock()
		return
	}
	g.advanceProbe(now)
	if g.budget != nil && !g.budget.Withdraw() && now.Sub(g.lastProbe) < MaxProbeInterval {
		// No token: the next probe, an interval on.
		g.timer = time.AfterFunc(g.nextProbe.Sub(now), g.runProbe)
		g.unlock()
		return
	}
	g.lastProbe = now
	g.probeOut, g.demand = true, false
	probe := g.prober
	g.unlock()

	err := probe()

	g.mu.Lock()
	defer g.unlock()
	g.probeOut = false
	now = time.Now()
	switch {
	case err == nil:
		g.success(now, false)
		return
	case errors.Is(err, context.Canceled):
	default:
		g.last = err
	}
	if g.state == Down && (g.demand || g.waiters > 0) {
		g.timer = time.AfterFunc(max(g.nextProbe.Sub(now), 0), g.runProbe)
	}
}

// Pass is a call's admission by Enter.
type Pass struct {
	g      *Gate
	gen    uint64
	probe  bool
	paused bool
}

// Probe reports whether the call was admitted as a probe of a gate that
// is not Ready: its outcome decides for everyone.
func (p Pass) Probe() bool { return p.probe }

// Done ends the call's admission. A probe of a pause that ended with no
// outcome (its caller gave up) lets the next waiting call probe.
func (p Pass) Done() {
	if !p.paused || p.g == nil {
		return
	}
	g := p.g
	g.mu.Lock()
	defer g.unlock()
	if g.probing && g.probeGen == p.gen {
		g.probing = false
		g.signal()
	}
}

// OnTransition sets f, called on every change of state, in order, one at
// a time, and never with the gate's lock held (f is user code at one
// remove, a logger's handler: it may block, or call into the gate, e.g.
// through a call to the same upstream); set before first use. It is called
// on the goroutine that made the change or on another that was giving
// earlier changes to f at the time.
func (g *Gate) OnTransition(f func(from, to State)) { g.transition = f }

// unlock releases g.mu, then gives the changes of state made under it to
// the transition function, unless another goroutine is doing so already
// (it takes them too). g.mu is held.
func (g *Gate) unlock() {
	if len(g.changes) == 0 || g.delivering {
		g.mu.Unlock()
		return
	}
	g.delivering = true
	for len(g.changes) > 0 {
		cs := g.changes
		g.changes = nil
		g.mu.Unlock()
		for _, c := range cs {
			g.deliverErr = c.last
			g.transition(c.from, c.to)
		}
		g.deliverErr = nil
		g.mu.Lock()
	}
	g.delivering = false
	g.mu.Unlock()
}

// State returns the gate's state.
func (g *Gate) State() State {
	if g.hot.Load() == 0 {
		return Ready
	}
	g.mu.Lock()
	defer g.unlock()
	g.checkHanging(time.Now())
	return g.state
}

// Current returns the gate's state as of its last change, without its
// lock and without looking for hanging dials (which State does, and which
// may change the state and so call OnTransition's function): for a caller
// that holds a lock of its own.
func (g *Gate) Current() State { return State(g.cur.Load()) }

// Options are a call's wishes to Enter.
type Options struct {
	// WaitForReady makes a call wait for a Down gate to open (within its
	// context) instead of failing at once.
	WaitForReady bool
	// Budget, when not nil, pays for a probe: a refused probe fails the
	// call at once (a call that waits for ready waits on, and asks again
	// about every ProbeInterval), and the next call may probe; when no
	// probe went for MaxProbeInterval, one goes unpaid (a drained budget
	// delays the recovery, never forbids it).
	Budget Withdrawer
}

// Enter admits a call, or fails it with an *UnavailableError, or waits
// (Paused, or Down with WaitForReady) until it may go or ctx ends (then
// ctx's error). On the happy path (Ready, no dial pending) it costs one
// atomic load. The caller calls Done on the Pass when the call ends.
func (g *Gate) Enter(ctx context.Context, o Options) (Pass, error) {
	if g.hot.Load() == 0 {
		return Pass{}, nil
	}
	var waitedFor time.Time // the end of the pause the call waits for
	renewed := 0            // pauses that began while it waited
	for {
		g.mu.Lock()
		now := time.Now()
		g.checkHanging(now)
		var wait time.Duration // > 0: wake after it at the latest
		switch g.state {
		case Ready:
			g.unlock()
			return Pass{}, nil
		case Down:
			if g.prober != nil {
				// The gate probes: calls fail at once or wait.
				g.want(now)
				if !o.WaitForReady {
					err := g.unavailable(ReasonDown, g.since, g.nextProbe)
					g.unlock()
					return Pass{}, err
				}
				break
			}
			// A due probe the budget refuses does not go, unless none
			// went for MaxProbeInterval: an empty budget (one that only
			// calls refill, and calls that fail fast do not) delays the
			// recovery, never forbids it.
			due := !now.Before(g.nextProbe)
			if due && (o.Budget == nil || o.Budget.Withdraw() || now.Sub(g.lastProbe) >= MaxProbeInterval) {
				g.lastProbe = now
				g.advanceProbe(now)
				g.unlock()
				return Pass{g: g, probe: true}, nil
			}
			if !o.WaitForReady {
				retry := g.nextProbe
				if due {
					retry = now // refused: the next call may probe
				}
				err := g.unavailable(ReasonDown, g.since, retry)
				g.unlock()
				return Pass{}, err
			}
			wait = g.nextProbe.Sub(now)
			if due {
				// Refused: ask the budget again in a while (it
				// refills), at the latest when a probe may go unpaid.
				wait = min(ProbeInterval, g.lastProbe.Add(MaxProbeInterval).Sub(now))
			}
		case Paused:
			if now.Before(g.until) {
				if !waitedFor.IsZero() && !now.Before(waitedFor) && g.until.After(waitedFor) {
					// The pause it waited for ended and the server
					// asked for more (a probe's answer). An answer in
					// flight that extends a pause under way is none.
					renewed++
				}
				waitedFor = g.until
				dl, ok := ctx.Deadline()
				if ok && dl.Before(g.until) || !ok && renewed >= MaxPauseWaits {
					err := g.unavailable(ReasonPaused, g.since, g.until)
					g.unlock()
					return Pass{}, err
				}
				wait = g.until.Sub(now)
			} else if !g.probing || now.Sub(g.probeAt) >= ProbeInterval {
				// No probe out, or one out for ProbeInterval with no
				// outcome yet (a long poll, a slow answer): the others
				// do not wait for it longer; another goes.
				g.probing = true
				g.probeAt = now
				g.probeGen++
				p := Pass{g: g, gen: g.probeGen, probe: true, paused: true}
				g.unlock()
				return p, nil
			} else {
				wait = g.probeAt.Add(ProbeInterval).Sub(now)
			}
		}
		if err := ctx.Err(); err != nil {
			g.unlock()
			return Pass{}, err
		}
		if g.wake == nil {
			g.wake = make(chan struct{})
		}
		wake := g.wake
		waits := g.state == Down && g.prober != nil // counted: the probes go on for it
		if waits {
			g.waiters++
		}
		g.unlock()
		err := sleep(ctx, wake, wait)
		if waits {
			g.mu.Lock()
			g.waiters--
			g.unlock()
		}
		if err != nil {
			return Pass{}, err
		}
	}
}

// sleep waits for wake, d (when > 0) or ctx's end (its error).
func sleep(ctx context.Context, wake <-chan struct{}, d time.Duration) error {
	var tc <-chan time.Time
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		tc = t.C
	}
	select {
	case <-wake:
	case <-tc:
	case <-ctx.Done():
		return ctx.Err()
	}
	return nil
}

// unavailable is the error of a call failed at once. g.mu is held.
func (g *Gate) unavailable(reason string, since, retry time.Time) *UnavailableError {
	return &UnavailableError{Upstream: g.Upstream, Reason: reason, Since: since, Retry: retry, Last: g.last}
}

// DialStart notes an establishment under way; hang, when not nil, describes
// it as the error of a dial that hangs (the Last of the gate's error if it
// goes Down for hanging dials). The caller ends it with one of the Dial's
// methods.
func (g *Gate) DialStart(hang func() error) *Dial {
	d := &Dial{g: g, start: time.Now(), hang: hang}
	g.mu.Lock()
	defer g.unlock()
	g.pending = append(g.pending, d)
	g.hot.Store(1)
	g.checkHanging(d.start)
	return d
}

// Established notes that the dial established: a success.
func (d *Dial) Established() {
	g := d.g
	g.mu.Lock()
	defer g.unlock()
	if !d.end() {
		return
	}
	now := time.Now()
	took := now.Sub(d.start)
	if !g.known {
		g.known = true
		g.ewma = took
	} else {
		g.ewma = (4*g.ewma + took) / 5
	}
	g.success(now, false)
}

// Failed notes that the dial failed with err: a failure of establishment.
func (d *Dial) Failed(err error) {
	g := d.g
	g.mu.Lock()
	defer g.unlock()
	if !d.end() {
		return
	}
	g.failure(time.Now(), err)
}

// Abandoned notes that the dial ended without telling anything (its caller
// cancelled it).
func (d *Dial) Abandoned() {
	g := d.g
	g.mu.Lock()
	defer g.unlock()
	if d.end() {
		g.cool()
	}
}

// end takes d off the pending list, once. g.mu is held.
func (d *Dial) end() bool {
	if d.done {
		return false
	}
	d.done = true
	g := d.g
	for i, p := range g.pending {
		if p == d {
			g.pending = append(g.pending[:i], g.pending[i+1:]...)
			break
		}
	}
	return true
}

// Success notes that the upstream answered (any response headers, even a
// 5xx: it is reachable).
func (g *Gate) Success() {
	g.credit.Add(1)
	if g.probation.Load() {
		g.probation.Store(false)
	}
	if g.hot.Load() == 0 {
		// Ready, nothing pending, no failure to forget.
		return
	}
	g.mu.Lock()
	defer g.unlock()
	g.success(time.Now(), true)
}

// Failure notes a failure of establishment that is not a dial's own (the
// first-byte limit of a fresh conn, a reset before any answer).
func (g *Gate) Failure(err error) {
	g.mu.Lock()
	defer g.unlock()
	g.failure(time.Now(), err)
}

// Answered notes an answer of the upstream that must not re-open the
// gate — one to a call admitted before a pause in force, which does not
// end the server's advised wait (only the pause's probe or an answer
// after it does: Success) — but is an answer all the same: it excuses a
// first-byte failure (FailureSince) and ends a probation (success).
func (g *Gate) Answered() {
	g.credit.Add(1)
	if g.probation.Load() {
		g.probation.Store(false)
	}
}

// Credit is the upstream's answers so far (Success, Answered and Pause
// calls) less the first-byte failures they excused (FailureSince): a try
// reads it when its request is written.
func (g *Gate) Credit() uint64 { return g.credit.Load() }

// FailureSince is Failure for a try whose request was written when Credit
// was seen: the failure is excused, in every state, while the upstream
// answered more requests since then than it had failures excused since —
// one answer, one failure: Credit is above seen. A request that hangs on
// an upstream that answers the others is that request's fault, not the
// upstream's: a server that hangs one request in eight must not be taken
// down when the first-byte limits of its hanging requests end in one
// batch (a starved client's timers fire late, together and in any order,
// with no answer between them); the answers to the seven others excuse
// them. An upstream that answers a trickle (a long poll's return, a
// health check) while the rest hang excuses as many failures as it
// answers: the others count, and enough of them with no answer between
// take it down. The failures of tries written after the last answer all
// count.
//
// The comparison of one count needs no record of which answer excused
// which failure, whatever order the failures come in; it errs on the side
// of going down: an excuse given since a try was written, to a try written
// before it, is charged to it too.
func (g *Gate) FailureSince(seen uint64, err error) {
	g.FailureSinceDowns(seen, g.Downs(), err)
}

// FailureSinceDowns is FailureSince for a try that also read Downs (downs)
// when its request was written: a try written before the gate last went
// Down (its limit outlived the outage) says nothing of the upstream a
// probe's dial found since, and does not end a probation at once — it
// counts as any unexcused failure. Else as FailureSince.
func (g *Gate) FailureSinceDowns(seen, downs uint64, err error) {
	g.mu.Lock()
	defer g.unlock()
	if g.credit.Load() > seen {
		// Other Successes only add to it meanwhile; failures take
		// from it under g.mu.
		g.credit.Add(^uint64(0))
		return
	}
	g.stalls++
	if g.probation.Load() && downs >= g.downs.Load() {
		// Re-opened by a dial, and still no answer to a request
		// written since the outage began: down again.
		g.stalls = max(g.stalls, FailureThreshold)
	}
	g.failure(time.Now(), err)
}

// Pause notes that the server asked for a pause of d (a Retry-After; d ≤ 0:
// none given, a 429's MinPause that doubles while 429s continue), capped
// by limit when limit > 0. A pause that ends before one in force changes
// nothing.
func (g *Gate) Pause(d, limit time.Duration) {
	g.mu.Lock()
	defer g.unlock()
	now := time.Now()
	g.credit.Add(1)
	g.probation.Store(false)
	g.fails, g.stalls, g.lastOK = 0, 0, now // the server answered
	if d <= 0 {
		if g.state == Paused && now.Before(g.until) {
			// One of the answers in flight when the pause began.
			return
		}
		// Doubling up to the cap (a day with none): a 429 that goes on
		// for hours must not double the pause until it overflows.
		ceiling := limit
		if ceiling <= 0 {
			ceiling = 24 * time.Hour
		}
		switch {
		case g.pause == 0:
			g.pause = MinPause
		case g.pause < ceiling:
			g.pause = min(2*g.pause, ceiling)
		}
		d = g.pause
	}
	if limit > 0 {
		d = min(d, limit)
	}
	until := now.Add(d)
	if g.state == Paused && !until.After(g.until) {
		// A pause in force that lasts longer.
		return
	}
	if g.state != Paused {
		g.since = now
	}
	g.until = until
	g.probing = false
	g.set(Paused)
	g.signal()
}

// success re-opens the gate: answer says the server answered; else a
// dial established. Only an answer forgives first-byte failures
// (stalls): on HTTP/1.1 every request that hung has its conn closed and
// the next call dials anew, and a server that accepts and never answers
// would otherwise never go down for fewer callers than FailureThreshold.
// A dial that re-opens the gate shows that the upstream accepts, not that
// it answers: the gate is Ready on probation until an answer, one
// first-byte failure with no answer from taking it down again (else each
// probe of such a server would cost FailureThreshold calls their whole
// limit). g.mu is held.
func (g *Gate) success(now time.Time, answer bool) {
	switch {
	case answer:
		g.stalls = 0
		g.probation.Store(false)
	case g.state != Ready:
		g.stalls = 0
		g.probation.Store(true)
	}
	g.fails, g.lastOK, g.pause = 0, now, 0
	g.set(Ready)
	g.probing = false
	g.signal()
	g.cool()
}

// failure counts a failure. g.mu is held.
func (g *Gate) failure(now time.Time, err error) {
	if err != nil {
		g.last = err
	}
	g.fails++
	g.hot.Store(1)
	switch g.state {
	case Ready:
		if max(g.fails, g.stalls) >= FailureThreshold {
			g.goDown(now)
		}
	case Paused:
		// The pause's probe failed to establish: the next waiter probes;
		// enough of them take the gate down.
		g.probing = false
		if max(g.fails, g.stalls) >= FailureThreshold {
			g.goDown(now)
		}
		g.signal()
	}
	g.cool()
}

// goDown takes the gate Down, the first probe an interval from now. g.mu
// is held.
func (g *Gate) goDown(now time.Time) {
	g.since = now
	g.downs.Add(1)
	g.lastProbe = now
	g.interval = 0
	g.nextProbe = now
	g.advanceProbe(now)
	g.set(Down)
	g.signal()
	if g.prober != nil {
		g.want(now)
	}
}

// advanceProbe moves the next probe time one interval on from now: about
// ProbeInterval for the first FastProbing of the outage, then growing by
// ProbeMultiplier up to MaxProbeInterval. g.mu is held.
func (g *Gate) advanceProbe(now time.Time) {
	base := ProbeInterval
	if now.Sub(g.since) >= FastProbing && g.interval > 0 {
		base = min(time.Duration(float64(g.interval)*ProbeMultiplier), MaxProbeInterval)
	}
	g.interval = base
	jit := time.Duration(float64(base) * ProbeJitter * (2*rand.Float64() - 1))
	g.nextProbe = now.Add(base + jit)
}

// checkHanging takes a Ready gate Down when HangingThreshold dials have
// been pending longer than the suspect time with no success since the
// oldest of them started. g.mu is held.
func (g *Gate) checkHanging(now time.Time) {
	if g.state != Ready || len(g.pending) < HangingThreshold {
		return
	}
	suspect := max(MinSuspectAfter, SuspectFactor*g.ewma)
	if !g.known {
		suspect = ColdSuspectAfter
	}
	n := 0
	var oldest *Dial
	for _, d := range g.pending {
		if now.Sub(d.start) >= suspect && !g.lastOK.After(d.start) {
			n++
			if oldest == nil || d.start.Before(oldest.start) {
				oldest = d
			}
		}
	}
	if n < HangingThreshold {
		return
	}
	if oldest.hang != nil {
		if err := oldest.hang(); err != nil {
			g.last = err
		}
	}
	g.goDown(now)
}

// set changes the state. g.mu is held.
func (g *Gate) set(s State) {
	if g.state == s {
		return
	}
	from := g.state
	g.state = s
	g.cur.Store(int32(s))
	if s != Ready {
		g.hot.Store(1)
	}
	if g.transition != nil {
		// Given to transition once g.mu is released (unlock).
		g.changes = append(g.changes, change{from: from, to: s, last: g.last})
	}
}

// cool clears hot when the gate is Ready with no dial pending. g.mu is
// held.
func (g *Gate) cool() {
	if g.state == Ready && len(g.pending) == 0 && g.fails == 0 && g.stalls == 0 {
		g.hot.Store(0)
	}
}

// signal wakes the waiters. g.mu is held.
func (g *Gate) signal() {
	if g.wake != nil {
		close(g.wake)
		g.wake = nil
	}
}

// LastLocked returns the last real failure as of the change of state being
// given to OnTransition's function; only for that function, on its
// goroutine.
func (g *Gate) LastLocked() error { return g.deliverErr }

// Snapshot is a gate's state for telemetry and errors.
type Snapshot struct {
	State     State
	Since     time.Time
	NextProbe time.Time // Down
	Until     time.Time // Paused
	Last      error
	// Downs is how many times the gate went Down, this time included
	// (Downs).
	Downs uint64
}

// Snapshot returns the gate's state now.
func (g *Gate) Snapshot() Snapshot {
	g.mu.Lock()
	defer g.unlock()
	g.checkHanging(time.Now())
	return Snapshot{State: g.state, Since: g.since, NextProbe: g.nextProbe, Until: g.until, Last: g.last,
		Downs: g.downs.Load()}
}

// Downs returns how many times the gate went Down so far, without its
// lock. A caller that read n before it started a dial knows, by a later
// Snapshot's Downs > n, that the upstream went down after it was there,
// on any clock: two events in the same tick of a coarse clock (or of a
// synctest bubble) are still ordered.
func (g *Gate) Downs() uint64 { return g.downs.Load() }
