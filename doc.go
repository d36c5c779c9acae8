// Package lifeline is a Go SDK core for network clients that must never hang.
//
// It turns the lessons of real outages into one library: every phase of a
// connection has its own finite deadline, dials race the resolved addresses,
// pools evict what went stale, retries back off inside a budget, and every
// attempt is an OpenTelemetry span — so a failure that retries hide is still
// seen.
//
// The packages:
//
//   - [github.com/lifeline-go/lifeline/dial]: a Dialer with separate, finite
//     deadlines for DNS, connect, TLS and first byte; happy-eyeballs racing
//     (RFC 8305) won only by an address that completes the whole
//     establishment; and Health, a memory of addresses that failed.
//   - [github.com/lifeline-go/lifeline/retry]: jittered backoff, a shared
//     retry budget, idempotency rules, capped Retry-After; it never sleeps
//     past a deadline.
//   - [github.com/lifeline-go/lifeline/pool]: a capped connection pool for
//     raw-protocol clients that evicts idle, old, broken and dead
//     connections, checks liveness on checkout, and limits the rate of new
//     dials.
//   - [github.com/lifeline-go/lifeline/transport]: an http.RoundTripper
//     (HTTP/1.1 and HTTP/2) with a first-byte and a stall limit, retries of
//     what is safe within a budget, fixed and adaptive hedging and a max
//     connection lifetime; it counts the failures retries and hedges
//     masked.
//
// The zero value of every config is safe: nothing waits forever unless a
// negative value opts out explicitly.
//
// For HTTP, one line gives all of it:
//
//	client := transport.NewClient(&transport.Transport{HedgeQuantile: 0.95})
//
// An end-to-end use of the lower layers, dialing with bounded phases and
// retrying inside a budget:
//
//	budget := retry.NewBudget(0.1, 1)
//	policy := &retry.Policy{Budget: budget}
//	d := &dial.Dialer{Health: new(dial.Health)}
//	conn, err := retry.Do(ctx, policy, func(ctx context.Context) (net.Conn, error) {
//		return d.DialTLSContext(ctx, "tcp", "api.example.com:443")
//	})
//	var de *dial.Error
//	if errors.As(err, &de) {
//		log.Printf("broke in phase %s at %s", de.Phase, de.Peer)
//	}
package lifeline
