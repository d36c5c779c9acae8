// Package interop holds lifeline's comparisons with peer libraries and its
// use with real clients. It is a separate module so that the peers never
// become dependencies of the library itself.
//
// Real servers: redis_*_test.go and postgres_*_test.go install (when
// missing and root) and start Debian's redis-server and PostgreSQL on
// loopback ports, drive lifeline's pool against them through server-side
// idle timeouts and connection-kill storms, and stop them afterwards
// (incident 03: a pool capped below max_connections never runs the server
// out, and a control capped above it does).
//
// Recipes: recipe_*_test.go run docs/dial.md's "In real clients" snippets —
// lifeline's Dialer inside net/http, grpc-go, go-redis, pgx and
// gorilla/websocket — against real servers on loopback, each through a name
// only the Dialer's Resolver knows, and TestReadmeRecipesInSync fails when a
// docs/dial.md snippet and the code its test runs differ.
//
// pool_puddle_test.go benchmarks a warm Acquire+Release of lifeline's
// pool.Pool against github.com/jackc/puddle/v2 (the pool under pgxpool) with
// the same shape, named so that benchstat lines them up:
//
//	go test -run '^$' -bench AcquireRelease -benchmem -cpu 1,2 -count 6 . > /tmp/interop.txt
//	benchstat -col /impl /tmp/interop.txt
package interop
