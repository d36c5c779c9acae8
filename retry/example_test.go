package retry_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/lifeline-go/lifeline/retry"
)

// An operation that fails twice and then succeeds.
func ExamplePolicy_Do() {
	p := &retry.Policy{MaxAttempts: 5, InitialInterval: time.Microsecond, MaxInterval: time.Millisecond}
	err := p.Do(context.Background(), func(ctx context.Context) error {
		n := retry.Attempt(ctx)
		fmt.Println("attempt", n)
		if n < 3 {
			return errors.New("connection refused")
		}
		return nil
	})
	fmt.Println("err:", err)
	// Output:
	// attempt 1
	// attempt 2
	// attempt 3
	// err: <nil>
}

// Every attempt fails: the error says how many were made and keeps the last.
func ExamplePolicy_Do_exhausted() {
	p := &retry.Policy{MaxAttempts: 3, InitialInterval: time.Microsecond, MaxInterval: time.Millisecond}
	errDown := errors.New("upstream down")
	err := p.Do(context.Background(), func(context.Context) error { return errDown })
	fmt.Println(err)
	fmt.Println(errors.Is(err, retry.ErrExhausted), errors.Is(err, errDown))
	// Output:
	// retry: 3 attempts failed: upstream down
	// true true
}

// A Permanent error stops at once.
func ExamplePermanent() {
	attempts := 0
	err := (*retry.Policy)(nil).Do(context.Background(), func(context.Context) error {
		attempts++
		return retry.Permanent(errors.New("400 bad request"))
	})
	fmt.Println(attempts, err)
	// Output:
	// 1 400 bad request
}

// A budget shared by every call: once it is spent, failing calls are not
// retried and say why.
func ExampleNewBudget() {
	budget := retry.NewBudget(0, 0) // no retries beyond the starting burst of 10
	p := &retry.Policy{MaxAttempts: 100, InitialInterval: time.Microsecond, MaxInterval: time.Microsecond, Budget: budget}
	attempts := 0
	err := p.Do(context.Background(), func(context.Context) error {
		attempts++
		return errors.New("timeout")
	})
	fmt.Println(attempts, errors.Is(err, retry.ErrBudgetExhausted))
	fmt.Println(err)
	// Output:
	// 11 true
	// retry: stopped after 11 attempts: retry budget exhausted: last error: timeout
}

// Do returns the value of the first successful attempt.
func ExampleDo() {
	p := &retry.Policy{InitialInterval: time.Microsecond, MaxInterval: time.Millisecond}
	v, err := retry.Do(context.Background(), p, func(ctx context.Context) (string, error) {
		if retry.Attempt(ctx) == 1 {
			return "", errors.New("reset")
		}
		return "hello", nil
	})
	fmt.Println(v, err)
	// Output:
	// hello <nil>
}

// A server-advised wait longer than MaxRetryAfter ends the retries instead
// of sleeping.
func ExampleAfter() {
	p := &retry.Policy{MaxRetryAfter: time.Second}
	err := p.Do(context.Background(), func(context.Context) error {
		return retry.After(time.Hour, errors.New("503 service unavailable"))
	})
	fmt.Println(errors.Is(err, retry.ErrRetryAfterTooLong))
	fmt.Println(err)
	// Output:
	// true
	// retry: stopped after 1 attempt: server-advised wait exceeds Policy.MaxRetryAfter: server asked for 1h0m0s, the cap is 1s: last error: 503 service unavailable
}
