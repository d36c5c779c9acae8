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
