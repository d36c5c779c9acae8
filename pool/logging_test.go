package pool_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/pool"
)

type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// TestLogFloodStaysSmall: 1,000 acquires against a database that refuses
// every dial (each error dragging a large payload, incident 05) log one
// short record of the failure and one of the upstream found down, and
// Close writes the count of the failures held back.
func TestLogFloodStaysSmall(t *testing.T) {
	var buf logBuf
	payload := strings.Repeat("pending-request;", 10_000)
	p := newPool(t, pool.Config{
		Name:     "db",
		Logger:   slog.New(slog.NewTextHandler(&buf, nil)),
		DialRate: -1,
		Dial: func(ctx context.Context) (net.Conn, error) {
			return nil, errors.New("connect: refused; " + payload)
		},
	})
	var wg sync.WaitGroup
	for range 20 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				if c, err := p.Acquire(ctx); err == nil {
					c.Release()
					t.Error("acquired from a pool whose dials all fail")
				}
				cancel()
			}
		}()
	}
	wg.Wait()
	// The records are written on the pool's log goroutine: wait for the
	// two, then a little for any more that would be wrong.
	for deadline := time.Now().Add(10 * time.Second); strings.Count(buf.String(), "\n") < 2 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	time.Sleep(50 * time.Millisecond)
	before := strings.Count(buf.String(), "\n")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	lines := strings.Split(strings.TrimSpace(out), "\n")
	t.Logf("%d records (%d before Close), %d bytes:\n%s", len(lines), before, len(out), out)
	// The first failure, the upstream found down (after 5 failures in a
	// row: the rest fail fast without a dial), and a summary at Close.
	if before != 2 || len(lines) != 3 {
		t.Fatalf("want one failure record, one 'upstream down' and one summary at Close, got %d lines", len(lines))
	}
	if !strings.Contains(lines[0], "pool=db") || !strings.Contains(lines[1], "upstream down") ||
		!strings.Contains(lines[1], "pool=db") || !strings.Contains(lines[2], "suppressed=") {
		t.Fatalf("records: %s", out)
	}
	if len(out) > 2048 {
		t.Fatalf("%d bytes of log", len(out))
	}
}
