package pool

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"slices"
	"time"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// dialForWaitersLocked starts dials while waiters outnumber dials in flight
// and the cap allows, each let through by the gate: while the upstream is
// known down only a due probe dials, and the waiters that no probe in
// flight is for leave the queue (bounceLocked: they fail fast or wait for
// ready at the gate). It reports whether it started any.
func (p *Pool) dialForWaitersLocked(ctx context.Context) bool {
	started := false
	for !p.closed && p.dialing < p.waiters.n {
		if p.openLocked() >= p.s.maxConns {
			break // no room to dial: the waiters wait for a release or a place
		}
		probe, err := p.admitDialLocked()
		if err != nil {
			break // down: bounced below
		}
		p.startDialLocked(ctx, probe)
		started = true
	}
	// Asked even when the dials in flight outnumber the waiters: those
	// dials may be the ones that show the upstream down (pending far
	// beyond its usual time: the gate's look, State, finds them), and
	// once it is down a dial that is not a probe is no dial for a waiter
	// (it started before the upstream was known down, most likely for a
	// caller who gave up on it; in a black hole it hangs to its timeout).
	// (A probe in flight is for the waiters that were there when it
	// started, not for any waiter: probesOutLocked.)
	if !p.closed && (p.waiters.n > len(p.probes) || p.waiters.n > p.probesOutLocked()) && p.downLocked() {
		p.bounceLocked()
	}
	return started
}

// startDialLocked counts a dial against the cap and starts its goroutine.
// The dial keeps ctx's values (trace parent) but not its cancellation, has
// its own deadline and is canceled by Close, which waits for it (p.wg).
// Close sets p.closed under p.mu before waiting, so no Add races its Wait.
// probe says the gate admitted it as the probe of an upstream known down.
func (p *Pool) startDialLocked(ctx context.Context, probe bool) {
	p.dialing++
	var probeSeq uint64 // 0: not a probe
	if probe {
		p.seq++
		probeSeq = p.seq
		p.probes = append(p.probes, probeSeq)
	}
	p.wg.Add(1)
	go p.dialOne(context.WithoutCancel(ctx), p.gen.Load(), probeSeq)
}

func (p *Pool) dialOne(parent context.Context, gen uint64, probeSeq uint64) {
	probe := probeSeq != 0
	defer p.wg.Done()
	if p.limiter != nil {
		// The token bucket is what keeps a flap from becoming a storm
		// (incidents 03 and 05): every dial, whoever triggered it, waits here.
		switch p.waitToken(probe) {
		case errClosedWait:
			p.dialDone(nil, ErrClosed, gen, probeSeq)
			return
		case errDownWait:
			p.dropDial()
			return
		}
	}
	ctx, cancel := context.WithTimeoutCause(parent, p.s.dialTimeout, errDialTimeout)
	stop := context.AfterFunc(p.closeCtx, cancel)
	gd := p.gateDialStart(probe)
	nc, err := p.dial(ctx)
	if err == nil && nc == nil {
		err = errNilConn
	}
	if err != nil {
		if cause := context.Cause(ctx); cause != nil && !errors.Is(err, cause) {
			err = fmt.Errorf("%w (%w)", err, cause)
		}
		err = fmt.Errorf("pool: dial: %w", err)
	}
	stop()
	cancel()
	gd.end(p, err)
	if err != nil && p.log != nil && p.closeCtx.Err() == nil {
		et := otelx.ErrorTypeOf(err)
		p.log.Failure(parent, "pool.dial."+et+":"+gateLabel(p.name), "lifeline: pool dial failed", err,
			slog.String("pool", p.name), slog.String("error.type", et))
	}
	p.tel.dialed(err)
	p.dialDone(nc, err, gen, probeSeq)
}

// The ends of a wait for a DialRate token other than the token.
var (
	errClosedWait = errors.New("pool closed")
	errDownWait   = errors.New("upstream down")
)

// waitToken waits for the dial's DialRate token, or for Close
// (errClosedWait). A dial that is not a probe of an upstream known down
// also ends its wait when the upstream goes down, and does not go when it
// was down by the time its token came (errDownWait): the dials queued
// behind DialRate when an upstream fails would otherwise go to it one after
// another long after it is known down, each holding up the Acquire it is
// for. Its token goes back to the bucket for the probes.
func (p *Pool) waitToken(probe bool) error {
	var down <-chan struct{}
	if !probe && p.gate != nil {
		down = p.downSig.wait()
	}
	r := p.limiter.Reserve() // a dial is 1 token, within any burst
	if d := r.Delay(); d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-p.closeCtx.Done():
			r.Cancel()
			return errClosedWait
		case <-down:
			r.Cancel()
			return errDownWait
		}
	}
	select {
	case <-p.closeCtx.Done():
		return errClosedWait
	case <-down:
		return errDownWait
	default:
		return nil
	}
}

// dropDial ends a dial that did not go (waitToken: the upstream went
// down): the waiters are seen again as if it had never started, so those
// no dial is for fail fast (or wait at the gate for ready), and a probe
// goes when one is due.
func (p *Pool) dropDial() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.dialing--
	if !p.closed {
		p.dialForWaitersLocked(context.Background())
	}
}

// dialDone accounts for a finished dial: a new conn goes to the oldest waiter
// or the idle stacks; an error goes to the oldest waiter only.
func (p *Pool) dialDone(nc net.Conn, err error, gen uint64, probeSeq uint64) {
	now := nanotime()
	p.mu.Lock()
	p.dialing--
	if probeSeq != 0 {
		if i := slices.Index(p.probes, probeSeq); i >= 0 {
			p.probes = slices.Delete(p.probes, i, i+1)
		}
		// The waiter that started it, if its result goes to an older
		// one, is no longer let through: bounced while the upstream is
		// down (to the gate, where it probes again when due), not
		// left waiting for a probe that is gone.
		for w := p.waiters.head; w != nil; w = w.next {
			if w.probe == probeSeq {
				w.probe = 0
			}
		}
	}
	if err != nil {
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.st.DialFailures++
		if w := p.waiters.popFront(); w != nil {
			p.nwait.Store(int64(p.waiters.n))
			w.send(acquireResult{err: err, dialFailed: true})
		}
		// The others keep waiting; their dials go on at DialRate.
		p.dialForWaitersLocked(context.Background())
		p.mu.Unlock()
		return
	}
	p.st.Dialed++
	if p.closed || gen != p.gen.Load() {
		reset := !p.closed
		if reset {
			p.st.EvictedReset++
			p.closing++ // open until closed, as destroyLocked's
		}
		p.mu.Unlock()
		_ = closeConn(nc)
		if reset {
			p.tel.evicted(reasonReset)
			p.closedConns(1)
		}
		return
	}
	c := &Conn{Conn: nc, p: p, gen: gen, lastUsed: now, home: p.nextHome & p.shardMask}
	c.state.Store(stateReleasing) // on its way to a waiter or the stacks
	p.nextHome++
	if p.s.maxLifetime > 0 {
		life := p.s.maxLifetime
		if j := int64(p.s.jitter); j > 0 {
			life += time.Duration(rand.Int64N(2*j+1) - j)
		}
		c.expires = now + int64(life)
	}
	c.allIdx = len(p.all)
	p.all = append(p.all, c)
	if p.deliverLocked(c) {
		// The conn went to the oldest waiter, who may not be the one
		// its dial was for (a probe started by a later Acquire): the
		// waiters left that no dial is for now get theirs (the
		// upstream answered), or fail fast if it is down again.
		p.dialForWaitersLocked(context.Background())
		p.mu.Unlock()
		return
	}
	if p.pushIdle(c) {
		p.mu.Unlock()
		return
	}
	p.destroyLocked(c, reasonExcess)
	p.mu.Unlock()
	p.tel.evicted(reasonExcess)
	_ = closeConn(nc)
	p.closedConns(1)
}
