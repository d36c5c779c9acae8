package retry_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/internal/retryx"
	"github.com/lifeline-go/lifeline/retry"
)

// TestClassification runs every classification rule through Do and counts
// the attempts each one leads to.
func TestClassification(t *testing.T) {
	certErr := &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}
	refused := &net.OpError{Op: "dial", Net: "tcp", Err: syscall.ECONNREFUSED}
	innerRefusal := &retry.ExhaustedError{Attempts: 1, Last: errBoom, Cause: retry.ErrBudgetExhausted}
	innerExhausted := &retry.ExhaustedError{Attempts: 3, Last: errBoom}
	always := func(error) bool { return true }
	never := func(error) bool { return false }

	type check func(t *testing.T, err error)
	exhausted := func(attempts int, last error) check {
		return func(t *testing.T, err error) {
			require.ErrorIs(t, err, retry.ErrExhausted)
			var ex *retry.ExhaustedError
			require.ErrorAs(t, err, &ex)
			assert.Equal(t, attempts, ex.Attempts)
			assert.Nil(t, ex.Cause, "MaxAttempts ran out: no other cause")
			assert.ErrorIs(t, err, last)
		}
	}
	returnedAsIs := func(want error) check {
		return func(t *testing.T, err error) {
			assert.NotErrorIs(t, err, retry.ErrExhausted)
			assert.ErrorIs(t, err, want)
		}
	}
	cases := []struct {
		name      string
		policy    *retry.Policy
		errs      []error
		wantCalls int64
		check     check
	}{
		{"first attempt succeeds", nil, []error{nil}, 1, func(t *testing.T, err error) { assert.NoError(t, err) }},
		{"fails twice then succeeds", nil, []error{errBoom, errBoom, nil}, 3, func(t *testing.T, err error) { assert.NoError(t, err) }},
		{"nil policy makes 3 attempts", nil, []error{errBoom}, 3, exhausted(3, errBoom)},
		{"zero policy makes 3 attempts", &retry.Policy{}, []error{errBoom}, 3, exhausted(3, errBoom)},
		{"MaxAttempts 5", &retry.Policy{MaxAttempts: 5}, []error{errBoom}, 5, exhausted(5, errBoom)},
		{"MaxAttempts 1 means no retry", &retry.Policy{MaxAttempts: 1}, []error{errBoom}, 1, exhausted(1, errBoom)},
		{"Permanent stops at once and is unwrapped", nil, []error{retry.Permanent(errBoom)}, 1, func(t *testing.T, err error) {
			assert.Same(t, errBoom, err)
		}},
		{"wrapped Permanent stops at once", nil, []error{fmt.Errorf("get: %w", retry.Permanent(errBoom))}, 1, func(t *testing.T, err error) {
			assert.ErrorIs(t, err, errBoom)
			assert.Equal(t, "get: boom", err.Error(), "Permanent does not change the message")
		}},
		{"Retryable() false stops", nil, []error{&phaseError{"tls", false}}, 1, func(t *testing.T, err error) {
			var pe *phaseError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "tls", pe.phase)
			assert.NotErrorIs(t, err, retry.ErrExhausted)
		}},
		{"Retryable() true retries and stays findable", nil, []error{fmt.Errorf("wrap: %w", &phaseError{"connect", true})}, 3, func(t *testing.T, err error) {
			var pe *phaseError
			require.ErrorAs(t, err, &pe)
			assert.Equal(t, "connect", pe.phase)
			assert.ErrorIs(t, err, retry.ErrExhausted)
		}},
		{"Retryable() wins over a DNS not-found inside", nil, []error{errors.Join(&phaseError{"dns", true}, &net.DNSError{IsNotFound: true})}, 3, nil},
		{"context.Canceled from the operation is not retried", nil, []error{fmt.Errorf("read: %w", context.Canceled)}, 1, returnedAsIs(context.Canceled)},
		{"TLS certificate verification error is not retried", nil, []error{fmt.Errorf("get: %w", certErr)}, 1, returnedAsIs(certErr)},
		{"x509 hostname error is not retried", nil, []error{x509.HostnameError{Host: "example.com"}}, 1, nil},
		{"x509 invalid certificate is not retried", nil, []error{x509.CertificateInvalidError{Reason: x509.Expired}}, 1, nil},
		{"DNS no such host is not retried", nil, []error{&net.DNSError{Err: "no such host", Name: "nope.invalid", IsNotFound: true}}, 1, nil},
		{"DNS timeout is retried", nil, []error{&net.DNSError{Err: "i/o timeout", Name: "a.example", IsTimeout: true}}, 3, nil},
		{"connection refused is retried", nil, []error{refused}, 3, exhausted(3, syscall.ECONNREFUSED)},
		{"deadline exceeded from the operation is retried", nil, []error{context.DeadlineExceeded}, 3, nil},
		{"After is retried even around a certificate error", nil, []error{retry.After(0, certErr)}, 3, nil},
		{"an inner Do's budget refusal is not retried", nil, []error{innerRefusal}, 1, func(t *testing.T, err error) {
			assert.Same(t, innerRefusal, err, "returned as the operation returned it")
		}},
		{"an inner Do's exhaustion is final", nil, []error{innerExhausted}, 1, func(t *testing.T, err error) {
			assert.Same(t, innerExhausted, err, "returned as the operation returned it")
		}},
		{"a wrapped inner exhaustion is final", nil, []error{fmt.Errorf("acquire: %w", innerExhausted)}, 1, nil},
		{"an inner exhaustion deep in a joined chain is final", nil, []error{fmt.Errorf("a: %w", errors.Join(errBoom, fmt.Errorf("b: %w", innerExhausted)))}, 1, nil},
		{"an inner exhaustion over a retryable dial error is final", nil, []error{&retry.ExhaustedError{Attempts: 3, Last: &phaseError{"connect", true}}}, 1, nil},
		{"an inner Do stopped by its deadline after one attempt is final", nil, []error{&retry.ExhaustedError{Attempts: 1, Last: errBoom, Cause: context.DeadlineExceeded}}, 1, nil},
		{"an inner Do with MaxAttempts 1 leaves retrying to its caller", nil, []error{&retry.ExhaustedError{Attempts: 1, Last: errBoom}}, 3, exhausted(3, errBoom)},
		{"an inner exhaustion is final even for a custom Retryable", &retry.Policy{Retryable: always}, []error{innerExhausted}, 1, func(t *testing.T, err error) {
			assert.Same(t, innerExhausted, err)
		}},
		{"an inner budget refusal is final even for a custom Retryable", &retry.Policy{Retryable: always}, []error{fmt.Errorf("get: %w", retry.ErrBudgetExhausted)}, 1, nil},
		{"Retryable() false deep in a joined chain stops", nil, []error{fmt.Errorf("a: %w", errors.Join(errBoom, fmt.Errorf("b: %w", &phaseError{"pool", false})))}, 1, func(t *testing.T, err error) {
			var pe *phaseError
			require.ErrorAs(t, err, &pe)
			assert.NotErrorIs(t, err, retry.ErrExhausted)
		}},
		{"the outermost Retryable() decides", nil, []error{fmt.Errorf("a: %w", errors.Join(&phaseError{"connect", true}, &phaseError{"tls", false}))}, 3, nil},
		{"a closed network conn is not retried", nil, []error{&net.OpError{Op: "read", Net: "tcp", Err: net.ErrClosed}}, 1, returnedAsIs(net.ErrClosed)},
		{"a closed file is not retried", nil, []error{&os.PathError{Op: "read", Path: "/dev/x", Err: os.ErrClosed}}, 1, returnedAsIs(os.ErrClosed)},
		{"a closed http.Server is not retried", nil, []error{fmt.Errorf("serve: %w", http.ErrServerClosed)}, 1, returnedAsIs(http.ErrServerClosed)},
		{"Retryable() true wins over a closed conn inside", nil, []error{errors.Join(&phaseError{"connect", true}, net.ErrClosed)}, 3, nil},
		{"custom Retryable may retry a closed conn", &retry.Policy{Retryable: always}, []error{net.ErrClosed}, 3, nil},
		{"custom Retryable retries what the default would not", &retry.Policy{Retryable: always}, []error{certErr}, 3, exhausted(3, certErr)},
		{"custom Retryable stops what the default would retry", &retry.Policy{Retryable: never}, []error{refused}, 1, returnedAsIs(refused)},
		{"custom Retryable cannot override Permanent", &retry.Policy{Retryable: always}, []error{retry.Permanent(errBoom)}, 1, returnedAsIs(errBoom)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				op, calls := script(tc.errs...)
				err := tc.policy.Do(t.Context(), op)
				assert.Equal(t, tc.wantCalls, calls.Load(), "attempts")
				if tc.check != nil {
					tc.check(t, err)
				}
			})
		})
	}
}

// TestCallerCancelNotRetried: the caller's cancel stops retries even with a
// custom Retryable that would retry everything, and is reported as such.
func TestCallerCancelNotRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		ctx, cancel := context.WithCancel(t.Context())
		calls := 0
		p := &retry.Policy{Retryable: func(error) bool { return true }}
		err := p.Do(ctx, func(ctx context.Context) error {
			calls++
			cancel()
			return ctx.Err()
		})
		assert.Equal(t, 1, calls)
		assert.ErrorIs(t, err, context.Canceled)
		var ex *retry.ExhaustedError
		require.ErrorAs(t, err, &ex)
		assert.Equal(t, 1, ex.Attempts)
		assert.ErrorIs(t, ex.Cause, context.Canceled)
	})
}

// TestBackoffWaits checks the exact waits (no jitter) between attempts on
// the fake clock, including that backoff/v4's hidden 15-minute
// MaxElapsedTime does not apply.
func TestBackoffWaits(t *testing.T) {
	cases := []struct {
		name   string
		policy *retry.Policy
		starts []time.Duration // attempt start times from the call's start
	}{
		{"defaults without jitter", &retry.Policy{Jitter: -1, MaxAttempts: 4},
			[]time.Duration{0, 100 * time.Millisecond, 300 * time.Millisecond, 700 * time.Millisecond}},
		{"multiplier 3 capped by MaxInterval", &retry.Policy{Jitter: -1, MaxAttempts: 5, InitialInterval: 10 * time.Millisecond, Multiplier: 3, MaxInterval: 50 * time.Millisecond},
			[]time.Duration{0, 10 * time.Millisecond, 40 * time.Millisecond, 90 * time.Millisecond, 140 * time.Millisecond}},
		{"multiplier 1 is constant", &retry.Policy{Jitter: -1, MaxAttempts: 3, Multiplier: 1},
			[]time.Duration{0, 100 * time.Millisecond, 200 * time.Millisecond}},
		{"no hidden 15-minute limit", &retry.Policy{Jitter: -1, MaxAttempts: 12, InitialInterval: time.Minute, MaxInterval: 2 * time.Minute},
			func() []time.Duration {
				s := []time.Duration{0, time.Minute}
				for len(s) < 12 {
					s = append(s, s[len(s)-1]+2*time.Minute)
				}
				return s // the last attempt starts at 21 minutes
			}()},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				start := time.Now()
				var got []time.Duration
				err := tc.policy.Do(t.Context(), func(context.Context) error {
					got = append(got, time.Since(start))
					return errBoom
				})
				require.ErrorIs(t, err, retry.ErrExhausted)
				assert.Equal(t, tc.starts, got)
			})
		})
	}
}

// TestJitter: with the default Jitter (0.5) each wait lies in
// [0.5w, 1.5w] and the waits differ between calls.
func TestJitter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		seen := map[time.Duration]bool{}
		for range 100 {
			var starts []time.Time
			_ = (*retry.Policy)(nil).Do(t.Context(), func(context.Context) error {
				starts = append(starts, time.Now())
				return errBoom
			})
			require.Len(t, starts, 3)
			w1, w2 := starts[1].Sub(starts[0]), starts[2].Sub(starts[1])
			assert.GreaterOrEqual(t, w1, 50*time.Millisecond)
			assert.LessOrEqual(t, w1, 150*time.Millisecond)
			assert.GreaterOrEqual(t, w2, 100*time.Millisecond)
			assert.LessOrEqual(t, w2, 300*time.Millisecond)
			seen[w1] = true
		}
		assert.Greater(t, len(seen), 50, "jitter should spread the first wait")
	})
}

// TestFreshBackoffPerCall: each call starts from InitialInterval, also when
// many goroutines share one Policy.
func TestFreshBackoffPerCall(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &retry.Policy{Jitter: -1, MaxAttempts: 2}
		done := make(chan time.Duration)
		for range 8 {
			go func() {
				var first time.Time
				var wait time.Duration
				_ = p.Do(t.Context(), func(ctx context.Context) error {
					if retry.Attempt(ctx) == 1 {
						first = time.Now()
					} else {
						wait = time.Since(first)
					}
					return errBoom
				})
				done <- wait
			}()
		}
		for range 8 {
			assert.Equal(t, 100*time.Millisecond, <-done)
		}
	})
}

func TestAttempt(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		assert.Equal(t, 0, retry.Attempt(t.Context()), "outside Do")
		var got, derived, inner []int
		err := (&retry.Policy{MaxAttempts: 4}).Do(t.Context(), func(ctx context.Context) error {
			got = append(got, retry.Attempt(ctx))
			dctx, cancel := context.WithCancel(context.WithValue(ctx, otherKey{}, 1))
			defer cancel()
			derived = append(derived, retry.Attempt(dctx))
			if retry.Attempt(ctx) == 2 {
				_ = (&retry.Policy{MaxAttempts: 2}).Do(ctx, func(ctx context.Context) error {
					inner = append(inner, retry.Attempt(ctx))
					return errBoom
				})
			}
			if retry.Attempt(ctx) < 3 {
				return errBoom
			}
			return nil
		})
		require.NoError(t, err)
		assert.Equal(t, []int{1, 2, 3}, got)
		assert.Equal(t, []int{1, 2, 3}, derived, "contexts derived from an attempt's context")
		assert.Equal(t, []int{1, 2}, inner, "the innermost Do's attempt")
	})
}

// otherKey is a context key of the caller's, not retry's.
type otherKey struct{}

func TestGenericDo(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		v, err := retry.Do(t.Context(), nil, func(ctx context.Context) (string, error) {
			if retry.Attempt(ctx) < 2 {
				return "partial", errBoom
			}
			return "ok", nil
		})
		require.NoError(t, err)
		assert.Equal(t, "ok", v)

		n, err := retry.Do(t.Context(), &retry.Policy{MaxAttempts: 2}, func(context.Context) (int, error) {
			return 42, errBoom
		})
		assert.ErrorIs(t, err, retry.ErrExhausted)
		assert.Zero(t, n, "values returned with an error are dropped")
	})
}

// TestInvalidPolicy: bad values give an error naming the field, and the
// operation is never called.
func TestInvalidPolicy(t *testing.T) {
	cases := []struct {
		name   string
		policy retry.Policy
		field  string
	}{
		{"negative MaxAttempts", retry.Policy{MaxAttempts: -1}, "Policy.MaxAttempts"},
		{"negative InitialInterval", retry.Policy{InitialInterval: -time.Second}, "Policy.InitialInterval"},
		{"negative MaxInterval", retry.Policy{MaxInterval: -time.Second}, "Policy.MaxInterval"},
		{"InitialInterval above MaxInterval", retry.Policy{InitialInterval: 10 * time.Second}, "Policy.InitialInterval (10s) exceeds Policy.MaxInterval (5s)"},
		{"Multiplier below 1", retry.Policy{Multiplier: 0.5}, "Policy.Multiplier"},
		{"negative Multiplier", retry.Policy{Multiplier: -2}, "Policy.Multiplier"},
		{"NaN Multiplier", retry.Policy{Multiplier: nan()}, "Policy.Multiplier"},
		{"Jitter above 1", retry.Policy{Jitter: 1.5}, "Policy.Jitter"},
		{"NaN Jitter", retry.Policy{Jitter: nan()}, "Policy.Jitter"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op, calls := script(nil)
			err := tc.policy.Do(t.Context(), op)
			require.Error(t, err)
			assert.Contains(t, err.Error(), tc.field)
			assert.Contains(t, err.Error(), "retry: ")
			assert.Zero(t, calls.Load())
			_, err = retry.Do(t.Context(), &tc.policy, func(context.Context) (int, error) { return 1, nil })
			assert.ErrorContains(t, err, tc.field)
		})
	}
	t.Run("documented opt-outs are valid", func(t *testing.T) {
		p := retry.Policy{Jitter: -1, AttemptTimeout: -1, MaxRetryAfter: -1, Multiplier: 1, MaxInterval: time.Millisecond, InitialInterval: time.Millisecond}
		op, calls := script(nil)
		assert.NoError(t, p.Do(t.Context(), op))
		assert.EqualValues(t, 1, calls.Load())
	})
	t.Run("nil context and nil operation", func(t *testing.T) {
		var nilCtx context.Context // the bad input under test
		assert.ErrorContains(t, (*retry.Policy)(nil).Do(nilCtx, func(context.Context) error { return nil }), "nil Context")
		_, err := retry.Do(nilCtx, nil, func(context.Context) (int, error) { return 1, nil })
		assert.ErrorContains(t, err, "nil Context")
		assert.ErrorContains(t, (*retry.Policy)(nil).Do(t.Context(), nil), "nil operation")
		_, err = retry.Do[int](t.Context(), nil, nil)
		assert.ErrorContains(t, err, "nil operation")
	})
}

func nan() float64 { var z float64; return z / z }

// TestPrepared: the loop of a policy checked once (internal/retryx, for
// the HTTP transport) retries as Do does, and refuses what Do refuses.
func TestPrepared(t *testing.T) {
	_, err := retryx.Prepare(&retry.Policy{Multiplier: 0.5})
	assert.ErrorContains(t, err, "Policy.Multiplier")

	pp, err := retryx.Prepare(&retry.Policy{MaxAttempts: 3, InitialInterval: time.Millisecond})
	require.NoError(t, err)
	var calls int
	op := func(_ context.Context, arg any) error {
		calls++
		if calls < arg.(int) {
			return errors.New("transient")
		}
		return nil
	}
	require.NoError(t, retryx.DoPrepared(pp, t.Context(), op, 3))
	assert.Equal(t, 3, calls)
	calls = 0
	var ee *retry.ExhaustedError
	require.ErrorAs(t, retryx.DoPrepared(pp, t.Context(), op, 9), &ee)
	assert.Equal(t, 3, ee.Attempts)

	var nilCtx context.Context // the bad input under test
	assert.ErrorContains(t, retryx.DoPrepared(pp, nilCtx, op, 1), "nil Context")
	assert.ErrorContains(t, retryx.DoPrepared(pp, t.Context(), nil, 1), "nil operation")
	assert.ErrorContains(t, retryx.DoPrepared("not prepared", t.Context(), op, 1), "Prepare")
	nilPolicy, err := retryx.Prepare(nil)
	require.NoError(t, err, "a nil policy is the default one")
	calls = 0
	require.NoError(t, retryx.DoPrepared(nilPolicy, t.Context(), op, 1))
}

func TestExhaustedError(t *testing.T) {
	last := &phaseError{"connect", true}
	e := &retry.ExhaustedError{Attempts: 3, Last: last}
	assert.Equal(t, "retry: 3 attempts failed: dial tcp 192.0.2.1:443: connect: failed", e.Error())
	assert.ErrorIs(t, e, retry.ErrExhausted)
	assert.NotErrorIs(t, e, retry.ErrBudgetExhausted)
	var pe *phaseError
	assert.ErrorAs(t, e, &pe)

	e = &retry.ExhaustedError{Attempts: 1, Last: last, Cause: context.DeadlineExceeded}
	assert.Equal(t, "retry: stopped after 1 attempt: context deadline exceeded: last error: dial tcp 192.0.2.1:443: connect: failed", e.Error())
	assert.ErrorIs(t, e, context.DeadlineExceeded)
	assert.ErrorAs(t, e, &pe)
	assert.Equal(t, []error{last, context.DeadlineExceeded}, e.Unwrap())
}
