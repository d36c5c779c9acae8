package pool_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/internal/upstream"
	"github.com/lifeline-go/lifeline/pool"
)

// TestLoggerHandlerClosesPoolFromCollection: the metric collection finds
// the pool's dials hanging (the upstream-down gauge asks the gate, which
// takes the upstream down there), and the Logger's handler for that
// change closes the pool — a program that shuts a pool down when its
// upstream is lost. The record used to be written inside the gauge's
// callback, holding the gauge's lock that Close takes to stop observing
// the pool: Collect and Close waited on each other for ever. Now the
// handler runs on the pool's log goroutine: Collect returns, the pool
// closes, and the hung dials end.
func TestLoggerHandlerClosesPoolFromCollection(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	var pp atomic.Pointer[pool.Pool]
	closed := make(chan struct{})
	var once sync.Once
	handler := hookHandler{func(msg string) {
		if strings.Contains(msg, "upstream down") {
			once.Do(func() {
				_ = pp.Load().Close()
				close(closed)
			})
		}
	}}
	var dials atomic.Int32
	p := newPool(t, pool.Config{
		Name:          "db",
		MaxConns:      3,
		DialRate:      -1,
		DialTimeout:   time.Minute,
		MeterProvider: mp,
		Logger:        slog.New(handler),
		Dial: func(ctx context.Context) (net.Conn, error) { // a black hole
			dials.Add(1)
			<-ctx.Done()
			return nil, ctx.Err()
		},
	})
	pp.Store(p)
	var wg sync.WaitGroup
	for range 3 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			if c, err := p.Acquire(ctx); err == nil {
				c.Release()
			}
		}()
	}
	for dials.Load() < 3 {
		time.Sleep(time.Millisecond)
	}
	// Nothing but the collection looks at the pool after the dials have
	// hung past the suspect time: it is the one that finds them hanging.
	time.Sleep(upstream.ColdSuspectAfter + 500*time.Millisecond)

	collected := make(chan struct{})
	go func() {
		defer close(collected)
		var rm metricdata.ResourceMetrics
		_ = reader.Collect(context.Background(), &rm)
	}()
	select {
	case <-collected:
	case <-time.After(10 * time.Second):
		t.Fatal("Collect still running after 10s: the Logger's handler ran inside it")
	}
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's Close still running after 10s (or no 'upstream down' record)")
	}
	wg.Wait() // the Acquires end with the pool
}

// TestCloseWithABlockedLoggerHandler: a dial fails, and the Logger's
// handler blocks on its record (a log sink that stalls). Close waited for
// the dial's goroutine, which was writing the record, for as long as the
// handler blocked. Now Close returns within its bound; the record is
// written when the handler returns.
func TestCloseWithABlockedLoggerHandler(t *testing.T) {
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	var written atomic.Int32
	handler := hookHandler{func(msg string) {
		once.Do(func() { close(blocked); <-release })
		written.Add(1)
	}}
	p, err := pool.New(pool.Config{
		Name:     "db",
		DialRate: -1,
		Logger:   slog.New(handler),
		Dial: func(ctx context.Context) (net.Conn, error) {
			return nil, errors.New("connect: connection refused")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	_, _ = p.Acquire(ctx)
	cancel()
	<-blocked
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = p.Close()
	}()
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		t.Fatal("Close still waiting after 10s for a blocked Logger handler")
	}
	close(release)
	for deadline := time.Now().Add(10 * time.Second); written.Load() < 1 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if written.Load() < 1 {
		t.Fatal("the dial's failure was never written")
	}
}
