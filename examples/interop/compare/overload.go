package main

import (
	"context"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"strconv"
	"sync"
	"time"

	"gonum.org/v1/plot/plotter"
)

// upstream is a real HTTP server on loopback that records when each
// request arrived and what it answered. Its answer comes from answer
// (status, Retry-After or "", delay before answering) given the arrival
// time; 200 answers are "ok".
type upstream struct {
	srv    *http.Server
	ln     net.Listener
	answer func(now time.Time) (status int, retryAfter string, delay time.Duration)

	mu       sync.Mutex
	arrivals []arrival
}

type arrival struct {
	at     time.Time
	status int
	id     string // the call's, from its X-Compare-Call header
}

func startUpstream(answer func(time.Time) (int, string, time.Duration)) (*upstream, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	u := &upstream{ln: ln, answer: answer}
	u.srv = &http.Server{
		Handler:           http.HandlerFunc(u.serve),
		ErrorLog:          log.New(io.Discard, "", 0),
		ReadHeaderTimeout: time.Minute,
	}
	go func() { _ = u.srv.Serve(ln) }()
	return u, nil
}

func (u *upstream) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	status, ra, delay := u.answer(now)
	u.mu.Lock()
	u.arrivals = append(u.arrivals, arrival{now, status, r.Header.Get(callHeader)})
	u.mu.Unlock()
	if delay > 0 {
		t := time.NewTimer(delay)
		select {
		case <-t.C:
		case <-r.Context().Done():
			t.Stop()
			return
		}
	}
	if ra != "" {
		w.Header().Set("Retry-After", ra)
	}
	if status != http.StatusOK {
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(status)
		return
	}
	w.Header().Set("Content-Length", "2")
	_, _ = w.Write([]byte("ok"))
}

func (u *upstream) url() string { return "http://" + u.ln.Addr().String() + "/" }

func (u *upstream) close() { _ = u.srv.Close() }

// snapshot returns the arrivals so far, in order.
func (u *upstream) snapshot() []arrival {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]arrival(nil), u.arrivals...)
}

// countIn counts the arrivals in [from, to) with status (0: any).
func countIn(as []arrival, from, to time.Time, status int) int {
	n := 0
	for _, a := range as {
		if !a.at.Before(from) && a.at.Before(to) && (status == 0 || a.status == status) {
			n++
		}
	}
	return n
}

// tokenBucket admits rate requests a second with bursts of burst.
type tokenBucket struct {
	rate, burst float64
	mu          sync.Mutex
	tokens      float64
	last        time.Time
}

func (b *tokenBucket) take(now time.Time) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.last.IsZero() {
		b.tokens = b.burst
	} else {
		b.tokens = min(b.burst, b.tokens+now.Sub(b.last).Seconds()*b.rate)
	}
	b.last = now
	if b.tokens >= 1 {
		b.tokens--
		return true
	}
	return false
}

const (
	capacity    = 100 // the overloaded upstream's calls a second
	slowRefusal = time.Second
)

// overloadContenders are (i)'s rows: (h)'s but net/http Timeout 5s (the
// same as the default client against answers that come in time) and
// lifeline WaitForReady (about a down upstream, not an overloaded one),
// which would only lengthen a scenario run one contender at a time.
var overloadContenders = func() []contender {
	var out []contender
	for _, c := range outageContenders {
		if c.name != "net/http Timeout 5s" && c.name != "lifeline WaitForReady" {
			out = append(out, c)
		}
	}
	return out
}()

func runOverloadFast(ctx context.Context, o options) (*section, error) {
	return runOverload(ctx, o, 0)
}

func runOverloadSlow(ctx context.Context, o options) (*section, error) {
	return runOverload(ctx, o, slowRefusal)
}

// runOverload is scenario (i): each contender has its own upstream that
// serves capacity calls a second (a token bucket, bursts of a tenth of a
// second) and answers 503 beyond it, after refuseAfter; 300 calls a second
// are offered, then 50.
func runOverload(ctx context.Context, o options, refuseAfter time.Duration) (*section, error) {
	over, after, high, low, deadline := 10*time.Second, 5*time.Second, 300, 50, 10*time.Second
	if o.short {
		over, after, deadline = time.Second, time.Second, time.Second
	}
	cs := overloadContenders
	var cl cleanups
	defer cl.run()
	ups := make([]*upstream, len(cs))
	clients := make([]*http.Client, len(cs))
	urls := make([]string, len(cs))
	for c, ct := range cs {
		b := &tokenBucket{rate: capacity, burst: capacity / 10}
		u, err := startUpstream(func(now time.Time) (int, string, time.Duration) {
			if b.take(now) {
				return http.StatusOK, "", 0
			}
			return http.StatusServiceUnavailable, "", refuseAfter
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
	// One contender at a time: a few thousand calls a second from every
	// contender at once would measure the machine, not the clients.
	got := make([][]call, len(cs))
	starts := make([]time.Time, len(cs))
	for c := range cs {
		g, st, err := openLoop(ctx, clients[c:c+1], urls[c:c+1],
			func(i int) request { return request{method: http.MethodGet, id: fmt.Sprint(i), tag: true} },
			func(t time.Duration) int {
				if t < over {
					return high
				}
				return low
			}, over+after, deadline, nil)
		if err != nil {
			return nil, err
		}
		got[c], starts[c] = g[0], st
	}
	refusal := "at once"
	if refuseAfter > 0 {
		refusal = "after " + refuseAfter.String() + " (an upstream too busy to refuse quickly)"
	}
	s := &section{
		about: fmt.Sprintf("Each contender has its own upstream (net/http on loopback) that serves %d calls a second (a token bucket, bursts of %d) and answers 503 to the rest, %s. Open-loop load: %d GETs a second for %v (3× the capacity), then %d a second for %v; keep-alive; each call with a %v deadline. The contenders run one after another, each alone on the machine (side by side, some 3,000 calls a second would measure the shared 2-core machine rather than the clients); the upstream records every request it receives.",
			capacity, capacity/10, refusal, high, over, low, after, deadline),
		capAt:    deadline,
		attempts: "requests the upstream received per call (first tries and retries)",
		extraCols: []string{
			"load from the overload's calls, requests/s (target ≤ 2× capacity)",
			"arrivals/s seen in the overload",
			"goodput in overload, ok/s",
			"client ok in overload",
			"upstream load after, calls/s",
			"client ok after",
			"ok p50 / p99",
			"recovered after the drop",
		},
	}
	tl := &timeline{title: "load the upstream saw", yLabel: "requests arriving at the upstream per second"}
	n := int((over + after + deadline) / time.Second)
	capLine := plotter.XYs{{X: 0, Y: capacity}, {X: float64(n), Y: capacity}}
	offered := plotter.XYs{{X: 0, Y: float64(high)}, {X: over.Seconds(), Y: float64(high)}, {X: over.Seconds(), Y: float64(low)}, {X: float64(n), Y: float64(low)}}
	tl.refs = []tline{{name: "capacity", pts: capLine}, {name: "offered", pts: offered}}
	for c, ct := range cs {
		calls, start := got[c], starts[c]
		drop, end := start.Add(over), start.Add(over+after)
		as := ups[c].snapshot()
		st := summarise(calls)
		st.attempts = float64(len(as)) / float64(max(len(calls), 1))
		overCalls := startedIn(calls, start, drop)
		ids := make(map[string]bool, len(overCalls))
		for _, x := range overCalls {
			ids[x.id] = true
		}
		brought := 0
		for _, a := range as {
			if ids[a.id] {
				brought++
			}
		}
		load := float64(brought) / over.Seconds()
		seen := float64(countIn(as, start, drop, 0)) / over.Seconds()
		good := float64(countIn(as, start, drop, http.StatusOK)) / over.Seconds()
		loadAfter := float64(countIn(as, drop, end, 0)) / after.Seconds()
		okO, nO := okOf(startedIn(calls, start, drop))
		okA, nA := okOf(startedIn(calls, drop, end))
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{
			fmt.Sprintf("%.0f (%.1f×)", load, load/capacity), fmt.Sprintf("%.0f", seen), fmt.Sprintf("%.0f", good),
			share(okO, nO), fmt.Sprintf("%.0f", loadAfter), share(okA, nA),
			pair(latencies(calls, true)), recovery(calls, drop, end),
		}})
		times := make([]time.Time, len(as))
		for i, a := range as {
			times[i] = a.at
		}
		tl.lines = append(tl.lines, secondsLine(ct.name, perSecond(times, start, n)))
	}
	s.timeline = tl
	s.targets = fmt.Sprintf("The issue's target for lifeline: the load arriving at the upstream during the overload ≤ 2× its capacity (≤ %d calls/s), where retrying peers multiply it; recovery in seconds once the offered load drops.", 2*capacity)
	why := "Why: net/http sends each call once, so the upstream sees the offered 3× its capacity and serves a third of it. The retrying clients add their retries: failsafe-go retries a 503 twice at once (up to 3 requests per call), go-retryablehttp after 1s, 2s, 4s within the deadline (its backlog of retries goes on for seconds after the drop). lifeline sheds: each upstream keeps the SRE rule's count over 5s (requests, and accepts — answers that are not 429, 502–504, timeouts or resets) and rejects a new call locally with probability (requests − 2·accepts)/(requests + 8), retries and hedges first, so the upstream sees about twice what it serves — a little above 2× in the table, as the rule's padding and the 5s window's lag allow — and the shed calls fail in microseconds with `ErrThrottled` instead of taking a 503 from the upstream. Once the offered load drops, accepts outweigh requests within the window and shedding stops in a few seconds (`recovered after the drop`). Both breakers open within the first second and, set up as their documentation shows, refuse every call for a minute: the upstream is left alone, recovered or not, and callers get nothing until the minute is over."
	if refuseAfter > 0 {
		why = "Why: each refusal takes " + refuseAfter.String() + ", so it holds a conn and its caller that long. net/http opens as many conns as it needs and sees the fast case's numbers, later. The retrying peers retry each slow 503 (failsafe-go at once, go-retryablehttp after 1s, 2s, ...), about 7× the capacity. lifeline keeps at most 64 conns per host (`MaxConnsPerHost`), and with a second per refusal most of them are held by slow refusals: admitted calls would queue for a conn up to their deadline, and the queue would outlive the overload. So the queue is an overload signal: while half the conns' worth of calls wait for a conn, each new call counts for the throttle as a request not accepted, the rule sheds (failing in microseconds instead of after a deadline spent in the queue), the load stays near the capacity and the queue stays short; after the drop the calls go again once the throttle's 5s window has forgotten the overload, so `recovered` sits at the window's edge (4s in one run, just beyond the 5s measured in another). A queue counts only once it has stood for 500ms: the calls a pause releases at once, in (j), are no overload. Its goodput still stays below the capacity: the conns its slow refusals hold are conns its successes cannot use. failsafe-go's breaker opens early and refuses for a minute; gobreaker (60% of all counted calls failed) opens late in the overload and then refuses for a minute."
	}
	s.notes = append(s.notes, why)
	s.notes = append(s.notes, fmt.Sprintf("`load from the overload's calls`: the requests (first tries and retries, whenever they arrived) of the calls started in the %v of overload, per second of it: the load those callers put on the upstream (each request carries its call's id). `arrivals/s seen`: requests that arrived in those %v, by the clock (lower than the load when a client's retries, or a loaded machine, spill past the drop). `upstream load after`: arrivals per second in the %v after the drop, retries of earlier calls included. `goodput`: those it answered 200, per second (at most the capacity). `client ok`: success of the calls started in each phase. `recovered after the drop`: from the drop to 50 calls/s until the first second from which every later second's calls all succeeded (by their start); `not within` when the run ended first.", over, over, after))
	return s, nil
}

// recovery is how long after from the calls started in each later whole
// second (to end) all succeeded: the start of the first such second.
func recovery(calls []call, from, end time.Time) string {
	n := int(end.Sub(from) / time.Second)
	fails := make([]int, n)
	for _, c := range calls {
		if i := int(c.start.Sub(from) / time.Second); c.start.After(from) && i < n && c.err != nil {
			fails[i]++
		}
	}
	k := n
	for k > 0 && fails[k-1] == 0 {
		k--
	}
	if k == n {
		return "not within " + strconv.Itoa(n) + "s"
	}
	return fmt.Sprintf("%ds", k)
}
