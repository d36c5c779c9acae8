package retry

import (
	"fmt"
	"math"
	"time"

	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/trace"
)

// Defaults applied for a zero field of [Policy] (and a nil *Policy).
const (
	// DefaultMaxAttempts is the default [Policy.MaxAttempts], the first attempt included.
	DefaultMaxAttempts = 3
	// DefaultInitialInterval is the default [Policy.InitialInterval].
	DefaultInitialInterval = 100 * time.Millisecond
	// DefaultMaxInterval is the default [Policy.MaxInterval].
	DefaultMaxInterval = 5 * time.Second
	// DefaultMultiplier is the default [Policy.Multiplier].
	DefaultMultiplier = 2.0
	// DefaultJitter is the default [Policy.Jitter]: waits vary by ±50%.
	DefaultJitter = 0.5
	// DefaultMaxRetryAfter is the default [Policy.MaxRetryAfter].
	DefaultMaxRetryAfter = 30 * time.Second
)

// Policy says how [Policy.Do] and [Do] retry an operation.
//
// The zero value, and a nil *Policy, is the default policy: 3 attempts,
// exponential backoff from 100ms doubling up to 5s with ±50% jitter,
// server-advised waits capped at 30s, no retry budget and the global
// OpenTelemetry providers. Defaults are resolved on every call and never
// written back into the struct.
//
// A Policy is only read by Do, so one value may be shared by any number of
// goroutines as long as nobody modifies it concurrently. Each call builds its
// own backoff state; the shared state is the [Budget] only, which is safe for
// concurrent use.
//
// Invalid values (a negative MaxAttempts, InitialInterval or MaxInterval,
// InitialInterval above MaxInterval, a Multiplier below 1 other than 0, a
// Jitter above 1, NaN or infinite floats) make Do return an error naming the
// field without calling the operation. Negative values of Jitter,
// AttemptTimeout and MaxRetryAfter are documented opt-outs, not errors.
type Policy struct {
	// MaxAttempts is the number of attempts including the first.
	// 0 means 3; 1 means no retry; negative is an error.
	MaxAttempts int

	// InitialInterval is the wait before the first retry, before jitter.
	// 0 means 100ms; negative is an error.
	InitialInterval time.Duration

	// MaxInterval caps the wait between attempts before jitter is applied
	// (so a jittered wait may reach MaxInterval·(1+Jitter)).
	// 0 means 5s; negative, or less than InitialInterval, is an error.
	MaxInterval time.Duration

	// Multiplier grows the wait after each retry. 0 means 2; 1 means a
	// constant wait; below 1 is an error.
	Multiplier float64

	// Jitter is the randomization factor in [0,1]: each wait is drawn
	// uniformly from [w·(1−Jitter), w·(1+Jitter)]. 0 means 0.5; a negative
	// value means no jitter (exact waits); above 1 is an error.
	Jitter float64

	// AttemptTimeout bounds each attempt: the operation's context gets this
	// deadline (never later than the caller's). An attempt cut by it (the
	// operation returned a timeout after the deadline) is retried while
	// the caller's context still has time; an error of the operation's own
	// that is not a timeout keeps its own classification.
	// 0 or negative means none beyond the caller's context and the phases'
	// own limits.
	AttemptTimeout time.Duration

	// MaxRetryAfter caps server-advised waits (see [After]): a longer
	// advised wait ends the retries with [ErrRetryAfterTooLong] instead of
	// sleeping. 0 means 30s; negative means no cap (the context's deadline
	// still applies).
	MaxRetryAfter time.Duration

	// Budget, when set, limits retries across every call that shares it
	// (see [NewBudget]). nil means no budget: retries are bounded by
	// MaxAttempts only.
	Budget *Budget

	// Retryable, when set, replaces the default classification (see
	// [Policy.Do]) for errors that are neither marked [Permanent], nor caused
	// by the caller's context ending, nor an inner Do's final word (an
	// [*ExhaustedError] that retried or has a Cause, or
	// [ErrBudgetExhausted]): retries never multiply across layers. It is
	// called from the goroutine that called Do, once per failed attempt. A
	// panic in it reaches Do's caller unchanged; Do holds nothing at that
	// point (the attempt's span has ended, no retry was paid for).
	Retryable func(error) bool

	// TracerProvider makes the per-attempt spans. nil means the otel global
	// provider.
	TracerProvider trace.TracerProvider

	// MeterProvider records the retry metrics. nil means the otel global
	// provider.
	MeterProvider metric.MeterProvider
}

// config is a Policy with every default resolved and every value checked.
// It is a plain value so that resolving it does not allocate.
type config struct {
	maxAttempts     int
	initialInterval time.Duration
	maxInterval     time.Duration
	multiplier      float64
	jitter          float64 // ≥ 0
	attemptTimeout  time.Duration
	maxRetryAfter   time.Duration // < 0: no cap
	budget          *Budget
	retryable       func(error) bool
	tp              trace.TracerProvider
	mp              metric.MeterProvider
}

func (p *Policy) maxAttempts() int {
	if p == nil || p.MaxAttempts == 0 {
		return DefaultMaxAttempts
	}
	return p.MaxAttempts
}

func (p *Policy) initialInterval() time.Duration {
	if p == nil || p.InitialInterval == 0 {
		return DefaultInitialInterval
	}
	return p.InitialInterval
}

func (p *Policy) maxInterval() time.Duration {
	if p == nil || p.MaxInterval == 0 {
		return DefaultMaxInterval
	}
	return p.MaxInterval
}

func (p *Policy) multiplier() float64 {
	if p == nil || p.Multiplier == 0 {
		return DefaultMultiplier
	}
	return p.Multiplier
}

func (p *Policy) jitter() float64 {
	switch {
	case p == nil || p.Jitter == 0:
		return DefaultJitter
	case p.Jitter < 0:
		return 0
	}
	return p.Jitter
}

func (p *Policy) attemptTimeout() time.Duration {
	if p == nil || p.AttemptTimeout < 0 {
		return 0
	}
	return p.AttemptTimeout
}

func (p *Policy) maxRetryAfter() time.Duration {
	if p == nil || p.MaxRetryAfter == 0 {
		return DefaultMaxRetryAfter
	}
	return p.MaxRetryAfter
}

// config resolves the defaults and validates p. The error names the field.
func (p *Policy) config() (config, error) {
	c := config{
		maxAttempts:     p.maxAttempts(),
		initialInterval: p.initialInterval(),
		maxInterval:     p.maxInterval(),
		multiplier:      p.multiplier(),
		jitter:          p.jitter(),
		attemptTimeout:  p.attemptTimeout(),
		maxRetryAfter:   p.maxRetryAfter(),
	}
	if p == nil {
		return c, nil
	}
	c.budget, c.retryable = p.Budget, p.Retryable
	c.tp, c.mp = p.TracerProvider, p.MeterProvider
	switch {
	case c.maxAttempts < 0:
		return c, fmt.Errorf("retry: Policy.MaxAttempts is %d; want 0 (default %d) or more", p.MaxAttempts, DefaultMaxAttempts)
	case c.initialInterval < 0:
		return c, fmt.Errorf("retry: Policy.InitialInterval is %v; want 0 (default %v) or more", p.InitialInterval, DefaultInitialInterval)
	case c.maxInterval < 0:
		return c, fmt.Errorf("retry: Policy.MaxInterval is %v; want 0 (default %v) or more", p.MaxInterval, DefaultMaxInterval)
	case c.initialInterval > c.maxInterval:
		return c, fmt.Errorf("retry: Policy.InitialInterval (%v) exceeds Policy.MaxInterval (%v)", c.initialInterval, c.maxInterval)
	case math.IsNaN(c.multiplier) || math.IsInf(c.multiplier, 0) || c.multiplier < 1:
		return c, fmt.Errorf("retry: Policy.Multiplier is %v; want 0 (default %v) or a finite value ≥ 1", p.Multiplier, DefaultMultiplier)
	case math.IsNaN(p.Jitter) || c.jitter > 1:
		return c, fmt.Errorf("retry: Policy.Jitter is %v; want a value ≤ 1 (0: default %v, negative: none)", p.Jitter, DefaultJitter)
	}
	return c, nil
}
