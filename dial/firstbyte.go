package dial

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"
)

// States of a firstByteConn. They only move forward.
const (
	fbDisarmed uint32 = iota // TLS handshake in progress: pass through
	fbArmed                  // waiting for the first Write
	fbWaiting                // written: the first byte must arrive by fbDeadline
	fbDone                   // a byte arrived: pass through, at the cost of one atomic load
)

// firstByteConn bounds the wait for the first byte of a reply: after the
// first Write, reads get a deadline of FirstByteTimeout (or the caller's
// own read deadline if that is earlier); when it expires the Read fails
// with an *Error of PhaseFirstByte. Once a byte has arrived the caller's
// read deadline is restored and the wrapper only passes calls through.
//
// This is the fault of incidents 01 and 02: a load balancer accepts the
// connection (and even the handshake) and then never answers.
type firstByteConn struct {
	net.Conn
	state   atomic.Uint32
	timeout time.Duration
	network string
	addr    string
	peer    netip.AddrPort
	tel     telemetry
	health  *Health

	mu           sync.Mutex // guards the fields below and every deadline change while not fbDone
	userDeadline time.Time  // the read deadline the caller set; zero: none
	fbDeadline   time.Time  // when the first byte is due (fbWaiting)
	wroteAt      time.Time
	expired      bool // the first-byte timeout was reported
}

func (s *dialState) watchFirstByte(conn net.Conn, peer netip.AddrPort, armed bool) *firstByteConn {
	c := &firstByteConn{Conn: conn, timeout: s.d.FirstByteTimeout, network: s.network, addr: s.addr,
		peer: peer, tel: s.tel, health: s.d.Health}
	if armed {
		c.state.Store(fbArmed)
	}
	return c
}

// arm starts watching: the next Write starts the clock.
func (c *firstByteConn) arm() { c.state.CompareAndSwap(fbDisarmed, fbArmed) }

// NetConn returns the underlying conn.
func (c *firstByteConn) NetConn() net.Conn { return c.Conn }

func (c *firstByteConn) Write(b []byte) (int, error) {
	if c.state.Load() == fbArmed {
		c.startWatch()
	}
	return c.Conn.Write(b)
}

// startWatch sets the first-byte deadline. It is set before the bytes are
// written so that a Read already blocked on another goroutine is covered
// too (a deadline change applies to pending reads).
func (c *firstByteConn) startWatch() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != fbArmed {
		return
	}
	now := time.Now()
	c.wroteAt = now
	c.fbDeadline = now.Add(c.timeout)
	c.state.Store(fbWaiting)
	_ = c.Conn.SetReadDeadline(c.effectiveLocked())
}

// effectiveLocked is the read deadline to set while waiting: the earlier of
// the caller's and the first byte's.
func (c *firstByteConn) effectiveLocked() time.Time {
	if !c.userDeadline.IsZero() && c.userDeadline.Before(c.fbDeadline) {
		return c.userDeadline
	}
	return c.fbDeadline
}

func (c *firstByteConn) Read(b []byte) (int, error) {
	if c.state.Load() == fbDone {
		return c.Conn.Read(b)
	}
	n, err := c.Conn.Read(b)
	return c.afterRead(n, err)
}

func (c *firstByteConn) afterRead(n int, err error) (int, error) {
	st := c.state.Load()
	if st == fbDisarmed || st == fbDone {
		return n, err
	}
	if n > 0 {
		c.mu.Lock()
		if c.state.Load() == fbWaiting {
			// Hand the caller back their own deadline.
			_ = c.Conn.SetReadDeadline(c.userDeadline)
			c.tel.recordDuration(context.Background(), mPhaseFirstByte, mOK, time.Since(c.wroteAt).Seconds())
		}
		c.state.Store(fbDone)
		c.mu.Unlock()
		return n, err
	}
	if st != fbWaiting || err == nil || !isTimeout(err) {
		return n, err
	}
	c.mu.Lock()
	ours := !c.fbDeadline.After(time.Now()) &&
		(c.userDeadline.IsZero() || c.fbDeadline.Before(c.userDeadline))
	report := ours && !c.expired
	if ours {
		c.expired = true
	}
	c.mu.Unlock()
	if !ours {
		return n, err // the caller's own deadline
	}
	if report {
		c.tel.recordDuration(context.Background(), mPhaseFirstByte, mTimeout, c.timeout.Seconds())
		c.health.record(c.peer, EventFirstByteStall, 0, time.Now())
	}
	return n, &Error{Phase: PhaseFirstByte, Network: c.network, Addr: c.addr, Peer: c.peer,
		Err: &timeoutError{cause: errFirstByteTimeout}}
}

func isTimeout(err error) bool {
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *firstByteConn) SetReadDeadline(t time.Time) error {
	if c.state.Load() == fbDone {
		return c.Conn.SetReadDeadline(t)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.userDeadline = t
	if c.state.Load() == fbWaiting {
		return c.Conn.SetReadDeadline(c.effectiveLocked())
	}
	return c.Conn.SetReadDeadline(t)
}

func (c *firstByteConn) SetDeadline(t time.Time) error {
	if err := c.Conn.SetWriteDeadline(t); err != nil {
		return err
	}
	return c.SetReadDeadline(t)
}

// CloseWrite shuts down the writing side when the underlying conn can.
func (c *firstByteConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "close", Net: c.network, Err: errors.ErrUnsupported}
}
