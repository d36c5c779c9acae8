package pool_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// adv33Sink is a slog.Handler over one log sink, as handlers that write
// to a pipe or a socket are: Handle writes under the sink's lock, and
// Enabled reads the level under the same lock (a level an operator can
// change at run time). When the sink stalls (stall), Handle waits with
// the lock held — and so does every Enabled meanwhile. hook, when set,
// runs first in Handle, without the lock (user code that calls back into
// the pool).
type adv33Sink struct {
	hook func(ctx context.Context, r slog.Record)

	mu      sync.Mutex
	level   slog.Level
	stalled chan struct{} // non-nil: Handle waits for it to close, mu held
	entered chan struct{} // closed when a Handle starts waiting
	recs    []adv33Rec
}

type adv33Rec struct {
	msg   string
	attrs map[string]string
	ctx   context.Context
	err   error // ctx.Err() when written
}

func (s *adv33Sink) Enabled(_ context.Context, l slog.Level) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return l >= s.level
}
func (s *adv33Sink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *adv33Sink) WithGroup(string) slog.Handler      { return s }
func (s *adv33Sink) Handle(ctx context.Context, r slog.Record) error {
	if s.hook != nil {
		s.hook(ctx, r)
	}
	rec := adv33Rec{msg: r.Message, attrs: map[string]string{}, ctx: ctx, err: ctx.Err()}
	r.Attrs(func(a slog.Attr) bool { rec.attrs[a.Key] = a.Value.String(); return true })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled != nil {
		select {
		case <-s.entered:
		default:
			close(s.entered)
		}
		<-s.stalled
	}
	s.recs = append(s.recs, rec)
	return nil
}

// stall makes the sink stall from the next record on; release (safe to
// call twice) lets it go. entered is closed once a record waits.
func (s *adv33Sink) stall() (entered <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.stalled, s.entered = ch, make(chan struct{})
	var once sync.Once
	return s.entered, func() {
		once.Do(func() {
			close(ch)
			s.mu.Lock() // taken once the stalled Handle has written
			s.stalled = nil
			s.mu.Unlock()
		})
	}
}

func (s *adv33Sink) records() []adv33Rec {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]adv33Rec(nil), s.recs...)
}

// waitFor waits (10s at most) for a record whose message holds msg.
func (s *adv33Sink) waitFor(t *testing.T, msg string) adv33Rec {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		for _, r := range s.records() {
			if strings.Contains(r.msg, msg) {
				return r
			}
		}
	}
	t.Fatalf("no record %q after 10s; records: %v", msg, s.msgs())
	return adv33Rec{}
}

func (s *adv33Sink) msgs() []string {
	var out []string
	for _, r := range s.records() {
		out = append(out, r.msg)
	}
	return out
}

// adv33Refused returns a Dial func for a loopback port nobody listens on.
func adv33Refused(t *testing.T) func(context.Context) (net.Conn, error) {
	addr := faultnet.RefusedAddr(t, "tcp4")
	var d net.Dialer
	return func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) }
}

// adv33Down takes p down with refused dials (five in a row).
func adv33Down(t *testing.T, p *pool.Pool) {
	t.Helper()
	for i := 0; ; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := p.Acquire(ctx)
		cancel()
		if errors.Is(err, pool.ErrUnavailable) {
			return
		}
		if i == 20 {
			t.Fatalf("not down after 20 refused dials: %v", err)
		}
	}
}

// within runs f on a goroutine and reports whether it returned within d.
func adv33Within(d time.Duration, f func()) bool {
	done := make(chan struct{})
	go func() {
		defer close(done)
		f()
	}()
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-done:
		return true
	case <-t.C:
		return false
	}
}

// TestAdv33StalledSinkStallsNoDial: the program's own records stall the
// Logger's sink (a full pipe). The pool asked the handler's Enabled —
// which waits on the sink's lock — on the dial's goroutine before it
// handed the dial's failure to the Acquire: the Acquire waited out its
// context behind the sink, and Close, which waits for the dial's
// goroutine, waited for the sink for ever. The pool now runs none of the
// handler's code outside its log goroutine.
func TestAdv33StalledSinkStallsNoDial(t *testing.T) {
	sink := &adv33Sink{}
	logger := slog.New(sink)
	p, err := pool.New(pool.Config{Name: "db", DialRate: -1, Logger: logger, Dial: adv33Refused(t)})
	if err != nil {
		t.Fatal(err)
	}
	entered, release := sink.stall()
	defer release()
	go logger.Warn("app: a record of the program's own")
	<-entered

	start := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	_, err = p.Acquire(ctx)
	cancel()
	if took := time.Since(start); err == nil || errors.Is(err, context.DeadlineExceeded) || took > 5*time.Second {
		t.Errorf("Acquire of a refused dial: %v after %v, want the refusal at once: it waited for the Logger's sink", err, took)
	}
	if !adv33Within(5*time.Second, func() { _ = p.Close() }) {
		release()
		_ = p.Close()
		t.Fatal("Close still waiting after 5s for the Logger's sink")
	}
	release()
	sink.waitFor(t, "pool dial failed")
}

// TestAdv33StalledSinkStallsNoReset: Reset makes the upstream's change
// (ready again) under the pool's lock, and the pool asked the handler's
// Enabled there: with the sink stalled, Reset held the lock for as long,
// and Stats and Acquire waited behind it.
func TestAdv33StalledSinkStallsNoReset(t *testing.T) {
	sink := &adv33Sink{}
	logger := slog.New(sink)
	p := newPool(t, pool.Config{Name: "db", DialRate: -1, Logger: logger, Dial: adv33Refused(t)})
	adv33Down(t, p)
	sink.waitFor(t, "upstream down")
	entered, release := sink.stall()
	defer release()
	go logger.Warn("app: a record of the program's own")
	<-entered
	if !adv33Within(5*time.Second, p.Reset) {
		t.Fatal("Reset still waiting after 5s for the Logger's sink (under the pool's lock)")
	}
	if !adv33Within(5*time.Second, func() { _ = p.Stats() }) {
		t.Fatal("Stats still waiting after 5s for the Logger's sink")
	}
	release()
	sink.waitFor(t, "upstream ready again")
}

// TestAdv33EnabledAsksThePool: a handler whose Enabled asks the pool how
// full it is (a handler that logs less when the pool is busy) deadlocked
// Reset, whose change of state asked Enabled under the pool's lock.
func TestAdv33EnabledAsksThePool(t *testing.T) {
	var pp atomic.Pointer[pool.Pool]
	h := &adv33AskingHandler{p: &pp}
	p, err := pool.New(pool.Config{Name: "db", DialRate: -1, Logger: slog.New(h), Dial: adv33Refused(t)})
	if err != nil {
		t.Fatal(err)
	}
	pp.Store(p)
	adv33Down(t, p)
	if !adv33Within(5*time.Second, p.Reset) {
		// The pool's lock is held for good: no Close.
		t.Fatal("Reset deadlocked: the handler's Enabled ran under the pool's lock")
	}
	defer p.Close()
	for deadline := time.Now().Add(10 * time.Second); h.n.Load() < 3 && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := h.n.Load(); n != 3 {
		t.Fatalf("%d records, want 3 (dial failed, down, ready again)", n)
	}
}

type adv33AskingHandler struct {
	p *atomic.Pointer[pool.Pool]
	n atomic.Int32
}

func (h *adv33AskingHandler) Enabled(context.Context, slog.Level) bool {
	if p := h.p.Load(); p != nil {
		return p.Stats().Waiting < 1000
	}
	return true
}
func (h *adv33AskingHandler) Handle(context.Context, slog.Record) error { h.n.Add(1); return nil }
func (h *adv33AskingHandler) WithAttrs([]slog.Attr) slog.Handler        { return h }
func (h *adv33AskingHandler) WithGroup(string) slog.Handler             { return h }

// TestAdv33HandlerPanics: a handler that panics on the dial's failure
// record (a bug in it) ran on the pool's log goroutine, where nothing can
// recover it: the program died. Now the record is lost, one record says
// so, and the pool and its later records go on.
func TestAdv33HandlerPanics(t *testing.T) {
	sink := &adv33Sink{hook: func(_ context.Context, r slog.Record) {
		if strings.Contains(r.Message, "pool dial failed") {
			panic(errors.New("sink: encoder used after close")) // a handler's bug
		}
	}}
	p := newPool(t, pool.Config{Name: "db", DialRate: -1, Logger: slog.New(sink), Dial: adv33Refused(t)})
	adv33Down(t, p)
	lost := sink.waitFor(t, "handler panicked")
	if lost.attrs["of"] != "lifeline: pool dial failed" || lost.attrs["panic"] != "sink: encoder used after close" {
		t.Fatalf("record of the panic: %v", lost.attrs)
	}
	sink.waitFor(t, "upstream down")
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestAdv33HandlerUsesThePool: a handler that, on a dial's failure,
// Acquires from the same pool (its dial fails too: a record held back)
// and then closes the pool. Nothing waits for ever: the handler's Close
// waits its bound for its own records, the summary of the held-back
// failure is written last, once, and nothing follows it.
func TestAdv33HandlerUsesThePool(t *testing.T) {
	var pp atomic.Pointer[pool.Pool]
	closed := make(chan error, 1)
	var once sync.Once
	sink := &adv33Sink{hook: func(_ context.Context, r slog.Record) {
		if !strings.Contains(r.Message, "pool dial failed") {
			return
		}
		once.Do(func() {
			p := pp.Load()
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			_, err := p.Acquire(ctx)
			cancel()
			if err == nil {
				closed <- errors.New("the handler's Acquire of a refused dial succeeded")
				return
			}
			_ = p.Close()
			_, err = p.Acquire(context.Background())
			if !errors.Is(err, pool.ErrClosed) {
				closed <- err
				return
			}
			closed <- nil
		})
	}}
	p := newPool(t, pool.Config{Name: "db", DialRate: -1, Logger: slog.New(sink), Dial: adv33Refused(t)})
	pp.Store(p)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, _ = p.Acquire(ctx)
	cancel()
	select {
	case err := <-closed:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the handler's Acquire and Close still running after 10s")
	}
	if !adv33Within(5*time.Second, func() { _ = p.Close() }) {
		t.Fatal("Close still waiting after 5s")
	}
	sink.waitFor(t, "suppressed similar failures")
	time.Sleep(50 * time.Millisecond) // anything after it would be wrong
	got := sink.msgs()
	if len(got) != 2 || got[0] != "lifeline: pool dial failed" || got[1] != "lifeline: suppressed similar failures" {
		t.Fatalf("records %q, want the failure then its summary", got)
	}
}

// TestAdv33CloseRacesTheFirstRecord: Close at the moment a dial fails.
// Whatever the interleaving: Close returns at once, the pool's log
// goroutine ends, and a summary, if any, is the last record.
func TestAdv33CloseRacesTheFirstRecord(t *testing.T) {
	dial := adv33Refused(t)
	for i := range 30 {
		sink := &adv33Sink{}
		p, err := pool.New(pool.Config{Name: "db", DialRate: -1, Logger: slog.New(sink), Dial: dial})
		if err != nil {
			t.Fatal(err)
		}
		var wg sync.WaitGroup
		for range 3 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
				_, _ = p.Acquire(ctx)
				cancel()
			})
		}
		if i%2 == 1 {
			runtime.Gosched()
		}
		if !adv33Within(5*time.Second, func() { _ = p.Close() }) {
			t.Fatal("Close still waiting after 5s")
		}
		wg.Wait()
		time.Sleep(5 * time.Millisecond)
		got := sink.msgs()
		for j, m := range got {
			if strings.Contains(m, "suppressed similar") && j != len(got)-1 {
				t.Fatalf("records %q: something after the summary", got)
			}
		}
	}
}

// TestAdv33ResetStormBehindABlockedHandler: the handler blocks on the
// first record while the upstream goes down and comes back (Reset) many
// times: Acquire, Reset and Stats never wait for it, the changes' records
// are held back by the rate limit, and once the handler returns every
// one of them is accounted for — the first of each kind, then Close's
// summaries with the rest — and the pool holds no log goroutine.
func TestAdv33ResetStormBehindABlockedHandler(t *testing.T) {
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	sink := &adv33Sink{hook: func(context.Context, slog.Record) {
		once.Do(func() { close(blocked); <-release })
	}}
	defer func() {
		select {
		case <-release:
		default:
			close(release)
		}
	}()
	p, err := pool.New(pool.Config{Name: "db", DialRate: -1, Logger: slog.New(sink), Dial: adv33Refused(t)})
	if err != nil {
		t.Fatal(err)
	}
	const cycles = 20
	storm := func() {
		for range cycles {
			adv33Down(t, p)
			p.Reset()
			_ = p.Stats()
		}
	}
	if !adv33Within(20*time.Second, storm) {
		close(release)
		t.Fatal("Acquire/Reset/Stats waited for a blocked Logger handler")
	}
	<-blocked
	base := runtime.NumGoroutine() // the blocked writer's among them
	close(release)
	sink.waitFor(t, "upstream ready again")
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() >= base && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n >= base {
		t.Errorf("%d goroutines once the records were written, %d while the handler blocked", n, base)
	}
	if !adv33Within(5*time.Second, func() { _ = p.Close() }) {
		t.Fatal("Close still waiting after 5s")
	}
	sink.waitFor(t, "suppressed similar failures")
	time.Sleep(50 * time.Millisecond)
	counted := map[string]int{}
	for _, r := range sink.records() {
		k, _, _ := strings.Cut(r.attrs["kind"], ":") // the kind names the pool
		switch {
		case strings.Contains(r.msg, "suppressed similar"):
			n := 0
			for _, c := range r.attrs["suppressed"] {
				n = n*10 + int(c-'0')
			}
			counted[k] += n
		default:
			counted[k]++
		}
	}
	for _, k := range []string{"pool.upstream.down", "pool.upstream.ready"} {
		if counted[k] != cycles {
			t.Errorf("%s: %d changes accounted for, want %d; records %v", k, counted[k], cycles, sink.msgs())
		}
	}
}

// TestAdv33RecordContext: a dial's failure record carries the Acquire's
// context values but not its end: written later (the handler was busy),
// after the Acquire's context was canceled, it is not seen as canceled.
func TestAdv33RecordContext(t *testing.T) {
	type key struct{}
	release := make(chan struct{})
	var once sync.Once
	sink := &adv33Sink{hook: func(context.Context, slog.Record) { once.Do(func() { <-release }) }}
	p := newPool(t, pool.Config{Name: "db", DialRate: -1, Logger: slog.New(sink), Dial: adv33Refused(t)})
	ctx, cancel := context.WithTimeout(context.WithValue(context.Background(), key{}, "trace-7"), 5*time.Second)
	_, err := p.Acquire(ctx)
	cancel()
	close(release)
	if err == nil {
		t.Fatal("Acquire of a refused dial succeeded")
	}
	r := sink.waitFor(t, "pool dial failed")
	if r.err != nil || r.ctx.Value(key{}) != "trace-7" {
		t.Fatalf("record's context: err %v, value %v; want not ended, the Acquire's value", r.err, r.ctx.Value(key{}))
	}
}

// TestAdv33DisabledLoggerStartsNoGoroutineThatStays: a Logger that takes
// no Warn records costs the pool no goroutine that stays, however many
// dials fail.
func TestAdv33DisabledLoggerStartsNoGoroutineThatStays(t *testing.T) {
	sink := &adv33Sink{level: slog.LevelError}
	p := newPool(t, pool.Config{Name: "db", DialRate: -1, Logger: slog.New(sink), Dial: adv33Refused(t),
		DisableFailFast: true})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_, _ = p.Acquire(ctx) // the pool's own goroutines started
	cancel()
	time.Sleep(20 * time.Millisecond)
	base := runtime.NumGoroutine()
	for range 50 {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, _ = p.Acquire(ctx)
		cancel()
	}
	for deadline := time.Now().Add(5 * time.Second); runtime.NumGoroutine() > base && time.Now().Before(deadline); {
		time.Sleep(time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > base {
		t.Fatalf("%d goroutines after 50 failed dials, %d before", n, base)
	}
	if len(sink.records()) != 0 {
		t.Fatalf("records %v from a Logger at Error", sink.msgs())
	}
}
