package soak_test

import (
	"fmt"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// histBuckets is the range of a hist (20s), in 1ms buckets; longer durations go
// to the last bucket (the exact maximum is kept beside it).
const histBuckets = 20000

// hist is a lock-free histogram of durations in 1ms buckets.
type hist struct {
	n   atomic.Int64
	max atomic.Int64 // ns
	b   [histBuckets]atomic.Int64
}

func (h *hist) add(d time.Duration) {
	if d < 0 {
		d = 0
	}
	h.n.Add(1)
	i := min(int(d/time.Millisecond), histBuckets-1)
	h.b[i].Add(1)
	for {
		cur := h.max.Load()
		if int64(d) <= cur || h.max.CompareAndSwap(cur, int64(d)) {
			return
		}
	}
}

// quantile is the upper edge of the bucket that holds quantile q, or the
// maximum when that is lower (q of an empty hist: 0).
func (h *hist) quantile(q float64) time.Duration {
	n := h.n.Load()
	if n == 0 {
		return 0
	}
	rank := int64(q*float64(n) + 0.999999) // the ceil of q·n
	rank = max(rank, 1)
	var seen int64
	for i := range h.b {
		seen += h.b[i].Load()
		if seen >= rank {
			return min(time.Duration(i+1)*time.Millisecond, h.maximum())
		}
	}
	return h.maximum()
}

func (h *hist) maximum() time.Duration { return time.Duration(h.max.Load()) }

// summary is "p50 … p99 … p99.9 … max …" of h.
func (h *hist) summary() string {
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("p50 %s p99 %s p99.9 %s max %s", r(h.quantile(0.5)), r(h.quantile(0.99)),
		r(h.quantile(0.999)), r(h.maximum()))
}

// Sides of the side-by-side measurement: the same calls, faults and
// machine, through lifeline and through the plain standard-library
// client a user would otherwise write (the control).
const (
	sideLifeline = "lifeline"
	sideControl  = "control"
)

// stats are the figures of one family of calls on one side.
type stats struct {
	family, side               string
	calls, ok, failed, corrupt atomic.Int64
	// late: how far past its deadline each call that returned at or after
	// it returned (its overrun). fired: how late the context's Done was
	// seen by a goroutine waiting for it (the machine's share: the timer and
	// the scheduler). afterDone: from then to the call's return (what the
	// client did after the deadline: close paths, locks, waits).
	late, fired, afterDone hist
	strictOver             atomic.Int64 // calls past deadline + overrunLimit
	mu                     sync.Mutex
	worst                  string
}

func (s *stats) record(deadline, took, firedAt time.Duration, err error, what string) {
	s.calls.Add(1)
	if err != nil {
		s.failed.Add(1)
	} else {
		s.ok.Add(1)
	}
	if took < deadline {
		return
	}
	over := took - deadline
	prevMax := s.late.maximum()
	s.late.add(over)
	if firedAt > 0 {
		s.fired.add(firedAt - deadline)
		s.afterDone.add(took - firedAt)
	} else {
		// The call returned before a goroutine waiting for Done ran: the
		// client added nothing after the deadline that waited for it.
		s.afterDone.add(0)
	}
	if over > overrunLimit {
		s.strictOver.Add(1)
	}
	if over >= prevMax {
		s.mu.Lock()
		s.worst = fmt.Sprintf("%s: deadline %v, returned at %v (Done seen at %v): %v",
			what, deadline, took.Round(time.Millisecond), firedAt.Round(time.Millisecond), err)
		s.mu.Unlock()
	}
}

// lagProbe measures the scheduler: how late a 10ms sleep wakes up.
type lagProbe struct {
	mu      sync.Mutex
	samples []time.Duration
	at      []time.Time // when each sample's sleep began
}

func (p *lagProbe) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		start := time.Now()
		time.Sleep(10 * time.Millisecond)
		l := time.Since(start) - 10*time.Millisecond
		p.mu.Lock()
		p.samples = append(p.samples, l)
		p.at = append(p.at, start)
		p.mu.Unlock()
	}
}

// mark is the position of the next sample: since(mark) returns the
// samples taken after it.
func (p *lagProbe) mark() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.samples)
}

func (p *lagProbe) since(mark int) []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.samples[mark:])
}

// worst describes the n longest lags between marks from and to: how
// long, and when, counted from base.
func (p *lagProbe) worst(from, to, n int, base time.Time) string {
	p.mu.Lock()
	idx := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		idx = append(idx, i)
	}
	sort.Slice(idx, func(a, b int) bool { return p.samples[idx[a]] > p.samples[idx[b]] })
	var out []string
	for _, i := range idx[:min(n, len(idx))] {
		out = append(out, fmt.Sprintf("%v at %.1fs (%s)", p.samples[i].Round(time.Millisecond),
			p.at[i].Sub(base).Seconds(), p.at[i].UTC().Format("15:04:05.0")))
	}
	p.mu.Unlock()
	return strings.Join(out, ", ")
}

// lagQuantile is quantile q of samples (0 for none).
func lagQuantile(samples []time.Duration, q float64) time.Duration {
	if len(samples) == 0 {
		return 0
	}
	s := slices.Clone(samples)
	slices.Sort(s)
	return s[min(len(s)-1, int(q*float64(len(s))))]
}

func lagSummary(samples []time.Duration) string {
	r := func(d time.Duration) string { return d.Round(time.Millisecond).String() }
	return fmt.Sprintf("p50 %s p99 %s max %s (%d samples)", r(lagQuantile(samples, 0.5)),
		r(lagQuantile(samples, 0.99)), r(lagQuantile(samples, 1)), len(samples))
}

// tracer (SOAK_TRACE=1) finds where late calls spend the time after their
// deadline: a call still running stuckAfter past its deadline has its
// goroutine's stack taken (one dump of all goroutines serves every call
// late at that moment; at most one dump per dumpEvery, since a dump stops
// the world). The report groups them by the frame they were blocked in.
type tracer struct {
	measuring atomic.Bool // past the calibration
	mu        sync.Mutex
	live      map[uint64]*traced // by goroutine id
	done      []*traced
	dumps     int
	lastRun   time.Time
}

const (
	stuckAfter = 50 * time.Millisecond
	dumpEvery  = 100 * time.Millisecond
)

type traced struct {
	family, side string
	measured     bool // started after the calibration
	gid          uint64
	deadlineAt   time.Time
	deadline     time.Duration
	took         time.Duration
	stack        string
	stackAt      time.Duration // after the deadline
}

func newTracer() *tracer { return &tracer{live: map[uint64]*traced{}} }

// goid is the calling goroutine's id, from its stack's header line.
func goid() uint64 {
	var b [64]byte
	n := runtime.Stack(b[:], false)
	s := strings.TrimPrefix(string(b[:n]), "goroutine ")
	id, _ := strconv.ParseUint(s[:strings.IndexByte(s, ' ')], 10, 64)
	return id
}

func (t *tracer) begin(family, side string, deadline time.Duration) *traced {
	if t == nil {
		return nil
	}
	c := &traced{family: family, side: side, measured: t.measuring.Load(), gid: goid(), deadline: deadline, deadlineAt: time.Now().Add(deadline)}
	t.mu.Lock()
	t.live[c.gid] = c
	t.mu.Unlock()
	return c
}

func (t *tracer) end(c *traced, took time.Duration) {
	if t == nil {
		return
	}
	t.mu.Lock()
	delete(t.live, c.gid)
	c.took = took
	if c.stack != "" {
		t.done = append(t.done, c)
	}
	t.mu.Unlock()
}

// run samples until stop closes.
func (t *tracer) run(stop <-chan struct{}) {
	tk := time.NewTicker(10 * time.Millisecond)
	defer tk.Stop()
	buf := make([]byte, 64<<20)
	for {
		select {
		case <-stop:
			return
		case <-tk.C:
		}
		now := time.Now()
		if now.Sub(t.lastRun) < dumpEvery {
			continue
		}
		t.mu.Lock()
		var want []*traced
		for _, c := range t.live {
			if c.stack == "" && now.Sub(c.deadlineAt) >= stuckAfter {
				want = append(want, c)
			}
		}
		t.mu.Unlock()
		if len(want) == 0 {
			continue
		}
		t.lastRun = now
		n := runtime.Stack(buf, true)
		at := time.Now()
		stacks := map[uint64]string{}
		for _, g := range strings.Split(string(buf[:n]), "\n\n") {
			s := strings.TrimPrefix(g, "goroutine ")
			if i := strings.IndexByte(s, ' '); i > 0 {
				if id, err := strconv.ParseUint(s[:i], 10, 64); err == nil {
					stacks[id] = g
				}
			}
		}
		t.mu.Lock()
		t.dumps++
		for _, c := range want {
			if t.live[c.gid] == c {
				c.stack = stacks[c.gid]
				c.stackAt = at.Sub(c.deadlineAt)
			}
		}
		t.mu.Unlock()
	}
}

// blockedIn is the frame a stack waits in: the first function that is not
// the runtime's, the standard library's synchronisation or the soak's own.
func blockedIn(stack string) string {
	first := frameAt(stack, func(string) bool { return true })
	own := frameAt(stack, func(fn string) bool {
		return strings.HasPrefix(fn, "github.com/lifeline-go/lifeline/") && !strings.Contains(fn, "/internal/soak")
	})
	if own != "" && own != first {
		return first + " via " + own
	}
	return first
}

// frameAt is the first frame of stack, past the runtime and the standard
// library's synchronisation, whose function matches.
func frameAt(stack string, match func(fn string) bool) string {
	lines := strings.Split(stack, "\n")
	for i := 1; i+1 < len(lines); i += 2 {
		fn := lines[i]
		if j := strings.LastIndexByte(fn, '('); j > 0 {
			fn = fn[:j]
		}
		switch {
		case strings.HasPrefix(fn, "runtime."), strings.HasPrefix(fn, "internal/"),
			strings.HasPrefix(fn, "sync."), strings.HasPrefix(fn, "time."),
			strings.HasPrefix(fn, "context."), strings.HasPrefix(fn, "syscall."),
			strings.HasPrefix(fn, "golang.org/x/sys/"):
			continue
		}
		if !match(fn) {
			continue
		}
		file := strings.TrimSpace(lines[i+1])
		if k := strings.LastIndexByte(file, ' '); k > 0 {
			file = file[:k]
		}
		if k := strings.Index(file, "/lifeline/"); k >= 0 {
			file = file[k+len("/lifeline/"):]
		} else if k := strings.Index(file, "/src/"); k >= 0 {
			file = file[k+len("/src/"):]
		}
		return fn + " (" + file + ")"
	}
	return ""
}

// report logs the traced calls: per side, how many were still running
// stuckAfter past their deadline, grouped by where they waited, and the
// stacks of the worst few.
func (t *tracer) report(logf func(string, ...any)) {
	t.mu.Lock()
	defer t.mu.Unlock()
	logf("trace: %d stack dumps; calls still running %v past their deadline:", t.dumps, stuckAfter)
	for _, side := range []string{sideLifeline, sideControl} {
		where := map[string][]time.Duration{}
		var mine []*traced
		for _, c := range t.done {
			if c.side == side {
				k := c.family + ": " + goState(c.stack) + " in " + blockedIn(c.stack)
				if !c.measured {
					k = "(calibration) " + k
				}
				where[k] = append(where[k], c.took-c.deadline)
				mine = append(mine, c)
			}
		}
		logf("  %s: %d calls", side, len(mine))
		keys := make([]string, 0, len(where))
		for k := range where {
			keys = append(keys, k)
		}
		sort.Slice(keys, func(i, j int) bool { return len(where[keys[i]]) > len(where[keys[j]]) })
		for _, k := range keys {
			o := where[k]
			slices.Sort(o)
			logf("    %5d  %s  (overrun median %v, max %v)", len(o), k,
				o[len(o)/2].Round(time.Millisecond), o[len(o)-1].Round(time.Millisecond))
		}
		sort.Slice(mine, func(i, j int) bool { return mine[i].took-mine[i].deadline > mine[j].took-mine[j].deadline })
		for _, c := range mine[:min(2, len(mine))] {
			logf("  %s %s: deadline %v, returned %v late; %v past the deadline it was at:\n%s", side, c.family,
				c.deadline, (c.took - c.deadline).Round(time.Millisecond), c.stackAt.Round(time.Millisecond), trimStack(c.stack))
		}
	}
}

// goState is the goroutine's state in its stack's header ("runnable":
// ready, waiting for a CPU; "select", "IO wait", "sync.Mutex.Lock"…:
// waiting for something to happen).
func goState(stack string) string {
	a, b := strings.IndexByte(stack, '['), strings.IndexByte(stack, ']')
	if a < 0 || b < a {
		return "?"
	}
	st := stack[a+1 : b]
	if i := strings.IndexByte(st, ','); i > 0 {
		st = st[:i] // without ", 2 minutes"
	}
	return "[" + st + "]"
}

// trimStack keeps a stack's first frames, without argument values.
func trimStack(s string) string {
	lines := strings.Split(s, "\n")
	if len(lines) > 31 {
		lines = append(lines[:31], "\t…")
	}
	for i, l := range lines {
		if j := strings.LastIndexByte(l, '('); j > 0 && !strings.HasPrefix(l, "\t") {
			lines[i] = l[:j] + "(…)"
		}
		lines[i] = "      " + lines[i]
	}
	return strings.Join(lines, "\n")
}
