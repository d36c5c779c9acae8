package transport

import (
	"context"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"

	"github.com/gorilla/websocket"
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
// pings are on, three goroutines serve it:
//
//   - pump reads the socket ahead of gorilla into a bounded buffer,
//     notes when the last byte arrived from the peer and queues a pong
//     for each ping of the peer's (rx follows the peer's frames from the
//     first byte after the 101's headers), whether or not the
//     application is reading (gorilla processes control frames only inside
//     its own reads, and a liveness check that depends on the
//     application's read loop is the trap of gorilla #649, #667, #747,
//     #887);
//   - pinger writes the pings, and the pongs owed to the peer's pings,
//     below gorilla: never under gorilla's write lock, so a ping or pong
//     neither waits for the application's writes nor holds them up;
//   - live asks for a ping every PingInterval and judges (pingJudge): the
//     peer is dead when, for PongTimeout after a ping, no byte arrived
//     from it and (on a Linux TCP socket) its TCP acknowledged none of
//     the bytes queued before the ping.
//
// Liveness is time since the last sign of the peer: a byte from it (a
// pong, a message, anything) or, on a Linux TCP socket, an acknowledgement
// of bytes queued before the ping (see pingJudge), or bytes of the peer's
// that arrived lately and wait unread in the socket (the pump held up).
// The ping's start is sampled before its write, so a pong that arrives
// before the write returns still counts. When the read-ahead buffer is
// full the application is behind, not the peer: the pong deadline waits
// until the pump may read again.
//
// Writes: gorilla's client writes one or more whole frames per Write (see
// gorilla's conn.go, write and WriteControl; "extra" is never used in
// client mode), and frames tells where the stream is, so a ping goes only
// between two frames: by the pinger when no write is in progress, or
// first thing in the application's next Write. Every socket write holds
// wlock; a Write waiting for it is bounded by its write deadline, so a
// ping stuck behind a peer that stopped reading never makes an
// application write overrun its deadline.
//
// The application's read deadlines apply to waiting on the buffer, never
// to the socket; write deadlines apply to the wait for wlock and to the
// socket.
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
	lastPing  sentPing // the latest ping written
	pings     uint64   // pings written

	readable chan struct{} // cap 1: buf grew, rerr or rdl changed
	room     chan struct{} // cap 1: the reader made room in buf
	stopc    chan struct{} // closed when the conn ends: stops the goroutines
	stopOnce sync.Once
	epoch    time.Time    // the clock's origin: times below are since epoch
	lastRx   atomic.Int64 // when the pump last read a byte (ns since epoch)
	full     atomic.Bool  // the pump waits for room
	wg       sync.WaitGroup
	closing  atomic.Bool   // Close was called
	up       atomic.Bool   // start was called: the handshake is over
	hsRead   int           // bytes read before start; gorilla's goroutine only
	hsEnd    headEnd       // finds where the 101's headers end (before start)
	rx       frameTracker  // the peer's frames: the handshake's reads, then the pump's
	rxPings  atomic.Uint64 // pings from the peer that rx found (and queued a pong for)
	gPings   atomic.Uint64 // pings from the peer that gorilla's handler saw

	// The write side, once guarded (pings on and the conn up).
	guarded  atomic.Bool
	wlock    chan struct{} // cap 1: held for every write to the socket
	frames   frameTracker  // guarded by wlock
	wdlMu    sync.Mutex    // guards wdl and pingerOwns, and orders deadline changes on the socket
	wdl      time.Time     // the write deadline gorilla (or the application) set
	wdlSet   chan struct{} // cap 1: wdl changed
	pingerOn bool          // the pinger writes: the socket has no write deadline meanwhile
	pingDue  atomic.Bool   // a ping is wanted
	pongDue  atomic.Bool   // a pong is wanted (its payload in pong)
	pongMu   sync.Mutex    // guards pong
	pong     []byte        // the payload of the latest ping from the peer
	pingReq  chan struct{} // cap 1: wakes the pinger
	sent     chan struct{} // cap 1: a ping was written: wakes live

	span trace.Span // websocket.conn; nil before start

	sock syscall.RawConn // the TCP socket (nil: not a *net.TCPConn); set by start
}

// sentPing is one ping: when its write began and ended (ns since the
// conn's epoch). On a TCP socket whose send queue can be read (tcp), a
// ping counts from when it was wanted (start = done = then), written or
// not, and acked is the count of bytes the peer's TCP had acknowledged
// then; limit is that count once everything queued before the ping has
// been acknowledged (noLimit until the ping is written).
type sentPing struct {
	start, done int64
	tcp         bool
	acked       uint64
	limit       uint64
}

const noLimit = math.MaxUint64

func newLiveConn(c net.Conn) *liveConn {
	return &liveConn{Conn: c, readable: make(chan struct{}, 1), room: make(chan struct{}, 1),
		stopc: make(chan struct{}), epoch: time.Now(), wlock: make(chan struct{}, 1),
		wdlSet: make(chan struct{}, 1), pingReq: make(chan struct{}, 1), sent: make(chan struct{}, 1)}
}

// now is the conn's monotonic clock.
func (c *liveConn) now() int64 { return int64(time.Since(c.epoch)) }

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

// tcpSocket finds the *net.TCPConn under c (through NetConn wrappers such
// as the Dialer's) and returns its raw socket, or nil.
func tcpSocket(c net.Conn) syscall.RawConn {
	for range 8 {
		if tc, ok := c.(*net.TCPConn); ok {
			if rc, err := tc.SyscallConn(); err == nil {
				return rc
			}
			return nil
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = u.NetConn()
	}
	return nil
}

// unreadQueue follows the socket's receive queue at live's looks.
type unreadQueue struct {
	n         int   // its length at the last look
	changedAt int64 // when it was last seen to change
}

// fresh reports whether the receive queue holds bytes the pump has not
// read and changed within the last PongTimeout: bytes from the peer
// arrived lately. A queue that stays as it is says nothing new of the
// peer.
func (u *unreadQueue) fresh(c *liveConn, now, pong int64) bool {
	if c.sock == nil {
		return false
	}
	n, ok := recvQueued(c.sock)
	if !ok {
		return false
	}
	if n > 0 && n != u.n {
		u.changedAt = now
	}
	u.n = n
	return n > 0 && now-u.changedAt < pong
}

// ackedBytes returns how many bytes the peer's TCP has acknowledged.
func (c *liveConn) ackedBytes() (uint64, bool) {
	if c.sock == nil {
		return 0, false
	}
	_, a, ok := sendQueue(c.sock)
	return a, ok
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
// and with pings on, the pump, the pinger and the liveness loop.
func (c *liveConn) start(ws *websocket.Conn, cfg liveConfig) {
	if cfg.ping > 0 {
		c.sock = tcpSocket(c.raw())
		c.guarded.Store(true)
		c.lastRx.Store(c.now()) // the 101 was the peer's last word
		// Pongs go out like pings, between frames and below gorilla's
		// write lock: gorilla's own handler would hold that lock for up to
		// a second against a socket that does not drain, and the
		// application's writes behind it past their deadlines.
		//
		// The pump answers the peer's pings as it reads them, whether or
		// not the application reads (gorilla's handler runs only inside
		// the application's reads: a peer that pings would drop a client
		// whose OnMessage takes longer than its pong timeout). gorilla's
		// handler answers only a ping the pump did not see (the Nth ping
		// gorilla parses is the Nth the pump found), so that the answer
		// never rests on the pump's parsing alone.
		ws.SetPingHandler(func(data string) error {
			if c.gPings.Add(1) > c.rxPings.Load() {
				c.queuePong([]byte(data))
			}
			return nil
		})
	}
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
	c.wg.Add(3)
	go c.pump()
	go c.pinger()
	go c.live(cfg)
}

// queuePong asks the pinger for a pong with payload p (RFC 6455 §5.5.3:
// the latest ping's payload is the one answered).
func (c *liveConn) queuePong(p []byte) {
	c.pongMu.Lock()
	c.pong = append(c.pong[:0], p...)
	c.pongMu.Unlock()
	c.pongDue.Store(true)
	signal(c.pingReq)
}

// peerPing is called by rx for each ping frame from the peer.
func (c *liveConn) peerPing(p []byte) {
	c.rxPings.Add(1)
	c.queuePong(p)
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
			c.lastRx.Store(c.now())
			c.rx.advance(chunk[:n], c.peerPing)
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

// live asks for a ping every cfg.ping and fails the conn when the peer
// is late with an answer (see pingJudge). The oldest unanswered ping sets
// the deadline, so a vanished peer is caught within ping+pong of leaving.
func (c *liveConn) live(cfg liveConfig) {
	defer c.wg.Done()
	t := time.NewTimer(cfg.ping)
	defer t.Stop()
	ping, pong := int64(cfg.ping), int64(cfg.pong)
	nextPing := c.now() + ping
	judge := pingJudge{pong: pong}
	var seen uint64
	var unread unreadQueue
	for {
		select {
		case <-c.stopc:
			return
		case <-t.C:
		case <-c.sent:
		}
		now := c.now()
		if p, n := c.latestPing(); n != seen && pong > 0 {
			seen = n
			if p.tcp {
				judge.written(p.limit)
			} else {
				judge.sent(p)
			}
		}
		switch judge.check(now, c.lastRx.Load(), c.ackedBytes) {
		case verdictDead:
			switch {
			case c.full.Load():
				// Bytes wait for the application; the peer is not the one
				// behind. Judge once the pump reads again.
				judge.extend(now + pong)
			case unread.fresh(c, now, pong):
				// The peer's bytes reached the socket, and the pump has not
				// read them yet (the scheduler, or a TLS read waiting to
				// answer a KeyUpdate behind a write): sample before acting.
				judge.extend(now + max(pong/4, 1))
			default:
				c.pongTimeout(cfg)
				return
			}
		}
		if now >= nextPing {
			if pong > 0 {
				if a, ok := c.ackedBytes(); ok {
					// Sampled before the ping is asked for: an answer
					// that comes at once still counts.
					judge.sent(sentPing{start: now, done: now, tcp: true, acked: a, limit: noLimit})
				}
			}
			c.pingDue.Store(true)
			signal(c.pingReq)
			nextPing = now + ping
		}
		next := nextPing
		if due, ok := judge.due(); ok && due < next {
			next = due
		}
		t.Reset(time.Duration(next - now))
	}
}

// pingJudge holds the pings that no byte from the peer has answered yet:
// the oldest (whose deadline counts) and the newest. Pure: it is given the
// times, and asks for the acknowledged byte count.
//
// Without a view of the socket's send queue, a ping counts from when its
// write ended (one that the socket does not take starts no clock) and is
// late PongTimeout later.
//
// On a TCP socket (Linux) a ping counts from when it was wanted, and is
// late when for PongTimeout since then no byte arrived from the peer and
// the peer's TCP acknowledged none of the bytes queued before the ping
// (looked at every quarter of PongTimeout). A ping that waits behind an
// upload is not late while the peer takes the upload, however slowly; a
// vanished peer acknowledges nothing, whether or not the ping could be
// written; a hung peer stops acknowledging when its receive buffer is
// full, and the acknowledgement of the ping itself never counts.
type pingJudge struct {
	pong             int64 // PongTimeout (ns)
	oldest, newest   sentPing
	oldestDue        int64
	hasOld, hasNewer bool
	acked            uint64 // tcp: the acknowledged count last seen
	progressAt       int64  // tcp: when the peer last made progress
}

type pingVerdict int

const (
	verdictAlive pingVerdict = iota
	verdictDead
)

// sent notes a ping written (or, tcp, wanted).
func (j *pingJudge) sent(p sentPing) {
	if !j.hasOld {
		j.setOldest(p)
		return
	}
	j.newest, j.hasNewer = p, true
}

// written notes that the ping wanted last was written, with everything
// queued before it acknowledged at limit: the pings wanted and not yet
// written are the one written.
func (j *pingJudge) written(limit uint64) {
	if j.hasOld && j.oldest.tcp && j.oldest.limit == noLimit {
		j.oldest.limit = limit
	}
	if j.hasNewer && j.newest.tcp && j.newest.limit == noLimit {
		j.newest.limit = limit
	}
}

func (j *pingJudge) setOldest(p sentPing) {
	j.oldest, j.hasOld = p, true
	j.oldestDue = p.done + j.pong
	if p.tcp {
		j.acked, j.progressAt = p.acked, p.done
		j.oldestDue = p.done + max(j.pong/4, 1)
	}
}

// check drops the pings answered by a byte that arrived at lastRx or
// later, and says whether the oldest left is late at now.
func (j *pingJudge) check(now, lastRx int64, acked func() (uint64, bool)) pingVerdict {
	if j.hasOld && lastRx >= j.oldest.start {
		j.hasOld = false
		if j.hasNewer && lastRx < j.newest.start {
			j.setOldest(j.newest)
		}
		j.hasNewer = false
	}
	if !j.hasOld || now < j.oldestDue {
		return verdictAlive
	}
	if j.oldest.tcp {
		if a, ok := acked(); ok && a != j.acked {
			if j.acked < j.oldest.limit {
				j.progressAt = now // bytes queued before the ping moved
			}
			j.acked = a
		}
		if quiet := now - j.progressAt; quiet < j.pong {
			j.oldestDue = now + min(max(j.pong/4, 1), j.pong-quiet)
			return verdictAlive
		}
	}
	return verdictDead
}

func (j *pingJudge) extend(due int64) { j.oldestDue = due }

func (j *pingJudge) due() (int64, bool) { return j.oldestDue, j.hasOld }

// latestPing returns the latest ping written and how many were.
func (c *liveConn) latestPing() (sentPing, uint64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.lastPing, c.pings
}

// pinger writes a ping each time live asks for one and no Write sent it
// first. Its write has no deadline of its own: a socket that does not
// drain holds the ping (and starts no clock) until it drains or the conn
// is closed; Writes waiting meanwhile are bounded by their deadlines.
func (c *liveConn) pinger() {
	defer c.wg.Done()
	for {
		select {
		case <-c.stopc:
			return
		case <-c.pingReq:
		}
		select {
		case <-c.stopc:
			return
		case c.wlock <- struct{}{}:
		}
		if c.pingDue.Load() || c.pongDue.Load() {
			c.wdlMu.Lock()
			c.pingerOn = true
			_ = c.Conn.SetWriteDeadline(time.Time{})
			c.wdlMu.Unlock()
			err := c.writeControl()
			c.wdlMu.Lock()
			c.pingerOn = false
			_ = c.Conn.SetWriteDeadline(c.wdl)
			c.wdlMu.Unlock()
			if err != nil && !c.closing.Load() {
				// Without a deadline, only a broken socket fails a write.
				c.fail(err)
			}
		}
		<-c.wlock
	}
}

// wsControlFrame is a masked client control frame (RFC 6455 §5.2, §5.5)
// with a payload of at most 125 bytes.
func wsControlFrame(opcode byte, payload []byte) []byte {
	k := rand.Uint32()
	key := [4]byte{byte(k >> 24), byte(k >> 16), byte(k >> 8), byte(k)}
	f := make([]byte, 0, 6+len(payload))
	f = append(f, 0x80|opcode, 0x80|byte(len(payload)))
	f = append(f, key[:]...)
	for i, b := range payload {
		f = append(f, b^key[i%4])
	}
	return f
}

// writeControl writes the wanted pong and ping if the stream is between
// two frames and no close frame was written; the caller holds wlock.
func (c *liveConn) writeControl() error {
	if !c.frames.atBoundary() || c.frames.closed {
		return nil
	}
	if c.pongDue.CompareAndSwap(true, false) {
		c.pongMu.Lock()
		f := wsControlFrame(websocket.PongMessage, c.pong)
		c.pongMu.Unlock()
		n, err := c.Conn.Write(f)
		c.frames.advance(f[:n], nil)
		if err != nil {
			return err
		}
	}
	if !c.pingDue.CompareAndSwap(true, false) {
		return nil
	}
	start := c.now() // sampled before the write: a fast pong counts
	p := sentPing{start: start}
	if c.sock != nil {
		// What is queued before the ping: once the peer's TCP has
		// acknowledged all of it, further acks are of the ping and after.
		if q, a, ok := sendQueue(c.sock); ok {
			p.tcp, p.limit = true, a+uint64(q)
		}
	}
	f := wsControlFrame(websocket.PingMessage, nil)
	n, err := c.Conn.Write(f)
	c.frames.advance(f[:n], nil)
	if err != nil {
		return err
	}
	p.done = c.now()
	c.mu.Lock()
	c.lastPing = p
	c.pings++
	c.mu.Unlock()
	signal(c.sent)
	return nil
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
		// What gorilla reads beyond the 101's headers is the start of
		// the peer's frames: rx follows them from their first byte.
		if i := c.hsEnd.feed(p[:n]); i >= 0 {
			c.rx.advance(p[i:n], c.peerPing)
		}
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
	if !c.guarded.Load() || !c.up.Load() {
		return c.Conn.Write(p)
	}
	if err := c.lockWrite(); err != nil {
		return 0, c.writeErr(err)
	}
	defer func() { <-c.wlock }()
	if c.pingDue.Load() || c.pongDue.Load() {
		// A ping or pong is wanted and the pinger could not write it while
		// this write (or the one before) held the socket: it goes first.
		if err := c.writeControl(); err != nil {
			return 0, c.writeErr(err)
		}
	}
	n, err := c.Conn.Write(p)
	c.frames.advance(p[:n], nil)
	return n, c.writeErr(err)
}

// lockWrite takes wlock, waiting no later than the write deadline.
func (c *liveConn) lockWrite() error {
	select {
	case c.wlock <- struct{}{}:
		return nil
	default:
	}
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		c.wdlMu.Lock()
		dl := c.wdl
		c.wdlMu.Unlock()
		var expired <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return os.ErrDeadlineExceeded
			}
			if t == nil {
				t = time.NewTimer(d)
			} else {
				t.Reset(d)
			}
			expired = t.C
		}
		select {
		case c.wlock <- struct{}{}:
			return nil
		case <-expired:
			return os.ErrDeadlineExceeded
		case <-c.wdlSet:
		}
	}
}

// writeErr is err, or why fail closed the conn.
func (c *liveConn) writeErr(err error) error {
	if err != nil {
		if fe := c.failure(); fe != nil {
			return fe
		}
	}
	return err
}

func (c *liveConn) SetWriteDeadline(t time.Time) error {
	if !c.guarded.Load() {
		return c.Conn.SetWriteDeadline(t)
	}
	c.wdlMu.Lock()
	defer c.wdlMu.Unlock()
	c.wdl = t
	signal(c.wdlSet)
	if c.pingerOn {
		return nil // the pinger puts it on the socket when its write ends
	}
	return c.Conn.SetWriteDeadline(t)
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
	return c.SetWriteDeadline(t)
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

// frameTracker follows the frames of the bytes written, so that a ping
// goes only between two of them. It reads the headers (RFC 6455 §5.2:
// 2 bytes, the extended length, the masking key) across any split of the
// stream into writes.
//
// On the read side it also collects the payload of each ping frame (at
// most 125 bytes; a longer one is the peer's protocol error, which gorilla
// reports) and hands it to the caller.
type frameTracker struct {
	hdr    [14]byte
	hn     int    // header bytes seen of the current frame
	left   uint64 // payload bytes still to come
	closed bool   // a close frame was written: no frame may follow it
	ping   bool   // the current frame is a ping whose payload is collected
	pay    []byte // the ping's payload so far (unmasked)
}

func (f *frameTracker) atBoundary() bool { return f.hn == 0 && f.left == 0 }

// frameHeaderLen is the length of the header that begins with h (len(h) >= 2).
func frameHeaderLen(h []byte) int {
	n := 2
	switch h[1] & 0x7f {
	case 126:
		n += 2
	case 127:
		n += 8
	}
	if h[1]&0x80 != 0 {
		n += 4
	}
	return n
}

// advance follows the stream through p. onPing, when not nil, is called
// with the payload of each whole ping frame (valid during the call only).
func (f *frameTracker) advance(p []byte, onPing func([]byte)) {
	for len(p) > 0 {
		if f.left > 0 {
			k := min(f.left, uint64(len(p)))
			if f.ping {
				f.pay = append(f.pay, p[:k]...)
			}
			f.left -= k
			p = p[k:]
			if f.left == 0 && f.ping {
				f.pingDone(onPing)
			}
			continue
		}
		need := 2
		if f.hn >= 2 {
			need = frameHeaderLen(f.hdr[:f.hn])
		}
		k := copy(f.hdr[f.hn:need], p)
		f.hn += k
		p = p[k:]
		if f.hn < 2 || f.hn < frameHeaderLen(f.hdr[:f.hn]) {
			continue
		}
		if f.hdr[0]&0x0f == websocket.CloseMessage {
			f.closed = true
		}
		switch l7 := f.hdr[1] & 0x7f; l7 {
		case 126:
			f.left = uint64(binary.BigEndian.Uint16(f.hdr[2:]))
		case 127:
			f.left = binary.BigEndian.Uint64(f.hdr[2:])
		default:
			f.left = uint64(l7)
		}
		f.hn = 0
		if onPing != nil && f.hdr[0]&0x0f == websocket.PingMessage && f.left <= 125 {
			f.ping, f.pay = true, f.pay[:0]
			if f.left == 0 {
				f.pingDone(onPing)
			}
		}
	}
}

// pingDone hands a collected ping payload, unmasked, to onPing.
func (f *frameTracker) pingDone(onPing func([]byte)) {
	f.ping = false
	if f.hdr[1]&0x80 != 0 { // masked (a server must not, but say what it meant)
		key := f.hdr[frameHeaderLen(f.hdr[:])-4:]
		for i := range f.pay {
			f.pay[i] ^= key[i%4]
		}
	}
	onPing(f.pay)
}

// headEnd finds the end of an HTTP answer's headers in a stream: the
// first empty line, its line ending "\n" or "\r\n" as Go's textproto
// reads them.
type headEnd struct {
	done bool
	line int  // bytes of the current line so far
	cr   bool // the current line is "\r" so far
}

// feed returns the index in p where the bytes after the headers begin
// (len(p) when they end with p), or -1 while they go on; once they
// ended, 0.
func (h *headEnd) feed(p []byte) int {
	if h.done {
		return 0
	}
	for i, b := range p {
		if b == '\n' {
			if h.line == 0 || (h.line == 1 && h.cr) {
				h.done = true
				return i + 1
			}
			h.line, h.cr = 0, false
			continue
		}
		if h.line == 0 {
			h.cr = b == '\r'
		}
		h.line++
	}
	return -1
}
