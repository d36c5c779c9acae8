package retry

import (
	"context"
	"errors"
	"reflect"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// spanName is the name of the span of each attempt.
const spanName = "retry.attempt"

// telemetry is what Do records with for one pair of providers.
type telemetry struct {
	tracer trace.Tracer // nil: the provider is a no-op, make no spans
	inst   *otelx.Retry // nil: the provider is a no-op, record nothing
}

type telemetryKey struct {
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// telemetries caches one *telemetry per comparable provider pair, so that
// the hot path neither builds a tracer nor looks instruments up under a lock.
var telemetries sync.Map // telemetryKey → *telemetry

// off is the telemetry of the no-op providers.
var off = &telemetry{}

func telemetryFor(tp trace.TracerProvider, mp metric.MeterProvider) *telemetry {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	_, noTrace := tp.(tracenoop.TracerProvider)
	_, noMetric := mp.(metricnoop.MeterProvider)
	if noTrace && noMetric {
		return off
	}
	key := telemetryKey{tp, mp}
	cacheable := reflect.TypeOf(tp).Comparable() && reflect.TypeOf(mp).Comparable()
	if cacheable {
		if t, ok := telemetries.Load(key); ok {
			return t.(*telemetry)
		}
	}
	t := &telemetry{}
	if !noTrace {
		t.tracer = otelx.Tracer(tp, otelx.ScopeRetry)
	}
	if !noMetric {
		t.inst = otelx.RetryInstruments(mp)
	}
	if cacheable {
		v, _ := telemetries.LoadOrStore(key, t)
		t = v.(*telemetry)
	}
	return t
}

// Precomputed measurement options: built once so that recording on the hot
// path does not allocate.
var (
	outcomeOK       = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String(otelx.OutcomeOK)))}
	outcomeError    = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String(otelx.OutcomeError)))}
	outcomeTimeout  = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String(otelx.OutcomeTimeout)))}
	outcomeCanceled = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String(otelx.OutcomeCanceled)))}
)

// outcomeOf names how an attempt ended for KeyOutcome.
func outcomeOf(err error, callerDone bool) string {
	switch {
	case err == nil:
		return otelx.OutcomeOK
	case callerDone && errors.Is(err, context.Canceled):
		return otelx.OutcomeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		return otelx.OutcomeTimeout
	}
	return otelx.OutcomeError
}

func outcomeOpts(outcome string) []metric.AddOption {
	switch outcome {
	case otelx.OutcomeOK:
		return outcomeOK
	case otelx.OutcomeCanceled:
		return outcomeCanceled
	case otelx.OutcomeTimeout:
		return outcomeTimeout
	}
	return outcomeError
}

// attempted counts one attempt and, for attempts after the first, a retry.
func (t *telemetry) attempted(ctx context.Context, n int, outcome string) {
	if t.inst == nil {
		return
	}
	t.inst.Attempts.Add(ctx, 1, outcomeOpts(outcome)...)
	if n > 1 {
		t.inst.Retries.Add(ctx, 1)
	}
}

// recovered counts a call that succeeded after first failing with first.
func (t *telemetry) recovered(ctx context.Context, first error) {
	if t.inst == nil || !t.inst.Recovered.Enabled(ctx) {
		return
	}
	t.inst.Recovered.Add(ctx, 1, metric.WithAttributes(otelx.ErrorType(first)))
}

// refused counts a retry refused by the budget.
func (t *telemetry) refused(ctx context.Context) {
	if t.inst == nil {
		return
	}
	t.inst.BudgetRefusals.Add(ctx, 1)
}
