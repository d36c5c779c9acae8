package main

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"time"

	"gonum.org/v1/plot/plotter"
)

// event is a change a scenario makes to its fault at a time into the run;
// openLoop records when it was made in *when.
type event struct {
	at   time.Duration
	do   func() error
	when *time.Time
}

// openLoop is the open-loop load of scenarios (e) and (h)..(j): calls start
// on schedule whether or not the earlier ones returned (a service's callers
// do not wait for each other), one per contender at each tick, at rate(t)
// calls a second, t the time into the run, for d. Each call ends by capAt.
// The events are made in order as their time comes (before that tick's
// calls); openLoop waits for every call and returns them with the run's
// start.
func openLoop(ctx context.Context, clients []*http.Client, urls []string, req func(i int) request, rate func(t time.Duration) int, d, capAt time.Duration, events []event) ([][]call, time.Time, error) {
	got := make([][]call, len(clients))
	var mu sync.Mutex
	var wg sync.WaitGroup
	defer wg.Wait()
	start := time.Now()
	next := start
	timer := time.NewTimer(0)
	defer timer.Stop()
	for i := 0; ; i++ {
		for len(events) > 0 && !time.Now().Before(start.Add(events[0].at)) {
			if err := events[0].do(); err != nil {
				return nil, start, err
			}
			if events[0].when != nil {
				*events[0].when = time.Now()
			}
			events = events[1:]
		}
		t := next.Sub(start)
		if t >= d {
			break
		}
		r := req(i)
		for c, client := range clients {
			wg.Go(func() {
				x := do(ctx, client, urls[c], r, capAt)
				mu.Lock()
				got[c] = append(got[c], x)
				mu.Unlock()
			})
		}
		next = next.Add(time.Second / time.Duration(rate(t)))
		if wait := time.Until(next); wait > 0 {
			timer.Reset(wait)
			select {
			case <-timer.C:
			case <-ctx.Done():
				return nil, start, ctx.Err()
			}
		}
	}
	// Events not yet due when the load ended (a very slow machine) are
	// made now, so that every fault is undone.
	for _, e := range events {
		if err := e.do(); err != nil {
			return nil, start, err
		}
		if e.when != nil {
			*e.when = time.Now()
		}
	}
	wg.Wait()
	for c := range got {
		slices.SortFunc(got[c], func(a, b call) int { return a.start.Compare(b.start) })
	}
	return got, start, nil
}

// maxInFlight is the largest number of calls that were running at once.
func maxInFlight(calls []call) int {
	type edge struct {
		t time.Time
		d int
	}
	es := make([]edge, 0, 2*len(calls))
	for _, c := range calls {
		es = append(es, edge{c.start, 1}, edge{c.end, -1})
	}
	slices.SortFunc(es, func(a, b edge) int {
		if c := a.t.Compare(b.t); c != 0 {
			return c
		}
		return a.d - b.d // an end before a start at the same instant
	})
	n, peak := 0, 0
	for _, e := range es {
		n += e.d
		peak = max(peak, n)
	}
	return peak
}

// calls filters calls by their start: in [from, to).
func startedIn(calls []call, from, to time.Time) []call {
	var out []call
	for _, c := range calls {
		if !c.start.Before(from) && c.start.Before(to) {
			out = append(out, c)
		}
	}
	return out
}

// okOf counts the successful calls, as "ok/n".
func okOf(calls []call) (ok, n int) {
	for _, c := range calls {
		if c.err == nil {
			ok++
		}
	}
	return ok, len(calls)
}

// latencies returns the sorted latencies of the calls that succeeded
// (ok true) or failed (ok false).
func latencies(calls []call, ok bool) []time.Duration {
	var out []time.Duration
	for _, c := range calls {
		if (c.err == nil) == ok {
			out = append(out, c.dur())
		}
	}
	slices.Sort(out)
	return out
}

// pair prints a sorted latency list's p50 and p99, or "–" when empty.
func pair(lat []time.Duration) string {
	if len(lat) == 0 {
		return "–"
	}
	return fmtDur(quantile(lat, 0.5)) + " / " + fmtDur(quantile(lat, 0.99))
}

// perSecond buckets times into whole seconds since start, n buckets.
func perSecond(times []time.Time, start time.Time, n int) []float64 {
	out := make([]float64, n)
	for _, t := range times {
		if i := int(t.Sub(start) / time.Second); i >= 0 && i < n {
			out[i]++
		}
	}
	return out
}

// timeline is a chart of a quantity over the run's time, one line per
// contender (and optionally reference lines), drawn beside the CDF.
type timeline struct {
	title, yLabel string
	lines         []tline
	refs          []tline // drawn thin and grey (a capacity, a fault's span)
}

type tline struct {
	name string
	pts  plotter.XYs
}

// secondsLine makes a line of per-second values, each at its second's middle.
func secondsLine(name string, v []float64) tline {
	pts := make(plotter.XYs, len(v))
	for i, y := range v {
		pts[i] = plotter.XY{X: float64(i) + 0.5, Y: y}
	}
	return tline{name: name, pts: pts}
}
