package transport

import (
	"net/http"
	"time"
)

// RetryAfter returns the wait that resp's Retry-After field asks for
// (RFC 9110 §10.2.3), whatever its status (429 and 503 send it most):
// delay-seconds, or an HTTP-date taken relative to the answer's own Date
// field when it has a valid one (so that a skew between the server's clock
// and this one does not change the wait), else relative to now. A date in
// the past is a zero wait; a wait beyond a year is a year. It returns
// false for a nil response, no field, or a value that is neither
// (negative seconds, a malformed date).
//
// The Transport's own retries read answers through this same function
// (and cap the wait with the policy's MaxRetryAfter); it is exported for
// an SDK that returns a 503 to its caller with the advised wait, or
// retries around the Transport itself.
func RetryAfter(resp *http.Response) (time.Duration, bool) {
	if resp == nil {
		return 0, false
	}
	return retryAfterAt(resp.Header, time.Now())
}

// retryAfterAt is RetryAfter for an answer with header h received at now:
// the reference of an HTTP-date is h's Date when it parses, else now.
func retryAfterAt(h http.Header, now time.Time) (time.Duration, bool) {
	if d := h.Get("Date"); d != "" {
		if t, err := http.ParseTime(d); err == nil {
			now = t
		}
	}
	return retryAfter(h, now)
}
