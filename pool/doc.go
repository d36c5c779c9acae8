// Package pool is a bounded connection pool for raw-protocol clients
// (databases, caches, custom TCP) that never hands out a dead connection and
// never storms the server.
//
// It is built against two outages (see the project's incidents/): a loop of
// network restarts that made a Postgres pool open connection after connection
// until max_connections ran out, and a cache proxy whose connection count
// exploded under a lossy network. So the pool:
//
//   - never holds more than [Config].MaxConns connections, counting dials in
//     flight, whatever the load or the faults; callers queue in FIFO order and
//     give up at their context's deadline (or AcquireTimeout);
//   - opens new connections at no more than DialRate per second, from
//     goroutines it owns, detached from the impatient caller that triggered
//     them but bounded by DialTimeout; a failed dial fails one waiter fast;
//   - evicts connections idle past MaxIdleTime, older than MaxLifetime ± a
//     per-connection jitter, broken by an I/O error, or found dead by a
//     liveness probe on checkout: bytes nobody asked for are another
//     request's reply, and such a conn is never handed out (TLS conns
//     included, whatever wraps them: TLS tells its own records from data);
//   - hands each holder a clean conn: deadlines set through the [Conn] end
//     at Release, and the conn's own SyscallConn, CloseWrite and CloseRead
//     stay reachable through the wrapper;
//   - reports all of it in [Pool.Stats], as OpenTelemetry metrics
//     (lifeline.pool.connections by state, lifeline.pool.evictions by
//     reason, lifeline.pool.dials, lifeline.pool.acquire.wait) and as a
//     pool.acquire span whenever an Acquire has to wait or dial.
//
// # When the upstream is down
//
// A pool keeps one gate for its upstream (its Config.Name, or "pool", in
// errors and metrics). Ready: dials go. After 5 dials in a row fail (any
// error but a cancel by Close), or when 3 dials have been pending longer
// than max(1s, 4× the upstream's usual connect time) with no success since
// (a black hole), it is Down: an Acquire that finds no live idle conn and
// has no dial in flight for it fails at once with an [*UnavailableError]
// (errors.Is [ErrUnavailable]; Last is the last dial error, so errors.As to
// a *dial.Error still works — but while the only failures are dials still
// pending, a timeout error of the pool's own), instead of queueing for a
// dial that would take DialTimeout to fail. A dial in flight is for the
// Acquires that were waiting when the upstream went down, or, for a probe,
// when it started: not for a later one (a dial an impatient caller left
// behind hangs in a black hole); and the dials waiting for their DialRate
// token when the upstream goes down do not go. Idle conns that pass the
// liveness check are still served. One dial at a time goes as a probe, about once a second
// (±20%) for the first 30s of the outage, then 1.6× slower per probe up to
// 30s apart (gRPC's reconnect backoff), within DialRate and MaxConns; the
// first dial that succeeds makes it Ready again for everyone. An Acquire
// whose context comes from [WaitForReady] waits instead (within its context
// or AcquireTimeout) in the queue, so that a conn released meanwhile still
// reaches it, becomes a probe when one is due, and is served by the dial
// that succeeds. [Config].DisableFailFast turns the gate off. It is
// seen in lifeline.throttled (lifeline.reason "unavailable"),
// lifeline.upstream.down (1 while down) and lifeline.upstream.probes (by
// outcome), all with server.address the pool's name; in [Stats].Unavailable;
// in the pool.acquire span of a fail fast (lifeline.not_attempted
// "unavailable"); and, with a Logger, one record when the upstream goes
// down and one when it is back.
//
// Use:
//
//	p, err := pool.New(pool.Config{
//		Dial: func(ctx context.Context) (net.Conn, error) {
//			return dialer.DialContext(ctx, "tcp", "db.internal:5432")
//		},
//		MaxConns: 20,
//	})
//	...
//	defer p.Close()
//	c, err := p.Acquire(ctx)
//	if err != nil { ... }
//	defer c.Release() // destroyed instead if an I/O error was seen
//	_, err = c.Write(req)
//
// HTTP clients keep net/http's own pool; the transport package applies the
// same rules to it.
package pool
