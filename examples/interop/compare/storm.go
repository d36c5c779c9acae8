package main

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"sync/atomic"
	"time"

	"gonum.org/v1/plot/plotter"
)

// advisedWait is the Retry-After of scenario (j)'s storm.
const advisedWait = 2 * time.Second

// runStorm is scenario (j): each contender's upstream answers every
// request with 429 and `Retry-After: 2` for the storm, and 200 before and
// after it, under open-loop load.
func runStorm(ctx context.Context, o options) (*section, error) {
	before, storm, after, rate, deadline := 5*time.Second, 10*time.Second, 5*time.Second, 20, 10*time.Second
	if o.short {
		before, storm, after, deadline = 500*time.Millisecond, 3*time.Second, time.Second, 3*time.Second
	}
	cs := outageContenders
	var cl cleanups
	defer cl.run()
	var storming atomic.Bool
	ra := fmt.Sprint(int(advisedWait / time.Second))
	ups := make([]*upstream, len(cs))
	clients := make([]*http.Client, len(cs))
	urls := make([]string, len(cs))
	for c, ct := range cs {
		u, err := startUpstream(func(time.Time) (int, string, time.Duration) {
			if storming.Load() {
				return http.StatusTooManyRequests, ra, 0
			}
			return http.StatusOK, "", 0
		})
		if err != nil {
			return nil, err
		}
		cl.add(u.close)
		ups[c], urls[c] = u, u.url()
		client, done := ct.build(&env{})
		cl.add(done)
		clients[c] = client
	}
	var from, to time.Time
	events := []event{
		{at: before, do: func() error { storming.Store(true); return nil }, when: &from},
		{at: before + storm, do: func() error { storming.Store(false); return nil }, when: &to},
	}
	got, start, err := openLoop(ctx, clients, urls,
		func(i int) request { return request{method: http.MethodGet, id: fmt.Sprint(i), tag: true} },
		func(time.Duration) int { return rate }, before+storm+after, deadline, events)
	if err != nil {
		return nil, err
	}
	s := &section{
		about: fmt.Sprintf("Each contender has its own upstream (net/http on loopback) that answers every request with 429 and `Retry-After: %s` for %v, after %v of 200s, and 200s again for the last %v. Open-loop load: %d GETs a second per contender, keep-alive, each with a %v deadline. The upstream records every request it receives.",
			ra, storm, before, after, rate, deadline),
		capAt:    deadline,
		attempts: "requests the upstream received per call (first tries and retries)",
		extraCols: []string{
			"requests in the storm", "429s answered", "advised waits",
			"requests during advised waits (per wait; target: only probes)",
			"client ok, started in the storm", "client ok, started after", "first ok after the storm",
		},
	}
	tl := &timeline{title: "requests during the 429 storm", yLabel: "requests arriving at the upstream per second"}
	n := int((before + storm + after + deadline) / time.Second)
	ymax := 0.0
	for c, ct := range cs {
		calls := got[c]
		as := ups[c].snapshot()
		slices.SortFunc(as, func(a, b arrival) int { return a.at.Compare(b.at) })
		st := summarise(calls)
		st.attempts = float64(len(as)) / float64(max(len(calls), 1))
		waits, during := advisedWaits(as)
		okS, nS := okOf(startedIn(calls, from, to))
		okA, nA := okOf(startedIn(calls, to, start.Add(time.Hour)))
		firstOK := time.Duration(-1)
		for _, x := range calls {
			if d := x.end.Sub(to); x.err == nil && d >= 0 && (firstOK < 0 || d < firstOK) {
				firstOK = d
			}
		}
		first := "none"
		if firstOK >= 0 {
			first = fmtDur(firstOK)
		}
		perWait := "–"
		if waits > 0 {
			perWait = fmt.Sprintf("%d (%.1f)", during, float64(during)/float64(waits))
		}
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{
			fmt.Sprint(countIn(as, from, to, 0)), fmt.Sprint(countIn(as, start, start.Add(time.Hour), http.StatusTooManyRequests)),
			fmt.Sprint(waits), perWait, share(okS, nS), share(okA, nA), first,
		}})
		times := make([]time.Time, len(as))
		for i, a := range as {
			times[i] = a.at
		}
		line := secondsLine(ct.name, perSecond(times, start, n))
		for _, p := range line.pts {
			ymax = max(ymax, p.Y)
		}
		tl.lines = append(tl.lines, line)
	}
	f, t := from.Sub(start).Seconds(), to.Sub(start).Seconds()
	tl.refs = []tline{{name: "429 storm", pts: plotter.XYs{{X: f, Y: 0}, {X: f, Y: ymax}, {X: t, Y: ymax}, {X: t, Y: 0}}}}
	s.timeline = tl
	s.targets = "The issue's target for lifeline: during each advised wait the upstream receives only probes (a request or so per wait, not the callers' full rate); the calls after the storm succeed."
	s.notes = append(s.notes, "Why: net/http does not retry: each call in the storm fails at once, and new calls keep arriving at the full rate through every advised wait. go-retryablehttp and failsafe-go honour Retry-After for the call that got the 429 only: they wait the advised 2s and retry that call, but every new call is still sent at once — the upstream sees the callers' rate plus the retries during each wait. lifeline paces new calls by the advice: a 429 pauses the calls of its path and Authorization (every call to the host once scopes of 3 distinct paths are paused at once, or when a 429 answers the host's probe), a 503 with Retry-After every call to the host, until the advised time (capped by `MaxRetryAfter`); a call whose deadline ends first gets the server's answer at once (`transport.Exhausted` says 0 attempts), the others wait, then one goes as a probe and a success releases them — so the upstream sees one request per advised wait and nearly every call succeeds after its wait. The breakers open on the 429s (failsafe-go's after 5 in a row; gobreaker once they are 60% of every call it counted since it started, so later) and, set up as their documentation shows, stay open for a minute: the upstream is left alone, and so is every caller after the storm.")
	s.notes = append(s.notes, fmt.Sprintf("`advised waits`: the upstream's own account, per contender: a 429 answered while no advice is running starts a wait of %v; every request arriving inside it counts in `requests during advised waits` (and does not start a new one). A client that paces every call to the host by the advice sends none or one (a probe) per wait; a client that honours Retry-After only for the call that got it sends its full rate.", advisedWait))
	return s, nil
}

// advisedWaits walks the arrivals (in order): a 429 outside any advised
// wait starts one of advisedWait; arrivals inside one are counted.
func advisedWaits(as []arrival) (waits, during int) {
	var end time.Time
	for _, a := range as {
		if a.at.Before(end) {
			during++
			continue
		}
		if a.status == http.StatusTooManyRequests {
			waits++
			end = a.at.Add(advisedWait)
		}
	}
	return waits, during
}
