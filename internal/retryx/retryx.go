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
