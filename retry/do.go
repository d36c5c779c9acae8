package retry

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/cenkalti/backoff/v4"
	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/internal/retryx"
)

var (
	errNilContext = errors.New("retry: nil Context")
	errNilOp      = errors.New("retry: nil operation")
)

// Do calls op until it succeeds, up to [Policy.MaxAttempts] times, and
// returns nil or the reason it gave up. A nil p is the default policy.
//
// Before every attempt the context is checked; a context that has already
// ended returns its error (context.Cause joined with ctx.Err) and op is never
// called. Each attempt gets a context carrying its number (see [Attempt]) and,
// with [Policy.AttemptTimeout], its own deadline. Between attempts Do waits an
// exponentially growing, jittered interval on a timer, stopping at once if
// the context ends. A wait that would reach the context's deadline is not
// taken.
//
// A failed attempt is classified in this order:
//
//  1. marked [Permanent]: Do returns the error at once;
//  2. the caller's context ended: Do returns an [*ExhaustedError] with the
//     context's cause;
//  3. an inner Do's final word: an [*ExhaustedError] anywhere in the chain
//     that retried or stopped for a cause of its own (budget, deadline,
//     server-advised wait), or [ErrBudgetExhausted] anywhere. Do returns it
//     as op returned it, so retries never multiply across layers (a Do in a
//     Do makes 3 attempts with the defaults, not 9). An inner Do with
//     MaxAttempts 1 leaves retrying to its caller and is not final;
//  4. with a custom [Policy.Retryable], it alone decides; otherwise
//  5. context.Canceled is not retried; an [After] error, or an attempt cut
//     by AttemptTimeout (the operation returned a timeout after the
//     attempt's deadline; an error of its own keeps its own verdict), is
//     retried; the first error in the chain with a
//     Retryable() bool method (such as *dial.Error, or pool.ErrClosed, which
//     says false) decides for itself; a shutdown — net.ErrClosed,
//     fs.ErrClosed (os.ErrClosed), http.ErrServerClosed — is not retried,
//     nor a TLS certificate verification error or a DNS "no such host"
//     (*net.DNSError with IsNotFound); anything else is.
//
// A failure that is not retried is returned as op returned it. When Do stops
// retrying a retryable failure — MaxAttempts ran out, the context ended or
// the next wait would cross its deadline, the [Budget] refused, or a
// server-advised wait exceeded [Policy.MaxRetryAfter] — it returns an
// [*ExhaustedError] that matches [ErrExhausted] and unwraps to both the last
// error and the cause.
//
// Each attempt is a span named "retry.attempt" under the caller's span, with
// the attempt number, the backoff waited before it and, on failure, error.type
// (the span's status description is the error type too, and the exception
// event's message has every URL stripped of userinfo, query and fragment).
// When a call succeeds after failed attempts, each of those failures is
// counted on lifeline.masked_failures with lifeline.masked_by=retry, by
// phase and peer when the error carries them (as *dial.Error does).
// Do calls op from its own goroutine only, one attempt at a time, and starts
// no goroutine.
func (p *Policy) Do(ctx context.Context, op func(ctx context.Context) error) error {
	if op == nil {
		return errNilOp
	}
	_, err := run(ctx, p, false, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, op(ctx)
	})
	return err
}

// prepared is a policy checked once, its telemetry found (see
// retryx.Prepare).
type prepared struct {
	c   config
	tel *telemetry
}

func prepare(p any) (any, error) {
	pol, _ := p.(*Policy)
	c, err := pol.config()
	if err != nil {
		return nil, err
	}
	return &prepared{c: c, tel: telemetryFor(c.tp, c.mp)}, nil
}

// doPrepared is Do for a prepared policy, without the attempt number in
// the attempts' contexts (see retryx.DoPrepared).
func doPrepared(pp any, ctx context.Context, op func(ctx context.Context, arg any) error, arg any) error {
	pr, _ := pp.(*prepared)
	switch {
	case op == nil:
		return errNilOp
	case pr == nil:
		return errors.New("retry: DoPrepared needs what Prepare returned")
	case ctx == nil:
		return errNilContext
	}
	c, tel := &pr.c, pr.tel
	if err := begin(ctx, c); err != nil {
		return err
	}
	var failed error
	if tel.tracer == nil && c.attemptTimeout <= 0 {
		// No span and no timeout of the attempt's own: the first attempt
		// is attempt's work done here, and the loop is entered only when
		// it failed (what usually succeeds at once skips the generic
		// loop: BenchmarkKeepAliveGET in package transport).
		if failed = op(ctx, arg); failed == nil {
			tel.attempted(ctx, 1, otelx.OutcomeOK)
			return nil
		}
		tel.attempted(ctx, 1, outcomeOf(failed, ctx.Err() != nil))
	}
	_, err := retrying(ctx, c, tel, true, func(ctx context.Context) (struct{}, error) {
		return struct{}{}, op(ctx, arg)
	}, failed)
	return err
}

func init() { retryx.Prepare, retryx.DoPrepared = prepare, doPrepared }

// Do is [Policy.Do] for an operation that returns a value: it returns the
// value of the first successful attempt, or T's zero value and the error
// (values returned with an error are dropped). A nil p is the default
// policy.
func Do[T any](ctx context.Context, p *Policy, op func(ctx context.Context) (T, error)) (T, error) {
	if op == nil {
		var zero T
		return zero, errNilOp
	}
	return run(ctx, p, false, op)
}

// run is the retry loop shared by both Do forms.
// A lean run gives the attempts no number in their contexts.
func run[T any](ctx context.Context, p *Policy, lean bool, op func(context.Context) (T, error)) (T, error) {
	var zero T
	if ctx == nil {
		return zero, errNilContext
	}
	c, err := p.config()
	if err != nil {
		return zero, err
	}
	return loop(ctx, &c, telemetryFor(c.tp, c.mp), lean, op)
}

// loop is run's loop for the checked config c and its telemetry.
func loop[T any](ctx context.Context, c *config, tel *telemetry, lean bool, op func(context.Context) (T, error)) (T, error) {
	if err := begin(ctx, c); err != nil {
		var zero T
		return zero, err
	}
	return retrying(ctx, c, tel, lean, op, nil)
}

// begin starts a call under c: none when ctx has already ended, else the
// call's deposit into the budget.
func begin(ctx context.Context, c *config) error {
	if ctx.Err() != nil {
		return ctxCause(ctx)
	}
	if c.budget != nil {
		c.budget.deposit()
	}
	return nil
}

// retrying is loop's loop, from the first attempt, or when failed is not
// nil from the failure of a first attempt made by the caller.
func retrying[T any](ctx context.Context, c *config, tel *telemetry, lean bool, op func(context.Context) (T, error), failed error) (T, error) {
	var (
		zero   T
		first  error                       // of the first failed attempt, for the recovered metric
		masked maskedFailures              // the retried failures, counted if a later attempt succeeds
		wait   time.Duration               // waited before the attempt
		bo     *backoff.ExponentialBackOff // built at the first retryable failure only
	)
	for n := 1; ; n++ {
		var v T
		err := failed
		if n > 1 || failed == nil {
			v, err = attempt(ctx, c, tel, n, wait, lean, op)
		}
		if err == nil {
			if first != nil {
				tel.recovered(ctx, first)
				tel.masked(ctx, masked)
			}
			return v, nil
		}
		if first == nil {
			first = err
		}
		var perm *permanentError
		if errors.As(err, &perm) {
			if err == error(perm) {
				return zero, perm.err
			}
			return zero, err
		}
		if ctx.Err() != nil {
			return zero, &ExhaustedError{Attempts: n, Last: err, Cause: ctxCause(ctx)}
		}
		// An inner Do already spent its retries (or its budget) on this
		// failure: retrying it here would multiply the attempts per layer.
		if isFinal(err) {
			return zero, err
		}
		if !c.isRetryable(err) {
			return zero, err
		}
		if n >= c.maxAttempts {
			return zero, &ExhaustedError{Attempts: n, Last: err}
		}

		if bo == nil {
			bo = c.newBackoff()
		}
		wait = bo.NextBackOff()
		if d, ok := RetryAfter(err); ok {
			if c.maxRetryAfter >= 0 && d > c.maxRetryAfter {
				return zero, &ExhaustedError{Attempts: n, Last: err, Cause: fmt.Errorf(
					"%w: server asked for %v, the cap is %v", ErrRetryAfterTooLong, d, c.maxRetryAfter)}
			}
			wait = max(wait, d)
		}
		// Never sleep past the deadline: a wait that ends at or after it
		// would only be followed by an attempt with no time left.
		if dl, ok := ctx.Deadline(); ok {
			if left := time.Until(dl); wait >= left {
				return zero, &ExhaustedError{Attempts: n, Last: err, Cause: &waitPastDeadlineError{wait: wait, left: left}}
			}
		}
		if c.budget != nil && !c.budget.withdraw() {
			tel.refused(ctx)
			return zero, &ExhaustedError{Attempts: n, Last: err, Cause: ErrBudgetExhausted}
		}
		// Retried: masked if a later attempt succeeds.
		masked = tel.failed(ctx, masked, err)
		if !sleep(ctx, wait) {
			if c.budget != nil {
				c.budget.refund()
			}
			return zero, &ExhaustedError{Attempts: n, Last: err, Cause: ctxCause(ctx)}
		}
	}
}

// attempt makes attempt n: its span, its context and its metrics.
func attempt[T any](ctx context.Context, c *config, tel *telemetry, n int, wait time.Duration, lean bool,
	op func(context.Context) (T, error)) (T, error) {
	actx := ctx
	var span trace.Span
	if tel.tracer != nil {
		actx, span = tel.tracer.Start(ctx, spanName)
		// Ended here even if op panics.
		defer span.End()
		// Attributes only for a recording span: a sampled-out or no-op span
		// costs no attribute allocation.
		if span.IsRecording() {
			span.SetAttributes(otelx.KeyAttempt.Int(n), otelx.KeyBackoff.Float64(wait.Seconds()))
		}
	}
	var timeout *attemptTimeoutError
	if c.attemptTimeout > 0 {
		timeout = &attemptTimeoutError{d: c.attemptTimeout}
		var cancel context.CancelFunc
		actx, cancel = context.WithTimeoutCause(actx, c.attemptTimeout, timeout)
		defer cancel()
	}
	if !lean {
		actx = &attemptCtx{Context: actx, n: n, more: n < c.maxAttempts}
	}
	v, err := op(actx)
	if err != nil && timeout != nil && ctx.Err() == nil && context.Cause(actx) == error(timeout) && isTimeout(err) {
		// The cut takes credit for a timeout only: an error of the
		// operation's own that came after it (a certificate error, one
		// that says it is not retryable) keeps its own verdict.
		err = &attemptTimedOut{cause: timeout, err: err}
	}
	outcome := otelx.OutcomeOK
	if err != nil {
		outcome = outcomeOf(err, ctx.Err() != nil)
	}
	tel.attempted(ctx, n, outcome)
	if span != nil && span.IsRecording() {
		span.SetAttributes(otelx.KeyOutcome.String(outcome))
		if err != nil && outcome != otelx.OutcomeCanceled {
			otelx.RecordError(span, err) // the caller's cancel is not a failure
		}
	}
	return v, err
}

// isTimeout reports whether err is a timeout: it matches
// context.DeadlineExceeded, or an error in its chain says Timeout.
func isTimeout(err error) bool {
	var te interface{ Timeout() bool }
	return errors.Is(err, context.DeadlineExceeded) || (errors.As(err, &te) && te.Timeout())
}

// isRetryable classifies a failure that is neither Permanent nor caused by
// the caller's context ending.
func (c *config) isRetryable(err error) bool {
	if c.retryable != nil {
		return c.retryable(err)
	}
	return defaultRetryable(err)
}

// newBackoff builds this call's backoff. backoff/v4's type is not safe to
// share, so every call that fails once gets its own. MaxElapsedTime is 0 (no
// limit): MaxAttempts and the context bound the retries, never backoff/v4's
// hidden 15 minutes.
func (c *config) newBackoff() *backoff.ExponentialBackOff {
	b := &backoff.ExponentialBackOff{
		InitialInterval:     c.initialInterval,
		RandomizationFactor: c.jitter,
		Multiplier:          c.multiplier,
		MaxInterval:         c.maxInterval,
		MaxElapsedTime:      0,
		Stop:                backoff.Stop,
		Clock:               backoff.SystemClock,
	}
	b.Reset()
	return b
}

// sleep waits d on a timer and reports whether ctx is still alive after it.
func sleep(ctx context.Context, d time.Duration) bool {
	if d > 0 {
		t := time.NewTimer(d)
		defer t.Stop()
		select {
		case <-t.C:
		case <-ctx.Done():
			return false
		}
	}
	return ctx.Err() == nil
}

// attemptKey is the context key of an attempt's number.
type attemptKey struct{}

// attemptCtx carries the attempt number. It is its own context value, so one
// allocation serves both the context and what Attempt reads.
type attemptCtx struct {
	context.Context
	n int
	// more: another attempt may follow this one (n < MaxAttempts); read
	// by the dialer through retryx.MayRetry to leave the retry its turn.
	more bool
}

func (c *attemptCtx) Value(key any) any {
	if _, ok := key.(attemptKey); ok {
		return c
	}
	if key == retryx.MoreKey {
		return c.more
	}
	return c.Context.Value(key)
}

func (c *attemptCtx) String() string {
	return fmt.Sprint(c.Context) + ".WithValue(retry.Attempt, " + strconv.Itoa(c.n) + ")"
}

// Attempt returns the 1-based number of the attempt whose context ctx is (or
// derives from), inside an operation run by [Policy.Do] or [Do]; 0 outside.
// With nested calls the innermost Do's attempt is returned.
func Attempt(ctx context.Context) int {
	if ctx == nil {
		return 0
	}
	if a, ok := ctx.Value(attemptKey{}).(*attemptCtx); ok {
		return a.n
	}
	return 0
}
