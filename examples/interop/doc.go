// Package interop holds lifeline's comparisons with peer libraries and its
// use with real clients. It is a separate module so that the peers never
// become dependencies of the library itself.
//
// pool_puddle_test.go benchmarks a warm Acquire+Release of lifeline's
// pool.Pool against github.com/jackc/puddle/v2 (the pool under pgxpool) with
// the same shape, named so that benchstat lines them up:
//
//	go test -run '^$' -bench AcquireRelease -benchmem -cpu 1,2 -count 6 . > /tmp/interop.txt
//	benchstat -col /impl /tmp/interop.txt
package interop
