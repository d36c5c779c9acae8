package upstream

import "context"

// readyKey is the context key of WithWaitForReady.
type readyKey struct{}

// WithWaitForReady returns a copy of ctx whose calls wait, within ctx, for
// an upstream known down instead of failing at once: the one context mark
// that every client with a [Gate] of its own (a pool, a transport, a
// session) can read, so that one WaitForReady reaches them all.
func WithWaitForReady(ctx context.Context) context.Context {
	if WaitsForReady(ctx) {
		return ctx
	}
	return context.WithValue(ctx, readyKey{}, true)
}

// WaitsForReady reports whether ctx was made by WithWaitForReady (or
// descends from such a context).
func WaitsForReady(ctx context.Context) bool {
	v, _ := ctx.Value(readyKey{}).(bool)
	return v
}
