package pool

import (
	"context"
	"time"
)

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
			// Found dead here, in the background, a conn is one no
			// Acquire will meet.
			if r := p.idleReason(c, now); r != reasonNone {
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
	p.closeEvicted(evict)
	clear(evict)
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
// MinIdleConns, within the cap and as the gate lets them (while the
// upstream is known down, a top-up dial goes only as a due probe); the
// dials wait for the rate limiter.
func (p *Pool) topUp() {
	if p.s.minIdle <= 0 {
		return
	}
	p.mu.Lock()
	for !p.closed && p.idleLocked()+p.dialing < p.s.minIdle && p.openLocked() < p.s.maxConns {
		probe, err := p.admitDialLocked()
		if err != nil {
			break // known down: the next probe's turn will come
		}
		p.startDialLocked(context.Background(), probe)
	}
	p.mu.Unlock()
}
