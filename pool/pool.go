package pool

import (
	"context"
	"math"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/time/rate"

	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/upstream"
)

// epoch anchors nanotime. time.Since on a monotonic time reads one clock
// (time.Now reads two), which matters on the Acquire/Release fast path
// (BenchmarkAcquireRelease, where the clock reads are a visible part of the
// ~65ns); in a testing/synctest bubble it follows the bubble's fake clock.
var epoch = time.Now()

// nanotime is monotonic nanoseconds since epoch.
func nanotime() int64 { return int64(time.Since(epoch)) }

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
	log     *logx.Queue // the Logger's records, written on a goroutine of their own; nil: no Logger
	name    string
	gate    *upstream.Gate // the upstream's reachability; nil: DisableFailFast
	downSig downSignal     // closed while gate is down: ends the non-probe dials' DialRate waits

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
	// back to the conn's home shard. Everything else — the cap, the
	// waiters, dials, eviction — is under mu. Lock order: mu, then a
	// shard's mu. What pays for the shards: BenchmarkAcquireReleaseParallel
	// (g16: more goroutines than Ps) and the g16 rows of the puddle
	// comparison in examples/interop/pool_puddle_test.go.
	shards    []shard
	shardMask uint32

	// Mirrors of state under mu, written under mu, read by the fast paths
	// of Acquire and Release so that they take no pool-wide lock
	// (BenchmarkAcquireRelease, BenchmarkAcquireReleaseParallel).
	closedFast atomic.Bool
	gen        atomic.Uint64 // bumped by Reset; a conn of an older generation is retired
	nwait      atomic.Int64  // waiters.n

	// mu guards everything below. It is never held across a dial, a conn
	// Close or a telemetry call, nor across a liveness probe except in
	// handOffLocked (idle conns and waiters at once is a transient) and in
	// the periodic sweep (one non-blocking recv per idle conn). A Logger's
	// handler never runs under it (the records go through log, a queue).
	mu      sync.Mutex
	closed  bool
	all     []*Conn  // every dialed, not yet destroyed conn; Conn.allIdx indexes it
	dialing int      // dials started and not finished, rate-limiter waits included
	probes  []uint64 // of dialing: the seq of each probe the gate admitted while the upstream was down, in order
	seq     uint64   // the last seq given to a waiter or a probe (under mu)
	// closing counts conns destroyed whose Close has not returned yet: a
	// conn is open (at the server, in its max_connections) until then, so
	// it keeps its place against MaxConns (closedConns gives it back).
	closing  int
	nextHome uint32
	waiters  waitList
	st       Stats   // counters; gauges are computed in Stats
	sweep    []*Conn // scratch for the sweeper, reused

	// rejects counts conns popped by Acquire and then evicted (stale or
	// dead). Stats derives AcquireCount from the shards' pops minus
	// rejects, so that the fast path counts under its shard lock and never
	// takes mu.
	rejects int64
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
		log:       logx.NewQueue(logx.For(cfg.Logger)),
		name:      cfg.Name,
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
	p.initGate(&cfg)
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
func (p *Pool) openLocked() int { return len(p.all) + p.dialing + p.closing }

// Reset flushes the pool, for a network change or a failover: idle
// connections are closed now, connections in use are closed when released,
// and dials in flight are discarded when they finish. Waiters keep waiting
// for new connections. The pool forgets that its upstream was down: the
// next Acquire dials (five failures take it down again). Safe for
// concurrent use; a no-op after Close.
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
	if p.gate != nil {
		p.gate.Success() // a fresh start: whatever was learnt is of the old network
	}
	flushed := p.drainLocked(nil)
	for _, c := range flushed {
		p.destroyLocked(c, reasonReset)
	}
	p.mu.Unlock()
	ncs := make([]net.Conn, len(flushed))
	for i, c := range flushed {
		p.tel.evicted(reasonReset)
		ncs[i] = c.Conn
	}
	_ = closeConns(ncs)
	p.closedConns(len(ncs))
}

// Close closes the pool: waiters get [ErrClosed], every connection — idle and
// in use — is closed now (a later Release or Close of a *Conn is a no-op),
// dials in flight are canceled, and Close returns once the pool's goroutines
// have ended. Closing waits on no peer: a wrapper's Close that would (a
// *tls.Conn's close_notify to a peer that stopped reading) is cut after
// 100ms by closing the socket under it; nor on a Logger's handler: the
// last records (the counts held back) get up to 100ms to be written, and a
// handler that blocks keeps them, not Close. It is idempotent and safe for
// concurrent use; it always returns nil.
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
		w.send(acquireResult{err: ErrClosed})
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
	ncs := make([]net.Conn, len(conns))
	for i, c := range conns {
		ncs[i] = c.Conn
	}
	_ = closeConns(ncs)
	p.wg.Wait()
	p.tel.close()
	p.tel.closeUpstream(p)
	p.log.Close(closeWait)
	close(p.closeDone)
	return nil
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
	s.Open = p.openLocked()
	s.InUse = len(p.all) - s.Idle
	s.Dialing = p.dialing
	s.Closing = p.closing
	s.Waiting = p.waiters.n
	p.mu.Unlock()
	return s
}
