package logx_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/internal/logx"
)

// recorder is a slog.Handler that keeps each record's message and kind,
// and runs block (when set) before it does.
type recorder struct {
	mu    sync.Mutex
	msgs  []string
	gid   []string // the goroutine each record was written on
	block func(msg string)
}

func (r *recorder) Enabled(context.Context, slog.Level) bool { return true }
func (r *recorder) WithAttrs([]slog.Attr) slog.Handler       { return r }
func (r *recorder) WithGroup(string) slog.Handler            { return r }
func (r *recorder) Handle(_ context.Context, rec slog.Record) error {
	if r.block != nil {
		r.block(rec.Message)
	}
	line := rec.Message
	rec.Attrs(func(a slog.Attr) bool {
		if a.Key == "kind" || a.Key == "dropped" || a.Key == "suppressed" {
			line += " " + a.Key + "=" + a.Value.String()
		}
		return true
	})
	r.mu.Lock()
	r.msgs = append(r.msgs, line)
	r.gid = append(r.gid, goid())
	r.mu.Unlock()
	return nil
}

func (r *recorder) lines() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

// waitLines waits until r holds n records (5s at most).
func (r *recorder) waitLines(t *testing.T, n int) []string {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for {
		l := r.lines()
		if len(l) >= n || time.Now().After(deadline) {
			return l
		}
		time.Sleep(time.Millisecond)
	}
}

func goid() string {
	var b [64]byte
	s := string(b[:runtime.Stack(b[:], false)])
	return strings.Fields(s)[1]
}

// logsAll returns a Queue over r whose Limiter holds nothing back: its
// clock moves an hour at each look.
func logsAll(r *recorder) *logx.Queue {
	var mu sync.Mutex
	t := time.Unix(0, 0)
	tick := func() time.Time {
		mu.Lock()
		defer mu.Unlock()
		t = t.Add(time.Hour)
		return t
	}
	return logx.NewQueue(logx.New(slog.New(r), time.Minute, tick))
}

// A Queue writes every record, in the order its Failures were made, on a
// goroutine that is not the caller's; a kind's later failures are held
// back and counted as a Limiter does.
func TestQueueWritesInOrderOffTheCaller(t *testing.T) {
	r := &recorder{}
	q := logsAll(r)
	for i := range logx.MaxQueued - 6 { // never more than MaxQueued at once
		q.Failure(context.Background(), "k", fmt.Sprintf("failed %03d", i), errors.New("x"))
		if i%50 == 0 {
			runtime.Gosched() // let the writer run dry and start again
		}
	}
	q.Close(5 * time.Second)
	got := r.lines()
	if len(got) != logx.MaxQueued-6 {
		t.Fatalf("%d records, want %d", len(got), logx.MaxQueued-6)
	}
	for i, l := range got {
		if want := fmt.Sprintf("failed %03d kind=k", i); l != want {
			t.Fatalf("record %d = %q, want %q", i, l, want)
		}
	}
	me := goid()
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, g := range r.gid {
		if g == me {
			t.Fatalf("a record was written on the caller's goroutine")
		}
	}
}

// A handler that blocks holds at most MaxQueued records; the others are
// counted, and one record says how many were dropped once it takes
// records again. Failure never waits for it.
func TestQueueCapsABlockedHandler(t *testing.T) {
	release := make(chan struct{})
	first := make(chan struct{})
	var once sync.Once
	r := &recorder{block: func(string) {
		once.Do(func() { close(first); <-release })
	}}
	q := logsAll(r)
	q.Failure(context.Background(), "k", "first", nil)
	<-first // the writer holds the first record, blocked
	start := time.Now()
	for i := range 1000 {
		q.Failure(context.Background(), "k", fmt.Sprintf("failed %03d", i), nil)
	}
	took := time.Since(start)
	close(release)
	got := r.waitLines(t, 1+logx.MaxQueued+1)
	q.Close(time.Second)
	t.Logf("1000 failures behind a blocked handler took %v", took)
	if len(got) != 1+logx.MaxQueued+1 {
		t.Fatalf("%d records, want the first, %d queued and the drop count", len(got), logx.MaxQueued)
	}
	if got[1] != "failed 000 kind=k" || got[logx.MaxQueued] != fmt.Sprintf("failed %03d kind=k", logx.MaxQueued-1) {
		t.Fatalf("queued records: %q … %q", got[1], got[logx.MaxQueued])
	}
	want := fmt.Sprintf("lifeline: log records dropped dropped=%d", 1000-logx.MaxQueued)
	if l := got[len(got)-1]; l != want {
		t.Fatalf("last record %q, want %q", l, want)
	}
}

// Close queues the summaries last and takes nothing after them; it waits
// for a blocked handler only as long as it is told, and the records are
// still written once the handler returns.
func TestQueueCloseIsLastAndBounded(t *testing.T) {
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	r := &recorder{block: func(msg string) {
		once.Do(func() { close(blocked); <-release })
	}}
	q := logx.NewQueue(logx.New(slog.New(r), time.Hour, nil))
	q.Failure(context.Background(), "a", "failed", nil)
	<-blocked
	q.Failure(context.Background(), "a", "failed", nil) // held back: Close's summary
	start := time.Now()
	q.Close(50 * time.Millisecond)
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("Close waited %v for a blocked handler", d)
	}
	q.Failure(context.Background(), "b", "failed", nil) // after Close: dropped
	q.Close(time.Second)                                // again: at once
	close(release)
	r.waitLines(t, 2)
	time.Sleep(10 * time.Millisecond)
	got := r.lines()
	if len(got) != 2 || got[0] != "failed kind=a" || got[1] != "lifeline: suppressed similar failures kind=a suppressed=1" {
		t.Fatalf("records %q", got)
	}
}

// An idle Queue holds no goroutine: the writer ends when nothing is left
// (goleak in TestMain checks that none is left at the end, too).
func TestQueueIdleHoldsNoGoroutine(t *testing.T) {
	r := &recorder{}
	q := logx.NewQueue(logx.New(slog.New(r), time.Hour, nil))
	before := runtime.NumGoroutine()
	for i := range 10 {
		q.Failure(context.Background(), fmt.Sprint(i), "failed", nil)
	}
	r.waitLines(t, 10)
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before {
		t.Fatalf("%d goroutines after the records were written, %d before", n, before)
	}
	var nilQ *logx.Queue
	nilQ.Failure(context.Background(), "k", "m", nil)
	nilQ.Close(time.Second)
	if logx.NewQueue(nil) != nil {
		t.Fatal("NewQueue(nil) is not nil")
	}
}

// Many goroutines queue at once, a handler that calls back into the
// queue's user included (as a pool's Logger may call the pool): every
// record arrives, and no goroutine waits on another's handler.
func TestQueueConcurrentFailures(t *testing.T) {
	var q *logx.Queue
	r := &recorder{}
	r.block = func(msg string) {
		if msg == "failed" {
			q.Failure(context.Background(), "from-handler", "from the handler", nil)
		}
	}
	q = logsAll(r)
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 20 {
				q.Failure(context.Background(), fmt.Sprint("g", g), "failed", nil)
			}
		}()
	}
	wg.Wait()
	got := r.waitLines(t, 320) // each failure's record and the handler's own
	q.Close(time.Second)
	if len(got) != 320 {
		t.Fatalf("%d records, want 320", len(got))
	}
}

// A handler that ends the writer's goroutine (runtime.Goexit, as a test's
// t.FailNow inside a handler does) loses its record, not the queue: the
// records after it are written, in order, by a new writer, and Close
// still waits for them.
func TestQueueHandlerGoexit(t *testing.T) {
	r := &recorder{}
	r.block = func(msg string) {
		if msg == "exit" {
			runtime.Goexit()
		}
	}
	q := logsAll(r)
	q.Failure(context.Background(), "k", "before", nil)
	q.Failure(context.Background(), "k", "exit", nil)
	q.Failure(context.Background(), "k", "after", nil)
	q.Close(5 * time.Second)
	got := r.lines()
	if len(got) != 2 || got[0] != "before kind=k" || got[1] != "after kind=k" {
		t.Fatalf("records %q, want before and after", got)
	}
}
