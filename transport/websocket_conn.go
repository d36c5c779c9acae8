package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// maxBuffered bounds what a liveConn reads ahead of the application.
const maxBuffered = 256 << 10

// MaxHandshakeBytes bounds what a websocket handshake reads from the
// server (or proxy) before the conn is up: the 101 answer and its headers,
// and whatever gorilla buffers with them. A server whose answer never ends
// fails the attempt with [ErrHandshakeTooLarge] instead of filling memory
// until HandshakeTimeout.
const MaxHandshakeBytes = 1 << 20

// ErrHandshakeTooLarge is matched (errors.Is) by the error of a handshake
// whose answer exceeded MaxHandshakeBytes. It is final: not retried.
var ErrHandshakeTooLarge = errors.New("websocket: handshake answer exceeds 1 MiB")

// liveConn is the net.Conn under a gorilla conn that Dial returns. During
// the handshake it passes every call through. Once the conn is up and
// pings are on, a pump goroutine reads the socket ahead of gorilla into a
// bounded buffer, so that the answer to a ping is seen whether or not the
// application is reading (gorilla processes control frames only inside
// its own reads, and a liveness check that depends on the application's
// read loop is the trap of gorilla #649, #667, #747, #887). Anything
// received after a ping counts as its answer: a pong, or data the peer
// sent before it. When the buffer is full the application is behind, not
// the peer: the pong deadline waits until the pump may read again.
//
// The application's read deadlines apply to waiting on the buffer, never
// to the socket; write deadlines pass through.
type liveConn struct {
	net.Conn // *tls.Conn for wss, else the Dialer's conn

	mu        sync.Mutex // guards the fields below
	pumping   bool       // reads come from buf
	buf       []byte     // read ahead; buf[off:] is unread
	off       int
	rerr      error     // the pump's final error, returned once buf is empty
	rdl       time.Time // the read deadline (pumping)
	failErr   error     // why fail closed the conn; returned by reads and writes
	spanEnded bool

	readable chan struct{} // cap 1: buf grew, rerr or rdl changed
	room     chan struct{} // cap 1: the reader made room in buf
	stopc    chan struct{} // closed when the conn ends: stops the liveness loop
	stopOnce sync.Once
	rx       atomic.Uint64 // bytes the pump read
	full     atomic.Bool   // the pump waits for room
	wg       sync.WaitGroup
	closing  atomic.Bool // Close was called
	up       atomic.Bool // start was called: the handshake is over
	hsRead   int         // bytes read before start; gorilla's goroutine only

	span trace.Span // websocket.conn; nil before start
}

func newLiveConn(c net.Conn) *liveConn {
	return &liveConn{Conn: c, readable: make(chan struct{}, 1), room: make(chan struct{}, 1),
		stopc: make(chan struct{})}
}

func signal(c chan struct{}) {
	select {
	case c <- struct{}{}:
	default:
	}
}

// NetConn returns the conn under the wrapper (a *tls.Conn for wss).
func (c *liveConn) NetConn() net.Conn { return c.Conn }

func (c *liveConn) tlsConn() (*tls.Conn, bool) {
	tc, ok := c.Conn.(*tls.Conn)
	return tc, ok
}

// raw is the socket-level conn: closing it never blocks on a TLS alert.
func (c *liveConn) raw() net.Conn {
	if tc, ok := c.tlsConn(); ok {
		return tc.NetConn()
	}
	return c.Conn
}

func (c *liveConn) peer() (netip.AddrPort, bool) {
	if a, ok := c.Conn.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort(), true
	}
	ap, err := netip.ParseAddrPort(c.Conn.RemoteAddr().String())
	return ap, err == nil
}

// abort closes the socket from under a handshake in progress.
func (c *liveConn) abort() { c.raw().Close() }

func (c *liveConn) failure() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.failErr
}

// liveConfig is what start needs.
type liveConfig struct {
	ping, pong time.Duration // 0: off
	tracer     trace.Tracer
	tel        *otelx.WebSocket
	links      []trace.Link
	url        string
}

// start begins the conn's life after a successful handshake: its span,
// and with pings on, the pump and the liveness loop.
func (c *liveConn) start(ws *websocket.Conn, cfg liveConfig) {
	c.up.Store(true)
	_, c.span = cfg.tracer.Start(context.Background(), "websocket.conn",
		trace.WithSpanKind(trace.SpanKindClient), trace.WithLinks(cfg.links...),
		trace.WithAttributes(otelx.URLFull(cfg.url),
			otelx.KeyPingInterval.Float64(cfg.ping.Seconds()), otelx.KeyPongTimeout.Float64(cfg.pong.Seconds())))
	if cfg.ping <= 0 {
		return
	}
	c.mu.Lock()
	c.pumping = true
	c.mu.Unlock()
	c.wg.Add(2)
	go c.pump()
	go c.live(ws, cfg)
}

// pump reads the socket ahead of gorilla until it fails (the conn was
// closed, failed, or the peer ended it).
func (c *liveConn) pump() {
	defer c.wg.Done()
	chunk := make([]byte, 16<<10)
	for {
		c.mu.Lock()
		space := maxBuffered - (len(c.buf) - c.off)
		c.mu.Unlock()
		if space <= 0 {
			// The application is behind: wait for it (or for the end).
			c.full.Store(true)
			select {
			case <-c.room:
			case <-c.stopc:
				c.full.Store(false)
				c.finish(net.ErrClosed)
				return
			}
			c.full.Store(false)
			continue
		}
		n, err := c.Conn.Read(chunk[:min(space, len(chunk))])
		if n > 0 {
			c.rx.Add(uint64(n))
			c.mu.Lock()
			if c.off > 0 && len(c.buf)+n > cap(c.buf) {
				c.buf = c.buf[:copy(c.buf, c.buf[c.off:])]
				c.off = 0
			}
			c.buf = append(c.buf, chunk[:n]...)
			c.mu.Unlock()
			signal(c.readable)
		}
		if err != nil {
			c.finish(err)
			return
		}
	}
}

// finish records the pump's final error and ends the conn's life.
func (c *liveConn) finish(err error) {
	c.mu.Lock()
	if c.failErr != nil {
		err = c.failErr
	}
	c.rerr = err
	c.mu.Unlock()
	signal(c.readable)
	c.stop()
	c.endSpan(err)
}

func (c *liveConn) stop() { c.stopOnce.Do(func() { close(c.stopc) }) }

// endSpan ends the conn's span once; err is what ended the conn. The
// application's Close and a peer's orderly end are not failures.
func (c *liveConn) endSpan(err error) {
	c.mu.Lock()
	if c.span == nil || c.spanEnded {
		c.mu.Unlock()
		return
	}
	c.spanEnded = true
	c.mu.Unlock()
	if err != nil && !c.closing.Load() && !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) {
		otelx.RecordError(c.span, err)
	} else if c.span.IsRecording() {
		c.span.SetStatus(codes.Unset, "")
	}
	c.span.End()
}

// live pings every cfg.ping and fails the conn when nothing arrives
// within cfg.pong of a ping. A ping is written with WriteControl and a
// deadline, which gorilla allows concurrently with the application's
// writes.
func (c *liveConn) live(ws *websocket.Conn, cfg liveConfig) {
	defer c.wg.Done()
	now := time.Now()
	nextPing := now.Add(cfg.ping)
	var pongDue time.Time // zero: no ping awaits an answer
	var rxAtPing uint64
	t := time.NewTimer(cfg.ping)
	defer t.Stop()
	for {
		select {
		case <-c.stopc:
			return
		case <-t.C:
		}
		now = time.Now()
		if !pongDue.IsZero() && !now.Before(pongDue) {
			switch {
			case c.rx.Load() != rxAtPing:
				pongDue = time.Time{} // answered
			case c.full.Load():
				// Bytes wait for the application; the peer is not
				// the one behind. Judge once the pump reads again.
				pongDue = now.Add(cfg.pong)
			default:
				c.pongTimeout(cfg)
				return
			}
		}
		if !now.Before(nextPing) {
			wdl := cfg.pong
			if wdl <= 0 {
				wdl = cfg.ping
			}
			// The write error needs no handling here: a conn that cannot
			// take a ping either ends (stopc) or stops answering.
			_ = ws.WriteControl(websocket.PingMessage, nil, now.Add(wdl))
			if cfg.pong > 0 && pongDue.IsZero() {
				// The oldest unanswered ping sets the deadline, so a
				// vanished peer is caught within ping+pong of leaving.
				rxAtPing = c.rx.Load()
				pongDue = now.Add(cfg.pong)
			}
			nextPing = now.Add(cfg.ping)
		}
		next := nextPing
		if !pongDue.IsZero() && pongDue.Before(next) {
			next = pongDue
		}
		t.Reset(time.Until(next))
	}
}

func (c *liveConn) pongTimeout(cfg liveConfig) {
	err := &PongTimeoutError{Peer: c.Conn.RemoteAddr().String(), PingInterval: cfg.ping, PongTimeout: cfg.pong}
	cfg.tel.PingTimeouts.Add(context.Background(), 1)
	if c.span != nil && c.span.IsRecording() {
		c.span.AddEvent("websocket.ping_timeout", trace.WithAttributes(
			attribute.String("network.peer.address", err.Peer)))
	}
	c.fail(err)
}

// fail closes the socket with err as what reads and writes return from now
// on.
func (c *liveConn) fail(err error) {
	c.mu.Lock()
	if c.failErr == nil {
		c.failErr = err
	}
	c.mu.Unlock()
	c.raw().Close()
	c.stop()
}

func (c *liveConn) Read(p []byte) (int, error) {
	if !c.up.Load() {
		// The handshake: one reader (gorilla), bounded.
		if c.hsRead >= MaxHandshakeBytes {
			return 0, errHandshakeTooLarge
		}
		if rem := MaxHandshakeBytes - c.hsRead; len(p) > rem {
			p = p[:rem]
		}
		n, err := c.Conn.Read(p)
		c.hsRead += n
		return n, err
	}
	c.mu.Lock()
	if !c.pumping {
		c.mu.Unlock()
		n, err := c.Conn.Read(p)
		if err != nil {
			if fe := c.failure(); fe != nil {
				err = fe
			}
		}
		return n, err
	}
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		if c.off < len(c.buf) {
			n := copy(p, c.buf[c.off:])
			c.off += n
			if c.off == len(c.buf) {
				c.buf, c.off = c.buf[:0], 0
			}
			c.mu.Unlock()
			signal(c.room)
			return n, nil
		}
		if c.rerr != nil {
			err := c.rerr
			c.mu.Unlock()
			return 0, err
		}
		dl := c.rdl
		c.mu.Unlock()
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, os.ErrDeadlineExceeded
			}
			if t == nil {
				t = time.NewTimer(d)
			} else {
				t.Reset(d)
			}
			expired = t.C
		}
		select {
		case <-c.readable:
		case <-expired:
		}
		c.mu.Lock()
	}
}

// errHandshakeTooLarge is ErrHandshakeTooLarge as a final error (the
// server's answer will not shrink on a retry).
var errHandshakeTooLarge = &tooLargeError{}

type tooLargeError struct{}

func (*tooLargeError) Error() string        { return ErrHandshakeTooLarge.Error() }
func (*tooLargeError) Is(target error) bool { return target == ErrHandshakeTooLarge }
func (*tooLargeError) Retryable() bool      { return false }
func (*tooLargeError) ErrorType() string    { return "handshake_too_large" }

func (c *liveConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	if err != nil {
		if fe := c.failure(); fe != nil {
			err = fe
		}
	}
	return n, err
}

func (c *liveConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	if !c.pumping {
		c.mu.Unlock()
		return c.Conn.SetReadDeadline(t)
	}
	c.rdl = t
	c.mu.Unlock()
	signal(c.readable)
	return nil
}

func (c *liveConn) SetDeadline(t time.Time) error {
	if err := c.SetReadDeadline(t); err != nil {
		return err
	}
	return c.Conn.SetWriteDeadline(t)
}

// Close closes the conn and waits for its goroutines. It is idempotent.
// Under TLS it closes the socket without a close_notify alert, which
// tls.Conn would try to write for up to 5s to a peer that is gone; the
// websocket close frame (the application's, or a session's) is the
// orderly end.
func (c *liveConn) Close() error {
	c.closing.Store(true)
	err := c.raw().Close()
	c.stop()
	c.wg.Wait()
	c.endSpan(nil)
	if c.failure() != nil || errors.Is(err, net.ErrClosed) {
		err = nil // closed already by fail, or a second Close
	}
	return err
}
