package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// States of a firstByteConn. They only move forward.
const (
	fbDisarmed uint32 = iota // TLS handshake in progress: pass through
	fbArmed                  // waiting for the first Write
	fbWaiting                // written: the first byte must arrive by fbDeadline
	fbDone                   // a reply arrived: pass through, at the cost of one atomic load
)

// firstByteConn bounds the wait for the first byte of a reply: each Write
// before the reply sets the reads' deadline to FirstByteTimeout from then
// (or the caller's own read deadline if that is earlier); when it expires
// the Read fails with an *Error of PhaseFirstByte. Once the reply has
// arrived the caller's read deadline is restored and the wrapper only
// passes calls through.
//
// This is the fault of incidents 01 and 02: a load balancer accepts the
// connection (and even the handshake) and then never answers.
//
// Under TLS the wrapper sits below the *tls.Conn (which must stay bare for
// net/http's HTTP/2) and sees records, not plaintext; records tells it
// which of them carried the reply.
type firstByteConn struct {
	net.Conn
	state   atomic.Uint32
	timeout time.Duration
	network string
	addr    string
	peer    netip.AddrPort
	tel     telemetry
	health  *Health
	records *recordWatch // non-nil under TLS

	mu           sync.Mutex // guards the fields below and every deadline change while not fbDone
	userDeadline time.Time  // the read deadline the caller set; zero: none
	fbDeadline   time.Time  // when the first byte is due (fbWaiting)
	wroteAt      time.Time  // the latest Write before the reply
	expired      bool       // the first-byte timeout was reported
}

func (s *dialState) watchFirstByte(conn net.Conn, peer netip.AddrPort, tlsCfg *tls.Config) *firstByteConn {
	c := &firstByteConn{Conn: conn, timeout: s.fbt, network: s.network, addr: s.addr,
		peer: peer, tel: s.tel, health: s.d.Health}
	if tlsCfg == nil {
		c.state.Store(fbArmed)
		return c
	}
	c.records = &recordWatch{}
	tlsCfg.ClientSessionCache = &ticketCache{inner: tlsCfg.ClientSessionCache, seen: &c.records.tickets}
	return c
}

// arm starts watching after the TLS handshake: the next Write starts the
// clock.
func (c *firstByteConn) arm() { c.state.CompareAndSwap(fbDisarmed, fbArmed) }

// NetConn returns the underlying conn.
func (c *firstByteConn) NetConn() net.Conn { return c.Conn }

func (c *firstByteConn) Write(b []byte) (int, error) {
	if st := c.state.Load(); st == fbArmed || st == fbWaiting {
		c.startClock()
	}
	return c.Conn.Write(b)
}

// startClock sets the first-byte deadline from now: the clock runs from
// the latest Write before the reply, so a request written in pieces is not
// cut short. It is set before the bytes are written so that a Read already
// blocked on another goroutine is covered too (a deadline change applies to
// pending reads).
func (c *firstByteConn) startClock() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.state.Load(); st != fbArmed && st != fbWaiting {
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
	st := c.state.Load()
	if st == fbDone {
		return c.Conn.Read(b)
	}
	if c.records == nil {
		n, err := c.Conn.Read(b)
		if n > 0 && st != fbDisarmed {
			c.replied(time.Now())
		}
		return c.afterRead(n, err)
	}
	// Under TLS. tls.Conn reads again only once it has processed the
	// record it has; if the record handed up last could be data and no
	// session ticket came out of it, it was the reply.
	w := c.records
	if w.candidate {
		w.candidate = false
		if w.tickets.Load() == w.ticketsAt && st != fbDisarmed {
			c.replied(w.arrived)
			return c.Conn.Read(b)
		}
	}
	watching := st != fbDisarmed
	if watching {
		b = w.limit(b)
	}
	n, err := c.Conn.Read(b)
	if n > 0 {
		w.feed(b[:n], watching)
	}
	return c.afterRead(n, err)
}

// replied ends the watch: the reply began at arrived.
func (c *firstByteConn) replied(arrived time.Time) {
	c.mu.Lock()
	if c.state.Load() == fbWaiting {
		// Hand the caller back their own deadline.
		_ = c.Conn.SetReadDeadline(c.userDeadline)
		c.tel.recordDuration(context.Background(), mPhaseFirstByte, mOK, arrived.Sub(c.wroteAt).Seconds())
	}
	c.state.Store(fbDone)
	c.mu.Unlock()
}

// afterRead turns a read that timed out at the first-byte deadline into an
// *Error of PhaseFirstByte, reported (metrics, Health) once. The state is
// read again: a Read may have blocked before the Write that started the
// clock.
func (c *firstByteConn) afterRead(n int, err error) (int, error) {
	if err == nil || !isTimeout(err) {
		return n, err
	}
	c.mu.Lock()
	ours := c.state.Load() == fbWaiting && !c.fbDeadline.After(time.Now()) &&
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
		Err: &timeoutError{cause: errFirstByteTimeout}, health: c.health}
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

// SyscallConn returns the raw conn of the conn underneath, so that clients
// that check idle conns through syscall.Conn (go-redis) keep doing so.
func (c *firstByteConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, c.unsupported("syscallconn")
}

// CloseWrite shuts down the writing side when the underlying conn can.
func (c *firstByteConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return c.unsupported("closewrite")
}

// CloseRead shuts down the reading side when the underlying conn can.
func (c *firstByteConn) CloseRead() error {
	if cr, ok := c.Conn.(interface{ CloseRead() error }); ok {
		return cr.CloseRead()
	}
	return c.unsupported("closeread")
}

func (c *firstByteConn) unsupported(op string) error {
	return &net.OpError{Op: op, Net: c.network, Err: errors.ErrUnsupported}
}

// TLS record content types (RFC 8446 §5.1). In TLS 1.3 every record after
// the handshake is sent as application_data, whatever it carries.
const (
	recordAlert       = 21
	recordApplication = 23
	recordHeaderLen   = 5
)

// recordWatch follows the TLS record boundaries of the bytes the tls.Conn
// reads through a firstByteConn, from the first byte of the handshake on,
// so that it can tell a reply from the records a server sends unasked: a
// TLS 1.3 NewSessionTicket is encrypted as application data and only the
// tls.Conn knows what it was. It tells the session cache (ticketCache),
// which counts tickets; while watching, reads stop at each record's end, so
// tls.Conn asks for more bytes only after it has processed the record: if
// no ticket came out of a record that could be data, it was the reply.
//
// All fields but tickets are touched only by Read, which tls.Conn
// serialises.
type recordWatch struct {
	tickets   atomic.Uint64 // session tickets the tls.Conn handled
	hdr       [recordHeaderLen]byte
	hdrN      int  // header bytes of the current record seen
	left      int  // body bytes of the current record still to come
	candidate bool // a record that may be data was handed up whole
	ticketsAt uint64
	arrived   time.Time
}

// limit shortens b so that a read ends at the current record's end (or its
// header's): tls.Conn then handles one record before it reads again.
func (w *recordWatch) limit(b []byte) []byte {
	want := w.left
	if w.hdrN < recordHeaderLen {
		want = recordHeaderLen - w.hdrN
	}
	if want > 0 && len(b) > want {
		return b[:want]
	}
	return b
}

// feed follows the record boundaries over p. While watching, a record of
// application data or an alert that is now whole is a candidate reply.
func (w *recordWatch) feed(p []byte, watching bool) {
	for len(p) > 0 {
		if w.hdrN < recordHeaderLen {
			k := copy(w.hdr[w.hdrN:], p)
			w.hdrN += k
			p = p[k:]
			if w.hdrN < recordHeaderLen {
				return
			}
			w.left = int(w.hdr[3])<<8 | int(w.hdr[4])
		}
		k := min(w.left, len(p))
		w.left -= k
		p = p[k:]
		if w.left == 0 {
			if typ := w.hdr[0]; watching && (typ == recordApplication || typ == recordAlert) {
				w.candidate = true
				w.ticketsAt = w.tickets.Load()
				w.arrived = time.Now()
			}
			w.hdrN = 0
		}
	}
}

// ticketCache is the ClientSessionCache of a watched TLS attempt: it counts
// the session tickets the tls.Conn handles (Put) for the recordWatch and
// passes everything to the caller's cache, or keeps nothing when the
// caller had none.
type ticketCache struct {
	inner tls.ClientSessionCache
	seen  *atomic.Uint64
}

func (t *ticketCache) Get(key string) (*tls.ClientSessionState, bool) {
	if t.inner == nil {
		return nil, false
	}
	return t.inner.Get(key)
}

func (t *ticketCache) Put(key string, cs *tls.ClientSessionState) {
	t.seen.Add(1)
	if t.inner != nil {
		t.inner.Put(key, cs)
	}
}
