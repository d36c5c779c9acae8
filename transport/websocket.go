package transport

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"
	"unicode"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/retry"
)

// Defaults of the zero WebSocketDialer.
const (
	DefaultHandshakeTimeout = 10 * time.Second
	DefaultPingInterval     = 15 * time.Second
	DefaultPongTimeout      = 10 * time.Second
)

// A WebSocketDialer opens websocket connections (gorilla/websocket) that
// cannot hang and that notice a dead peer.
//
// The handshake runs on a [dial.Dialer]: the resolved addresses are raced
// through TCP and, for wss, through TLS, so an address that accepts and
// then stalls is overtaken after the Dialer's AttemptDelay; a lone address
// races itself; every phase has its limit and fails with a *dial.Error.
// TLS offers only ALPN "http/1.1" (a config that offers h2 breaks the
// upgrade against servers that pick it) and verifies the certificate for
// the URL's host. HandshakeTimeout bounds each attempt from DNS to the 101.
// Proxies come from the environment (or Proxy) and are tunnelled with
// CONNECT for ws and wss alike, the TLS to the backend done over the
// tunnel. A failed attempt is retried through Retry, except an answer
// that refuses the upgrade (3xx, 4xx but 408 and 429), which is final.
//
// Each conn that Dial returns sends a ping every PingInterval and is
// closed when the peer shows no life within PongTimeout of one (see
// [ErrPongTimeout]); reading the answers does not depend on the
// application reading the conn. Any byte from the peer answers a ping: a
// peer from which bytes keep arriving is alive. Pings are written between
// the application's frames, never under gorilla's write lock: a long
// write neither delays them nor is delayed past its deadline by them. A
// ping that waits behind an upload in the socket's send queue (or cannot
// be written at all) is answered, on Linux, by the peer's TCP
// acknowledging the upload: a slow reader is alive, a vanished or hung
// peer is found within PingInterval + PongTimeout even while the
// application writes; elsewhere such a ping starts no clock until it is
// written, and the write deadline bounds the rest. The peer's pings are
// answered the same way, as soon as they arrive, whether or not the
// application is reading (gorilla answers them only inside the
// application's reads); a ping handler the application sets still runs
// when it reads, and a pong it writes is a second one, which RFC 6455
// §5.5.3 allows.
//
// The zero value is ready to use; every limit has a finite default. A
// WebSocketDialer is safe for concurrent use as long as its fields are not
// changed while dials are in flight. Defaults are resolved at each dial
// and never written back.
type WebSocketDialer struct {
	// Dialer makes the TCP and TLS connections (to the server or the
	// proxy). Nil means the zero dial.Dialer. Its TLSConfig is used when
	// TLSClientConfig is nil; either way the config is cloned and its
	// NextProtos replaced by "http/1.1".
	Dialer *dial.Dialer
	// TLSClientConfig configures TLS for wss. Nil means Dialer.TLSConfig,
	// or the default config (system roots, certificate verified for the
	// URL's host). An empty ServerName becomes the URL's host.
	TLSClientConfig *tls.Config
	// HandshakeTimeout bounds each handshake attempt from DNS to the 101
	// answer: resolution, connect, proxy CONNECT, TLS, the upgrade request
	// and its answer. Zero means 10s; negative means no limit of its own
	// (the Dialer's phase limits and the context still apply; the wait for
	// the answer is then bounded only by the Dialer's FirstByteTimeout).
	HandshakeTimeout time.Duration
	// PingInterval is how often a conn pings its peer. Zero means 15s;
	// negative means no pings and no liveness check.
	PingInterval time.Duration
	// PongTimeout is how long after a ping the peer has to show life
	// before the conn is closed: send something (its pong, or any other
	// byte; one that arrived after the ping's write began counts) or, on
	// Linux, let its TCP acknowledge bytes the conn queued before the
	// ping (a peer still taking an upload has not reached the ping yet).
	// On Linux the time counts from when the ping was due, written or not;
	// elsewhere from when its write ended. Zero means 10s; negative means
	// pings are sent (to keep middleboxes from dropping the idle conn) but
	// no answer is awaited.
	PongTimeout time.Duration
	// Retry retries failed handshake attempts. Nil means the default policy
	// (3 attempts). An answer other than 101 with a 3xx or 4xx status is
	// never retried, except 408 and 429; those and a 5xx answer are, after
	// their Retry-After if they have one (up to Retry.MaxRetryAfter).
	Retry *retry.Policy
	// Proxy returns the proxy for a request (its URL has scheme http for ws
	// and https for wss). Nil means http.ProxyFromEnvironment
	// (HTTPS_PROXY, HTTP_PROXY, NO_PROXY; loopback hosts are never
	// proxied). http and https proxies are supported; the tunnel is made
	// with CONNECT, with the proxy URL's userinfo as basic
	// Proxy-Authorization.
	Proxy func(*http.Request) (*url.URL, error)
	// Subprotocols are offered in Sec-WebSocket-Protocol.
	Subprotocols []string
	// ReadBufferSize and WriteBufferSize are gorilla's I/O buffer sizes; 0
	// means 4096.
	ReadBufferSize, WriteBufferSize int
	// Name tells this WebSocketDialer's telemetry apart from other
	// clients' in the same process: every span and metric point it makes
	// (and its sessions make) carries it as lifeline.client.name, those of
	// its retries and of its Dialer's dials included (a Dialer with a Name
	// of its own keeps it). Empty means no such attribute.
	Name string
	// TracerProvider makes the spans (websocket.handshake per attempt,
	// websocket.conn per connection), and those of the dials and of Retry
	// when Dialer and Retry have no provider of their own. Nil means the
	// otel global.
	TracerProvider trace.TracerProvider
	// MeterProvider makes the websocket metrics, and those of the dials
	// (the race's masked failures among them) and of Retry when Dialer and
	// Retry have no provider of their own. Nil means the otel global.
	MeterProvider metric.MeterProvider
	// Logger, when set, gets a Warn record for each failed handshake
	// attempt (not a caller's cancel), rate-limited per kind of failure:
	// the first of a kind, then at most one per 10s carrying
	// "suppressed"=N (incident 05). A record holds the URL without query
	// and userinfo, the error.type and the error text cut to 256 bytes;
	// never a header. Everything that logs through the same Logger shares
	// the limit. Nil means no logging.
	Logger *slog.Logger
	// Credentials, when set, authenticate each handshake try: Apply is
	// called on a request built for it (GET, the URL with scheme http for
	// ws and https for wss, the caller's headers; its context bounded by
	// HandshakeTimeout) and the headers it leaves are the ones sent. When
	// the server refuses the upgrade with 401 or 403, Refresh is called
	// once per Dial (bounded by HandshakeTimeout) and the handshake tried
	// once more, not charged to Retry; a second refusal is final. An error
	// from Apply or Refresh ends Dial with it, unretried. Nil means the
	// headers go as given.
	Credentials Credentials
	// MaxMessageSize caps the size of a message read from a conn that Dial
	// returns (gorilla's SetReadLimit): a peer that sends a bigger one
	// gets a close frame 1009 and the read fails with an error that
	// matches websocket.ErrReadLimit, before the payload is buffered. Zero
	// means 16 MiB; negative means no limit.
	MaxMessageSize int64

	// logq, when set, takes the Logger's records instead of the calling
	// goroutine: a WebSocketSession's copy of its Dialer writes them on a
	// goroutine of their own, not on the session's, which Close waits for.
	logq *logx.Queue
}

// logFailure logs a failed handshake (or refresh) through the Logger's
// rate limiter: on the caller's goroutine, or queued (logq).
func (d *WebSocketDialer) logFailure(ctx context.Context, kind, msg string, err error, attrs ...slog.Attr) {
	if d.logq != nil {
		d.logq.Failure(ctx, kind, msg, err, attrs...)
		return
	}
	logx.For(d.Logger).Failure(ctx, kind, msg, err, attrs...)
}

// DefaultMaxMessageSize is the read limit of a conn when MaxMessageSize
// is zero.
const DefaultMaxMessageSize = 16 << 20

func (d *WebSocketDialer) maxMessageSize() int64 {
	return orDefault(d.MaxMessageSize, int64(DefaultMaxMessageSize))
}

func (d *WebSocketDialer) handshakeTimeout() time.Duration {
	return orDefault(d.HandshakeTimeout, DefaultHandshakeTimeout)
}

// pingInterval returns the interval, or 0 when pings are off.
func (d *WebSocketDialer) pingInterval() time.Duration {
	return orDefault(d.PingInterval, DefaultPingInterval)
}

// pongTimeout returns the timeout, or 0 when no answer is awaited.
func (d *WebSocketDialer) pongTimeout() time.Duration {
	return orDefault(d.PongTimeout, DefaultPongTimeout)
}

func (d *WebSocketDialer) proxy() func(*http.Request) (*url.URL, error) {
	if d.Proxy != nil {
		return d.Proxy
	}
	return http.ProxyFromEnvironment
}

// tlsConfig returns the config for a TLS handshake with host: cloned,
// ALPN http/1.1 only, ServerName the host unless set.
func (d *WebSocketDialer) tlsConfig(host string) *tls.Config {
	base := d.TLSClientConfig
	if base == nil && d.Dialer != nil {
		base = d.Dialer.TLSConfig
	}
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{}
	}
	cfg.NextProtos = []string{"http/1.1"}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.MinVersion == 0 {
		cfg.MinVersion = tls.VersionTLS12 // Go's client default, made explicit
	}
	return cfg
}

// netDialer returns a copy of the Dialer whose TLSConfig is cfg. The
// WebSocketDialer's providers reach the dials (their spans, the race's
// masked failures, the dial metrics) unless the Dialer has its own. A
// Dialer without a Health dials with the one kept for the WebSocketDialer
// (dial.HealthFor): the copies are made per dial, and what one dial learnt
// orients the next.
func (d *WebSocketDialer) netDialer(cfg *tls.Config) *dial.Dialer {
	var nd dial.Dialer
	if d.Dialer != nil {
		nd = *d.Dialer
	}
	if nd.Health == nil {
		nd.Health = dial.HealthFor(d)
	}
	nd.TLSConfig = cfg
	if nd.Name == "" {
		nd.Name = d.Name
	}
	if nd.TracerProvider == nil {
		nd.TracerProvider = d.TracerProvider
	}
	if nd.MeterProvider == nil {
		nd.MeterProvider = d.MeterProvider
	}
	return &nd
}

// retryPolicy returns the policy Dial retries with: Retry, or the default,
// with the WebSocketDialer's providers unless it has its own.
func (d *WebSocketDialer) retryPolicy() *retry.Policy {
	var p retry.Policy
	if d.Retry != nil {
		p = *d.Retry
	}
	if p.TracerProvider == nil {
		p.TracerProvider = d.TracerProvider
	}
	if p.MeterProvider == nil {
		p.MeterProvider = d.MeterProvider
	}
	p.TracerProvider, p.MeterProvider = otelx.NamedTracerProvider(p.TracerProvider, d.Name), otelx.NamedMeterProvider(p.MeterProvider, d.Name)
	return &p
}

// ErrPongTimeout is matched (errors.Is) by the error a conn's reads and
// writes return after the peer stopped answering pings; see
// [PongTimeoutError].
var ErrPongTimeout = errors.New("websocket: peer stopped answering pings")

// PongTimeoutError is the error of a websocket conn closed because nothing
// arrived from the peer within PongTimeout of a ping: a peer that vanished
// (no FIN, no RST), a hung server or a path that drops packets. It is a
// timeout: it matches errors.Is(err, context.DeadlineExceeded) and
// [ErrPongTimeout], and Timeout() is true.
type PongTimeoutError struct {
	// Peer is the conn's remote address ("ip:port").
	Peer string
	// PingInterval and PongTimeout are the conn's settings.
	PingInterval, PongTimeout time.Duration
}

func (e *PongTimeoutError) Error() string {
	return fmt.Sprintf("websocket: peer %s stopped answering: nothing received within %v of a ping (pings every %v)",
		e.Peer, e.PongTimeout, e.PingInterval)
}

// Timeout is true.
func (e *PongTimeoutError) Timeout() bool { return true }

// Temporary is false: the conn is closed.
func (e *PongTimeoutError) Temporary() bool { return false }

// Is matches ErrPongTimeout and context.DeadlineExceeded.
func (e *PongTimeoutError) Is(target error) bool {
	return target == ErrPongTimeout || target == context.DeadlineExceeded
}

// ErrorType is "pong_timeout" (for error.type).
func (e *PongTimeoutError) ErrorType() string { return "pong_timeout" }

// HandshakeError is the error of a failed websocket handshake attempt. With
// an answer (StatusCode not 0), Err matches websocket.ErrBadHandshake and
// Dial returns the answer too (its Body holds the first KiB of the body).
// Without one, Err is why: a *dial.Error, a *ProxyError, a TLS error
// through a proxy (a *dial.Error of dial.PhaseTLS), or a timeout.
//
// Timeouts match errors.Is(err, context.DeadlineExceeded).
type HandshakeError struct {
	// URL is the URL dialled, without userinfo, query and fragment.
	URL string
	// StatusCode is the answer's status (101 for an invalid 101), or 0.
	StatusCode int
	// Err is the cause.
	Err error

	status string // the answer's status line text
}

func (e *HandshakeError) Error() string {
	var b strings.Builder
	b.WriteString("websocket: handshake with ")
	b.WriteString(e.URL)
	b.WriteString(": ")
	if e.StatusCode != 0 {
		b.WriteString(answerText(e.status, 128))
		b.WriteString(": ")
	}
	b.WriteString(answerText(strings.TrimPrefix(e.Err.Error(), "websocket: "), 512)) // said above
	return b.String()
}

// answerText is text that may quote a server's answer (its reason phrase,
// net/http's "malformed HTTP response ...") as an error carries it to a
// host's logs and screens: control characters (a terminal's escapes) are
// '?', and it is cut to n bytes.
func answerText(s string, n int) string {
	s = strings.Map(func(r rune) rune {
		if unicode.IsControl(r) {
			return '?'
		}
		return r
	}, s)
	return logx.Cut(s, n)
}

// Unwrap returns Err.
func (e *HandshakeError) Unwrap() error { return e.Err }

// Timeout reports whether a time limit ended the attempt.
func (e *HandshakeError) Timeout() bool { return isTimeout(e.Err) }

// Temporary is Retryable.
func (e *HandshakeError) Temporary() bool { return e.Retryable() }

// Is matches context.DeadlineExceeded when the attempt timed out.
func (e *HandshakeError) Is(target error) bool {
	return target == context.DeadlineExceeded && e.Timeout()
}

// Retryable reports whether another attempt may succeed: not for an
// answer with a 1xx to 4xx status (the server refused the upgrade, or
// answered a 101 that is not a websocket's) unless a time limit cut the
// exchange after the status line; a 5xx, 408 or 429 (a busy server) is
// retryable. Not for a proxy that refused the tunnel with a 3xx or 4xx
// (a 407 included), a TLS certificate error, an unknown host, or the
// caller's cancel; otherwise what the cause says of itself, or true.
func (e *HandshakeError) Retryable() bool {
	if e.StatusCode != 0 && !e.Timeout() {
		return e.StatusCode >= 500 || wsBusyStatus(e.StatusCode)
	}
	if errors.Is(e.Err, context.Canceled) {
		return false
	}
	var r interface{ Retryable() bool }
	if errors.As(e.Err, &r) {
		return r.Retryable()
	}
	return true
}

// ErrorType names the failure for error.type: "http_<status>", the
// cause's class, or "handshake_error" for an answer that is no HTTP at all
// (a malformed status line: a cause of no class, never named by its Go
// type).
func (e *HandshakeError) ErrorType() string {
	if e.StatusCode != 0 {
		return "http_" + strconv.Itoa(e.StatusCode)
	}
	return classOr(otelx.ErrorTypeOf(e.Err), "handshake_error")
}

// classOr is class t, or def when t is what otelx falls back to for an
// error it cannot classify: its Go type's name ("*errors.errorString").
func classOr(t, def string) string {
	if t == "" || strings.HasPrefix(t, "*") || strings.Contains(t, ".") {
		return def
	}
	return t
}

// isTimeout reports whether err is a timeout: it matches
// context.DeadlineExceeded or is a net.Error that says so.
func isTimeout(err error) bool {
	if errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ProxyError is the error of a proxy that did not open the tunnel.
type ProxyError struct {
	// Proxy is the proxy's host:port.
	Proxy string
	// StatusCode is the proxy's answer to CONNECT.
	StatusCode int
	status     string
}

func (e *ProxyError) Error() string {
	msg := "websocket: proxy " + e.Proxy + " refused CONNECT: " + e.status
	if e.StatusCode == http.StatusProxyAuthRequired {
		msg += " (the proxy URL's userinfo is sent as Basic Proxy-Authorization; check it)"
	}
	return msg
}

// Retryable is true for a 5xx answer (a proxy that failed to reach the
// server) and for 408 and 429 (a busy proxy), false otherwise: a 407
// (Proxy Authentication Required) and other refusals are final, for Dial
// and for a session alike: credentials do not heal by retrying.
func (e *ProxyError) Retryable() bool { return e.StatusCode >= 500 || wsBusyStatus(e.StatusCode) }

// ErrorType is "proxy_<status>".
func (e *ProxyError) ErrorType() string { return "proxy_" + strconv.Itoa(e.StatusCode) }

// wsTarget is a parsed, checked websocket URL.
type wsTarget struct {
	u        *url.URL
	raw      string // as the caller gave it (to gorilla)
	safe     string // for spans and errors: no userinfo, query, fragment
	host     string // without port
	hostPort string
	tls      bool
}

func parseTarget(rawURL string) (*wsTarget, error) {
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, fmt.Errorf("websocket: bad URL %q: %w", otelx.StripURL(rawURL), errors.Unwrap(err))
	}
	t := &wsTarget{u: u, raw: rawURL, safe: otelx.StripURL(rawURL), host: u.Hostname()}
	var port string
	switch u.Scheme {
	case "ws":
		port = "80"
	case "wss":
		t.tls, port = true, "443"
	default:
		return nil, fmt.Errorf("websocket: bad URL %s: scheme %q, want ws or wss", t.safe, u.Scheme)
	}
	if u.User != nil {
		return nil, fmt.Errorf("websocket: bad URL %s: userinfo is not allowed (send credentials in a header)", t.safe)
	}
	if t.host == "" {
		return nil, fmt.Errorf("websocket: bad URL %s: no host", t.safe)
	}
	if p := u.Port(); p != "" {
		port = p
	}
	t.hostPort = net.JoinHostPort(t.host, port)
	if _, _, err := net.SplitHostPort(t.hostPort); err != nil || strings.ContainsAny(t.host, "[]") {
		return nil, fmt.Errorf("websocket: bad URL %s: bad host %q", t.safe, t.host)
	}
	return t, nil
}

// Dial opens a websocket connection to rawURL (ws:// or wss://) with the
// extra request headers h, retrying failed attempts through Retry. It
// returns the conn and the server's answer; on failure the last answer
// when there was one (a refusal such as 401, 403 or 404 is returned at
// once, with its answer; with Credentials, a 401 or 403 after one
// Refresh and one more try) and an error: a *HandshakeError for each
// attempt's failure, inside a *retry.ExhaustedError when retries ran out.
// Timeouts match errors.Is(err, context.DeadlineExceeded); errors.As finds
// the last attempt's *dial.Error when the dial failed.
//
// The conn pings its peer (see PingInterval, PongTimeout); its goroutines
// end when it is closed or fails. The caller closes the conn. The usual
// gorilla rules hold: one reader and one writer at a time; Close and
// WriteControl may be called concurrently with anything.
func (d *WebSocketDialer) Dial(ctx context.Context, rawURL string, h http.Header) (*websocket.Conn, *http.Response, error) {
	t, err := parseTarget(rawURL)
	if err != nil {
		return nil, nil, err
	}
	var resp *http.Response
	refreshed := false // Credentials are refreshed once per Dial
	conn, err := retry.Do(ctx, d.retryPolicy(), func(ctx context.Context) (*websocket.Conn, error) {
		c, r, err := d.dialOnce(ctx, t, h, trace.SpanContext{}, &refreshed)
		if r != nil {
			resp = r
		}
		if err != nil {
			var he *HandshakeError
			if errors.As(err, &he) && !he.Retryable() {
				return nil, retry.Permanent(err)
			}
			if r != nil && (r.StatusCode >= 500 || wsBusyStatus(r.StatusCode)) {
				// A server shedding load says when to come back: no sooner
				// (beyond Retry.MaxRetryAfter, the retries end).
				if wait, ok := retryAfter(r.Header, time.Now()); ok {
					return nil, retry.After(wait, err)
				}
			}
		}
		return c, err
	})
	if err != nil {
		return nil, resp, err
	}
	return conn, resp, nil
}

// dialOnce makes one handshake try and, when the server refused the
// Credentials (401, 403) and *refreshed is false, refreshes them, sets
// *refreshed and tries once more. A failed Refresh is the error (a
// *HandshakeError without a status: the refusal was not tested with a
// renewed credential), with the refusal's answer.
func (d *WebSocketDialer) dialOnce(ctx context.Context, t *wsTarget, h http.Header, link trace.SpanContext,
	refreshed *bool) (*websocket.Conn, *http.Response, error) {
	var sent *http.Request
	conn, resp, err := d.attempt(ctx, t, h, link, &sent)
	if d.Credentials == nil || *refreshed || sent == nil || !credentialsRefused(err) {
		return conn, resp, err
	}
	*refreshed = true
	rctx := ctx
	if hto := d.handshakeTimeout(); hto > 0 {
		var cancel context.CancelFunc
		rctx, cancel = context.WithTimeoutCause(ctx, hto, &handshakeTimeoutError{hto})
		defer cancel()
	}
	if rerr := d.Credentials.Refresh(rctx, sent.WithContext(rctx)); rerr != nil {
		rerr = credentialsErr("refresh after a "+strconv.Itoa(resp.StatusCode)+" answer", rerr, sent.Header)
		if d.Logger != nil {
			d.logFailure(ctx, "websocket.credentials", "lifeline: websocket credentials refresh failed",
				rerr, slog.String("url.full", t.safe), slog.String("error.type", "credentials"))
		}
		return nil, resp, &HandshakeError{URL: t.safe, Err: rerr}
	}
	if resp != nil && resp.Body != nil {
		resp.Body.Close()
	}
	return d.attempt(ctx, t, h, link, &sent)
}

// credentialsRefused reports whether err is the server's 401 or 403
// answer to an upgrade.
func credentialsRefused(err error) bool {
	var he *HandshakeError
	return errors.As(err, &he) && !he.Timeout() &&
		(he.StatusCode == http.StatusUnauthorized || he.StatusCode == http.StatusForbidden)
}

// handshakeRequest is the request Credentials.Apply sees for a handshake
// to t with headers h: GET, the URL with scheme http or https.
func handshakeRequest(ctx context.Context, t *wsTarget, h http.Header) *http.Request {
	u := *t.u
	u.Scheme = "http"
	if t.tls {
		u.Scheme = "https"
	}
	hc := h.Clone()
	if hc == nil {
		hc = http.Header{}
	}
	req := &http.Request{Method: http.MethodGet, URL: &u, Host: u.Host, Header: hc,
		Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1}
	return req.WithContext(ctx)
}

// attemptState is what the net dial of one attempt tells the attempt.
type attemptState struct {
	conn    *liveConn
	proxied bool
}

// attempt makes one handshake: its span, its timeout, its metric. link,
// when valid, is linked from the conn's span (a session's reconnect).
// With Credentials, *sent is set to the request they were applied to.
func (d *WebSocketDialer) attempt(ctx context.Context, t *wsTarget, h http.Header, link trace.SpanContext,
	sent **http.Request) (*websocket.Conn, *http.Response, error) {
	tel := otelx.WebSocketInstruments(d.meterProvider())
	tracer := otelx.Tracer(d.tracerProvider(), otelx.ScopeTransport)
	start := time.Now()
	ctx, span := tracer.Start(ctx, "websocket.handshake", trace.WithSpanKind(trace.SpanKindClient))
	defer span.End()
	if span.IsRecording() {
		setHandshakeAttributes(ctx, span, t)
	}
	parent := ctx
	if hto := d.handshakeTimeout(); hto > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, hto, &handshakeTimeoutError{hto})
		defer cancel()
	}
	st := &attemptState{}
	var conn *websocket.Conn
	var resp *http.Response
	var err error
	if d.Credentials != nil {
		req := handshakeRequest(ctx, t, h)
		*sent = nil
		if err = d.Credentials.Apply(req); err != nil {
			err = credentialsErr("apply", err, h, req.Header)
		} else {
			*sent, h = req, req.Header
		}
	}
	if err == nil {
		conn, resp, err = d.handshake(ctx, t, h, st)
	}
	record := func(outcome string) {
		tel.Handshakes.Record(context.WithoutCancel(parent), time.Since(start).Seconds(),
			metric.WithAttributes(otelx.KeyOutcome.String(outcome)))
	}
	if err != nil {
		err = d.handshakeErr(parent, ctx, t, st, resp, err)
		record(d.handshakeFailed(parent, span, t, resp, err))
		return nil, resp, err
	}
	if span.IsRecording() {
		span.SetAttributes(otelx.HTTPStatus(resp.StatusCode), otelx.KeyProxied.Bool(st.proxied))
		if ap, ok := st.conn.peer(); ok {
			span.SetAttributes(otelx.PeerAddress(ap.Addr().String()), otelx.PeerPort(int(ap.Port())))
		}
	}
	record(otelx.OutcomeOK)
	if tc, ok := st.conn.tlsConn(); ok {
		cs := tc.ConnectionState()
		resp.TLS = &cs
	}
	if n := d.maxMessageSize(); n > 0 {
		conn.SetReadLimit(n)
	}
	links := []trace.Link{{SpanContext: span.SpanContext()}}
	if link.IsValid() {
		links = append(links, trace.Link{SpanContext: link})
	}
	st.conn.start(conn, liveConfig{ping: d.pingInterval(), pong: d.pongTimeout(), tracer: tracer, tel: tel,
		links: links, url: t.safe})
	return conn, resp, nil
}

// setHandshakeAttributes describes the attempt on its span.
func setHandshakeAttributes(ctx context.Context, span trace.Span, t *wsTarget) {
	port, _ := strconv.Atoi(t.u.Port())
	if port == 0 {
		port = 80
		if t.tls {
			port = 443
		}
	}
	span.SetAttributes(otelx.URLFull(t.safe), otelx.ServerAddress(t.host), otelx.ServerPort(port),
		otelx.HTTPMethod(http.MethodGet))
	if n := retry.Attempt(ctx); n > 1 {
		span.SetAttributes(otelx.ResendCount(n - 1))
	}
}

// handshake runs gorilla's handshake over the attempt's net dial, under
// ctx: gorilla bounds the exchange with ctx's deadline (SetDeadline on the
// conn) but does not watch a cancel, so a cancel closes the conn.
func (d *WebSocketDialer) handshake(ctx context.Context, t *wsTarget, h http.Header, st *attemptState) (*websocket.Conn, *http.Response, error) {
	netDial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return d.netDial(ctx, t, st)
	}
	gd := websocket.Dialer{
		NetDialContext:  netDial,
		ReadBufferSize:  d.ReadBufferSize,
		WriteBufferSize: d.WriteBufferSize,
		Subprotocols:    d.Subprotocols,
	}
	if t.tls {
		// gorilla does no TLS when NetDialTLSContext is set; netDial made it.
		gd.NetDialTLSContext = netDial
	}
	stop := func() bool { return true }
	conn, resp, err := gd.DialContext(contextWithDialHook(ctx, func(lc *liveConn) {
		stop = context.AfterFunc(ctx, lc.abort)
	}), t.raw, h)
	if !stop() && err == nil {
		// The cancel (or the timeout) won against the 101: the conn was
		// aborted under gorilla. The answer came too late to count: the
		// error is the cancel's or the timeout's, never a refusal with the
		// 101's status (which would end a session for good).
		conn.Close()
		return nil, nil, context.Cause(ctx)
	}
	return conn, resp, err
}

// handshakeFailed records a failed attempt on its span and in the log, and
// returns the outcome for the metric. A caller's cancel is not a failure.
func (d *WebSocketDialer) handshakeFailed(parent context.Context, span trace.Span, t *wsTarget, resp *http.Response, err error) string {
	outcome := otelx.OutcomeError
	switch {
	case errors.Is(err, context.Canceled) && parent.Err() != nil:
		outcome = otelx.OutcomeCanceled
	case isTimeout(err):
		outcome = otelx.OutcomeTimeout
		otelx.RecordError(span, err)
	default:
		otelx.RecordError(span, err)
	}
	if resp != nil && span.IsRecording() {
		span.SetAttributes(otelx.HTTPStatus(resp.StatusCode))
	}
	if d.Logger != nil && outcome != otelx.OutcomeCanceled {
		et := otelx.ErrorTypeOf(err)
		d.logFailure(parent, "websocket.handshake."+et, "lifeline: websocket handshake failed", err,
			slog.String("url.full", t.safe), slog.String("error.type", et))
	}
	return outcome
}

// handshakeTimeoutError is the cause of an attempt's context when
// HandshakeTimeout ran out.
type handshakeTimeoutError struct{ d time.Duration }

func (e *handshakeTimeoutError) Error() string {
	return "no 101 answer within HandshakeTimeout " + e.d.String()
}
func (e *handshakeTimeoutError) Timeout() bool        { return true }
func (e *handshakeTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// handshakeErr wraps the failure of one attempt in a *HandshakeError.
func (d *WebSocketDialer) handshakeErr(parent, ctx context.Context, t *wsTarget, st *attemptState,
	resp *http.Response, err error) error {
	he := &HandshakeError{URL: t.safe, Err: err}
	var de *dial.Error
	switch {
	case resp != nil:
		he.StatusCode = resp.StatusCode
		he.status = resp.Status
		if he.status == "" {
			he.status = strconv.Itoa(resp.StatusCode)
		}
	case errors.As(err, &de):
		// The dial's own error says where and why.
	case parent.Err() != nil || expired(parent):
		he.Err = joinCause(causeOf(parent), err)
	case ctx.Err() != nil || expired(ctx):
		// HandshakeTimeout ran out after the dial (a dial that ran out
		// returned a *dial.Error): name the limit, keep what failed.
		he.Err = joinCause(causeOf(ctx), err)
	}
	return he
}

// expired reports whether ctx's deadline has passed. gorilla puts the
// deadline on the conn, whose read can fail a moment before ctx's own
// timer marks it done.
func expired(ctx context.Context) bool {
	dl, ok := ctx.Deadline()
	return ok && !time.Now().Before(dl)
}

// causeOf is context.Cause, waiting out the moment between a deadline
// passing and ctx reporting it.
func causeOf(ctx context.Context) error {
	if ctx.Err() == nil && expired(ctx) {
		<-ctx.Done()
	}
	return context.Cause(ctx)
}

// joinCause returns cause, with err appended to its text when err says
// something more; both match errors.Is.
func joinCause(cause, err error) error {
	if cause == nil || errors.Is(err, cause) {
		return err
	}
	if err == nil || errors.Is(cause, err) {
		return cause
	}
	return &causeErr{cause: cause, err: err}
}

type causeErr struct{ cause, err error }

func (e *causeErr) Error() string   { return e.cause.Error() + ": " + e.err.Error() }
func (e *causeErr) Unwrap() []error { return []error{e.cause, e.err} }

// dialHookKey carries the function that learns the attempt's conn (to
// abort it on a cancel) through gorilla's DialContext.
type dialHookKey struct{}

func contextWithDialHook(ctx context.Context, hook func(*liveConn)) context.Context {
	return context.WithValue(ctx, dialHookKey{}, hook)
}

// netDial makes the attempt's connection: directly through the Dialer
// (raced through TLS for wss) or through a proxy's CONNECT tunnel, TLS
// to the server made over it. It returns the conn wrapped for liveness.
func (d *WebSocketDialer) netDial(ctx context.Context, t *wsTarget, st *attemptState) (net.Conn, error) {
	var tlsCfg *tls.Config
	if t.tls {
		tlsCfg = d.tlsConfig(t.host)
	}
	proxyURL, err := d.proxyFor(t)
	if err != nil {
		return nil, err
	}
	var c net.Conn
	if proxyURL == nil {
		nd := d.netDialer(tlsCfg)
		if t.tls {
			c, err = nd.DialTLSContext(ctx, "tcp", t.hostPort)
		} else {
			c, err = nd.DialContext(ctx, "tcp", t.hostPort)
		}
	} else {
		st.proxied = true
		c, err = d.dialProxy(ctx, proxyURL, t, tlsCfg)
	}
	if err != nil {
		return nil, err
	}
	lc := newLiveConn(c)
	st.conn = lc
	if hook, ok := ctx.Value(dialHookKey{}).(func(*liveConn)); ok {
		hook(lc)
	}
	return lc, nil
}

func (d *WebSocketDialer) proxyFor(t *wsTarget) (*url.URL, error) {
	ru := *t.u
	ru.Scheme = "http"
	if t.tls {
		ru.Scheme = "https"
	}
	req := &http.Request{Method: http.MethodGet, URL: &ru, Host: ru.Host, Header: http.Header{}}
	u, err := d.proxy()(req)
	if err != nil {
		return nil, fmt.Errorf("websocket: proxy for %s: %w", t.safe, err)
	}
	return u, nil
}

// dialProxy opens a CONNECT tunnel to t through the proxy and, for wss,
// makes the TLS handshake with the server over it. (gorilla v1.5.3 dials
// the proxy with NetDialTLSContext and never does TLS with the server:
// gorilla #779.) ctx bounds everything.
func (d *WebSocketDialer) dialProxy(ctx context.Context, pu *url.URL, t *wsTarget, tlsCfg *tls.Config) (net.Conn, error) {
	phost := pu.Hostname()
	pport := pu.Port()
	var c net.Conn
	var err error
	switch pu.Scheme {
	case "http", "":
		if pport == "" {
			pport = "80"
		}
		c, err = d.netDialer(nil).DialContext(ctx, "tcp", net.JoinHostPort(phost, pport))
	case "https":
		if pport == "" {
			pport = "443"
		}
		c, err = d.netDialer(d.tlsConfig(phost)).DialTLSContext(ctx, "tcp", net.JoinHostPort(phost, pport))
	default:
		return nil, fmt.Errorf("websocket: proxy scheme %q not supported (http or https)", pu.Scheme)
	}
	if err != nil {
		return nil, err
	}
	proxyAddr := net.JoinHostPort(phost, pport)
	// The exchange with the proxy and the TLS handshake run under ctx:
	// its deadline on the conn, a cancel closes it.
	if dl, ok := ctx.Deadline(); ok {
		_ = c.SetDeadline(dl)
	}
	stop := context.AfterFunc(ctx, func() { c.Close() })
	fail := func(err error) (net.Conn, error) {
		stop()
		c.Close()
		if ctx.Err() != nil {
			err = joinCause(context.Cause(ctx), err)
		}
		return nil, err
	}

	if err := wsConnectTunnel(c, pu, t, proxyAddr); err != nil {
		return fail(err)
	}
	if tlsCfg != nil {
		tc := tls.Client(c, tlsCfg)
		if err := tc.HandshakeContext(ctx); err != nil {
			return fail(&dial.Error{Phase: dial.PhaseTLS, Network: "tcp", Addr: t.hostPort, Err: err})
		}
		c = tc
	}
	if !stop() {
		c.Close()
		return nil, context.Cause(ctx)
	}
	// gorilla sets and clears its own deadlines from here.
	_ = c.SetDeadline(time.Time{})
	return c, nil
}

// wsConnectTunnel asks the proxy on c for a tunnel to t (CONNECT, with the
// proxy URL's userinfo as basic Proxy-Authorization) and reads its
// answer, bounded by MaxHandshakeBytes like the server's. Anything but a
// 200 is a *ProxyError.
func wsConnectTunnel(c net.Conn, pu *url.URL, t *wsTarget, proxyAddr string) error {
	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: t.hostPort},
		Host: t.hostPort, Header: http.Header{}}
	if pu.User != nil {
		pw, _ := pu.User.Password()
		req.Header.Set("Proxy-Authorization", "Basic "+
			base64.StdEncoding.EncodeToString([]byte(pu.User.Username()+":"+pw)))
	}
	if err := req.Write(c); err != nil {
		return fmt.Errorf("websocket: proxy %s: %w", proxyAddr, err)
	}
	lr := &io.LimitedReader{R: c, N: MaxHandshakeBytes}
	br := bufio.NewReader(lr)
	resp, err := http.ReadResponse(br, req)
	if err != nil && lr.N <= 0 {
		err = errHandshakeTooLarge
	}
	if err != nil {
		return fmt.Errorf("websocket: proxy %s: reading CONNECT answer: %w", proxyAddr, err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return &ProxyError{Proxy: proxyAddr, StatusCode: resp.StatusCode, status: resp.Status}
	}
	if br.Buffered() > 0 {
		return fmt.Errorf("websocket: proxy %s sent data before the tunnel opened", proxyAddr)
	}
	return nil
}
