package retry_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// errBoom is a plain retryable failure.
var errBoom = errors.New("boom")

// phaseError stands in for *dial.Error: it knows whether it is retryable.
type phaseError struct {
	phase     string
	retryable bool
}

func (e *phaseError) Error() string   { return "dial tcp 192.0.2.1:443: " + e.phase + ": failed" }
func (e *phaseError) Retryable() bool { return e.retryable }

// script returns an operation whose attempt i returns errs[i-1] (the last
// entry repeats) and a counter of its calls.
func script(errs ...error) (func(context.Context) error, *atomic.Int64) {
	var calls atomic.Int64
	return func(context.Context) error {
		n := int(calls.Add(1))
		if n > len(errs) {
			n = len(errs)
		}
		return errs[n-1]
	}, &calls
}
