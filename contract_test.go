package lifeline_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// The contract of DESIGN.md, checked by the compiler: every exported name
// it lists, with the signature it gives. Renaming or retyping one of them
// breaks this file's build, and with it `make test`.
var (
	_ dial.Resolver = (*net.Resolver)(nil)

	_ func(*dial.Dialer, context.Context, string, string) (net.Conn, error) = (*dial.Dialer).DialContext
	_ func(*dial.Dialer, context.Context, string, string) (net.Conn, error) = (*dial.Dialer).DialTLSContext

	_ = [...]dial.Phase{dial.PhaseDNS, dial.PhaseConnect, dial.PhaseTLS, dial.PhaseFirstByte}
	_ interface {
		error
		Unwrap() error
		Timeout() bool
		Temporary() bool
		Is(error) bool
		ErrorType() string
		Retryable() bool
	} = (*dial.Error)(nil)
	_ error = dial.ErrNoAddresses
	_       = new(dial.Health)

	_ func(*retry.Policy, context.Context, func(context.Context) error) error               = (*retry.Policy).Do
	_ func(context.Context, *retry.Policy, func(context.Context) (int, error)) (int, error) = retry.Do[int]
	_ func(context.Context) int                                                             = retry.Attempt
	_ func(error) error                                                                     = retry.Permanent
	_ func(time.Duration, error) error                                                      = retry.After
	_ func(float64, float64) *retry.Budget                                                  = retry.NewBudget
	_ error                                                                                 = retry.ErrExhausted
	_ error                                                                                 = retry.ErrBudgetExhausted
	_ error                                                                                 = &retry.ExhaustedError{Attempts: 1, Last: errTest, Cause: errTest}

	_ func(pool.Config) (*pool.Pool, error)                                                                           = pool.New
	_ func(*pool.Pool, context.Context) (*pool.Conn, error)                                                           = (*pool.Pool).Acquire
	_ func(*pool.Pool) pool.Stats                                                                                     = (*pool.Pool).Stats
	_ func(*pool.Pool)                                                                                                = (*pool.Pool).Reset
	_ func(*pool.Pool) error                                                                                          = (*pool.Pool).Close
	_ func(*pool.Conn)                                                                                                = (*pool.Conn).Release
	_ func(*pool.Conn) error                                                                                          = (*pool.Conn).Close
	_ net.Conn                                                                                                        = pool.Conn{}.Conn // embeds net.Conn
	_ error                                                                                                           = pool.ErrClosed
	_ http.RoundTripper                                                                                               = (*transport.Transport)(nil)
	_ func(*transport.Transport)                                                                                      = (*transport.Transport).CloseIdleConnections
	_ func(*transport.Transport) *http.Client                                                                         = transport.NewClient
	_ func(*transport.WebSocketDialer, context.Context, string, http.Header) (*websocket.Conn, *http.Response, error) = (*transport.WebSocketDialer).Dial

	// Added with issue 20 (not yet in DESIGN.md): the answer a Transport
	// already retried, and the bound on a Read before any Write.
	_ func(*http.Response) error = transport.Exhausted
	_                            = dial.Dialer{GreetingTimeout: dur}

	// Added with issue 21 (not yet in DESIGN.md): what an SDK author
	// needs — credentials that refresh, per-call options, sessions an SDK
	// can drive, names.
	_ transport.Credentials                                                               = (*transport.BearerCredentials)(nil)
	_ func(func(context.Context) (string, time.Time, error)) *transport.BearerCredentials = transport.NewBearerCredentials
	_ time.Duration                                                                       = transport.DefaultExpiryMargin
	_ func(context.Context, transport.CallOptions) context.Context                        = transport.WithCallOptions
	_ func(context.Context) transport.CallOptions                                         = transport.CallOptionsFrom
	_ func(*http.Response) (time.Duration, bool)                                          = transport.RetryAfter
	_ func(*transport.WebSocketSession, context.Context) error                            = (*transport.WebSocketSession).WaitConnected
	_ func(*transport.WebSocketSession, context.Context, int, []byte) error               = (*transport.WebSocketSession).WriteMessageWhenConnected
	_                                                                                     = transport.CallOptions{Retry: (*retry.Policy)(nil), FirstByteTimeout: dur, StallTimeout: dur, HedgeDelay: dur, NoCredentials: true}
	_                                                                                     = transport.Transport{Name: "", Credentials: transport.Credentials(nil)}
	_                                                                                     = transport.WebSocketDialer{Name: "", Credentials: transport.Credentials(nil)}
	_                                                                                     = transport.WebSocketSessionConfig{HeaderFunc: func(context.Context) (http.Header, error) { return nil, nil }}
	_                                                                                     = dial.Dialer{Name: ""}
	_                                                                                     = transport.BearerCredentials{ExpiryMargin: dur}

	// Added with issue 24 (not yet in DESIGN.md): the fault kit, public —
	// servers, proxies and the five incidents as presets.
	_ func(testing.TB, faultnet.Config) *faultnet.Server                  = faultnet.Start
	_ func(faultnet.Config) (*faultnet.Server, error)                     = faultnet.Listen
	_ func(faultnet.ProxyConfig) (*faultnet.Proxy, error)                 = faultnet.NewProxy
	_ func(testing.TB, faultnet.ProxyConfig) *faultnet.Proxy              = faultnet.StartProxy
	_ func(string) (faultnet.Preset, bool)                                = faultnet.LookupPreset
	_ func() []faultnet.Preset                                            = faultnet.Presets
	_ func(faultnet.Preset, testing.TB, string) *faultnet.Proxy           = faultnet.Preset.Start
	_ func(*faultnet.Proxy, faultnet.ProxyFault, faultnet.Selector) error = (*faultnet.Proxy).SetFault
	_                                                                     = []faultnet.Preset{faultnet.Incident01, faultnet.Incident02, faultnet.Incident03, faultnet.Incident04, faultnet.Incident05}
	// Added with issue 23 (not yet in DESIGN.md): an upstream known down
	// fails calls fast, a drowning one is shed, a server's pause paces
	// new calls; and every Dialer learns.
	_                                       = transport.Transport{DisableFailFast: true, DisableLoadShedding: true}
	_                                       = transport.CallOptions{WaitForReady: true}
	_ func(context.Context) context.Context = transport.WaitForReady
	_ error                                 = transport.ErrUnavailable
	_ error                                 = transport.ErrThrottled
	_ error                                 = (*transport.UnavailableError)(nil)
	_                                       = pool.Config{DisableFailFast: true}
	_ func(context.Context) context.Context = pool.WaitForReady
	_ error                                 = pool.ErrUnavailable
	_ error                                 = (*pool.UnavailableError)(nil)
	_                                       = pool.Stats{}.Unavailable
	_ func(*dial.Dialer) *dial.Health       = (*dial.Dialer).Scoreboard
	_ func(*dial.Dialer) *dial.Health       = dial.HealthFor[dial.Dialer]

	// Added with issue 22 (not yet in DESIGN.md): a session's failed dials, for hosts.
	_ = transport.WebSocketSessionConfig{OnDialFailed: nil}
)

var errTest = errors.New("test")

// Every field DESIGN.md lists, with its type.
var (
	dur  time.Duration
	tp   trace.TracerProvider
	mp   metric.MeterProvider
	tcfg *tls.Config

	_ = dial.Dialer{
		Resolver: dial.Resolver(nil), ResolveTimeout: dur, ConnectTimeout: dur, AttemptDelay: dur,
		TLSConfig: tcfg, TLSHandshakeTimeout: dur, FirstByteTimeout: dur, MaxAttemptsPerAddress: int(0),
		Timeout: dur, KeepAlive: net.KeepAliveConfig{}, UserTimeout: dur, Health: (*dial.Health)(nil),
		DialFunc:       func(context.Context, string, string) (net.Conn, error) { return nil, nil },
		TracerProvider: tp, MeterProvider: mp,
	}
	_ = dial.Error{Phase: dial.Phase(0), Network: "", Addr: "", Peer: netip.AddrPort{}, Err: error(nil)}
	_ = retry.Policy{
		MaxAttempts: int(0), InitialInterval: dur, MaxInterval: dur, Multiplier: float64(0),
		Jitter: float64(0), AttemptTimeout: dur, MaxRetryAfter: dur, Budget: (*retry.Budget)(nil),
		Retryable: func(error) bool { return false }, TracerProvider: tp, MeterProvider: mp,
	}
	_ = pool.Config{
		Dial:     func(context.Context) (net.Conn, error) { return nil, nil },
		MaxConns: int(0), MaxIdleConns: int(0), MaxIdleTime: dur, MaxLifetime: dur, MaxLifetimeJitter: dur,
		HealthCheckPeriod: dur, CheckAfterIdle: dur, AcquireTimeout: dur, DialRate: float64(0),
		TracerProvider: tp, MeterProvider: mp,
	}
	_ = transport.Transport{
		Dialer: (*dial.Dialer)(nil), TLSClientConfig: tcfg, Retry: (*retry.Policy)(nil),
		FirstByteTimeout: dur, StallTimeout: dur, HedgeDelay: dur, HedgeQuantile: float64(0),
		IdleConnTimeout: dur, MaxConnLifetime: dur, MaxConnsPerHost: int(0), MaxIdleConnsPerHost: int(0),
		Proxy:          func(*http.Request) (*url.URL, error) { return nil, nil },
		TracerProvider: tp, MeterProvider: mp,
	}
	_ = transport.WebSocketDialer{
		Dialer: (*dial.Dialer)(nil), TLSClientConfig: tcfg, HandshakeTimeout: dur, PingInterval: dur,
		PongTimeout: dur, Retry: (*retry.Policy)(nil), TracerProvider: tp,
	}
)

// TestContractDefaults: the zero-value defaults DESIGN.md promises are the
// ones the packages export and use (each package's own tests show the
// zero value behaving by them).
func TestContractDefaults(t *testing.T) {
	for _, c := range []struct {
		name      string
		got, want any
	}{
		{"dial ResolveTimeout", dial.DefaultResolveTimeout, 5 * time.Second},
		{"dial ConnectTimeout", dial.DefaultConnectTimeout, 5 * time.Second},
		{"dial AttemptDelay", dial.DefaultAttemptDelay, 250 * time.Millisecond},
		{"dial TLSHandshakeTimeout", dial.DefaultTLSHandshakeTimeout, 5 * time.Second},
		{"dial FirstByteTimeout", dial.DefaultFirstByteTimeout, 30 * time.Second},
		{"dial MaxAttemptsPerAddress", dial.DefaultMaxAttemptsPerAddress, 2},
		{"dial Timeout", dial.DefaultTimeout, 15 * time.Second},
		{"dial KeepAlive.Idle", dial.DefaultKeepAliveIdle, 15 * time.Second},
		{"dial KeepAlive.Interval", dial.DefaultKeepAliveInterval, 5 * time.Second},
		{"dial KeepAlive.Count", dial.DefaultKeepAliveCount, 3},
		{"dial UserTimeout", dial.DefaultUserTimeout, 30 * time.Second},
		{"retry MaxAttempts", retry.DefaultMaxAttempts, 3},
		{"retry InitialInterval", retry.DefaultInitialInterval, 100 * time.Millisecond},
		{"retry MaxInterval", retry.DefaultMaxInterval, 5 * time.Second},
		{"retry Multiplier", retry.DefaultMultiplier, 2.0},
		{"retry Jitter", retry.DefaultJitter, 0.5},
		{"retry MaxRetryAfter", retry.DefaultMaxRetryAfter, 30 * time.Second},
		{"transport FirstByteTimeout", transport.DefaultFirstByteTimeout, 15 * time.Second},
		{"transport StallTimeout", transport.DefaultStallTimeout, 30 * time.Second},
		{"transport IdleConnTimeout", transport.DefaultIdleConnTimeout, 30 * time.Second},
		{"transport MaxConnLifetime", transport.DefaultMaxConnLifetime, 10 * time.Minute},
		{"transport MaxConnsPerHost", transport.DefaultMaxConnsPerHost, 64},
		{"transport MaxIdleConnsPerHost", transport.DefaultMaxIdleConnsPerHost, 16},
		{"transport adaptive hedge floor", transport.MinHedgeDelay, 10 * time.Millisecond},
		{"transport adaptive hedge ceiling", transport.DefaultHedgeCeiling, time.Second},
		{"websocket HandshakeTimeout", transport.DefaultHandshakeTimeout, 10 * time.Second},
		{"websocket PingInterval", transport.DefaultPingInterval, 15 * time.Second},
		{"websocket PongTimeout", transport.DefaultPongTimeout, 10 * time.Second},
	} {
		if c.got != c.want {
			t.Errorf("%s: %v (%T), DESIGN.md says %v (%T)", c.name, c.got, c.got, c.want, c.want)
		}
	}
	for p, want := range map[dial.Phase]string{
		dial.PhaseDNS: "dns", dial.PhaseConnect: "connect", dial.PhaseTLS: "tls", dial.PhaseFirstByte: "first_byte",
	} {
		if p.String() != want {
			t.Errorf("Phase %d: %q, DESIGN.md says %q", p, p.String(), want)
		}
	}
}
