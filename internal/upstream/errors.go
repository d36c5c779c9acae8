package upstream

import (
	"errors"
	"strconv"
	"time"
)

// ErrUnavailable is matched (errors.Is) by every [*UnavailableError]: the
// call was not attempted because the upstream is known down, paused by the
// server, or shed by the client's throttle.
var ErrUnavailable = errors.New("upstream unavailable")

// ErrThrottled is matched by an [*UnavailableError] of Reason
// [ReasonShed]: the client's adaptive throttle rejected the call.
var ErrThrottled = errors.New("upstream: call shed by client-side throttling")

// Reasons of an [UnavailableError].
const (
	// ReasonDown: establishment failed or hung; only probes go.
	ReasonDown = "down"
	// ReasonPaused: the server asked for a pause (429, Retry-After) that
	// the call's deadline ends in.
	ReasonPaused = "paused"
	// ReasonShed: the adaptive throttle rejected the call.
	ReasonShed = "shed"
)

// UnavailableError is the error of a call that was not attempted: the
// upstream is known down (Reason "down"), the server's advised pause
// outlasts the call's deadline ("paused"), or the client shed the call
// ("shed"). It matches [ErrUnavailable] (and [ErrThrottled] when shed),
// unwraps to Last, and is not retryable: it is the client's final word for
// now, and an outer retry would only spin.
type UnavailableError struct {
	// Upstream is the upstream's host:port (never a URL, a query or
	// userinfo).
	Upstream string
	// Reason is ReasonDown, ReasonPaused or ReasonShed.
	Reason string
	// Since is when the upstream went down, the pause began, or the
	// throttle began rejecting.
	Since time.Time
	// Retry is when the next probe may go (down), the pause ends
	// (paused); zero when unknown (shed).
	Retry time.Time
	// Last is the last real failure seen (a *dial.Error with its phase and
	// peer, a timeout); nil when none is known.
	Last error
}

// Error is one line: "upstream example.com:443 down: <last error>".
func (e *UnavailableError) Error() string {
	s := "upstream " + e.Upstream
	if e.Upstream == "" {
		s = "upstream"
	}
	switch e.Reason {
	case ReasonShed:
		s += " overloaded: call shed by client-side throttling"
	case ReasonPaused:
		s += " paused by the server"
		if !e.Retry.IsZero() {
			s += " until " + e.Retry.UTC().Format(time.RFC3339Nano)
		}
	default:
		s += " down"
		if !e.Since.IsZero() && !e.Retry.IsZero() {
			s += " (next probe in " + strconv.FormatInt(max(time.Until(e.Retry), 0).Milliseconds(), 10) + "ms)"
		}
	}
	if e.Last != nil {
		s += ": last error: " + e.Last.Error()
	}
	return s
}

// Unwrap returns Last.
func (e *UnavailableError) Unwrap() error { return e.Last }

// Is matches ErrUnavailable, and ErrThrottled for a shed call.
func (e *UnavailableError) Is(target error) bool {
	return target == ErrUnavailable || target == ErrThrottled && e.Reason == ReasonShed
}

// Retryable is false: a fail-fast is the client's word on the upstream for
// now.
func (e *UnavailableError) Retryable() bool { return false }

// ErrorType is "shed" for a shed call, "unavailable" otherwise (the
// error.type of spans and metrics).
func (e *UnavailableError) ErrorType() string {
	if e.Reason == ReasonShed {
		return "shed"
	}
	return "unavailable"
}
