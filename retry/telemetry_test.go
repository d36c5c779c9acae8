package retry_test

import (
	"context"
	"net"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/retry"
)

func attrs(kvs []attribute.KeyValue) map[attribute.Key]attribute.Value {
	m := map[attribute.Key]attribute.Value{}
	for _, kv := range kvs {
		m[kv.Key] = kv.Value
	}
	return m
}

// TestSpans: each attempt is a "retry.attempt" span under the caller's span
// with its number, the backoff waited and, on failure, error.type; the
// caller's cancel is not an error.
func TestSpans(t *testing.T) {
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	t.Run("fails twice then succeeds", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			ctx, parent := tp.Tracer("test").Start(t.Context(), "caller")
			p := &retry.Policy{Jitter: -1, TracerProvider: tp, MeterProvider: metricnoop.NewMeterProvider()}
			err := p.Do(ctx, func(ctx context.Context) error {
				if retry.Attempt(ctx) < 3 {
					return refused
				}
				return nil
			})
			parent.End()
			require.NoError(t, err)
			spans := rec.Ended()
			require.Len(t, spans, 4)
			wantBackoff := []float64{0, 0.1, 0.2}
			for i, s := range spans[:3] {
				assert.Equal(t, "retry.attempt", s.Name())
				assert.Equal(t, otelx.ScopeRetry, s.InstrumentationScope().Name)
				assert.Equal(t, parent.SpanContext().SpanID(), s.Parent().SpanID(), "under the caller's span")
				a := attrs(s.Attributes())
				assert.Equal(t, int64(i+1), a[otelx.KeyAttempt].AsInt64())
				assert.InDelta(t, wantBackoff[i], a[otelx.KeyBackoff].AsFloat64(), 1e-9)
				if i < 2 {
					assert.Equal(t, codes.Error, s.Status().Code)
					assert.Equal(t, "connection_refused", a["error.type"].AsString())
					assert.Equal(t, otelx.OutcomeError, a[otelx.KeyOutcome].AsString())
					require.Len(t, s.Events(), 1)
					assert.Equal(t, "exception", s.Events()[0].Name)
				} else {
					assert.Equal(t, codes.Unset, s.Status().Code)
					assert.NotContains(t, a, attribute.Key("error.type"))
					assert.Equal(t, otelx.OutcomeOK, a[otelx.KeyOutcome].AsString())
				}
			}
			// The spans cover the attempts, not the waits.
			assert.Equal(t, 100*time.Millisecond, spans[1].StartTime().Sub(spans[0].EndTime()))
		})
	})
	t.Run("the caller's cancel is not an error", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			ctx, cancel := context.WithCancel(t.Context())
			err := (&retry.Policy{TracerProvider: tp}).Do(ctx, func(ctx context.Context) error {
				cancel()
				return ctx.Err()
			})
			require.ErrorIs(t, err, context.Canceled)
			spans := rec.Ended()
			require.Len(t, spans, 1)
			assert.Equal(t, codes.Unset, spans[0].Status().Code)
			assert.Equal(t, otelx.OutcomeCanceled, attrs(spans[0].Attributes())[otelx.KeyOutcome].AsString())
		})
	})
	t.Run("no-op provider makes no span", func(t *testing.T) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		ctx, parent := tp.Tracer("test").Start(t.Context(), "caller")
		p := &retry.Policy{TracerProvider: tracenoop.NewTracerProvider()}
		require.NoError(t, p.Do(ctx, func(context.Context) error { return nil }))
		parent.End()
		assert.Len(t, rec.Ended(), 1, "only the caller's span")
	})
}

// TestMetrics reads attempts, retries, budget refusals and recovered calls
// with a ManualReader. Recovered calls carry the first failure's error.type,
// so a fault that retries hide is still visible.
func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
		p := &retry.Policy{Jitter: -1, MeterProvider: mp, TracerProvider: tracenoop.NewTracerProvider()}
		refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
		reset := &net.OpError{Op: "read", Net: "tcp", Err: syscall.ECONNRESET}

		// Call 1: refused, reset, then ok: recovered, first failure refused.
		errs := []error{refused, reset, nil}
		require.NoError(t, p.Do(t.Context(), func(ctx context.Context) error { return errs[retry.Attempt(ctx)-1] }))
		// Call 2: reset, then ok.
		errs = []error{reset, nil}
		require.NoError(t, p.Do(t.Context(), func(ctx context.Context) error { return errs[retry.Attempt(ctx)-1] }))
		// Call 3: ok at once: not recovered.
		require.NoError(t, p.Do(t.Context(), func(context.Context) error { return nil }))
		// Call 4: a timeout, then refused by an empty budget.
		empty := retry.NewBudget(0, 0)
		drain := &retry.Policy{MaxAttempts: 11, InitialInterval: time.Millisecond, Multiplier: 1, Jitter: -1, Budget: empty}
		_ = drain.Do(t.Context(), func(context.Context) error { return errBoom })
		pb := *p
		pb.Budget = empty
		err := pb.Do(t.Context(), func(context.Context) error { return context.DeadlineExceeded })
		require.ErrorIs(t, err, retry.ErrBudgetExhausted)

		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(t.Context(), &rm))
		got := map[string]map[string]int64{} // metric → attribute value → count
		for _, sm := range rm.ScopeMetrics {
			require.Equal(t, otelx.ScopeRetry, sm.Scope.Name)
			for _, m := range sm.Metrics {
				sum, ok := m.Data.(metricdata.Sum[int64])
				require.True(t, ok, m.Name)
				got[m.Name] = map[string]int64{}
				for _, dp := range sum.DataPoints {
					label := ""
					for _, kv := range dp.Attributes.ToSlice() {
						label += string(kv.Key) + "=" + kv.Value.String()
					}
					got[m.Name][label] += dp.Value
				}
			}
		}
		assert.Equal(t, map[string]int64{
			"lifeline.outcome=ok":      3,
			"lifeline.outcome=error":   3,
			"lifeline.outcome=timeout": 1,
		}, got["lifeline.retry.attempts"])
		assert.Equal(t, map[string]int64{"": 3}, got["lifeline.retry.retries"])
		assert.Equal(t, map[string]int64{"": 1}, got["lifeline.retry.budget_refusals"])
		assert.Equal(t, map[string]int64{
			"error.type=connection_refused": 1,
			"error.type=connection_reset":   1,
		}, got["lifeline.retry.recovered"])
	})
}
