package pool

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"syscall"
	"time"
)

// Conn states. A checked-out conn is stateInUse; Release moves it through
// stateReleasing (claimed, so a second Release is a no-op) to stateIdle or
// stateClosed.
const (
	stateIdle uint32 = iota
	stateInUse
	stateReleasing
	stateClosed
)

// Conn is a connection checked out of a [Pool]. It embeds the net.Conn that
// Config.Dial returned; use it as that conn, then give it back with
// [Conn.Release] or destroy it with [Conn.Close]. The optional interfaces
// that an embedded interface would hide are passed through:
// [Conn.SyscallConn], [Conn.CloseWrite], [Conn.CloseRead] and
// [Conn.NetConn].
//
// Read and Write go through the pool's wrapper, which marks the connection
// broken on ANY error, timeouts included: a deadline that fires mid-message
// leaves the stream at an unknown point, so the conn is not reused. Release
// then destroys it. Deadlines set through the wrapper (SetDeadline,
// SetReadDeadline, SetWriteDeadline) last until Release, which clears them.
// I/O and deadlines done on the embedded Conn field directly bypass both:
// call [Conn.MarkBroken] after such an error, and clear such a deadline
// before Release.
//
// A *Conn stays with its connection for the connection's whole life and is
// handed out again by later Acquires (that is what keeps Acquire free of
// allocations): after Release or Close the caller must not use it any more.
// Release and Close of a conn that is not checked out — already released,
// destroyed, or closed by [Pool.Close] — are no-ops, never a panic or a
// double count; but a stale Release made after another Acquire received the
// same *Conn cannot be told from its new holder's and would release it from
// under them, as with any pooled object. A Conn is used by one caller at a time, but Read, Write and Close
// may run concurrently as the net.Conn rules allow. The zero Conn is not
// usable; Conns come only from [Pool.Acquire].
type Conn struct {
	net.Conn

	p           *Pool
	broken      atomic.Bool
	deadlineSet atomic.Bool // a non-zero deadline was set through the wrapper since the last Release
	state       atomic.Uint32
	gen         uint64 // the pool's Reset generation at dial time (immutable)
	expires     int64  // nanotime; 0: no lifetime limit (immutable)
	home        uint32 // the shard Release returns it to (immutable)
	lastUsed    int64  // nanotime of the last release or the dial; written by
	// the releaser before it pushes the conn on a shard and read by whoever
	// pops it, both ordered by that shard's mutex

	// Guarded by p.mu.
	allIdx      int    // index in p.all; -1 once destroyed
	evictReason reason // scratch for the sweeper and handOffIdle
}

// Read reads from the connection; any error marks it broken.
func (c *Conn) Read(b []byte) (int, error) {
	n, err := c.Conn.Read(b)
	if err != nil {
		c.broken.Store(true)
	}
	return n, err
}

// Write writes to the connection; any error marks it broken.
func (c *Conn) Write(b []byte) (int, error) {
	n, err := c.Conn.Write(b)
	if err != nil {
		c.broken.Store(true)
	}
	return n, err
}

// SetDeadline sets the read and write deadlines, as [net.Conn.SetDeadline]
// does. A deadline lasts until [Conn.Release] at the latest: Release clears
// it, so the next holder starts without one.
func (c *Conn) SetDeadline(t time.Time) error {
	if !t.IsZero() {
		c.deadlineSet.Store(true)
	}
	return c.Conn.SetDeadline(t)
}

// SetReadDeadline sets the read deadline, as [net.Conn.SetReadDeadline]
// does; [Conn.Release] clears it.
func (c *Conn) SetReadDeadline(t time.Time) error {
	if !t.IsZero() {
		c.deadlineSet.Store(true)
	}
	return c.Conn.SetReadDeadline(t)
}

// SetWriteDeadline sets the write deadline, as [net.Conn.SetWriteDeadline]
// does; [Conn.Release] clears it.
func (c *Conn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		c.deadlineSet.Store(true)
	}
	return c.Conn.SetWriteDeadline(t)
}

// CloseWrite shuts down the writing side of the connection, as
// [net.TCPConn.CloseWrite] (a FIN) or [crypto/tls.Conn.CloseWrite] (a
// close_notify alert) do, when the conn Config.Dial returned has such a
// method; it returns an error wrapping [errors.ErrUnsupported] when it has
// none. A half-closed connection is not reused: it is marked broken, and
// Release destroys it.
func (c *Conn) CloseWrite() error {
	cw, ok := c.Conn.(interface{ CloseWrite() error })
	if !ok {
		return fmt.Errorf("pool: CloseWrite on a %T: %w", c.Conn, errors.ErrUnsupported)
	}
	c.broken.Store(true)
	return cw.CloseWrite()
}

// CloseRead shuts down the reading side of the connection, as
// [net.TCPConn.CloseRead] does, when the conn Config.Dial returned has such
// a method; it returns an error wrapping [errors.ErrUnsupported] when it has
// none. Like CloseWrite, it marks the connection broken.
func (c *Conn) CloseRead() error {
	cr, ok := c.Conn.(interface{ CloseRead() error })
	if !ok {
		return fmt.Errorf("pool: CloseRead on a %T: %w", c.Conn, errors.ErrUnsupported)
	}
	c.broken.Store(true)
	return cr.CloseRead()
}

// SyscallConn returns the raw socket of the connection, so that *Conn is a
// [syscall.Conn] as the conn it wraps is: clients such as go-redis check
// idle connections for a peer's close only through it. It is found on the
// conn Config.Dial returned or, for a wrapper such as *tls.Conn, on the
// first conn down its chain of NetConn methods that has it; without one, the
// error wraps [errors.ErrUnsupported]. The socket stays owned by the pool:
// do not close it, and know that I/O through it bypasses the broken check
// of Read and Write (call [Conn.MarkBroken] after a failure there).
func (c *Conn) SyscallConn() (syscall.RawConn, error) {
	for nc := c.Conn; nc != nil; {
		if sc, ok := nc.(syscall.Conn); ok {
			return sc.SyscallConn()
		}
		u, ok := nc.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		nc = u.NetConn()
	}
	return nil, fmt.Errorf("pool: SyscallConn on a %T: %w", c.Conn, errors.ErrUnsupported)
}

// NetConn returns the connection Config.Dial returned, which *Conn wraps
// (the embedded Conn field), as [crypto/tls.Conn.NetConn] does; code that
// unwraps conns through NetConn finds it this way. The pool still owns it:
// I/O, deadlines and Close on it bypass the wrapper (see [Conn]).
func (c *Conn) NetConn() net.Conn { return c.Conn }

// MarkBroken marks the connection unfit for reuse (for example after a
// protocol error the caller detected itself): Release will destroy it.
func (c *Conn) MarkBroken() { c.broken.Store(true) }

// Release gives the connection back to the pool: to the oldest waiter, or
// to the idle stack, with the deadlines set through this wrapper cleared.
// It is destroyed instead when an I/O error was seen
// through this wrapper (or MarkBroken was called), when it outlived its
// lifetime, when [Pool.Reset] retired it, or when MaxIdleConns are already
// idle. Release of a conn that is not checked out is a no-op.
func (c *Conn) Release() {
	if c == nil || c.p == nil {
		return
	}
	c.p.release(c)
}

// Close destroys the connection: it closes the underlying net.Conn and frees
// its place in the pool, so a waiter may get a new one. Close of a conn that
// is not checked out is a no-op returning nil.
func (c *Conn) Close() error {
	if c == nil || c.p == nil {
		return nil
	}
	return c.p.destroy(c)
}

// waiter is one Acquire in the FIFO queue. ch has room for exactly one
// result, delivered under p.mu by whoever pops the waiter.
type waiter struct {
	ch         chan acquireResult
	prev, next *waiter
	queued     bool
	// probe is the seq of the probe dial the gate let it start (0:
	// none): never bounced while that probe is out (dialDone clears it).
	probe uint64
	// seq orders it among the waiters and probes (Pool.seq); downs is
	// the gate's Downs when it first queued: whether it was there before
	// the upstream went down (bounceLocked). Counters, not clocks: a
	// waiter whose own dial took the upstream down in the same clock tick
	// is still the dial's.
	seq   uint64
	downs uint64
	// parked: waits for ready at the gate, queued all the while so that a
	// released conn or a probe's still reaches it; unpark ends its wait at
	// the gate when it is handed a result.
	parked bool
	unpark context.CancelFunc
}

// send hands w its result (w has left the queue, under p.mu) and ends its
// wait at the gate, if it is parked there.
func (w *waiter) send(r acquireResult) {
	w.ch <- r
	if w.unpark != nil {
		w.unpark()
	}
}

type acquireResult struct {
	c   *Conn
	err error
	// bounced: err is the gate's; the waiter left the queue because its
	// upstream is known down (fail fast, or wait for ready at the gate).
	bounced bool
	// dialFailed: err is the failure of the dial the waiter got.
	dialFailed bool
}

// waitList is an intrusive doubly linked FIFO: O(1) push, pop and removal
// of a waiter whose context ended.
type waitList struct {
	head, tail *waiter
	n          int
}

func (l *waitList) pushBack(w *waiter) {
	w.prev, w.next = l.tail, nil
	if l.tail != nil {
		l.tail.next = w
	} else {
		l.head = w
	}
	l.tail = w
	w.queued = true
	l.n++
}

func (l *waitList) popFront() *waiter {
	w := l.head
	if w != nil {
		l.remove(w)
	}
	return w
}

func (l *waitList) remove(w *waiter) {
	if w.prev != nil {
		w.prev.next = w.next
	} else {
		l.head = w.next
	}
	if w.next != nil {
		w.next.prev = w.prev
	} else {
		l.tail = w.prev
	}
	w.prev, w.next = nil, nil
	w.queued = false
	l.n--
}
