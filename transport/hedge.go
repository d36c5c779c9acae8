package transport

import (
	"context"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// hedgeConfig is the resolved hedging of a Transport.
type hedgeConfig struct {
	on       bool
	fixed    time.Duration // HedgeDelay; the ceiling of the adaptive delay when > 0
	quantile float64       // > 0: adaptive
}

func newHedgeConfig(delay time.Duration, q float64) hedgeConfig {
	h := hedgeConfig{fixed: max(delay, 0)}
	if q > 0 && q < 1 && !math.IsNaN(q) {
		h.quantile = q
	}
	h.on = h.fixed > 0 || h.quantile > 0
	return h
}

// delay is how long a try waits for response headers before the hedge
// starts: HedgeDelay, or with HedgeQuantile the quantile of the host's
// recent times to headers, clamped to [MinHedgeDelay, HedgeDelay or 1s].
// Until the host has enough samples the ceiling applies.
func (st *state) hedgeDelay(host string) time.Duration {
	h := st.hedge
	if h.quantile == 0 {
		return h.fixed
	}
	ceiling := h.fixed
	if ceiling <= 0 {
		ceiling = DefaultHedgeCeiling
	}
	q, ok := st.latency.quantile(host, h.quantile)
	if !ok {
		return ceiling
	}
	return min(max(q, MinHedgeDelay), ceiling)
}

// hedgeDelay is the call's hedge delay: its own (CallOptions.HedgeDelay),
// else the Transport's.
func (c *call) hedgeDelay() time.Duration {
	if c.lim.hedgeFix > 0 {
		return c.lim.hedgeFix
	}
	return c.st.hedgeDelay(c.req.URL.Host)
}

// latencies keeps, per host, a window of recent times to response headers
// of completed tries (a try cut short is not a sample: it would pull the
// quantile towards the limit it was cut at).
type latencies struct {
	mu    sync.Mutex
	hosts map[string]*window
}

// Bounds of the latency memory: samples per host, and hosts (the least
// recently used one is forgotten beyond it).
const (
	windowSize  = 256
	minSamples  = 20
	maxHostsLat = 256
)

type window struct {
	samples [windowSize]time.Duration
	n       int // samples held, up to windowSize
	next    int // where the next sample goes
	added   int // samples since the quantile was computed
	cached  time.Duration
	cachedQ float64
	used    time.Time
}

func newLatencies() *latencies { return &latencies{hosts: map[string]*window{}} }

func (l *latencies) add(host string, d time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.hosts[host]
	if w == nil {
		if len(l.hosts) >= maxHostsLat {
			var oldest string
			var at time.Time
			for h, w := range l.hosts {
				if oldest == "" || w.used.Before(at) {
					oldest, at = h, w.used
				}
			}
			delete(l.hosts, oldest)
		}
		w = &window{}
		l.hosts[host] = w
	}
	w.samples[w.next] = d
	w.next = (w.next + 1) % windowSize
	w.n = min(w.n+1, windowSize)
	w.added++
	w.used = time.Now()
}

// quantile returns the q-quantile of host's window, recomputed after every
// 16 new samples (a sort of 256 durations), or false with too few samples.
func (l *latencies) quantile(host string, q float64) (time.Duration, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	w := l.hosts[host]
	if w == nil || w.n < minSamples {
		return 0, false
	}
	if w.cachedQ == q && w.added < 16 {
		return w.cached, true
	}
	s := slices.Clone(w.samples[:w.n])
	slices.Sort(s)
	i := int(math.Ceil(q*float64(len(s)))) - 1
	w.cached = s[min(max(i, 0), len(s)-1)]
	w.cachedQ, w.added = q, 0
	return w.cached, true
}

// maxHedges is how many hedges one attempt may start, each a hedge delay
// after the one before.
const maxHedges = 2

// tryResult is how a try of a hedged attempt ended.
type tryResult struct {
	tr   *try
	resp *http.Response
	err  error
}

// hedged runs one attempt as a try and, when it has no response headers
// after the hedge delay and the budget allows, another try alongside (on
// another conn: the first one is busy), and after another delay one more,
// up to maxHedges. The first response wins; the other tries are cancelled
// and their responses, if one comes anyway, closed. A hedge is paid from
// the retry budget; an exhausted budget stops new hedges, never a try in
// flight. No hedge starts once the first try has ended or the attempt's
// AttemptTimeout has passed (every try of the attempt ends at it).
// Failures and stalls the winner overtook are counted as masked by the
// hedge; when every try fails, the last failure goes to the retry loop and
// the others are counted as masked by the retry if the call succeeds.
//
// The first try runs on the caller's goroutine, and the hedge delay is a
// timer's function that starts the hedges, each on a goroutine of its own:
// an attempt answered before the delay, as nearly all are, costs no
// goroutine, no channel and no handoff between goroutines
// (BenchmarkKeepAliveGET, impl=lifeline-hedge). A hedge that answers
// cancels the first try, which returns to the caller's goroutine.
func (c *call) hedged(ctx context.Context) (*http.Response, *try, error) {
	h := &hedging{c: c, ctx: ctx}
	h.first = c.newTry(false)
	h.mu.Lock() // fire may run before AfterFunc returns: it waits for h.timer
	h.timer = time.AfterFunc(c.hedgeDelay(), h.fire)
	h.mu.Unlock()
	resp, err := h.first.run()

	h.mu.Lock()
	h.firstDone = true // no hedge starts from here on, none cancels the first try
	firstLost := h.firstLost
	received, hedges := 0, len(h.tries)
	h.mu.Unlock()
	h.timer.Stop()

	var won tryResult // won.tr != nil: the answer
	switch {
	case firstLost && (err == nil || err == errHedgeLost):
		// A hedge answered and cancelled this try. An answer of its own
		// that came anyway cannot be read: its context is cancelled.
		if resp != nil {
			_ = resp.Body.Close()
		}
		h.lost = append(h.lost, h.first)
	case err == nil:
		won = tryResult{h.first, resp, nil}
	default:
		// Failed by itself, even if a hedge answered at that instant.
		h.failed = append(h.failed, tryResult{h.first, nil, err})
	}
	for ; won.tr == nil && received < hedges; received++ {
		if r := <-h.results; r.err == nil {
			won = r
		} else {
			h.failed = append(h.failed, r)
		}
	}
	if won.tr == nil {
		// Every try failed: the last failure goes to the retry loop.
		return nil, h.failed[len(h.failed)-1].tr, h.fail()
	}
	// Cancel the tries that did not win and wait for them: no goroutine
	// outlives the attempt, and a response that came anyway is closed.
	for _, tr := range h.tries {
		if tr != won.tr {
			tr.cancel(errHedgeLost)
		}
	}
	for ; received < hedges; received++ {
		if r := <-h.results; r.tr != won.tr {
			if r.resp != nil {
				_ = r.resp.Body.Close()
			}
			h.lost = append(h.lost, r.tr)
		}
	}
	if won.tr.hedge {
		c.st.tel.hedge(ctx, "won")
	}
	c.st.tel.hedgeMasked(ctx, won.tr, h.failed, h.lost)
	return won.resp, won.tr, nil
}

// fail is the error of an attempt whose every try failed: the last
// failure, classified for the retry loop (the request may have been
// written if any try may have written it). The other failures wait on the
// call: masked by the retry if a later attempt succeeds.
func (h *hedging) fail() error {
	last := h.failed[len(h.failed)-1]
	wrote := false
	for _, r := range h.failed {
		wrote = wrote || r.tr.mayHaveWritten(r.err)
	}
	h.c.unmasked = append(h.c.unmasked, h.failed[:len(h.failed)-1]...)
	return h.c.canRetry(last.err, wrote)
}

// countMasked counts failures of tries on lifeline.masked_failures with
// masked_by by, by their phase, peer and error type.
func (t *telemetry) countMasked(ctx context.Context, by string, failed []tryResult) {
	if len(failed) == 0 || !t.inst.Masked.Enabled(ctx) {
		return
	}
	for _, r := range failed {
		phase, peer := otelx.MaskedLabels(r.err)
		if peer == "" {
			peer = r.tr.peerLabel()
		}
		t.inst.Masked.Add(ctx, 1, otelx.Masked(by, phase, peer, otelx.ErrorTypeOf(r.err)))
	}
}

// hedging is one hedged attempt: its first try, on the caller's goroutine,
// and the hedges the timer starts.
type hedging struct {
	c     *call
	ctx   context.Context
	first *try
	timer *time.Timer // the hedge delay: fire

	// The caller's goroutine's own, after the first try returned.
	failed []tryResult // the tries that failed, in the order seen
	lost   []*try      // the tries a winner overtook

	mu        sync.Mutex
	firstDone bool // the first try has returned: no more hedges, nothing cancels it
	firstLost bool // a hedge answered and cancelled the first try
	tries     []*try
	results   chan tryResult // the hedges' results, made by the first; room for all
}

// fire starts a hedge, unless the first try has ended, the attempt's
// AttemptTimeout has passed, the hedges are all started or the budget
// refuses, and sets the timer for the next one.
func (h *hedging) fire() {
	h.mu.Lock()
	defer h.mu.Unlock()
	st := h.c.st
	if h.firstDone || h.c.attemptOver(time.Now()) || len(h.tries) >= maxHedges || h.c.shedding() || !st.policy.Budget.Withdraw() {
		return
	}
	if h.results == nil {
		// Buffered for every hedge: a hedge's result waits there while
		// the caller's goroutine is still in the first try.
		h.results = make(chan tryResult, maxHedges)
	}
	tr := h.c.newTry(true)
	h.tries = append(h.tries, tr)
	go h.run(tr)
	st.tel.hedge(h.ctx, "fired")
	// A hedge can meet a hang too (8% of conns hung in incident 01): one
	// more after another delay, up to maxHedges.
	if len(h.tries) < maxHedges {
		h.timer.Reset(h.c.hedgeDelay())
	}
}

// run runs hedge tr; if it answers while the first try is still waiting,
// it cancels the first try, so that the caller's goroutine returns from it.
func (h *hedging) run(tr *try) {
	resp, err := tr.run()
	if err == nil {
		h.mu.Lock()
		if !h.firstDone && !h.firstLost {
			h.firstLost = true
			// Under h.mu, before firstDone: the first try is still
			// waiting. (A try is never reused, so a lose that comes
			// after it ended harms nothing either.)
			h.first.lose()
		}
		h.mu.Unlock()
	}
	h.results <- tryResult{tr, resp, err}
}
