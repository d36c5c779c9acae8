package retry

import (
	"context"
	"errors"
	"sync/atomic"

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
	// The providers it was built for, for the one-entry front of the cache.
	tp trace.TracerProvider
	mp metric.MeterProvider
}

// telemetries caches one *telemetry per comparable provider pair, so that
// the hot path neither builds a tracer nor looks instruments up under a lock.
// otelx.Memo remembers only the most recent few pairs: a program that makes
// providers as it goes (tests do, so do per-tenant setups) does not get
// every one of them, and the exporters behind them, pinned for the life of
// the process. Non-comparable providers are not cached (built per call).
var telemetries otelx.Memo[otelx.ProviderPair, *telemetry]

// lastTelemetry is the pair used last, looked up before telemetries: a
// Memo key is an interface value, and boxing the pair into it would cost an
// allocation on every call. Only comparable pairs are stored here, so the
// == below never meets a non-comparable dynamic type twice.
var lastTelemetry atomic.Pointer[telemetry]

// off is the telemetry of the no-op providers.
var off = &telemetry{}

// telemetryFor returns what Do records with for tp and mp (nil: the
// globals). Explicit no-op providers on both sides get off: no span, no
// instrument, no cache look-up.
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
	if t := lastTelemetry.Load(); t != nil && t.tp == tp && t.mp == mp {
		return t
	}
	tpComparable := otelx.Comparable(tp)
	build := func() *telemetry {
		t := &telemetry{tp: tp, mp: mp}
		switch {
		case noTrace:
		case tpComparable:
			t.tracer = otelx.Tracer(tp, otelx.ScopeRetry)
		default:
			// otelx.Tracer keys its cache by a struct that holds tp, and
			// comparing two such keys panics when tp's dynamic type is not
			// comparable: ask the provider itself, uncached.
			t.tracer = tp.Tracer(otelx.ScopeRetry, trace.WithInstrumentationVersion(otelx.Version))
		}
		if !noMetric {
			t.inst = otelx.RetryInstruments(mp)
		}
		return t
	}
	if !tpComparable || !otelx.Comparable(mp) {
		return build() // never compared, never cached
	}
	t := telemetries.Get(otelx.ProviderPair{Tracer: tp, Meter: mp}, build)
	lastTelemetry.Store(t)
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

// maskedRun is a run of retried failures of one call with the same labels.
type maskedRun struct {
	phase, peer, errorType string
	n                      int64
}

// maskedFailures are the retried failures of one call, waiting to be
// counted as masked if a later attempt succeeds. Runs of equal labels share
// one entry, so a long outage of one kind holds one. nil until a failure is
// retried with the counter enabled: a first-attempt success pays nothing.
type maskedFailures []maskedRun

// failed notes a failure that Do is about to retry.
func (t *telemetry) failed(ctx context.Context, m maskedFailures, err error) maskedFailures {
	if t.inst == nil || !t.inst.Masked.Enabled(ctx) {
		return m
	}
	phase, peer := otelx.MaskedLabels(err)
	et := otelx.ErrorTypeOf(err)
	if k := len(m) - 1; k >= 0 && m[k].phase == phase && m[k].peer == peer && m[k].errorType == et {
		m[k].n++
		return m
	}
	return append(m, maskedRun{phase: phase, peer: peer, errorType: et, n: 1})
}

// masked counts the failures of a call that then succeeded on
// lifeline.masked_failures, with lifeline.masked_by=retry, like those a
// dial's race masks.
func (t *telemetry) masked(ctx context.Context, m maskedFailures) {
	if t.inst == nil {
		return
	}
	for _, r := range m {
		t.inst.Masked.Add(ctx, r.n, otelx.Masked(otelx.MaskedByRetry, r.phase, r.peer, r.errorType))
	}
}
