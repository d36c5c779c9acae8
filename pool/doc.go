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
