package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/failsafe-go/failsafe-go/circuitbreaker"
	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/hashicorp/go-retryablehttp"
	"github.com/sony/gobreaker/v2"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// contender is one client under comparison. build makes a fresh client for
// a scenario's network (env) and returns it with its cleanup.
type contender struct {
	name   string
	config string // how it is set up, for RESULTS.md
	build  func(e *env) (*http.Client, func())
}

// contenders are the clients every scenario runs, in table order. Each is
// set up as its documentation shows; the only changes are the ones every
// contender gets alike (env): the trusted certificate, the name's resolver
// and a connect counter in the net.Dialer's Control hook.
var contenders = []contender{
	{
		name:   "net/http default",
		config: "`&http.Client{}` on `http.DefaultTransport`'s settings (dial 30s, TLS handshake 10s, no overall timeout)",
		build: func(e *env) (*http.Client, func()) {
			t := e.stdTransport()
			return &http.Client{Transport: t}, t.CloseIdleConnections
		},
	},
	{
		name:   "net/http Timeout 5s",
		config: "the same with `Client.Timeout: 5 * time.Second`",
		build: func(e *env) (*http.Client, func()) {
			t := e.stdTransport()
			return &http.Client{Transport: t, Timeout: 5 * time.Second}, t.CloseIdleConnections
		},
	},
	{
		name:   "go-retryablehttp",
		config: "`retryablehttp.NewClient()` v0.7.8 defaults (4 retries, waits 1s doubling up to 30s, every method retried) with `HTTPClient.Timeout: 5s`, used through `StandardClient()`",
		build: func(e *env) (*http.Client, func()) {
			rc := retryablehttp.NewClient()
			rc.Logger = nil
			t := rc.HTTPClient.Transport.(*http.Transport)
			t.DialContext = e.dialFunc(30*time.Second, 30*time.Second)
			if e.tls != nil {
				t.TLSClientConfig = e.tls.Clone()
			}
			rc.HTTPClient.Timeout = 5 * time.Second
			return rc.StandardClient(), t.CloseIdleConnections
		},
	},
	{
		name:   "failsafe-go",
		config: "`failsafehttp.NewRoundTripper` v0.9.8 on `http.DefaultTransport`'s settings with `failsafehttp.NewRetryPolicyBuilder().Build()` (2 retries, no delay) around `timeout.New(1s)` (per attempt)",
		build: func(e *env) (*http.Client, func()) {
			t := e.stdTransport()
			rt := failsafehttp.NewRoundTripper(t,
				failsafehttp.NewRetryPolicyBuilder().Build(),
				timeout.New[*http.Response](time.Second))
			return &http.Client{Transport: rt}, t.CloseIdleConnections
		},
	},
	{
		name:   "lifeline",
		config: "`transport.NewClient(&transport.Transport{})`: zero config (connect 5s per attempt, races after 250ms, TLS 5s, first byte 15s, body stall 30s, 3 attempts within a 10% budget)",
		build: func(e *env) (*http.Client, func()) {
			t := &transport.Transport{Dialer: e.lifelineDialer(), TLSClientConfig: e.tls}
			return transport.NewClient(t), t.CloseIdleConnections
		},
	},
	{
		name:   "lifeline hedge 250ms",
		config: "zero config plus `HedgeDelay: 250 * time.Millisecond` (fixed hedging of idempotent requests)",
		build: func(e *env) (*http.Client, func()) {
			t := &transport.Transport{Dialer: e.lifelineDialer(), TLSClientConfig: e.tls, HedgeDelay: 250 * time.Millisecond}
			return transport.NewClient(t), t.CloseIdleConnections
		},
	},
	{
		name:   "lifeline adaptive",
		config: "zero config plus `HedgeQuantile: 0.95` (hedge after the host's recent 95th percentile, within [10ms, 1s])",
		build: func(e *env) (*http.Client, func()) {
			t := &transport.Transport{Dialer: e.lifelineDialer(), TLSClientConfig: e.tls, HedgeQuantile: 0.95}
			return transport.NewClient(t), t.CloseIdleConnections
		},
	},
}

// outageContenders are the clients of scenarios (h), (i) and (j): every
// contender above, then two circuit breakers around net/http, each set up
// as its documentation shows, and lifeline whose calls opt in to wait for
// a known-down upstream's recovery.
var outageContenders = append(contenders[:len(contenders):len(contenders)],
	contender{
		name:   "failsafe-go breaker",
		config: "`failsafehttp.NewRoundTripper` v0.9.8 on `http.DefaultTransport`'s settings with the circuit breaker of failsafe-go's documentation: `circuitbreaker.NewBuilder[*http.Response]()` `.WithFailureThreshold(5).WithDelay(time.Minute).WithSuccessThreshold(2)`, plus `HandleIf` counting 429 and 5xx answers as failures (errors count by default). (h)–(j) only",
		build: func(e *env) (*http.Client, func()) {
			t := e.stdTransport()
			cb := circuitbreaker.NewBuilder[*http.Response]().
				HandleIf(func(r *http.Response, err error) bool { return err != nil || overloadStatus(r) }).
				WithFailureThreshold(5).
				WithDelay(time.Minute).
				WithSuccessThreshold(2).
				Build()
			return &http.Client{Transport: failsafehttp.NewRoundTripper(t, cb)}, t.CloseIdleConnections
		},
	},
	contender{
		name:   "gobreaker",
		config: "sony/gobreaker v2.4.0 as in its README and `example/http_breaker.go`: `Settings{ReadyToTrip: at least 3 requests and 60% failed}`, defaults otherwise (open for 60s, `MaxRequests` 1 in half-open, counts never cleared while closed), `Execute` around the round trip and the body read; 429 and 5xx answers count as failures. (h)–(j) only",
		build: func(e *env) (*http.Client, func()) {
			t := e.stdTransport()
			var st gobreaker.Settings
			st.Name = "compare"
			st.ReadyToTrip = func(counts gobreaker.Counts) bool {
				failureRatio := float64(counts.TotalFailures) / float64(counts.Requests)
				return counts.Requests >= 3 && failureRatio >= 0.6
			}
			cb := gobreaker.NewCircuitBreaker[*http.Response](st)
			return &http.Client{Transport: &breakerRT{rt: t, cb: cb}}, t.CloseIdleConnections
		},
	},
	contender{
		name:   "lifeline WaitForReady",
		config: "zero config; every call's context goes through `transport.WaitForReady` (wait within the call's deadline for a known-down upstream to recover). (h)–(j) only; " + waitForReadyNote(),
		build: func(e *env) (*http.Client, func()) {
			t := &transport.Transport{Dialer: e.lifelineDialer(), TLSClientConfig: e.tls}
			c := transport.NewClient(t)
			if waitForReady != nil {
				c.Transport = ctxRT{rt: c.Transport, wrap: waitForReady}
			}
			return c, t.CloseIdleConnections
		},
	},
)

func waitForReadyNote() string {
	if waitForReady == nil {
		return "**this build's lifeline has no `WaitForReady` yet, so this row runs as zero config**"
	}
	return "`WaitForReady` present in this build"
}

// overloadStatus reports whether an answer says the server is overloaded
// or failing: 429 or 5xx.
func overloadStatus(r *http.Response) bool {
	return r != nil && (r.StatusCode == http.StatusTooManyRequests || r.StatusCode >= 500)
}

// breakerRT runs each round trip and its body read inside a gobreaker, as
// its README's example wraps http.Get and io.ReadAll.
type breakerRT struct {
	rt http.RoundTripper
	cb *gobreaker.CircuitBreaker[*http.Response]
}

// statusError carries an overload answer out of Execute as a failure.
type statusError struct{ resp *http.Response }

func (e *statusError) Error() string { return e.resp.Status }

func (b *breakerRT) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := b.cb.Execute(func() (*http.Response, error) {
		resp, err := b.rt.RoundTrip(req)
		if err != nil {
			return nil, err
		}
		body, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return nil, err
		}
		resp.Body = io.NopCloser(bytes.NewReader(body))
		if overloadStatus(resp) {
			return nil, &statusError{resp}
		}
		return resp, nil
	})
	var se *statusError
	if errors.As(err, &se) {
		return se.resp, nil
	}
	return resp, err
}

// ctxRT passes every request on with its context wrapped.
type ctxRT struct {
	rt   http.RoundTripper
	wrap func(context.Context) context.Context
}

func (t ctxRT) RoundTrip(req *http.Request) (*http.Response, error) {
	return t.rt.RoundTrip(req.WithContext(t.wrap(req.Context())))
}

// env is the network a scenario gives every contender alike.
type env struct {
	tls      *tls.Config     // trusts the scenario's certificate; nil for plain HTTP
	resolver *net.Resolver   // resolves the scenario's name; nil: the system's
	ns       *faultnet.Netns // sockets are made in this namespace; nil: the host
	// badAddr, when set, is the IP whose connects are counted in badHits.
	badAddr string
	badHits atomic.Int64
	mu      sync.Mutex
	badAt   []time.Time  // when each of badHits started
	conns   atomic.Int64 // every connect the contender started
}

// attemptsKey carries a call's connect counter in its context: net/http
// keeps the request's values in the dial context (it only drops the
// cancellation), and so do the peers and lifeline, so every connect made
// for a call is counted on that call.
type attemptsKey struct{}

func withAttempts(ctx context.Context, n *atomic.Int64) context.Context {
	return context.WithValue(ctx, attemptsKey{}, n)
}

// control is the net.Dialer Control hook of every contender: it runs once
// per socket, before connect, so it counts connect attempts (a dial that
// tries two addresses counts two).
func (e *env) control(ctx context.Context, _, address string, _ syscall.RawConn) error {
	e.conns.Add(1)
	if n, ok := ctx.Value(attemptsKey{}).(*atomic.Int64); ok {
		n.Add(1)
	}
	if e.badAddr != "" {
		if host, _, err := net.SplitHostPort(address); err == nil && host == e.badAddr {
			e.badHits.Add(1)
			e.mu.Lock()
			e.badAt = append(e.badAt, time.Now())
			e.mu.Unlock()
		}
	}
	return nil
}

// dialFunc is a net.Dialer with the given settings, the scenario's resolver
// and the counting hook, made inside the namespace when there is one (one
// address family: net.Dialer then tries the addresses one after another
// on the calling thread, which Netns.Run has switched into it).
func (e *env) dialFunc(timeout, keepAlive time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: timeout, KeepAlive: keepAlive, Resolver: e.resolver, ControlContext: e.control}
	if e.ns == nil {
		return d.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var c net.Conn
		err := e.ns.Run(func() error {
			var err error
			c, err = d.DialContext(ctx, network, addr)
			return err
		})
		return c, err
	}
}

// stdTransport is a clone of http.DefaultTransport (what http.Client{}
// uses) with the scenario's dialer and certificate.
func (e *env) stdTransport() *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.DialContext = e.dialFunc(30*time.Second, 30*time.Second)
	if e.tls != nil {
		t.TLSClientConfig = e.tls.Clone()
	}
	return t
}

// lifelineDialer is the zero dial.Dialer with the scenario's resolver and
// the counting connect under DialFunc (its raw connect seam: one TCP
// connect to one IP; lifeline's own deadlines ride on the context and it
// sets keep-alive itself).
func (e *env) lifelineDialer() *dial.Dialer {
	d := &dial.Dialer{DialFunc: e.dialFunc(0, -1)}
	if e.resolver != nil {
		d.Resolver = e.resolver
	}
	return d
}

// badBetween is the number of connects to badAddr started in [from, to).
func (e *env) badBetween(from, to time.Time) int {
	e.mu.Lock()
	defer e.mu.Unlock()
	n := 0
	for _, t := range e.badAt {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}
