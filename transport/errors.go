package transport

import (
	"context"
	"errors"

	"time"
)

// Causes of an attempt's context ending by a limit of the Transport.
var (
	errAttempt    = errors.New("transport: Retry.AttemptTimeout exceeded")
	errHedgeLost  = errors.New("transport: another attempt answered first")
	errBodyClosed = errors.New("transport: response body closed")
)

// TimeoutError is the error of one of the Transport's own limits:
// FirstByteTimeout (Phase "first_byte": no response headers this long
// after the request was written), StallTimeout (Phase "stall": a body read
// got no byte this long) or the Retry policy's AttemptTimeout (Phase
// "attempt"). It matches context.DeadlineExceeded with errors.Is, is a
// net.Error whose Timeout is true, and reads like "transport: GET
// api.example.com: stall: no response body byte for 30s". It is the same on
// HTTP/1.1 and HTTP/2.
type TimeoutError struct {
	// Phase is "first_byte", "stall" or "attempt".
	Phase string
	// Method and Host are the request's; no path or query (they may hold
	// secrets).
	Method, Host string
	// Limit is the limit that expired.
	Limit time.Duration

	peer string // bounded metric label of the peer
}

func (e *TimeoutError) Error() string {
	var what string
	switch e.Phase {
	case "first_byte":
		what = "no response headers within " + e.Limit.String() + " of the request"
	case "stall":
		what = "no response body byte for " + e.Limit.String()
	default:
		what = "attempt not answered within " + e.Limit.String()
	}
	return "transport: " + e.Method + " " + e.Host + ": " + e.Phase + ": " + what
}

// Timeout reports true: the error is a timeout.
func (e *TimeoutError) Timeout() bool { return true }

// Temporary reports true, as net.Error asks (deprecated there).
func (e *TimeoutError) Temporary() bool { return true }

// Is matches context.DeadlineExceeded.
func (e *TimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }

// ErrorType is "first_byte_timeout", "stall_timeout" or "attempt_timeout".
func (e *TimeoutError) ErrorType() string { return e.Phase + "_timeout" }

// MetricLabels are the phase and the bounded peer label.
func (e *TimeoutError) MetricLabels() (phase, peer string) { return e.Phase, e.peer }

// Retryable: a timeout may heal; whether the request may be sent again is
// the Transport's decision (idempotency), not the error's.
func (e *TimeoutError) Retryable() bool { return true }
