package logx

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// MaxQueued caps the records a [Queue] holds while its handler is busy;
// beyond it records are counted, not kept, and one record says how many
// were dropped once the handler takes records again.
const MaxQueued = 256

// Queue writes a Limiter's records on a goroutine of its own, so that a
// Logger's handler — the caller's code — never runs where lifeline holds a
// lock, inside an OpenTelemetry collection, or on a goroutine that Close
// waits for: a slow handler delays only its own records, and one that
// calls back into its user (a Pool's Stats, say) cannot deadlock it.
// Records are written in the order they were queued, one at a time. The
// writer goroutine runs while records are queued and ends when none are
// left, so an idle Queue holds no goroutine. None of the handler's code
// runs on the caller's goroutine, its Enabled included. A panic in the
// handler is recovered on the writer (no caller could recover it there):
// the record is lost and one record says so. A nil *Queue (no Logger)
// does nothing.
//
// [Queue.Close] queues the last records (the Limiter's summaries) and
// takes no more; it waits a bounded time for them to be written.
type Queue struct {
	lm *Limiter

	mu      sync.Mutex // guards the fields below; never held across a write
	q       []record
	dropped int           // records not kept since the last written
	done    chan struct{} // closed when the running writer ends; nil: none runs
	closed  bool
}

// NewQueue returns a Queue writing lm's records, or nil for a nil lm.
func NewQueue(lm *Limiter) *Queue {
	if lm == nil {
		return nil
	}
	return &Queue{lm: lm}
}

// Failure counts a failure as [Limiter.Failure] does and queues the records
// it calls for. It never waits on the handler and runs none of its code
// (not even Enabled, which the writer asks: a handler's Enabled that waits
// on its sink would hold the caller where it called from). A record keeps
// ctx's values but not its end: it is written later, when ctx may be
// done. Nothing is counted or queued after Close.
func (q *Queue) Failure(ctx context.Context, kind, msg string, err error, attrs ...slog.Attr) {
	if q == nil {
		return
	}
	// Counted and queued under q.mu, so that a Failure is wholly before
	// Close or not counted at all: one counted as written and then
	// dropped would take its kind's turn for the interval from every user
	// of the Logger, with nothing written.
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return
	}
	q.addLocked(q.lm.count(context.WithoutCancel(ctx), kind, msg, err, attrs))
}

// Close queues the Limiter's summaries of failures not yet reported as the
// last records, takes no more, and waits until they are written or wait
// has passed (a handler that blocks keeps its records, not its caller).
// Later calls return at once.
func (q *Queue) Close(wait time.Duration) {
	if q == nil {
		return
	}
	q.mu.Lock()
	if q.closed {
		q.mu.Unlock()
		return
	}
	q.addLocked(q.lm.flush(context.Background()))
	q.closed = true
	done := q.done
	q.mu.Unlock()
	if done == nil {
		return
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// addLocked queues recs and starts the writer when none runs. q.mu is
// held.
func (q *Queue) addLocked(recs []record) {
	if len(recs) == 0 {
		return
	}
	if room := MaxQueued - len(q.q); len(recs) > room {
		q.dropped += len(recs) - room
		recs = recs[:room]
	}
	q.q = append(q.q, recs...)
	if q.done == nil {
		q.done = make(chan struct{})
		go q.run(q.done)
	}
}

// run writes the queued records, one at a time, until none are left. A
// handler that ends the writer's goroutine (runtime.Goexit: a test's
// t.FailNow in a handler) loses its record and hands the rest to a new
// writer.
func (q *Queue) run(done chan struct{}) {
	l := q.lm.l
	finished := false
	defer func() {
		if !finished {
			go q.run(done)
		}
	}()
	for {
		q.mu.Lock()
		var r record
		switch {
		case len(q.q) > 0:
			r = q.q[0]
			q.q[0] = record{}
			q.q = q.q[1:]
		case q.dropped > 0:
			r = record{context.Background(), "lifeline: log records dropped",
				[]slog.Attr{slog.String("why", "the Logger's handler fell behind"), slog.Int("dropped", q.dropped)}}
			q.dropped = 0
		default:
			q.q = nil
			q.done = nil
			q.mu.Unlock()
			finished = true
			close(done)
			return
		}
		q.mu.Unlock()
		writeRecovered(l, r)
	}
}

// writeRecovered writes r, recovering a panic of the handler's: the writer
// runs where no caller could recover it, and a bug in the handler should
// cost its record, not the program (nor the records after it). One record
// says so, with the panic's value cut short; if the handler panics on that
// too, nothing more is tried.
func writeRecovered(l *slog.Logger, r record) {
	v := tryWrite(l, r)
	if v == nil {
		return
	}
	tryWrite(l, record{context.Background(), "lifeline: log record lost: the Logger's handler panicked",
		[]slog.Attr{slog.String("of", r.msg), slog.String("panic", panicText(v))}})
}

// tryWrite writes r and returns the handler's panic value, if any.
func tryWrite(l *slog.Logger, r record) (v any) {
	defer func() { v = recover() }()
	r.write(l)
	return nil
}

// panicText is a panic value for a record: an error's or a string's text,
// cut as an error's is; of anything else only its type (a value that
// could be a large struct is never formatted).
func panicText(v any) string {
	switch v := v.(type) {
	case error:
		return ErrorText(v)
	case string:
		return Cut(v, MaxErrorLen)
	default:
		return fmt.Sprintf("%T", v)
	}
}
