package dial

import (
	"context"
	"errors"
	"net/netip"

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

// telemetry returns the Dialer's tracer and instruments, cached per
// provider by otelx (a bounded cache that does not pin every provider).
// A Dialer with a Name gets named providers (otelx.NamedTracerProvider):
// every span and point of its dials carries lifeline.client.name.
func (d *Dialer) telemetry() telemetry {
	tp, mp := d.TracerProvider, d.MeterProvider
	if d.Name != "" {
		tp, mp = otelx.NamedTracerProvider(tp, d.Name), otelx.NamedMeterProvider(mp, d.Name)
	}
	return telemetry{tracer: otelx.Tracer(tp, otelx.ScopeDial), inst: otelx.DialInstruments(mp)}
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
	// attemptOpts is by outcome and by whether the attempt repeated one
	// to the same address (MaxAttemptsPerAddress).
	attemptOpts [mOutcomes][2][]metric.AddOption

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
		for rep := range 2 {
			attemptOpts[o][rep] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
				otelx.KeyOutcome.String(outcomeNames[o]), otelx.KeyRepeat.Bool(rep == 1)))}
		}
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

func (t telemetry) recordAttempt(ctx context.Context, outcome int, repeat bool) {
	rep := 0
	if repeat {
		rep = 1
	}
	t.inst.Attempts.Add(ctx, 1, attemptOpts[outcome][rep]...)
}

// recordMasked counts a failure or stall that the race absorbed in a dial
// that succeeded: the signal that shows a bad address while every call
// still works (incidents 01, 02). The peer is labelled only when Health
// remembers it, so the label's cardinality is bounded by Health's MaxPeers.
func (s *dialState) recordMasked(ctx context.Context, phase Phase, peer netip.AddrPort, errorType string) {
	if !s.tel.inst.Masked.Enabled(ctx) {
		return
	}
	s.tel.inst.Masked.Add(ctx, 1, otelx.Masked(otelx.MaskedByRace, phase.String(),
		peerLabel(s.health, peer), errorType))
}

// peerLabel is the network.peer.address of a metric about peer: its IP
// when h remembers it, otelx.PeerOther otherwise, "" for no peer.
func peerLabel(h *Health, peer netip.AddrPort) string {
	switch {
	case !peer.IsValid():
		return ""
	case h.knows(peer):
		return peer.Addr().String()
	}
	return otelx.PeerOther
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
func peerAttrs(peer netip.AddrPort, index int, repeat bool) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		otelx.PeerAddress(peer.Addr().String()),
		otelx.PeerPort(int(peer.Port())),
		otelx.KeyRaceIndex.Int(index),
	}
	if repeat {
		attrs = append(attrs, otelx.KeyRepeat.Bool(true))
	}
	return attrs
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
