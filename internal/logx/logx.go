// Package logx logs lifeline's failures through a caller's *slog.Logger
// without ever making an outage worse (incident 05: error logging of large
// structs amplified a network fault into a CPU storm).
//
// Every failure has a kind (a component and a low-cardinality error type,
// e.g. "dial.connect_refused"). Per kind, the first failure is logged and
// then at most one per Interval; the ones in between are counted, and the
// next record of that kind carries "suppressed"=N. When a kind goes quiet
// with failures still uncounted, the next call of any kind (or Flush)
// writes a summary record "lifeline: suppressed similar failures" with the
// count. Kinds are capped (MaxKinds); beyond the cap failures share the kind
// "other". A record holds a few short strings only: the error's text is
// stripped of URLs' userinfo and query (otelx.Redact) and cut to
// MaxErrorLen bytes; no struct is ever formatted.
//
// A Limiter is shared by everything that logs through the same *slog.Logger
// (a Transport, its Dialer, a Pool): [For] returns it. A nil *Limiter (no
// Logger) logs nothing and costs nothing.
package logx

import (
	"context"
	"log/slog"
	"runtime"
	"sync"
	"time"
	"unicode/utf8"
	"weak"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// Defaults of a Limiter.
const (
	// Interval is the least time between two records of one kind.
	Interval = 10 * time.Second
	// MaxKinds caps the kinds a Limiter tracks; more share "other".
	MaxKinds = 64
	// MaxErrorLen caps the error text in a record, in bytes.
	MaxErrorLen = 256
	// sweepEvery is how often a call looks for quiet kinds with
	// suppressed failures to summarise.
	sweepEvery = time.Second
)

// KindOther is the kind of failures beyond MaxKinds.
const KindOther = "other"

// Limiter rate-limits failure records per kind. Use [For] or [New]; a
// nil *Limiter logs nothing. Safe for concurrent use.
type Limiter struct {
	l  *slog.Logger
	st *limits
}

// limits is the state a Limiter's records are counted in; shared by every
// Limiter of one Logger.
type limits struct {
	interval time.Duration
	now      func() time.Time

	mu        sync.Mutex // guards the fields below
	kinds     map[string]*kindState
	lastSweep time.Time
}

type kindState struct {
	last       time.Time // the last record of this kind
	suppressed int       // failures since then, not logged
	msg        string    // the message of the kind's records
}

func newLimits(interval time.Duration, now func() time.Time) *limits {
	if interval <= 0 {
		interval = Interval
	}
	if now == nil {
		now = time.Now
	}
	return &limits{interval: interval, now: now, kinds: map[string]*kindState{}}
}

// New returns a Limiter over l with the given interval (0: Interval) and
// state of its own, or nil when l is nil. now is the clock (nil:
// time.Now). Most code wants [For], which shares the state per Logger.
func New(l *slog.Logger, interval time.Duration, now func() time.Time) *Limiter {
	if l == nil {
		return nil
	}
	return &Limiter{l: l, st: newLimits(interval, now)}
}

// registry holds the limits of each live *slog.Logger, keyed weakly: a
// Logger no longer referenced takes its entry with it (loggers made per
// request do not pile up). The limits do not point at the Logger; the
// Limiters that For returns do, so a Logger lives as long as its users.
var registry struct {
	mu sync.Mutex
	m  map[weak.Pointer[slog.Logger]]*limits
}

// For returns a Limiter over l whose counts are shared by every user of l
// (a Transport, its Dialer, a Pool: one budget of records per Logger); nil
// for a nil l.
func For(l *slog.Logger) *Limiter {
	if l == nil {
		return nil
	}
	wp := weak.Make(l)
	registry.mu.Lock()
	defer registry.mu.Unlock()
	st, ok := registry.m[wp]
	if !ok {
		if registry.m == nil {
			registry.m = map[weak.Pointer[slog.Logger]]*limits{}
		}
		st = newLimits(Interval, nil)
		registry.m[wp] = st
		runtime.AddCleanup(l, func(wp weak.Pointer[slog.Logger]) {
			registry.mu.Lock()
			delete(registry.m, wp)
			registry.mu.Unlock()
		}, wp)
	}
	return &Limiter{l: l, st: st}
}

// Failure logs a failure of kind at level Warn, unless another of the same
// kind was logged less than the interval ago: then it is counted, and
// reported with the next record of the kind (or a summary). msg is a short
// constant ("lifeline: dial failed"); err's text is redacted and cut; attrs
// must be short strings or numbers. It does nothing on a nil Limiter. The
// records are written on the caller's goroutine; a [Queue] writes them on
// a goroutine of its own.
func (lm *Limiter) Failure(ctx context.Context, kind, msg string, err error, attrs ...slog.Attr) {
	for _, r := range lm.failure(ctx, kind, msg, err, attrs) {
		r.write(lm.l)
	}
}

// record is one record to write: made under the limits' lock, written
// outside it.
type record struct {
	ctx   context.Context
	msg   string
	attrs []slog.Attr
}

func (r record) write(l *slog.Logger) {
	l.LogAttrs(r.ctx, slog.LevelWarn, r.msg, r.attrs...)
}

// failure counts a failure of kind and returns the records it calls for:
// summaries of quiet kinds, then its own record unless it is held back.
func (lm *Limiter) failure(ctx context.Context, kind, msg string, err error, attrs []slog.Attr) []record {
	if lm == nil || !lm.l.Enabled(ctx, slog.LevelWarn) {
		return nil
	}
	return lm.count(ctx, kind, msg, err, attrs)
}

// count is failure without the Logger's Enabled, which is the handler's
// code: a [Queue] leaves it to its writer (LogAttrs asks it there).
func (lm *Limiter) count(ctx context.Context, kind, msg string, err error, attrs []slog.Attr) []record {
	ls := lm.st
	now := ls.now()
	ls.mu.Lock()
	summaries := ls.sweepLocked(now, kind)
	st := ls.kinds[kind]
	if st == nil {
		if len(ls.kinds) >= MaxKinds {
			kind = KindOther
			st = ls.kinds[kind]
		}
		if st == nil {
			st = &kindState{}
			ls.kinds[kind] = st
		}
	}
	log := st.last.IsZero() || now.Sub(st.last) >= ls.interval
	suppressed := 0
	if log {
		suppressed, st.suppressed, st.last, st.msg = st.suppressed, 0, now, msg
	} else {
		st.suppressed++
	}
	ls.mu.Unlock()

	out := make([]record, 0, len(summaries)+1)
	for _, s := range summaries {
		out = append(out, s.record(ctx))
	}
	if !log {
		return out
	}
	all := make([]slog.Attr, 0, len(attrs)+4)
	all = append(all, slog.String("kind", kind))
	all = append(all, attrs...)
	if err != nil {
		all = append(all, slog.String("error", ErrorText(err)))
	}
	if suppressed > 0 {
		all = append(all, slog.Int("suppressed", suppressed))
	}
	return append(out, record{ctx, msg, all})
}

func (s summary) record(ctx context.Context) record {
	return record{ctx, "lifeline: suppressed similar failures",
		[]slog.Attr{slog.String("kind", s.kind), slog.Int("suppressed", s.n), slog.String("of", s.msg)}}
}

type summary struct {
	kind, msg string
	n         int
}

// sweepLocked collects, at most once per sweepEvery, the kinds other than
// skip whose interval has passed with failures still uncounted, and resets
// them: their summaries are written by the caller, outside the lock.
func (ls *limits) sweepLocked(now time.Time, skip string) []summary {
	if now.Sub(ls.lastSweep) < sweepEvery {
		return nil
	}
	ls.lastSweep = now
	var out []summary
	for k, st := range ls.kinds {
		if k != skip && st.suppressed > 0 && now.Sub(st.last) >= ls.interval {
			out = append(out, summary{k, st.msg, st.suppressed})
			st.suppressed, st.last = 0, now
		}
	}
	return out
}

// Flush writes a summary for every kind with failures not yet reported
// (a Pool's or a session's Close calls it). Nil-safe.
func (lm *Limiter) Flush(ctx context.Context) {
	for _, r := range lm.flush(ctx) {
		r.write(lm.l)
	}
}

// flush returns the summaries Flush writes.
func (lm *Limiter) flush(ctx context.Context) []record {
	if lm == nil {
		return nil
	}
	ls := lm.st
	ls.mu.Lock()
	var out []record
	now := ls.now()
	for k, st := range ls.kinds {
		if st.suppressed > 0 {
			out = append(out, summary{k, st.msg, st.suppressed}.record(ctx))
			st.suppressed, st.last = 0, now
		}
	}
	ls.mu.Unlock()
	return out
}

// ErrorText is err's text for a log record: URLs stripped of userinfo,
// query and fragment (otelx.Redact), cut to MaxErrorLen bytes on a rune
// boundary with "…" appended when cut.
func ErrorText(err error) string {
	return Cut(otelx.Redact(err.Error()), MaxErrorLen)
}

// Cut returns s cut to at most n bytes on a rune boundary, "…" appended
// when it was cut.
func Cut(s string, n int) string {
	if len(s) <= n {
		return s
	}
	i := n
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	return s[:i] + "…"
}
