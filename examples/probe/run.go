package main

import (
	"context"
	"net/netip"
	"slices"
	"sync"
	"time"
)

// collector runs the samples of intervals and keeps what the reports and
// the metrics read. Its methods are safe for concurrent use.
type collector struct {
	p *prober

	mu       sync.Mutex                                // guards everything below
	window   map[netip.AddrPort]map[string]*phaseStats // this interval, by address and phase
	raced    phaseStats                                // this interval's raced dials
	errs     []string                                  // this interval's failed rounds
	answer   []netip.AddrPort                          // the latest answer: the only addresses labelled
	totals   map[netip.AddrPort]map[string]map[string]int64
	racedTot map[string]int64
	last     *Report // the last complete interval
}

func newCollector(p *prober) *collector {
	return &collector{p: p, window: make(map[netip.AddrPort]map[string]*phaseStats),
		totals: make(map[netip.AddrPort]map[string]map[string]int64), racedTot: make(map[string]int64)}
}

// interval makes cfg.samples rounds spread evenly over cfg.interval (each
// round samples every address at once, and makes one raced dial), waits
// for the last, and returns the interval's report.
func (c *collector) interval(ctx context.Context) *Report {
	cfg := c.p.cfg
	start := time.Now()
	every := cfg.interval / time.Duration(cfg.samples)
	tick := time.NewTicker(every)
	defer tick.Stop()
	var wg sync.WaitGroup
	for i := range cfg.samples {
		if i > 0 {
			select {
			case <-ctx.Done():
			case <-tick.C:
			}
		}
		if ctx.Err() != nil {
			break
		}
		// Rounds overlap when a phase stalls for longer than the spacing:
		// each is bounded by the Dialer's limits and the request limit, and
		// the interval waits for all of them.
		wg.Add(2)
		go func() {
			defer wg.Done()
			c.round(ctx)
		}()
		go func() {
			defer wg.Done()
			r := c.p.racedDial(ctx)
			c.mu.Lock()
			res := resultOK
			if !r.ok {
				res = classify(r.err)
			}
			c.raced.add(res, r.latency)
			c.racedTot[res]++
			c.mu.Unlock()
		}()
	}
	wg.Wait()
	return c.close(start, time.Now())
}

// round samples every address once.
func (c *collector) round(ctx context.Context) {
	samples, err := c.p.round(ctx)
	c.mu.Lock()
	defer c.mu.Unlock()
	if err != nil {
		if ctx.Err() == nil {
			// The name did not resolve: the current answer is empty, which
			// lifeline.probe.addresses reports as 0.
			c.errs = append(c.errs, err.Error())
			c.answer = nil
		}
		return
	}
	answer := make([]netip.AddrPort, 0, len(samples))
	for _, s := range samples {
		answer = append(answer, s.peer)
		byPhase := c.window[s.peer]
		if byPhase == nil {
			byPhase = make(map[string]*phaseStats)
			c.window[s.peer] = byPhase
		}
		tot := c.totals[s.peer]
		if tot == nil {
			tot = make(map[string]map[string]int64)
			c.totals[s.peer] = tot
		}
		for _, o := range s.outcomes {
			if byPhase[o.phase] == nil {
				byPhase[o.phase] = &phaseStats{}
			}
			byPhase[o.phase].add(o.result, o.latency)
			if tot[o.phase] == nil {
				tot[o.phase] = make(map[string]int64)
			}
			tot[o.phase][o.result]++
		}
	}
	slices.SortFunc(answer, func(a, b netip.AddrPort) int { return a.Compare(b) })
	c.answer = answer
}

// close ends the interval: it builds the report of the addresses probed
// in it and of those in the latest answer, and starts a new window. A
// round whose name did not resolve empties the answer (the metrics then
// export no address) but not the report: what the earlier rounds found
// stays in it, beside the failed resolutions.
func (c *collector) close(start, end time.Time) *Report {
	c.mu.Lock()
	defer c.mu.Unlock()
	r := &Report{Target: c.p.cfg.target, Start: start, End: end, Samples: c.p.cfg.samples,
		Raced: c.raced.report("raced"), Errors: c.errs, Addresses: []AddressReport{}}
	peers := slices.Clone(c.answer)
	for peer := range c.window {
		peers = append(peers, peer)
	}
	slices.SortFunc(peers, func(a, b netip.AddrPort) int { return a.Compare(b) })
	for _, peer := range slices.Compact(peers) {
		a := AddressReport{Address: peer.String()}
		for _, ph := range c.p.cfg.phases() {
			st := c.window[peer][ph]
			if st == nil {
				st = &phaseStats{}
			}
			a.Phases = append(a.Phases, st.report(ph))
		}
		if hs, ok := c.p.health.Stats(peer); ok {
			a.Score, a.Demoted = hs.Score, hs.Demoted
		}
		r.Addresses = append(r.Addresses, a)
	}
	c.window = make(map[netip.AddrPort]map[string]*phaseStats)
	c.raced = phaseStats{}
	c.errs = nil
	c.last = r
	return r
}
