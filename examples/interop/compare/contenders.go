package main

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/hashicorp/go-retryablehttp"

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

// env is the network a scenario gives every contender alike.
type env struct {
	tls      *tls.Config     // trusts the scenario's certificate; nil for plain HTTP
	resolver *net.Resolver   // resolves the scenario's name; nil: the system's
	ns       *faultnet.Netns // sockets are made in this namespace; nil: the host
	// badAddr, when set, is the IP whose connects are counted in badHits.
	badAddr string
	badHits atomic.Int64
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
