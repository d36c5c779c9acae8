// Package retry retries operations without making an outage worse.
//
// [Policy.Do] and the generic [Do] call an operation up to
// [Policy.MaxAttempts] times with exponential, jittered backoff between
// attempts (built on github.com/cenkalti/backoff/v4, one backoff per call,
// created only after a first failure and without backoff/v4's hidden
// 15-minute MaxElapsedTime). A nil *Policy is the default policy:
//
//	err := (*retry.Policy)(nil).Do(ctx, func(ctx context.Context) error {
//		return call(ctx)
//	})
//
// The rules:
//
//   - Deadlines. The context is checked before every attempt;
//     [Policy.AttemptTimeout] bounds each attempt; a wait that would reach the
//     context's deadline is not taken — Do returns at once with the last
//     error joined to the context's error. Do never sleeps past a deadline.
//   - Classification. [Permanent] stops at once. The caller's cancel is never
//     retried. Retries do not multiply across layers: an inner Do's
//     [*ExhaustedError] (when it retried, or stopped for its budget, its
//     deadline or a too-long server-advised wait) and [ErrBudgetExhausted]
//     are final for an outer Do, anywhere in the chain and whatever a custom
//     Retryable says, so a Do in a Do makes 3 attempts with the defaults,
//     not 9. Errors with a Retryable() bool method (such as *dial.Error, or
//     pool.ErrClosed, which says false) decide for themselves, the
//     outermost in the chain first; shutdowns (net.ErrClosed, os.ErrClosed,
//     http.ErrServerClosed), TLS certificate verification errors and DNS
//     "no such host" errors are not retried; anything else is. A custom
//     [Policy.Retryable] replaces this default.
//   - Server-advised waits. [After] asks for a retry no sooner than a
//     duration (HTTP Retry-After), capped by [Policy.MaxRetryAfter]; a longer
//     wait, or one beyond the deadline, ends the retries with a clear error.
//   - Budget. A [Budget] shared across calls and goroutines lets retries add
//     at most a fraction of the calls plus a floor per second; when it refuses,
//     Do returns the last error with [ErrBudgetExhausted] in its chain.
//   - Errors. When Do gives up on a retryable failure it returns an
//     [*ExhaustedError] matching [ErrExhausted] that keeps the last error and
//     the cause, so errors.As still finds a *dial.Error and its phase.
//   - Telemetry. Each attempt is a span ("retry.attempt") under the caller's
//     span, with lifeline.retry.attempt, lifeline.retry.backoff and
//     error.type; a failed attempt's status description is its error type
//     and its exception event's message has URLs stripped of userinfo, query
//     and fragment, so no secret reaches a span. Metrics count attempts by
//     outcome, retries, budget refusals and recovered calls — calls that
//     succeeded only after a failed attempt, by the first failure's
//     error.type — and every failure such a call masked, on
//     lifeline.masked_failures with lifeline.masked_by=retry, by phase and
//     peer (as *dial.Error labels them), so a fault that retries hide stays
//     visible. Providers are cached for the most recent few pairs only;
//     explicit no-op providers cost no span and no instrument.
//
// Inside the operation, [Attempt] tells which attempt is running.
//
// The package starts no goroutines. It does not import lifeline's dial
// package: it classifies errors through interface{ Retryable() bool }.
package retry
