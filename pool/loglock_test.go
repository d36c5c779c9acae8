package pool_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/pool"
)

// hookHandler is a slog.Handler that calls hook with each record's message
// (user code, as a Logger's handler is).
type hookHandler struct{ hook func(msg string) }

func (h hookHandler) Enabled(context.Context, slog.Level) bool      { return true }
func (h hookHandler) Handle(_ context.Context, r slog.Record) error { h.hook(r.Message); return nil }
func (h hookHandler) WithAttrs([]slog.Attr) slog.Handler            { return h }
func (h hookHandler) WithGroup(string) slog.Handler                 { return h }

// downPool returns a pool whose dials are all refused, taken down by five
// Acquires, with hook called for each record of its Logger.
func downPool(t *testing.T, hook func(p *pool.Pool, msg string)) *pool.Pool {
	t.Helper()
	var pp atomic.Pointer[pool.Pool]
	p := newPool(t, pool.Config{
		Name:     "db",
		DialRate: -1,
		Logger:   slog.New(hookHandler{func(msg string) { hook(pp.Load(), msg) }}),
		Dial: func(ctx context.Context) (net.Conn, error) {
			return nil, errors.New("connect: connection refused")
		},
	})
	pp.Store(p)
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_, err := p.Acquire(ctx)
		cancel()
		if errors.Is(err, pool.ErrUnavailable) {
			return p
		}
		if i == 20 {
			t.Fatalf("not down after 20 refused dials: %v", err)
		}
	}
}

// TestLoggerHandlerCallsPool: a Logger's handler that asks the pool how it
// is (Stats) when the upstream's state changes. Reset makes the change
// (ready again) with the pool's lock held; its record was written there,
// and the handler's Stats waited for that lock for ever. Now the record is
// written on the pool's own log goroutine, and Reset returns.
func TestLoggerHandlerCallsPool(t *testing.T) {
	var records atomic.Int32
	p := downPool(t, func(p *pool.Pool, msg string) {
		if strings.Contains(msg, "pool upstream") {
			_ = p.Stats()
			records.Add(1)
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Reset()
	}()
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Reset still waiting after 10s: the Logger's handler called Stats under the pool's lock")
	}
	for deadline := time.Now().Add(10 * time.Second); records.Load() < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := records.Load(); n != 2 {
		t.Fatalf("%d records of the upstream's state, want 2 (down, ready again)", n)
	}
}

// TestSlowLoggerHandlerStallsNoOne: a Logger's handler that blocks (a log
// sink that stalls) while it writes the upstream's change made by Reset
// holds up no one: Reset returns, and Stats and Acquire answer meanwhile.
func TestSlowLoggerHandlerStallsNoOne(t *testing.T) {
	release := make(chan struct{})
	blocked := make(chan struct{})
	p := downPool(t, func(p *pool.Pool, msg string) {
		if strings.Contains(msg, "ready again") {
			close(blocked)
			<-release
		}
	})
	done := make(chan struct{})
	go func() {
		defer close(done)
		p.Reset()
	}()
	defer func() { <-done }()
	defer close(release)
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("no 'ready again' record after Reset")
	}
	answered := make(chan struct{})
	go func() {
		defer close(answered)
		_ = p.Stats()
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		if c, err := p.Acquire(ctx); err == nil {
			c.Release()
		}
	}()
	select {
	case <-answered:
	case <-time.After(10 * time.Second):
		t.Fatal("Stats and Acquire waited for a Logger's handler")
	}
	select {
	case <-done:
	case <-time.After(10 * time.Second):
		t.Fatal("Reset waited for a Logger's handler")
	}
}

// TestPoolsSharingALoggerEachLogTheirOutage: two pools log through one
// Logger, which shares its limit of a record per kind per 10s; both lose
// their upstream. Each pool's first dial failure and its going down are
// records of their own (the kinds name the pool): an operator reading the
// log learns that both are down, not only the first.
func TestPoolsSharingALoggerEachLogTheirOutage(t *testing.T) {
	var buf logBuf
	logger := slog.New(slog.NewTextHandler(&buf, nil))
	for _, name := range []string{"orders", "users"} {
		p := newPool(t, pool.Config{
			Name: name, DialRate: -1, Logger: logger,
			Dial: func(ctx context.Context) (net.Conn, error) {
				return nil, errors.New("connect: connection refused")
			},
		})
		for i := 0; ; i++ {
			ctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_, err := p.Acquire(ctx)
			cancel()
			if errors.Is(err, pool.ErrUnavailable) {
				break
			}
			if i == 20 {
				t.Fatalf("%s not down after 20 refused dials: %v", name, err)
			}
		}
	}
	want := []string{"pool=orders", "pool=users"}
	for deadline := time.Now().Add(10 * time.Second); ; {
		out := buf.String()
		n := 0
		for _, l := range strings.Split(out, "\n") {
			for _, w := range want {
				if strings.Contains(l, w) && (strings.Contains(l, "upstream down") || strings.Contains(l, "pool dial failed")) {
					n++
				}
			}
		}
		if n == 4 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d of 4 records (each pool's first dial failure and its going down):\n%s", n, out)
		}
		time.Sleep(time.Millisecond)
	}
}
