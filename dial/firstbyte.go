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
	fbArmed                  // established, nothing written or read yet
	fbWaiting                // the first byte must arrive by fbDeadline
	fbDone                   // a reply arrived: pass through, at the cost of one atomic load
)

// firstByteConn bounds the wait for the first byte of a reply: each Write
// of at least one byte before the reply sets the reads' deadline to
// FirstByteTimeout from its end (or the caller's own read deadline if that is
// earlier); a Read that comes before any Write (a server-first protocol,
// whose greeting is the reply) is bounded from establishment. When the
// bound expires the Read fails with an *Error of PhaseFirstByte. Once the
// reply has arrived the caller's read deadline is restored and the wrapper
// only passes calls through.
//
// This is the fault of incidents 01 and 02: a load balancer accepts the
// connection (and even the handshake) and then never answers.
//
// Under TLS the wrapper sits below the *tls.Conn (which must stay bare for
// net/http's HTTP/2) and sees records, not plaintext; records learns the
// true content type of each one (tlsrecord.go). Only a record known to
// carry application data ends the watch: a record it cannot read leaves
// the bound armed.
type firstByteConn struct {
	net.Conn
	state    atomic.Uint32
	timeout  time.Duration
	greeting time.Duration // bound of a Read before any Write; 0: none
	network  string
	addr     string
	peer     netip.AddrPort
	tel      telemetry
	health   *Health
	records  *recordWatch // non-nil under TLS

	mu            sync.Mutex // guards the fields below and every deadline change while not fbDone
	userDeadline  time.Time  // the read deadline the caller set; zero: none
	fbDeadline    time.Time  // when the first byte is due (fbWaiting)
	wroteAt       time.Time  // when the clock started: the latest Write before the reply, or establishment
	establishedAt time.Time
	expired       bool // the first-byte timeout was reported
	writing       int  // Writes of the caller in flight
}

func (s *dialState) watchFirstByte(conn net.Conn, peer netip.AddrPort, tlsCfg *tls.Config) *firstByteConn {
	c := &firstByteConn{Conn: conn, timeout: s.fbt, greeting: s.greeting, network: s.network, addr: s.addr,
		peer: peer, tel: s.tel, health: s.health}
	if tlsCfg == nil {
		c.establishedAt = time.Now()
		c.state.Store(fbArmed)
		return c
	}
	c.records = &recordWatch{}
	c.records.keys.inner = tlsCfg.KeyLogWriter
	tlsCfg.KeyLogWriter = &c.records.keys
	return c
}

// arm starts watching after the TLS handshake of tc: the next Write (or a
// Read that comes first) starts the clock.
func (c *firstByteConn) arm(tc *tls.Conn) {
	st := tc.ConnectionState()
	c.records.start(st.Version, st.CipherSuite)
	c.establishedAt = time.Now()
	c.state.CompareAndSwap(fbDisarmed, fbArmed)
}

// NetConn returns the underlying conn.
func (c *firstByteConn) NetConn() net.Conn { return c.Conn }

func (c *firstByteConn) Write(b []byte) (int, error) {
	// A zero-length Write sends nothing and is no request; a write that
	// tls.Conn makes on its own (the answer to a KeyUpdate) is none either.
	if st := c.state.Load(); (st == fbArmed || st == fbWaiting) && len(b) > 0 &&
		(c.records == nil || !c.records.ownWrite(b)) {
		c.startClock(1)
		n, err := c.Conn.Write(b)
		c.startClock(-1)
		return n, err
	}
	return c.Conn.Write(b)
}

// startClock sets the first-byte deadline from now: the clock runs from
// the end of the latest Write before the reply, so a request written in
// pieces, or in one Write slower than the bound, is not cut short. It is
// set when the Write begins (writing +1), so that a Read already blocked
// on another goroutine is covered too (a deadline change applies to
// pending reads), and again when it ends (writing -1); while a Write is in
// flight the bound does not expire (timedOut): no reply is due before the
// request is written, and a Write that stalls is UserTimeout's or the
// write deadline's.
func (c *firstByteConn) startClock(writing int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.writing += writing
	if st := c.state.Load(); st != fbArmed && st != fbWaiting {
		return
	}
	c.startLocked(time.Now(), c.timeout)
}

func (c *firstByteConn) startLocked(from time.Time, limit time.Duration) {
	c.wroteAt = from
	c.fbDeadline = from.Add(limit)
	c.state.Store(fbWaiting)
	_ = c.Conn.SetReadDeadline(c.effectiveLocked())
}

// startGreeting bounds a Read that comes before any Write: the reply of a
// server-first protocol (SMTP, MySQL, FTP) is its greeting, due from
// establishment.
func (c *firstByteConn) startGreeting() {
	if c.greeting <= 0 {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() == fbArmed {
		c.startLocked(c.establishedAt, c.greeting)
	}
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
	if st == fbArmed {
		c.startGreeting()
	}
	w := c.records
	if w != nil {
		// tls.Conn reads a record's header and then its body: a read
		// never goes past the record's end, so that records sees each
		// record whole before tls.Conn asks for more, and from the first
		// record on, so that it knows which records are the handshake's.
		b = w.limit(b)
	}
	looked := false
	for {
		n, err := c.Conn.Read(b)
		if n > 0 && c.state.Load() != fbDone {
			data := true
			if w != nil {
				data = w.feed(b[:n])
			}
			if data && st != fbDisarmed {
				c.replied()
			}
		}
		if err == nil || !isTimeout(err) {
			return n, err
		}
		switch c.timedOut() {
		case timeoutRetry:
			if n == 0 {
				continue
			}
		case timeoutOurs:
			// A Read whose deadline had passed before it began returns
			// without looking at the socket: a reply that came in time
			// and waits there unread is no stall. Look once.
			if n == 0 && !looked {
				looked = true
				c.lastLook()
				continue
			}
			return n, c.firstByteError()
		}
		return n, err
	}
}

// lastLookWait is how long the last look at the socket after the bound
// waits: a reply already there is read at once.
const lastLookWait = 5 * time.Millisecond

// lastLook lets the next read look at the socket once more after the
// bound has passed.
func (c *firstByteConn) lastLook() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() == fbWaiting {
		t := time.Now().Add(lastLookWait)
		if !c.userDeadline.IsZero() && c.userDeadline.Before(t) {
			t = c.userDeadline
		}
		_ = c.Conn.SetReadDeadline(t)
	}
}

// replied ends the watch: the reply began now.
func (c *firstByteConn) replied() {
	c.mu.Lock()
	if c.state.Load() == fbWaiting {
		// Hand the caller back their own deadline.
		_ = c.Conn.SetReadDeadline(c.userDeadline)
		c.tel.recordDuration(context.Background(), mPhaseFirstByte, mOK, time.Since(c.wroteAt).Seconds())
	}
	c.state.Store(fbDone)
	c.mu.Unlock()
	if c.records != nil {
		c.records.release()
	}
}

// What a read timeout was.
const (
	timeoutCaller = iota // the caller's own deadline
	timeoutOurs          // the first-byte bound
	timeoutRetry         // a deadline since moved: a Write restarted the clock meanwhile
)

// timedOut tells whose deadline a read timed out at. The state is read
// again: a Read may have blocked before the Write that started the clock,
// and a concurrent Write may have moved the bound after the read's
// deadline fired (then the read goes on: the bound has not passed).
func (c *firstByteConn) timedOut() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.state.Load() != fbWaiting {
		return timeoutCaller
	}
	now := time.Now()
	userPassed := !c.userDeadline.IsZero() && !c.userDeadline.After(now)
	switch {
	case !c.fbDeadline.After(now) && (c.userDeadline.IsZero() || c.fbDeadline.Before(c.userDeadline)):
		if c.writing > 0 {
			c.startLocked(now, c.timeout) // the request is still being written
			return timeoutRetry
		}
		return timeoutOurs
	case userPassed:
		return timeoutCaller
	}
	return timeoutRetry
}

// firstByteError is the *Error of a first-byte timeout, reported (metrics,
// Health) once per conn.
func (c *firstByteConn) firstByteError() error {
	c.mu.Lock()
	report := !c.expired
	c.expired = true
	bound := c.fbDeadline.Sub(c.wroteAt) // FirstByteTimeout, or GreetingTimeout
	c.mu.Unlock()
	if report {
		c.tel.recordDuration(context.Background(), mPhaseFirstByte, mTimeout, bound.Seconds())
		c.health.record(c.peer, EventFirstByteStall, 0, time.Now())
	}
	return &Error{Phase: PhaseFirstByte, Network: c.network, Addr: c.addr, Peer: c.peer,
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

// TLS record content types (RFC 8446 §5.1) and handshake message types.
const (
	recordCCS         = 20
	recordAlert       = 21
	recordHandshake   = 22
	recordApplication = 23
	recordHeaderLen   = 5
	msgKeyUpdate      = 24
	// keyUpdateAnswerLen is the record crypto/tls sends to answer a
	// KeyUpdate that asked for one: a header and a 5-byte message with its
	// inner type and a 16-byte tag (it does not pad).
	keyUpdateAnswerLen = recordHeaderLen + 4 + 1 + 1 + 16
)

// recordWatch follows the TLS records the tls.Conn reads through a
// firstByteConn, from the first byte of the handshake on, and tells which
// one carries the reply. Reads stop at each record's end (limit), so that
// every record after the handshake is seen whole, in order, before
// tls.Conn processes it: in TLS 1.2 its header says what it is; in TLS 1.3
// it is opened with the server's traffic keys (tlsrecord.go). A record of
// application data with content is the reply; every other record — a
// session ticket (with or without a lifetime, kept or dropped), a
// KeyUpdate, an empty record, an alert, a renegotiation, or a record that
// cannot be read — is not, and leaves the bound armed.
//
// All fields but the atomics are touched only by Read, which tls.Conn
// serialises (and, before that, by the handshake on the same goroutine).
type recordWatch struct {
	keys   keyLog
	hdr    [recordHeaderLen]byte
	hdrN   int    // header bytes of the current record seen
	left   int    // body bytes of the current record still to come
	body   []byte // the current record's body, while it is to be opened
	plain  []byte // scratch for opening
	hs     []byte // a TLS 1.3 handshake message split across records
	app    bool   // the handshake is over: records are the server's traffic
	vers   uint16
	tls12  int      // TLS 1.2: the longest body an empty application data record may have
	hello  []byte   // the start of the server's first handshake message (its ServerHello)
	cbc    *cbcKeys // TLS 1.2 CBC: tells a record's content length
	in     *recordKeys
	broken bool         // TLS 1.3 records can no longer be opened: none is taken for the reply
	ownW   atomic.Int32 // writes tls.Conn owes on its own (KeyUpdate answers)
	reneg  atomic.Bool  // TLS 1.2 renegotiation in progress: its writes are tls.Conn's
	// The renegotiation's ChangeCipherSpecs seen so far: it ends with the
	// second one's Finished (the server's, or the client's when resumed).
	serverCCS, clientCCS atomic.Bool
}

// start begins watching the server's traffic after a handshake of the
// given version and suite.
func (w *recordWatch) start(vers, suite uint16) {
	w.app, w.vers = true, vers
	if vers == tls.VersionTLS13 {
		var err error
		if w.keys.secret == nil {
			err = errors.New("no traffic secret")
		} else {
			w.in, err = newRecordKeys(suite, w.keys.secret)
		}
		w.broken = err != nil
		w.keys.secret = nil
		return
	}
	w.tls12 = emptyRecordLen12(suite)
	if vers == tls.VersionTLS12 && len(w.hello) == serverHelloRandomEnd {
		w.cbc, _ = newCBCKeys(suite, w.keys.master, w.keys.clientRandom, w.hello[serverHelloRandomEnd-32:])
	}
	w.keys.master, w.hello = nil, nil
}

// serverHelloRandomEnd is where the random of a ServerHello message ends:
// type (1), length (3), version (2), random (32).
const serverHelloRandomEnd = 4 + 2 + 32

// emptyRecordLen12 is the body length of an empty application data record
// under a TLS 1.2 suite, or -1 when the length does not tell an empty
// record from one with content (CBC: padding hides up to a block; such a
// record then counts as content only when longer than any empty one).
func emptyRecordLen12(suite uint16) int {
	switch suite {
	case tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256, tls.TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256,
		tls.TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384, tls.TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384,
		tls.TLS_RSA_WITH_AES_128_GCM_SHA256, tls.TLS_RSA_WITH_AES_256_GCM_SHA384:
		return 8 + 16 // explicit nonce, tag
	case tls.TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256, tls.TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256:
		return 16
	}
	// CBC with SHA-256 MAC: IV 16 + (MAC 32 + padding) up to 48. Any
	// record up to 64 bytes may be empty; a longer one has content.
	return 64
}

// limit shortens b so that a read ends at the current record's end (or its
// header's).
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

// feed follows the record boundaries over p and reports whether a record
// that p completed carries the reply.
func (w *recordWatch) feed(p []byte) (reply bool) {
	for len(p) > 0 {
		if w.hdrN < recordHeaderLen {
			k := copy(w.hdr[w.hdrN:], p)
			w.hdrN += k
			p = p[k:]
			if w.hdrN < recordHeaderLen {
				return reply
			}
			w.left = int(w.hdr[3])<<8 | int(w.hdr[4])
			w.body = w.body[:0]
		}
		k := min(w.left, len(p))
		switch {
		case w.app && (w.in != nil && !w.broken || w.cbc != nil):
			w.body = append(w.body, p[:k]...)
		case !w.app && w.hdr[0] == recordHandshake && len(w.hello) < serverHelloRandomEnd:
			w.hello = append(w.hello, p[:min(k, serverHelloRandomEnd-len(w.hello))]...)
		}
		w.left -= k
		p = p[k:]
		if w.left == 0 {
			if w.app && w.record() {
				reply = true
			}
			w.hdrN = 0
		}
	}
	return reply
}

// record classifies the record just completed (header w.hdr).
func (w *recordWatch) record() (reply bool) {
	typ, n := w.hdr[0], int(w.hdr[3])<<8|int(w.hdr[4])
	if w.vers != tls.VersionTLS13 {
		switch typ {
		case recordApplication:
			if w.cbc != nil {
				return w.cbc.contentLen(w.body) > 0
			}
			return n > w.tls12
		case recordHandshake:
			switch {
			case !w.reneg.Load():
				// A HelloRequest: tls.Conn renegotiates (when the
				// config allows) and writes its own handshake
				// meanwhile; the keys change and are not followed
				// (records go by length).
				w.serverCCS.Store(false)
				w.clientCCS.Store(false)
				w.reneg.Store(true)
				w.cbc = nil
			case w.serverCCS.Load() && w.clientCCS.Load():
				w.reneg.Store(false) // the server's Finished, last of a full handshake
			}
		case recordCCS:
			w.serverCCS.Store(w.reneg.Load())
		}
		return false
	}
	if typ != recordApplication || w.broken {
		return false // a change_cipher_spec that tls.Conn skips, or an error it will report
	}
	content, inner, ok := w.in.open(w.plain, w.body)
	if !ok {
		// Too short, or no content type: tls.Conn fails the Read on
		// it; take no later record for the reply.
		w.broken = true
		return false
	}
	w.plain = content[:0]
	switch inner {
	case recordApplication:
		return len(content) > 0
	case recordHandshake:
		w.handshake(content)
	}
	return false
}

// handshake follows the post-handshake messages of TLS 1.3 (tickets,
// KeyUpdate), which may be split across records.
func (w *recordWatch) handshake(content []byte) {
	w.hs = append(w.hs, content...)
	for len(w.hs) >= 4 {
		n := int(w.hs[1])<<16 | int(w.hs[2])<<8 | int(w.hs[3])
		if len(w.hs) < 4+n {
			return
		}
		if w.hs[0] == msgKeyUpdate && n == 1 {
			if w.hs[4] == 1 { // update_requested: tls.Conn answers
				w.ownW.Add(1)
			}
			if err := w.in.update(); err != nil {
				w.broken = true
			}
		}
		w.hs = w.hs[4+n:]
	}
	if len(w.hs) == 0 {
		w.hs = w.hs[:0:0]
	}
}

// ownWrite reports whether a raw write of b is one tls.Conn makes on its
// own while reading (a KeyUpdate answer, a renegotiation), which is no
// request and does not restart the clock. The client's ChangeCipherSpec
// comes with its Finished in one write (tls.Conn buffers its flight); the
// caller's Writes wait for the renegotiation to end.
func (w *recordWatch) ownWrite(b []byte) bool {
	if w.reneg.Load() {
		for i := 0; i+recordHeaderLen <= len(b); i += recordHeaderLen + (int(b[i+3])<<8 | int(b[i+4])) {
			if b[i] == recordCCS {
				w.clientCCS.Store(true)
				if w.serverCCS.Load() {
					w.reneg.Store(false) // the client's Finished, last of a resumption
				}
			}
		}
		return true
	}
	n := len(b)
	for {
		k := w.ownW.Load()
		if k == 0 || n != keyUpdateAnswerLen {
			return false
		}
		if w.ownW.CompareAndSwap(k, k-1) {
			return true
		}
	}
}

// release drops what the watch kept once the reply has come.
func (w *recordWatch) release() {
	w.body, w.plain, w.hs, w.in, w.cbc = nil, nil, nil, nil, nil
}
