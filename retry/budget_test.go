package retry_test

import (
	"context"
	"errors"
	"math"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/retry"
)

// outage runs calls sequential calls against an operation that always fails
// and returns the attempts made and how many calls ended with
// ErrBudgetExhausted in their chain.
func outage(t *testing.T, p *retry.Policy, calls int) (attempts, refused int) {
	t.Helper()
	for range calls {
		err := p.Do(t.Context(), func(context.Context) error {
			attempts++
			return errBoom
		})
		require.ErrorIs(t, err, errBoom)
		if errors.Is(err, retry.ErrBudgetExhausted) {
			refused++
			require.ErrorIs(t, err, retry.ErrExhausted)
		}
	}
	return attempts, refused
}

// TestBudgetTotalOutage is rule 5's count: under a total outage a budget of
// 0.1 keeps the attempts within 1.2× the calls, where without a budget they
// are MaxAttempts×.
func TestBudgetTotalOutage(t *testing.T) {
	const calls = 1000
	cases := []struct {
		name         string
		budget       *retry.Budget
		minAttempts  int
		maxAttempts  int
		wantRefusals bool
	}{
		{"no budget: MaxAttempts per call", nil, 5 * calls, 5 * calls, false},
		{"budget 0.1: at most 1.2 per call", retry.NewBudget(0.1, 0), calls, calls * 12 / 10, true},
		{"budget 0: only the starting burst", retry.NewBudget(0, 0), calls, calls + 10, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &retry.Policy{MaxAttempts: 5, InitialInterval: time.Millisecond, Budget: tc.budget}
				attempts, refused := outage(t, p, calls)
				t.Logf("%d calls: %d attempts (%.2f per call), %d refused by the budget", calls, attempts, float64(attempts)/calls, refused)
				assert.GreaterOrEqual(t, attempts, tc.minAttempts)
				assert.LessOrEqual(t, attempts, tc.maxAttempts)
				assert.Equal(t, tc.wantRefusals, refused > 0)
			})
		})
	}
}

// TestBudgetConcurrent shares one budget between goroutines (run with -race)
// and checks the same bound on the total.
func TestBudgetConcurrent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const workers, perWorker = 8, 250
		b := retry.NewBudget(0.1, 0)
		p := &retry.Policy{MaxAttempts: 5, InitialInterval: time.Millisecond, Budget: b}
		var attempts, refused atomic.Int64
		var wg sync.WaitGroup
		for range workers {
			wg.Go(func() {
				for range perWorker {
					err := p.Do(t.Context(), func(context.Context) error {
						attempts.Add(1)
						return errBoom
					})
					if errors.Is(err, retry.ErrBudgetExhausted) {
						refused.Add(1)
					}
				}
			})
		}
		wg.Wait()
		const calls = workers * perWorker
		t.Logf("%d calls from %d goroutines: %d attempts, %d refused", calls, workers, attempts.Load(), refused.Load())
		assert.LessOrEqual(t, attempts.Load(), int64(calls*12/10))
		assert.GreaterOrEqual(t, attempts.Load(), int64(calls))
		assert.Positive(t, refused.Load())
		assert.Less(t, b.Available(), 1.0)
	})
}

// TestBudgetTokens checks the bucket's arithmetic: the starting burst,
// deposits per call, the time-based refill, the cap, the zero value and
// clamping.
func TestBudgetTokens(t *testing.T) {
	fail := func(context.Context) error { return errBoom }
	ok := func(context.Context) error { return nil }
	cases := []struct {
		name string
		run  func(t *testing.T)
	}{
		{"starts full with the burst of 10", func(t *testing.T) {
			assert.Equal(t, 10.0, retry.NewBudget(0.1, 0).Available())
			assert.Equal(t, 50.0, retry.NewBudget(0.1, 5).Available(), "10 s of minPerSecond")
		}},
		{"each call deposits ratio, each retry withdraws 1", func(t *testing.T) {
			b := retry.NewBudget(0.5, 0)
			p := &retry.Policy{MaxAttempts: 100, Budget: b, Jitter: -1, InitialInterval: time.Millisecond, Multiplier: 1}
			require.ErrorIs(t, p.Do(t.Context(), fail), retry.ErrBudgetExhausted)
			// Full at 10, so the call's 0.5 is capped away; 10 withdrawn.
			assert.InDelta(t, 0, b.Available(), 1e-9)
			require.NoError(t, p.Do(t.Context(), ok))
			assert.InDelta(t, 0.5, b.Available(), 1e-9)
			attempts := 0
			_ = p.Do(t.Context(), func(context.Context) error { attempts++; return errBoom })
			assert.Equal(t, 2, attempts, "0.5 + 0.5 tokens: one retry")
			assert.InDelta(t, 0, b.Available(), 1e-9)
		}},
		{"deposits are capped", func(t *testing.T) {
			b := retry.NewBudget(1, 0)
			p := &retry.Policy{Budget: b}
			for range 100 {
				require.NoError(t, p.Do(t.Context(), ok))
			}
			assert.Equal(t, 10.0, b.Available())
		}},
		{"refills minPerSecond per second", func(t *testing.T) {
			b := retry.NewBudget(0, 2)
			p := &retry.Policy{MaxAttempts: 1000, Budget: b, Jitter: -1, InitialInterval: time.Millisecond, Multiplier: 1}
			require.ErrorIs(t, p.Do(t.Context(), fail), retry.ErrBudgetExhausted)
			assert.Less(t, b.Available(), 1.0)
			before := b.Available()
			time.Sleep(time.Second)
			assert.InDelta(t, before+2, b.Available(), 1e-9)
			time.Sleep(time.Hour)
			assert.Equal(t, 20.0, b.Available(), "capped at 10 s of refill")
		}},
		{"zero value is NewBudget(0.1, 10)", func(t *testing.T) {
			var b retry.Budget
			assert.Equal(t, 100.0, b.Available())
			p := &retry.Policy{MaxAttempts: 1000, Budget: &b, Jitter: -1, InitialInterval: time.Millisecond, Multiplier: 1}
			attempts := 0
			err := p.Do(t.Context(), func(context.Context) error { attempts++; return errBoom })
			require.ErrorIs(t, err, retry.ErrBudgetExhausted)
			// 100 tokens, plus 10/s refilled during the ~0.1 s of 1ms waits.
			assert.GreaterOrEqual(t, attempts, 101)
			assert.LessOrEqual(t, attempts, 103)
			before := b.Available()
			time.Sleep(time.Second)
			assert.InDelta(t, before+10, b.Available(), 1e-9)
		}},
		{"invalid arguments are clamped to 0", func(t *testing.T) {
			b := retry.NewBudget(-1, math.NaN())
			assert.Equal(t, 10.0, b.Available())
			p := &retry.Policy{MaxAttempts: 100, Budget: b, Jitter: -1, InitialInterval: time.Millisecond, Multiplier: 1}
			attempts := 0
			_ = p.Do(t.Context(), func(context.Context) error { attempts++; return errBoom })
			assert.Equal(t, 11, attempts, "the burst of 10, nothing more")
			time.Sleep(time.Hour)
			assert.Equal(t, 0.0, b.Available(), "no deposits, no refill")
		}},
		{"a retry that never happened is refunded", func(t *testing.T) {
			b := retry.NewBudget(0, 0)
			ctx, cancel := context.WithCancel(t.Context())
			time.AfterFunc(10*time.Millisecond, cancel)
			err := (&retry.Policy{Budget: b}).Do(ctx, fail)
			require.ErrorIs(t, err, context.Canceled)
			assert.Equal(t, 10.0, b.Available())
		}},
		{"the first attempt is never refused", func(t *testing.T) {
			b := retry.NewBudget(0, 0)
			p := &retry.Policy{MaxAttempts: 100, Budget: b, Jitter: -1, InitialInterval: time.Millisecond, Multiplier: 1}
			_ = p.Do(t.Context(), fail)
			require.Less(t, b.Available(), 1.0)
			attempts := 0
			err := p.Do(t.Context(), func(context.Context) error { attempts++; return errBoom })
			assert.Equal(t, 1, attempts)
			var ex *retry.ExhaustedError
			require.ErrorAs(t, err, &ex)
			assert.Equal(t, 1, ex.Attempts)
			assert.Same(t, errBoom, ex.Last)
			assert.Equal(t, retry.ErrBudgetExhausted, ex.Cause)
			assert.Equal(t, "retry: stopped after 1 attempt: retry budget exhausted: last error: boom", err.Error())
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { synctest.Test(t, tc.run) })
	}
}

// TestNilBudgetAvailable: a nil *Budget is no budget; reading it does not panic.
func TestNilBudgetAvailable(t *testing.T) {
	var b *retry.Budget
	if got := b.Available(); !math.IsInf(got, 1) {
		t.Fatalf("nil Budget Available = %v, want +Inf", got)
	}
}
