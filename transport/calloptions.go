package transport

import (
	"context"
	"time"

	"github.com/lifeline-go/lifeline/internal/retryx"
	"github.com/lifeline-go/lifeline/retry"
)

// CallOptions change how a [Transport] treats the calls made with a
// context that carries them ([WithCallOptions]): one Transport, and its
// pool, serves calls of different kinds (a long poll, a call that must
// not be retried, one that must not be hedged).
//
// Precedence, field by field: the call's option, else the Transport's
// field, else the default. A zero field leaves the Transport's value;
// a negative FirstByteTimeout, StallTimeout or HedgeDelay turns that limit
// (or hedging) off for the call.
//
// A CallOptions value is only read; one may be shared by any number of
// calls.
type CallOptions struct {
	// Retry replaces the Transport's Retry policy for the call, checked
	// at each call (an invalid policy fails the call, as the Transport's
	// does). Its Budget, when nil, is the Transport's budget, so that the
	// call's retries are still paid from the budget its other calls
	// share; &retry.Policy{MaxAttempts: 1} means no retry for the call.
	// Its AttemptTimeout bounds each attempt as the Transport's does. Nil
	// means the Transport's policy.
	Retry *retry.Policy
	// FirstByteTimeout replaces the Transport's FirstByteTimeout for the
	// call's tries. Negative means no limit (a long poll): a conn dialled
	// for the call then has no first-byte watch of the Dialer's either (a
	// conn dialled for another call and handed to this one keeps it, for
	// its first answer only: at least 30s). StallTimeout still bounds the
	// bodies unless it is negative too. A limit shorter than the
	// Transport's limits is cut at most 100ms late.
	FirstByteTimeout time.Duration
	// StallTimeout replaces the Transport's StallTimeout for the call's
	// request and response bodies. Negative means off.
	StallTimeout time.Duration
	// HedgeDelay, when positive, hedges the call (if it is idempotent and
	// replayable) after this fixed delay, whatever the Transport's
	// hedging; negative means no hedge for the call.
	HedgeDelay time.Duration
	// NoCredentials sends the call without the Transport's Credentials
	// (no Apply, no Refresh after a 401): the request that fetches a
	// token on the same Transport, whose Credentials would otherwise wait
	// for the very token it fetches.
	NoCredentials bool
	// WaitForReady makes the call wait, within its context, for an
	// upstream known down to come back (a probe of its own when one is
	// due) instead of failing at once with an *UnavailableError: a
	// startup path, a long job. See [WaitForReady].
	WaitForReady bool
}

// callOptionsKey is the context key of a call's options.
type callOptionsKey struct{}

// WithCallOptions returns a copy of ctx that carries o for the calls of
// any Transport made with it. Options already in ctx stay where o's field
// is zero: nested calls merge, the inner non-zero fields win.
func WithCallOptions(ctx context.Context, o CallOptions) context.Context {
	if prev, ok := ctx.Value(callOptionsKey{}).(*CallOptions); ok {
		o = prev.merge(o)
	}
	return context.WithValue(ctx, callOptionsKey{}, &o)
}

// CallOptionsFrom returns the options ctx carries (merged, see
// [WithCallOptions]); the zero CallOptions when it carries none.
func CallOptionsFrom(ctx context.Context) CallOptions {
	if o, ok := ctx.Value(callOptionsKey{}).(*CallOptions); ok {
		return *o
	}
	return CallOptions{}
}

// merge returns o with the non-zero fields of inner over it.
func (o *CallOptions) merge(inner CallOptions) CallOptions {
	m := *o
	if inner.Retry != nil {
		m.Retry = inner.Retry
	}
	if inner.FirstByteTimeout != 0 {
		m.FirstByteTimeout = inner.FirstByteTimeout
	}
	if inner.StallTimeout != 0 {
		m.StallTimeout = inner.StallTimeout
	}
	if inner.HedgeDelay != 0 {
		m.HedgeDelay = inner.HedgeDelay
	}
	m.NoCredentials = m.NoCredentials || inner.NoCredentials
	m.WaitForReady = m.WaitForReady || inner.WaitForReady
	return m
}

// callLimits are a call's limits, the Transport's with the call's options
// over them.
type callLimits struct {
	retry     any           // the prepared policy
	retryErr  error         // its error
	attemptTO time.Duration // 0: none
	firstByte time.Duration // 0: off
	stall     time.Duration // 0: off
	hedgeOn   bool
	hedgeFix  time.Duration // > 0: the call's own fixed hedge delay
	creds     Credentials   // nil: none for the call
	// waitForReady: the call waits for an upstream known down.
	waitForReady bool
}

// limits returns the limits of a call made with ctx: the Transport's own
// (shared, not copied) unless ctx carries options.
func (st *state) limits(ctx context.Context) *callLimits {
	o, ok := ctx.Value(callOptionsKey{}).(*CallOptions)
	if !ok {
		return &st.lim
	}
	l := st.lim
	if o.Retry != nil {
		p := st.adopt(*o.Retry)
		l.attemptTO = p.AttemptTimeout
		p.AttemptTimeout = 0
		l.retry, l.retryErr = retryx.Prepare(&p)
	}
	if o.FirstByteTimeout != 0 {
		l.firstByte = max(o.FirstByteTimeout, 0)
	}
	if o.StallTimeout != 0 {
		l.stall = max(o.StallTimeout, 0)
	}
	if o.NoCredentials {
		l.creds = nil
	}
	l.waitForReady = o.WaitForReady
	switch {
	case o.HedgeDelay < 0:
		l.hedgeOn = false
	case o.HedgeDelay > 0:
		l.hedgeOn, l.hedgeFix = true, o.HedgeDelay
	}
	return &l
}
