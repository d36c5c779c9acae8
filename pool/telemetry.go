package pool

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// telemetry holds a pool's tracer, instruments and precomputed attribute
// options, so that recording never builds attribute sets (and never
// allocates) on the hot path.
type telemetry struct {
	tracer    trace.Tracer
	inst      *otelx.Pool
	spanAttrs trace.SpanStartOption
	reg       metric.Registration

	evictOpts   [numReasons][]metric.AddOption
	dialOpts    [3][]metric.AddOption // ok, error, timeout
	recordOpts  []metric.RecordOption
	outcomeOK   attribute.KeyValue
	dialStarted [2]attribute.KeyValue

	up upTelemetry // nil gauge: fail fast off
}

func (t *telemetry) init(p *Pool, cfg *Config) error {
	t.tracer = otelx.Tracer(cfg.TracerProvider, otelx.ScopePool)
	t.inst = otelx.PoolInstruments(cfg.MeterProvider)
	t.initUpstream(p, cfg)
	var base []attribute.KeyValue
	if cfg.Name != "" {
		base = append(base, otelx.KeyPoolName.String(cfg.Name))
	}
	with := func(kv ...attribute.KeyValue) attribute.Set {
		return attribute.NewSet(append(append([]attribute.KeyValue(nil), base...), kv...)...)
	}
	t.spanAttrs = trace.WithAttributes(base...)
	for r := reasonIdle; r < numReasons; r++ {
		t.evictOpts[r] = []metric.AddOption{metric.WithAttributeSet(with(otelx.KeyReason.String(r.String())))}
	}
	for i, o := range []string{otelx.OutcomeOK, otelx.OutcomeError, otelx.OutcomeTimeout} {
		t.dialOpts[i] = []metric.AddOption{metric.WithAttributeSet(with(otelx.KeyOutcome.String(o)))}
	}
	t.recordOpts = []metric.RecordOption{metric.WithAttributeSet(with())}
	t.outcomeOK = otelx.KeyOutcome.String(otelx.OutcomeOK)
	t.dialStarted = [2]attribute.KeyValue{otelx.KeyPoolDialStarted.Bool(false), otelx.KeyPoolDialStarted.Bool(true)}

	// The connection counts are read from the pool by an observable gauge
	// registered per pool and unregistered by Close.
	m := t.inst.Meter
	conns, err := m.Int64ObservableGauge("lifeline.pool.connections", metric.WithUnit("{connection}"),
		metric.WithDescription("Connections of a pool, by state (idle, in_use, dialing)."))
	if err != nil {
		return nil // a broken meter must not stop the pool; otel reports it
	}
	waiting, err := m.Int64ObservableGauge("lifeline.pool.waiting", metric.WithUnit("{call}"),
		metric.WithDescription("Acquire calls queued for a connection."))
	if err != nil {
		return nil
	}
	idle := metric.WithAttributeSet(with(otelx.KeyState.String("idle")))
	inUse := metric.WithAttributeSet(with(otelx.KeyState.String("in_use")))
	dialing := metric.WithAttributeSet(with(otelx.KeyState.String("dialing")))
	plain := metric.WithAttributeSet(with())
	t.reg, _ = m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		s := p.Stats()
		o.ObserveInt64(conns, int64(s.Idle), idle)
		o.ObserveInt64(conns, int64(s.InUse), inUse)
		o.ObserveInt64(conns, int64(s.Dialing), dialing)
		o.ObserveInt64(waiting, int64(s.Waiting), plain)
		return nil
	}, conns, waiting)
	return nil
}

func (t *telemetry) close() {
	if t.reg != nil {
		_ = t.reg.Unregister()
	}
}

func (t *telemetry) evicted(r reason) {
	if r > reasonNone && r < numReasons {
		t.inst.Evictions.Add(context.Background(), 1, t.evictOpts[r]...)
	}
}

func (t *telemetry) dialed(err error) {
	i := 0
	switch {
	case err == nil:
	case errors.Is(err, context.DeadlineExceeded):
		i = 2
	default:
		i = 1
	}
	t.inst.Dials.Add(context.Background(), 1, t.dialOpts[i]...)
}

func (t *telemetry) acquireWaited(d time.Duration) {
	t.inst.AcquireWait.Record(context.Background(), d.Seconds(), t.recordOpts...)
}

func (t *telemetry) acquireQueued(span trace.Span, dialed bool) {
	if !span.IsRecording() {
		return
	}
	if dialed {
		span.SetAttributes(t.dialStarted[1])
	} else {
		span.SetAttributes(t.dialStarted[0])
	}
}

// endAcquire sets the span's outcome. A caller's cancellation is not a
// failure; a timeout, a dial error or a closed pool is.
func (t *telemetry) endAcquire(span trace.Span, err error) {
	if !span.IsRecording() {
		return
	}
	switch {
	case err == nil:
		span.SetAttributes(t.outcomeOK)
	case errors.Is(err, context.Canceled):
		span.SetAttributes(otelx.KeyOutcome.String(otelx.OutcomeCanceled))
	case errors.Is(err, context.DeadlineExceeded):
		span.SetAttributes(otelx.KeyOutcome.String(otelx.OutcomeTimeout))
		otelx.RecordError(span, err)
	default:
		span.SetAttributes(otelx.KeyOutcome.String(otelx.OutcomeError))
		otelx.RecordError(span, err)
	}
}

// notAttempted marks the span of an Acquire that failed fast: no dial was
// tried for it because its upstream is known down.
func (t *telemetry) notAttempted(span trace.Span) {
	if span.IsRecording() {
		span.SetAttributes(otelx.KeyNotAttempted.String(otelx.ReasonUnavailable))
	}
}
