package pool

import (
	"context"
	"net"
	"time"
)

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

// idleReason says why an idle conn must be evicted at now: past its
// lifetime, idle past MaxIdleTime, retired by a Reset, or — when it has
// been idle longer than CheckAfterIdle — found dead by the liveness probe.
// Acquire, the hand-off to waiters and the sweep all judge idle conns by
// it. The probe never waits (on TLS conns at most ~1ms, once, for records
// already at the socket, and tlsWriteWait for an answer TLS owes the peer
// when the peer stopped reading), so callers may hold locks.
func (p *Pool) idleReason(c *Conn, now int64) reason {
	switch {
	case c.expires != 0 && now >= c.expires:
		return reasonLifetime
	case p.s.maxIdleTime > 0 && now-c.lastUsed > int64(p.s.maxIdleTime):
		return reasonIdle
	case c.gen != p.gen.Load():
		return reasonReset
	case p.s.checkAfterIdle > 0 && now-c.lastUsed > int64(p.s.checkAfterIdle) && probe(c.Conn) != nil:
		return reasonDead
	}
	return reasonNone
}

// destroyLocked removes c (not on an idle stack) from the pool's conns and
// counts its eviction; the caller closes c.Conn after unlocking, and then
// calls closedConns: until then c keeps its place against MaxConns.
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
	p.closing++
}

// closedConns gives back the places of n conns destroyed under mu whose
// Close has returned: dials start for the waiters, and the sweeper tops up
// MinIdleConns.
func (p *Pool) closedConns(n int) {
	if n == 0 {
		return
	}
	p.mu.Lock()
	p.closing -= n
	p.dialForWaitersLocked(context.Background())
	p.mu.Unlock()
	if p.s.minIdle > 0 {
		select {
		case p.kick <- struct{}{}:
		default:
		}
	}
}

// closeEvicted closes conns evicted under mu and reports the evictions.
func (p *Pool) closeEvicted(stale []*Conn) {
	if len(stale) == 0 {
		return
	}
	ncs := make([]net.Conn, len(stale))
	for i, c := range stale {
		p.tel.evicted(c.evictReason)
		ncs[i] = c.Conn
	}
	_ = closeConns(ncs)
	p.closedConns(len(ncs))
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

// closeWait bounds how long closing conns waits on their peers, and how
// long Close waits for a Logger's last records to be written.
const closeWait = 100 * time.Millisecond

// closeConn closes one conn the pool is done with: closeConns.
func closeConn(nc net.Conn) error { return closeConns([]net.Conn{nc}) }

// closeConns closes conns the pool is done with, without waiting on their
// peers for more than closeWait in all, and returns the first one's error.
// Closing a socket never blocks, but a wrapper's Close may: a *tls.Conn
// sends close_notify first, and on a send buffer a peer stopped reading
// that write waits up to 5s (tls.Conn sets that deadline itself, so no
// deadline of ours can shorten it) — in a Release, or for each conn in
// turn in Pool.Close. Past closeWait the sockets at the bottom of the
// NetConn chains are closed, which ends the wrappers' writes.
func closeConns(conns []net.Conn) error {
	var bottoms []net.Conn
	for _, nc := range conns {
		bottom := nc
		for {
			u, ok := bottom.(interface{ NetConn() net.Conn })
			if !ok {
				break
			}
			bottom = u.NetConn()
		}
		if bottom != nc {
			bottoms = append(bottoms, bottom)
		}
	}
	var t *time.Timer
	cut := make(chan struct{})
	if len(bottoms) > 0 {
		t = time.AfterFunc(closeWait, func() {
			for _, b := range bottoms {
				_ = b.Close()
			}
			close(cut)
		})
	}
	var first error
	for i, nc := range conns {
		if err := nc.Close(); i == 0 {
			first = err
		}
	}
	if t != nil && !t.Stop() {
		<-cut // the cut ran: it has ended before we return
	}
	return first
}
