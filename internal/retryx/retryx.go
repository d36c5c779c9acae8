package retryx

import "context"

// DoLean is (*retry.Policy).Do for p (a *retry.Policy) and the operation
// op(ctx, arg), except that the attempts' contexts do not carry their
// number (retry.Attempt reads the caller's): one allocation less per
// attempt, for a caller whose op never asks for it. op is a plain function
// and arg its state, so that no closure escapes through this variable. Set
// by package retry when it is initialised.
var DoLean func(p any, ctx context.Context, op func(ctx context.Context, arg any) error, arg any) error
