// Package upstream keeps what a client learns about one upstream (a host a
// Transport calls, a pool's address, a session's URL) so that callers learn
// an outage in milliseconds and a drowning upstream gets room to recover:
//
//   - [Gate]: whether the upstream is reachable (fail fast while it is
//     known down, probes at a bounded pace, the first success re-opens it
//     for everyone) and the pause a server advised (429, Retry-After).
//   - [Throttle]: client-side adaptive throttling (Google SRE, "Handling
//     Overload"): a share of new calls is rejected locally when a growing
//     share of answers are overload signals.
//
// Both have a ready zero value, own no goroutine (but a Gate's background
// probe, while Down, when given a prober), are safe for concurrent
// use and cost one atomic load on the happy path (a Ready gate with no dial
// pending, a throttle that rejects nothing). A call that must not go fails
// with an [*UnavailableError].
package upstream
