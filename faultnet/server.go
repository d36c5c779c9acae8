package faultnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// Fault is what a [Server] does to the connections its [Selector] picks.
// The zero value is None.
type Fault int

// The faults a Server can inject.
const (
	None     Fault = iota // every connection is served by Handler
	Silence               // accept; never read, never write; hold until the client closes or Close
	StallTLS              // read one complete TLS record (the ClientHello); then hold silently
	Reset                 // accept; close with SO_LINGER 0 so the client sees ECONNRESET
	CloseNow              // accept; close at once (FIN)
	SlowDrip              // serve with Handler but every Write is dribbled 1 byte per DripInterval
)

var faultNames = [...]string{"None", "Silence", "StallTLS", "Reset", "CloseNow", "SlowDrip"}

// String returns the constant's name, e.g. "StallTLS".
func (f Fault) String() string {
	if f >= 0 && int(f) < len(faultNames) {
		return faultNames[f]
	}
	return "Fault(" + strconv.Itoa(int(f)) + ")"
}

func (f Fault) valid() bool { return f >= None && f <= SlowDrip }

// defaultDripInterval is the pause between bytes for SlowDrip.
const defaultDripInterval = 10 * time.Millisecond

// Config configures a [Server]. The zero value is a loopback echo server on
// 127.0.0.1 with a free port and no fault. Listen copies the Config; changing
// it afterwards has no effect (use [Server.SetFault]).
type Config struct {
	// Addr is the address to listen on. "" means "127.0.0.1:0" (a free
	// port); use "[::1]:0" for IPv6. A fixed port is allowed. The host must
	// be a loopback IP literal (127.0.0.0/8 or ::1) or "localhost".
	Addr string
	// Fault is applied to the connections Select picks. Zero: None.
	Fault Fault
	// Select picks the connections Fault hits, by 1-based accept ordinal.
	// nil: All().
	Select Selector
	// Handler serves healthy connections (and SlowDrip ones, through a
	// dribbling conn). nil: Echo. The server closes the conn when Handler
	// returns, and also when the server is closed, so Handler must return
	// once its conn's Read or Write fails.
	Handler func(net.Conn)
	// TLS, when non-nil, makes healthy and SlowDrip connections TLS: the
	// server completes the handshake, then calls Handler with the *tls.Conn
	// (SlowDrip wraps it). Faulted connections never see TLS.
	TLS *tls.Config
	// IdleClose, when > 0, makes the server close (FIN) any connection
	// that sent nothing for this long, the way servers and middleboxes drop
	// idle connections. 0 or negative: never.
	IdleClose time.Duration
	// DripInterval is the pause before each byte written under SlowDrip.
	// 0: 10ms. Negative is an error.
	DripInterval time.Duration
}

func (c *Config) dripInterval() time.Duration {
	if c.DripInterval == 0 {
		return defaultDripInterval
	}
	return c.DripInterval
}

func (c *Config) handler() func(net.Conn) {
	if c.Handler == nil {
		return Echo
	}
	return c.Handler
}

func (c *Config) validate() error {
	if !c.Fault.valid() {
		return fmt.Errorf("faultnet: Config.Fault %d is not a known Fault", int(c.Fault))
	}
	if c.DripInterval < 0 {
		return fmt.Errorf("faultnet: Config.DripInterval %v is negative", c.DripInterval)
	}
	return nil
}

// Echo copies everything it reads from c back to c until EOF or an error.
// It does not close c.
func Echo(c net.Conn) { _, _ = io.Copy(c, c) }

// counters backs Stats for servers and proxies.
type counters struct {
	accepted, faulted, served, closedByPeer, active, maxActive, dropped, lingering atomic.Int64
}

func (c *counters) open() {
	c.accepted.Add(1)
	a := c.active.Add(1)
	for {
		m := c.maxActive.Load()
		if a <= m || c.maxActive.CompareAndSwap(m, a) {
			return
		}
	}
}

func (c *counters) snapshot() Stats {
	return Stats{
		Accepted:     c.accepted.Load(),
		Faulted:      c.faulted.Load(),
		Served:       c.served.Load(),
		ClosedByPeer: c.closedByPeer.Load(),
		Active:       c.active.Load(),
		MaxActive:    c.maxActive.Load(),
		Dropped:      c.dropped.Load(),
		Lingering:    c.lingering.Load(),
	}
}

// Server is a TCP listener that applies a [Fault] to the connections its
// [Selector] picks and serves the others with a Handler. Create it with
// [Listen] or [Start]; the zero value is not usable. All methods are safe for
// concurrent use. The Server owns its listener, every accepted connection and
// every goroutine it starts; Close releases them all and waits for the
// goroutines.
type Server struct {
	cfg     Config
	listen  func(network, addr string) (net.Listener, error)
	network string
	addr    netip.AddrPort // bound address, fixed at Listen and reused by Up
	epoch   time.Time      // monotonic base for conn.last
	ctx     context.Context
	cancel  context.CancelFunc
	wg      sync.WaitGroup // accept loops, conn handlers, idle watchers
	st      counters

	// mu guards everything below. Held only for bookkeeping, never across
	// blocking calls or user code.
	mu         sync.Mutex
	ln         net.Listener  // nil while Down and after Close
	acceptDone chan struct{} // closed when the accept loop of ln has ended
	fault      Fault
	sel        Selector
	n          int // accept ordinal since start or the last SetFault
	conns      map[*conn]struct{}
	closed     bool
}

// errServerClosed is returned by Down and Up after Close.
var errServerClosed = errors.New("faultnet: server closed")

// Listen starts a Server for cfg. The caller must Close it.
func Listen(cfg Config) (*Server, error) {
	return listenServer(cfg, net.Listen, true)
}

// Start is Listen that registers Close with tb.Cleanup and calls tb.Fatal
// when Listen fails.
func Start(tb testing.TB, cfg Config) *Server {
	tb.Helper()
	s, err := Listen(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

func listenServer(cfg Config, listen func(network, addr string) (net.Listener, error), loopbackOnly bool) (*Server, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ap, err := parseListenAddr("Config.Addr", cfg.Addr, loopbackOnly)
	if err != nil {
		return nil, err
	}
	network := "tcp4"
	if ap.Addr().Is6() {
		network = "tcp6"
	}
	ln, err := listen(network, ap.String())
	if err != nil {
		return nil, fmt.Errorf("faultnet: listen %s: %w", ap, err)
	}
	bound, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("faultnet: listen %s: unexpected address %q", ap, ln.Addr())
	}
	ctx, cancel := context.WithCancel(context.Background())
	s := &Server{
		cfg:     cfg,
		listen:  listen,
		network: network,
		addr:    bound,
		epoch:   time.Now(),
		ctx:     ctx,
		cancel:  cancel,
		fault:   cfg.Fault,
		sel:     cfg.Select,
		conns:   make(map[*conn]struct{}),
	}
	s.mu.Lock()
	s.startAccepting(ln)
	s.mu.Unlock()
	return s, nil
}

// parseListenAddr resolves "" and "localhost" and checks the host is a
// loopback IP literal (unless loopbackOnly is false).
func parseListenAddr(field, addr string, loopbackOnly bool) (netip.AddrPort, error) {
	if addr == "" {
		return netip.AddrPortFrom(netip.AddrFrom4([4]byte{127, 0, 0, 1}), 0), nil
	}
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("faultnet: %s %q: %w", field, addr, err)
	}
	p, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("faultnet: %s %q: bad port %q", field, addr, port)
	}
	var ip netip.Addr
	switch host {
	case "", "localhost":
		ip = netip.AddrFrom4([4]byte{127, 0, 0, 1})
	default:
		ip, err = netip.ParseAddr(host)
		if err != nil {
			return netip.AddrPort{}, fmt.Errorf("faultnet: %s %q: host must be an IP literal: %w", field, addr, err)
		}
		ip = ip.Unmap()
	}
	if loopbackOnly && !ip.IsLoopback() {
		return netip.AddrPort{}, fmt.Errorf("faultnet: %s %q: not a loopback address (only 127.0.0.0/8 and ::1 are allowed)", field, addr)
	}
	return netip.AddrPortFrom(ip, uint16(p)), nil
}

// startAccepting installs ln and starts its accept loop. s.mu must be held.
func (s *Server) startAccepting(ln net.Listener) {
	done := make(chan struct{})
	s.ln, s.acceptDone = ln, done
	s.wg.Add(1)
	go s.acceptLoop(ln, done)
}

// acceptLoop accepts on ln until ln is closed (Down or Close).
func (s *Server) acceptLoop(ln net.Listener, done chan struct{}) {
	defer s.wg.Done()
	defer close(done)
	acceptEach(s.ctx, ln, func(c net.Conn) { s.serve(ln, c) })
}

// conn is one accepted connection.
type conn struct {
	net.Conn
	last     atomic.Int64  // nanoseconds since Server.epoch of the last data received
	byUs     atomic.Bool   // we closed it: a later read error is not the peer's doing
	killed   chan struct{} // closed by shut
	killOnce sync.Once
}

// shut closes the conn from our side, with RST when rst is set.
func (c *conn) shut(rst bool) {
	c.byUs.Store(true)
	c.killOnce.Do(func() { close(c.killed) })
	if rst {
		setLingerZero(c.Conn)
	}
	_ = c.Conn.Close()
}

func setLingerZero(c net.Conn) {
	if tc, ok := c.(interface{ SetLinger(int) error }); ok {
		_ = tc.SetLinger(0)
	}
}

func (s *Server) now() int64 { return int64(time.Since(s.epoch)) }

// serve registers c and starts its handler goroutine.
func (s *Server) serve(ln net.Listener, nc net.Conn) {
	c := &conn{Conn: nc, killed: make(chan struct{})}
	c.last.Store(s.now())
	s.mu.Lock()
	if s.closed || s.ln != ln {
		// Accepted just as Down or Close took the listener away: the
		// outage applies to it too.
		s.mu.Unlock()
		setLingerZero(nc)
		_ = nc.Close()
		return
	}
	s.n++
	n, f, sel := s.n, s.fault, s.sel
	s.conns[c] = struct{}{}
	s.wg.Add(1) // under mu: Close sets closed under mu before it waits
	s.mu.Unlock()
	s.st.open()
	if f != None && sel != nil && !sel(n) {
		f = None
	}
	go s.handle(c, f)
}

func (s *Server) handle(c *conn, f Fault) {
	defer s.wg.Done()
	defer func() {
		_ = c.Conn.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.st.active.Add(-1)
	}()
	if s.cfg.IdleClose > 0 {
		done := make(chan struct{})
		defer close(done)
		s.wg.Add(1)
		go s.idleWatch(c, done)
	}
	if f != None {
		s.st.faulted.Add(1)
	}
	switch f {
	case None:
		s.st.served.Add(1)
		s.serveHealthy(c, false)
	case SlowDrip:
		s.serveHealthy(c, true)
	case Silence:
		s.holdAndCount(c)
	case StallTLS:
		if !s.readTLSRecord(c) {
			return
		}
		s.holdAndCount(c)
	case Reset:
		c.shut(true)
	case CloseNow:
		s.closeNow(c)
	}
}

// closeNow sends FIN at once, then discards what the client sends until
// it closes too. Closing outright would turn into a RST whenever the client
// had already sent data (the kernel resets a socket closed with unread
// input), and the client would see ECONNRESET instead of EOF.
func (s *Server) closeNow(c *conn) {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		if cw.CloseWrite() == nil {
			_, _ = io.Copy(io.Discard, &activityConn{Conn: c.Conn, c: c, s: s})
		}
	}
	c.shut(false)
}

// holdAndCount holds c silently and counts a close by the client.
func (s *Server) holdAndCount(c *conn) {
	if hold(c.Conn, func() { c.last.Store(s.now()) }) && !c.byUs.Load() {
		s.st.closedByPeer.Add(1)
	}
}

// readTLSRecord reads one whole TLS record: the 5-byte header (type,
// version, length) and length bytes. It reports false, counting a close by
// the client, when the record could not be read.
func (s *Server) readTLSRecord(c *conn) bool {
	r := &activityConn{Conn: c.Conn, c: c, s: s}
	var h [5]byte
	_, err := io.ReadFull(r, h[:])
	if err == nil {
		_, err = io.CopyN(io.Discard, r, int64(h[3])<<8|int64(h[4]))
	}
	if err != nil {
		if !c.byUs.Load() {
			s.st.closedByPeer.Add(1)
		}
		return false
	}
	return true
}

// serveHealthy runs the Handler on c, over TLS when configured and through
// a dribbling conn when drip is set.
func (s *Server) serveHealthy(c *conn, drip bool) {
	var nc net.Conn = c.Conn
	if s.cfg.IdleClose > 0 {
		nc = &activityConn{Conn: nc, c: c, s: s}
	}
	if s.cfg.TLS != nil {
		tc := tls.Server(nc, s.cfg.TLS)
		// The handshake is bounded by Close (s.ctx), not by time: a stalled
		// client is the test's business.
		if err := tc.HandshakeContext(s.ctx); err != nil {
			return
		}
		nc = tc
	}
	if drip {
		nc = &dripConn{Conn: nc, every: s.cfg.dripInterval(), killed: c.killed}
	}
	handlerConns.Store(nc, c.killed)
	defer handlerConns.Delete(nc)
	s.cfg.handler()(nc)
}

// handlerConns maps each conn being served by a Handler to the channel
// closed when the Server shuts it, so Forward can stop a connect that the
// closed conn no longer needs.
var handlerConns sync.Map // net.Conn → chan struct{}

// idleWatch closes c once it has received nothing for IdleClose. It ends
// when the conn's handler ends (done) or the conn is shut.
func (s *Server) idleWatch(c *conn, done <-chan struct{}) {
	defer s.wg.Done()
	d := s.cfg.IdleClose
	t := time.NewTimer(d)
	defer t.Stop()
	for {
		select {
		case <-done:
			return
		case <-c.killed:
			return
		case <-t.C:
			idle := time.Duration(s.now() - c.last.Load())
			if idle >= d {
				c.shut(false)
				return
			}
			t.Reset(d - idle)
		}
	}
}

// activityConn records the time of every successful Read for IdleClose.
type activityConn struct {
	net.Conn
	c *conn
	s *Server
}

func (a *activityConn) Read(p []byte) (int, error) {
	n, err := a.Conn.Read(p)
	if n > 0 {
		a.c.last.Store(a.s.now())
	}
	return n, err
}

// dripConn writes one byte per interval.
type dripConn struct {
	net.Conn
	every  time.Duration
	killed <-chan struct{}
	t      *time.Timer
}

func (d *dripConn) Write(p []byte) (int, error) {
	for i := range p {
		if d.t == nil {
			d.t = time.NewTimer(d.every)
		} else {
			d.t.Reset(d.every)
		}
		select {
		case <-d.t.C:
		case <-d.killed:
			d.t.Stop()
			return i, net.ErrClosed
		}
		if _, err := d.Conn.Write(p[i : i+1]); err != nil {
			return i, err
		}
	}
	return len(p), nil
}

// Addr returns the listening address as "host:port", e.g. "127.0.0.1:40123"
// or "[::1]:40123".
func (s *Server) Addr() string { return s.addr.String() }

// AddrPort returns the listening address.
func (s *Server) AddrPort() netip.AddrPort { return s.addr }

// Port returns the listening port.
func (s *Server) Port() int { return int(s.addr.Port()) }

// Stats returns a snapshot of the counters.
func (s *Server) Stats() Stats { return s.st.snapshot() }

// SetFault changes the fault and selector for connections accepted from now
// on; connections already open keep theirs. The ordinal passed to sel
// restarts at 1 with the next connection. A nil sel means All(). A Fault
// that is not one of the constants is an error, and nothing changes.
func (s *Server) SetFault(f Fault, sel Selector) error {
	if !f.valid() {
		return fmt.Errorf("faultnet: SetFault: %d is not a known Fault", int(f))
	}
	s.mu.Lock()
	s.fault, s.sel, s.n = f, sel, 0
	s.mu.Unlock()
	return nil
}

// DropAll resets (RST) every open connection now, like a flapping interface
// or a restarted middlebox, and keeps listening.
func (s *Server) DropAll() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.conns {
		c.shut(true)
	}
	s.st.dropped.Add(int64(len(s.conns)))
}

// Down simulates an outage: it stops listening, so connects to the port are
// refused, and resets (RST) every open connection. [Server.Up] recovers.
// Down on a server that is already down does nothing.
func (s *Server) Down() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errServerClosed
	}
	ln, done := s.ln, s.acceptDone
	if ln == nil {
		s.mu.Unlock()
		return nil
	}
	s.ln = nil
	err := ln.Close()
	for c := range s.conns {
		c.shut(true)
	}
	s.mu.Unlock()
	<-done
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("faultnet: down %s: %w", s.addr, err)
	}
	return nil
}

// upRetry bounds how long Up retries a bind that fails with EADDRINUSE.
const upRetry = 2 * time.Second

// Up listens again on the same address and port after [Server.Down],
// retrying for up to 2s while the port is still in use. Up on a server that
// is up does nothing.
func (s *Server) Up() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return errServerClosed
	}
	if s.ln != nil {
		s.mu.Unlock()
		return nil
	}
	s.mu.Unlock()

	ln, err := s.listenRetry()
	if err != nil {
		return fmt.Errorf("faultnet: up %s: %w", s.addr, err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ln != nil { // closed, or a concurrent Up won
		ln.Close()
		if s.closed {
			return errServerClosed
		}
		return nil
	}
	s.startAccepting(ln)
	return nil
}

func (s *Server) listenRetry() (net.Listener, error) {
	deadline := time.Now().Add(upRetry)
	var t *time.Timer
	for {
		ln, err := s.listen(s.network, s.addr.String())
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		// The port can stay busy for a moment after Down (another socket
		// bound to it briefly); poll instead of failing the recovery.
		if t == nil {
			t = time.NewTimer(20 * time.Millisecond)
			defer t.Stop()
		} else {
			t.Reset(20 * time.Millisecond)
		}
		select {
		case <-t.C:
		case <-s.ctx.Done():
			return nil, errServerClosed
		}
	}
}

// Close stops listening, closes every open connection and waits for every
// goroutine the Server started (including running Handlers, which must
// return once their conn is closed). It is idempotent; later calls return
// nil after waiting the same way.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		s.wg.Wait()
		return nil
	}
	s.closed = true
	s.cancel()
	var err error
	if s.ln != nil {
		err = s.ln.Close()
		s.ln = nil
	}
	for c := range s.conns {
		c.shut(false)
	}
	s.mu.Unlock()
	s.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("faultnet: close %s: %w", s.addr, err)
	}
	return nil
}
