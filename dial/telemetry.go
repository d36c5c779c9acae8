package dial

import (
	"context"
	"errors"
	"net/netip"
	"reflect"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// telemetry is the tracer and instruments of one dial.
type telemetry struct {
	tracer trace.Tracer
	inst   *otelx.Dial
}

// tracers caches the dial tracer per TracerProvider so that the hot path
// does not build tracer options on every dial.
var tracers sync.Map // trace.TracerProvider -> trace.Tracer

// instruments caches otelx.DialInstruments per MeterProvider behind a
// lock-free read, so that concurrent dials do not queue on otelx's mutex.
var instruments sync.Map // metric.MeterProvider -> *otelx.Dial

func (d *Dialer) telemetry() telemetry {
	return telemetry{tracer: tracerFor(d.TracerProvider), inst: instrumentsFor(d.MeterProvider)}
}

func instrumentsFor(mp metric.MeterProvider) *otelx.Dial {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if t := reflect.TypeOf(mp); t == nil || !t.Comparable() {
		return otelx.DialInstruments(mp)
	}
	if in, ok := instruments.Load(mp); ok {
		return in.(*otelx.Dial)
	}
	in, _ := instruments.LoadOrStore(mp, otelx.DialInstruments(mp))
	return in.(*otelx.Dial)
}

func tracerFor(tp trace.TracerProvider) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	if t := reflect.TypeOf(tp); t == nil || !t.Comparable() {
		return otelx.Tracer(tp, otelx.ScopeDial)
	}
	if tr, ok := tracers.Load(tp); ok {
		return tr.(trace.Tracer)
	}
	tr, _ := tracers.LoadOrStore(tp, otelx.Tracer(tp, otelx.ScopeDial))
	return tr.(trace.Tracer)
}

// Metric phases: the four Phases plus the whole dial.
const (
	mPhaseDNS = iota
	mPhaseConnect
	mPhaseTLS
	mPhaseFirstByte
	mPhaseTotal
	mPhases
)

// Metric outcomes.
const (
	mOK = iota
	mError
	mTimeout
	mCanceled
	mLost
	mOutcomes
)

var (
	phaseNames   = [mPhases]string{"dns", "connect", "tls", "first_byte", "total"}
	outcomeNames = [mOutcomes]string{otelx.OutcomeOK, otelx.OutcomeError, otelx.OutcomeTimeout,
		otelx.OutcomeCanceled, otelx.OutcomeLost}

	// Attribute sets are built once: recording with a prebuilt option slice
	// costs no allocation, which keeps a dial with the noop provider close
	// to a bare net.Dialer.
	durationOpts [mPhases][mOutcomes][]metric.RecordOption
	attemptOpts  [mOutcomes][]metric.AddOption

	spanClient = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}
)

func init() {
	for p := range mPhases {
		for o := range mOutcomes {
			set := attribute.NewSet(otelx.KeyPhase.String(phaseNames[p]), otelx.KeyOutcome.String(outcomeNames[o]))
			durationOpts[p][o] = []metric.RecordOption{metric.WithAttributeSet(set)}
		}
	}
	for o := range mOutcomes {
		attemptOpts[o] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String(outcomeNames[o])))}
	}
}

// outcomeOf classifies a phase's error for metrics and spans.
func outcomeOf(err error) int {
	if err == nil {
		return mOK
	}
	return failedOutcome(err)
}

// failedOutcome is outcomeOf for a non-nil err; kept apart so that the
// success path does not pay for the errors.As target escaping.
func failedOutcome(err error) int {
	var de *Error
	switch {
	case errors.Is(err, errLostRace):
		return mLost
	case errors.Is(err, context.Canceled):
		return mCanceled
	case errors.As(err, &de) && de.Timeout():
		return mTimeout
	case errors.Is(err, context.DeadlineExceeded):
		return mTimeout
	}
	return mError
}

func (t telemetry) recordDuration(ctx context.Context, phase, outcome int, seconds float64) {
	t.inst.Duration.Record(ctx, seconds, durationOpts[phase][outcome]...)
}

func (t telemetry) recordAttempt(ctx context.Context, outcome int) {
	t.inst.Attempts.Add(ctx, 1, attemptOpts[outcome]...)
}

// recordMasked counts a failure or stall that the race absorbed in a dial
// that succeeded: the signal that shows a bad address while every call
// still works (incidents 01, 02).
func (t telemetry) recordMasked(ctx context.Context, phase Phase, peer netip.AddrPort, errorType string) {
	t.inst.Masked.Add(ctx, 1, metric.WithAttributes(
		otelx.KeyPhase.String(phase.String()),
		otelx.PeerAddress(peer.Addr().String()),
		otelx.PeerPort(int(peer.Port())),
		attribute.String("error.type", errorType),
		otelx.KeyMaskedBy.String("race"),
	))
}

// noSpan is the span of a phase when the dial span is not recording.
var noSpan = trace.SpanFromContext(context.Background())

// startChild starts a phase span under the dial span. When the dial span is
// not recording (a noop provider, or a sampled-out trace), no child is
// made: the children would not be recorded either under the usual
// parent-based sampling, and skipping them keeps an untraced dial as cheap
// as a bare net.Dialer.
func (s *dialState) startChild(ctx context.Context, name string) (context.Context, trace.Span) {
	if !s.traced {
		return ctx, noSpan
	}
	return s.tel.tracer.Start(ctx, name)
}

// peerAttrs are the attributes of a dial.connect or dial.tls span.
func peerAttrs(peer netip.AddrPort, index int) []attribute.KeyValue {
	return []attribute.KeyValue{
		otelx.PeerAddress(peer.Addr().String()),
		otelx.PeerPort(int(peer.Port())),
		otelx.KeyRaceIndex.Int(index),
	}
}

// endSpan sets the outcome of a span and marks it failed unless the error is
// a lost race or the caller's cancel, which are not failures.
func endSpan(span trace.Span, outcome int, err error) {
	if !span.IsRecording() {
		span.End()
		return
	}
	span.SetAttributes(otelx.KeyOutcome.String(outcomeNames[outcome]))
	if outcome != mOK && outcome != mLost && outcome != mCanceled {
		otelx.RecordError(span, err)
	}
	span.End()
}
