package pool

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Config configures a [Pool]. Its zero value, with Dial set, is a safe pool:
// every wait is bounded and every connection is eventually recycled. A zero
// field means the documented default; a negative duration turns that
// mechanism off where that makes sense (and is an error where it does not).
// [New] copies and resolves the Config once: later changes to it have no
// effect, and New never writes defaults back into it.
type Config struct {
	// Dial opens one new connection. Required. It is called from a goroutine
	// owned by the pool, with a context that carries the values (and trace
	// span) of the Acquire that triggered it but not its cancellation: a
	// dial that feeds the pool outlives an impatient caller. The context has
	// its own deadline (DialTimeout) and is canceled by [Pool.Close]; Dial
	// must return when it is done, since Close waits for dials in flight.
	// A dial.Dialer's DialContext bound to a network and address fits here.
	Dial func(ctx context.Context) (net.Conn, error)

	// MaxConns caps the connections open at once, counting those being
	// dialed, idle and in use. 0 means 16. Negative is an error.
	MaxConns int

	// MaxIdleConns caps the idle connections kept for reuse; a connection
	// released while this many are idle is closed. 0 means MaxConns.
	// Negative or more than MaxConns is an error.
	MaxIdleConns int

	// MinIdleConns is the number of idle connections the pool keeps warm in
	// the background, within MaxConns and DialRate. 0 means none. Negative,
	// more than MaxConns or more than MaxIdleConns is an error.
	MinIdleConns int

	// MaxIdleTime closes a connection that has been idle this long. 0 means
	// 30s; negative means never.
	MaxIdleTime time.Duration

	// MaxLifetime closes a connection this long after it was dialed (on
	// release, on acquire and in the background sweep), shifted per
	// connection by a random jitter. 0 means 30m; negative means never.
	MaxLifetime time.Duration

	// MaxLifetimeJitter is the largest shift of a connection's lifetime, in
	// either direction: each connection lives MaxLifetime ± a uniform random
	// jitter fixed when it is dialed, so connections dialed together do not
	// expire together. 0 means MaxLifetime/10; negative means no jitter. It
	// must be less than MaxLifetime.
	MaxLifetimeJitter time.Duration

	// HealthCheckPeriod is the interval of the background sweep that closes
	// idle and expired connections and tops up MinIdleConns. 0 means 15s;
	// negative turns the periodic sweep off (idle and expired connections are
	// then closed only when Acquire meets them).
	HealthCheckPeriod time.Duration

	// CheckAfterIdle is how long a connection may sit idle before Acquire
	// probes it for liveness before handing it out; a dead one is closed and
	// the next is tried. On a request/response protocol an idle conn is
	// alive only when nothing waits to be read on it: end-of-file, a reset
	// or any byte nobody asked for (the server's goodbye, or the reply to a
	// request whose caller gave up) mean dead — handed out, the next holder
	// would read that reply as its own. The probe goes by what the conn is
	// made of, down its chain of NetConn methods: without a *tls.Conn in it,
	// a non-blocking peek at the socket; with one, reads through the
	// *tls.Conn that let TLS tell its own records (session tickets) from
	// data, including data it buffered already (at most ~1ms, once, while
	// TLS's own records wait at the socket). Conns without a file
	// descriptor at the bottom (net.Pipe) are not probed, nor can the probe
	// see into wrappers that buffer reads themselves. 0 means 1s; negative
	// means never probe.
	CheckAfterIdle time.Duration

	// AcquireTimeout bounds Acquire when its context has no deadline.
	// 0 means 30s; negative means the context alone bounds it.
	AcquireTimeout time.Duration

	// DialTimeout bounds each dial the pool starts, counted from when the
	// dial rate lets it start. 0 means 30s. Negative is an error: a dial
	// detached from its caller must end on its own.
	DialTimeout time.Duration

	// DialRate is the most new connections the pool opens per second (a
	// token bucket with a burst of DialRate/10, at least 1 and at most
	// MaxConns), so that a network flap cannot become a connection storm.
	// 0 means 10·MaxConns; negative or +Inf means unlimited; NaN is an error.
	DialRate float64

	// DisableFailFast turns fail fast off: every Acquire that needs a new
	// connection waits for a dial, as before the pool kept its upstream's
	// state. By default (false) the pool keeps one gate for its upstream:
	// after 5 dials in a row fail (or 3 hang far beyond the upstream's usual
	// connect time) the upstream is known down, and an Acquire that would
	// need a new dial fails at once with an [*UnavailableError] instead of
	// waiting DialTimeout, while a probe dial goes at a bounded pace (about
	// one a second, slower after 30s) and the first dial that succeeds
	// re-opens it for everyone. Idle conns that pass the liveness check are
	// served all along; [WaitForReady] makes an Acquire wait instead. See
	// the package documentation, "When the upstream is down".
	DisableFailFast bool

	// Name, when set, is reported as lifeline.pool.name on the pool's
	// metrics and spans, to tell several pools apart. It also names the
	// pool's upstream ("pool" when empty) in an [*UnavailableError] and as
	// the server.address of lifeline.throttled and lifeline.upstream.down:
	// keep it short, bounded and free of secrets (not a DSN).
	Name string

	// TracerProvider makes the pool.acquire spans. nil means the otel global.
	TracerProvider trace.TracerProvider

	// MeterProvider makes the pool's metrics. nil means the otel global.
	MeterProvider metric.MeterProvider

	// Logger, when set, gets a Warn record for each failed dial of the
	// pool, rate-limited per kind of failure: the first of a kind, then at
	// most one per 10s carrying "suppressed"=N, the count held back
	// meanwhile; Close writes the counts still held back (incident 05:
	// logging every failure amplified an outage). A record holds short
	// strings only (the pool's Name, the error.type, the error text cut to
	// 256 bytes). Everything that logs through the same Logger shares the
	// limit; the kinds name the pool, so pools sharing a Logger each get
	// their own first record of a failure and of going down. The handler (its Enabled too) runs on a goroutine of the
	// pool's own, one record at a time in order, never under the pool's
	// lock or inside a metric collection: a slow handler delays only the
	// records (at most 256 wait; beyond, a record counts the ones dropped),
	// and one may call the pool. A dial's record has the values of the
	// context of the Acquire that started the dial, not its end. A panic
	// in the handler is recovered there: that record is lost, and a record
	// "lifeline: log record lost: the Logger's handler panicked" says so.
	// Close waits up to 100ms for the last records. Nil means no logging.
	Logger *slog.Logger
}

// settings is a Config with every default resolved; a Pool keeps its own
// copy. Every duration here reads the same way: > 0 is the limit or
// interval in force, 0 means the mechanism is off (the Config said
// negative). A Config's 0 never arrives here: it became the default.
type settings struct {
	maxConns          int
	maxIdle           int
	minIdle           int
	maxIdleTime       time.Duration
	maxLifetime       time.Duration
	jitter            time.Duration
	healthCheckPeriod time.Duration
	checkAfterIdle    time.Duration
	acquireTimeout    time.Duration
	dialTimeout       time.Duration // never 0: a negative DialTimeout is an error
	dialRate          float64       // +Inf: unlimited
	dialBurst         int
}

const (
	defaultMaxConns          = 16
	defaultMaxIdleTime       = 30 * time.Second
	defaultMaxLifetime       = 30 * time.Minute
	defaultHealthCheckPeriod = 15 * time.Second
	defaultCheckAfterIdle    = time.Second
	defaultAcquireTimeout    = 30 * time.Second
	defaultDialTimeout       = 30 * time.Second
)

// duration resolves a Config duration the way every one of them reads:
// 0 means def, negative means off (0 in settings), positive is itself.
func duration(d, def time.Duration) time.Duration {
	switch {
	case d == 0:
		return def
	case d < 0:
		return 0
	}
	return d
}

// dialRate resolves Config.DialRate: 0 means 10·maxConns, negative (or
// +Inf) means unlimited, returned as +Inf.
func dialRate(r float64, maxConns int) float64 {
	switch {
	case r == 0:
		return 10 * float64(maxConns)
	case r < 0:
		return math.Inf(1)
	}
	return r
}

// dialBurst is the token bucket's depth: 100 ms worth of DialRate, at least
// one dial and never more than the cap (a burst beyond MaxConns could not be
// used at once anyway).
func dialBurst(r float64, maxConns int) int {
	if math.IsInf(r, 1) {
		return maxConns
	}
	b := int(math.Ceil(r / 10))
	return max(1, min(b, maxConns))
}

// resolve validates c and returns its resolved settings.
func (c *Config) resolve() (settings, error) {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf("pool: "+format, args...)) }
	if c.Dial == nil {
		bad("Config.Dial is required")
	}
	if c.MaxConns < 0 {
		bad("Config.MaxConns must not be negative (got %d)", c.MaxConns)
	}
	if c.MaxIdleConns < 0 {
		bad("Config.MaxIdleConns must not be negative (got %d)", c.MaxIdleConns)
	}
	if c.MinIdleConns < 0 {
		bad("Config.MinIdleConns must not be negative (got %d)", c.MinIdleConns)
	}
	if c.DialTimeout < 0 {
		bad("Config.DialTimeout must not be negative (got %v): a dial detached from its caller needs a deadline", c.DialTimeout)
	}
	if math.IsNaN(c.DialRate) {
		bad("Config.DialRate must be a number (got NaN)")
	}
	if len(errs) > 0 {
		return settings{}, errors.Join(errs...)
	}
	s := settings{
		maxConns:          cmp.Or(c.MaxConns, defaultMaxConns),
		minIdle:           c.MinIdleConns,
		maxIdleTime:       duration(c.MaxIdleTime, defaultMaxIdleTime),
		maxLifetime:       duration(c.MaxLifetime, defaultMaxLifetime),
		healthCheckPeriod: duration(c.HealthCheckPeriod, defaultHealthCheckPeriod),
		checkAfterIdle:    duration(c.CheckAfterIdle, defaultCheckAfterIdle),
		acquireTimeout:    duration(c.AcquireTimeout, defaultAcquireTimeout),
		dialTimeout:       duration(c.DialTimeout, defaultDialTimeout),
	}
	s.maxIdle = cmp.Or(c.MaxIdleConns, s.maxConns)
	s.jitter = duration(c.MaxLifetimeJitter, s.maxLifetime/10)
	if s.maxIdle > s.maxConns {
		bad("Config.MaxIdleConns (%d) must not exceed MaxConns (%d)", s.maxIdle, s.maxConns)
	}
	if s.minIdle > s.maxConns {
		bad("Config.MinIdleConns (%d) must not exceed MaxConns (%d)", s.minIdle, s.maxConns)
	} else if s.minIdle > s.maxIdle {
		bad("Config.MinIdleConns (%d) must not exceed MaxIdleConns (%d)", s.minIdle, s.maxIdle)
	}
	if s.maxLifetime > 0 && s.jitter >= s.maxLifetime {
		bad("Config.MaxLifetimeJitter (%v) must be less than MaxLifetime (%v)", s.jitter, s.maxLifetime)
	}
	if len(errs) > 0 {
		return settings{}, errors.Join(errs...)
	}
	if s.maxLifetime == 0 {
		s.jitter = 0 // nothing to shift
	}
	s.dialRate = dialRate(c.DialRate, s.maxConns)
	s.dialBurst = dialBurst(s.dialRate, s.maxConns)
	return s, nil
}
