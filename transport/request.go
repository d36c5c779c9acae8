package transport

import (
	"errors"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/lifeline-go/lifeline/retry"
)

// ErrBadRequest is in the chain of the error RoundTrip returns for a
// request it cannot send (nil, no URL, no host, an unsupported scheme, an
// invalid method, header field name or value), before anything is dialed
// and without a retry.
var ErrBadRequest = errors.New("transport: bad request")

func badRequest(msg string) error {
	return &badRequestError{msg}
}

type badRequestError struct{ msg string }

func (e *badRequestError) Error() string        { return "transport: " + e.msg }
func (e *badRequestError) Is(target error) bool { return target == ErrBadRequest }

// checkRequest rejects requests net/http would fail on, or panic on.
func checkRequest(req *http.Request) error {
	switch {
	case req == nil:
		return badRequest("nil request")
	case req.URL == nil:
		closeBody(req)
		return badRequest("nil request URL")
	case req.Header == nil:
		closeBody(req)
		return badRequest("nil request header")
	case req.URL.Host == "":
		closeBody(req)
		return badRequest("no host in request URL")
	}
	switch req.URL.Scheme {
	case "http", "https":
	default:
		closeBody(req)
		return badRequest("unsupported protocol scheme " + strconv.Quote(req.URL.Scheme))
	}
	// What net/http refuses before it looks for a conn: refused the same
	// way every time, it is the caller's mistake, never worth a retry (nor
	// the budget's tokens). The value of a field is not named: it may be
	// a secret.
	if req.Method != "" && !validToken(req.Method) {
		closeBody(req)
		return badRequest("invalid method " + strconv.Quote(req.Method))
	}
	for k, vs := range req.Header {
		if !validToken(k) {
			closeBody(req)
			return badRequest("invalid header field name " + strconv.Quote(k))
		}
		for _, v := range vs {
			if !validFieldValue(v) {
				closeBody(req)
				return badRequest("invalid header field value for " + strconv.Quote(k))
			}
		}
	}
	return nil
}

// validToken reports whether s is a token (RFC 9110 §5.6.2): a method or
// a field name.
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		b := s[i]
		switch {
		case 'a' <= b && b <= 'z', 'A' <= b && b <= 'Z', '0' <= b && b <= '9':
		case strings.IndexByte("!#$%&'*+-.^_`|~", b) >= 0:
		default:
			return false
		}
	}
	return true
}

// validFieldValue reports whether v may be sent as a field value: no
// control character but HTAB (RFC 9110 §5.5), as net/http checks.
func validFieldValue(v string) bool {
	for i := 0; i < len(v); i++ {
		if b := v[i]; b < ' ' && b != '\t' || b == 0x7f {
			return false
		}
	}
	return true
}

func closeBody(req *http.Request) {
	if req.Body != nil {
		_ = req.Body.Close()
	}
}

// idempotent reports whether a request may be sent twice with the effect of
// once: the methods RFC 9110 §9.2.2 calls idempotent, or a request that
// carries an idempotency key.
func idempotent(req *http.Request) bool {
	switch req.Method {
	case "", http.MethodGet, http.MethodHead, http.MethodOptions, http.MethodTrace,
		http.MethodPut, http.MethodDelete:
		return true
	}
	return req.Header.Get("Idempotency-Key") != "" || req.Header.Get("X-Idempotency-Key") != ""
}

// replayable reports whether the body can be sent again: none, or one
// whose GetBody makes a fresh copy.
func replayable(req *http.Request) bool {
	return req.Body == nil || req.Body == http.NoBody || req.GetBody != nil
}

// retryableStatus reports whether an answer asks for the request again
// later: 429 Too Many Requests, 502 Bad Gateway, 503 Service Unavailable,
// 504 Gateway Timeout.
func retryableStatus(code int) bool {
	switch code {
	case http.StatusTooManyRequests, http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout:
		return true
	}
	return false
}

// retryAfter parses a Retry-After header: delay-seconds or an HTTP-date
// (RFC 9110 §10.2.3). A date in the past is a zero wait.
func retryAfter(h http.Header, now time.Time) (time.Duration, bool) {
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0, false
	}
	const year = int64(24*time.Hour/time.Second) * 365
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs < 0 {
			return 0, false
		}
		if secs > year {
			secs = year // no overflow: a year is "too long" anyway
		}
		return time.Duration(secs) * time.Second, true
	} else if errors.Is(err, strconv.ErrRange) && v[0] != '-' {
		// More digits than an int64 holds: further away than a year, not
		// "no advice" (which would retry at the backoff's pace at once).
		return time.Duration(year) * time.Second, true
	}
	if t, err := http.ParseTime(v); err == nil {
		return min(max(t.Sub(now), 0), time.Duration(year)*time.Second), true
	}
	return 0, false
}

// statusError is the failure of an attempt answered with a retryable
// status. It carries the response, which RoundTrip returns when no later
// attempt does better.
type statusError struct {
	resp *http.Response
	try  *try
}

func (e *statusError) Error() string {
	return "transport: " + e.resp.Status
}

// ErrorType is the status code, as the HTTP semantic conventions name a
// failed response's error.type.
func (e *statusError) ErrorType() string { return strconv.Itoa(e.resp.StatusCode) }

// MetricLabels are the phase ("response") and bounded peer of the answer.
func (e *statusError) MetricLabels() (phase, peer string) {
	return "response", e.try.peerLabel()
}

// Retryable: the server asked for the request again later.
func (e *statusError) Retryable() bool { return true }

// drainLimit and drainTimeout bound the reading of a response that is
// discarded (a retried 503, a hedge that lost), so that its conn can be
// reused without reading a large or stalled body.
const (
	drainLimit   = 64 << 10
	drainTimeout = time.Second
)

// discard drains and closes a response the caller will not see.
func discard(resp *http.Response) {
	if resp == nil || resp.Body == nil {
		return
	}
	if b, ok := resp.Body.(*body); ok {
		b.drain()
		return
	}
	_, _ = io.CopyN(io.Discard, resp.Body, drainLimit)
	_ = resp.Body.Close()
}

// canRetry classifies an attempt's error for the retry loop: safe to send
// again when nothing of the request was written, or when the request is
// idempotent and its body replayable. A failure that the caller's
// deadline caused while the call's dial was unfinished says where that
// dial was (dialPhase); a CONNECT answer over MaxResponseHeaderBytes is a
// *HeaderLimitError, not retried (connectHeaderLimit).
func (c *call) canRetry(err error, wrote bool) error {
	err = c.connectHeaderLimit(c.dialPhase(err))
	if !c.replayable {
		return retry.Permanent(err)
	}
	if wrote && !c.idempotent {
		return retry.Permanent(err)
	}
	return err
}

// Exhausted returns the error with which the Transport stopped retrying
// the request that resp answers, when resp is an answer with a retryable
// status (429, 502, 503, 504) that RoundTrip returned after retrying it, or
// after deciding not to wait for another attempt (its Budget, the
// context's deadline, a Retry-After beyond MaxRetryAfter); nil for any
// other response. The error is a *retry.ExhaustedError, which a retry.Do
// around the Transport does not retry (an inner Do's final word): an
// operation that returns it when it sees such an answer makes the layers'
// retries add up instead of multiplying (3 requests, not 3 × 3). An
// ExhaustedError of a single attempt, from a Transport whose policy has
// MaxAttempts 1, leaves the retrying to the loop around it.
//
// The mark is on resp.Body: a body the caller replaced has none.
func Exhausted(resp *http.Response) error {
	if resp == nil {
		return nil
	}
	if b, ok := resp.Body.(*exhaustedBody); ok {
		return b.err
	}
	return nil
}

// exhaustedBody is the body of an answer RoundTrip stopped retrying: the
// answer's own, with the error Exhausted returns.
type exhaustedBody struct {
	io.ReadCloser
	err *retry.ExhaustedError
}

// markExhausted marks resp, an answer RoundTrip returns after it stopped
// retrying it, for Exhausted.
func markExhausted(resp *http.Response, err *retry.ExhaustedError) {
	body := resp.Body
	if body == nil {
		body = http.NoBody
	}
	resp.Body = &exhaustedBody{ReadCloser: body, err: err}
}
