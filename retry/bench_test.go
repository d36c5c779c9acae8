package retry_test

import (
	"context"
	"testing"

	"github.com/cenkalti/backoff/v4"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/retry"
)

// noopPolicy is the default policy with no-op tracer and meter providers.
var noopPolicy = &retry.Policy{
	TracerProvider: tracenoop.NewTracerProvider(),
	MeterProvider:  metricnoop.NewMeterProvider(),
}

func succeed(context.Context) error { return nil }

// TestFastPathAllocs: a first-attempt success builds no backoff and no span
// and allocates at most once (the attempt's context).
func TestFastPathAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("the race detector changes allocation counts")
	}
	ctx := t.Context()
	allocs := testing.AllocsPerRun(1000, func() {
		if err := noopPolicy.Do(ctx, succeed); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Policy.Do: %.1f allocs", allocs)
	if allocs > 1 {
		t.Errorf("Policy.Do first-attempt success: %.1f allocs, want ≤ 1", allocs)
	}
	allocs = testing.AllocsPerRun(1000, func() {
		if _, err := retry.Do(ctx, noopPolicy, func(context.Context) (int, error) { return 1, nil }); err != nil {
			t.Fatal(err)
		}
	})
	t.Logf("Do[int]: %.1f allocs", allocs)
	if allocs > 1 {
		t.Errorf("Do[T] first-attempt success: %.1f allocs, want ≤ 1", allocs)
	}
}

// BenchmarkDoSuccess compares a first-attempt success through lifeline with
// backoff/v4's Retry and a new ExponentialBackOff. Compare with
// benchstat -col /lib.
func BenchmarkDoSuccess(b *testing.B) {
	ctx := context.Background()
	b.Run("lib=lifeline", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			if err := noopPolicy.Do(ctx, succeed); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("lib=backoffv4", func(b *testing.B) {
		b.ReportAllocs()
		op := func() error { return nil }
		for b.Loop() {
			if err := backoff.Retry(op, backoff.NewExponentialBackOff()); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDoSuccessGeneric is the generic Do[T] on the same path.
func BenchmarkDoSuccessGeneric(b *testing.B) {
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		if _, err := retry.Do(ctx, noopPolicy, func(context.Context) (int, error) { return 1, nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDoSuccessBudget adds a shared Budget (one mutex-guarded deposit
// per call), in parallel.
func BenchmarkDoSuccessBudget(b *testing.B) {
	ctx := context.Background()
	p := *noopPolicy
	p.Budget = retry.NewBudget(0.1, 0)
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			if err := p.Do(ctx, succeed); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkDoSuccessGlobal uses the otel global providers with no SDK
// installed (the zero Policy as most callers have it).
func BenchmarkDoSuccessGlobal(b *testing.B) {
	ctx := context.Background()
	var p retry.Policy
	b.ReportAllocs()
	for b.Loop() {
		if err := p.Do(ctx, succeed); err != nil {
			b.Fatal(err)
		}
	}
}
