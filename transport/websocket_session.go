package transport

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net/http"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/retry"
)

// Defaults of a zero WebSocketSessionConfig.
const (
	// DefaultStableAfter is StableAfter's default: a connection that
	// lasted 1s resets the reconnect backoff. Measured with the default
	// Retry (100ms doubling to 5s, jitter 0.5) over 10 minutes of each
	// (TestWebSocketSessionBackoffRule): a server that drops every
	// connection after 2s keeps a session connected 95% of the time (29
	// dials a minute; 10s, the default before issue 21: 30%); one that
	// accepts and drops at once, or refuses, is dialled about 13 times a
	// minute either way (the backoff reaches MaxInterval); after an outage
	// the session is back within MaxInterval either way. The rule "a
	// connection that outlived the wait before it resets the backoff"
	// was measured too and not taken: a server dropping every 500ms got
	// 100 dials a minute from each client (12 with a 1s StableAfter), and
	// after an outage had grown the wait to 5s, connections of 2s never
	// reset it (29% connected).
	DefaultStableAfter  = 1 * time.Second
	DefaultWriteTimeout = 10 * time.Second
)

// closeGrace bounds the close frame a session sends on Close: a courtesy
// to the peer, which must not hold Close up (a writer stuck behind a peer
// that stopped reading holds gorilla's write lock).
const closeGrace = 50 * time.Millisecond

// WebSocketState is the state of a [WebSocketSession].
type WebSocketState int32

// The states of a session. A session starts in WebSocketConnecting, moves
// between the first three as connections come and go, and ends in
// WebSocketClosed.
const (
	// WebSocketConnecting: a handshake (or the OnConnect hook) is in
	// progress.
	WebSocketConnecting WebSocketState = iota
	// WebSocketConnected: writes go to the peer, messages are delivered.
	WebSocketConnected
	// WebSocketDisconnected: the connection was lost or a dial failed; the
	// session waits out its backoff before the next dial.
	WebSocketDisconnected
	// WebSocketClosed: Close was called, or the server refused the upgrade
	// (see [WebSocketSession.Err]). Final.
	WebSocketClosed
)

var stateNames = [...]string{"connecting", "connected", "disconnected", "closed"}

func (s WebSocketState) String() string {
	if s >= 0 && int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "WebSocketState(" + strconv.Itoa(int(s)) + ")"
}

// ErrDisconnected is matched by the error of a write made while a session
// has no connection, and of a write that failed because its connection
// broke (the message may not have reached the peer). The error names the
// cause of the loss when there is one.
var ErrDisconnected = errors.New("transport: websocket session disconnected")

// ErrSessionClosed is matched by the error of a write to a session that
// has ended, and of WaitConnected and WriteMessageWhenConnected then.
var ErrSessionClosed = errors.New("transport: websocket session closed")

// WebSocketSessionConfig configures a [WebSocketSession]. Only URL is
// required.
type WebSocketSessionConfig struct {
	// URL is the ws:// or wss:// URL dialled, every time.
	URL string
	// Header holds extra handshake headers, sent with every dial. It is
	// cloned by NewWebSocketSession.
	Header http.Header
	// HeaderFunc, when set, is called before every dial with the dial's
	// context (ended by Close, and bounded by the Dialer's
	// HandshakeTimeout) and returns headers for that dial: each of its
	// keys replaces Header's values for that key. It suits a credential
	// that changes (a short-lived token); so do the Dialer's Credentials,
	// which also refresh on a 401 or 403. An error counts as a failed
	// dial: the session waits out its backoff and calls it again. The
	// error is logged, never the headers. It is called from the session's
	// goroutine, one call at a time.
	HeaderFunc func(ctx context.Context) (http.Header, error)
	// Dialer makes the connections: its limits, liveness (PingInterval,
	// PongTimeout), proxies and telemetry apply to each. Its Retry sets the
	// pace of reconnecting: waits from InitialInterval growing by
	// Multiplier up to MaxInterval, with Jitter; an answer's Retry-After
	// (a 408, 429 or 5xx) makes the wait at least that long, capped at
	// MaxRetryAfter. A session never stops redialing on its own
	// (MaxAttempts and Budget do not apply), except when the server
	// refuses the upgrade with a 3xx or 4xx answer other than 408 and 429,
	// or a CONNECT proxy refuses the tunnel likewise (a 407: credentials
	// do not heal by retrying). With the Dialer's Credentials, each dial
	// applies them, and a 401 or 403 ends the session only after one
	// Refresh and a second refusal; an error of Apply or Refresh is a
	// failed dial (the session waits and tries again). Nil means the zero
	// WebSocketDialer.
	Dialer *WebSocketDialer
	// StableAfter is how long a connection must last to count as a
	// recovery: when a connection that lasted this long is lost, the
	// backoff starts again from InitialInterval (a recovered server is
	// rejoined quickly, and a server that drops connections every few
	// seconds costs a short wait each time); a connection lost sooner
	// continues the backoff toward MaxInterval (a server that accepts and
	// drops at once, or a crash loop, is not hammered). The time counts
	// from the connected state (after OnConnect) to the loss. Zero means
	// DefaultStableAfter (1s).
	StableAfter time.Duration
	// WriteTimeout bounds each WriteMessage, the wait for other writers
	// included; the caller's context may shorten it. Zero means 10s.
	WriteTimeout time.Duration
	// OnConnect, when set, runs after each handshake and before the
	// session reports WebSocketConnected: to authenticate, resubscribe or
	// resume. It may read and write conn (nothing else does meanwhile
	// except pings) but must not keep it. ctx ends at Close and after the
	// Dialer's HandshakeTimeout, and conn is closed then. An error closes
	// the connection and counts as a failed dial.
	OnConnect func(ctx context.Context, conn *websocket.Conn) error
	// OnMessage, when set, receives every data message in the order it
	// arrived, across connections, one call at a time from one goroutine.
	// The next message is not read until it returns (the conn still
	// answers pings meanwhile). Nil discards messages.
	OnMessage func(messageType int, data []byte)
	// OnDisconnect, when set, is called with the cause each time an
	// established connection is lost (a *PongTimeoutError, a
	// *websocket.CloseError, a read or write error), before the session
	// redials.
	OnDisconnect func(cause error)
	// OnDialFailed, when set, is called with the error of each failed
	// dial (the handshake, HeaderFunc, Credentials or OnConnect) that the
	// session will retry, just before it reports WebSocketDisconnected and
	// waits out its backoff: what OnDisconnect is to a lost connection. A
	// refusal that ends the session is not retried: it is Err.
	OnDialFailed func(err error)
	// OnStateChange, when set, is called with each new state, in order.
	//
	// The hooks run on the session's own goroutine (OnMessage on its
	// reader): a hook that blocks delays reconnecting, and a hook must not
	// call Close, which waits for them. A panic in OnStateChange,
	// OnDialFailed or OnDisconnect is recovered and logged (Logger): the
	// session goes on.
	OnStateChange func(state WebSocketState)
	// Logger, when set, gets a Warn record for each lost connection and
	// each failed redial, rate-limited per kind of failure: the first of
	// a kind, then at most one per 10s carrying "suppressed"=N; Close
	// writes the counts still held back (incident 05: logging every
	// failure amplified an outage). Records hold the URL without query and
	// userinfo, the error.type and the error text cut to 256 bytes. The
	// session's records (its Dialer's too) are written on a goroutine of
	// their own, in order, not on the session's: a handler that blocks
	// delays only them, and one may call Close. Nil means the Dialer's
	// Logger; both nil, no logging.
	Logger *slog.Logger
}

// A WebSocketSession keeps one logical websocket connection to a URL up
// across failures. On a loss it redials with jittered exponential backoff,
// reset once a connection has been stable; OnConnect resubscribes, and
// OnDisconnect learns the cause. One goroutine owns connecting and
// reconnecting; Close cancels it and returns when everything the session
// started has ended.
//
// Writes from any number of goroutines are serialised, each bounded by
// WriteTimeout; while disconnected, WriteMessage fails at once with
// [ErrDisconnected] — nothing is queued, so nothing is replayed to a
// server that has moved on — and WriteMessageWhenConnected waits (bounded
// by its context) for the next connection and its OnConnect, then
// writes. WaitConnected waits for a connection. The usual SDK pattern: a
// subscribe adds to the SDK's set and is sent with
// WriteMessageWhenConnected; OnConnect sends the whole set. A subscribe
// made while OnConnect runs then reaches the new connection after it,
// never is lost between the two; it may reach it twice (in OnConnect's
// set and on its own), so the server must take a repeated subscribe as a
// no-op. Incoming messages go to OnMessage in order.
// Messages the server sent while no connection was up are not seen:
// resuming is the protocol's job, in OnConnect.
//
// Every connection is made by the Dialer, so dead peers are detected by
// its pings within PingInterval + PongTimeout.
//
// Telemetry: a websocket.reconnect span covers each outage (the dials in
// it are its children), with a websocket.reconnected event; the metrics
// lifeline.websocket.reconnects (by outcome) and
// lifeline.websocket.disconnected.duration, and the Dialer's own. The
// failed dials a later dial recovered from are counted on
// lifeline.masked_failures with lifeline.masked_by=retry, by phase
// ("handshake" when the error names none), peer and error.type, as the
// Transport counts the tries its retries recovered: a session that always
// reconnects in the end still shows its failures.
type WebSocketSession struct {
	cfg      WebSocketSessionConfig
	dialer   *WebSocketDialer
	target   *wsTarget
	backoff  backoffConfig
	tel      *otelx.WebSocket
	tracer   trace.Tracer
	ctx      context.Context
	cancel   context.CancelFunc
	done     chan struct{} // closed when run has returned
	wsem     chan struct{} // cap 1: the write slot
	state    atomic.Int32
	logq     *logx.Queue   // the Logger's records; nil: no Logger
	dialq    *logx.Queue   // the Dialer's records when its Logger is another; else nil
	mu       sync.Mutex    // guards the fields below
	conn     *sessionConn  // nil unless connected
	up       chan struct{} // closed while conn is set (after OnConnect); replaced when it is lost
	lastLoss error         // cause of the latest loss or failed dial
	err      error         // why the session ended, when not by Close
}

// sessionConn is one connection of a session.
type sessionConn struct {
	ws    *websocket.Conn
	mu    sync.Mutex
	cause error // the first write failure, which broke it
}

func (c *sessionConn) setCause(err error) {
	c.mu.Lock()
	if c.cause == nil {
		c.cause = err
	}
	c.mu.Unlock()
}

func (c *sessionConn) getCause() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.cause
}

// backoffConfig is the reconnect pace, from a retry.Policy.
type backoffConfig struct {
	initial, max  time.Duration
	mult, jitter  float64
	maxRetryAfter time.Duration // <0: no cap
}

func backoffFrom(p *retry.Policy) (backoffConfig, error) {
	b := backoffConfig{initial: retry.DefaultInitialInterval, max: retry.DefaultMaxInterval,
		mult: retry.DefaultMultiplier, jitter: retry.DefaultJitter, maxRetryAfter: retry.DefaultMaxRetryAfter}
	if p == nil {
		return b, nil
	}
	if p.InitialInterval != 0 {
		b.initial = p.InitialInterval
	}
	if p.MaxInterval != 0 {
		b.max = p.MaxInterval
	}
	if p.Multiplier != 0 {
		b.mult = p.Multiplier
	}
	switch {
	case p.Jitter < 0:
		b.jitter = 0
	case p.Jitter > 0:
		b.jitter = p.Jitter
	}
	if p.MaxRetryAfter != 0 {
		b.maxRetryAfter = p.MaxRetryAfter
	}
	switch {
	case b.initial < 0:
		return b, fmt.Errorf("transport: WebSocketSessionConfig.Dialer.Retry.InitialInterval is %v; want 0 or more", p.InitialInterval)
	case b.max < b.initial:
		return b, fmt.Errorf("transport: WebSocketSessionConfig.Dialer.Retry.MaxInterval (%v) is below InitialInterval (%v)", b.max, b.initial)
	case math.IsNaN(b.mult) || math.IsInf(b.mult, 0) || b.mult < 1:
		return b, fmt.Errorf("transport: WebSocketSessionConfig.Dialer.Retry.Multiplier is %v; want 0 or a finite value ≥ 1", p.Multiplier)
	case math.IsNaN(p.Jitter) || b.jitter > 1:
		return b, fmt.Errorf("transport: WebSocketSessionConfig.Dialer.Retry.Jitter is %v; want a value ≤ 1", p.Jitter)
	}
	return b, nil
}

// wait returns the jittered wait before dial n+1 of a run of failures
// (n = 0 for the first dial after a loss). Pure but for rnd.
func (b backoffConfig) wait(n int, rnd float64) time.Duration {
	d := float64(b.initial) * math.Pow(b.mult, float64(n))
	d = min(d, float64(b.max))
	d *= 1 + b.jitter*(2*rnd-1)
	return time.Duration(d)
}

// NewWebSocketSession checks cfg and starts the session: it begins
// connecting at once, in the background. The caller must call Close.
func NewWebSocketSession(cfg WebSocketSessionConfig) (*WebSocketSession, error) {
	t, err := parseTarget(cfg.URL)
	if err != nil {
		return nil, fmt.Errorf("transport: WebSocketSessionConfig.URL: %w", err)
	}
	d := cfg.Dialer
	if d == nil {
		d = &WebSocketDialer{}
	}
	var p *retry.Policy
	if d.Retry != nil {
		p = d.Retry
	}
	bo, err := backoffFrom(p)
	if err != nil {
		return nil, err
	}
	if cfg.StableAfter < 0 {
		return nil, fmt.Errorf("transport: WebSocketSessionConfig.StableAfter is %v; want 0 (default %v) or more", cfg.StableAfter, DefaultStableAfter)
	}
	if cfg.WriteTimeout < 0 {
		return nil, fmt.Errorf("transport: WebSocketSessionConfig.WriteTimeout is %v; want 0 (default %v) or more", cfg.WriteTimeout, DefaultWriteTimeout)
	}
	cfg.Header = cfg.Header.Clone()
	if cfg.Logger == nil {
		cfg.Logger = d.Logger
	}
	// The records are written on goroutines of their own (logx.Queue):
	// the session's goroutine, where they are made, is the one Close
	// waits for, and a Logger's handler is the caller's code (it may
	// stall, or close the session).
	logq := logx.NewQueue(logx.For(cfg.Logger))
	var dialq *logx.Queue
	if cfg.Logger != nil {
		dc := *d
		if dc.Logger == nil {
			// The session's failed redials go to its Logger too.
			dc.Logger = cfg.Logger
		}
		dc.logq = logq
		if dc.Logger != cfg.Logger {
			dialq = logx.NewQueue(logx.For(dc.Logger))
			dc.logq = dialq
		}
		d = &dc
	}
	s := &WebSocketSession{cfg: cfg, dialer: d, target: t, backoff: bo, logq: logq, dialq: dialq,
		tel: otelx.WebSocketInstruments(d.meterProvider()), tracer: otelx.Tracer(d.tracerProvider(), otelx.ScopeTransport),
		done: make(chan struct{}), wsem: make(chan struct{}, 1), up: make(chan struct{})}
	s.ctx, s.cancel = context.WithCancel(context.Background())
	go s.run()
	return s, nil
}

func (s *WebSocketSession) stableAfter() time.Duration {
	if s.cfg.StableAfter == 0 {
		return DefaultStableAfter
	}
	return s.cfg.StableAfter
}

func (s *WebSocketSession) writeTimeout() time.Duration {
	if s.cfg.WriteTimeout == 0 {
		return DefaultWriteTimeout
	}
	return s.cfg.WriteTimeout
}

// State returns the session's current state.
func (s *WebSocketSession) State() WebSocketState { return WebSocketState(s.state.Load()) }

// Done is closed when the session has ended: after Close, or when the
// server refused the upgrade.
func (s *WebSocketSession) Done() <-chan struct{} { return s.done }

// Err returns why the session ended by itself (a *HandshakeError with the
// server's 3xx or 4xx answer, or wrapping the *ProxyError of a proxy that
// refused the tunnel), or nil while it runs and after Close.
func (s *WebSocketSession) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the session: it sends a close frame on the current
// connection (if the frame cannot be written within 50ms, the connection
// is closed without it), closes it, stops reconnecting and returns once
// every goroutine the session started has ended (a running hook
// included). A dial, a handshake, a backoff wait or an OnConnect hook in
// progress is cancelled: Close returns promptly in every state, provided
// the hooks, HeaderFunc and the Dialer's Credentials return when their
// context ends (one that ignores it holds Close up until it returns;
// callers of WaitConnected and WriteMessageWhenConnected are woken at
// once all the same). A Logger's handler holds it up for 50ms at most:
// the last records, which a blocked handler keeps, are written when it
// returns. It is idempotent and always returns nil.
func (s *WebSocketSession) Close() error {
	s.cancel()
	<-s.done
	return nil
}

// setState records and reports a state change; run's goroutine only.
func (s *WebSocketSession) setState(st WebSocketState) {
	if WebSocketState(s.state.Swap(int32(st))) == st {
		return
	}
	if s.cfg.OnStateChange != nil {
		s.notify("OnStateChange", func() { s.cfg.OnStateChange(st) })
	}
}

// notify runs the notification hook named hook (OnStateChange,
// OnDialFailed, OnDisconnect). They run on the session's goroutines, where
// no caller could recover a panic: one is the host's bug, logged (with
// Logger) as the hook's failure, and the session goes on — as a panic in
// a Credentials fetch fails the calls that need a token, not the process.
func (s *WebSocketSession) notify(hook string, f func()) {
	defer func() {
		if r := recover(); r != nil {
			s.logq.Failure(context.Background(), "websocket.hook_panic."+hook,
				"lifeline: websocket session hook panicked", fmt.Errorf("%s panicked: %v", hook, r),
				slog.String("url.full", s.target.safe), slog.String("hook", hook))
		}
	}()
	f()
}

// logCloseWait bounds how long a session's end waits for its Loggers'
// last records, both queues together: Close returns within 100ms in every
// state.
const logCloseWait = 50 * time.Millisecond

// closeLogs queues the last records (the counts held back) of the
// session's Logger and its Dialer's, and waits logCloseWait at most for
// both.
func (s *WebSocketSession) closeLogs() {
	deadline := time.Now().Add(logCloseWait)
	s.logq.Close(logCloseWait)
	s.dialq.Close(time.Until(deadline))
}

// run owns the session: it dials, serves each connection until it is
// lost, and redials after the backoff, until Close or a refusal. Every
// wait and every dial runs under s.ctx, so that Close ends each of them.
func (s *WebSocketSession) run() {
	defer close(s.done)
	// A session that ended by itself (a refusal) wakes its waiters like
	// Close: s.ctx is what they watch.
	defer s.cancel()
	// The last records (the counts held back) get logCloseWait to be
	// written, after WebSocketClosed's hook (its panic is one): a
	// handler that blocks keeps them, not Close.
	defer s.closeLogs()
	defer s.setState(WebSocketClosed)
	r := &sessionRun{rnd: rand.New(rand.NewPCG(rand.Uint64(), rand.Uint64()))}
	if s.cfg.OnStateChange != nil {
		// The session starts in WebSocketConnecting; report it too.
		s.notify("OnStateChange", func() { s.cfg.OnStateChange(WebSocketConnecting) })
	}
	for s.sleep(r.wait) {
		s.setState(WebSocketConnecting)
		conn, resp, err := s.connect(r.out)
		if err != nil {
			if !s.dialFailed(r, resp, err) {
				return
			}
			continue
		}
		r.out.end(s, otelx.OutcomeOK, nil)
		r.out = nil
		s.countMasked(r.failed)
		r.failed = r.failed[:0]
		connectedAt := time.Now()
		cause := s.serveConn(conn)
		if s.ctx.Err() != nil {
			return
		}
		s.connLost(r, cause, time.Since(connectedAt))
	}
	r.out.end(s, otelx.OutcomeCanceled, nil)
}

// sessionRun is the state of run's loop between its steps.
type sessionRun struct {
	rnd      *rand.Rand
	failures int           // dials failed since the last stable connection
	wait     time.Duration // before the next dial
	out      *wsOutage     // nil while no outage is under way
	failed   []error       // dials failed since the last connection: masked once one succeeds
}

// countMasked counts the failed dials that a successful one recovered from
// on lifeline.masked_failures (masked_by=retry), like retry.Do counts the
// attempts of a call that succeeded.
func (s *WebSocketSession) countMasked(failed []error) {
	if len(failed) == 0 {
		return
	}
	ctx := context.Background()
	m := otelx.TransportInstruments(s.dialer.meterProvider()).Masked
	if !m.Enabled(ctx) {
		return
	}
	for _, err := range failed {
		phase, peer := otelx.MaskedLabels(err)
		if phase == "" {
			phase = "handshake"
		}
		m.Add(ctx, 1, otelx.Masked(otelx.MaskedByRetry, phase, peer, lossType(err)))
	}
}

// wsOutage is one loss of a session's connection, from the loss to the next
// connection (or Close, or a refusal): its span and its dials.
type wsOutage struct {
	lostAt  time.Time
	ctx     context.Context // carries span: the dials are its children
	span    trace.Span      // websocket.reconnect
	attempt int             // dials in this outage
}

// end records the outage's duration and ends its span. A nil outage (the
// first connection, or none under way) records nothing.
func (o *wsOutage) end(s *WebSocketSession, outcome string, err error) {
	if o == nil {
		return
	}
	s.tel.Disconnected.Record(context.Background(), time.Since(o.lostAt).Seconds(),
		metric.WithAttributes(otelx.KeyOutcome.String(outcome)))
	if err != nil {
		otelx.RecordError(o.span, err)
	}
	o.span.End()
}

// sleep waits d (no wait when d <= 0) and reports whether the session
// goes on: false once Close was called.
func (s *WebSocketSession) sleep(d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-s.ctx.Done():
		case <-t.C:
		}
	}
	return s.ctx.Err() == nil
}

// connect makes one dial and runs OnConnect on its conn. During an
// outage the dial is a child of the outage's span and counts as a
// reconnect.
func (s *WebSocketSession) connect(o *wsOutage) (*websocket.Conn, *http.Response, error) {
	ctx, link := s.ctx, trace.SpanContext{}
	if o != nil {
		o.attempt++
		ctx, link = o.ctx, o.span.SpanContext()
	}
	var conn *websocket.Conn
	var resp *http.Response
	h, err := s.header(ctx)
	if err == nil {
		refreshed := false // Credentials are refreshed once per dial
		conn, resp, err = s.dialer.dialOnce(ctx, s.target, h, link, &refreshed)
	}
	if err == nil {
		if err = s.onConnect(conn); err != nil {
			conn.Close()
		}
	}
	if o != nil {
		outcome := otelx.OutcomeOK
		if err != nil {
			outcome = otelx.OutcomeError
		}
		s.tel.Reconnects.Add(context.Background(), 1, metric.WithAttributes(otelx.KeyOutcome.String(outcome)))
		if err == nil && o.span.IsRecording() {
			o.span.AddEvent("websocket.reconnected", trace.WithAttributes(otelx.KeyReconnectAttempt.Int(o.attempt)))
		}
	}
	return conn, resp, err
}

// header returns the headers of the next dial: Header, with HeaderFunc's
// over them. HeaderFunc runs under ctx bounded by HandshakeTimeout.
func (s *WebSocketSession) header(ctx context.Context) (http.Header, error) {
	if s.cfg.HeaderFunc == nil {
		return s.cfg.Header, nil
	}
	if hto := s.dialer.handshakeTimeout(); hto > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, hto)
		defer cancel()
	}
	fh, err := s.cfg.HeaderFunc(ctx)
	if err == nil && ctx.Err() != nil {
		err = context.Cause(ctx) // its answer came too late to be trusted
	}
	if err != nil {
		// An error that echoes a credential of Header's (or of the
		// headers returned with it) does not carry it into lifeline's
		// texts.
		err = &headerFuncError{err: err, secrets: credentialSecrets(s.cfg.Header, fh)}
		if s.cfg.Logger != nil && s.ctx.Err() == nil {
			et := otelx.ErrorTypeOf(err)
			s.logq.Failure(s.ctx, "websocket.header_func."+et, "lifeline: websocket HeaderFunc failed",
				err, slog.String("url.full", s.target.safe), slog.String("error.type", et))
		}
		return nil, err
	}
	h := s.cfg.Header.Clone()
	if h == nil {
		h = make(http.Header, len(fh))
	}
	for k, vs := range fh {
		h.Del(k)
		for _, v := range vs {
			h.Add(k, v)
		}
	}
	return h, nil
}

// headerFuncError is the failure of HeaderFunc: its text is the cause's
// with the credentials of the headers lifeline knows redacted (see
// credentialsError), and its error.type "header_func" (or the cause's
// when a time limit or Close ended it), never a Go type name.
type headerFuncError struct {
	err     error
	secrets []string // longest first
}

func (e *headerFuncError) Error() string {
	return "transport: websocket HeaderFunc: " + redact(e.err.Error(), e.secrets)
}
func (e *headerFuncError) Unwrap() error { return e.err }
func (e *headerFuncError) ErrorType() string {
	if et := otelx.ErrorTypeOf(e.err); et == "timeout" || et == "canceled" {
		return et
	}
	return "header_func"
}

// dialFailed handles a failed dial (or OnConnect): it sets the wait before
// the next one and reports whether the session goes on. A refusal (see
// [wsRefused]) ends it, with the answer as Err; so does Close.
func (s *WebSocketSession) dialFailed(r *sessionRun, resp *http.Response, err error) bool {
	if s.ctx.Err() != nil {
		r.out.end(s, otelx.OutcomeCanceled, nil)
		return false
	}
	s.mu.Lock()
	s.lastLoss = err
	if wsRefused(err) {
		// Asking again at the backoff's pace would not change the answer.
		s.err = err
	}
	s.mu.Unlock()
	if wsRefused(err) {
		r.out.end(s, otelx.OutcomeError, err)
		return false
	}
	if o := r.out; o != nil && o.span.IsRecording() {
		o.span.AddEvent("websocket.reconnect.failed", trace.WithAttributes(
			otelx.KeyReconnectAttempt.Int(o.attempt), otelx.ErrorType(err)))
	}
	r.wait = s.backoff.wait(r.failures, r.rnd.Float64())
	r.failures++
	if len(r.failed) < maxMaskedDials {
		r.failed = append(r.failed, err)
	}
	if resp != nil {
		// A server shedding load (429, 503) or timing out (408) may say
		// when to come back: no sooner, up to the cap.
		if ra, ok := retryAfter(resp.Header, time.Now()); ok {
			if s.backoff.maxRetryAfter >= 0 {
				ra = min(ra, s.backoff.maxRetryAfter)
			}
			r.wait = max(r.wait, ra)
		}
	}
	if s.cfg.OnDialFailed != nil {
		s.notify("OnDialFailed", func() { s.cfg.OnDialFailed(err) })
	}
	s.setState(WebSocketDisconnected)
	return true
}

// maxMaskedDials bounds the failed dials an outage remembers for
// lifeline.masked_failures: an outage of days is not a growing slice.
const maxMaskedDials = 1024

// wsRefused reports whether err is an answer that no redial will change:
// the server or a CONNECT proxy refused with a 3xx or 4xx status (an
// invalid 101 or a 200 from something that is not a websocket server is
// not a refusal), except 408 and 429, which a server sends when it is
// busy. A 407 from a proxy is a refusal: credentials do not heal by
// retrying.
func wsRefused(err error) bool {
	var he *HandshakeError
	if errors.As(err, &he) && he.StatusCode != 0 {
		return !he.Timeout() && wsRefusal(he.StatusCode)
	}
	var pe *ProxyError
	return errors.As(err, &pe) && wsRefusal(pe.StatusCode)
}

// wsRefusal reports whether an answer with status code refuses for
// good.
func wsRefusal(code int) bool {
	return code >= 300 && code < 500 && !wsBusyStatus(code)
}

// wsBusyStatus reports whether a 4xx answer is a server asking to
// come back later (408 Request Timeout, 429 Too Many Requests).
func wsBusyStatus(code int) bool {
	return code == http.StatusRequestTimeout || code == http.StatusTooManyRequests
}

// serveConn makes conn the session's connection and serves it until it is
// lost (or Close), returning the cause of the loss.
func (s *WebSocketSession) serveConn(conn *websocket.Conn) error {
	cc := &sessionConn{ws: conn}
	s.mu.Lock()
	s.conn = cc
	s.state.Store(int32(WebSocketConnected))
	// Waiters go now, OnConnect having returned: each writes on this
	// connection (or, lost already, waits for the next).
	close(s.up)
	s.mu.Unlock()
	if s.cfg.OnStateChange != nil {
		s.notify("OnStateChange", func() { s.cfg.OnStateChange(WebSocketConnected) }) // run reports Connected only here
	}

	cause := s.serve(cc)

	s.drop(cc, nil)
	if cause != nil {
		s.mu.Lock()
		s.lastLoss = cause
		s.mu.Unlock()
	}
	return cause
}

// drop ends cc's time as the session's connection as soon as it is known
// to be broken (a read or a write failed), before the write slot is given
// to the next writer: a write that starts later finds no connection
// (nothing is written; WriteMessageWhenConnected waits for the next one)
// instead of failing on the broken one with its writer's error. It
// replaces the up channel only while cc is current, so a waiter never
// holds a channel that no connection will close. cause, when not nil,
// is what broke it (named by the writes that find no connection).
func (s *WebSocketSession) drop(cc *sessionConn, cause error) {
	s.mu.Lock()
	if s.conn == cc {
		s.conn = nil
		s.up = make(chan struct{})
		if cause != nil {
			s.lastLoss = cause
		}
	}
	s.mu.Unlock()
}

// connLost starts an outage after a connection that lasted lasted was lost
// with cause, and sets the wait before the first redial.
func (s *WebSocketSession) connLost(r *sessionRun, cause error, lasted time.Duration) {
	o := &wsOutage{lostAt: time.Now()}
	// The outage's span (and so every redial under it) descends from
	// s.ctx: Close cancels a redial like any other wait.
	o.ctx, o.span = s.tracer.Start(s.ctx, "websocket.reconnect",
		trace.WithAttributes(otelx.URLFull(s.target.safe), otelx.KeyDisconnectCause.String(lossType(cause))))
	r.out = o
	s.setState(WebSocketDisconnected)
	if s.cfg.Logger != nil && cause != nil {
		et := lossType(cause)
		s.logq.Failure(s.ctx, "websocket.disconnect."+et, "lifeline: websocket session lost its connection",
			cause, slog.String("url.full", s.target.safe), slog.String("error.type", et))
	}
	if s.cfg.OnDisconnect != nil {
		s.notify("OnDisconnect", func() { s.cfg.OnDisconnect(cause) })
	}
	if lasted >= s.stableAfter() {
		r.failures = 0
	}
	r.wait = s.backoff.wait(r.failures, r.rnd.Float64())
	r.failures++
}

// onConnect runs the OnConnect hook under its deadline.
func (s *WebSocketSession) onConnect(conn *websocket.Conn) error {
	if s.cfg.OnConnect == nil {
		return nil
	}
	ctx := s.ctx
	if hto := s.dialer.handshakeTimeout(); hto > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, hto)
		defer cancel()
	}
	// A hook blocked on the conn is released by closing it.
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	if err := s.cfg.OnConnect(ctx, conn); err != nil {
		return &onConnectError{err}
	}
	if ctx.Err() != nil {
		return &onConnectError{context.Cause(ctx)}
	}
	return nil
}

// onConnectError is the failure of OnConnect: its error.type is
// "on_connect" (or the cause's when a time limit or Close ended it),
// never a Go type name.
type onConnectError struct{ err error }

func (e *onConnectError) Error() string { return "transport: websocket OnConnect: " + e.err.Error() }
func (e *onConnectError) Unwrap() error { return e.err }
func (e *onConnectError) ErrorType() string {
	if et := otelx.ErrorTypeOf(e.err); et == "timeout" || et == "canceled" {
		return et
	}
	return "on_connect"
}

// serve reads cc until it fails (or Close), delivering messages in order,
// and returns the cause of the loss (nil after Close). The reader
// goroutine has ended when it returns.
func (s *WebSocketSession) serve(cc *sessionConn) error {
	readErr := make(chan error, 1)
	go func() {
		for {
			typ, data, err := cc.ws.ReadMessage()
			if err != nil {
				// One failed read ends the loop: gorilla panics after
				// repeated reads on a failed conn.
				cause := cc.getCause()
				if cause == nil {
					cause = err
				}
				s.drop(cc, cause)
				readErr <- err
				return
			}
			if s.cfg.OnMessage != nil {
				s.cfg.OnMessage(typ, data)
			}
		}
	}()
	select {
	case err := <-readErr:
		cc.ws.Close()
		if c := cc.getCause(); c != nil {
			return c // a write broke it
		}
		return err
	case <-s.ctx.Done():
		_ = cc.ws.WriteControl(websocket.CloseMessage,
			websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(closeGrace))
		cc.ws.Close()
		<-readErr
		return nil
	}
}

// closedErr is the error of a call on a session that has ended: the
// caller holds s.mu.
func (s *WebSocketSession) closedErr() error {
	if s.err != nil {
		return fmt.Errorf("%w: %w", ErrSessionClosed, s.err)
	}
	return ErrSessionClosed
}

// disconnected is the error of a write with no connection.
func (s *WebSocketSession) disconnected() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.State() == WebSocketClosed || s.ctx.Err() != nil {
		return s.closedErr()
	}
	st := s.State()
	if st == WebSocketConnected {
		// The connection was found broken; run has yet to say so.
		st = WebSocketDisconnected
	}
	if s.lastLoss != nil {
		return fmt.Errorf("%w (%s): %w", ErrDisconnected, st, s.lastLoss)
	}
	return fmt.Errorf("%w (%s)", ErrDisconnected, st)
}

func (s *WebSocketSession) current() *sessionConn {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.conn
}

// WriteMessage sends one data message (websocket.TextMessage or
// BinaryMessage). Writes from many goroutines are serialised; each is
// bounded by WriteTimeout (and ctx's deadline), the wait for its turn
// included. While the session has no connection it fails at once with
// [ErrDisconnected]; after Close with [ErrSessionClosed]. A write that
// fails breaks the connection, which the session replaces; its error
// matches ErrDisconnected, and context.DeadlineExceeded when it timed out.
// A cancel of ctx is seen before the write starts; a write in progress
// ends by its deadline.
func (s *WebSocketSession) WriteMessage(ctx context.Context, messageType int, data []byte) error {
	if err := checkMessageType("WriteMessage", messageType); err != nil {
		return err
	}
	err := s.write(ctx, messageType, data, false)
	if err == errNoConn {
		return s.disconnected()
	}
	return err
}

// WaitConnected waits until the session is connected: it returns nil
// once a connection is up and its OnConnect has returned (at once if one
// is), the session's closed error (matching [ErrSessionClosed], and
// wrapping Err when the server refused the upgrade) when it has ended or
// Close is called meanwhile, or ctx's error (context.Cause) when ctx ends
// first. The connection may be lost again by the time the caller acts.
// It is safe for concurrent use; it must not be called from the
// session's hooks (OnConnect and OnStateChange run before the connection
// counts as up; OnMessage holds up the reconnect it would wait for).
func (s *WebSocketSession) WaitConnected(ctx context.Context) error {
	s.mu.Lock()
	up := s.up
	s.mu.Unlock()
	if s.ctx.Err() == nil && ctx.Err() == nil {
		select {
		case <-up:
		case <-s.ctx.Done():
		case <-ctx.Done():
		}
	}
	// Ended beats connected: a session closed meanwhile has no connection
	// to write on.
	if s.ctx.Err() != nil {
		s.mu.Lock()
		defer s.mu.Unlock()
		return s.closedErr()
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

// WriteMessageWhenConnected sends one data message like WriteMessage, but
// while the session has no connection it waits for the next one instead
// of failing: it writes once a connection is up and its OnConnect has
// returned, so a message sent while OnConnect resubscribes (or during an
// outage) reaches the peer after OnConnect's own, on the new connection.
// The wait — for a connection, and for other writers to finish theirs —
// is bounded by ctx only (then ctx's error); Close, or the session ending,
// ends it with an error matching [ErrSessionClosed]. The write itself is
// bounded by WriteTimeout (from when it starts) and ctx. A
// message is written at most once: a write that fails (the connection
// broke under it, so the peer may or may not have it) returns its error,
// matching ErrDisconnected, and is not repeated; resending is the
// caller's (or OnConnect's) decision. Safe for concurrent use; not from
// the session's hooks: OnConnect and OnStateChange run before the
// connection counts as up, and OnMessage holds up the reader, which must
// see a broken connection fail before the session can make the next one
// (a reply from OnMessage is a WriteMessage).
func (s *WebSocketSession) WriteMessageWhenConnected(ctx context.Context, messageType int, data []byte) error {
	if err := checkMessageType("WriteMessageWhenConnected", messageType); err != nil {
		return err
	}
	for {
		if err := s.WaitConnected(ctx); err != nil {
			return err
		}
		// Lost between the wait and the write: nothing was written; wait
		// for the next connection. (Its channel is replaced with the
		// connection under s.mu, so this wait blocks: no spin.)
		if err := s.write(ctx, messageType, data, true); err != errNoConn {
			return err
		}
	}
}

// errNoConn is write's answer when the session had no connection: nothing
// was written.
var errNoConn = errors.New("transport: websocket session: no connection")

func checkMessageType(op string, messageType int) error {
	if messageType != websocket.TextMessage && messageType != websocket.BinaryMessage {
		return fmt.Errorf("transport: websocket %s: message type %d is not text (1) or binary (2)", op, messageType)
	}
	return nil
}

// write writes one message on the current connection; errNoConn when
// there is none (before or after the wait for the write slot). WriteTimeout
// bounds the wait for the slot and the write together; with whenConnected
// (WriteMessageWhenConnected, whose caller asked to wait within ctx) the
// wait for the slot is bounded by ctx, and WriteTimeout by the write alone:
// a writer that waited behind another one whose write broke the conn must
// not fail for the other's timeout (seen under load: the two equal timers
// fired in the wrong order).
func (s *WebSocketSession) write(ctx context.Context, messageType int, data []byte, whenConnected bool) error {
	if err := ctx.Err(); err != nil {
		return context.Cause(ctx)
	}
	if s.current() == nil {
		return errNoConn
	}
	start := time.Now()
	deadline := s.writeDeadline(ctx, start)
	slotDeadline := deadline
	if whenConnected {
		slotDeadline = time.Time{}
	}
	if err := s.takeWriteSlot(ctx, start, slotDeadline); err != nil {
		return err
	}
	defer func() { <-s.wsem }()
	if whenConnected {
		deadline = s.writeDeadline(ctx, time.Now())
	}
	cc := s.current()
	if cc == nil {
		return errNoConn
	}
	if err := cc.ws.SetWriteDeadline(deadline); err != nil {
		return fmt.Errorf("%w: %w", ErrDisconnected, err)
	}
	if err := cc.ws.WriteMessage(messageType, data); err != nil {
		if isTimeout(err) {
			err = joinCause(context.DeadlineExceeded, err)
		}
		// The frame may be half written: the conn is broken. Closing it
		// makes the reader fail, and run replaces the connection; the
		// writers after this one (the slot is still held) find none.
		cc.setCause(err)
		s.drop(cc, err)
		cc.ws.Close()
		return fmt.Errorf("%w: write: %w", ErrDisconnected, err)
	}
	return nil
}

// writeDeadline is the deadline of a write starting at start: WriteTimeout
// from then, or ctx's deadline when sooner.
func (s *WebSocketSession) writeDeadline(ctx context.Context, start time.Time) time.Time {
	deadline := start.Add(s.writeTimeout())
	if dl, ok := ctx.Deadline(); ok && dl.Before(deadline) {
		deadline = dl
	}
	return deadline
}

// takeWriteSlot waits for the write slot until deadline (other writers
// hold it while their writes run; zero: no deadline of its own), ctx's end
// or Close.
func (s *WebSocketSession) takeWriteSlot(ctx context.Context, start, deadline time.Time) error {
	select {
	case s.wsem <- struct{}{}:
		return nil
	default:
	}
	var timeout <-chan time.Time
	if !deadline.IsZero() {
		t := time.NewTimer(time.Until(deadline))
		defer t.Stop()
		timeout = t.C
	}
	select {
	case s.wsem <- struct{}{}:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	case <-timeout:
		return fmt.Errorf("transport: websocket WriteMessage: waited %v for other writers: %w",
			deadline.Sub(start).Round(time.Millisecond), context.DeadlineExceeded)
	case <-s.ctx.Done():
		return ErrSessionClosed
	}
}

// lossType is the error.type of a lost connection's or failed dial's
// cause: a message over MaxMessageSize is "message_too_large" (gorilla's
// ErrReadLimit carries no type of its own, and would read
// "*errors.errorString"), a cause of no class "websocket_error".
func lossType(cause error) string {
	if errors.Is(cause, websocket.ErrReadLimit) {
		return "message_too_large"
	}
	// Whatever the cause, no Go type name reaches a metric or a log.
	return classOr(otelx.ErrorTypeOf(cause), "websocket_error")
}
