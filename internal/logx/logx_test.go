package logx_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/internal/logx"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// clock is a manual clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *lockedBuf) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *lockedBuf) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

func lines(s string) []string {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// bigError is the kind of value incident 05 logged: a failure that drags
// a large structure along. Only its Error text may reach the log, cut.
type bigError struct{ pending []string }

func (e *bigError) Error() string {
	return "connect to backend failed; pending requests: " + strings.Join(e.pending, ",")
}

// TestFloodStaysSmall floods a Limiter with 100,000 failures of three
// kinds from 8 goroutines over 60 simulated seconds, each error dragging
// 10,000 request IDs: the log holds about one record per kind per
// interval, every record is short, and the suppressed counts add up to
// every failure that was not logged.
func TestFloodStaysSmall(t *testing.T) {
	var buf lockedBuf
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	lim := logx.New(slog.New(slog.NewJSONHandler(&buf, nil)), 10*time.Second, clk.now)
	big := &bigError{}
	for i := range 10_000 {
		big.pending = append(big.pending, fmt.Sprintf("req-%d", i))
	}
	kinds := []string{"dial.connect_refused", "http.first_byte_timeout", "pool.dial"}
	const total = 100_000
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := g; i < total; i += 8 {
				if g == 0 && i%(total/600) == 0 {
					clk.add(100 * time.Millisecond) // 60s over the flood
				}
				lim.Failure(context.Background(), kinds[i%3], "lifeline: failed", big, slog.String("address", "db:5432"))
			}
		}()
	}
	wg.Wait()
	clk.add(time.Minute)
	lim.Flush(context.Background())

	out := buf.String()
	ls := lines(out)
	t.Logf("%d failures → %d records, %d bytes", total, len(ls), len(out))
	// 60s at one record per kind per 10s: ≤ 7 per kind, plus summaries.
	if len(ls) > 3*8+3 {
		t.Fatalf("%d records for %d failures:\n%s", len(ls), total, out)
	}
	if len(out) > 16<<10 {
		t.Fatalf("log is %d bytes", len(out))
	}
	logged, suppressed := 0, 0
	for _, l := range ls {
		if len(l) > logx.MaxErrorLen+300 {
			t.Fatalf("record of %d bytes: %.200s…", len(l), l)
		}
		var n int
		if i := strings.Index(l, `"suppressed":`); i >= 0 {
			_, _ = fmt.Sscanf(l[i+len(`"suppressed":`):], "%d", &n)
			suppressed += n
		}
		if !strings.Contains(l, "suppressed similar failures") {
			logged++
		}
	}
	if logged+suppressed != total {
		t.Fatalf("%d logged + %d suppressed = %d, want %d", logged, suppressed, logged+suppressed, total)
	}
	if strings.Contains(out, "req-9999") {
		t.Fatal("the error's payload reached the log whole")
	}
}

// TestIntervalPerKind: a kind logs once per interval, with the count of
// what it held back; another kind is not held back by the first; a kind
// gone quiet is summarised by the next call of another kind.
func TestIntervalPerKind(t *testing.T) {
	var buf lockedBuf
	clk := &clock{t: time.Unix(0, 0)}
	lim := logx.New(slog.New(slog.NewTextHandler(&buf, nil)), 10*time.Second, clk.now)
	ctx := context.Background()
	err := errors.New("boom")
	for range 5 {
		lim.Failure(ctx, "a", "lifeline: a failed", err)
	}
	lim.Failure(ctx, "b", "lifeline: b failed", err)
	if got := len(lines(buf.String())); got != 2 {
		t.Fatalf("%d records, want 2 (a once, b once):\n%s", got, buf.String())
	}
	clk.add(10 * time.Second)
	lim.Failure(ctx, "a", "lifeline: a failed", err)
	ls := lines(buf.String())
	if len(ls) != 3 || !strings.Contains(ls[2], "suppressed=4") {
		t.Fatalf("want a's second record with suppressed=4:\n%s", buf.String())
	}
	lim.Failure(ctx, "a", "lifeline: a failed", err) // held back
	clk.add(11 * time.Second)
	lim.Failure(ctx, "b", "lifeline: b failed", err)
	out := buf.String()
	if !strings.Contains(out, `kind=a suppressed=1 of="lifeline: a failed"`) {
		t.Fatalf("no summary of quiet kind a:\n%s", out)
	}
}

// TestKindsCapped: kinds beyond MaxKinds share "other", so a flood of
// distinct kinds is bounded too.
func TestKindsCapped(t *testing.T) {
	var buf lockedBuf
	clk := &clock{t: time.Unix(0, 0)}
	lim := logx.New(slog.New(slog.NewTextHandler(&buf, nil)), time.Minute, clk.now)
	for i := range 10_000 {
		lim.Failure(context.Background(), fmt.Sprintf("k%d", i), "lifeline: failed", errors.New("x"))
	}
	if got := len(lines(buf.String())); got != logx.MaxKinds+1 {
		t.Fatalf("%d records, want %d", got, logx.MaxKinds+1)
	}
}

// TestNilAndShared: no Logger, no Limiter, no output, no panic; one
// Limiter per Logger; a disabled level costs no record.
func TestNilAndShared(t *testing.T) {
	var lim *logx.Limiter = logx.For(nil)
	if lim != nil {
		t.Fatal("For(nil) is not nil")
	}
	lim.Failure(context.Background(), "k", "m", errors.New("x"))
	lim.Flush(context.Background())

	var buf lockedBuf
	l := slog.New(slog.NewTextHandler(&buf, nil))
	a, b := logx.For(l), logx.For(l)
	a.Failure(context.Background(), "k", "m", errors.New("x"))
	b.Failure(context.Background(), "k", "m", errors.New("x")) // same kind, same Logger: held back
	if got := len(lines(buf.String())); got != 1 {
		t.Fatalf("%d records from two users of one Logger, want 1:\n%s", got, buf.String())
	}

	var quiet lockedBuf
	ql := slog.New(slog.NewTextHandler(&quiet, &slog.HandlerOptions{Level: slog.LevelError}))
	logx.For(ql).Failure(context.Background(), "k", "m", errors.New("x"))
	if quiet.String() != "" {
		t.Fatalf("logged below the handler's level: %s", quiet.String())
	}
	runtime.KeepAlive(l)
}

func TestErrorText(t *testing.T) {
	err := errors.New(`Get "https://alice:pw@host/v1?api_key=SECRET#frag": EOF ` + strings.Repeat("é", 400))
	got := logx.ErrorText(err)
	if strings.Contains(got, "SECRET") || strings.Contains(got, "alice") || strings.Contains(got, "pw@") {
		t.Fatalf("secret in %q", got)
	}
	if len(got) > logx.MaxErrorLen+len("…") || !strings.HasSuffix(got, "…") {
		t.Fatalf("not cut: %d bytes", len(got))
	}
	if !strings.HasPrefix(got, `Get "https://host/v1": EOF`) {
		t.Fatalf("got %q", got)
	}
}
