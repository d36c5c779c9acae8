package pool_test

import (
	"context"
	"net"
	"runtime"
	"testing"

	"github.com/lifeline-go/lifeline/pool"
)

// benchPool returns a pool warmed with n idle net.Pipe conns; the far ends
// are closed when the benchmark ends.
func benchPool(b *testing.B, n int) *pool.Pool {
	b.Helper()
	var servers []net.Conn
	p, err := pool.New(pool.Config{
		Dial: func(context.Context) (net.Conn, error) {
			c, s := net.Pipe()
			servers = append(servers, s) // dials run one at a time below
			return c, nil
		},
		MaxConns: n, DialRate: -1,
	})
	if err != nil {
		b.Fatal(err)
	}
	conns := make([]*pool.Conn, n)
	for i := range conns {
		if conns[i], err = p.Acquire(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	for _, c := range conns {
		c.Release()
	}
	b.Cleanup(func() {
		_ = p.Close()
		for _, s := range servers {
			_ = s.Close()
		}
	})
	return p
}

// BenchmarkAcquireRelease is one Acquire+Release of a warm pool, the path
// every request takes.
func BenchmarkAcquireRelease(b *testing.B) {
	p := benchPool(b, 16)
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		c, err := p.Acquire(ctx)
		if err != nil {
			b.Fatal(err)
		}
		c.Release()
	}
}

// BenchmarkAcquireReleaseParallel is the same from many goroutines:
// GOMAXPROCS (set with -cpu) goroutines, and 16 with SetParallelism, on a
// pool of 16 conns, so no one waits.
func BenchmarkAcquireReleaseParallel(b *testing.B) {
	for _, bc := range []struct {
		name string
		par  int
	}{{"procs", 1}, {"g16", 0}} {
		b.Run(bc.name, func(b *testing.B) {
			p := benchPool(b, 16)
			ctx := context.Background()
			if bc.par == 0 {
				b.SetParallelism(max(1, 16/runtimeProcs()))
			}
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					c, err := p.Acquire(ctx)
					if err != nil {
						b.Error(err)
						return
					}
					c.Release()
				}
			})
		})
	}
}

func runtimeProcs() int { return runtime.GOMAXPROCS(0) }
