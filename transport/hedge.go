package transport

import (
	"context"
	"math"
	"net/http"
	"slices"
	"sync"
	"time"
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
// up to maxHedges. The first response wins; the other
// try is cancelled and its response, if one comes anyway, closed. A hedge
// is paid from the retry budget; an exhausted budget stops new hedges,
// never a try in flight. Failures and stalls the winner overtook are
// counted as masked by the hedge.
func (c *call) hedged(ctx context.Context) (*http.Response, *try, error) {
	// Unbuffered: every try's result is received (the winner's in the
	// loop, the others' when they are drained), and a buffer of pointers
	// would be one more allocation per request.
	results := make(chan tryResult)
	start := func(hedge bool) *try {
		tr := c.newTry(hedge)
		go func() {
			resp, err := tr.run()
			results <- tryResult{tr, resp, err}
		}()
		return tr
	}
	tries := []*try{start(false)}
	timer := time.NewTimer(c.st.hedgeDelay(c.req.URL.Host))
	defer timer.Stop()
	pending := 1
	var won tryResult // won.tr != nil: the first response
	var failed []tryResult
	for pending > 0 && won.tr == nil {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				won = r
				break
			}
			failed = append(failed, r)
		case <-timer.C:
			if len(tries) <= maxHedges && c.st.policy.Budget.Withdraw() {
				tries = append(tries, start(true))
				pending++
				c.st.tel.hedge(ctx, "fired")
				// A hedge can meet a hang too (8% of conns hung in incident
				// 01): one more after another delay, up to maxHedges.
				timer.Reset(c.st.hedgeDelay(c.req.URL.Host))
			}
		}
	}
	var lost []*try
	if won.tr != nil {
		// Cancel the other tries and wait for them: no goroutine outlives
		// the attempt, and a response that came anyway is closed.
		for _, tr := range tries {
			if tr != won.tr {
				tr.cancel(errHedgeLost)
			}
		}
		for ; pending > 0; pending-- {
			r := <-results
			if r.resp != nil {
				_ = r.resp.Body.Close()
			}
			lost = append(lost, r.tr)
		}
		if won.tr.hedge {
			c.st.tel.hedge(ctx, "won")
		}
		c.st.tel.hedgeMasked(ctx, won.tr, failed, lost)
		return won.resp, won.tr, nil
	}
	// Every try failed: the last failure goes to the retry loop.
	last := failed[len(failed)-1]
	wrote := false
	for _, r := range failed {
		wrote = wrote || r.tr.mayHaveWritten(r.err)
	}
	return nil, last.tr, c.canRetry(last.err, wrote)
}
