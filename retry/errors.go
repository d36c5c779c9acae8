package retry

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// ErrExhausted is matched (errors.Is) by every [*ExhaustedError]: Do made at
// least one attempt and gave up before a success.
var ErrExhausted = errors.New("retry: attempts exhausted")

// ErrBudgetExhausted is in the chain of the error Do returns when the
// [Budget] refused a retry.
var ErrBudgetExhausted = errors.New("retry: retry budget exhausted")

// ErrRetryAfterTooLong is in the chain of the error Do returns when a
// server-advised wait (see [After]) exceeds [Policy.MaxRetryAfter].
var ErrRetryAfterTooLong = errors.New("retry: server-advised wait exceeds Policy.MaxRetryAfter")

// ExhaustedError is returned by Do when it stops retrying a retryable
// failure: MaxAttempts ran out, the caller's context ended (or the next wait
// would cross its deadline), the budget refused, or a server-advised wait was
// too long. It matches [ErrExhausted], and it unwraps to both Last and Cause,
// so errors.As still finds the last attempt's typed error (such as a
// *dial.Error and its phase) and errors.Is(err, context.DeadlineExceeded)
// holds when the deadline stopped the retries.
type ExhaustedError struct {
	// Attempts is the number of attempts made.
	Attempts int
	// Last is the error of the last attempt.
	Last error
	// Cause is why Do stopped before MaxAttempts ran out: the context's
	// cause (context.Cause, joined with its Err when they differ),
	// a deadline error matching context.DeadlineExceeded when the next wait
	// would have crossed the deadline, [ErrBudgetExhausted], or
	// [ErrRetryAfterTooLong]. It is nil when MaxAttempts ran out.
	Cause error
}

// Error reads "retry: 3 attempts failed: <last>" (or "1 attempt") or, when
// something other than MaxAttempts stopped the retries,
// "retry: stopped after 2 attempts: <cause>: last error: <last>", saying
// each thing once:
//   - the cause is not said when the last error already holds it (a dial
//     that the caller's deadline cut: "retry: stopped after 2 attempts:
//     dial tcp …: tls: context deadline exceeded");
//   - the last error is not said when the cause holds it (an operation
//     that returned its context's error: "retry: stopped after 1 attempt:
//     context deadline exceeded: <the deadline's cause>") or says the
//     same words;
//   - a context's error is not said twice: with a deadline's own cause
//     (context.WithTimeoutCause) and a last error that holds the
//     context's error, the cause reads as the deadline's cause alone;
//   - the cause's "retry: " prefix is dropped (the text has one):
//     "retry: stopped after 1 attempt: retry budget exhausted: last
//     error: …".
func (e *ExhaustedError) Error() string {
	last := "<nil>"
	if e.Last != nil {
		last = e.Last.Error()
	}
	attempts := strconv.Itoa(e.Attempts) + " attempts"
	if e.Attempts == 1 {
		attempts = "1 attempt"
	}
	if e.Cause == nil {
		return "retry: " + attempts + " failed: " + last
	}
	if e.causeSaid() {
		return "retry: stopped after " + attempts + ": " + last
	}
	cause := e.Cause
	if ce, ok := cause.(*ctxEndedError); ok && e.Last != nil && holds(e.Last, ce.err) {
		cause = ce.cause // the last error says the context's error
	}
	said := strings.TrimPrefix(cause.Error(), "retry: ")
	if e.Last == nil || holds(e.Cause, e.Last) || last == said || last == e.Cause.Error() {
		return "retry: stopped after " + attempts + ": " + strings.TrimPrefix(e.Cause.Error(), "retry: ")
	}
	return "retry: stopped after " + attempts + ": " + said + ": last error: " + last
}

// causeSaid reports whether Last holds Cause itself or, for a cause that
// joins a context's error with the context's own cause, that cause: the
// same error values, not merely errors that match them (a limit of the
// operation's own that matches context.DeadlineExceeded is not the
// caller's deadline).
func (e *ExhaustedError) causeSaid() bool {
	if e.Last == nil {
		return false
	}
	if holds(e.Last, e.Cause) {
		return true
	}
	u, ok := e.Cause.(interface{ Unwrap() []error })
	if !ok {
		return false
	}
	said := false
	for _, c := range u.Unwrap() {
		if c == context.Canceled || c == context.DeadlineExceeded {
			continue // every context's ending carries one
		}
		if !holds(e.Last, c) {
			return false
		}
		said = true
	}
	return said
}

// holds reports whether target itself is in err's tree (by identity: no Is
// methods).
func holds(err, target error) bool {
	for err != nil {
		if err == target {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if holds(e, target) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// Unwrap returns Last and Cause (those that are not nil).
func (e *ExhaustedError) Unwrap() []error {
	switch {
	case e.Last == nil && e.Cause == nil:
		return nil
	case e.Cause == nil:
		return []error{e.Last}
	case e.Last == nil:
		return []error{e.Cause}
	}
	return []error{e.Last, e.Cause}
}

// Is reports whether target is [ErrExhausted].
func (e *ExhaustedError) Is(target error) bool { return target == ErrExhausted }

// permanentError marks an error that must not be retried. Its text is the
// wrapped error's, so marking changes no message.
type permanentError struct{ err error }

func (e *permanentError) Error() string { return e.err.Error() }
func (e *permanentError) Unwrap() error { return e.err }

// Permanent marks err as not retryable: Do stops at once and returns err
// (without the mark when the operation returned Permanent's result itself).
// It wins over every classification, a custom [Policy.Retryable] included.
// Permanent(nil) is nil.
func Permanent(err error) error {
	if err == nil {
		return nil
	}
	return &permanentError{err: err}
}

// afterError carries a server-advised wait, such as HTTP Retry-After.
type afterError struct {
	d   time.Duration
	err error
}

func (e *afterError) Error() string { return e.err.Error() }
func (e *afterError) Unwrap() error { return e.err }

// After marks err as retryable no sooner than d, as a server asks with HTTP
// Retry-After or a gRPC pushback: the next wait is the larger of d and the
// backoff. A d beyond [Policy.MaxRetryAfter], or one that would cross the
// context's deadline, ends the retries at once with an [*ExhaustedError]
// instead of sleeping. The default classification retries an After error
// unless it is also [Permanent]. After(d, nil) is nil; a negative d counts
// as 0.
func After(d time.Duration, err error) error {
	if err == nil {
		return nil
	}
	return &afterError{d: max(d, 0), err: err}
}

// RetryAfter reports the server-advised wait that [After] put in err's chain.
// A custom [Policy.Retryable] can use it to keep retrying such errors.
func RetryAfter(err error) (time.Duration, bool) {
	var a *afterError
	if errors.As(err, &a) {
		return a.d, true
	}
	return 0, false
}

// attemptTimeoutError is the cause of an attempt's context cut by
// Policy.AttemptTimeout. It matches context.DeadlineExceeded.
type attemptTimeoutError struct{ d time.Duration }

func (e *attemptTimeoutError) Error() string {
	return "retry: attempt exceeded Policy.AttemptTimeout (" + e.d.String() + ")"
}
func (e *attemptTimeoutError) Is(target error) bool { return target == context.DeadlineExceeded }
func (e *attemptTimeoutError) Timeout() bool        { return true }

// attemptTimedOut wraps an attempt's error with the AttemptTimeout that cut
// it, keeping the original in the chain.
type attemptTimedOut struct {
	cause *attemptTimeoutError
	err   error
}

func (e *attemptTimedOut) Error() string   { return e.cause.Error() + ": " + e.err.Error() }
func (e *attemptTimedOut) Unwrap() []error { return []error{e.err, e.cause} }
func (e *attemptTimedOut) Timeout() bool   { return true }

// waitPastDeadlineError is the Cause when the next wait would cross the
// context's deadline. It matches context.DeadlineExceeded.
type waitPastDeadlineError struct{ wait, left time.Duration }

// Error says why Do stopped; it does not repeat "context deadline
// exceeded", which the error matches.
func (e *waitPastDeadlineError) Error() string {
	left := max(e.left, 0)
	if left >= time.Millisecond {
		left = left.Round(time.Millisecond)
	}
	return fmt.Sprintf("retry: next wait %v would cross the context deadline (%v left)", e.wait, left)
}
func (e *waitPastDeadlineError) Unwrap() error { return context.DeadlineExceeded }
func (e *waitPastDeadlineError) Timeout() bool { return true }

// ctxCause returns why ctx ended: its cause, joined with ctx.Err() when the
// cause does not match it, so errors.Is(err, context.DeadlineExceeded) or
// context.Canceled always holds.
func ctxCause(ctx context.Context) error {
	err := ctx.Err()
	cause := context.Cause(ctx)
	if cause == nil || errors.Is(cause, err) {
		if cause == nil {
			return err
		}
		return cause
	}
	return &ctxEndedError{err: err, cause: cause}
}

// ctxEndedError is a context's error joined with its cause: "context
// deadline exceeded: <cause>", matching both.
type ctxEndedError struct{ err, cause error }

func (e *ctxEndedError) Error() string   { return e.err.Error() + ": " + e.cause.Error() }
func (e *ctxEndedError) Unwrap() []error { return []error{e.err, e.cause} }

// isFinal reports whether err ends the retries of an outer Do whatever
// the classification, because an inner Do already spent its retries on it:
// an [*ExhaustedError] anywhere in err's tree that retried (more than one
// attempt) or stopped for a reason of its own (its Cause: the Budget, the
// deadline, a too-long server-advised wait), and [ErrBudgetExhausted]
// anywhere. Retrying it would multiply the attempts per layer (3 × 3 = 9
// with the defaults) and defeat the inner Budget. An inner *ExhaustedError
// of a single attempt with no Cause is not final: that Do had MaxAttempts 1,
// which leaves retrying to its caller.
func isFinal(err error) bool {
	return errors.Is(err, ErrBudgetExhausted) || retriedInside(err)
}

// retriedInside walks err's tree as errors.Is does and reports whether it
// holds an *ExhaustedError that retried or has a Cause.
func retriedInside(err error) bool {
	for err != nil {
		if ex, ok := err.(*ExhaustedError); ok && (ex.Attempts > 1 || ex.Cause != nil) {
			return true
		}
		switch u := err.(type) {
		case interface{ Unwrap() error }:
			err = u.Unwrap()
		case interface{ Unwrap() []error }:
			for _, e := range u.Unwrap() {
				if retriedInside(e) {
					return true
				}
			}
			return false
		default:
			return false
		}
	}
	return false
}

// defaultRetryable is the default classification of an error that is not
// Permanent and not caused by the caller's context ending.
func defaultRetryable(err error) bool {
	if errors.Is(err, context.Canceled) {
		return false // a cancel is a decision, not a fault
	}
	if _, ok := RetryAfter(err); ok {
		return true // the server asked for a retry
	}
	var tooLong *attemptTimedOut
	if errors.As(err, &tooLong) {
		return true // cut by our own AttemptTimeout; the caller still has time
	}
	// Errors that know their own nature speak for themselves: *dial.Error
	// reports Retryable by phase, pool.ErrClosed says false, without this
	// package importing either. The first such error in the chain (the
	// outermost, as errors.As walks it) decides: a *dial.Error that raced
	// several addresses answers for all of them, whatever one attempt inside
	// it says.
	var self interface{ Retryable() bool }
	if errors.As(err, &self) {
		return self.Retryable()
	}
	// Something this program closed stays closed: a retry would meet the
	// same closed conn, listener, file or server. These are shutdowns, not
	// faults of the network.
	if errors.Is(err, net.ErrClosed) || errors.Is(err, fs.ErrClosed) || errors.Is(err, http.ErrServerClosed) {
		return false
	}
	// A certificate that failed verification fails the same way next time.
	var (
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
		rootErr x509.SystemRootsError
	)
	if errors.As(err, &certErr) || errors.As(err, &unkAuth) || errors.As(err, &hostErr) ||
		errors.As(err, &invErr) || errors.As(err, &rootErr) {
		return false
	}
	// A name that does not exist will not exist in 100ms either.
	var dnsErr *net.DNSError
	if errors.As(err, &dnsErr) && dnsErr.IsNotFound {
		return false
	}
	return true
}
