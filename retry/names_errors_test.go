package retry_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
)

// saysOnce fails when text repeats a phrase the error texts used to say
// twice.
func saysOnce(t *testing.T, text string) {
	t.Helper()
	for _, phrase := range []string{"retry: ", "context deadline exceeded", "context canceled", "last error"} {
		assert.LessOrEqual(t, strings.Count(text, phrase), 1, "%q says %q more than once", text, phrase)
	}
}

// closedAddr is a loopback address nothing listens on, reserved for the
// test (a port freed by closing a listener may be taken by another test's
// listener meanwhile).
func closedAddr(t *testing.T) string { return faultnet.RefusedAddr(t, "tcp") }

// TestErrorTextsSayEachThingOnce builds each way Do stops and checks the
// text (each thing said once) and the chain (errors.Is and errors.As still
// find every part).
func TestErrorTextsSayEachThingOnce(t *testing.T) {
	boom := errors.New("boom")
	spent := errors.New("request budget spent")
	addr := closedAddr(t)
	fail := func(context.Context) error { return boom }
	for _, tc := range []struct {
		name  string
		run   func(t *testing.T) error
		text  string // a regexp, anchored
		is    []error
		asDia bool
	}{
		{
			name: "deadline during backoff (the next wait would cross it)",
			run: func(t *testing.T) error {
				ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
				defer cancel()
				return (&retry.Policy{InitialInterval: time.Hour, MaxInterval: time.Hour, Jitter: -1, MaxRetryAfter: -1}).Do(ctx, fail)
			},
			text: `retry: stopped after 1 attempt: next wait 1h0m0s would cross the context deadline \([0-9.]+m?s left\): last error: boom`,
			is:   []error{retry.ErrExhausted, context.DeadlineExceeded, boom},
		},
		{
			name: "canceled during backoff",
			run: func(t *testing.T) error {
				ctx, cancel := context.WithCancel(t.Context())
				time.AfterFunc(20*time.Millisecond, cancel)
				return (&retry.Policy{InitialInterval: time.Hour, MaxInterval: time.Hour, Jitter: -1}).Do(ctx, fail)
			},
			text: `retry: stopped after 1 attempt: context canceled: last error: boom`,
			is:   []error{retry.ErrExhausted, context.Canceled, boom},
		},
		{
			name: "budget refusal",
			run: func(t *testing.T) error {
				b := retry.NewBudget(0, 0)
				for b.Withdraw() {
				}
				return (&retry.Policy{Budget: b}).Do(t.Context(), fail)
			},
			text: `retry: stopped after 1 attempt: retry budget exhausted: last error: boom`,
			is:   []error{retry.ErrExhausted, retry.ErrBudgetExhausted, boom},
		},
		{
			name: "budget refusal of a dial error",
			run: func(t *testing.T) error {
				b := retry.NewBudget(0, 0)
				for b.Withdraw() {
				}
				var d dial.Dialer
				return (&retry.Policy{Budget: b}).Do(t.Context(), func(ctx context.Context) error {
					_, err := d.DialContext(ctx, "tcp", addr)
					return err
				})
			},
			text:  `retry: stopped after 1 attempt: retry budget exhausted: last error: dial tcp ` + regexp.QuoteMeta(addr) + `: connect: connection refused`,
			is:    []error{retry.ErrExhausted, retry.ErrBudgetExhausted},
			asDia: true,
		},
		{
			name: "exhausted with a dial error",
			run: func(t *testing.T) error {
				var d dial.Dialer
				return (&retry.Policy{InitialInterval: time.Millisecond}).Do(t.Context(), func(ctx context.Context) error {
					_, err := d.DialContext(ctx, "tcp", addr)
					return err
				})
			},
			text:  `retry: 3 attempts failed: dial tcp ` + regexp.QuoteMeta(addr) + `: connect: connection refused`,
			is:    []error{retry.ErrExhausted},
			asDia: true,
		},
		{
			name: "an operation that returns its context's error",
			run: func(t *testing.T) error {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
				defer cancel()
				return (&retry.Policy{}).Do(ctx, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
			},
			text: `retry: stopped after 1 attempt: context deadline exceeded`,
			is:   []error{retry.ErrExhausted, context.DeadlineExceeded},
		},
		{
			name: "an operation that returns its context's error, the deadline with a cause",
			run: func(t *testing.T) error {
				ctx, cancel := context.WithTimeoutCause(t.Context(), 30*time.Millisecond, spent)
				defer cancel()
				return (&retry.Policy{}).Do(ctx, func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() })
			},
			text: `retry: stopped after 1 attempt: context deadline exceeded: request budget spent`,
			is:   []error{retry.ErrExhausted, context.DeadlineExceeded, spent},
		},
		{
			name: "a dial cut by a deadline with a cause",
			run: func(t *testing.T) error {
				ctx, cancel := context.WithTimeoutCause(t.Context(), 50*time.Millisecond, spent)
				defer cancel()
				d := dial.Dialer{DialFunc: func(ctx context.Context, _, _ string) (net.Conn, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				}}
				return (&retry.Policy{}).Do(ctx, func(ctx context.Context) error {
					_, err := d.DialContext(ctx, "tcp", addr)
					return err
				})
			},
			text:  `retry: stopped after 1 attempt: dial tcp ` + regexp.QuoteMeta(addr) + `: connect: context deadline exceeded: request budget spent`,
			is:    []error{retry.ErrExhausted, context.DeadlineExceeded, spent},
			asDia: true,
		},
		{
			name: "a last error that wraps its context's error, the deadline with a cause",
			run: func(t *testing.T) error {
				ctx, cancel := context.WithTimeoutCause(t.Context(), 30*time.Millisecond, spent)
				defer cancel()
				return (&retry.Policy{}).Do(ctx, func(ctx context.Context) error {
					<-ctx.Done()
					return fmt.Errorf("fetch: %w", ctx.Err())
				})
			},
			text: `retry: stopped after 1 attempt: request budget spent: last error: fetch: context deadline exceeded`,
			is:   []error{retry.ErrExhausted, context.DeadlineExceeded, spent},
		},
		{
			name: "a last error that says the cause in its own words",
			run: func(t *testing.T) error {
				ctx, cancel := context.WithTimeout(t.Context(), 30*time.Millisecond)
				defer cancel()
				return (&retry.Policy{}).Do(ctx, func(ctx context.Context) error {
					<-ctx.Done()
					return errors.New(ctx.Err().Error()) // the text, not the value
				})
			},
			text: `retry: stopped after 1 attempt: context deadline exceeded`,
			is:   []error{retry.ErrExhausted, context.DeadlineExceeded},
		},
		{
			name: "a server-advised wait too long",
			run: func(t *testing.T) error {
				return (&retry.Policy{MaxRetryAfter: time.Second}).Do(t.Context(), func(context.Context) error {
					return retry.After(time.Hour, boom)
				})
			},
			text: `retry: stopped after 1 attempt: server-advised wait exceeds Policy.MaxRetryAfter: server asked for 1h0m0s, the cap is 1s: last error: boom`,
			is:   []error{retry.ErrExhausted, retry.ErrRetryAfterTooLong, boom},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.run(t)
			require.Error(t, err)
			assert.Regexp(t, "^"+tc.text+"$", err.Error())
			saysOnce(t, err.Error())
			for _, target := range tc.is {
				assert.ErrorIs(t, err, target)
			}
			var ex *retry.ExhaustedError
			assert.ErrorAs(t, err, &ex)
			if tc.asDia {
				var de *dial.Error
				assert.ErrorAs(t, err, &de, "the last attempt's *dial.Error")
			}
		})
	}
}
