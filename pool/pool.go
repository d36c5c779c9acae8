package pool

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"
	"golang.org/x/time/rate"
)

// epoch anchors nanotime. time.Since on a monotonic time reads one clock
// (time.Now reads two), which matters on the Acquire/Release fast path; in a
// testing/synctest bubble it follows the bubble's fake clock.
var epoch = time.Now()

// nanotime is monotonic nanoseconds since epoch.
func nanotime() int64 { return int64(time.Since(epoch)) }

// ErrClosed is returned by [Pool.Acquire] once [Pool.Close] has been called,
// including to callers that were waiting when it was.
var ErrClosed = errors.New("pool: closed")

// errNotNew is returned by Acquire on a nil *Pool or a zero Pool that did
// not come from New.
var errNotNew = errors.New("pool: Acquire on a nil or zero Pool; create pools with pool.New")

// errNilContext is returned by Acquire when ctx is nil.
var errNilContext = errors.New("pool: Acquire with a nil Context")

// errDialTimeout is the cause of a pool dial's own deadline (Config.DialTimeout).
var errDialTimeout = fmt.Errorf("pool: dial timeout: %w", context.DeadlineExceeded)

// errNilConn reports a Config.Dial that returned neither a conn nor an error.
var errNilConn = errors.New("pool: Config.Dial returned a nil net.Conn and a nil error")

// Pool is a bounded pool of net.Conn for raw-protocol clients (databases,
// caches, custom TCP). It never holds more than MaxConns connections open,
// counting dials in flight; it queues callers in FIFO order when all are
// busy; it opens new connections at no more than DialRate per second; and it
// never hands out a connection it knows or can cheaply tell is dead.
//
// Create one with [New]. A nil or zero Pool (not made by New) is not
// usable: its Acquire returns an error, and Stats, Reset and Close do nothing. A Pool is safe for
// concurrent use. It owns the connections it dials: they are closed when
// evicted, when destroyed with [Conn.Close], or at the latest by
// [Pool.Close], which also ends the pool's goroutines.
type Pool struct {
	s       settings
	dial    func(context.Context) (net.Conn, error)
	limiter *rate.Limiter // nil: unlimited
	tel     telemetry

	closeCtx    context.Context // canceled by Close: ends dials, rate waits, the sweeper
	closeCancel context.CancelFunc
	closeDone   chan struct{} // closed when the first Close has finished
	wg          sync.WaitGroup
	kick        chan struct{} // wakes the sweeper to top up MinIdleConns now

	// Idle connections live in shards, each a LIFO stack under its own
	// mutex, so that a warm Acquire or Release touches one shard lock and no
	// pool-wide one: with a single lock, goroutines outnumbering the Ps park
	// on it (sync.Mutex does not spin with a busy run queue), and a park/wake
	// pair costs more than the work. An Acquire takes the most recently
	// released conn of the first shard it can lock at once; a Release goes
	// back to the conn's home shard. Everything else — the cap, the waiters, dials,
	// eviction — is under mu. Lock order: mu, then a shard's mu.
	shards    []shard
	shardMask uint32

	// Mirrors of state under mu, written under mu, read by the fast paths.
	closedFast atomic.Bool
	gen        atomic.Uint64 // bumped by Reset; a conn of an older generation is retired
	nwait      atomic.Int64  // waiters.n

	// mu guards everything below. It is never held across a dial, a conn
	// Close or a telemetry call, nor across a liveness probe except in
	// handOffLocked (idle conns and waiters at once is a transient) and in
	// the periodic sweep (one non-blocking recv per idle conn).
	mu       sync.Mutex
	closed   bool
	all      []*Conn // every dialed, not yet destroyed conn; Conn.allIdx indexes it
	dialing  int     // dials started and not finished, rate-limiter waits included
	nextHome uint32
	waiters  waitList
	st       Stats   // counters; gauges are computed in Stats
	rejects  int64   // conns popped by Acquire and then evicted (stale or dead)
	sweep    []*Conn // scratch for the sweeper, reused
}

// shard is one LIFO stack of idle conns. It is padded so that shards used by
// different Ps do not share a cache line.
type shard struct {
	mu   sync.Mutex
	idle []*Conn
	max  int   // this shard's part of MaxIdleConns
	pops int64 // conns handed out by Acquire from this shard, under mu
	_    [64]byte
}

// numShards is the largest power of two ≤ min(maxIdle, 8): enough that two
// Ps rarely meet on one lock, few enough that a nearly empty pool is
// scanned quickly.
func numShards(maxIdle int) int {
	n := 1
	for n*2 <= maxIdle && n < 8 {
		n *= 2
	}
	return n
}

// New validates cfg and returns a running pool. A bad Config gives an error
// naming the field. The pool starts a background goroutine when it sweeps
// (HealthCheckPeriod >= 0) or keeps MinIdleConns warm; [Pool.Close] ends it.
func New(cfg Config) (*Pool, error) {
	s, err := cfg.resolve()
	if err != nil {
		return nil, err
	}
	p := &Pool{
		s:         s,
		dial:      cfg.Dial,
		closeDone: make(chan struct{}),
		kick:      make(chan struct{}, 1),
		all:       make([]*Conn, 0, s.maxConns),
	}
	n := numShards(s.maxIdle)
	p.shards = make([]shard, n)
	p.shardMask = uint32(n - 1)
	for i := range p.shards {
		sh := &p.shards[i]
		sh.max = s.maxIdle / n
		if i < s.maxIdle%n {
			sh.max++
		}
		sh.idle = make([]*Conn, 0, sh.max)
	}
	if !math.IsInf(s.dialRate, 1) {
		p.limiter = rate.NewLimiter(rate.Limit(s.dialRate), s.dialBurst)
	}
	p.closeCtx, p.closeCancel = context.WithCancel(context.Background())
	if err := p.tel.init(p, &cfg); err != nil {
		p.closeCancel()
		return nil, err
	}
	if s.healthCheckPeriod > 0 || s.minIdle > 0 {
		p.wg.Add(1)
		go p.sweeper()
	}
	return p, nil
}

// made reports whether p came from New: a nil *Pool or a zero Pool gets a
// clear error from Acquire and no-ops from Stats, Reset and Close, never a
// panic.
func (p *Pool) made() bool { return p != nil && p.closeDone != nil }

// openLocked is the number of connections counted against MaxConns.
func (p *Pool) openLocked() int { return len(p.all) + p.dialing }

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
// oldest, instead of leaving all of them to time out. After Close it returns
// [ErrClosed].
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
// it); the second locks each in turn, so nil always means every shard was
// seen empty. forAcquire counts the conn as handed out by Acquire.
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

// pushIdle puts c (state releasing) on its home shard, or another with
// room, and reports whether there was room (MaxIdleConns). Like popIdle, it first skips busy
// shards, then visits each one under its lock before giving up.
func (p *Pool) pushIdle(c *Conn) bool {
	for pass := 0; pass < 2; pass++ {
		for k := uint32(0); k <= p.shardMask; k++ {
			sh := &p.shards[(c.home+k)&p.shardMask]
			if pass == 0 {
				if !sh.mu.TryLock() {
					continue
				}
			} else {
				sh.mu.Lock()
			}
			if n := len(sh.idle); n < sh.max {
				// Close may have marked c closed since it was claimed for
				// release: then it stays off the stacks.
				if c.state.CompareAndSwap(stateReleasing, stateIdle) {
					sh.idle = append(sh.idle, c)
				}
				sh.mu.Unlock()
				return true
			}
			sh.mu.Unlock()
		}
	}
	return false
}

// vet decides whether c, just popped from the idle stacks, can be handed
// out at now: an expired or stale conn is evicted, and one idle longer than
// CheckAfterIdle is probed first (a syscall, done without any lock; the conn
// is off the stacks, counted as in use, so the cap holds).
func (p *Pool) vet(c *Conn, now int64) bool {
	r := p.staleReason(c, now)
	if r == reasonNone && p.s.checkAfterIdle >= 0 && now-c.lastUsed > int64(p.s.checkAfterIdle) {
		if probe(c.Conn) != nil {
			r = reasonDead
		}
	}
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
	p.dialForWaitersLocked(context.Background())
	p.mu.Unlock()
	p.tel.evicted(r)
	_ = c.Conn.Close()
	return false
}

// acquireSlow queues the caller, starts a dial when the cap allows, and
// waits. It is the only part of Acquire that makes a span.
func (p *Pool) acquireSlow(ctx context.Context, start int64) (*Conn, error) {
	ctx, span := p.tel.tracer.Start(ctx, "pool.acquire",
		trace.WithTimestamp(time.Now().Add(-time.Duration(nanotime()-start))),
		trace.WithSpanKind(trace.SpanKindInternal), p.tel.spanAttrs)
	defer span.End()

	w := &waiter{ch: make(chan acquireResult, 1)}
	p.mu.Lock()
	if p.closed {
		p.st.AcquireFailures++
		p.mu.Unlock()
		p.tel.endAcquire(span, ErrClosed)
		return nil, ErrClosed
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

	var timeout <-chan time.Time
	if _, ok := ctx.Deadline(); !ok && p.s.acquireTimeout > 0 {
		// A timer per wait, stopped on return: only waiting acquires pay it.
		t := time.NewTimer(p.s.acquireTimeout)
		defer t.Stop()
		timeout = t.C
	}
	var r acquireResult
	select {
	case r = <-w.ch:
	case <-ctx.Done():
		r = p.abandon(w, acquireCtxErr(ctx))
	case <-timeout:
		r = p.abandon(w, fmt.Errorf("pool: acquire: no connection within AcquireTimeout (%v): %w",
			p.s.acquireTimeout, context.DeadlineExceeded))
	}
	waited := time.Duration(nanotime() - start)
	p.mu.Lock()
	p.st.AcquireWaitCount++
	p.st.AcquireWaitTime += waited
	if r.c != nil {
		p.st.AcquireCount++
	} else {
		p.st.AcquireFailures++
	}
	p.mu.Unlock()
	p.tel.acquireWaited(waited)
	p.tel.endAcquire(span, r.err)
	return r.c, r.err
}

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
	w.ch <- acquireResult{c: c}
	return true
}

// dialForWaitersLocked starts dials while waiters outnumber dials in flight
// and the cap allows. It reports whether it started any.
func (p *Pool) dialForWaitersLocked(ctx context.Context) bool {
	started := false
	for !p.closed && p.dialing < p.waiters.n && p.openLocked() < p.s.maxConns {
		p.startDialLocked(ctx)
		started = true
	}
	return started
}

// startDialLocked counts a dial against the cap and starts its goroutine.
// The dial keeps ctx's values (trace parent) but not its cancellation, has
// its own deadline and is canceled by Close, which waits for it (p.wg).
// Close sets p.closed under p.mu before waiting, so no Add races its Wait.
func (p *Pool) startDialLocked(ctx context.Context) {
	p.dialing++
	p.wg.Add(1)
	go p.dialOne(context.WithoutCancel(ctx), p.gen.Load())
}

func (p *Pool) dialOne(parent context.Context, gen uint64) {
	defer p.wg.Done()
	if p.limiter != nil {
		// The token bucket is what keeps a flap from becoming a storm
		// (incidents 03 and 05): every dial, whoever triggered it, waits here.
		if err := p.limiter.Wait(p.closeCtx); err != nil {
			p.dialDone(nil, ErrClosed, gen)
			return
		}
	}
	ctx, cancel := context.WithTimeoutCause(parent, p.s.dialTimeout, errDialTimeout)
	stop := context.AfterFunc(p.closeCtx, cancel)
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
	p.tel.dialed(err)
	p.dialDone(nc, err, gen)
}

// dialDone accounts for a finished dial: a new conn goes to the oldest waiter
// or the idle stacks; an error goes to the oldest waiter only.
func (p *Pool) dialDone(nc net.Conn, err error, gen uint64) {
	now := nanotime()
	p.mu.Lock()
	p.dialing--
	if err != nil {
		if p.closed {
			p.mu.Unlock()
			return
		}
		p.st.DialFailures++
		if w := p.waiters.popFront(); w != nil {
			p.nwait.Store(int64(p.waiters.n))
			w.ch <- acquireResult{err: err}
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
			p.dialForWaitersLocked(context.Background())
		}
		p.mu.Unlock()
		if reset {
			p.tel.evicted(reasonReset)
		}
		_ = nc.Close()
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
	if p.deliverLocked(c) || p.pushIdle(c) {
		p.mu.Unlock()
		return
	}
	p.destroyLocked(c, reasonExcess)
	p.mu.Unlock()
	p.tel.evicted(reasonExcess)
	_ = nc.Close()
}

// release is Conn.Release. The fast path — no waiter, nothing to retire —
// takes one shard lock.
func (p *Pool) release(c *Conn) {
	if !c.state.CompareAndSwap(stateInUse, stateReleasing) {
		return // not checked out: a double Release, or after Close
	}
	now := nanotime()
	r := p.retireReason(c, now)
	if r != reasonNone || p.nwait.Load() > 0 || p.closedFast.Load() {
		p.releaseSlow(c, now, r)
		return
	}
	c.lastUsed = now
	if !p.pushIdle(c) {
		p.releaseSlow(c, now, reasonExcess)
		return
	}
	if p.nwait.Load() > 0 {
		// A waiter queued after our first look and may have missed c.
		p.handOffIdle()
	}
}

// releaseSlow gives c (state releasing) to the oldest waiter, to the idle
// stacks, or destroys it for reason r.
func (p *Pool) releaseSlow(c *Conn, now int64, r reason) {
	p.mu.Lock()
	if c.state.Load() == stateClosed { // Close ran meanwhile
		p.mu.Unlock()
		return
	}
	if r == reasonNone {
		c.lastUsed = now
		if p.deliverLocked(c) || p.pushIdle(c) {
			p.mu.Unlock()
			return
		}
		r = reasonExcess
	}
	p.destroyLocked(c, r)
	p.dialForWaitersLocked(context.Background())
	p.mu.Unlock()
	p.tel.evicted(r)
	_ = c.Conn.Close()
}

// handOffIdle moves idle conns to waiters while there are both.
func (p *Pool) handOffIdle() {
	p.mu.Lock()
	stale := p.handOffLocked(nanotime())
	p.mu.Unlock()
	p.closeEvicted(stale)
}

// handOffLocked moves idle conns to the waiters, oldest first, while there
// are both, vetting each like Acquire does. Idle conns and waiters at once
// is a transient, so the non-blocking probe, when one is due, runs under mu
// here. It returns the conns it evicted, to be closed after unlocking.
func (p *Pool) handOffLocked(now int64) []*Conn {
	var stale []*Conn
	for p.waiters.n > 0 {
		c := p.popIdle(false)
		if c == nil {
			break
		}
		r := p.staleReason(c, now)
		if r == reasonNone && p.s.checkAfterIdle >= 0 && now-c.lastUsed > int64(p.s.checkAfterIdle) && probe(c.Conn) != nil {
			r = reasonDead
		}
		if r != reasonNone {
			p.destroyLocked(c, r)
			c.evictReason = r
			stale = append(stale, c)
			continue
		}
		p.deliverLocked(c)
	}
	if len(stale) > 0 {
		p.dialForWaitersLocked(context.Background())
	}
	return stale
}

// closeEvicted closes conns evicted under mu and reports the evictions.
func (p *Pool) closeEvicted(stale []*Conn) {
	for _, c := range stale {
		p.tel.evicted(c.evictReason)
		_ = c.Conn.Close()
	}
}

// destroy is Conn.Close.
func (p *Pool) destroy(c *Conn) error {
	if !c.state.CompareAndSwap(stateInUse, stateReleasing) {
		return nil
	}
	p.mu.Lock()
	if c.state.Load() == stateClosed { // Close ran meanwhile
		p.mu.Unlock()
		return nil
	}
	p.destroyLocked(c, reasonNone)
	p.dialForWaitersLocked(context.Background())
	p.mu.Unlock()
	return c.Conn.Close()
}

// retireReason says why a conn being released must not go back: broken by
// an I/O error, of a generation before a Reset, or past its lifetime.
func (p *Pool) retireReason(c *Conn, now int64) reason {
	switch {
	case c.broken.Load():
		return reasonBroken
	case c.gen != p.gen.Load():
		return reasonReset
	case c.expires != 0 && now >= c.expires:
		return reasonLifetime
	}
	return reasonNone
}

// staleReason says why an idle conn must be evicted at now.
func (p *Pool) staleReason(c *Conn, now int64) reason {
	switch {
	case c.expires != 0 && now >= c.expires:
		return reasonLifetime
	case p.s.maxIdleTime > 0 && now-c.lastUsed > int64(p.s.maxIdleTime):
		return reasonIdle
	case c.gen != p.gen.Load():
		return reasonReset
	}
	return reasonNone
}

// destroyLocked removes c (not on an idle stack) from the pool's accounting
// and counts its eviction; the caller closes c.Conn after unlocking.
func (p *Pool) destroyLocked(c *Conn, r reason) {
	c.state.Store(stateClosed)
	last := len(p.all) - 1
	moved := p.all[last]
	p.all[c.allIdx] = moved
	moved.allIdx = c.allIdx
	p.all[last] = nil
	p.all = p.all[:last]
	c.allIdx = -1
	p.st.countEviction(r)
	if p.s.minIdle > 0 {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// drainLocked takes every conn off the idle stacks, appending to dst.
func (p *Pool) drainLocked(dst []*Conn) []*Conn {
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		dst = append(dst, sh.idle...)
		clear(sh.idle)
		sh.idle = sh.idle[:0]
		sh.mu.Unlock()
	}
	return dst
}

// Reset flushes the pool, for a network change or a failover: idle
// connections are closed now, connections in use are closed when released,
// and dials in flight are discarded when they finish. Waiters keep waiting
// for new connections. Safe for concurrent use; a no-op after Close.
func (p *Pool) Reset() {
	if !p.made() {
		return
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	p.gen.Add(1)
	flushed := p.drainLocked(nil)
	for _, c := range flushed {
		p.destroyLocked(c, reasonReset)
	}
	p.mu.Unlock()
	for _, c := range flushed {
		p.tel.evicted(reasonReset)
		_ = c.Conn.Close()
	}
}

// Close closes the pool: waiters get [ErrClosed], every connection — idle and
// in use — is closed now (a later Release or Close of a *Conn is a no-op),
// dials in flight are canceled, and Close returns once the pool's goroutines
// have ended. It is idempotent and safe for concurrent use; it always returns
// nil.
func (p *Pool) Close() error {
	if !p.made() {
		return nil
	}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		<-p.closeDone
		return nil
	}
	p.closed = true
	p.closedFast.Store(true)
	for w := p.waiters.popFront(); w != nil; w = p.waiters.popFront() {
		w.ch <- acquireResult{err: ErrClosed}
	}
	p.nwait.Store(0)
	p.drainLocked(nil)
	conns := p.all
	p.all = nil
	for _, c := range conns {
		c.state.Store(stateClosed)
		c.allIdx = -1
	}
	p.mu.Unlock()
	p.closeCancel()
	for _, c := range conns {
		_ = c.Conn.Close()
	}
	p.wg.Wait()
	p.tel.close()
	close(p.closeDone)
	return nil
}

// sweeper is the pool's background goroutine: every HealthCheckPeriod it
// closes idle conns that expired, and whenever kicked it tops up
// MinIdleConns. It ends when Close cancels closeCtx.
func (p *Pool) sweeper() {
	defer p.wg.Done()
	var (
		t    *time.Timer
		tick <-chan time.Time // nil when the periodic sweep is off
	)
	if p.s.healthCheckPeriod > 0 {
		t = time.NewTimer(p.s.healthCheckPeriod)
		defer t.Stop()
		tick = t.C
	}
	p.topUp()
	for {
		select {
		case <-p.closeCtx.Done():
			return
		case <-tick:
			p.sweepIdle(nanotime())
			p.topUp()
			t.Reset(p.s.healthCheckPeriod)
		case <-p.kick:
			p.topUp()
		}
	}
}

// sweepIdle evicts the idle conns that are stale at now or, when idle
// longer than CheckAfterIdle, fail the liveness probe (non-blocking, so it
// runs under the locks), keeping the order of the others. MinIdleConns are
// then topped up by the caller, so after a server restart the warm conns are
// replaced before anyone asks for one.
func (p *Pool) sweepIdle(now int64) {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return
	}
	evict := p.sweep[:0]
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		kept := sh.idle[:0]
		for _, c := range sh.idle {
			r := p.staleReason(c, now)
			if r == reasonNone && p.s.checkAfterIdle >= 0 && now-c.lastUsed > int64(p.s.checkAfterIdle) && probe(c.Conn) != nil {
				r = reasonDead // found dead in the background: no Acquire will meet it
			}
			if r != reasonNone {
				p.destroyLocked(c, r)
				c.evictReason = r
				evict = append(evict, c)
				continue
			}
			kept = append(kept, c)
		}
		clear(sh.idle[len(kept):])
		sh.idle = kept
		sh.mu.Unlock()
	}
	p.mu.Unlock()
	for i, c := range evict {
		p.tel.evicted(c.evictReason)
		_ = c.Conn.Close()
		evict[i] = nil
	}
	p.sweep = evict[:0]
}

// idleLocked counts the idle conns; with p.mu held it is exact at rest.
func (p *Pool) idleLocked() int {
	n := 0
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		n += len(sh.idle)
		sh.mu.Unlock()
	}
	return n
}

// topUp starts dials until idle conns plus dials in flight reach
// MinIdleConns, within the cap; the dials wait for the rate limiter.
func (p *Pool) topUp() {
	if p.s.minIdle <= 0 {
		return
	}
	p.mu.Lock()
	for !p.closed && p.idleLocked()+p.dialing < p.s.minIdle && p.openLocked() < p.s.maxConns {
		p.startDialLocked(context.Background())
	}
	p.mu.Unlock()
}

// Stats returns a snapshot of the pool's gauges and counters. Safe for
// concurrent use, also after Close.
func (p *Pool) Stats() Stats {
	if !p.made() {
		return Stats{}
	}
	p.mu.Lock()
	s := p.st
	var pops int64
	for i := range p.shards {
		sh := &p.shards[i]
		sh.mu.Lock()
		s.Idle += len(sh.idle)
		pops += sh.pops
		sh.mu.Unlock()
	}
	s.AcquireCount += pops - p.rejects
	s.Open = len(p.all) + p.dialing
	s.InUse = len(p.all) - s.Idle
	s.Dialing = p.dialing
	s.Waiting = p.waiters.n
	p.mu.Unlock()
	return s
}
