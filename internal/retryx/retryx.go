package retryx

import "context"

// Prepare checks p (a *retry.Policy) once and returns what DoPrepared
// runs: the policy with its defaults resolved and its telemetry found, so
// that a caller that runs the same policy for every request does not pay
// for that each time. p must not change afterwards. The error is the one
// Do would return for p. Set by package retry when it is initialised.
var Prepare func(p any) (prepared any, err error)

// DoPrepared is (*retry.Policy).Do for a policy that Prepare returned and
// the operation op(ctx, arg), except that the attempts' contexts do not
// carry their number (retry.Attempt reads the caller's): one allocation
// less per attempt, for a caller whose op never asks for it. op is a plain
// function and arg its state, so that no closure escapes through this
// variable. Set by package retry when it is initialised.
var DoPrepared func(prepared any, ctx context.Context, op func(ctx context.Context, arg any) error, arg any) error

// moreKey is the context key under which an attempt's context run by
// retry.Do answers whether another attempt may follow it.
type moreKey struct{}

// MoreKey is the key package retry's attempt contexts answer with a bool:
// true when the attempt is not the policy's last, so a layer below (the
// dialer) may leave time for the next one.
var MoreKey any = moreKey{}

// MayRetry reports whether ctx is (or derives from) the context of an
// attempt of retry.Do after which another attempt may follow. A context
// outside retry.Do, or of the policy's last attempt, answers false.
func MayRetry(ctx context.Context) bool {
	more, _ := ctx.Value(MoreKey).(bool)
	return more
}
