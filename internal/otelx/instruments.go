package otelx

import (
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/metric"
)

// Dial holds the dial package's instruments.
type Dial struct {
	// Duration is lifeline.dial.duration (s), by KeyPhase (dns, connect, tls,
	// or "total") and KeyOutcome.
	Duration metric.Float64Histogram
	// Attempts is lifeline.dial.attempts: connect attempts, by KeyOutcome.
	Attempts metric.Int64Counter
	// Masked is lifeline.masked_failures with lifeline.masked_by=race:
	// attempts that failed or stalled while the dial as a whole succeeded,
	// by KeyPhase, peer and error.type.
	Masked metric.Int64Counter
}

// Retry holds the retry package's instruments.
type Retry struct {
	// Attempts is lifeline.retry.attempts, by KeyOutcome.
	Attempts metric.Int64Counter
	// Retries is lifeline.retry.retries: attempts after the first.
	Retries metric.Int64Counter
	// BudgetRefusals is lifeline.retry.budget_refusals.
	BudgetRefusals metric.Int64Counter
	// Recovered is lifeline.retry.recovered: calls that succeeded only after
	// a failed attempt, by the first failure's error.type.
	Recovered metric.Int64Counter
	// Masked is lifeline.masked_failures with lifeline.masked_by=retry: one
	// per failed attempt of a call that then succeeded.
	Masked metric.Int64Counter
}

// Pool holds the pool package's synchronous instruments. The connection
// counts by state are an observable gauge that each Pool registers itself
// (lifeline.pool.connections), since it reads them from the pool's stats.
type Pool struct {
	Meter metric.Meter
	// AcquireWait is lifeline.pool.acquire.wait (s): time spent in Acquire.
	AcquireWait metric.Float64Histogram
	// Dials is lifeline.pool.dials, by KeyOutcome.
	Dials metric.Int64Counter
	// Evictions is lifeline.pool.evictions, by KeyReason.
	Evictions metric.Int64Counter
}

// Transport holds the transport package's instruments.
type Transport struct {
	// RequestDuration is the semantic conventions'
	// http.client.request.duration (s): one point per HTTP request sent
	// (each try: attempts, hedges, resends), with the conventions'
	// attributes and buckets. The preferred HTTP duration metric.
	RequestDuration metric.Float64Histogram
	// Duration is lifeline.http.client.duration (s), per try, by
	// http.request.method, http.response.status_code and KeyOutcome. Kept
	// for dashboards and rules written against it; RequestDuration measures
	// the same tries and is the one to use.
	Duration metric.Float64Histogram
	// Stalls is lifeline.http.stalls: responses aborted by a stall limit.
	Stalls metric.Int64Counter
	// Hedges is lifeline.http.hedges: hedged tries, by KeyHedge ("fired":
	// started; "won": answered first).
	Hedges metric.Int64Counter
	// Attempts is lifeline.http.attempts: HTTP exchanges (tries), by
	// KeyOutcome and whether they were a resend.
	Attempts metric.Int64Counter
	// Masked is lifeline.masked_failures with lifeline.masked_by=retry or
	// hedge: failures absorbed by a request that then succeeded.
	Masked metric.Int64Counter
}

var (
	dialCache      Memo[metric.MeterProvider, *Dial]
	retryCache     Memo[metric.MeterProvider, *Retry]
	poolCache      Memo[metric.MeterProvider, *Pool]
	transportCache Memo[metric.MeterProvider, *Transport]
)

// instruments returns the instruments of scope built from mp (nil: the
// global provider), cached in c.
func instruments[T any](c *Memo[metric.MeterProvider, *T], mp metric.MeterProvider, scope string, build func(metric.Meter) *T) *T {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if !Comparable(mp) {
		return build(Meter(mp, scope))
	}
	return c.Get(mp, func() *T { return build(Meter(mp, scope)) })
}

// MaskedFailuresName is the one metric that counts failures that a race, a
// retry or a hedge absorbed, in every scope, told apart by KeyMaskedBy: one
// query (sum by lifeline.masked_by, lifeline.phase, network.peer.address)
// sees them all.
const MaskedFailuresName = "lifeline.masked_failures"

func maskedCounter(m metric.Meter) metric.Int64Counter {
	c, _ := m.Int64Counter(MaskedFailuresName, metric.WithUnit("{failure}"),
		metric.WithDescription("Failures absorbed by a race, a retry or a hedge in a call that succeeded, by what masked them, phase and peer."))
	return c
}

// Durations in seconds with buckets suited to network phases (1 ms … 30 s).
var durationBuckets = metric.WithExplicitBucketBoundaries(
	0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)

// HTTPClientRequestDurationName is the semantic conventions' HTTP client
// duration metric.
const HTTPClientRequestDurationName = "http.client.request.duration"

// httpDurationBuckets are the bucket boundaries the semantic conventions
// advise for http.client.request.duration.
var httpDurationBuckets = metric.WithExplicitBucketBoundaries(
	0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10)

// DialInstruments returns the cached dial instruments of mp (nil: global).
func DialInstruments(mp metric.MeterProvider) *Dial {
	return instruments(&dialCache, mp, ScopeDial, func(m metric.Meter) *Dial {
		d := &Dial{}
		d.Duration, _ = m.Float64Histogram("lifeline.dial.duration", metric.WithUnit("s"),
			metric.WithDescription("Duration of dial phases and of whole dials."), durationBuckets)
		d.Attempts, _ = m.Int64Counter("lifeline.dial.attempts", metric.WithUnit("{attempt}"),
			metric.WithDescription("Connect attempts, one per raced address, by outcome."))
		d.Masked = maskedCounter(m)
		return d
	})
}

// RetryInstruments returns the cached retry instruments of mp (nil: global).
func RetryInstruments(mp metric.MeterProvider) *Retry {
	return instruments(&retryCache, mp, ScopeRetry, func(m metric.Meter) *Retry {
		r := &Retry{}
		r.Attempts, _ = m.Int64Counter("lifeline.retry.attempts", metric.WithUnit("{attempt}"),
			metric.WithDescription("Attempts made by retry.Do, by outcome."))
		r.Retries, _ = m.Int64Counter("lifeline.retry.retries", metric.WithUnit("{attempt}"),
			metric.WithDescription("Attempts after the first."))
		r.BudgetRefusals, _ = m.Int64Counter("lifeline.retry.budget_refusals", metric.WithUnit("{retry}"),
			metric.WithDescription("Retries refused by the shared retry budget."))
		r.Recovered, _ = m.Int64Counter("lifeline.retry.recovered", metric.WithUnit("{call}"),
			metric.WithDescription("Calls that succeeded only after a failed attempt, by the first failure's error.type."))
		r.Masked = maskedCounter(m)
		return r
	})
}

// PoolInstruments returns the cached pool instruments of mp (nil: global).
func PoolInstruments(mp metric.MeterProvider) *Pool {
	return instruments(&poolCache, mp, ScopePool, func(m metric.Meter) *Pool {
		p := &Pool{Meter: m}
		p.AcquireWait, _ = m.Float64Histogram("lifeline.pool.acquire.wait", metric.WithUnit("s"),
			metric.WithDescription("Time spent waiting in Acquire."), durationBuckets)
		p.Dials, _ = m.Int64Counter("lifeline.pool.dials", metric.WithUnit("{connection}"),
			metric.WithDescription("New connections dialed by the pool, by outcome."))
		p.Evictions, _ = m.Int64Counter("lifeline.pool.evictions", metric.WithUnit("{connection}"),
			metric.WithDescription("Connections evicted, by reason."))
		return p
	})
}

// TransportInstruments returns the cached transport instruments of mp (nil: global).
func TransportInstruments(mp metric.MeterProvider) *Transport {
	return instruments(&transportCache, mp, ScopeTransport, func(m metric.Meter) *Transport {
		t := &Transport{}
		t.RequestDuration, _ = m.Float64Histogram(HTTPClientRequestDurationName, metric.WithUnit("s"),
			metric.WithDescription("Duration of HTTP client requests."), httpDurationBuckets)
		t.Duration, _ = m.Float64Histogram("lifeline.http.client.duration", metric.WithUnit("s"),
			metric.WithDescription("Duration of each HTTP try (see http.client.request.duration, the preferred name)."), durationBuckets)
		t.Stalls, _ = m.Int64Counter("lifeline.http.stalls", metric.WithUnit("{response}"),
			metric.WithDescription("Responses aborted because no byte arrived within a stall limit."))
		t.Hedges, _ = m.Int64Counter("lifeline.http.hedges", metric.WithUnit("{attempt}"),
			metric.WithDescription("Hedged attempts: fired (started) and won (answered first)."))
		t.Attempts, _ = m.Int64Counter("lifeline.http.attempts", metric.WithUnit("{attempt}"),
			metric.WithDescription("HTTP exchanges made by the transport, one per try, by outcome."))
		t.Masked = maskedCounter(m)
		return t
	})
}
