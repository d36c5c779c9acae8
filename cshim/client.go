package main

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// Causes of an operation's context ending, told apart by classify.
var (
	errCanceledByHost       = errors.New("lifeline: operation cancelled by the host")
	errClientClosed         = errors.New("lifeline: client closed")
	errDeadline       error = deadlineError{}
	errOpFreed              = errors.New("lifeline: operation freed while running")
)

// deadlineError is the cause of an operation's total deadline. Like every
// deadline in lifeline it matches context.DeadlineExceeded and says it is
// a timeout, so a phase it cut (a dial's TLS handshake, say) is still a
// timeout of that phase (dial.Error.Timeout) and classify can name it.
type deadlineError struct{}

func (deadlineError) Error() string        { return "lifeline: operation deadline exceeded" }
func (deadlineError) Is(target error) bool { return target == context.DeadlineExceeded }
func (deadlineError) Timeout() bool        { return true }
func (deadlineError) Temporary() bool      { return true }

// noopTracer: spans cannot cross the C ABI (yet), and the shim must never
// fall back to a tracer provider the host process did not ask for.
var noopTracer trace.TracerProvider = tracenoop.NewTracerProvider()

// client is what a lifeline_client handle names.
//
// Its configuration is mutable until the first operation freezes it
// (build); from then on the built objects are read-only, which is what
// transport.Transport and dial.Dialer require.
type client struct {
	id uint64

	// ctx ends when the client is closed; every operation's context
	// derives from it.
	ctx    context.Context
	cancel context.CancelCauseFunc

	// reader collects the OpenTelemetry metrics of this client's
	// Transport, Dialers and retry policy (lifeline_client_metrics_json).
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider

	stats stats

	// wg counts the goroutines the client owns (operations, TLS relays),
	// so that tests can wait for them.
	wg sync.WaitGroup

	mu     sync.Mutex // guards the fields below
	cfg    config
	built  *built // nil until frozen
	closed bool
	ops    map[*op]struct{}    // running operations
	relays map[*relay]struct{} // running TLS relays
}

// built is a frozen client's machinery.
type built struct {
	tr         *transport.Transport
	health     *dial.Health
	tcpDialer  *dial.Dialer // raw "tcp" dials: no first-byte watch (the fd leaves Go)
	tlsDialer  *dial.Dialer // raw "tls" dials: ALPN from tls.alpn
	reqTimeout time.Duration
	maxBody    int64 // < 0: no cap
	userAgent  string
}

func newClient() *client {
	c := &client{ops: map[*op]struct{}{}, relays: map[*relay]struct{}{}}
	c.ctx, c.cancel = context.WithCancelCause(context.Background())
	c.reader = sdkmetric.NewManualReader()
	c.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(c.reader))
	c.stats.init()
	c.id = handles.add(c)
	return c
}

// configure applies f to the configuration, unless the client is frozen.
func (c *client) configure(f func(cfg *config) *Error) *Error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.closed {
		return &Error{Status: statusClosed, Type: "closed", Msg: "lifeline: client closed"}
	}
	if c.built != nil {
		return &Error{Status: statusState, Phase: "config", Type: "state",
			Msg: "lifeline: client configuration is frozen after its first request or dial; configure a new client"}
	}
	next := c.cfg
	next.hosts = maps(c.cfg.hosts)
	if e := f(&next); e != nil {
		return e
	}
	c.cfg = next
	return nil
}

// configJSON returns every key with its effective value.
func (c *client) configJSON() ([]byte, *Error) {
	c.mu.Lock()
	eff := c.cfg.effective()
	c.mu.Unlock()
	data, err := json.Marshal(eff) // maps marshal with sorted keys
	if err != nil {
		return nil, &Error{Status: statusInternal, Type: "internal", Msg: "lifeline: encoding the configuration: " + err.Error()}
	}
	return data, nil
}

// freeze builds the client's machinery at its first operation. Callers
// hold c.mu. A configuration that fails its whole-config checks leaves the
// client unfrozen, so the host can fix it.
func (c *client) freeze() (*built, *Error) {
	if c.built != nil {
		return c.built, nil
	}
	cfg := &c.cfg
	tlsCfg, e := cfg.tlsConfig()
	if e != nil {
		return nil, e
	}
	policy, e := cfg.retryPolicy()
	if e != nil {
		return nil, e
	}
	// Let retry check the policy itself (it names the field): Do with an
	// operation that succeeds returns only a configuration error.
	check := policy
	check.TracerProvider, check.MeterProvider = noopTracer, noopMeter
	if err := check.Do(context.Background(), func(context.Context) error { return nil }); err != nil {
		return nil, &Error{Status: statusBadValue, Phase: "config", Type: "bad_value",
			Msg: "lifeline: retry configuration: " + err.Error()}
	}
	bp := cfg.budget()
	policy.Budget = retry.NewBudget(bp.ratio, bp.min)
	policy.TracerProvider, policy.MeterProvider = noopTracer, c.mp

	health := &dial.Health{HalfLife: cfg.halfLife, MaxPeers: cfg.maxPeers}
	d := dial.Dialer{
		Name:                  cfg.name,
		ResolveTimeout:        cfg.resolveTO,
		ConnectTimeout:        cfg.connectTO,
		AttemptDelay:          cfg.attemptDelay,
		TLSConfig:             tlsCfg,
		TLSHandshakeTimeout:   cfg.handshakeTO,
		FirstByteTimeout:      cfg.dialFirstByte,
		GreetingTimeout:       cfg.greeting,
		MaxAttemptsPerAddress: cfg.maxPerAddr,
		Timeout:               cfg.dialTO,
		KeepAlive:             cfg.keepAlive.net(),
		UserTimeout:           cfg.userTO,
		Health:                health,
		TracerProvider:        noopTracer,
		MeterProvider:         c.mp,
	}
	if len(cfg.hosts) > 0 {
		d.Resolver = hostsResolver{hosts: maps(cfg.hosts)}
	}
	proxy, e := cfg.proxyFunc()
	if e != nil {
		return nil, e
	}
	tr := &transport.Transport{
		Name:                   cfg.name,
		Dialer:                 &d,
		TLSClientConfig:        tlsCfg.Clone(),
		Retry:                  &policy,
		FirstByteTimeout:       cfg.firstByte,
		StallTimeout:           cfg.stall,
		HedgeDelay:             cfg.hedgeDelay,
		HedgeQuantile:          cfg.hedgeQuantile,
		IdleConnTimeout:        cfg.idle,
		MaxConnLifetime:        cfg.lifetime,
		MaxConnsPerHost:        cfg.maxConns,
		MaxIdleConnsPerHost:    cfg.maxIdle,
		MaxResponseHeaderBytes: int64(cfg.maxHeaderBytes),
		DisableFailFast:        cfg.disableFailFast,
		DisableLoadShedding:    cfg.disableShedding,
		Proxy:                  proxy,
		TracerProvider:         noopTracer,
		MeterProvider:          c.mp,
	}
	tcp := d
	tcp.FirstByteTimeout = -1
	tlsD := d
	tlsD.TLSConfig = tlsCfg.Clone()
	tlsD.TLSConfig.NextProtos = cfg.alpn
	b := &built{tr: tr, health: health, tcpDialer: &tcp, tlsDialer: &tlsD,
		reqTimeout: cfg.requestTimeout, maxBody: cfg.maxResponseBytes, userAgent: cfg.ua()}
	switch {
	case b.reqTimeout == 0:
		b.reqTimeout = defaultRequestTimeout
	case b.reqTimeout < 0:
		b.reqTimeout = 0
	}
	if b.maxBody == 0 {
		b.maxBody = defaultMaxResponseBytes
	}
	c.built = b
	return b, nil
}

func (k keepAliveConfig) net() net.KeepAliveConfig {
	idle, interval, count := k.idle, k.interval, k.count
	if !k.enableSet {
		if idle == 0 && interval == 0 && count == 0 {
			return net.KeepAliveConfig{} // the Dialer's defaults
		}
		return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: interval, Count: count}
	}
	if !k.enable {
		// Enable false with a non-zero field turns keep-alive off.
		return net.KeepAliveConfig{Enable: false, Idle: -1}
	}
	return net.KeepAliveConfig{Enable: true, Idle: idle, Interval: interval, Count: count}
}

func (c *config) proxyFunc() (func(*http.Request) (*url.URL, error), *Error) {
	switch c.proxy {
	case "", "env":
		return http.ProxyFromEnvironment, nil
	case "none":
		return func(*http.Request) (*url.URL, error) { return nil, nil }, nil
	}
	u, err := url.Parse(c.proxy)
	if err != nil {
		return nil, badValue("transport.proxy", err.Error())
	}
	return http.ProxyURL(u), nil
}

// hostsResolver answers the names of dial.hosts and asks the system
// resolver for the others.
type hostsResolver struct{ hosts map[string][]netip.Addr }

func (r hostsResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	addrs, ok := r.hosts[strings.ToLower(strings.TrimSuffix(host, "."))]
	if !ok {
		return net.DefaultResolver.LookupNetIP(ctx, network, host)
	}
	out := make([]netip.Addr, 0, len(addrs))
	for _, a := range addrs {
		switch {
		case network == "ip4" && !a.Is4():
		case network == "ip6" && !a.Is6():
		default:
			out = append(out, a)
		}
	}
	return out, nil
}

// close cancels the client's operations and relays and releases its
// connections. It does not wait for them (it may run inside a callback);
// wait does, for tests.
func (c *client) close() {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return
	}
	c.closed = true
	b := c.built
	relays := make([]*relay, 0, len(c.relays))
	for r := range c.relays {
		relays = append(relays, r)
	}
	c.mu.Unlock()
	c.cancel(errClientClosed)
	for _, r := range relays {
		r.stop()
	}
	if b != nil {
		b.tr.CloseIdleConnections()
	}
	// The meter provider stays readable until the last operation is gone;
	// it owns no goroutine (manual reader), so nothing leaks by keeping it.
	c.wg.Add(1)
	go func() {
		defer c.wg.Done()
		// Conns of requests that were still running return to the pool as
		// they end; close them too.
		c.waitOps(5 * time.Second)
		if b != nil {
			b.tr.CloseIdleConnections()
		}
	}()
}

// waitOps waits until the client has no running operation, at most d.
func (c *client) waitOps(d time.Duration) {
	deadline := time.Now().Add(d)
	t := time.NewTicker(10 * time.Millisecond)
	defer t.Stop()
	for time.Now().Before(deadline) {
		c.mu.Lock()
		n := len(c.ops)
		c.mu.Unlock()
		if n == 0 {
			return
		}
		<-t.C
	}
}

// stats are the shim's own counters of a client.
type stats struct {
	requestsStarted, requestsOK, requestsFailed atomic.Int64
	dialsStarted, dialsOK, dialsFailed          atomic.Int64
	canceled, timeouts, inFlight                atomic.Int64
	responseBytes                               atomic.Int64

	mu      sync.Mutex // guards the maps
	byPhase map[string]int64
	byType  map[string]int64
}

func (s *stats) init() {
	s.byPhase = map[string]int64{}
	s.byType = map[string]int64{}
}

func (s *stats) failed(e *Error) {
	if e.Status == statusCanceled || e.Status == statusClosed {
		s.canceled.Add(1)
	}
	if e.Timeout {
		s.timeouts.Add(1)
	}
	s.mu.Lock()
	if e.Phase != "" {
		s.byPhase[e.Phase]++
	}
	if e.Type != "" {
		s.byType[e.Type]++
	}
	s.mu.Unlock()
}
