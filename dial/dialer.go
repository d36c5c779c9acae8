package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/internal/retryx"
)

// Resolver looks up the IP addresses of a host. network is "ip", "ip4" or
// "ip6". *net.Resolver satisfies it; tests and service discovery plug in
// their own.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Defaults of the zero Dialer.
const (
	DefaultResolveTimeout        = 5 * time.Second
	DefaultConnectTimeout        = 5 * time.Second
	DefaultAttemptDelay          = 250 * time.Millisecond
	DefaultTLSHandshakeTimeout   = 5 * time.Second
	DefaultTimeout               = 15 * time.Second
	DefaultKeepAliveIdle         = 15 * time.Second
	DefaultKeepAliveInterval     = 5 * time.Second
	DefaultKeepAliveCount        = 3
	DefaultUserTimeout           = 30 * time.Second
	DefaultFirstByteTimeout      = 30 * time.Second
	DefaultMaxAttemptsPerAddress = 2
)

// A Dialer opens TCP (and TLS over TCP) connections that cannot hang: every
// phase has a finite limit, the resolved addresses are raced (RFC 8305,
// Happy Eyeballs v2) so that one dead or stalled address costs AttemptDelay
// rather than a timeout, and every dial, attempt and phase is traced and
// measured.
//
// The zero value is ready to use and safe: every limit has a finite default
// (see each field). A negative value turns a limit off where the field says
// so; a limit only ever shortens the caller's context, never extends it.
// Defaults are resolved at each dial and never written back; a Dialer
// without a Health keeps one of its own, outside the struct (see Health).
//
// A Dialer is safe for concurrent use by multiple goroutines as long as its
// fields are not changed while dials are in flight; a nil *Dialer dials
// like the zero value. The caller owns and
// closes every conn a Dialer returns; the Dialer closes every conn that
// lost a race before the dial returns, and every goroutine it starts has
// ended by then.
type Dialer struct {
	// Resolver resolves host names. Nil means net.DefaultResolver. IP
	// literals are never resolved. For network "tcp" the IPv6 and IPv4
	// lookups ("ip6", "ip4") run apart, as RFC 8305 §3 asks: once one
	// family answered with addresses, the other gets 50ms more and is then
	// canceled, so a lookup that hangs (a resolver or middlebox that
	// swallows AAAA queries) costs 50ms, not ResolveTimeout and a failed
	// dial. A Resolver must return when its context is done: the phase
	// limits reach it only through the context. (A *net.Resolver with
	// PreferGo finishes a canceled lookup in the background until
	// resolv.conf's timeout; a Dial that closes its conn when its context
	// ends stops it at once.)
	Resolver Resolver
	// ResolveTimeout bounds the lookup. Zero means 5s; negative means no
	// limit of its own (Timeout and the context still apply).
	ResolveTimeout time.Duration
	// ConnectTimeout bounds each TCP connect attempt. Zero means 5s;
	// negative means no limit of its own. Inside an attempt of retry.Do
	// that another attempt may follow, under a context with a deadline, an
	// attempt's connect and TLS handshake each take at most half of what
	// remains of it (as long as that half is at least AttemptDelay): when
	// every attempt of a dial stalls, the dial fails with time left for the
	// retry that wraps it. Without such a retry the limit is the whole.
	ConnectTimeout time.Duration
	// AttemptDelay is the Happy Eyeballs stagger (RFC 8305 §5): the next
	// address is tried when the current attempt has not succeeded after this
	// long, or at once when it fails. Zero means 250ms; negative means the
	// addresses are tried one after another, each to its end.
	AttemptDelay time.Duration
	// TLSConfig is used by DialTLSContext. It is cloned, never modified;
	// nil means an empty config. An empty ServerName becomes the dialled
	// host (never the raced IP), so SNI and certificate verification are
	// those of the name; NextProtos (ALPN) is kept.
	TLSConfig *tls.Config
	// TLSHandshakeTimeout bounds each TLS handshake. Zero means 5s;
	// negative means no limit of its own. Like ConnectTimeout, it takes at
	// most half of what remains of the caller's deadline when a retry may
	// follow the dial.
	TLSHandshakeTimeout time.Duration
	// FirstByteTimeout bounds the wait for the first byte of the reply on a
	// returned conn: a Read that gets no byte FirstByteTimeout after the
	// last Write before it fails with an *Error of PhaseFirstByte, and
	// Health remembers the stall. This is incident 01 itself: a load
	// balancer that accepts (and even completes the handshake) and then
	// never answers. The clock runs from the end of the latest Write of at
	// least one byte, so a request written in pieces, or in one slow Write,
	// gets the whole limit after its last byte (while a Write is in flight
	// the bound does not expire: a stalled Write is UserTimeout's or the
	// write deadline's). A reply that arrived in time is read even when the
	// Read comes after the bound. A Read that comes before any Write (a server-first
	// protocol: SMTP, MySQL, FTP, whose greeting is the reply) is bounded
	// from establishment (see GreetingTimeout). Once a byte has arrived the
	// watch costs one atomic load per call. The caller's own read deadlines
	// keep working (the earlier one applies) and are restored after the
	// first byte. After a first-byte timeout the conn's reads keep failing:
	// close it.
	//
	// Under TLS only application data counts: the records a server sends
	// on its own after the handshake (TLS 1.3 session tickets, which
	// OpenSSL-based servers and load balancers send on every conn,
	// KeyUpdates, empty records, renegotiation) are not a reply, and
	// neither are the records tls.Conn sends on its own (a KeyUpdate's
	// answer, alerts): they neither end the watch nor restart its clock.
	// The watch sits under the *tls.Conn, which DialTLSContext returns bare
	// (net/http's HTTP/2 needs that); it learns each record's type from its
	// header (TLS 1.2) or by opening it with the server's traffic secret,
	// which crypto/tls hands to the config's KeyLogWriter (TLS 1.3; the
	// caller's KeyLogWriter, if any, still gets every line). A record the
	// watch cannot read is not taken for the reply: the bound stays armed.
	// Under a TLS 1.2 CBC suite the content length of a record comes from
	// its last block, decrypted with the server's write key (derived from
	// the keylogged master secret). (Under TLS 1.0 and 1.1 CBC suites, off
	// by default, a reply that fits a record of 64 bytes or less cannot be
	// told from an empty record and does not end the watch.)
	//
	// Zero means 30s; negative means off, and DialContext's conn is then
	// the bare *net.TCPConn (or what DialFunc returned). When on,
	// DialContext's conn is a wrapper that keeps the optional interfaces of
	// the conn under it (SyscallConn, CloseRead, CloseWrite) and whose
	// NetConn method returns it.
	FirstByteTimeout time.Duration
	// GreetingTimeout bounds, when FirstByteTimeout is on, a Read that
	// comes before any Write: the greeting of a server-first protocol, due
	// from establishment (the end of the TLS handshake for DialTLSContext).
	// A Write restarts the clock with FirstByteTimeout, as usual. Zero
	// means FirstByteTimeout; negative means a Read before any Write waits
	// unbounded until a Write: for client-first protocols whose idle conns
	// wait in Read before their first request (net/http's HTTP/1 conns,
	// which the transport package's copy of the Dialer sets so).
	GreetingTimeout time.Duration
	// MaxAttemptsPerAddress caps the establishment attempts raced to one
	// address at once. When every address has an attempt in flight (or
	// has failed) and none has completed after AttemptDelay, the address
	// still pending that comes first in the order gets another attempt,
	// up to this many: a load balancer is one address that hangs some of
	// its connections (incident 01), and a second connection to it is how
	// the hang is overtaken. A failed attempt is never repeated (that is a
	// retry, and retry.Policy owns those). Zero means 2; 1 (or negative)
	// means one attempt per address.
	MaxAttemptsPerAddress int
	// Timeout bounds the whole dial: resolution, every attempt and the
	// handshake. Zero means 15s; negative means no limit of its own.
	Timeout time.Duration
	// KeepAlive configures TCP keep-alive probes on every conn. The zero
	// value means enabled with Idle 15s, Interval 5s and Count 3; with
	// Enable true, zero fields take those defaults and negative fields
	// leave the OS default; a non-zero value with Enable false turns
	// keep-alive off.
	KeepAlive net.KeepAliveConfig
	// UserTimeout is TCP_USER_TIMEOUT on Linux: how long sent data may stay
	// unacknowledged before the kernel drops the connection, so writes to a
	// peer that vanished fail in seconds. Zero means 30s; negative leaves
	// the OS default. Ignored on other systems.
	UserTimeout time.Duration
	// Health remembers how each peer fared and moves peers that recently
	// failed or stalled to the back of the order, for the next dial too;
	// masked failures and MetricLabels name the peers it remembers. Nil
	// means a Health of this Dialer's own (see Scoreboard and HealthFor):
	// made at its first dial and kept as long as the Dialer lives, with the
	// zero Health's bounds, shared with no other Dialer (a copy of a
	// Dialer is another Dialer; a nil *Dialer shares the zero Dialer's).
	// Set it to share one Health among many Dialers, or to bound it
	// differently.
	Health *Health
	// DialFunc is the raw connect seam: one TCP connect to one "ip:port"
	// under a context that carries the attempt's deadline; network is the
	// one passed to the dial. It must return when the context is done: the
	// dial waits for every attempt it started. Closing a returned conn must
	// unblock its reads (as it does for net's conns), which is how a racer
	// that lost during its TLS handshake is stopped. Nil means a net.Dialer.
	// Keep-alive and
	// TCP_USER_TIMEOUT are applied to the conns it returns when they are
	// *net.TCPConn.
	DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)
	// Name tells this Dialer's telemetry apart from other clients' in the
	// same process: every span and metric point its dials make carries it
	// as lifeline.client.name. A Transport or WebSocketDialer with a Name
	// gives it to its copy of a Dialer that has none. Empty means no such
	// attribute.
	Name string
	// TracerProvider makes the dial spans. Nil means the otel global.
	TracerProvider trace.TracerProvider
	// MeterProvider makes the dial metrics. Nil means the otel global.
	MeterProvider metric.MeterProvider
	// Logger, when set, gets a Warn record for each failed dial (not for a
	// caller's cancel or a lost race), rate-limited per kind of failure
	// (phase and cause): the first of a kind, then at most one per 10s
	// carrying "suppressed"=N, the count held back meanwhile (incident 05:
	// logging every failure amplified an outage). A record holds short
	// strings only: the address, the error.type and the error text cut
	// to 256 bytes. Everything that logs through the same Logger shares
	// the limit. Nil means no logging.
	Logger *slog.Logger
}

func (d *Dialer) resolveTimeout() time.Duration {
	return orDefault(d.ResolveTimeout, DefaultResolveTimeout)
}

func (d *Dialer) connectTimeout() time.Duration {
	return orDefault(d.ConnectTimeout, DefaultConnectTimeout)
}

func (d *Dialer) tlsHandshakeTimeout() time.Duration {
	return orDefault(d.TLSHandshakeTimeout, DefaultTLSHandshakeTimeout)
}

func (d *Dialer) timeout() time.Duration { return orDefault(d.Timeout, DefaultTimeout) }

func (d *Dialer) firstByteTimeout() time.Duration {
	return orDefault(d.FirstByteTimeout, DefaultFirstByteTimeout)
}

func (d *Dialer) maxAttemptsPerAddress() int {
	switch {
	case d.MaxAttemptsPerAddress == 0:
		return DefaultMaxAttemptsPerAddress
	case d.MaxAttemptsPerAddress < 0:
		return 1
	}
	return d.MaxAttemptsPerAddress
}

// attemptDelay returns the stagger, or a negative value for serial dialing.
func (d *Dialer) attemptDelay() time.Duration {
	if d.AttemptDelay == 0 {
		return DefaultAttemptDelay
	}
	return d.AttemptDelay
}

func (d *Dialer) resolver() Resolver {
	if d.Resolver != nil {
		return d.Resolver
	}
	return net.DefaultResolver
}

func (d *Dialer) keepAlive() net.KeepAliveConfig {
	ka := d.KeepAlive
	if ka == (net.KeepAliveConfig{}) {
		return net.KeepAliveConfig{Enable: true, Idle: DefaultKeepAliveIdle,
			Interval: DefaultKeepAliveInterval, Count: DefaultKeepAliveCount}
	}
	if !ka.Enable {
		return net.KeepAliveConfig{}
	}
	if ka.Idle == 0 {
		ka.Idle = DefaultKeepAliveIdle
	}
	if ka.Interval == 0 {
		ka.Interval = DefaultKeepAliveInterval
	}
	if ka.Count == 0 {
		ka.Count = DefaultKeepAliveCount
	}
	return ka
}

func (d *Dialer) userTimeout() time.Duration {
	if d.UserTimeout == 0 {
		return DefaultUserTimeout
	}
	return d.UserTimeout
}

func (d *Dialer) sockConfig() sockConfig {
	return sockConfig{ka: d.keepAlive(), userTimeoutMs: userTimeoutMs(d.userTimeout())}
}

// orDefault returns v, def when v is zero, or 0 (no limit) when v is negative.
func orDefault(v, def time.Duration) time.Duration {
	switch {
	case v == 0:
		return def
	case v < 0:
		return 0
	}
	return v
}

// DialContext connects to address ("host:port") on network "tcp", "tcp4" or
// "tcp6". The host is resolved (IP literals are not), the addresses are
// ordered by family (RFC 8305 §4) and by Health, and raced: the first
// attempt to complete the TCP connect wins and the others are closed. The
// race starts as soon as the first family answers (RFC 8305 §3) and
// addresses that arrive later join it; an address whose attempt stalls
// gets a second attempt (MaxAttemptsPerAddress).
//
// The error is always an *Error; see its documentation for what it tells.
// The returned conn watches for the first byte of the reply (see
// FirstByteTimeout; with it off, the conn is the bare *net.TCPConn or what
// DialFunc returned). The caller closes it.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.dial(ctx, network, address, false)
}

// DialTLSContext is DialContext followed by a TLS handshake, raced as one:
// an attempt wins only when its handshake completes, so an address that
// accepts TCP and then stalls the handshake is overtaken after AttemptDelay,
// not after TLSHandshakeTimeout. The returned conn is a bare *tls.Conn
// (net/http uses HTTP/2 only over one) whose ConnectionState reports the
// negotiated protocol (ALPN); the first-byte watch sits under it.
func (d *Dialer) DialTLSContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.dial(ctx, network, address, true)
}

// dialState is what one dial shares among its phases and racers. Racers
// only read it.
type dialState struct {
	d        *Dialer
	ctx      context.Context // the dial's (the caller's, with the dial span): see fail
	tel      telemetry
	health   *Health // d.Scoreboard(): never nil in a dial
	network  string
	addr     string
	host     string
	useTLS   bool
	tlsCfg   *tls.Config
	sock     sockConfig
	deadline time.Time // the whole dial's, from Timeout; zero: none
	// callerDeadline is the deadline of the caller's context when a retry
	// may follow this dial (retryx.MayRetry); zero: none, or no retry.
	callerDeadline time.Time
	delay          time.Duration
	fbt            time.Duration // first-byte limit; 0: off
	greeting       time.Duration // bound of a Read before any Write; 0: none
	maxPer         int           // MaxAttemptsPerAddress, resolved
	family         byte          // 0: any, '4', '6'
	port           uint16
	traced         bool // the dial span records: make phase spans
	// literal is the "ip:port" to connect to when the address was an IP
	// literal, saving its formatting on the hot path; "" otherwise.
	literal string
}

// zeroDialer stands in for a nil *Dialer.
var zeroDialer Dialer

func (d *Dialer) dial(ctx context.Context, network, address string, useTLS bool) (net.Conn, error) {
	if d == nil {
		d = &zeroDialer
	}
	if ctx == nil {
		return nil, &Error{Phase: PhaseDNS, Network: network, Addr: address,
			Err: &inputError{"nil context"}}
	}
	start := time.Now()
	// The dial's state and its race are one allocation.
	dr := &dialRun{s: dialState{d: d, tel: d.telemetry(), health: d.Scoreboard(), network: network, addr: address, useTLS: useTLS}}
	s := &dr.s
	if t := d.timeout(); t > 0 {
		s.deadline = start.Add(t)
	}
	if retryx.MayRetry(ctx) {
		// Only a dial that a retry may follow leaves it time: see
		// establishLimit.
		s.callerDeadline, _ = ctx.Deadline()
	}
	span := noSpan
	if _, isNoop := s.tel.tracer.(tracenoop.Tracer); !isNoop {
		// A noop tracer's span would only cost an allocation.
		ctx, span = s.tel.tracer.Start(ctx, "dial", spanClient...)
		s.traced = span.IsRecording()
	}
	conn, err := dr.run(ctx, span)
	outcome := outcomeOf(err)
	s.tel.recordDuration(ctx, mPhaseTotal, outcome, time.Since(start).Seconds())
	endSpan(span, outcome, err)
	if err != nil {
		if d.Logger != nil && outcome != mCanceled && outcome != mLost {
			logFailure(ctx, d.Logger, network, address, err)
		}
		return nil, err
	}
	return conn, nil
}

// logFailure logs a failed dial through l's rate limiter.
func logFailure(ctx context.Context, l *slog.Logger, network, address string, err error) {
	et := "dial"
	var de *Error
	if errors.As(err, &de) {
		et = de.ErrorType()
	}
	logx.For(l).Failure(ctx, "dial."+et, "lifeline: dial failed", err,
		slog.String("network", network), slog.String("address", address), slog.String("error.type", et))
}

// dialRun is one dial: its state, which the racers read, and its race.
type dialRun struct {
	s dialState
	r racer
}

func (dr *dialRun) run(ctx context.Context, span trace.Span) (net.Conn, error) {
	s := &dr.s
	s.ctx = ctx
	peer, literal, err := s.prepare(ctx, span)
	if err != nil {
		return nil, err
	}
	// One race for every dial: an IP literal is a race whose one address
	// is known up front (it may still race itself: MaxAttemptsPerAddress).
	r := &dr.r
	r.init(s, ctx)
	if literal {
		r.queue = append(r.queue, peer)
	} else {
		r.startLookups()
	}
	return r.run()
}

// prepare parses the network and address, sets up TLS and the socket
// options, and returns the peer when the host is an IP literal (literal
// true); otherwise the host is to be resolved.
func (s *dialState) prepare(ctx context.Context, span trace.Span) (peer netip.AddrPort, literal bool, err error) {
	d := s.d
	host, portStr, err := net.SplitHostPort(s.addr)
	if err != nil {
		return peer, false, s.inputErr("%v", err)
	}
	s.host = host
	switch s.network {
	case "tcp":
	case "tcp4":
		s.family = '4'
	case "tcp6":
		s.family = '6'
	default:
		return peer, false, s.inputErr("network %q not supported (want tcp, tcp4 or tcp6)", s.network)
	}
	if s.port, err = s.lookupPort(ctx, portStr); err != nil {
		return peer, false, err
	}
	if span.IsRecording() {
		span.SetAttributes(otelx.ServerAddress(host), otelx.ServerPort(int(s.port)), otelx.TransportTCP)
	}
	if s.useTLS {
		s.tlsCfg = tlsConfigFor(d.TLSConfig, host)
	}
	s.sock = d.sockConfig()
	s.delay = d.attemptDelay()
	s.fbt = d.firstByteTimeout()
	if s.greeting = d.GreetingTimeout; s.greeting == 0 {
		s.greeting = s.fbt
	}
	s.maxPer = d.maxAttemptsPerAddress()

	ip, err := netip.ParseAddr(host)
	if err != nil && host != "" {
		return peer, false, nil // a name: resolve it
	}
	// IP literals skip DNS; an empty host means this machine, as in net.
	if host == "" {
		ip = netip.IPv4Unspecified()
		if s.family == '6' {
			ip = netip.IPv6Unspecified()
		}
	}
	ip = ip.Unmap()
	if (s.family == '4' && !ip.Is4()) || (s.family == '6' && !ip.Is6()) {
		return peer, false, s.inputErr("address %s is not of network %s", host, s.network)
	}
	peer = netip.AddrPortFrom(ip, s.port)
	// Connect to the caller's own string when it is already the canonical
	// "ip:port" (compared without allocating).
	var buf [64]byte
	if string(peer.AppendTo(buf[:0])) == s.addr {
		s.literal = s.addr
	}
	if span.IsRecording() {
		span.SetAttributes(otelx.KeyAddresses.Int(1))
	}
	return peer, true, nil
}

// tlsConfigFor clones the Dialer's TLS config for one dial to host. An
// empty ServerName becomes the host, not the raced IP: SNI and verification
// must be those of the name the caller asked for.
func tlsConfigFor(base *tls.Config, host string) *tls.Config {
	var cfg *tls.Config
	if base != nil {
		cfg = base.Clone()
	} else {
		cfg = &tls.Config{}
	}
	if cfg.ServerName == "" {
		cfg.ServerName = host
	}
	if cfg.MinVersion == 0 {
		// Go's client default, made explicit: never below TLS 1.2.
		cfg.MinVersion = tls.VersionTLS12
	}
	return cfg
}

func (s *dialState) inputErr(format string, args ...any) *Error {
	return &Error{Phase: PhaseDNS, Network: s.network, Addr: s.addr,
		Err: &inputError{fmt.Sprintf(format, args...)}}
}

// phaseCtx returns a context bounded by the phase limit (now+limit) and the
// whole dial's deadline, whichever is earlier, with the cause that tells
// which expired. When the parent's deadline is already as early, it returns
// the parent itself: a phase limit only ever shortens the caller's context,
// and not creating a context on the hot path saves allocations.
func (s *dialState) phaseCtx(parent context.Context, limit time.Duration, cause error) (context.Context, context.CancelFunc) {
	var dl time.Time
	if limit > 0 {
		dl = time.Now().Add(limit)
	}
	if !s.deadline.IsZero() && (dl.IsZero() || s.deadline.Before(dl)) {
		dl, cause = s.deadline, errDialTimeout
	}
	if dl.IsZero() {
		return parent, noCancel
	}
	if pd, ok := parent.Deadline(); ok && !dl.Before(pd) {
		return parent, noCancel
	}
	return context.WithDeadlineCause(parent, dl, cause)
}

func noCancel() {}

// stoppableCtx is phaseCtx whose cancel always ends the context it
// returns, for what the racer must be able to stop (a lookup, an attempt).
func (s *dialState) stoppableCtx(parent context.Context, limit time.Duration, cause error) (context.Context, context.CancelFunc) {
	ctx, cancel := s.phaseCtx(parent, limit, cause)
	if ctx == parent {
		return context.WithCancel(parent)
	}
	return ctx, cancel
}

// attemptCtx is the context of one attempt, which its cancel ends when the
// race is decided (a lost race: see fail). For DialContext it is the
// connect's own, bounded by ConnectTimeout and the dial's Timeout: one
// context where a race context and a phase context under it took two (and
// five allocations more on every dial). For DialTLSContext the connect and
// the handshake bound contexts of their own under it.
func (s *dialState) attemptCtx(parent context.Context) (context.Context, context.CancelFunc) {
	if s.useTLS {
		return context.WithCancel(parent)
	}
	return s.stoppableCtx(parent, s.establishLimit(s.d.connectTimeout()), errConnectTimeout)
}

// establishLimit is the limit of an establishment phase (connect, TLS
// handshake) of an attempt starting now: the phase's own limit, but, when
// a retry may follow the dial (retryx.MayRetry), never more than half of
// what remains of the caller's deadline. When every
// attempt of a dial stalls (a load balancer that hangs some handshakes:
// with 8% of them hung, both raced attempts hang in 0.6% of dials), the
// dial then fails with half the caller's time left, and the retry that
// wraps it (retry.Policy, the transport's) gets its turn, instead of the
// first dial taking all of it (break 15: a 5s deadline ended 5s into a
// 5s TLSHandshakeTimeout). A dial no retry follows keeps the whole: a
// slow but healthy handshake must not fail at half its caller's time. The share applies only while half the
// remaining time is at least AttemptDelay: below that a retry could not
// race anyway, and the whole remainder is the attempt's.
func (s *dialState) establishLimit(limit time.Duration) time.Duration {
	if s.callerDeadline.IsZero() {
		return limit
	}
	half := time.Until(s.callerDeadline) / 2
	if half < max(s.delay, 0) || (limit > 0 && limit <= half) {
		return limit
	}
	return half
}

// connect makes one TCP connection to peer under ctx.
func (s *dialState) connect(ctx context.Context, peer netip.AddrPort) (net.Conn, error) {
	addr := s.literal
	if addr == "" {
		addr = peer.String()
	}
	if f := s.d.DialFunc; f != nil {
		c, err := f(ctx, s.network, addr)
		if err != nil {
			if c != nil {
				c.Close() // a conn with an error: against the contract, but not leaked
			}
			return nil, err
		}
		if c == nil {
			return nil, errors.New("dial: DialFunc returned a nil conn and no error")
		}
		if err := applySockopts(c, s.sock); err != nil {
			c.Close()
			return nil, err
		}
		return c, nil
	}
	c, err := netDialerFor(s.sock.ka).DialContext(ctx, s.network, addr)
	if err != nil {
		return nil, err
	}
	if err := setUserTimeoutConn(c, s.sock.userTimeoutMs); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}
