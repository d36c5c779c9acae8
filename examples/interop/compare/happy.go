package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"
)

// runHappyPath is scenario (f): keep-alive GETs to a healthy loopback
// server. testing.Benchmark measures time and allocations per call, reps
// times, the contenders interleaved rep by rep; then an interleaved loop
// (call i of every contender before call i+1 of any) gives the latency
// distribution.
func runHappyPath(ctx context.Context, o options) (*section, error) {
	reps, samples := 5, 2000
	if o.short {
		reps, samples = 1, 100
	}
	var cl cleanups
	defer cl.run()
	clients := make([]*http.Client, len(contenders))
	backends := make([]*backend, len(contenders))
	for c, ct := range contenders {
		// A server per contender, so that each one's requests are counted.
		be, err := listenBackend(nil, 0)
		if err != nil {
			return nil, err
		}
		cl.add(be.close)
		backends[c] = be
		client, done := ct.build(&env{})
		cl.add(done)
		clients[c] = client
	}
	urls := make([]string, len(contenders))
	for c, be := range backends {
		urls[c] = "http://" + be.addr() + "/"
	}
	req := request{method: http.MethodGet, id: "bench"}
	get := func(c int) error { return roundTrip(ctx, clients[c], urls[c], req) }
	for c := range clients { // warm each pool
		for range 4 {
			if err := get(c); err != nil {
				return nil, fmt.Errorf("%s: warm-up: %w", contenders[c].name, err)
			}
		}
	}

	type bench struct{ ns, allocs, bytes []float64 }
	benches := make([]bench, len(contenders))
	for range reps {
		for c := range clients {
			var failed error
			r := testing.Benchmark(func(b *testing.B) {
				b.ReportAllocs()
				for range b.N {
					if err := get(c); err != nil && failed == nil {
						failed = err
					}
				}
			})
			if failed != nil {
				return nil, fmt.Errorf("%s: benchmark: %w", contenders[c].name, failed)
			}
			benches[c].ns = append(benches[c].ns, float64(r.NsPerOp()))
			benches[c].allocs = append(benches[c].allocs, float64(r.AllocsPerOp()))
			benches[c].bytes = append(benches[c].bytes, float64(r.AllocedBytesPerOp()))
		}
	}

	for _, be := range backends {
		be.requests.Store(0)
	}
	got := make([][]call, len(contenders))
	for range samples {
		for c := range clients {
			s := time.Now()
			err := get(c)
			got[c] = append(got[c], call{start: s, end: time.Now(), err: err})
		}
	}
	for c := range got { // attempts here: requests the server answered
		if n := len(got[c]); n > 0 {
			got[c][0].attempts = backends[c].requests.Load()
		}
	}

	base := median(benches[0].ns)
	baseAllocs := median(benches[0].allocs)
	s := &section{
		about:     fmt.Sprintf("Keep-alive GETs (2-byte answer) to a healthy net/http server on loopback, one server per contender, one call at a time. Time and allocations per call from `testing.Benchmark` (%s each), %d runs per contender, interleaved run by run (net/http default, then each other contender, then again); the median and the range over the runs. The latency columns come from %d further calls per contender, interleaved call by call. The client's own allocations are counted together with the server's (same process), which are the same for every contender.", o.benchtime, reps, samples),
		attempts:  "requests the server answered per call",
		extraCols: []string{"ns/op (median, range)", "× net/http", "allocs/op", "+ allocs", "B/op"},
		notes:     []string{"`× net/http` is the ratio of medians to net/http default's; `+ allocs` the difference of median allocations per call. On a shared 2-core machine the time range is wide; the allocation counts are exact and do not vary from run to run."},
	}
	for c, ct := range contenders {
		b := benches[c]
		ns := median(b.ns)
		s.rows = append(s.rows, row{name: ct.name, st: summarise(got[c]), extra: []string{
			fmt.Sprintf("%.0f (%.0f–%.0f)", ns, slices.Min(b.ns), slices.Max(b.ns)),
			fmt.Sprintf("%.2f", ns/base),
			fmt.Sprintf("%.0f", median(b.allocs)),
			fmt.Sprintf("%+.0f", median(b.allocs)-baseAllocs),
			fmt.Sprintf("%.0f", median(b.bytes)),
		}})
	}
	return s, nil
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}
