package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/retryx"
	"github.com/lifeline-go/lifeline/retry"
)

// Defaults of the zero Transport.
const (
	DefaultFirstByteTimeout       = 15 * time.Second
	DefaultStallTimeout           = 30 * time.Second
	DefaultIdleConnTimeout        = 30 * time.Second
	DefaultMaxConnLifetime        = 10 * time.Minute
	DefaultMaxConnsPerHost        = 64
	DefaultMaxIdleConnsPerHost    = 16
	DefaultMaxResponseHeaderBytes = 1 << 20
	// DefaultHedgeCeiling is the upper clamp of the adaptive hedge delay
	// when HedgeDelay is zero.
	DefaultHedgeCeiling = time.Second
	// MinHedgeDelay is the lower clamp of the adaptive hedge delay.
	MinHedgeDelay = 10 * time.Millisecond
	// HTTP/2 health pings: a conn that received no frame for
	// http2PingAfter gets a ping, and is closed when no answer comes
	// within http2PingTimeout.
	http2PingTimeout = 10 * time.Second
	// The budget of a Transport whose Retry policy has none: retries and
	// hedges at most 10% of requests plus 10 a second.
	defaultBudgetRatio     = 0.1
	defaultBudgetPerSecond = 10
	// expectContinueTimeout bounds the wait for "100 Continue".
	expectContinueTimeout = time.Second
)

// A Transport is an http.RoundTripper (HTTP/1.1 and HTTP/2) that cannot
// hang and does not hide failures. It is built on net/http's Transport,
// whose connection pool it keeps, with lifeline's dial.Dialer behind it
// (DNS, connect and TLS each bounded, addresses raced through the TLS
// handshake, a lone address racing itself), and adds:
//
//   - FirstByteTimeout: the response headers must arrive this long after
//     the request was written; StallTimeout: a body read during which no
//     byte comes from the peer for this long fails, and so does an upload
//     of which the peer takes no byte for this long. The errors are
//     *TimeoutError, which matches context.DeadlineExceeded and net.Error's
//     Timeout on HTTP/1 and HTTP/2 alike, and the peer is held to account
//     in the Dialer's Health (its own when none is set), as the Dialer's own
//     first-byte stalls are.
//   - Retries through retry.Policy and its Budget, of what is safe only:
//     failures before anything was written, and idempotent requests (GET,
//     HEAD, OPTIONS, TRACE, PUT, DELETE, or an Idempotency-Key header) whose
//     body can be replayed (GetBody); 429, 502, 503 and 504 answers, with
//     Retry-After honoured up to the policy's MaxRetryAfter.
//   - Hedging (HedgeDelay, HedgeQuantile): an idempotent request with no
//     response headers after the delay gets a second attempt on another
//     conn; the first response wins.
//   - MaxConnLifetime: conns older than it (jittered per conn) are not
//     reused, without failing a request.
//   - Per upstream, fail fast while it is known down (an *UnavailableError
//     in milliseconds instead of each call waiting its dial limits, paced
//     probes, WaitForReady to wait instead), a server's 429 pacing new
//     calls of the same path and Authorization (all of the host's once 3
//     such scopes are paused at once) and a 503's Retry-After those of the
//     host, and client-side adaptive throttling of an
//     upstream that drowns: see the package documentation, "When the
//     upstream is down or drowning" (DisableFailFast, DisableLoadShedding).
//   - One OpenTelemetry client span per attempt and metrics that count the
//     failures retries and hedges masked.
//
// Per call, a context made with [WithCallOptions] overrides the Retry
// policy, FirstByteTimeout, StallTimeout and HedgeDelay: the call's option
// wins over the Transport's field, which wins over the default.
//
// The zero value is ready to use and waits forever nowhere; a nil
// *Transport behaves as the zero value. Fields must be set before the first
// request and not changed afterwards; a Transport must not be copied after
// first use. It is safe for concurrent use by multiple goroutines. The
// caller's request is never modified; RoundTrip closes its body, as the
// http.RoundTripper contract asks.
type Transport struct {
	// Dialer dials every conn (proxies too). Nil means the zero
	// dial.Dialer. It is copied at first use: its TLSConfig gives way to
	// TLSClientConfig, and its FirstByteTimeout never undercuts the
	// Transport's (off when FirstByteTimeout is negative). The copy
	// records in the Dialer's Scoreboard (its Health, or the one kept
	// for it), so Dialer.Scoreboard() shows what the Transport's dials
	// found.
	Dialer *dial.Dialer
	// TLSClientConfig is the TLS config of HTTPS conns (cloned; nil: the
	// Dialer's TLSConfig, or an empty one). ALPN offers h2 and http/1.1
	// unless NextProtos is set; ServerName defaults to the host.
	TLSClientConfig *tls.Config
	// Retry decides what failed attempts are retried, how often and after
	// how long; its Budget also pays for hedges. Nil means the default
	// policy (3 attempts). Its AttemptTimeout bounds each attempt, hedges
	// included, up to the response headers: every try of the attempt ends
	// at it, and no hedge starts after the attempt's first try ended.
	Retry *retry.Policy
	// FirstByteTimeout bounds the wait for the response headers after the
	// request (body included) was written. Zero means 15s; negative means
	// no limit (long polls).
	FirstByteTimeout time.Duration
	// StallTimeout bounds the progress of the bodies. A response body
	// read fails (Phase "stall") when no byte came from the peer for this
	// long while it waited: only time spent inside Read counts, so a slow
	// consumer is not a stall, and on HTTP/1.1 every byte the conn
	// receives counts, so a body that trickles inside one long Read (a
	// chunked stream) is not one either. A request fails (Phase
	// "upload_stall") when the peer took no byte of its body for this long
	// while it was being sent: time spent in the body's own Read is the
	// caller's, not a stall; the conn is written in pieces of at most 32
	// KiB, so an upload to a peer that takes at least that much per
	// StallTimeout is never cut (on HTTP/2 any write on the conn larger
	// than a control frame counts: the conn's own pings do not). The
	// request's headers count as its upload too (a header block larger
	// than the socket buffers, to a peer that does not read). Both fail within StallTimeout/8 (at most 100ms) after the
	// limit: one goroutine of the Transport's, running while requests are
	// in flight, watches them all. Zero means 30s; negative means off.
	StallTimeout time.Duration
	// HedgeDelay, when positive, starts a second attempt of an idempotent,
	// replayable request that has no response headers after this long.
	// Zero means no hedging (unless HedgeQuantile is set).
	HedgeDelay time.Duration
	// HedgeQuantile, when in (0, 1), makes hedging adaptive: the delay is
	// this quantile of the host's recent times to response headers, clamped
	// to [10ms, HedgeDelay or 1s] ("The Tail at Scale": hedging after the
	// 95th percentile costs about 5% more requests). Zero means the fixed
	// HedgeDelay.
	HedgeQuantile float64
	// IdleConnTimeout closes conns idle this long. Zero means 30s;
	// negative means no limit.
	IdleConnTimeout time.Duration
	// MaxConnLifetime stops reusing a conn older than this (±10% jitter per
	// conn, so a pool does not expire at once): its last request carries
	// the "close" connection option, added to the options of the request's
	// own Connection field (an upgrade's "Upgrade" stays; the caller's
	// header map is not touched), and it closes once idle, on HTTP/1.1 and
	// HTTP/2, failing no request. Zero means 10m; negative means no limit.
	MaxConnLifetime time.Duration
	// MaxConnsPerHost caps the conns per host, dialing and idle included.
	// Zero means 64; negative means no limit. A request waiting for a conn
	// (at the cap, or for a conn being handed over) fails after the
	// Dialer's Timeout with a *TimeoutError of Phase "conn", unless a dial
	// made for it is under way (the dial's own limits bound that); with
	// FirstByteTimeout and StallTimeout both off, or a negative Dialer
	// Timeout, only the caller's context bounds the wait.
	MaxConnsPerHost int
	// MaxIdleConnsPerHost caps the idle conns kept per host. Zero means
	// 16; negative means none are kept.
	MaxIdleConnsPerHost int
	// MaxResponseHeaderBytes caps the size of a response's headers (status
	// line included; on HTTP/2 the header list size the client
	// advertises): a server whose headers exceed it, or never end, fails
	// the attempt after that many bytes, with a *HeaderLimitError (on
	// HTTP/2, a header block far over the limit ends the conn with
	// net/http's PROTOCOL_ERROR instead). Zero means 1 MiB; negative means
	// net/http's own limit (10 MiB).
	MaxResponseHeaderBytes int64
	// Proxy returns the proxy for a request, as in net/http. Nil means
	// http.ProxyFromEnvironment. CONNECT proxies get the Dialer's limits,
	// and the TLS handshake through them its TLSHandshakeTimeout.
	Proxy func(*http.Request) (*url.URL, error)
	// Name tells this Transport's telemetry apart from other clients' in
	// the same process (two SDKs built on lifeline): every span and metric
	// point it makes carries it as lifeline.client.name, those of its
	// retries and of its Dialer's dials included (a Dialer with a Name of
	// its own keeps it). Keep it short and fixed ("rooms-api"): it is a
	// metric label. Empty means no such attribute.
	Name string
	// TracerProvider makes the attempt spans. Nil means the otel global.
	TracerProvider trace.TracerProvider
	// MeterProvider makes the metrics. Nil means the otel global.
	MeterProvider metric.MeterProvider
	// Credentials, when set, authenticate every try: Apply is called on
	// each try's own copy of the request (attempts, hedges, the resend
	// after a refresh), never on the caller's request. A 401 answer makes
	// one Refresh per RoundTrip, bounded by the request's context; then a
	// replayable request (no body, or GetBody) is sent once more, and its
	// answer, a second 401 too, is the call's. That resend is not an
	// attempt of the Retry policy (it costs neither MaxAttempts nor the
	// Budget: it happens at most once per call, and the 401 was an answer
	// that the server did not act on). A non-replayable request's 401 is
	// returned as it is, after the Refresh (so that the caller's next
	// call carries the new credential; a Refresh error is then only
	// counted). An error of Apply or Refresh ends the call with that error
	// (wrapped, not retried). Each Refresh is counted on
	// lifeline.http.auth.refreshes. A request an http.Client makes to
	// follow a redirect gets no credentials (no Apply, no Refresh) once
	// its redirect chain has left the origin (scheme, host, port) it
	// began at, as the caller's own Authorization is dropped by net/http:
	// the token goes to no host the server redirects to. Nil means
	// requests go as the caller built them.
	Credentials Credentials
	// Logger, when set, gets a Warn record for each failed attempt (an
	// error, a timeout of the Transport's limits, a 5xx answer; not a hedge
	// that lost or a caller's cancel), rate-limited per kind of failure:
	// the first of a kind, then at most one per 10s carrying
	// "suppressed"=N, the count held back meanwhile (incident 05: logging
	// every failure amplified an outage). A record holds short strings
	// only: method, host, error.type and the error text cut to 256 bytes
	// with no URL query or userinfo; never a header. Everything that logs
	// through the same Logger shares the limit. The Dialer's own Logger
	// (unset by default) adds a record per failed dial. An attempt's
	// record is written on the goroutine of its call; the records of an
	// upstream going down, paused or ready again (a kind per upstream:
	// each host of an outage gets its record) on a goroutine of the
	// Transport's own, in order (the change is found wherever the upstream
	// is looked at, a metric collection included, where no handler should
	// run, not even its Enabled); a panic in the handler there is
	// recovered: that record is lost, and a record "lifeline: log record
	// lost: the Logger's handler panicked" says so. Nil means no logging.
	Logger *slog.Logger
	// DisableFailFast turns off what the Transport learns of each
	// upstream's reachability and of its server's pauses: with it, every
	// call tries the upstream even while it is known down (each waits its
	// own dial limits), and a 429 or Retry-After paces only the call that
	// got it. False (the default): see "When the upstream is down or
	// drowning" in the package documentation.
	DisableFailFast bool
	// DisableLoadShedding turns off client-side adaptive throttling: with
	// it, every call reaches an upstream that answers most calls with
	// overload signals (429, 502, 503, 504, first-byte timeouts, resets).
	// False (the default): a share of new calls is shed locally so that
	// such an upstream sees about twice what it serves, and retries and
	// hedges stop first.
	DisableLoadShedding bool

	once  sync.Once
	state *state
}

// NewClient returns an *http.Client that uses t (nil: a zero Transport).
// It has no Timeout of its own: the Transport's limits and the request's
// context bound every call.
func NewClient(t *Transport) *http.Client {
	if t == nil {
		t = &Transport{}
	}
	return &http.Client{Transport: t}
}

// http2PingAfter is how long an HTTP/2 conn that received no frame waits
// before it sends a health ping (see http2PingTimeout); a variable for the
// tests.
var http2PingAfter = 15 * time.Second

// zeroTransport stands in for a nil *Transport.
var zeroTransport Transport

// state is what a Transport builds at first use.
type state struct {
	t         *Transport
	ht        *http.Transport
	dialer    dial.Dialer
	policy    retry.Policy // t.Retry with the Transport's providers, spans off, AttemptTimeout taken over
	retry     any          // policy, checked once (retryx.Prepare)
	retryErr  error        // policy's error: every request's
	attemptTO time.Duration
	firstByte time.Duration // 0: off
	watch     *watch        // never nil; a try is watched when its call has a limit
	lifetime  time.Duration // 0: off
	hedge     hedgeConfig
	tel       *telemetry
	latency   *latencies
	conns     *births // the conns' ages and byte counts
	auth      authInstruments
	lim       callLimits // the limits of a call without CallOptions
	ups       upstreams  // what the Transport knows of each upstream
	// queueSignal is how many tries of one upstream may wait for a conn
	// before each new call counts as an overload signal for the
	// throttle: half of MaxConnsPerHost, at least 8; none without a cap.
	queueSignal int
}

func (t *Transport) get() *state {
	if t == nil {
		t = &zeroTransport
	}
	t.once.Do(func() { t.state = t.build() })
	return t.state
}

// orDefault returns v, def when v is zero, or 0 (off) when v is negative,
// with the same meaning as in dial and pool.
func orDefault[T ~int | ~int64](v, def T) T {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

func (t *Transport) build() *state {
	st := &state{t: t}
	st.ups.st = st
	st.firstByte = orDefault(t.FirstByteTimeout, DefaultFirstByteTimeout)
	st.lifetime = orDefault(t.MaxConnLifetime, DefaultMaxConnLifetime)
	st.hedge = newHedgeConfig(t.HedgeDelay, t.HedgeQuantile)
	st.tel = newTelemetry(t.TracerProvider, t.MeterProvider, t.Name, logx.For(t.Logger))
	if t.Credentials != nil {
		st.auth = newAuthInstruments(namedMeterProvider(t.MeterProvider, t.Name))
	}
	st.latency = newLatencies()

	if t.Dialer != nil {
		st.dialer = *t.Dialer
		// The copy learns into the caller's Dialer's Scoreboard, so
		// that t.Dialer.Scoreboard() shows what this Transport's dials
		// found (a Health of the copy's own would be out of reach).
		st.dialer.Health = t.Dialer.Scoreboard()
	}
	if st.dialer.Name == "" {
		st.dialer.Name = t.Name
	}
	// The watch exists even when the Transport's limits are both off: a
	// call's options may turn one on (CallOptions).
	st.watch = newWatch(st.firstByte, orDefault(t.StallTimeout, DefaultStallTimeout),
		orDefault(st.dialer.Timeout, dial.DefaultTimeout), st.tel)
	d := &st.dialer
	tlsCfg := t.TLSClientConfig
	if tlsCfg == nil {
		tlsCfg = d.TLSConfig
	}
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	tlsCfg = tlsCfg.Clone()
	if len(tlsCfg.NextProtos) == 0 {
		tlsCfg.NextProtos = []string{"h2", "http/1.1"}
	}
	if tlsCfg.MinVersion == 0 {
		// Go's client default, made explicit (also through CONNECT
		// proxies, where net/http does the TLS): never below TLS 1.2.
		tlsCfg.MinVersion = tls.VersionTLS12
	}
	d.TLSConfig = tlsCfg
	// The Dialer's first-byte watch sees the first reply on each conn; it
	// must not cut a response the Transport would still wait for.
	switch {
	case st.firstByte == 0:
		d.FirstByteTimeout = -1
	case d.FirstByteTimeout == 0:
		d.FirstByteTimeout = max(dial.DefaultFirstByteTimeout, st.firstByte)
	case d.FirstByteTimeout > 0:
		d.FirstByteTimeout = max(d.FirstByteTimeout, st.firstByte)
	}
	// HTTP is client-first: net/http's HTTP/1 readLoop waits in Read on a
	// fresh conn before its request is written, and a conn dialled for a
	// request that another conn served idles in the pool that way. A bound
	// on a Read before any Write would cut it and blame the peer.
	d.GreetingTimeout = -1
	if d.TracerProvider == nil {
		d.TracerProvider = t.TracerProvider
	}
	if d.MeterProvider == nil {
		d.MeterProvider = t.MeterProvider
	}
	{
		// Every conn is a bornConn under TLS: its age for MaxConnLifetime,
		// its byte counts for StallTimeout (a stall is time without a
		// byte from the peer, an upload's stall time without a byte
		// written), a call's own StallTimeout included.
		st.conns = &births{lifetime: st.lifetime, open: map[*bornConn]struct{}{}}
		d.DialFunc = st.conns.dialFunc(d.DialFunc)
	}
	// How far a dial got, for an error the caller's deadline ends first
	// (dialphase.go).
	d.DialFunc = connectHook(d.DialFunc)

	var p retry.Policy
	if t.Retry != nil {
		p = *t.Retry
	}
	if p.Budget == nil {
		// Retries and hedges are paid from a budget, so that a Transport
		// never multiplies an outage: without one of the caller's, its own.
		p.Budget = retry.NewBudget(defaultBudgetRatio, defaultBudgetPerSecond)
	}
	st.policy = st.adopt(p)
	st.attemptTO = st.policy.AttemptTimeout
	// Do would cancel the attempt's context when the op returns, with the
	// response body still unread: the Transport bounds attempts itself.
	st.policy.AttemptTimeout = 0
	st.retry, st.retryErr = retryx.Prepare(&st.policy)
	// The limits of a call without CallOptions: every such call shares
	// them.
	st.lim = callLimits{retry: st.retry, retryErr: st.retryErr, attemptTO: st.attemptTO,
		firstByte: st.firstByte, stall: st.watch.stall, hedgeOn: st.hedge.on, creds: t.Credentials}

	proxy := t.Proxy
	if proxy == nil {
		proxy = http.ProxyFromEnvironment
	}
	handshake := d.TLSHandshakeTimeout
	if handshake == 0 {
		handshake = dial.DefaultTLSHandshakeTimeout
	}
	// A call whose FirstByteTimeout is off (a long poll) dials without the
	// Dialer's first-byte watch, which would cut its first answer. (A conn
	// dialed for another call and handed to it still has the watch: at
	// least max(30s, FirstByteTimeout), on its first answer only.)
	var longDial, longTLS func(ctx context.Context, network, addr string) (net.Conn, error)
	if d.FirstByteTimeout > 0 {
		long := *d
		long.FirstByteTimeout = -1
		longDial, longTLS = long.DialContext, long.DialTLSContext
	}
	st.queueSignal = math.MaxInt32
	if n := orDefault(t.MaxConnsPerHost, DefaultMaxConnsPerHost); n > 0 {
		st.queueSignal = max(8, n/2)
	}
	st.ht = &http.Transport{
		Proxy:                 proxy,
		DialContext:           dialHook(d.DialContext, longDial, false),
		DialTLSContext:        dialHook(d.DialTLSContext, longTLS, true),
		TLSClientConfig:       tlsCfg.Clone(), // through CONNECT proxies (net/http's addTLS)
		TLSHandshakeTimeout:   max(handshake, 0),
		ForceAttemptHTTP2:     true,
		IdleConnTimeout:       orDefault(t.IdleConnTimeout, DefaultIdleConnTimeout),
		MaxConnsPerHost:       orDefault(t.MaxConnsPerHost, DefaultMaxConnsPerHost),
		MaxIdleConnsPerHost:   orDefault(t.MaxIdleConnsPerHost, DefaultMaxIdleConnsPerHost),
		ExpectContinueTimeout: expectContinueTimeout,
		// A proxy's refusal of CONNECT is a *ProxyError (407: final).
		OnProxyConnectResponse: proxyConnectResponse,
		// A hostile or broken server's endless headers cost this much
		// memory per conn, not net/http's 10 MiB.
		MaxResponseHeaderBytes: max(orDefault(t.MaxResponseHeaderBytes, DefaultMaxResponseHeaderBytes), 0),
		// No ResponseHeaderTimeout: the watch bounds the wait for headers
		// (FirstByteTimeout) on HTTP/1.1 and HTTP/2 without net/http's
		// timer per request.
		HTTP2: &http.HTTP2Config{
			SendPingTimeout: http2PingAfter,
			PingTimeout:     http2PingTimeout,
		},
	}
	if t.MaxIdleConnsPerHost < 0 {
		st.ht.DisableKeepAlives = true
	}
	return st
}

// adopt returns p as the Transport runs it: paid from the Transport's
// budget when p has none, metered by the Transport's MeterProvider when p
// has none, and without retry's own attempt spans (the Transport makes one
// HTTP span per attempt; retry's would only nest them one level deeper).
func (st *state) adopt(p retry.Policy) retry.Policy {
	if p.Budget == nil {
		p.Budget = st.policy.Budget
	}
	if p.MeterProvider == nil {
		p.MeterProvider = st.t.MeterProvider
	}
	// A call's policy reports under the Transport's Name, like its own.
	p.MeterProvider = namedMeterProvider(p.MeterProvider, st.t.Name)
	// The Transport makes one HTTP span per attempt; retry's own attempt
	// spans would only nest them one level deeper.
	p.TracerProvider = noopTracerProvider
	return p
}

// headerLimit is MaxResponseHeaderBytes as net/http applies it.
func (st *state) headerLimit() int64 {
	if n := st.ht.MaxResponseHeaderBytes; n > 0 {
		return n
	}
	return 10 << 20 // net/http's default
}

// CloseIdleConnections closes the conns that are idle now, and ends the
// background probes of upstreams known down under way; it does not
// interrupt conns in use.
func (t *Transport) CloseIdleConnections() {
	t.get().ht.CloseIdleConnections()
	t.get().ups.closeProbes() // a probe's conn is no caller's
}

// jittered returns d ±10%, drawn once per conn.
func jittered(d time.Duration) time.Duration {
	j := d / 10
	if j <= 0 {
		return d
	}
	return d - j + rand.N(2*j+1)
}

// bornConn is a conn with the time it was dialed, the lifetime drawn for
// it (0: none) and the bytes read from it and written to it so far; the
// Transport finds it under the *tls.Conn and the first-byte watch through
// their NetConn methods (GotConn).
type bornConn struct {
	net.Conn
	born     time.Time
	lifetime time.Duration
	births   *births
	closing  sync.Once

	// read and written count the bytes that came from the peer and that
	// the peer's socket took: the watch's measure of progress. bulk counts
	// those of writes larger than smallWrite: on an HTTP/2 conn the
	// measure of an upload's progress, which the conn's own pings, ping
	// answers and window updates, each a small write, do not fake.
	read, written, bulk atomic.Uint64
	// proto is the conn's protocol once a try got it: protoUnknown,
	// protoH1 or protoH2 (ALPN, looked up once).
	proto atomic.Uint32
	// watched: an HTTP/2 conn silent since a try gave up on it is being
	// watched (see abandoned); silent: the watch closed it.
	watched, silent atomic.Bool
}

const (
	protoUnknown = iota
	protoH1
	protoH2
)

// smallWrite is the most bytes of a write that may carry only HTTP/2
// control frames: a PING is 17 bytes, 39 to 46 in its TLS record, and a
// flush may join it with a WINDOW_UPDATE (13) or a SETTINGS ack (9).
const smallWrite = 64

// uploaded is the conn's measure of an upload's progress: every byte
// written on HTTP/1.1, those of larger writes on HTTP/2.
func (c *bornConn) uploaded() uint64 {
	if c.proto.Load() == protoH2 {
		return c.bulk.Load()
	}
	return c.written.Load()
}

// NetConn returns the conn underneath.
func (c *bornConn) NetConn() net.Conn { return c.Conn }

func (c *bornConn) expired(now time.Time) bool {
	return c.lifetime > 0 && now.Sub(c.born) >= c.lifetime
}

// Read counts the bytes read.
func (c *bornConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.read.Add(uint64(n))
	}
	return n, err
}

// writePiece is the most bytes handed to the socket at once, so that a
// large Write (net/http copies an in-memory body in one) shows its
// progress piece by piece: an upload whose peer takes at least this much
// per StallTimeout is never cut as stalled. A TLS record (16 KiB and its
// overhead) fits in one piece.
const writePiece = 32 << 10

// Write writes p in pieces of at most writePiece bytes, counting each.
func (c *bornConn) Write(p []byte) (int, error) {
	n := 0
	for {
		q := p[n:]
		if len(q) > writePiece {
			q = q[:writePiece]
		}
		m, err := c.Conn.Write(q)
		if m > 0 {
			c.written.Add(uint64(m))
			if m > smallWrite {
				c.bulk.Add(uint64(m))
			}
		}
		n += m
		if err != nil || n == len(p) {
			return n, err
		}
	}
}

// Close closes the conn and forgets its birth.
func (c *bornConn) Close() error {
	if c.lifetime > 0 {
		c.closing.Do(func() { c.births.remove(c) })
	}
	return c.Conn.Close()
}

// births knows the birth times of a Transport's open conns, so that a
// request can tell with one atomic load whether any conn may have outlived
// MaxConnLifetime (and only then pays for its own copy of the headers).
type births struct {
	lifetime time.Duration
	mu       sync.Mutex
	open     map[*bornConn]struct{}
	oldest   atomic.Int64 // UnixNano of the oldest open conn; 0: none
}

// mayHaveExpired reports whether a conn open now may be past its lifetime
// (the shortest a conn draws is 90% of MaxConnLifetime).
func (b *births) mayHaveExpired(now int64) bool {
	if b == nil || b.lifetime <= 0 {
		return false
	}
	o := b.oldest.Load()
	return o != 0 && now-o >= int64(b.lifetime-b.lifetime/10)
}

// roughNow is the wall clock in Unix nanoseconds, from the watch when its
// loop runs (at most a tick behind, never ahead), else read.
func (st *state) roughNow() int64 {
	if w := st.watch; w != nil && w.running.Load() {
		return w.wall.Load()
	}
	return time.Now().UnixNano()
}

func (b *births) add(c *bornConn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.open[c] = struct{}{}
	if o := b.oldest.Load(); o == 0 || c.born.UnixNano() < o {
		b.oldest.Store(c.born.UnixNano())
	}
}

func (b *births) remove(c *bornConn) {
	b.mu.Lock()
	defer b.mu.Unlock()
	delete(b.open, c)
	var oldest int64
	for o := range b.open { // a conn closes far less often than a request is made
		if n := o.born.UnixNano(); oldest == 0 || n < oldest {
			oldest = n
		}
	}
	b.oldest.Store(oldest)
}

// dialFunc wraps a Dialer's raw connect seam so that each conn knows its
// age.
func (b *births) dialFunc(inner func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if inner == nil {
		var nd net.Dialer
		inner = nd.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := inner(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		if c == nil {
			return nil, errors.New("transport: DialFunc returned a nil conn and no error")
		}
		var lifetime time.Duration
		if b.lifetime > 0 {
			lifetime = jittered(b.lifetime)
		}
		bc := &bornConn{Conn: c, born: time.Now(), lifetime: lifetime, births: b}
		if lifetime > 0 {
			b.add(bc)
		}
		return bc, nil
	}
}

// bornOf finds the bornConn under c, if any.
func bornOf(c net.Conn) *bornConn {
	for c != nil {
		if b, ok := c.(*bornConn); ok {
			return b
		}
		w, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			return nil
		}
		c = w.NetConn()
	}
	return nil
}

// SyscallConn returns the raw conn underneath, when it has one.
func (c *bornConn) SyscallConn() (syscall.RawConn, error) {
	if sc, ok := c.Conn.(syscall.Conn); ok {
		return sc.SyscallConn()
	}
	return nil, &net.OpError{Op: "syscallconn", Net: "tcp", Err: errors.ErrUnsupported}
}

// CloseWrite shuts down the writing side when the conn underneath can.
func (c *bornConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return &net.OpError{Op: "closewrite", Net: "tcp", Err: errors.ErrUnsupported}
}
