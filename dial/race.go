package dial

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// racer runs one dial's resolution and race (RFC 8305): the lookups of
// both families, the staggered attempts, the repeated attempts to an
// address that stalls, and the collection of every goroutine it started.
// Only the goroutine that calls run touches its fields; lookups and
// attempts report on the channels.
type racer struct {
	s   *dialState
	ctx context.Context // the dial's: the caller's context and the dial span
	// stops end the attempts, each under a context of its own (see
	// attemptCtx), once a winner is known or the dial ends; one context
	// per attempt, not a race context above them, saves a context and
	// its bookkeeping on every dial.
	stops []context.CancelFunc

	// Resolution.
	answers  chan answer        // room for every lookup: lookups never block
	lookups  int                // lookups still running
	rctx     context.Context    // the lookups' context (ResolveTimeout)
	rcancel  context.CancelFunc //
	dnsSpan  trace.Span         // open until the race starts or DNS fails
	dnsStart time.Time
	dnsErrs  []error
	seen     addrSet          // every address learned, for de-duplication
	holdC    <-chan time.Time // the Resolution Delay (IPv4 answered first); nil while not armed

	// The race.
	started  bool               // racing (resolution has handed over)
	queue    []netip.AddrPort   // addresses not attempted yet, in dial order
	flying   []flight           // addresses attempted, in launch order
	results  chan attemptResult // unbuffered: the racer takes every result (one allocation, not two)
	pending  int                // attempts in flight
	launched int                // attempts started, for race_index
	last     time.Time
	// lastFamily4 is the family of the last address launched.
	lastFamily4 bool
	staggerC    <-chan time.Time // nil while the stagger is not armed
	// timer is the race's one timer: the Resolution Delay before the race
	// starts (holdC), the stagger once it runs (staggerC), never both.
	timer  *time.Timer
	failed []attemptResult
	winner attemptResult
	won    bool // winner is set
	// Room for the common dial's one or two addresses, so that the queue
	// and flying slices cost no allocation of their own.
	queueBuf  [2]netip.AddrPort
	flyingBuf [2]flight
	stopsBuf  [2]context.CancelFunc
}

// flight is the state of one attempted address: its attempts in flight,
// and whether one of them failed (then it gets no other).
type flight struct {
	peer   netip.AddrPort
	n      int
	failed bool
}

func (r *racer) init(s *dialState, ctx context.Context) {
	r.s, r.ctx, r.results = s, ctx, make(chan attemptResult)
	r.queue, r.flying, r.stops = r.queueBuf[:0], r.flyingBuf[:0], r.stopsBuf[:0]
}

// stop ends every attempt still running (a lost race: see dialState.fail)
// and the lookups.
func (r *racer) stop() {
	for _, stop := range r.stops {
		stop()
	}
	if r.rcancel != nil {
		r.rcancel()
	}
}

// startLookups starts the lookups of the dial's families under
// ResolveTimeout (RFC 8305 §3: AAAA and A apart).
func (r *racer) startLookups() {
	s := r.s
	r.dnsStart = time.Now()
	var ctx context.Context
	ctx, r.dnsSpan = s.startChild(r.ctx, "dial.dns")
	if r.dnsSpan.IsRecording() {
		r.dnsSpan.SetAttributes(otelx.ServerAddress(s.host))
	}
	r.rctx, r.rcancel = s.stoppableCtx(ctx, s.d.resolveTimeout(), errResolveTimeout)
	v6, v4 := s.families()
	r.answers = make(chan answer, 2)
	if v6 {
		r.lookups++
		s.startLookup(r.rctx, true, r.answers)
	}
	if v4 {
		r.lookups++
		s.startLookup(r.rctx, false, r.answers)
	}
}

// addAddrs hands addresses to the race: before it starts they wait in the
// queue; once it runs they join it in dial order (RFC 8305 §3: answers
// that come late are added to the running race).
func (r *racer) addAddrs(peers []netip.AddrPort) {
	if !r.started {
		r.queue = append(r.queue, peers...)
		return
	}
	// Late answers: IPv6 (the only family that may come late after the
	// Resolution Delay, or either when one lookup was slow) goes before
	// the rest, then Health and interleaving decide.
	r.queue = r.s.order(v6First(append(slices.Clip(peers), r.queue...)), time.Now())
	// Keep the families alternating across the merge (RFC 8305 §4): when
	// the last attempt was of the family now first in line, the first
	// address of the other family goes ahead of it.
	if len(r.queue) > 1 && r.queue[0].Addr().Is4() == r.lastFamily4 {
		if j := slices.IndexFunc(r.queue, func(p netip.AddrPort) bool { return p.Addr().Is4() != r.lastFamily4 }); j > 0 {
			other := r.queue[j]
			copy(r.queue[1:j+1], r.queue[:j])
			r.queue[0] = other
		}
	}
	switch {
	case r.pending == 0:
		r.launchNext()
	case r.s.delay > 0 && r.staggerC == nil:
		// The attempts in flight are older than the stagger (it fired and
		// found nothing to start): start the newcomer when its turn comes.
		r.armStagger(max(0, r.s.delay-time.Since(r.last)))
		// Serial mode (AttemptDelay < 0): the newcomer waits for the
		// attempt in flight to fail.
	}
}

// v6First sorts peers IPv6 first, keeping the order within each family:
// RFC 6724 prefers IPv6, and interleaving starts with the first family.
func v6First(peers []netip.AddrPort) []netip.AddrPort {
	slices.SortStableFunc(peers, func(a, b netip.AddrPort) int {
		switch {
		case a.Addr().Is6() == b.Addr().Is6():
			return 0
		case a.Addr().Is6():
			return -1
		}
		return 1
	})
	return peers
}

// run resolves (unless the address was a literal) and races; it returns
// only after every lookup and attempt it started has ended.
func (r *racer) run() (net.Conn, error) {
	defer r.stop()
	if r.lookups == 0 {
		r.begin()
	}
	for !r.won && (r.pending > 0 || r.lookups > 0) {
		select {
		case a := <-r.answers:
			r.onAnswer(a)
		case res := <-r.results:
			r.onResult(res)
		case <-r.holdC:
			r.holdC = nil
			r.begin()
		case <-r.staggerC:
			r.staggerC = nil
			r.onStagger()
		}
	}
	r.stopTimers()

	if !r.won {
		err := r.lose()
		r.drain()
		return nil, err
	}
	// Stop the others and wait for every one of them: no goroutine outlives
	// the dial, and a loser that completed anyway is closed here.
	r.stop()
	var losers []attemptResult
	for ; r.pending > 0; r.pending-- {
		res := <-r.results
		if res.conn != nil {
			// It completed before it saw the cancel: a healthy peer (its
			// success is already recorded), just not the first.
			res.conn.Close()
			continue
		}
		if res.lost() {
			losers = append(losers, res)
		} else {
			r.failed = append(r.failed, res)
		}
	}
	r.drain()
	r.s.settleLosers(r.ctx, &r.winner, r.failed, losers)
	return r.winner.conn, nil
}

// onAnswer takes one family's lookup result.
func (r *racer) onAnswer(a answer) {
	r.lookups--
	var peers []netip.AddrPort
	if a.err == nil {
		peers = r.s.usable(a.ips, &r.seen)
	} else {
		r.dnsErrs = append(r.dnsErrs, a.err)
	}
	if len(peers) > 0 {
		r.addAddrs(peers)
	}
	if r.started {
		return
	}
	switch {
	case len(r.queue) == 0:
		// Nothing yet: wait for the other lookup, if any.
	case a.v6 && len(peers) > 0, r.lookups == 0:
		// IPv6 answered, or every lookup has: race now.
		r.begin()
	case r.holdC == nil:
		// IPv4 answered first: give IPv6 the Resolution Delay.
		r.holdC = r.arm(resolutionDelay)
	}
}

// begin ends the resolution phase and starts racing the queued addresses.
func (r *racer) begin() {
	r.started = true
	if r.holdC != nil {
		r.timer.Stop()
		r.holdC = nil
	}
	if len(r.queue) > 1 {
		r.queue = r.s.order(v6First(r.queue), time.Now())
	}
	r.endDNS(nil)
	r.launchNext()
}

// endDNS records the DNS phase, once: when the race starts, or with the
// error when resolution gave nothing.
func (r *racer) endDNS(err *Error) {
	if r.dnsSpan == nil {
		return
	}
	outcome := mOK
	if err != nil {
		outcome = outcomeOf(err)
	}
	r.s.tel.recordDuration(r.ctx, mPhaseDNS, outcome, time.Since(r.dnsStart).Seconds())
	if r.dnsSpan.IsRecording() {
		r.dnsSpan.SetAttributes(otelx.KeyAddresses.Int(r.seen.n))
	}
	if err != nil {
		endSpan(r.dnsSpan, outcome, err)
	} else {
		endSpan(r.dnsSpan, mOK, nil)
		if r.s.traced {
			// r.ctx holds the dial span only when it records: else the
			// span there is the caller's own.
			trace.SpanFromContext(r.ctx).SetAttributes(otelx.KeyAddresses.Int(r.seen.n))
		}
	}
	r.dnsSpan = nil
}

// onResult takes one attempt's end.
func (r *racer) onResult(res attemptResult) {
	r.pending--
	r.land(res.peer, res.err != nil && !res.lost())
	if res.err == nil {
		r.winner, r.won = res, true
		return
	}
	r.failed = append(r.failed, res)
	// A failure starts the next address at once (RFC 8305 §5), and the
	// stagger restarts from it. The failed address is not tried again: a
	// repeat is for a pending attempt; after a failure it is a retry, which
	// retry.Policy owns.
	if len(r.queue) > 0 && r.launchNext() && r.s.delay > 0 {
		r.armStagger(r.s.delay)
	}
}

// onStagger runs when the attempts in flight have not completed after
// AttemptDelay. Results that arrived first are taken first: an attempt
// that failed just before the timer fired is not pending, and its address
// gets no repeat.
func (r *racer) onStagger() {
	launched := r.launched
	for !r.won {
		select {
		case res := <-r.results:
			r.onResult(res)
			continue
		default:
		}
		break
	}
	if r.won || r.launched != launched || !r.canStart() {
		return // a failure already started the next attempt and the stagger anew
	}
	peer, repeat, ok := r.next()
	if !ok {
		return
	}
	if repeat {
		r.launch(peer, true)
	} else {
		r.queue = r.queue[1:]
		r.launch(peer, false)
	}
	r.armIfMore()
}

// next is the race's one decision: the attempt to start when the stagger
// says another may start. In order: the next address not attempted yet;
// else, in staggered mode, the first address in launch order whose
// attempts are all still pending and fewer than MaxAttemptsPerAddress (a
// lone address races itself: incident 01's load balancer hangs some of
// its connections); else none.
//
//	address state            | gets an attempt
//	-------------------------+---------------------------------------------
//	queued (never attempted) | first, in dial order
//	pending, n < max         | a repeat (AttemptDelay > 0 only)
//	pending, n == max        | no
//	failed (any attempt)     | never again in this dial
func (r *racer) next() (peer netip.AddrPort, repeat, ok bool) {
	if len(r.queue) > 0 {
		return r.queue[0], false, true
	}
	if r.s.delay <= 0 {
		return peer, false, false
	}
	for _, f := range r.flying {
		if !f.failed && f.n > 0 && f.n < r.s.maxPer {
			return f.peer, true, true
		}
	}
	return peer, false, false
}

// launchNext starts the first queued address, if the dial may still start
// attempts. It reports whether it did.
func (r *racer) launchNext() bool {
	if len(r.queue) == 0 || !r.canStart() {
		return false
	}
	peer := r.queue[0]
	r.queue = r.queue[1:]
	r.launch(peer, false)
	if r.staggerC == nil {
		r.armIfMore()
	}
	return true
}

// armIfMore arms the stagger when, in staggered mode, there is anything
// left to start.
func (r *racer) armIfMore() {
	if _, _, more := r.next(); more && r.s.delay > 0 {
		r.armStagger(r.s.delay)
	}
}

func (r *racer) launch(peer netip.AddrPort, repeat bool) {
	i := r.launched
	r.launched++
	r.pending++
	r.last = time.Now()
	r.lastFamily4 = peer.Addr().Is4()
	if k := r.flight(peer); k >= 0 {
		r.flying[k].n++
	} else {
		r.flying = append(r.flying, flight{peer: peer, n: 1})
	}
	s, results := r.s, r.results
	ctx, stop := s.attemptCtx(r.ctx)
	r.stops = append(r.stops, stop)
	go func() {
		growStack(0)
		results <- s.attempt(ctx, i, peer, repeat)
	}()
}

// growStack gives the attempt's new goroutine, at once and while its stack
// is nearly empty, the stack that a connect needs: otherwise the runtime
// grows it two or three times deep inside net's dial, copying every frame
// each time (7% of a loopback dial's CPU in the profile).
//
//go:noinline
func growStack(i int) byte {
	var buf [6 << 10]byte
	buf[i] = 1
	return buf[(i+1)%len(buf)]
}

func (r *racer) flight(peer netip.AddrPort) int {
	for k := range r.flying {
		if r.flying[k].peer == peer {
			return k
		}
	}
	return -1
}

// land takes an ended attempt off flying; a failed one marks its address.
func (r *racer) land(peer netip.AddrPort, failed bool) {
	if k := r.flight(peer); k >= 0 {
		r.flying[k].n--
		r.flying[k].failed = r.flying[k].failed || failed
	}
}

func (r *racer) canStart() bool {
	return r.ctx.Err() == nil && (r.s.deadline.IsZero() || time.Now().Before(r.s.deadline))
}

func (r *racer) armStagger(d time.Duration) {
	r.staggerC = r.arm(d)
}

// arm sets the race's timer to fire after d and returns its channel. (A
// Stop or Reset leaves no stale tick in the channel: Go 1.23 timers.)
func (r *racer) arm(d time.Duration) <-chan time.Time {
	if r.timer == nil {
		r.timer = time.NewTimer(d)
	} else {
		r.timer.Reset(d)
	}
	return r.timer.C
}

func (r *racer) stopTimers() {
	if r.timer != nil {
		r.timer.Stop()
	}
}

// drain ends the lookups still running and waits for them.
func (r *racer) drain() {
	r.stop()
	for ; r.lookups > 0; r.lookups-- {
		<-r.answers
	}
}

// lose builds the error of a dial that no attempt won.
func (r *racer) lose() *Error {
	if len(r.failed) > 0 {
		return r.s.allFailed(r.ctx, r.failed)
	}
	// No attempt was made: resolution gave nothing, or the caller or the
	// dial's Timeout ended it first.
	var err error = ErrNoAddresses
	if len(r.dnsErrs) > 0 {
		err = dnsError(r.dnsErrs)
	}
	if len(r.queue) > 0 {
		// Addresses, but the caller or the Timeout ended the dial before
		// any attempt could start.
		if r.ctx.Err() == nil {
			// The dial's own Timeout ran out between the answer and the
			// attempt.
			return &Error{Phase: PhaseConnect, Network: r.s.network, Addr: r.s.addr, Peer: r.queue[0],
				Err: &timeoutError{cause: errDialTimeout}, health: r.s.health}
		}
		return r.s.fail(r.ctx, PhaseConnect, r.queue[0], r.ctx.Err())
	}
	ctx := r.rctx
	if ctx == nil {
		ctx = r.ctx
	}
	e := r.s.fail(ctx, PhaseDNS, netip.AddrPort{}, err)
	r.endDNS(e)
	return e
}

// settleLosers accounts for a race that was won: an address that failed, or
// that started before the winner and was still pending when it won (a
// stall: it was overtaken), is a failure the race masked. It is counted in
// the masked-failures metric, by phase and peer, and a stall is a Health
// event. A racer started after the winner that merely lost is neither.
func (s *dialState) settleLosers(ctx context.Context, winner *attemptResult, failed, losers []attemptResult) {
	for i := range failed {
		r := &failed[i]
		if healthBlames(r.err) {
			s.recordMasked(ctx, r.err.Phase, r.peer, r.err.ErrorType())
		}
	}
	for i := range losers {
		r := &losers[i]
		stalled := r.start.Before(winner.start)
		if stalled {
			ev := EventConnectStall
			if r.err.Phase == PhaseTLS {
				ev = EventTLSStall
			}
			s.tel.recordAttempt(ctx, mLost, r.repeat)
			// Health first: the masked count labels peers Health knows.
			s.health.record(r.peer, ev, 0, time.Now())
			s.recordMasked(ctx, r.err.Phase, r.peer, r.err.Phase.String()+"_stall")
			continue
		}
		s.tel.recordAttempt(ctx, mLost, r.repeat)
	}
}

// allFailed builds the error of a race that no address won. With one
// failed attempt it is that attempt's *Error. Otherwise the top-level
// *Error takes the Phase and Peer of the attempt that got furthest and its
// Err holds every attempt. A caller's cancel is reported as such, whatever
// the attempts did.
func (s *dialState) allFailed(ctx context.Context, failed []attemptResult) *Error {
	if len(failed) == 1 && ctx.Err() == nil {
		return failed[0].err
	}
	attempts := make([]*Error, len(failed))
	var primary *Error
	for i := range failed {
		attempts[i] = failed[i].err
		if primary == nil || attempts[i].Phase > primary.Phase {
			primary = attempts[i]
		}
	}
	cause := primary.Err
	if ctx.Err() != nil {
		// The caller cancelled or their deadline passed: that, not any
		// address, is why the dial failed.
		cause = s.fail(ctx, primary.Phase, primary.Peer, ctx.Err()).Err
	}
	if len(attempts) == 1 && ctx.Err() != nil {
		return &Error{Phase: primary.Phase, Network: s.network, Addr: s.addr, Peer: primary.Peer, Err: cause, health: s.health}
	}
	return &Error{Phase: primary.Phase, Network: s.network, Addr: s.addr, Peer: primary.Peer,
		Err: newAttemptsError(cause, primary, attempts), health: s.health}
}
