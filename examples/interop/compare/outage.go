package main

import (
	"context"
	"fmt"
	"net/http"
	"sync"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// runOutage is scenario (e): steady load on a backend behind one balancer,
// which goes away (faultnet Server.Down: connects are refused, open
// connections reset) for 10s and comes back (Up) on the same port.
func runOutage(ctx context.Context, o options) (*section, error) {
	before, outage, after, rate, capAt := 3*time.Second, 10*time.Second, 5*time.Second, 20, 20*time.Second
	if o.short {
		before, outage, after, rate, capAt = 300*time.Millisecond, time.Second, 500*time.Millisecond, 20, 3*time.Second
	}
	var cl cleanups
	defer cl.run()
	be, err := listenBackend(nil, 0)
	if err != nil {
		return nil, err
	}
	cl.add(be.close)
	lb, err := faultnet.NewLB(faultnet.LBConfig{Backend: be.addr()})
	if err != nil {
		return nil, err
	}
	cl.add(func() { _ = lb.Close() })
	url := "http://" + lb.Addr() + "/"
	clients := make([]*http.Client, len(contenders))
	for c, ct := range contenders {
		client, done := ct.build(&env{})
		cl.add(done)
		clients[c] = client
	}

	// Open-loop load: every tick, one call per contender, whether or not
	// the earlier ones returned (a service's callers do not wait for each
	// other), each on a new connection.
	got := make([][]call, len(contenders))
	var mu sync.Mutex
	var wg sync.WaitGroup
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	start := time.Now()
	down, up := start.Add(before), start.Add(before+outage)
	isDown := false
	var downAt, upAt time.Time
	for i := 0; ; i++ {
		now := time.Now()
		if !isDown && downAt.IsZero() && !now.Before(down) {
			if err := lb.Down(); err != nil {
				return nil, err
			}
			isDown, downAt = true, time.Now()
		}
		if isDown && !now.Before(up) {
			if err := lb.Up(); err != nil {
				return nil, err
			}
			isDown, upAt = false, time.Now()
		}
		if now.Sub(start) >= before+outage+after {
			break
		}
		req := request{method: http.MethodGet, id: fmt.Sprint(i), close: true}
		for c, client := range clients {
			wg.Go(func() {
				r := do(ctx, client, url, req, capAt)
				mu.Lock()
				got[c] = append(got[c], r)
				mu.Unlock()
			})
		}
		select {
		case <-tick.C:
		case <-ctx.Done():
			wg.Wait()
			return nil, ctx.Err()
		}
	}
	if isDown { // the loop ended first (a very slow machine): recover now
		if err := lb.Up(); err != nil {
			return nil, err
		}
		upAt = time.Now()
	}
	wg.Wait()

	s := &section{
		about:     fmt.Sprintf("Steady open-loop load: %d GETs a second per contender (each on a new connection, sent on schedule whether or not earlier calls returned) to a backend behind a balancer, which is taken away for %v (`faultnet` `Server.Down`: connects refused, open connections reset) after %v and brought back (`Up`, same port) for the last %v. Every contender gets its call at the same tick.", rate, outage, before, after),
		capNote:   capNote(capAt),
		capAt:     capAt,
		attempts:  "connects started per call, over every call of the run",
		extraCols: []string{"attempts/call in outage", "ok in outage", "first ok after Up", "backlog cleared after Up", "failed, started after Up"},
		notes: []string{
			"`attempts/call in outage`: connects per call for the calls started while the balancer was down, the retry amplification an outage sees. `ok in outage`: those calls that still succeeded (late, after Up). `first ok after Up`: from Up to the first successful call's end, whenever that call started. `backlog cleared after Up`: from Up to the end of the last call started before it, i.e. how long callers still waited on the outage once the service was back (0 when none was left). `failed, started after Up`: calls started after the recovery that still failed.",
			"Why: net/http does not retry; every call in the outage fails at once (connection refused), one connect each. failsafe-go retries twice with no delay: three refused connects per call within milliseconds, and the call fails anyway. go-retryablehttp backs off 1s, 2s, 4s, 8s, so calls started in the outage wait it out and succeed after Up — **the best success rate here** — at the price of about four connects per call while the service is down and callers held for up to 15s, still waiting seconds after the service is back. lifeline holds the refused address down after 5 refused connects in a row: from then on calls fail in microseconds with `*transport.UnavailableError` (the last refusal inside) without a connect of their own, and the Transport's own probe, one connect about once a second, re-opens it for everyone at its first success after Up — attempts per call in the outage fall to a few hundredths, and the price is the probe's interval: calls started in the first second after Up still fail fast (`failed, started after Up`, `first ok after Up` under a second).",
			"That is the default because a caller of a down service is better served by a fast, typed error (`ErrUnavailable`, carrying the last real failure) than by a wait it cannot use, and the recovering service by not receiving every caller's connects; a call that would rather wait it out, as go-retryablehttp's do here, opts in per call with `transport.WaitForReady` (or `DisableFailFast` for the whole Transport).",
		},
	}
	for c, ct := range contenders {
		st := summarise(got[c])
		var inN, inOK int
		var inAtt int64
		firstOK := time.Duration(-1)
		failedAfter := 0
		var backlog time.Duration
		for _, r := range got[c] {
			if !r.start.Before(downAt) && r.start.Before(upAt) {
				inN++
				inAtt += r.attempts
				if r.err == nil {
					inOK++
				}
			}
			if r.err == nil && !r.end.Before(upAt) {
				if d := r.end.Sub(upAt); firstOK < 0 || d < firstOK {
					firstOK = d
				}
			}
			if r.start.Before(upAt) {
				backlog = max(backlog, r.end.Sub(upAt))
			}
			if r.err != nil && !r.start.Before(upAt) {
				failedAfter++
			}
		}
		rec := "none"
		if firstOK >= 0 {
			rec = fmtDur(firstOK)
		}
		inAttS := "n/a"
		if inN > 0 {
			inAttS = fmt.Sprintf("%.2f", float64(inAtt)/float64(inN))
		}
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{
			inAttS, fmt.Sprintf("%d/%d", inOK, inN), rec, fmtDur(backlog), fmt.Sprint(failedAfter),
		}})
	}
	return s, nil
}
