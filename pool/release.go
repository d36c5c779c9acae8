package pool

import "time"

// release is Conn.Release. The fast path — no waiter, nothing to retire —
// takes one shard lock and no pool-wide one (BenchmarkAcquireRelease, and
// BenchmarkAcquireReleaseParallel where Releases on different Ps meet).
func (p *Pool) release(c *Conn) {
	if !c.state.CompareAndSwap(stateInUse, stateReleasing) {
		return // not checked out: a double Release, or after Close
	}
	now := nanotime()
	r := p.retireReason(c, now)
	if r == reasonNone && c.deadlineSet.Swap(false) && c.Conn.SetDeadline(time.Time{}) != nil {
		// A holder's deadlines end with its hold. Left set, an expired read
		// deadline fails the next probe's raw read (a healthy conn evicted as
		// dead, and a re-dial) and the next holder's first I/O. Only a conn
		// whose holder set one pays for the clearing (~25ns on
		// BenchmarkAcquireRelease's pipes). A conn that refuses the clearing
		// was closed underneath us.
		r = reasonBroken
	}
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
	p.mu.Unlock()
	p.tel.evicted(r)
	_ = closeConn(c.Conn)
	p.closedConns(1)
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
		if r := p.idleReason(c, now); r != reasonNone {
			p.destroyLocked(c, r)
			c.evictReason = r
			stale = append(stale, c)
			continue
		}
		p.deliverLocked(c)
	}
	return stale
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
	p.mu.Unlock()
	err := closeConn(c.Conn)
	p.closedConns(1)
	return err
}
