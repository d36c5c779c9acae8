package transport

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"time"
)

// Causes of an attempt's context ending by a limit of the Transport.
var (
	errAttempt    = errors.New("transport: Retry.AttemptTimeout exceeded")
	errHedgeLost  = errors.New("transport: another attempt answered first")
	errBodyClosed = errors.New("transport: response body closed")

	errClosedUnder error = closedUnderError{}
)

// TimeoutError is the error of one of the Transport's own limits:
// FirstByteTimeout (Phase "first_byte": no response headers this long
// after the request was written), StallTimeout (Phase "stall": a body read
// got no byte this long; Phase "upload_stall": the request body's upload
// made no progress this long), the Dialer's Timeout (Phase "conn": no
// conn this long, waiting at MaxConnsPerHost or for an idle conn; a dial
// of the request's own keeps its own limits and *dial.Error) or the Retry
// policy's AttemptTimeout (Phase "attempt"). It matches context.DeadlineExceeded with errors.Is, is a
// net.Error whose Timeout is true, and reads like "transport: GET
// api.example.com: stall: no response body byte for 30s". It is the same on
// HTTP/1.1 and HTTP/2.
type TimeoutError struct {
	// Phase is "first_byte", "stall", "upload_stall", "conn" or "attempt".
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
	case "upload_stall":
		what = "no request body byte written for " + e.Limit.String()
	case "conn":
		what = "no conn within " + e.Limit.String()
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

// ErrorType is "first_byte_timeout", "stall_timeout",
// "upload_stall_timeout", "conn_timeout" or "attempt_timeout".
func (e *TimeoutError) ErrorType() string { return e.Phase + "_timeout" }

// MetricLabels are the phase and the bounded peer label.
func (e *TimeoutError) MetricLabels() (phase, peer string) { return e.Phase, e.peer }

// Retryable: a timeout may heal; whether the request may be sent again is
// the Transport's decision (idempotency), not the error's.
func (e *TimeoutError) Retryable() bool { return true }

// HeaderLimitError is the error of a response whose headers exceeded
// MaxResponseHeaderBytes: net/http stopped reading them (HTTP/1.1), or the
// server sent more than the limit the Transport advertised (HTTP/2,
// SETTINGS_MAX_HEADER_LIST_SIZE). It reads like "transport: GET
// api.example.com: response headers exceed MaxResponseHeaderBytes
// (1048576 bytes)" and unwraps to net/http's own error. It is not
// retried: the server would answer the same.
type HeaderLimitError struct {
	// Method and Host are the request's; no path or query.
	Method, Host string
	// Limit is MaxResponseHeaderBytes as applied.
	Limit int64

	err  error
	peer string
}

func (e *HeaderLimitError) Error() string {
	return "transport: " + e.Method + " " + e.Host + ": response headers exceed MaxResponseHeaderBytes (" +
		strconv.FormatInt(e.Limit, 10) + " bytes)"
}

// Unwrap returns net/http's error.
func (e *HeaderLimitError) Unwrap() error { return e.err }

// ErrorType is "response_headers_too_large".
func (e *HeaderLimitError) ErrorType() string { return "response_headers_too_large" }

// MetricLabels are the phase ("response") and the bounded peer label.
func (e *HeaderLimitError) MetricLabels() (phase, peer string) { return "response", e.peer }

// Retryable reports false: the same server would send the same headers.
func (e *HeaderLimitError) Retryable() bool { return false }

// isHeaderLimit reports whether err is net/http's failure for response
// headers over the limit. net/http gives it no type or sentinel of its
// own (HTTP/1.1: an errors.New with the limit in its text; HTTP/2: an
// unexported sentinel in the text of a StreamError without Unwrap), so
// its two texts are matched here, and only here; TestHostileHugeHeaders
// fails if a Go release changes the first. On HTTP/2 a header block far
// over the limit ends the conn with PROTOCOL_ERROR instead, which nothing
// tells from other protocol errors (TestHostileHugeHeadersHTTP2).
func isHeaderLimit(err error) bool {
	for _, e := range chain(err) {
		msg := e.Error()
		if strings.HasPrefix(msg, "net/http: server response headers exceeded ") ||
			strings.HasSuffix(msg, "http2: response header list larger than advertised limit") {
			return true
		}
	}
	return false
}

// chain lists err and every error it wraps, depth first.
func chain(err error) []error {
	var out []error
	var walk func(error)
	walk = func(e error) {
		if e == nil || len(out) > 32 {
			return
		}
		out = append(out, e)
		switch u := e.(type) {
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		case interface{ Unwrap() []error }:
			for _, x := range u.Unwrap() {
				walk(x)
			}
		}
	}
	walk(err)
	return out
}

// closedUnderError is a try's error when net/http failed it with the
// cause of another request's cancel (see try.mapErr): the conn was closed
// under it. It is retried like a reset conn, under the usual rules.
type closedUnderError struct{}

func (closedUnderError) Error() string {
	return "transport: connection closed under the request by another request's cancel"
}

// ErrorType is the error.type lifeline reports for it.
func (closedUnderError) ErrorType() string { return "conn_closed" }

// isTryCause reports whether err is one of the causes with which lifeline
// ends a try's context.
func isTryCause(err error) bool {
	for _, c := range [...]error{errFirstByte, errUploadStall, errConnWait, errHedgeLost, errAttempt, errBodyClosed} {
		if errors.Is(err, c) {
			return true
		}
	}
	return false
}
