package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// Resolver looks up the IP addresses of a host. network is "ip", "ip4" or
// "ip6". *net.Resolver satisfies it; tests and service discovery plug in
// their own.
type Resolver interface {
	LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error)
}

// Defaults of the zero Dialer.
const (
	DefaultResolveTimeout      = 5 * time.Second
	DefaultConnectTimeout      = 5 * time.Second
	DefaultAttemptDelay        = 250 * time.Millisecond
	DefaultTLSHandshakeTimeout = 5 * time.Second
	DefaultTimeout             = 15 * time.Second
	DefaultKeepAliveIdle       = 15 * time.Second
	DefaultKeepAliveInterval   = 5 * time.Second
	DefaultKeepAliveCount      = 3
	DefaultUserTimeout         = 30 * time.Second
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
// Defaults are resolved at each dial and never written back.
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
	// negative means no limit of its own.
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
	// negative means no limit of its own.
	TLSHandshakeTimeout time.Duration
	// FirstByteTimeout bounds the wait for the first byte of the reply: the
	// first Read after the first Write on a returned conn fails with an
	// *Error of PhaseFirstByte when no byte arrived this long after the
	// Write. Once a byte has arrived it costs nothing. The caller's own
	// read deadlines keep working (the earlier one applies) and are
	// restored after the first byte. After a first-byte timeout the conn's
	// reads keep failing: close it. Zero or negative means off, and the
	// conn is returned unwrapped; when on, DialContext's conn is a wrapper
	// whose NetConn method returns the *net.TCPConn.
	FirstByteTimeout time.Duration
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
	// Health, when set, remembers how each peer fared and moves peers that
	// recently failed or stalled to the back of the order. Nil means no
	// memory. One Health may be shared by many Dialers.
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
	// TracerProvider makes the dial spans. Nil means the otel global.
	TracerProvider trace.TracerProvider
	// MeterProvider makes the dial metrics. Nil means the otel global.
	MeterProvider metric.MeterProvider
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
// address to complete the TCP connect wins and the others are closed.
//
// The error is always an *Error; see its documentation for what it tells.
// The returned conn is a *net.TCPConn (or what DialFunc returned) unless
// FirstByteTimeout is set, in which case it is a wrapper that watches for
// the first byte. The caller closes it.
func (d *Dialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.dial(ctx, network, address, false)
}

// DialTLSContext is DialContext followed by a TLS handshake, raced as one:
// an attempt wins only when its handshake completes, so an address that
// accepts TCP and then stalls the handshake is overtaken after AttemptDelay,
// not after TLSHandshakeTimeout. The returned conn is a *tls.Conn whose
// ConnectionState reports the negotiated protocol (ALPN).
func (d *Dialer) DialTLSContext(ctx context.Context, network, address string) (net.Conn, error) {
	return d.dial(ctx, network, address, true)
}

// dialState is what one dial shares among its phases and racers. Racers
// only read it.
type dialState struct {
	d        *Dialer
	tel      telemetry
	network  string
	addr     string
	host     string
	useTLS   bool
	tlsCfg   *tls.Config
	sock     sockConfig
	deadline time.Time // the whole dial's, from Timeout; zero: none
	delay    time.Duration
	traced   bool // the dial span records: make phase spans
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
	// s stays on the stack: only the multi-address race copies it to the
	// heap for its goroutines.
	s := dialState{d: d, tel: d.telemetry(), network: network, addr: address, useTLS: useTLS}
	if t := d.timeout(); t > 0 {
		s.deadline = start.Add(t)
	}
	span := noSpan
	if _, isNoop := s.tel.tracer.(tracenoop.Tracer); !isNoop {
		// A noop tracer's span would only cost an allocation.
		ctx, span = s.tel.tracer.Start(ctx, "dial", spanClient...)
		s.traced = span.IsRecording()
	}
	conn, err := s.run(ctx, span, start)
	outcome := outcomeOf(err)
	s.tel.recordDuration(ctx, mPhaseTotal, outcome, time.Since(start).Seconds())
	endSpan(span, outcome, err)
	if err != nil {
		return nil, err
	}
	return conn, nil
}

func (s *dialState) run(ctx context.Context, span trace.Span, start time.Time) (net.Conn, error) {
	peers, err := s.prepare(ctx, span, start)
	if err != nil {
		return nil, err
	}
	return s.race(ctx, peers)
}

// prepare parses the address, sets up TLS and the socket options, and
// returns the peers to dial, resolved and ordered.
func (s *dialState) prepare(ctx context.Context, span trace.Span, start time.Time) ([]netip.AddrPort, error) {
	d := s.d
	host, portStr, err := net.SplitHostPort(s.addr)
	if err != nil {
		return nil, s.inputErr("%v", err)
	}
	s.host = host
	var family byte // 0: any, '4', '6'
	switch s.network {
	case "tcp":
	case "tcp4":
		family = '4'
	case "tcp6":
		family = '6'
	default:
		return nil, s.inputErr("network %q not supported (want tcp, tcp4 or tcp6)", s.network)
	}
	port, err := s.port(ctx, portStr)
	if err != nil {
		return nil, err
	}
	if span.IsRecording() {
		span.SetAttributes(otelx.ServerAddress(host), otelx.ServerPort(int(port)), otelx.TransportTCP)
	}
	if s.useTLS {
		if d.TLSConfig != nil {
			s.tlsCfg = d.TLSConfig.Clone()
		} else {
			s.tlsCfg = &tls.Config{}
		}
		if s.tlsCfg.ServerName == "" {
			// The name, not the raced IP: SNI and verification must be
			// those of the host the caller asked for.
			s.tlsCfg.ServerName = host
		}
	}
	s.sock = d.sockConfig()
	s.delay = d.attemptDelay()

	var peers []netip.AddrPort
	var one [1]netip.AddrPort
	if ip, err := netip.ParseAddr(host); err == nil || host == "" {
		// IP literals skip DNS; an empty host means this machine, as in net.
		if host == "" {
			ip = netip.IPv4Unspecified()
			if family == '6' {
				ip = netip.IPv6Unspecified()
			}
		}
		ip = ip.Unmap()
		if (family == '4' && !ip.Is4()) || (family == '6' && !ip.Is6()) {
			return nil, s.inputErr("address %s is not of network %s", host, s.network)
		}
		one[0] = netip.AddrPortFrom(ip, port)
		peers = one[:]
		// Connect to the caller's own string when it is already the
		// canonical "ip:port" (compared without allocating).
		var buf [64]byte
		if string(one[0].AppendTo(buf[:0])) == s.addr {
			s.literal = s.addr
		}
	} else {
		peers, err = s.resolve(ctx, family, port)
		if err != nil {
			return nil, err
		}
		peers = s.order(peers, start)
	}
	if span.IsRecording() {
		span.SetAttributes(otelx.KeyAddresses.Int(len(peers)))
	}
	return peers, nil
}

func (s *dialState) inputErr(format string, args ...any) *Error {
	return &Error{Phase: PhaseDNS, Network: s.network, Addr: s.addr,
		Err: &inputError{fmt.Sprintf(format, args...)}}
}

// port parses a numeric port or looks up a service name.
func (s *dialState) port(ctx context.Context, p string) (uint16, error) {
	n, err := strconv.ParseUint(p, 10, 16)
	switch {
	case err == nil:
		return uint16(n), nil
	case p == "":
		return 0, s.inputErr("missing port")
	case errors.Is(err, strconv.ErrRange):
		return 0, s.inputErr("invalid port %s", p)
	}
	port, err := net.DefaultResolver.LookupPort(ctx, s.network, p)
	if err != nil {
		return 0, s.inputErr("unknown port %s: %v", p, err)
	}
	n = uint64(port)
	return uint16(n), nil
}

// resolve looks the host up under ResolveTimeout and returns its addresses
// of the dial's family with port, duplicates removed, in resolver order.
func (s *dialState) resolve(ctx context.Context, family byte, port uint16) ([]netip.AddrPort, error) {
	start := time.Now()
	ctx, span := s.startChild(ctx, "dial.dns")
	if span.IsRecording() {
		span.SetAttributes(otelx.ServerAddress(s.host))
	}
	rctx, cancel := s.phaseCtx(ctx, s.d.resolveTimeout(), errResolveTimeout)
	ips, err := s.lookup(rctx, family)
	var peers []netip.AddrPort
	if err == nil {
		peers = make([]netip.AddrPort, 0, len(ips))
	next:
		for _, ip := range ips {
			ip = ip.Unmap()
			if !ip.IsValid() || (family == '4' && !ip.Is4()) || (family == '6' && !ip.Is6()) {
				continue
			}
			ap := netip.AddrPortFrom(ip, port)
			for _, p := range peers {
				if p == ap {
					continue next
				}
			}
			peers = append(peers, ap)
		}
		if len(peers) == 0 {
			err = ErrNoAddresses
		}
	}
	var derr *Error
	if err != nil {
		derr = s.fail(rctx, PhaseDNS, netip.AddrPort{}, err)
	}
	cancel()
	outcome := mOK
	if derr != nil {
		outcome = outcomeOf(derr)
	}
	s.tel.recordDuration(ctx, mPhaseDNS, outcome, time.Since(start).Seconds())
	if span.IsRecording() {
		span.SetAttributes(otelx.KeyAddresses.Int(len(peers)))
	}
	if derr != nil {
		endSpan(span, outcome, derr)
		return nil, derr
	}
	endSpan(span, outcome, nil)
	return peers, nil
}

// resolutionDelay is how long a dial waits for the other family's answer
// once one family answered with addresses (RFC 8305 §3 recommends 50ms).
const resolutionDelay = 50 * time.Millisecond

// lookup resolves the host for the dial's family. For "tcp" (either family)
// the AAAA and A lookups run apart, as RFC 8305 §3 asks: once one of them
// answers with addresses, the other gets resolutionDelay more, and the dial
// goes on with what it has. So a resolver whose AAAA (or A) query hangs —
// a classic broken middlebox — costs 50ms instead of the whole
// ResolveTimeout and a failed dial. The late lookup is canceled and waited
// for before lookup returns. When neither family has addresses, the error
// is the more telling one: a failure other than "not found" wins.
func (s *dialState) lookup(ctx context.Context, family byte) ([]netip.Addr, error) {
	res := s.d.resolver()
	switch family {
	case '4':
		return res.LookupNetIP(ctx, "ip4", s.host)
	case '6':
		return res.LookupNetIP(ctx, "ip6", s.host)
	}
	type answer struct {
		v6  bool
		ips []netip.Addr
		err error
	}
	lctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// One goroutine per family; ch has room for both answers, so neither
	// ever blocks on sending, and both end once lctx is canceled (the
	// Resolver contract), which the loops below wait for.
	ch := make(chan answer, 2)
	for _, v6 := range [2]bool{true, false} {
		go func() {
			network := "ip4"
			if v6 {
				network = "ip6"
			}
			ips, err := res.LookupNetIP(lctx, network, s.host)
			ch <- answer{v6, ips, err}
		}()
	}
	var (
		byFamily [2][]netip.Addr // [0] IPv6, [1] IPv4
		errs     []error
		received int
		timer    *time.Timer
		delay    <-chan time.Time
	)
collect:
	for received < 2 {
		select {
		case a := <-ch:
			received++
			if a.err != nil || len(a.ips) == 0 {
				errs = append(errs, a.err)
				continue
			}
			if a.v6 {
				byFamily[0] = a.ips
			} else {
				byFamily[1] = a.ips
			}
			if timer == nil && received < 2 {
				timer = time.NewTimer(resolutionDelay)
				delay = timer.C
			}
		case <-delay:
			break collect
		}
	}
	if timer != nil {
		timer.Stop()
	}
	cancel()
	for ; received < 2; received++ {
		<-ch // the late lookup, ended by cancel
	}
	if len(byFamily[0])+len(byFamily[1]) > 0 {
		// IPv6 first whatever answered first, as RFC 6724 prefers it; the
		// families are interleaved later (RFC 8305 §4).
		return append(byFamily[0], byFamily[1]...), nil
	}
	var first error
	for _, err := range errs {
		var de *net.DNSError
		if err != nil && !(errors.As(err, &de) && de.IsNotFound) {
			return nil, err
		}
		if first == nil {
			first = err
		}
	}
	return nil, first // nil when both answered with no addresses: ErrNoAddresses follows
}

// order applies Health (demoted peers to the back) and then interleaves the
// families of each group (RFC 8305 §4), so that Health breaks the family
// alternation only at the boundary between healthy and demoted peers.
func (s *dialState) order(peers []netip.AddrPort, now time.Time) []netip.AddrPort {
	if len(peers) < 2 {
		return peers
	}
	peers, healthy := s.d.Health.order(peers, now)
	if healthy == len(peers) || healthy == 0 {
		return interleave(peers)
	}
	out := make([]netip.AddrPort, 0, len(peers))
	out = append(out, interleave(peers[:healthy])...)
	return append(out, interleave(peers[healthy:])...)
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

// fail builds the *Error of a phase that failed with err under ctx: when
// ctx is done, the cause of ctx decides (a limit of ours, the caller's
// cancel or deadline, or a lost race); otherwise err itself, stripped of
// net's wrapping.
func (s *dialState) fail(ctx context.Context, phase Phase, peer netip.AddrPort, err error) *Error {
	e := &Error{Phase: phase, Network: s.network, Addr: s.addr, Peer: peer}
	if ctx.Err() == nil && isTimeout(err) {
		if dl, ok := ctx.Deadline(); ok && !time.Now().Before(dl) {
			// net puts the context's deadline on the socket too, so its
			// i/o timeout can beat the context's own timer by a hair.
			// The deadline has passed: Done is about to close; wait for
			// it so that the cause decides, not the order of two timers.
			<-ctx.Done()
		}
	}
	if ctxErr := ctx.Err(); ctxErr != nil {
		switch cause := context.Cause(ctx); cause {
		case errResolveTimeout, errConnectTimeout, errTLSTimeout, errDialTimeout:
			e.Err = &timeoutError{cause: cause}
		case errLostRace:
			e.Err = errLostRace
		case ctxErr, nil:
			e.Err = ctxErr
		default:
			// The caller's own cause (WithCancelCause, WithTimeoutCause):
			// keep both, so errors.Is matches the context error and the
			// cause.
			e.Err = &causeError{ctxErr: ctxErr, cause: cause}
		}
		return e
	}
	e.Err = innerError(err)
	return e
}

// causeError is the caller's context error with the cause they gave it.
type causeError struct{ ctxErr, cause error }

func (e *causeError) Error() string   { return e.ctxErr.Error() + ": " + e.cause.Error() }
func (e *causeError) Unwrap() []error { return []error{e.ctxErr, e.cause} }

// connect makes one TCP connection to peer under ctx.
func (s *dialState) connect(ctx context.Context, peer netip.AddrPort) (net.Conn, error) {
	addr := s.literal
	if addr == "" {
		addr = peer.String()
	}
	if f := s.d.DialFunc; f != nil {
		c, err := f(ctx, s.network, addr)
		if err != nil {
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
