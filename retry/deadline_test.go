package retry_test

import (
	"context"
	"errors"
	"net"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/retry"
)

// TestDeadlines covers rule 2: the context is checked before every attempt,
// AttemptTimeout bounds each attempt, and a wait that would cross the
// deadline is not taken. Times are exact on synctest's fake clock.
func TestDeadlines(t *testing.T) {
	errCustom := errors.New("shutting down")
	cases := []struct {
		name string
		// run calls Do and returns the attempts made, how long Do took and
		// its error.
		run   func(t *testing.T) (calls int, took time.Duration, err error)
		calls int
		took  time.Duration
		check func(t *testing.T, err error)
	}{
		{
			name: "context done before the first attempt: op never called",
			run: func(t *testing.T) (int, time.Duration, error) {
				ctx, cancel := context.WithCancelCause(t.Context())
				cancel(errCustom)
				return timed(ctx, &retry.Policy{}, func(context.Context, int) error { return nil })
			},
			calls: 0, took: 0,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, context.Canceled)
				assert.ErrorIs(t, err, errCustom, "the cause is kept")
				assert.NotErrorIs(t, err, retry.ErrExhausted, "no attempt was made")
			},
		},
		{
			name: "cancel during a wait returns at once",
			run: func(t *testing.T) (int, time.Duration, error) {
				ctx, cancel := context.WithCancel(t.Context())
				time.AfterFunc(50*time.Millisecond, cancel)
				return timed(ctx, &retry.Policy{Jitter: -1}, func(context.Context, int) error { return &phaseError{"connect", true} })
			},
			calls: 1, took: 50 * time.Millisecond,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, context.Canceled)
				assert.ErrorIs(t, err, retry.ErrExhausted)
				var pe *phaseError
				assert.ErrorAs(t, err, &pe, "the last attempt's error is kept")
			},
		},
		{
			name: "a wait that would cross the deadline is not taken",
			run: func(t *testing.T) (int, time.Duration, error) {
				ctx, cancel := context.WithTimeout(t.Context(), 250*time.Millisecond)
				defer cancel()
				// Attempts at 0 and 100ms; the next wait (200ms) would end at
				// 300ms, past the deadline: return at 100ms.
				return timed(ctx, &retry.Policy{Jitter: -1, MaxAttempts: 5}, func(context.Context, int) error { return &phaseError{"tls", true} })
			},
			calls: 2, took: 100 * time.Millisecond,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.ErrorIs(t, err, retry.ErrExhausted)
				var pe *phaseError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, "tls", pe.phase)
				var ex *retry.ExhaustedError
				require.ErrorAs(t, err, &ex)
				assert.Equal(t, 2, ex.Attempts)
				assert.ErrorIs(t, ex.Cause, context.DeadlineExceeded)
				var ne net.Error
				require.ErrorAs(t, ex.Cause, &ne)
				assert.True(t, ne.Timeout())
				assert.Contains(t, err.Error(), "next wait 200ms would cross the context deadline (150ms left)")
			},
		},
		{
			name: "the caller's deadline during an attempt stops the retries",
			run: func(t *testing.T) (int, time.Duration, error) {
				ctx, cancel := context.WithTimeout(t.Context(), time.Second)
				defer cancel()
				return timed(ctx, &retry.Policy{Retryable: func(error) bool { return true }}, func(ctx context.Context, _ int) error {
					<-ctx.Done()
					return ctx.Err()
				})
			},
			calls: 1, took: time.Second,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.ErrorIs(t, err, retry.ErrExhausted)
			},
		},
		{
			name: "AttemptTimeout bounds each attempt and a cut attempt is retried",
			run: func(t *testing.T) (int, time.Duration, error) {
				p := &retry.Policy{Jitter: -1, AttemptTimeout: time.Second}
				return timed(t.Context(), p, func(ctx context.Context, n int) error {
					if n == 3 {
						return nil
					}
					<-ctx.Done() // a hung attempt
					var te interface{ Timeout() bool }
					if !errors.As(context.Cause(ctx), &te) || !te.Timeout() {
						t.Errorf("attempt %d: cause %v is not a timeout", n, context.Cause(ctx))
					}
					assert.ErrorContains(t, context.Cause(ctx), "Policy.AttemptTimeout (1s)")
					return ctx.Err()
				})
			},
			// 1s hung + 100ms wait + 1s hung + 200ms wait, then success.
			calls: 3, took: 2300 * time.Millisecond,
			check: func(t *testing.T, err error) { assert.NoError(t, err) },
		},
		{
			name: "attempts all cut by AttemptTimeout say so",
			run: func(t *testing.T) (int, time.Duration, error) {
				p := &retry.Policy{Jitter: -1, MaxAttempts: 2, AttemptTimeout: 500 * time.Millisecond}
				return timed(t.Context(), p, func(ctx context.Context, n int) error {
					<-ctx.Done()
					return ctx.Err()
				})
			},
			calls: 2, took: 1100 * time.Millisecond,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, retry.ErrExhausted)
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.ErrorContains(t, err, "retry: 2 attempts failed: retry: attempt exceeded Policy.AttemptTimeout (500ms): context deadline exceeded")
			},
		},
		{
			name: "AttemptTimeout never extends the caller's deadline",
			run: func(t *testing.T) (int, time.Duration, error) {
				ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
				defer cancel()
				p := &retry.Policy{AttemptTimeout: time.Second}
				return timed(ctx, p, func(ctx context.Context, _ int) error {
					<-ctx.Done()
					return ctx.Err()
				})
			},
			calls: 1, took: 300 * time.Millisecond,
			check: func(t *testing.T, err error) {
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.NotContains(t, err.Error(), "AttemptTimeout", "the caller's deadline, not the attempt's")
			},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				calls, took, err := tc.run(t)
				assert.Equal(t, tc.calls, calls, "attempts")
				assert.Equal(t, tc.took, took, "time in Do")
				tc.check(t, err)
			})
		})
	}
}

// TestServerAdvisedWaits covers rule 4: After(d, err).
func TestServerAdvisedWaits(t *testing.T) {
	cases := []struct {
		name     string
		policy   *retry.Policy
		timeout  time.Duration // of the caller's context; 0: none
		after    time.Duration
		calls    int
		took     time.Duration
		wantErrs []error // in the chain; nil list: success
	}{
		{"retries no sooner than the advised wait", &retry.Policy{Jitter: -1}, 0, 2 * time.Second, 2, 2 * time.Second, nil},
		{"a shorter advice does not shorten the backoff", &retry.Policy{Jitter: -1}, 0, 10 * time.Millisecond, 2, 100 * time.Millisecond, nil},
		{"beyond MaxRetryAfter ends at once", &retry.Policy{Jitter: -1}, 0, time.Minute, 1, 0,
			[]error{retry.ErrRetryAfterTooLong, retry.ErrExhausted, errBoom}},
		{"custom MaxRetryAfter", &retry.Policy{Jitter: -1, MaxRetryAfter: time.Second}, 0, 2 * time.Second, 1, 0,
			[]error{retry.ErrRetryAfterTooLong}},
		{"negative MaxRetryAfter means no cap", &retry.Policy{Jitter: -1, MaxRetryAfter: -1}, 0, time.Hour, 2, time.Hour, nil},
		{"beyond the deadline ends at once", &retry.Policy{Jitter: -1}, 5 * time.Second, 10 * time.Second, 1, 0,
			[]error{context.DeadlineExceeded, retry.ErrExhausted, errBoom}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				ctx := t.Context()
				if tc.timeout > 0 {
					var cancel context.CancelFunc
					ctx, cancel = context.WithTimeout(ctx, tc.timeout)
					defer cancel()
				}
				calls, took, err := timed(ctx, tc.policy, func(_ context.Context, n int) error {
					if n == 1 {
						return retry.After(tc.after, errBoom)
					}
					return nil
				})
				assert.Equal(t, tc.calls, calls, "attempts")
				assert.Equal(t, tc.took, took, "time in Do")
				if tc.wantErrs == nil {
					assert.NoError(t, err)
				}
				for _, want := range tc.wantErrs {
					assert.ErrorIs(t, err, want)
				}
			})
		})
	}
	t.Run("RetryAfter reads the advice", func(t *testing.T) {
		d, ok := retry.RetryAfter(errors.Join(errBoom, retry.After(3*time.Second, errBoom)))
		assert.True(t, ok)
		assert.Equal(t, 3*time.Second, d)
		_, ok = retry.RetryAfter(errBoom)
		assert.False(t, ok)
		assert.NoError(t, retry.After(time.Second, nil))
		assert.Equal(t, "boom", retry.After(time.Second, errBoom).Error())
		d, _ = retry.RetryAfter(retry.After(-time.Second, errBoom))
		assert.Zero(t, d, "negative advice counts as 0")
	})
}

// timed runs p.Do on ctx with op (which also gets the attempt number) and
// returns the number of attempts, the time Do took and its error.
func timed(ctx context.Context, p *retry.Policy, op func(context.Context, int) error) (int, time.Duration, error) {
	calls := 0
	start := time.Now()
	err := p.Do(ctx, func(ctx context.Context) error {
		calls++
		return op(ctx, retry.Attempt(ctx))
	})
	return calls, time.Since(start), err
}
