package logx_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/internal/logx"
)

// gatedEnabled is a slog.Handler whose Enabled waits, once armed, until
// the gate opens (a handler whose level sits behind its sink's lock while
// the sink stalls), and which keeps what Handle sees of each record.
type gatedEnabled struct {
	armed   atomic.Bool
	entered chan struct{} // closed when an armed Enabled starts waiting
	gate    chan struct{}
	once    sync.Once

	mu   sync.Mutex
	msgs []string
	errs []error // ctx.Err() of each record's context when it was written
	vals []any   // ctx.Value(ctxKey{}) of each record's context
	// panicOn: Handle panics with this value on a record whose message
	// holds it (a handler's bug).
	panicOn string
	// blockOn: Handle waits for unblock on a record whose message holds
	// it (a sink that stalls).
	blockOn string
	unblock chan struct{}
}

type ctxKey struct{}

func newGatedEnabled() *gatedEnabled {
	return &gatedEnabled{entered: make(chan struct{}), gate: make(chan struct{})}
}

func (h *gatedEnabled) Enabled(context.Context, slog.Level) bool {
	if h.armed.Load() {
		h.once.Do(func() { close(h.entered) })
		<-h.gate
	}
	return true
}
func (h *gatedEnabled) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *gatedEnabled) WithGroup(string) slog.Handler      { return h }
func (h *gatedEnabled) Handle(ctx context.Context, r slog.Record) error {
	if h.panicOn != "" && strings.Contains(r.Message, h.panicOn) {
		panic(h.panicOn)
	}
	if h.blockOn != "" && strings.Contains(r.Message, h.blockOn) {
		<-h.unblock
	}
	line := r.Message
	r.Attrs(func(a slog.Attr) bool {
		if a.Key == "kind" || a.Key == "panic" || a.Key == "of" {
			line += " " + a.Key + "=" + a.Value.String()
		}
		return true
	})
	h.mu.Lock()
	h.msgs = append(h.msgs, line)
	h.errs = append(h.errs, ctx.Err())
	h.vals = append(h.vals, ctx.Value(ctxKey{}))
	h.mu.Unlock()
	return nil
}

func (h *gatedEnabled) lines() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([]string(nil), h.msgs...)
}

func (h *gatedEnabled) waitLines(t *testing.T, n int) []string {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(time.Millisecond) {
		if l := h.lines(); len(l) >= n || time.Now().After(deadline) {
			return l
		}
	}
}

// TestAdv33QueueFailureRunsNoHandlerCode: Queue.Failure asked the
// handler's Enabled on the caller's goroutine — which for a Pool is
// under its lock or inside a metric collection. A handler whose Enabled
// waits (its level behind the lock of a sink that stalls) held the caller
// there. Failure now runs no handler code: the writer asks Enabled, as
// slog's LogAttrs does.
func TestAdv33QueueFailureRunsNoHandlerCode(t *testing.T) {
	h := newGatedEnabled()
	q := logx.NewQueue(logx.New(slog.New(h), time.Hour, nil))
	defer q.Close(time.Second)
	defer close(h.gate) // before Close: the writer waits in Enabled
	h.armed.Store(true)
	returned := make(chan struct{})
	go func() {
		defer close(returned)
		q.Failure(context.Background(), "k", "failed", errors.New("x"))
	}()
	select {
	case <-returned:
	case <-time.After(5 * time.Second):
		t.Fatal("Failure still waiting after 5s on the handler's Enabled")
	}
}

// TestAdv33QueueCloseKeepsAFailureBegunBefore: a Failure that began before
// Close (its Enabled was slow) was counted by the Limiter as written, then
// dropped because Close came in between: a record lost, and its kind's
// slot taken for the whole interval from every user of the Logger. Now a
// Failure is queued whole before Close or not counted at all.
func TestAdv33QueueCloseKeepsAFailureBegunBefore(t *testing.T) {
	h := newGatedEnabled()
	l := slog.New(h)
	q := logx.NewQueue(logx.For(l))
	h.armed.Store(true)
	failed := make(chan struct{})
	go func() {
		defer close(failed)
		q.Failure(context.Background(), "adv33.close-race", "failed", nil)
	}()
	<-h.entered // Enabled waits, on the caller's goroutine or the writer's
	q.Close(50 * time.Millisecond)
	h.armed.Store(false)
	close(h.gate)
	<-failed
	if got := h.waitLines(t, 1); len(got) != 1 || got[0] != "failed kind=adv33.close-race" {
		t.Fatalf("records %q, want the failure's", got)
	}
}

// TestAdv33QueueHandlerPanics: a handler that panics on a record ran on
// the Queue's goroutine, where no caller can recover it: the program
// died. The writer now recovers it: that record is lost, one record says
// so (with the panic's value), and the next records are written.
func TestAdv33QueueHandlerPanics(t *testing.T) {
	h := newGatedEnabled()
	h.panicOn = "bad"
	q := logx.NewQueue(logx.New(slog.New(h), time.Hour, nil))
	q.Failure(context.Background(), "a", "bad record", nil)
	q.Failure(context.Background(), "b", "good record", nil)
	q.Close(5 * time.Second)
	got := h.waitLines(t, 2)
	want := []string{
		"lifeline: log record lost: the Logger's handler panicked of=bad record panic=bad",
		"good record kind=b",
	}
	if len(got) != len(want) || got[0] != want[0] || got[1] != want[1] {
		t.Fatalf("records %q, want %q", got, want)
	}
	// A handler that panics on everything, the report included, costs
	// its records and nothing else.
	h2 := newGatedEnabled()
	h2.panicOn = "e" // every message here has an e
	q2 := logx.NewQueue(logx.New(slog.New(h2), time.Hour, nil))
	for _, k := range []string{"a", "b", "c"} {
		q2.Failure(context.Background(), k, "failed", nil)
	}
	q2.Close(5 * time.Second)
	if got := h2.lines(); len(got) != 0 {
		t.Fatalf("records %q from a handler that panics on each", got)
	}
}

// TestAdv33QueueRecordContextOutlivesTheCaller: a record is written
// after its Failure returned, when the caller's context may have ended:
// a handler that skips records of ended contexts (or hands ctx to an
// exporter that gives up on it) lost it. The record keeps the context's
// values, not its end.
func TestAdv33QueueRecordContextOutlivesTheCaller(t *testing.T) {
	h := newGatedEnabled()
	h.blockOn, h.unblock = "first", make(chan struct{})
	q := logx.NewQueue(logx.New(slog.New(h), time.Hour, nil))
	q.Failure(context.Background(), "a", "first", nil) // the writer waits in it
	ctx, cancel := context.WithCancel(context.WithValue(context.Background(), ctxKey{}, "v"))
	q.Failure(ctx, "b", "second", nil)
	cancel()
	close(h.unblock)
	q.Close(5 * time.Second)
	h.waitLines(t, 2)
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.errs) != 2 || h.errs[1] != nil || h.vals[1] != "v" {
		t.Fatalf("record's context: err %v, value %v; want no end and the caller's value", h.errs, h.vals)
	}
}
