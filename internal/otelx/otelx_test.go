package otelx_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"
	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

type selfTyped struct{}

func (selfTyped) Error() string     { return "x" }
func (selfTyped) ErrorType() string { return "connect_timeout" }

func TestErrorTypeOf(t *testing.T) {
	cases := []struct {
		name string
		err  error
		want string
	}{
		{"nil", nil, ""},
		{"self-typed wins", fmt.Errorf("wrap: %w", selfTyped{}), "connect_timeout"},
		{"canceled", fmt.Errorf("x: %w", context.Canceled), "canceled"},
		{"deadline", context.DeadlineExceeded, "timeout"},
		{"dns not found", &net.DNSError{Err: "no such host", Name: "x", IsNotFound: true}, "dns_not_found"},
		{"refused", &net.OpError{Op: "dial", Err: syscall.ECONNREFUSED}, "connection_refused"},
		{"reset", &net.OpError{Op: "read", Err: syscall.ECONNRESET}, "connection_reset"},
		{"cert", x509.UnknownAuthorityError{}, "tls_certificate"},
		{"eof", fmt.Errorf("read: %w", io.EOF), "eof"},
		{"other", errors.New("boom"), "*errors.errorString"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, otelx.ErrorTypeOf(tc.err))
		})
	}
}

func TestRecordError(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	_, span := otelx.Tracer(tp, otelx.ScopeDial).Start(t.Context(), "dial")
	otelx.RecordError(span, nil)
	otelx.RecordError(span, context.DeadlineExceeded)
	span.End()
	spans := rec.Ended()
	require.Len(t, spans, 1)
	assert.Equal(t, codes.Error, spans[0].Status().Code)
	assert.Equal(t, otelx.ScopeDial, spans[0].InstrumentationScope().Name)
	assert.Equal(t, otelx.Version, spans[0].InstrumentationScope().Version)
	found := false
	for _, kv := range spans[0].Attributes() {
		if kv.Key == "error.type" {
			found = true
			assert.Equal(t, "timeout", kv.Value.AsString())
		}
	}
	assert.True(t, found, "error.type attribute")
}

func TestInstrumentsCachedPerProvider(t *testing.T) {
	mp := sdkmetric.NewMeterProvider()
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	a, b := otelx.DialInstruments(mp), otelx.DialInstruments(mp)
	assert.Same(t, a, b)
	assert.NotNil(t, otelx.RetryInstruments(nil).Attempts)
	assert.NotNil(t, otelx.PoolInstruments(mp).Evictions)
	assert.NotNil(t, otelx.TransportInstruments(mp).Stalls)
}

// uncomparableTP is a TracerProvider whose dynamic type is not comparable
// (a struct value with a slice), as some wrappers are.
type uncomparableTP struct {
	tracenoop.TracerProvider
	tags []string
}

func TestMemoBoundedAndSafeForUncomparableProviders(t *testing.T) {
	// Non-comparable providers are built each time, never compared.
	var tp trace.TracerProvider = uncomparableTP{tags: []string{"x"}}
	assert.NotPanics(t, func() { otelx.Tracer(tp, otelx.ScopeDial); otelx.Tracer(tp, otelx.ScopeDial) })
	assert.NotPanics(t, func() { otelx.DialInstruments(nil) })

	// Many providers: the cache keeps only the most recent few, so it pins
	// none of the others.
	var m otelx.Memo[any, int]
	for i := range 100 {
		mp := sdkmetric.NewMeterProvider()
		assert.Equal(t, i, m.Get(mp, func() int { return i }))
		assert.Equal(t, i, m.Get(mp, func() int { return -1 }), "a hit returns the cached value")
	}
	assert.LessOrEqual(t, m.Len(), 8)
}

func TestRedact(t *testing.T) {
	cases := map[string]string{
		`Get "http://alice:pw@host:8080/v1?api_key=SECRET&x=1#frag": EOF`: `Get "http://host:8080/v1": EOF`,
		"dial tcp 127.0.0.1:1: connect: connection refused":               "dial tcp 127.0.0.1:1: connect: connection refused",
		"two: https://a@b/c and wss://e:f@g/h":                            "two: https://b/c and wss://g/h",
		// Unquoted, a query runs to the end of the text.
		"two: https://a@b/c?d and wss://e:f@g/h?i=j": "two: https://b/c?REDACTED",
		"broken %zz://u:p@h/?q=1":                    "broken %zz://h/?REDACTED",
		// Issue 20's break 18: a quote, a space or an '@' in a query.
		`Get "http://127.0.0.1:1/p?q='x'&api_key=SECRET": dial tcp 127.0.0.1:1: connect: connection refused`: `Get "http://127.0.0.1:1/p": dial tcp 127.0.0.1:1: connect: connection refused`,
		`parse "https://host/%zz?email=a@b.com&token=SECRET": invalid URL escape "%zz"`:                      `parse "https://host/%zz": invalid URL escape "%zz"`,
		`Get "http://h/p?q=a b<c>` + "`d`" + `&token=SECRET": EOF`:                                           `Get "http://h/p": EOF`,
		`Get "http://h/p?q=\"&token=SECRET": EOF`:                                                            `Get "http://h/p": EOF`,
		`Get "http://h/p?q=\\": EOF; Get "http://h/p?token=SECRET": EOF`:                                     `Get "http://h/p": EOF; Get "http://h/p": EOF`,
		`Get "http://h/p?q=x&token=SECRET`:                                                                   `Get "http://h/p?REDACTED`,
		"fetch https://h/p?q=a b&token=SECRET: connection refused":                                           "fetch https://h/p?REDACTED",
		"fetch 'https://h/p?q='x'&token=SECRET': EOF":                                                        "fetch 'https://h/p?REDACTED",
		"see https://h/p#frag SECRET":                                                                        "see https://h/p#REDACTED",
		// Userinfo: an '@' in the password, a path with an '@', text
		// that does not parse.
		`Get "http://u:p@ss@h/a": EOF`:                          `Get "http://h/a": EOF`,
		`Get "https://h/users/bob@example.com": EOF`:            `Get "https://h/users/bob@example.com": EOF`,
		`invalid proxy address "http://u:pa/ss@proxy:bad": EOF`: `invalid proxy address "http://proxy:bad": EOF`,
		`invalid proxy address "http://u:pa ss@proxy": EOF`:     `invalid proxy address "http://proxy": EOF`,
		"x://h/://u:pw@h2/p":                                    "x://h/://h2/p",
		// Go-quoted URLs without "://", and other quoted text.
		`parse "api.example.com:443/v1?key=SECRET": first path segment in URL cannot contain colon`: `parse "api.example.com:443/v1": first path segment in URL cannot contain colon`,
		`Get "/v1?token=SECRET": unsupported protocol scheme ""`:                                    `Get "/v1": unsupported protocol scheme ""`,
		`Get "/v1?token=SECRET`:                      `Get "/v1?REDACTED`,
		`malformed HTTP response "what?" after "ok"`: `malformed HTTP response "what" after "ok"`,
		`no quote? no change`:                        `no quote? no change`,
	}
	for in, want := range cases {
		assert.Equal(t, want, otelx.Redact(in), in)
	}
	assert.Equal(t, "ws://h:1/p", otelx.StripURL("ws://u:p@h:1/p?token=SECRET#f"))
	assert.Equal(t, "ws://h/p", otelx.StripURL("ws://u:p w@h/p"))
}

func TestRecordErrorRedacts(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	_, span := otelx.Tracer(tp, otelx.ScopeRetry).Start(t.Context(), "op")
	otelx.RecordError(span, fmt.Errorf(`Get "http://alice:pw@h/v1?api_key=SECRET": %w`, io.EOF))
	span.End()
	s := rec.Ended()[0]
	assert.Equal(t, "eof", s.Status().Description, "the status is the error type")
	for _, ev := range s.Events() {
		for _, kv := range ev.Attributes {
			assert.NotContains(t, kv.Value.String(), "SECRET")
			assert.NotContains(t, kv.Value.String(), "alice")
		}
	}
}
