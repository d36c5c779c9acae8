package retry_test

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/retry"
)

// TestAttemptTimeoutKeepsOwnVerdict (issue 20, risk): an operation whose
// attempt context was cut by AttemptTimeout, and which then returns an
// error of its own that is not retryable (not a timeout: a certificate
// error, an error that says Retryable false), is not retried: the cut
// takes credit only for a timeout. A timeout after the cut is retried.
func TestAttemptTimeoutKeepsOwnVerdict(t *testing.T) {
	cases := []struct {
		name      string
		err       func(ctx context.Context) error
		wantCalls int
	}{
		{"Retryable false", func(context.Context) error { return &phaseError{"tls", false} }, 1},
		{"certificate", func(context.Context) error {
			return fmt.Errorf("tls: %w", x509.UnknownAuthorityError{})
		}, 1},
		{"context's error", func(ctx context.Context) error { return ctx.Err() }, 3},
		{"wrapped timeout", func(ctx context.Context) error { return fmt.Errorf("read: %w", ctx.Err()) }, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := &retry.Policy{AttemptTimeout: 100 * time.Millisecond}
				calls, _, err := timed(t.Context(), p, func(ctx context.Context, _ int) error {
					<-ctx.Done()
					return tc.err(ctx)
				})
				require.Error(t, err)
				assert.Equal(t, tc.wantCalls, calls)
				if tc.wantCalls == 1 {
					assert.Equal(t, tc.err(t.Context()).Error(), err.Error(), "returned as the operation returned it")
				} else {
					assert.ErrorContains(t, err, "Policy.AttemptTimeout")
				}
			})
		})
	}
}

// TestPanickingRetryable (issue 20, risk): a Retryable that panics is the
// caller's bug; the panic reaches Do's caller unchanged, and Do leaves
// nothing behind: the attempt's span has ended, no retry was paid from
// the budget, and (goleak, TestMain) no goroutine or timer runs on.
func TestPanickingRetryable(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	budget := retry.NewBudget(0.1, 1)
	before := budget.Available()
	p := &retry.Policy{Budget: budget, TracerProvider: tp, AttemptTimeout: time.Hour,
		Retryable: func(error) bool { panic("bug in Retryable") }}
	func() {
		defer func() { assert.Equal(t, "bug in Retryable", recover()) }()
		_ = p.Do(t.Context(), func(context.Context) error { return errors.New("fail") })
		t.Error("Do returned")
	}()
	assert.Len(t, rec.Ended(), 1, "the attempt's span ended")
	assert.False(t, rec.Ended()[0].EndTime().IsZero())
	assert.GreaterOrEqual(t, budget.Available(), before, "no retry was paid for")
}

// TestExhaustedSaysCauseOnce (issue 20, break 10): when the caller's
// deadline ends the retries and the last error already says so (a dial
// cut by that deadline: "tls: context deadline exceeded"), the text says
// it once; when the cause is news to the last error, it says both.
func TestExhaustedSaysCauseOnce(t *testing.T) {
	dialErr := fmt.Errorf("dial tcp example.com:443 (127.0.0.1:443): tls: %w", context.DeadlineExceeded)
	cause := errors.New("operation deadline exceeded")
	cases := []struct {
		name string
		err  *retry.ExhaustedError
		want string
	}{
		{"deadline in the last error",
			&retry.ExhaustedError{Attempts: 1, Last: dialErr, Cause: context.DeadlineExceeded},
			"retry: stopped after 1 attempt: dial tcp example.com:443 (127.0.0.1:443): tls: context deadline exceeded"},
		{"the deadline's cause in the last error",
			&retry.ExhaustedError{Attempts: 2, Last: fmt.Errorf("tls: %w", cause),
				Cause: fmt.Errorf("%w: %w", context.DeadlineExceeded, cause)},
			"retry: stopped after 2 attempts: tls: operation deadline exceeded"},
		{"cause not in the last error",
			&retry.ExhaustedError{Attempts: 1, Last: errors.New("connection refused"), Cause: context.DeadlineExceeded},
			"retry: stopped after 1 attempt: context deadline exceeded: last error: connection refused"},
		{"a timeout that only matches the deadline",
			&retry.ExhaustedError{Attempts: 1, Last: &timeoutErr{}, Cause: context.DeadlineExceeded},
			"retry: stopped after 1 attempt: context deadline exceeded: last error: first_byte: no headers"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			assert.Equal(t, tc.want, tc.err.Error())
			assert.Equal(t, 1, strings.Count(tc.err.Error(), "deadline exceeded"))
			assert.ErrorIs(t, tc.err, context.DeadlineExceeded)
		})
	}
}

// timeoutErr matches context.DeadlineExceeded through its Is method, as
// the Transport's TimeoutError does: a limit of its own, not the caller's.
type timeoutErr struct{}

func (*timeoutErr) Error() string        { return "first_byte: no headers" }
func (*timeoutErr) Is(target error) bool { return target == context.DeadlineExceeded }
