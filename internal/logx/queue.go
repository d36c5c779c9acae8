package logx

import (
	"context"
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
// left, so an idle Queue holds no goroutine. A nil *Queue (no Logger)
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
// it calls for. It never waits on the handler. Nothing is queued after
// Close.
func (q *Queue) Failure(ctx context.Context, kind, msg string, err error, attrs ...slog.Attr) {
	if q == nil {
		return
	}
	q.mu.Lock()
	closed := q.closed
	q.mu.Unlock()
	if closed {
		return
	}
	q.add(q.lm.failure(ctx, kind, msg, err, attrs), false)
}

// Close queues the Limiter's summaries of failures not yet reported as the
// last records, takes no more, and waits until they are written or wait
// has passed (a handler that blocks keeps its records, not its caller).
// Later calls return at once.
func (q *Queue) Close(wait time.Duration) {
	if q == nil {
		return
	}
	done := q.add(q.lm.flush(context.Background()), true)
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

// add queues recs (last: and closes the queue) and starts the writer when
// none runs. It returns the running writer's done channel (nil: none).
func (q *Queue) add(recs []record, last bool) chan struct{} {
	q.mu.Lock()
	defer q.mu.Unlock()
	if q.closed {
		return nil
	}
	q.closed = last
	if len(recs) == 0 {
		return q.done
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
	return q.done
}

// run writes the queued records until none are left.
func (q *Queue) run(done chan struct{}) {
	l := q.lm.l
	for {
		q.mu.Lock()
		batch, dropped := q.q, q.dropped
		q.q, q.dropped = nil, 0
		if len(batch) == 0 && dropped == 0 {
			q.done = nil
			q.mu.Unlock()
			close(done)
			return
		}
		q.mu.Unlock()
		for _, r := range batch {
			r.write(l)
		}
		if dropped > 0 {
			l.LogAttrs(context.Background(), slog.LevelWarn, "lifeline: log records dropped",
				slog.String("why", "the Logger's handler fell behind"), slog.Int("dropped", dropped))
		}
	}
}
