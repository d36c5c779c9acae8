package pool

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/internal/upstream"
)

// Acquire returns a connection for the caller's exclusive use until it calls
// [Conn.Release] (to give it back) or [Conn.Close] (to destroy it).
//
// An idle connection is reused when there is one (a recently released one
// first, after dropping any that expired or, when idle longer than
// CheckAfterIdle, fail the liveness probe). Otherwise the caller joins a FIFO
// queue and, when the cap allows, the pool starts a dial for it; whichever
// connection comes first — a released one or a new one — goes to the oldest
// waiter. Acquire gives up when ctx ends or, if ctx has no deadline, after
// AcquireTimeout; the error then matches ctx.Err() (context.DeadlineExceeded
// for the AcquireTimeout). A failed dial is returned to one waiter, the
// oldest, instead of leaving all of them to time out. While the upstream is
// known down (see Config.DisableFailFast), an Acquire that finds no live
// idle conn and has no dial in flight for it fails at once with an
// [*UnavailableError], unless ctx comes from [WaitForReady]. After Close it
// returns [ErrClosed].
func (p *Pool) Acquire(ctx context.Context) (*Conn, error) {
	if !p.made() {
		return nil, errNotNew
	}
	if ctx == nil {
		return nil, errNilContext
	}
	if done := ctx.Done(); done != nil {
		select {
		case <-done:
			return nil, acquireCtxErr(ctx)
		default:
		}
	}
	now := nanotime()
	// The fast path: an idle conn and nobody waiting costs one shard lock
	// and no pool-wide one, no allocation and no span
	// (BenchmarkAcquireRelease: 0 allocs; the puddle comparison in
	// examples/interop/pool_puddle_test.go).
	for !p.closedFast.Load() {
		if p.nwait.Load() > 0 {
			return p.acquireSlow(ctx, now) // FIFO: behind those already waiting
		}
		c := p.popIdle(true)
		if c == nil {
			return p.acquireSlow(ctx, now)
		}
		if p.vet(c, now) {
			if c.state.Load() == stateClosed { // Close ran since the pop
				break
			}
			return c, nil
		}
	}
	p.mu.Lock()
	p.st.AcquireFailures++
	p.mu.Unlock()
	return nil, ErrClosed
}

// popIdle takes the top conn of the first shard, in order, that is not
// empty, or returns nil when all are. Always starting from the first shard
// keeps the stacks LIFO as a whole: a lightly used pool keeps reusing the
// same few conns and lets the others age out (MaxIdleTime), while concurrent
// callers spill over to the next shards. The first pass skips shards whose
// lock is taken (another P is there: try the next instead of parking behind
// it, which BenchmarkAcquireReleaseParallel/g16 pays for); the second locks
// each in turn, so nil always means every shard was seen empty. forAcquire
// counts the conn as handed out by Acquire.
func (p *Pool) popIdle(forAcquire bool) *Conn {
	for pass := 0; pass < 2; pass++ {
		for k := uint32(0); k <= p.shardMask; k++ {
			sh := &p.shards[k]
			if pass == 0 {
				if !sh.mu.TryLock() {
					continue
				}
			} else {
				sh.mu.Lock()
			}
			if n := len(sh.idle); n > 0 {
				c := sh.idle[n-1]
				sh.idle[n-1] = nil
				sh.idle = sh.idle[:n-1]
				c.state.Store(stateInUse)
				if forAcquire {
					sh.pops++
				}
				sh.mu.Unlock()
				return c
			}
			sh.mu.Unlock()
		}
	}
	return nil
}

// vet decides whether c, just popped from the idle stacks, can be handed
// out at now (idleReason; its probe runs without any lock: the conn is off
// the stacks, counted as in use, so the cap holds). A conn that fails is
// evicted.
func (p *Pool) vet(c *Conn, now int64) bool {
	r := p.idleReason(c, now)
	if r == reasonNone {
		return true
	}
	p.mu.Lock()
	p.rejects++
	if c.state.Load() == stateClosed { // Close ran meanwhile and closed it
		p.mu.Unlock()
		return false
	}
	p.destroyLocked(c, r)
	p.mu.Unlock()
	p.tel.evicted(r)
	_ = closeConn(c.Conn)
	p.closedConns(1)
	return false
}

// acquireSlow queues the caller, starts a dial when the cap and the gate
// allow, and waits. A waiter that the gate bounces (its upstream is known
// down and no dial in flight is for it) fails fast, or, when its context
// waits for ready, waits at the gate and queues again when the upstream is
// back or its probe is due. It is the only part of Acquire that makes a
// span.
func (p *Pool) acquireSlow(ctx context.Context, start int64) (*Conn, error) {
	ctx, span := p.tel.tracer.Start(ctx, "pool.acquire",
		trace.WithTimestamp(time.Now().Add(-time.Duration(nanotime()-start))),
		trace.WithSpanKind(trace.SpanKindInternal), p.tel.spanAttrs)
	defer span.End()

	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok && p.s.acquireTimeout > 0 {
		// A timer per wait, stopped on return: only waiting acquires pay it.
		t := time.NewTimer(p.s.acquireTimeout)
		defer t.Stop()
		timeout = t.C
	}
	w := &waiter{ch: make(chan acquireResult, 1)}
	p.mu.Lock()
	if p.closed {
		p.st.AcquireFailures++
		p.mu.Unlock()
		p.tel.endAcquire(span, ErrClosed)
		return nil, ErrClosed
	}
	p.seq++
	w.seq = p.seq
	if p.gate != nil {
		w.downs = p.gate.Downs()
	}
	// Publish the waiter, then look at the stacks again. A Release that
	// pushed before this look is seen here; one that pushes after it sees
	// nwait > 0 and hands the conn over itself (handOffIdle): sequentially
	// consistent atomics on both sides, so no wakeup is lost. What is found
	// goes to the oldest waiter, which is us only if nobody came first.
	p.waiters.pushBack(w)
	p.nwait.Store(int64(p.waiters.n))
	stale := p.handOffLocked(nanotime())
	dialed := false
	if w.queued {
		dialed = p.dialForWaitersLocked(ctx)
	}
	p.mu.Unlock()
	p.closeEvicted(stale)
	p.tel.acquireQueued(span, dialed)

	var r acquireResult
	for {
		select {
		case r = <-w.ch:
		case <-ctx.Done():
			r = p.abandon(w, acquireCtxErr(ctx))
		case <-timeout:
			r = p.abandon(w, p.acquireTimeoutErr())
		}
		if !(r.bounced || r.dialFailed) || p.gate == nil || !upstream.WaitsForReady(ctx) {
			break
		}
		// Waits for ready: through the upstream's outage and failed probes.
		var final bool
		if r, final = p.park(ctx, w, start); final {
			break
		}
	}
	waited := time.Duration(nanotime() - start)
	p.mu.Lock()
	p.st.AcquireWaitCount++
	p.st.AcquireWaitTime += waited
	switch {
	case r.c != nil:
		p.st.AcquireCount++
	case r.bounced:
		p.st.AcquireFailures++
		p.st.Unavailable++
	default:
		p.st.AcquireFailures++
	}
	p.mu.Unlock()
	p.tel.acquireWaited(waited)
	if r.bounced {
		p.tel.throttled()
		p.tel.notAttempted(span)
	}
	p.tel.endAcquire(span, r.err)
	return r.c, r.err
}

func (p *Pool) acquireTimeoutErr() error {
	return fmt.Errorf("pool: acquire: no connection within AcquireTimeout (%v): %w",
		p.s.acquireTimeout, context.DeadlineExceeded)
}

// park waits at the gate, within ctx (AcquireTimeout from start when ctx
// has no deadline) and the pool's life, for the upstream to be back or for
// w's turn to probe it, w queued all the while (parked: never bounced) so
// that a conn released meanwhile, or a probe's, is still handed to it. It
// returns with w queued again as a plain waiter, its dial started when it
// is the probe (final false: wait for its result), or with w's final
// result. A failed dial handed to w does not end it: it parks again.
func (p *Pool) park(ctx context.Context, w *waiter, start int64) (r acquireResult, final bool) {
	for {
		gctx, cancel := p.readyCtx(ctx, start)
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			cancel()
			return acquireResult{err: ErrClosed}, true
		}
		w.parked, w.unpark = true, cancel
		p.waiters.pushBack(w)
		p.nwait.Store(int64(p.waiters.n))
		stale := p.handOffLocked(nanotime())
		served := !w.queued
		p.mu.Unlock()
		p.closeEvicted(stale)

		var pass upstream.Pass
		var err error
		if !served { // (served: asking the gate could take a probe's turn for nothing)
			pass, err = p.gate.Enter(gctx, upstream.Options{WaitForReady: true})
		}

		p.mu.Lock()
		w.parked, w.unpark = false, nil
		if !w.queued {
			// Handed a result meanwhile (which ended the wait at the gate):
			// a conn, a dial's failure, ErrClosed.
			p.mu.Unlock()
			cancel()
			if r = <-w.ch; r.dialFailed {
				continue
			}
			return r, true
		}
		if err != nil {
			p.waiters.remove(w)
			p.nwait.Store(int64(p.waiters.n))
			p.mu.Unlock()
			err = p.readyErr(ctx, gctx, err)
			cancel()
			return acquireResult{err: err}, true
		}
		w.probe = 0
		if pass.Probe() && p.probesOutLocked() < p.waiters.n && p.openLocked() < p.s.maxConns {
			// The probe the gate let us be: w stays queued for it
			// while it is out (its result goes to the oldest waiter;
			// once it ends, w is a waiter like the others).
			p.startDialLocked(ctx, true)
			w.probe = p.seq
		}
		p.dialForWaitersLocked(ctx)
		p.mu.Unlock()
		cancel()
		return acquireResult{}, false
	}
}

// readyCtx is the context of a wait at the gate: ctx's, ended at
// AcquireTimeout from start when ctx has no deadline, and by Close.
func (p *Pool) readyCtx(ctx context.Context, start int64) (context.Context, context.CancelFunc) {
	gctx, cancel := context.WithCancel(ctx)
	if _, ok := ctx.Deadline(); !ok && p.s.acquireTimeout > 0 {
		left := p.s.acquireTimeout - time.Duration(nanotime()-start)
		var stop context.CancelFunc
		gctx, stop = context.WithTimeoutCause(gctx, left, errWaitReadyTimeout)
		outer := cancel
		cancel = func() { stop(); outer() }
	}
	unhook := context.AfterFunc(p.closeCtx, cancel)
	end := cancel
	return gctx, func() { unhook(); end() }
}

// readyErr is the error of a wait at the gate that ended with err.
func (p *Pool) readyErr(ctx, gctx context.Context, err error) error {
	switch {
	case ctx.Err() != nil:
		return acquireCtxErr(ctx)
	case p.closeCtx.Err() != nil:
		return ErrClosed
	case context.Cause(gctx) == errWaitReadyTimeout:
		return p.acquireTimeoutErr()
	}
	return err
}

// errWaitReadyTimeout ends a wait for ready at AcquireTimeout.
var errWaitReadyTimeout = errors.New("pool: AcquireTimeout")

// abandon takes w out of the queue after its wait ended. If a conn was handed
// to w concurrently, it goes back to the pool (to the next waiter or idle).
func (p *Pool) abandon(w *waiter, err error) acquireResult {
	p.mu.Lock()
	if w.queued {
		p.waiters.remove(w)
		p.nwait.Store(int64(p.waiters.n))
		p.mu.Unlock()
		return acquireResult{err: err}
	}
	p.mu.Unlock()
	// Delivered under p.mu before we took it: the buffered value is there.
	r := <-w.ch
	if r.c != nil {
		r.c.Release()
	}
	return acquireResult{err: err}
}

func acquireCtxErr(ctx context.Context) error {
	err, cause := ctx.Err(), context.Cause(ctx)
	if cause != nil && cause != err {
		return fmt.Errorf("pool: acquire: %w (%w)", err, cause)
	}
	return fmt.Errorf("pool: acquire: %w", err)
}

// deliverLocked hands c (in use) to the oldest waiter, if there is one.
func (p *Pool) deliverLocked(c *Conn) bool {
	w := p.waiters.popFront()
	if w == nil {
		return false
	}
	p.nwait.Store(int64(p.waiters.n))
	c.state.Store(stateInUse)
	w.send(acquireResult{c: c})
	return true
}
