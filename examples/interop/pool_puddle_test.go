package interop_test

import (
	"context"
	"net"
	"runtime"
	"testing"

	"github.com/jackc/puddle/v2"
	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/pool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const size = 16

// pipes hands out the client ends of net.Pipe pairs and closes the far ends
// at cleanup; both pools hold the same kind of conn.
type pipes struct{ far []net.Conn }

func (p *pipes) dial(context.Context) (net.Conn, error) {
	c, s := net.Pipe()
	p.far = append(p.far, s) // both pools dial one at a time while warming
	return c, nil
}

func (p *pipes) close() {
	for _, s := range p.far {
		_ = s.Close()
	}
}

func newLifeline(tb testing.TB) *pool.Pool {
	var ps pipes
	p, err := pool.New(pool.Config{Dial: ps.dial, MaxConns: size, DialRate: -1})
	if err != nil {
		tb.Fatal(err)
	}
	conns := make([]*pool.Conn, size)
	for i := range conns {
		if conns[i], err = p.Acquire(context.Background()); err != nil {
			tb.Fatal(err)
		}
	}
	for _, c := range conns {
		c.Release()
	}
	tb.Cleanup(func() { _ = p.Close(); ps.close() })
	return p
}

func newPuddle(tb testing.TB) *puddle.Pool[net.Conn] {
	var ps pipes
	p, err := puddle.NewPool(&puddle.Config[net.Conn]{
		Constructor: ps.dial,
		Destructor:  func(c net.Conn) { _ = c.Close() },
		MaxSize:     size,
	})
	if err != nil {
		tb.Fatal(err)
	}
	res := make([]*puddle.Resource[net.Conn], size)
	for i := range res {
		if res[i], err = p.Acquire(context.Background()); err != nil {
			tb.Fatal(err)
		}
	}
	for _, r := range res {
		r.Release()
	}
	tb.Cleanup(func() { p.Close(); ps.close() })
	return p
}

// Both pools warm to size conns and then reuse them without dialing.
func TestBothPoolsReuse(t *testing.T) {
	lp := newLifeline(t)
	for range 100 {
		c, err := lp.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		c.Release()
	}
	if s := lp.Stats(); s.Dialed != size || s.Open != size {
		t.Fatalf("lifeline: dialed %d, open %d; want %d", s.Dialed, s.Open, size)
	}
	pp := newPuddle(t)
	for range 100 {
		r, err := pp.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		r.Release()
	}
	if s := pp.Stat(); s.TotalResources() != size {
		t.Fatalf("puddle: %d resources; want %d", s.TotalResources(), size)
	}
}

// BenchmarkAcquireRelease: one Acquire+Release of a warm pool of 16 conns.
// seq runs in one goroutine; par in GOMAXPROCS goroutines (set with -cpu);
// g16 in 16 goroutines (SetParallelism), so nobody waits for a conn.
func BenchmarkAcquireRelease(b *testing.B) {
	for _, shape := range []string{"seq", "par", "g16"} {
		for _, impl := range []string{"lifeline", "puddle"} {
			b.Run(shape+"/impl="+impl, func(b *testing.B) {
				var get func(ctx context.Context) error
				switch impl {
				case "lifeline":
					p := newLifeline(b)
					get = func(ctx context.Context) error {
						c, err := p.Acquire(ctx)
						if err == nil {
							c.Release()
						}
						return err
					}
				case "puddle":
					p := newPuddle(b)
					get = func(ctx context.Context) error {
						r, err := p.Acquire(ctx)
						if err == nil {
							r.Release()
						}
						return err
					}
				}
				ctx := context.Background()
				b.ReportAllocs()
				if shape == "seq" {
					for b.Loop() {
						if err := get(ctx); err != nil {
							b.Fatal(err)
						}
					}
					return
				}
				if shape == "g16" {
					b.SetParallelism(max(1, size/runtime.GOMAXPROCS(0)))
				}
				b.RunParallel(func(pb *testing.PB) {
					for pb.Next() {
						if err := get(ctx); err != nil {
							b.Error(err)
							return
						}
					}
				})
			})
		}
	}
}
