package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"runtime"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/transport"
)

// statusDisconnected is LIFELINE_E_DISCONNECTED: a send found no
// connection (nothing was written), or the connection broke under it.
const statusDisconnected int32 = 20

// Event kinds, as in lifeline.h.
const (
	eventConnect      int32 = 1
	eventConnected    int32 = 2
	eventMessage      int32 = 3
	eventDisconnected int32 = 4
	eventState        int32 = 5
	eventClosed       int32 = 6
)

// Send flags, as in lifeline.h.
const (
	sendWhenConnected = 1
	sendOnConnect     = 2
)

// Session defaults of the shim's own keys.
const (
	defaultQueueEvents = 1024
	defaultQueueBytes  = 64 << 20
)

// sessionConfig is a session's own keys (the client gives the rest).
type sessionConfig struct {
	handshake, ping, pong, write, stable time.Duration
	maxMessage                           int64
	queueEvents                          int
	queueBytes                           int64
	onConnect                            bool
}

// sessionKeys are the keys of lifeline_session_new's JSON, each with its
// kind: "ms" durations, "int" counts, "bool".
var sessionKeys = map[string]string{
	"handshake_timeout_ms": "ms", "ping_interval_ms": "ms", "pong_timeout_ms": "ms",
	"write_timeout_ms": "ms", "stable_after_ms": "ms", "max_message_bytes": "int",
	"queue_max_events": "int", "queue_max_bytes": "int", "on_connect": "bool",
}

// parseSessionConfig reads a session's JSON object of keys (empty: all
// defaults). Unknown keys and values of the wrong kind are refused, and
// nothing of a bad document is applied.
func parseSessionConfig(doc []byte) (sessionConfig, *Error) {
	var sc sessionConfig
	if len(doc) == 0 {
		return sc, nil
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(doc, &m); err != nil || m == nil {
		return sc, argError("config is not a JSON object")
	}
	names := make([]string, 0, len(m))
	for k := range m {
		names = append(names, k)
	}
	sort.Strings(names)
	for _, k := range names {
		kind, ok := sessionKeys[k]
		if !ok {
			return sc, &Error{Status: statusUnknownKey, Phase: "config", Type: "unknown_key",
				Msg: fmt.Sprintf("lifeline: unknown session key %q", k)}
		}
		raw := m[k]
		if kind == "bool" {
			var b bool
			if json.Unmarshal(raw, &b) != nil {
				return sc, badValue(k, "want true or false")
			}
			sc.onConnect = b
			continue
		}
		var n int64
		if json.Unmarshal(raw, &n) != nil {
			return sc, badValue(k, "want an integer")
		}
		if kind == "ms" {
			if n > maxDeadlineMS || n < -maxDeadlineMS {
				return sc, badValue(k, "out of range")
			}
		}
		d := time.Duration(n) * time.Millisecond
		switch k {
		case "handshake_timeout_ms":
			sc.handshake = d
		case "ping_interval_ms":
			sc.ping = d
		case "pong_timeout_ms":
			sc.pong = d
		case "write_timeout_ms":
			if n < 0 {
				return sc, badValue(k, "want 0 (default 10000) or more")
			}
			sc.write = d
		case "stable_after_ms":
			if n < 0 {
				return sc, badValue(k, "want 0 (default 1000) or more")
			}
			sc.stable = d
		case "max_message_bytes":
			sc.maxMessage = n
		case "queue_max_events":
			if n < 0 || n > 1<<24 {
				return sc, badValue(k, "want 0 (default 1024) to 16777216")
			}
			sc.queueEvents = int(n)
		case "queue_max_bytes":
			if n < 0 {
				return sc, badValue(k, "want 0 (default 67108864) or more")
			}
			sc.queueBytes = n
		}
	}
	return sc, nil
}

// sessEvent is one event on its way to the host.
type sessEvent struct {
	kind    int32
	state   int32
	msgType int32
	conn    uint64
	data    []byte
	cause   *Error // disconnected, closed: nil when none
}

// session is what a lifeline_session handle names: a
// transport.WebSocketSession whose hooks feed an ordered queue the host
// drains.
//
// Backpressure: the hooks wait for room in the queue (queue_max_events,
// queue_max_bytes), so a host that stops draining stops the session's
// reader (the peer then feels TCP flow control) and its reconnecting.
// Close releases every waiting hook at once.
type session struct {
	id  uint64
	c   *client
	ws  *transport.WebSocketSession
	cfg sessionConfig

	// ctx ends every wait of the hooks and of the host's calls: cancelled
	// by close (the host's) or the client's close, before ws.Close; closing
	// is its Done channel.
	ctx       context.Context
	cancel    context.CancelFunc
	closing   <-chan struct{}
	closeOnce sync.Once
	// ended is closed once the final event is queued.
	ended chan struct{}

	// The event pipe: rfd is readable exactly while an event waits (or
	// after the final one was taken). Guarded by mu with the queue.
	rfd, wfd int

	mu       sync.Mutex // guards the queue, the pipe's byte, hdr and step
	room     *sync.Cond // signalled when the queue shrinks or closing
	more     chan struct{}
	events   []sessEvent
	bytes    int64
	final    bool // the closed event was taken: nothing more will come
	signaled bool // the pipe holds its byte
	freed    bool
	hdr      http.Header // set_header's, read at each dial
	// deliver is the callback mode's goroutine (nil: none): it ends after
	// the final event or at free; cbThread is its OS thread while it
	// runs, so that a free from inside the callback does not wait for
	// itself.
	deliverDone chan struct{}
	cbThread    atomic.Int64
	conn        uint64 // number of the latest connection
	step        *connectStep
	// dialCause is the cause of the failed dial whose STATE (disconnected)
	// event comes next: set by onDialFailed, taken by onStateChange (both
	// on the session's goroutine, in that order).
	dialCause *Error
}

// connectStep is the on_connect step of one connection: the host sends
// on conn, then calls ready.
type connectStep struct {
	n     uint64
	conn  *websocket.Conn
	ready chan struct{}
	fail  chan struct{} // closed when a send broke conn
	wmu   sync.Mutex    // serialises the host's sends on conn
	done  bool          // guarded by wmu: the step ended, conn is no longer ours
}

func (s *session) queueEvents() int {
	if s.cfg.queueEvents > 0 {
		return s.cfg.queueEvents
	}
	return defaultQueueEvents
}

func (s *session) queueBytes() int64 {
	if s.cfg.queueBytes > 0 {
		return s.cfg.queueBytes
	}
	return defaultQueueBytes
}

func (s *session) isClosing() bool {
	select {
	case <-s.closing:
		return true
	default:
		return false
	}
}

// push queues ev, waiting for room; during close events are dropped
// (except the final one, which close queues itself with force). It
// reports whether ev was queued.
func (s *session) push(ev sessEvent, force bool) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for !force {
		if s.isClosing() {
			return false
		}
		// An event bigger than the byte cap still passes an empty queue.
		if len(s.events) < s.queueEvents() && (len(s.events) == 0 || s.bytes+int64(len(ev.data)) <= s.queueBytes()) {
			break
		}
		s.room.Wait()
	}
	s.events = append(s.events, ev)
	s.bytes += int64(len(ev.data))
	s.signalLocked()
	return true
}

// signalLocked keeps the pipe's invariant: one byte in it while an event
// waits or after the final event was taken, none otherwise. Callers hold
// s.mu.
func (s *session) signalLocked() {
	want := len(s.events) > 0 || s.final
	if want != s.signaled && s.wfd >= 0 {
		var b [1]byte
		if want {
			_, _ = syscall.Write(s.wfd, b[:])
		} else {
			_, _ = syscall.Read(s.rfd, b[:])
		}
		s.signaled = want
	}
	if len(s.events) > 0 {
		// Wake every waiting taker: the channel is replaced after each
		// wake.
		close(s.more)
		s.more = make(chan struct{})
	}
}

// next takes the oldest event, waiting at most d (< 0: without limit).
func (s *session) next(d time.Duration) (sessEvent, *Error) {
	var t *time.Timer
	var tc <-chan time.Time
	for {
		s.mu.Lock()
		if s.freed {
			s.mu.Unlock()
			return sessEvent{}, &Error{Status: statusClosed, Type: "closed", Msg: "lifeline: session freed"}
		}
		if len(s.events) > 0 {
			ev := s.events[0]
			s.events[0] = sessEvent{}
			s.events = s.events[1:]
			s.bytes -= int64(len(ev.data))
			if ev.kind == eventClosed {
				s.final = true
			}
			s.signalLocked()
			s.room.Broadcast()
			s.mu.Unlock()
			if t != nil {
				t.Stop()
			}
			return ev, nil
		}
		if s.final {
			s.mu.Unlock()
			return sessEvent{}, &Error{Status: statusClosed, Type: "closed",
				Msg: "lifeline: session closed: its last event was taken"}
		}
		more := s.more
		s.mu.Unlock()
		if d == 0 {
			return sessEvent{}, &Error{Status: statusPending, Msg: "lifeline: no event waiting"}
		}
		if d > 0 && t == nil {
			t = time.NewTimer(d)
			tc = t.C
		}
		select {
		case <-more:
		case <-tc:
			return sessEvent{}, &Error{Status: statusPending, Msg: "lifeline: no event within the timeout"}
		case <-s.ended:
			// The final event is queued: the next round takes it.
		}
	}
}

// newSession starts a session of c.
func newSession(c *client, url string, hdr http.Header, sc sessionConfig) (*session, *Error) {
	rfd, wfd, err := pipe()
	if err != nil {
		return nil, &Error{Status: statusInternal, Type: "internal", Msg: "lifeline: event pipe: " + err.Error()}
	}
	s := &session{c: c, cfg: sc, ended: make(chan struct{}),
		rfd: rfd, wfd: wfd, more: make(chan struct{}), hdr: http.Header{}}
	s.room = sync.NewCond(&s.mu)
	// The session's waits descend from the client's: its close ends them.
	s.ctx, s.cancel = context.WithCancel(c.ctx)
	s.closing = s.ctx.Done()

	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		s.cancel()
		s.closeFDs()
		return nil, &Error{Status: statusClosed, Phase: "canceled", Type: "closed", Msg: "lifeline: client closed"}
	}
	b, e := c.freeze()
	if e != nil {
		c.mu.Unlock()
		s.cancel()
		s.closeFDs()
		return nil, e
	}
	name := c.cfg.name
	c.wg.Add(1)
	c.mu.Unlock()

	d := &transport.WebSocketDialer{
		Name:             name,
		Dialer:           b.tr.Dialer,
		TLSClientConfig:  b.tr.TLSClientConfig,
		HandshakeTimeout: sc.handshake,
		PingInterval:     sc.ping,
		PongTimeout:      sc.pong,
		Retry:            b.tr.Retry,
		Proxy:            b.tr.Proxy,
		MaxMessageSize:   sc.maxMessage,
		TracerProvider:   noopTracer,
		MeterProvider:    c.mp,
	}
	if hdr.Get("User-Agent") == "" {
		hdr.Set("User-Agent", b.userAgent)
	}
	ws, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL:           url,
		Header:        hdr,
		HeaderFunc:    s.headerFunc,
		Dialer:        d,
		StableAfter:   sc.stable,
		WriteTimeout:  sc.write,
		OnConnect:     s.onConnect,
		OnMessage:     s.onMessage,
		OnDisconnect:  s.onDisconnect,
		OnDialFailed:  s.onDialFailed,
		OnStateChange: s.onStateChange,
	})
	if err != nil {
		c.wg.Done()
		s.cancel()
		s.closeFDs()
		return nil, argError("%s", errText(err))
	}
	s.ws = ws
	s.id = handles.add(s)
	go s.watch()
	return s, nil
}

// watch queues the final event when the session ends (Close, the client's
// close, or a refusal) and ends the session when its client closes.
func (s *session) watch() {
	defer s.c.wg.Done()
	select {
	case <-s.ws.Done():
	case <-s.closing:
	case <-s.c.ctx.Done():
	}
	s.close()
	ev := sessEvent{kind: eventClosed, state: int32(transport.WebSocketClosed)}
	if err := s.ws.Err(); err != nil {
		ev.cause = sessionCause(err)
	}
	s.push(ev, true)
	close(s.ended)
}

// close ends the session: waiting hooks and host calls are released at
// once, then the Go session is closed (its close frame gets 50ms). Safe
// from any goroutine, any number of times.
func (s *session) close() {
	s.closeOnce.Do(func() {
		s.mu.Lock()
		s.cancel()
		s.room.Broadcast()
		s.mu.Unlock()
	})
	s.ws.Close()
}

// free closes the session, drops its queue and its pipe, and waits for
// the callback goroutine (unless called from its callback).
func (s *session) free() {
	s.close()
	<-s.ended
	s.mu.Lock()
	s.freed = true
	s.events = nil
	s.closeFDs()
	close(s.more)
	s.more = make(chan struct{})
	done := s.deliverDone
	s.mu.Unlock()
	if done != nil && !(s.cbThread.Load() != 0 && s.cbThread.Load() == threadID()) {
		<-done
	}
}

// startDelivery starts the callback mode: a goroutine takes each event
// in order and hands it to give (which calls the host's callback), one at
// a time, until the final event or free.
func (s *session) startDelivery(give func(ev sessEvent)) *Error {
	s.mu.Lock()
	if s.deliverDone != nil {
		s.mu.Unlock()
		return stateError("session %d already delivers its events to a callback", s.id)
	}
	if s.freed {
		s.mu.Unlock()
		return closedSessionError(nil)
	}
	done := make(chan struct{})
	s.deliverDone = done
	s.mu.Unlock()
	s.c.wg.Add(1)
	go func() {
		defer s.c.wg.Done()
		defer close(done)
		// The callback runs on this locked thread, so that free can tell
		// it is called from inside it.
		runtime.LockOSThread()
		defer runtime.UnlockOSThread()
		s.cbThread.Store(threadID())
		defer s.cbThread.Store(0)
		for {
			ev, e := s.next(-1)
			if e != nil {
				return
			}
			func() {
				defer func() {
					if r := recover(); r != nil {
						poison(r)
					}
				}()
				give(ev)
			}()
			if ev.kind == eventClosed {
				return
			}
		}
	}()
	return nil
}

func (s *session) closeFDs() {
	if s.rfd >= 0 {
		closeFD(s.rfd)
		closeFD(s.wfd)
		s.rfd, s.wfd = -1, -1
	}
}

func pipe() (int, int, error) {
	var p [2]int
	if err := syscall.Pipe2(p[:], syscall.O_CLOEXEC|syscall.O_NONBLOCK); err != nil {
		return -1, -1, err
	}
	return p[0], p[1], nil
}

// checkSessionHeader refuses the headers the websocket handshake sets
// itself: sent by the host they would fail every dial, forever.
func checkSessionHeader(name, at string) *Error {
	switch http.CanonicalHeaderKey(name) {
	case "Upgrade", "Connection", "Sec-Websocket-Key", "Sec-Websocket-Version", "Sec-Websocket-Extensions":
		return argError("%s: %s is set by the websocket handshake itself", at, http.CanonicalHeaderKey(name))
	}
	return nil
}

// headerFunc gives each dial the headers the host set last.
func (s *session) headerFunc(context.Context) (http.Header, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.hdr.Clone(), nil
}

// setHeader sets (value != nil) or removes a header of the next dials.
func (s *session) setHeader(name string, value *string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if value == nil {
		// A name set empty replaces the creation header with nothing.
		s.hdr[http.CanonicalHeaderKey(name)] = nil
		return
	}
	s.hdr.Set(name, *value)
}

// onConnect numbers the connection and, with on_connect, holds it until
// the host calls ready (or the handshake limit, or close).
func (s *session) onConnect(ctx context.Context, conn *websocket.Conn) error {
	s.mu.Lock()
	s.conn++
	n := s.conn
	s.mu.Unlock()
	if !s.cfg.onConnect {
		return nil
	}
	st := &connectStep{n: n, conn: conn, ready: make(chan struct{}), fail: make(chan struct{})}
	s.mu.Lock()
	s.step = st
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		if s.step == st {
			s.step = nil
		}
		s.mu.Unlock()
		// A host's send still running on conn finishes first (or fails:
		// conn is closed when ctx ends); none starts after.
		st.wmu.Lock()
		st.done = true
		st.wmu.Unlock()
	}()
	stop := context.AfterFunc(ctx, func() {
		s.mu.Lock()
		s.room.Broadcast()
		s.mu.Unlock()
	})
	defer stop()
	if !s.pushCtx(ctx, sessEvent{kind: eventConnect, state: int32(transport.WebSocketConnecting), conn: n}) {
		return context.Cause(ctx)
	}
	select {
	case <-st.ready:
		return nil
	case <-st.fail:
		return &stepError{msg: fmt.Sprintf("lifeline: connect step of connection %d: a send failed", n)}
	case <-ctx.Done():
		if s.isClosing() {
			return errors.New("lifeline: session closed")
		}
		return &stepError{msg: fmt.Sprintf("lifeline: connect step of connection %d: ready not called within handshake_timeout_ms", n),
			timeout: true}
	case <-s.closing:
		return errors.New("lifeline: session closed")
	}
}

// pushCtx is push that also gives up when ctx ends.
func (s *session) pushCtx(ctx context.Context, ev sessEvent) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	for {
		if s.isClosing() || ctx.Err() != nil {
			return false
		}
		if len(s.events) < s.queueEvents() {
			break
		}
		s.room.Wait()
	}
	s.events = append(s.events, ev)
	s.signalLocked()
	return true
}

// ready ends connection n's connect step.
func (s *session) ready(n uint64) *Error {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.step
	if st == nil || st.n != n {
		return stateError("no connect step of connection %d is in progress (it ended: ready was late, the connection was lost, or on_connect is off)", n)
	}
	select {
	case <-st.ready:
	default:
		close(st.ready)
	}
	return nil
}

func (s *session) currentConn() uint64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

func (s *session) onMessage(typ int, data []byte) {
	s.push(sessEvent{kind: eventMessage, state: int32(transport.WebSocketConnected), msgType: int32(typ),
		conn: s.currentConn(), data: data}, false)
}

func (s *session) onDisconnect(cause error) {
	s.push(sessEvent{kind: eventDisconnected, state: int32(transport.WebSocketDisconnected),
		conn: s.currentConn(), cause: sessionCause(cause)}, false)
}

func (s *session) onStateChange(st transport.WebSocketState) {
	switch st {
	case transport.WebSocketClosed:
		return // watch queues the final event, with the cause
	case transport.WebSocketConnected:
		s.push(sessEvent{kind: eventConnected, state: int32(st), conn: s.currentConn()}, false)
	default:
		ev := sessEvent{kind: eventState, state: int32(st), conn: s.currentConn()}
		if st == transport.WebSocketDisconnected {
			// After a failed dial: why it failed (after a lost connection
			// the DISCONNECTED event that follows says why).
			s.mu.Lock()
			ev.cause, s.dialCause = s.dialCause, nil
			s.mu.Unlock()
		}
		s.push(ev, false)
	}
}

// onDialFailed keeps the cause of a failed dial for the STATE event
// that reports it.
func (s *session) onDialFailed(err error) {
	e := sessionCause(err)
	s.mu.Lock()
	s.dialCause = e
	s.mu.Unlock()
}

// stepError is the failure of an on_connect step: ready not called in
// time, or a send of the step failed.
type stepError struct {
	msg     string
	timeout bool
}

func (e *stepError) Error() string { return e.msg }
func (e *stepError) Timeout() bool { return e.timeout }
func (e *stepError) Is(target error) bool {
	return e.timeout && target == context.DeadlineExceeded
}
func (e *stepError) ErrorType() string {
	if e.timeout {
		return "connect_step_timeout"
	}
	return "connect_step_failed"
}

// sessionCause describes why a connection was lost, a dial failed or the
// session ended, as the host sees it: a status, a phase ("websocket" for
// a connection's loss, "handshake" for the upgrade, dns/connect/tls for
// the dial under it, "connect_step" for the on_connect step), a class and
// a redacted message. The class is never a Go type name.
func sessionCause(err error) *Error {
	if err == nil {
		return nil
	}
	if errors.Is(err, transport.ErrSessionClosed) {
		return closedSessionError(nil)
	}
	e := classify(context.Background(), err)
	if e.Phase == "response" {
		e.Phase = "websocket"
	}
	var ce *websocket.CloseError
	var he *transport.HandshakeError
	var de *dial.Error
	var se *stepError
	t := otelx.ErrorTypeOf(err)
	switch {
	case errors.As(err, &ce):
		e.Type = "close_" + itoa(int64(ce.Code))
	case errors.Is(err, websocket.ErrReadLimit):
		e.Type = "message_too_large" // max_message_bytes; the peer got 1009
	case errors.As(err, &se):
		e.Phase, e.Type = "connect_step", se.ErrorType()
	case errors.As(err, &he) && !errors.As(err, &de):
		// The upgrade itself (its answer, or its limit); a dial.Error
		// under it keeps the dial's phase and class.
		e.Phase = "handshake"
		switch {
		case he.StatusCode != 0 && !he.Timeout():
			e.Type = he.ErrorType() // http_503, ...
		case he.Timeout():
			e.Type = "handshake_timeout"
		case goTypeName(t):
			e.Type = "handshake_error" // a 200, a wrong Sec-WebSocket-Accept, ...
		default:
			e.Type = t
		}
	case goTypeName(t):
		// otelx names what it cannot classify by its Go type: not a class
		// a dashboard can count on.
		e.Type = "websocket_error"
	case t != "":
		e.Type = t
	}
	if goTypeName(e.Type) {
		e.Type = "websocket_error"
	}
	return e
}

// goTypeName reports whether an error class is a Go type's name
// ("*errors.errorString", "net.OpError"): what otelx falls back to for an
// error it does not know, never meant for the host.
func goTypeName(t string) bool {
	return strings.HasPrefix(t, "*") || strings.Contains(t, ".")
}

// send writes one message (see lifeline_session_send).
func (s *session) send(typ int, data []byte, timeout time.Duration, flags int) *Error {
	if typ != websocket.TextMessage && typ != websocket.BinaryMessage {
		return argError("type %d is not LIFELINE_MESSAGE_TEXT (1) or LIFELINE_MESSAGE_BINARY (2)", typ)
	}
	if typ == websocket.TextMessage && !utf8.Valid(data) {
		return argError("a text message must be valid UTF-8 (RFC 6455 §8.1); send it as binary")
	}
	if flags&^(sendWhenConnected|sendOnConnect) != 0 || flags == sendWhenConnected|sendOnConnect {
		return argError("flags %#x: LIFELINE_SEND_WHEN_CONNECTED or LIFELINE_SEND_ON_CONNECT, not both", flags)
	}
	if s.isClosing() {
		return closedSessionError(nil)
	}
	ctx := s.ctx
	if timeout > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, timeout)
		defer c2()
	}
	var err error
	switch {
	case flags == sendOnConnect:
		return s.sendOnConnect(typ, data, timeout)
	case flags == sendWhenConnected:
		if timeout == 0 {
			var c2 context.CancelFunc
			ctx, c2 = context.WithTimeout(ctx, s.writeTimeout())
			defer c2()
		}
		err = s.ws.WriteMessageWhenConnected(ctx, typ, data)
	default:
		err = s.ws.WriteMessage(ctx, typ, data)
	}
	return s.sendError(ctx, err)
}

func (s *session) writeTimeout() time.Duration {
	if s.cfg.write > 0 {
		return s.cfg.write
	}
	return transport.DefaultWriteTimeout
}

// sendOnConnect writes on the connection of the connect step in progress.
func (s *session) sendOnConnect(typ int, data []byte, timeout time.Duration) *Error {
	s.mu.Lock()
	st := s.step
	s.mu.Unlock()
	if st == nil {
		return stateError("LIFELINE_SEND_ON_CONNECT: no connect step is in progress")
	}
	st.wmu.Lock()
	defer st.wmu.Unlock()
	if st.done {
		return stateError("LIFELINE_SEND_ON_CONNECT: the connect step of connection %d ended", st.n)
	}
	wt := s.writeTimeout()
	if timeout > 0 {
		wt = min(wt, timeout)
	}
	if err := st.conn.SetWriteDeadline(time.Now().Add(wt)); err != nil {
		return s.sendError(context.Background(), fmt.Errorf("%w: %w", transport.ErrDisconnected, err))
	}
	if err := st.conn.WriteMessage(typ, data); err != nil {
		// Half a frame may be written: the step fails, the connection
		// with it, and the session redials.
		st.conn.Close()
		st.done = true
		close(st.fail)
		return s.sendError(context.Background(), fmt.Errorf("%w: %w", transport.ErrDisconnected, err))
	}
	return nil
}

// sendError describes a send's failure.
func (s *session) sendError(ctx context.Context, err error) *Error {
	if err == nil {
		return nil
	}
	if s.isClosing() || errors.Is(err, transport.ErrSessionClosed) {
		return closedSessionError(s.ws.Err())
	}
	msg := "lifeline: " + errText(err)
	timedOut := errors.Is(err, context.DeadlineExceeded)
	switch {
	case timedOut && !errors.Is(err, transport.ErrDisconnected):
		return &Error{Status: statusTimeout, Phase: "send", Type: "timeout", Timeout: true, Msg: msg}
	case errors.Is(err, transport.ErrDisconnected):
		e := &Error{Status: statusDisconnected, Phase: "send", Type: "disconnected", Timeout: timedOut, Msg: msg}
		if timedOut {
			e.Type = "write_timeout"
		}
		return e
	}
	t := otelx.ErrorTypeOf(err)
	if goTypeName(t) {
		t = "websocket_error"
	}
	return &Error{Status: statusNetwork, Phase: "send", Type: t, Msg: msg}
}

func closedSessionError(cause error) *Error {
	msg := "lifeline: session closed"
	if cause != nil {
		msg += ": " + errText(cause)
	}
	return &Error{Status: statusClosed, Phase: "canceled", Type: "closed", Msg: msg}
}

// waitConnected waits until the session is connected, at most d (< 0:
// without limit; 0: do not wait).
func (s *session) waitConnected(d time.Duration) *Error {
	if s.ws.State() == transport.WebSocketConnected {
		return nil
	}
	if s.isClosing() {
		return closedSessionError(s.ws.Err())
	}
	if d == 0 {
		return &Error{Status: statusTimeout, Phase: "wait", Type: "timeout", Timeout: true, Msg: "lifeline: session not connected"}
	}
	ctx := s.ctx
	if d > 0 {
		var c2 context.CancelFunc
		ctx, c2 = context.WithTimeout(ctx, d)
		defer c2()
	}
	err := s.ws.WaitConnected(ctx)
	switch {
	case err == nil:
		return nil
	case s.isClosing() || errors.Is(err, transport.ErrSessionClosed):
		return closedSessionError(s.ws.Err())
	}
	return &Error{Status: statusTimeout, Phase: "wait", Type: "timeout", Timeout: true,
		Msg: "lifeline: session not connected within " + d.String()}
}
