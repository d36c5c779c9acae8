package otelx

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attributes of the upstream instruments (fail fast, load shedding).
const (
	// KeyThrottleReason is why a call was not attempted: ReasonUnavailable,
	// ReasonShed or ReasonRetryAfter.
	KeyThrottleReason = attribute.Key("lifeline.reason")
	// KeyNotAttempted is set on the span of a call that was not attempted,
	// to the same reason.
	KeyNotAttempted = attribute.Key("lifeline.not_attempted")
)

// Values of KeyThrottleReason and KeyNotAttempted.
const (
	ReasonUnavailable = "unavailable" // the upstream is known down
	ReasonShed        = "shed"        // the adaptive throttle rejected the call
	ReasonRetryAfter  = "retry_after" // the server's pause outlasts the call's deadline
)

// Names of the upstream instruments, in every scope that keeps upstream
// state (transport, pool, websocket).
const (
	ThrottledName     = "lifeline.throttled"
	UpstreamDownName  = "lifeline.upstream.down"
	UpstreamProbeName = "lifeline.upstream.probes"
)

// Upstream holds the instruments of a scope's per-upstream state.
type Upstream struct {
	// Throttled is lifeline.throttled: calls not attempted, by
	// KeyThrottleReason and a bounded server.address.
	Throttled metric.Int64Counter
	// Probes is lifeline.upstream.probes: calls admitted as probes of an
	// upstream that was down or paused, by KeyOutcome (ok, failed).
	Probes metric.Int64Counter
	// Down is lifeline.upstream.down, an observable gauge: 1 while an
	// upstream is down or paused, by a bounded server.address. Its
	// callbacks are registered by the state's owner (see RegisterCallback).
	Down metric.Int64ObservableGauge
	// Meter made them: register Down's callbacks with it.
	Meter metric.Meter
}

var upstreamCache Memo[metric.MeterProvider, *Upstream]

// UpstreamInstruments returns the cached upstream instruments of scope for
// mp (nil: the global provider).
func UpstreamInstruments(mp metric.MeterProvider, scope string) *Upstream {
	build := func(m metric.Meter) *Upstream {
		u := &Upstream{Meter: m}
		u.Throttled, _ = m.Int64Counter(ThrottledName, metric.WithUnit("{call}"),
			metric.WithDescription("Calls not attempted because the upstream is known down, paused by the server, or shed by client-side throttling."))
		u.Probes, _ = m.Int64Counter(UpstreamProbeName, metric.WithUnit("{call}"),
			metric.WithDescription("Calls admitted as probes of an upstream that was down or paused, by outcome."))
		u.Down, _ = m.Int64ObservableGauge(UpstreamDownName, metric.WithUnit("1"),
			metric.WithDescription("1 while an upstream is held down (fail fast) or paused by its server, else 0."))
		return u
	}
	if scope != ScopeTransport {
		return build(Meter(mp, scope))
	}
	return instruments(&upstreamCache, mp, scope, build)
}
