package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"time"

	"gonum.org/v1/plot/plotter"
)

// runBlackhole is scenario (h): a server on one address inside a network
// namespace, whose every packet (to and from its port, established
// connections included) nftables drops for the outage, under open-loop
// load with a deadline per call; then the rule goes and the same server
// answers again.
func runBlackhole(ctx context.Context, o options) (*section, error) {
	before, outage, after, rate, deadline := 5*time.Second, 15*time.Second, 10*time.Second, 20, 10*time.Second
	lastSpan := 10 * time.Second // WaitForReady's target: calls started in the outage's last 10s
	if o.short {
		before, outage, after, rate, deadline = 500*time.Millisecond, 3*time.Second, 2500*time.Millisecond, 20, time.Second
		lastSpan = time.Second
	}
	cs := outageContenders
	s := &section{
		about: fmt.Sprintf("One HTTP server on 127.0.0.1 inside a network namespace the program creates; every contender's sockets are made there through the counting net.Dialer hook. Open-loop load: %d GETs a second per contender (keep-alive, sent on schedule whether or not earlier calls returned), each with a %v deadline (its context; the column `ended by deadline` counts the calls it ended). After %v, nftables drops every packet to and from the server's port for %v (`faultnet` `Netns.Vanish`: new connects get no SYN-ACK, open connections go silent), then the rule is removed (`Flush`) and the load goes on for %v.",
			rate, deadline, before, outage, after),
		capAt:    deadline,
		attempts: "connects started per call, over every call of the run",
		extraCols: []string{
			"fail p50 / p99", "ok p50 / p99",
			"fail p99, started from fault+2s (target ≤ 5ms)",
			"in flight at once, max (target ≤ 10% of lifeline's today)",
			"connects/s to the dead address in the outage (target ≤ 3)",
			"ok, started from Up+1.5s (target ≥ 99%)",
			fmt.Sprintf("ok, started in the outage's last %v (WaitForReady target: all)", lastSpan),
			"ended by deadline",
		},
	}
	ns, del, err := newNetns()
	var skip *skipError
	if errors.As(err, &skip) {
		s.skipped = skip.why
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer del()
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	be := startBackend(ln, nil, 0)
	defer be.close()
	port := ln.Addr().(*net.TCPAddr).Port
	url := fmt.Sprintf("http://127.0.0.1:%d/", port)

	var cl cleanups
	defer cl.run()
	clients := make([]*http.Client, len(cs))
	urls := make([]string, len(cs))
	envs := make([]*env, len(cs))
	for c, ct := range cs {
		envs[c] = &env{ns: ns, badAddr: "127.0.0.1"}
		client, done := ct.build(envs[c])
		cl.add(done)
		clients[c], urls[c] = client, url
	}
	var downAt, upAt time.Time
	events := []event{
		{at: before, do: func() error { return ns.Vanish(port) }, when: &downAt},
		{at: before + outage, do: ns.Flush, when: &upAt},
	}
	got, start, err := openLoop(ctx, clients, urls,
		func(i int) request { return request{method: http.MethodGet, id: fmt.Sprint(i)} },
		func(time.Duration) int { return rate }, before+outage+after, deadline, events)
	if err != nil {
		_ = ns.Flush()
		return nil, err
	}
	if o.verbose {
		fmt.Printf("(h) fault at %v, recovery at %v into the run\n", downAt.Sub(start), upAt.Sub(start))
	}

	var todayPeak int
	tl := &timeline{title: "calls in flight", yLabel: "calls in flight (sampled every 250ms)"}
	ymax := 0.0
	for c, ct := range cs {
		calls := got[c]
		st := summarise(calls)
		late := startedIn(calls, downAt.Add(2*time.Second), upAt)
		lateFail := latencies(late, false)
		lateP99 := "–"
		if len(lateFail) > 0 {
			lateP99 = fmtDur(quantile(lateFail, 0.99))
		}
		peak := maxInFlight(calls)
		if ct.name == "lifeline" {
			todayPeak = peak
		}
		connRate := float64(envs[c].badBetween(downAt, upAt)) / upAt.Sub(downAt).Seconds()
		okA, nA := okOf(startedIn(calls, upAt.Add(1500*time.Millisecond), start.Add(time.Hour)))
		okL, nL := okOf(startedIn(calls, upAt.Add(-lastSpan), upAt))
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{
			pair(latencies(calls, false)), pair(latencies(calls, true)),
			lateP99, fmt.Sprint(peak), fmt.Sprintf("%.1f", connRate),
			share(okA, nA), share(okL, nL), fmt.Sprint(st.capped),
		}})
		line := inFlightLine(ct.name, calls, start, before+outage+after+deadline)
		for _, p := range line.pts {
			ymax = max(ymax, p.Y)
		}
		tl.lines = append(tl.lines, line)
	}
	d, u := downAt.Sub(start).Seconds(), upAt.Sub(start).Seconds()
	tl.refs = []tline{{name: "outage", pts: plotter.XYs{{X: d, Y: 0}, {X: d, Y: ymax}, {X: u, Y: ymax}, {X: u, Y: 0}}}}
	s.timeline = tl
	s.targets = fmt.Sprintf("The issue's targets for lifeline's zero config: failures started from 2s after the fault answered with p99 ≤ 5ms; in flight at once ≤ 10%% of today's (lifeline here: %d, so ≤ %d); ≤ 3 connects a second to the dead address; ≥ 99%% of the calls started from 1.5s after the upstream returns succeed; with `WaitForReady`, the calls started in the outage's last %v succeed after it.", todayPeak, todayPeak/10, lastSpan)
	s.notes = append(s.notes, "Why: for net/http and its wrappers nobody knows the upstream is down, so every call finds it out for itself. The conns in the pool were black-holed with it, so each call in the outage dials a new one, and its SYNs get no answer: net/http waits for the caller's deadline (its dial limit is 30s), every call held 10s, some 200 at once; `Client.Timeout` gives up at 5s; go-retryablehttp's 5s attempt and 1s wait leave no room for a second success within the deadline; failsafe-go's 1s per-attempt timeout and two retries fail each call after about 3s, with three connects. The breakers, set up as their documentation shows, open late or stay open for a minute after the upstream is back. lifeline learns it: once 3 dials have hung for over a second with no success (about 1.1s into the outage), every new call fails in microseconds with `*transport.UnavailableError` (the `*dial.Error` of the real failure inside), the calls already waiting for a dial end then too, and the Transport probes the upstream itself, one connect about once a second, so no caller's call is a probe; the first probe that connects re-opens it for everyone. What is left in flight is the first second's calls before detection, and the calls whose request was already on a kept-alive conn when the packets stopped (nothing to cut: they end at their deadline); the connects to the dead address are those of the first second's dials (each races a second connect to the lone address after 250ms) and the probes. `WaitForReady` calls wait within their deadline instead of failing, and go when the probe re-opens the upstream: nearly all of those started in the outage's last 10s succeed after it (the others' deadlines end within a probe interval of the recovery).")
	s.notes = append(s.notes, "The circuit breakers learn from failures, and a black hole yields a failure only when a call's deadline ends, 10s late, while new calls keep coming: the breakers cannot cut the pile-up in flight short. failsafe-go's opens after 5 consecutive failures, then fails calls at once, but as its documentation sets it up it stays open for a minute: every call after the recovery fails too, until the run ends. gobreaker never opens here: its `ReadyToTrip` compares the failures with every request counted since it started (the README's settings never clear the counts while closed), in-flight ones included, and the healthy seconds before the fault plus the calls still pending keep the ratio under 60%.")
	s.notes = append(s.notes, "`fail p50 / p99`, `ok p50 / p99`: latency of the failed and of the successful calls. `in flight at once`: the most calls running at one instant (goroutines held by the outage). `connects/s`: connects started to the dead address between the fault and the recovery (the counting dialer hook; a retried or raced connect counts each time), per second. `ok, started from Up+1.5s`: success of the calls started from 1.5s after the rule was removed to the end. `ok, started in the outage's last ...`: success of the calls started then, which can only succeed by waiting for the recovery.")
	return s, nil
}

// share prints ok/n as a percentage with the counts, or "–" when n is 0.
func share(ok, n int) string {
	if n == 0 {
		return "–"
	}
	return fmt.Sprintf("%.1f%% (%d/%d)", 100*float64(ok)/float64(n), ok, n)
}

// inFlightLine samples the number of calls running every 250ms over span.
func inFlightLine(name string, calls []call, start time.Time, span time.Duration) tline {
	const step = 250 * time.Millisecond
	var pts plotter.XYs
	for t := time.Duration(0); t <= span; t += step {
		at := start.Add(t)
		n := 0
		for _, c := range calls {
			if !c.start.After(at) && c.end.After(at) {
				n++
			}
		}
		pts = append(pts, plotter.XY{X: t.Seconds(), Y: float64(n)})
	}
	return tline{name: name, pts: pts}
}
