package transport_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// outcome is one call of an open-loop run.
type outcome struct {
	start, end time.Time
	wfr        bool
	status     int
	err        error
	resp       *http.Response // closed; for Exhausted
}

// openLoop runs calls at rate a second from now until stop is closed,
// each with its own deadline (long when wfr says the call waits for
// ready); it returns when every call has ended.
type openLoop struct {
	mu   sync.Mutex
	outs []outcome
	wg   sync.WaitGroup
}

func (l *openLoop) call(ctx context.Context, c *http.Client, url string, deadline time.Duration, wfr bool) {
	l.wg.Go(func() {
		ctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		if wfr {
			ctx = transport.WaitForReady(ctx)
		}
		o := outcome{start: time.Now(), wfr: wfr}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			o.status, o.resp = resp.StatusCode, resp
		}
		o.err, o.end = err, time.Now()
		l.mu.Lock()
		l.outs = append(l.outs, o)
		l.mu.Unlock()
	})
}

// run calls at rate a second for d.
func (l *openLoop) run(ctx context.Context, c *http.Client, url string, rate int, d, deadline time.Duration) {
	tick := time.NewTicker(time.Second / time.Duration(rate))
	defer tick.Stop()
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		l.call(ctx, c, url, deadline, false)
	}
}

func (l *openLoop) between(from, to time.Time) []outcome {
	l.mu.Lock()
	defer l.mu.Unlock()
	var outs []outcome
	for _, o := range l.outs {
		if !o.start.Before(from) && o.start.Before(to) {
			outs = append(outs, o)
		}
	}
	return outs
}

// countingDial counts the connects made through it.
func countingDial(n *atomic.Int64, at *[]time.Time, mu *sync.Mutex, inner func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		n.Add(1)
		mu.Lock()
		*at = append(*at, time.Now())
		mu.Unlock()
		return inner(ctx, network, addr)
	}
}

func countIn(ts []time.Time, from, to time.Time) int {
	n := 0
	for _, t := range ts {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// failFastOff turns the feature off in the fault tests, to see them fail
// without it: LIFELINE_TEST_NO_FAILFAST=1 go test -run TestFailFast...
var failFastOff = os.Getenv("LIFELINE_TEST_NO_FAILFAST") != ""

// TestFailFastBlackhole: an upstream whose packets are all dropped (nftables
// in the test's own namespace) for 6s under 20 calls/s with 10s deadlines:
// from 2s after the fault, calls fail within milliseconds with an
// *UnavailableError whose Last is a *dial.Error; connects to the dead
// address stay at a probe's pace; from 1.5s after the fault ends the calls
// succeed; calls that wait for ready, started during the outage, succeed
// after it. Without fail fast every call waits its dial limits (seconds).
func TestFailFastBlackhole(t *testing.T) {
	ns := faultnet.NewNetns(t)
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	url := "http://" + ln.Addr().String() + "/"

	var connects atomic.Int64
	var mu sync.Mutex
	var connectAt []time.Time
	tr := &transport.Transport{DisableFailFast: failFastOff,
		Dialer: &dial.Dialer{DialFunc: countingDial(&connects, &connectAt, &mu, ns.DialContext)}}
	t.Cleanup(tr.CloseIdleConnections)
	c := transport.NewClient(tr)
	var l openLoop
	ctx := t.Context()

	l.run(ctx, c, url, 20, time.Second, 10*time.Second)
	if err := ns.Vanish(port); err != nil {
		t.Fatal(err)
	}
	faultAt := time.Now()
	// Calls that wait for ready, started in the outage.
	wfrDone := make(chan struct{})
	go func() {
		defer close(wfrDone)
		time.Sleep(3 * time.Second)
		for range 3 {
			l.call(ctx, c, url, 10*time.Second, true)
		}
	}()
	l.run(ctx, c, url, 20, 6*time.Second, 10*time.Second)
	if err := ns.Flush(); err != nil {
		t.Fatal(err)
	}
	endAt := time.Now()
	l.run(ctx, c, url, 20, 4*time.Second, 10*time.Second)
	<-wfrDone
	l.wg.Wait()

	// From 2s after the fault: failed fast.
	outage := l.between(faultAt.Add(2*time.Second), endAt)
	var fast []time.Duration
	var slow int
	for _, o := range outage {
		if o.wfr {
			continue
		}
		d := o.end.Sub(o.start)
		if o.err == nil {
			if d > time.Second {
				slow++ // waited for the upstream to come back
			}
			continue // else a probe that found the upstream back
		}
		var ue *transport.UnavailableError
		if !errors.As(o.err, &ue) {
			slow++
			continue
		}
		var de *dial.Error
		if !errors.As(o.err, &de) {
			t.Errorf("fail-fast error without a *dial.Error inside: %v", o.err)
		}
		fast = append(fast, d)
	}
	slices.Sort(fast)
	t.Logf("outage: %d calls from 2s after the fault, %d failed fast, %d otherwise (probes, waits)", len(outage), len(fast), slow)
	if len(fast) < len(outage)*8/10 {
		t.Fatalf("%d of %d calls failed fast during the outage, want nearly all (the rest are probes)", len(fast), len(outage))
	}
	p99 := fast[len(fast)*99/100]
	t.Logf("fail-fast p50 %v p99 %v", fast[len(fast)/2], p99)
	if p99 > 200*time.Millisecond {
		t.Errorf("fail-fast p99 %v: want milliseconds (the dial limits are seconds)", p99)
	}
	mu.Lock()
	n := countIn(connectAt, faultAt.Add(2*time.Second), endAt)
	mu.Unlock()
	rate := float64(n) / endAt.Sub(faultAt.Add(2*time.Second)).Seconds()
	t.Logf("connects to the dead address from 2s after the fault: %d (%.1f/s)", n, rate)
	if rate > 3.5 {
		t.Errorf("%.1f connects/s to the dead address, want at most ~3", rate)
	}
	// After the fault: the calls from 1.5s after it succeed.
	after := l.between(endAt.Add(1500*time.Millisecond), endAt.Add(time.Hour))
	ok := 0
	for _, o := range after {
		if o.err == nil && o.status == 200 {
			ok++
		} else {
			t.Logf("after recovery: %v", o.err)
		}
	}
	t.Logf("after recovery: %d of %d ok", ok, len(after))
	if ok*100 < len(after)*99 {
		t.Errorf("%d of %d calls ok from 1.5s after the fault ended, want ≥ 99%%", ok, len(after))
	}
	for _, o := range l.between(faultAt, endAt) {
		if o.wfr && (o.err != nil || o.status != 200 || o.end.Before(endAt)) {
			t.Errorf("WaitForReady call: %v, status %d, ended %v after the fault ended", o.err, o.status, o.end.Sub(endAt))
		}
	}
}

// TestFailFastRefusingPort: an upstream that refuses (a port with nothing
// listening) goes down after a few calls; then calls fail at once, the
// connects to it are paced probes, and a listener coming back re-opens it
// within about a probe interval. With DisableFailFast every call dials.
func TestFailFastRefusingPort(t *testing.T) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(live.Close)
	refused := faultnet.RefusedAddr(t, "tcp4")
	// The upstream's address: refused until back is set, then the live
	// server (the same upstream, its listener back).
	var back atomic.Bool
	var nd net.Dialer
	redirect := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if back.Load() {
			return nd.DialContext(ctx, network, live.Listener.Addr().String())
		}
		return nd.DialContext(ctx, network, refused)
	}
	for _, disabled := range []bool{false, true} {
		t.Run("DisableFailFast="+strconv.FormatBool(disabled), func(t *testing.T) {
			back.Store(false)
			var connects atomic.Int64
			var mu sync.Mutex
			var at []time.Time
			tr := &transport.Transport{DisableFailFast: disabled || failFastOff,
				Dialer: &dial.Dialer{DialFunc: countingDial(&connects, &at, &mu, redirect)}}
			defer tr.CloseIdleConnections()
			c := transport.NewClient(tr)
			url := "http://" + refused + "/"
			var l openLoop
			start := time.Now()
			l.run(t.Context(), c, url, 20, 3*time.Second, 5*time.Second)
			l.wg.Wait()
			// From 1s on: fail fast, connects paced.
			outs := l.between(start.Add(time.Second), time.Now())
			unavailable := 0
			for _, o := range outs {
				var ue *transport.UnavailableError
				var de *dial.Error
				if errors.As(o.err, &ue) {
					unavailable++
					if ue.Reason != "down" || !errors.As(o.err, &de) || de.Phase != dial.PhaseConnect {
						t.Fatalf("fail fast: %v (reason %q), want down with the connect's *dial.Error", o.err, ue.Reason)
					}
					if s := ue.Error(); !strings.Contains(s, refused) || strings.Contains(s, "http://") {
						t.Fatalf("error text %q: want the upstream's host:port and no URL", s)
					}
				}
			}
			mu.Lock()
			n := countIn(at, start.Add(time.Second), time.Now())
			mu.Unlock()
			t.Logf("%d calls from 1s on, %d unavailable; %d connects (%d in all)", len(outs), unavailable, n, connects.Load())
			if disabled {
				if unavailable != 0 || n < len(outs) {
					t.Fatalf("DisableFailFast: %d unavailable, %d connects for %d calls: want every call to dial", unavailable, n, len(outs))
				}
				return
			}
			if unavailable < len(outs)*8/10 {
				t.Fatalf("%d of %d calls failed fast, want nearly all", unavailable, len(outs))
			}
			if n > 2*3+2 {
				t.Fatalf("%d connects in 2s while down, want paced probes (about 1 a second)", n)
			}
			// The listener comes back: the next probe re-opens the
			// upstream for everyone.
			back.Store(true)
			backAt := time.Now()
			var l2 openLoop
			l2.run(t.Context(), c, url, 20, 3*time.Second, 5*time.Second)
			l2.wg.Wait()
			var firstOK time.Time
			for _, o := range l2.between(backAt, time.Now()) {
				if o.err == nil && (firstOK.IsZero() || o.end.Before(firstOK)) {
					firstOK = o.end
				}
			}
			if firstOK.IsZero() || firstOK.Sub(backAt) > 2*time.Second {
				t.Fatalf("re-opened %v after the listener came back, want within about a probe interval", firstOK.Sub(backAt))
			}
			for _, o := range l2.between(firstOK.Add(100*time.Millisecond), time.Now()) {
				if o.err != nil {
					t.Fatalf("after re-opening: %v", o.err)
				}
			}
			t.Logf("re-opened %v after the listener came back", firstOK.Sub(backAt))
		})
	}
}

// TestShedOverloadedUpstream: a server with capacity for C calls a second
// (503 at once beyond it) offered 3C: the load arriving at it stays near
// 2C (without shedding, 3C plus retries); when the offered load falls to
// C/2 the calls succeed again within seconds.
func TestShedOverloadedUpstream(t *testing.T) {
	const capacity = 40
	var mu sync.Mutex
	var window time.Time
	served := 0
	var arrivals []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		mu.Lock()
		arrivals = append(arrivals, now)
		if now.Sub(window) >= 100*time.Millisecond {
			window, served = now, 0
		}
		ok := served < capacity/10
		if ok {
			served++
		}
		mu.Unlock()
		if !ok {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	for _, disabled := range []bool{false, true} {
		t.Run("DisableLoadShedding="+strconv.FormatBool(disabled), func(t *testing.T) {
			mu.Lock()
			arrivals = nil
			mu.Unlock()
			tr := &transport.Transport{DisableLoadShedding: disabled || failFastOff}
			defer tr.CloseIdleConnections()
			c := transport.NewClient(tr)
			var l openLoop
			start := time.Now()
			l.run(t.Context(), c, srv.URL, 3*capacity, 6*time.Second, 5*time.Second)
			overEnd := time.Now()
			l.wg.Wait()
			mu.Lock()
			n := countIn(arrivals, start.Add(2*time.Second), overEnd)
			mu.Unlock()
			rate := float64(n) / overEnd.Sub(start.Add(2*time.Second)).Seconds()
			shed := 0
			for _, o := range l.between(start, overEnd) {
				if errors.Is(o.err, transport.ErrThrottled) {
					shed++
				}
			}
			t.Logf("offered %d/s to a capacity of %d/s: %.0f/s arrived; %d calls shed", 3*capacity, capacity, rate, shed)
			if disabled {
				if shed != 0 || rate < 2.5*capacity {
					t.Fatalf("DisableLoadShedding: %d shed, %.0f/s arrived: want today's load (≥ 3C)", shed, rate)
				}
				return
			}
			if rate > 2.4*capacity {
				t.Fatalf("%.0f calls/s arrived at a capacity of %d/s, want about 2× (≤ %.0f)", rate, capacity, 2.4*capacity)
			}
			// The overload ends: C/2 offered; within the throttle's
			// window the calls go and succeed again.
			var l2 openLoop
			calm := time.Now()
			l2.run(t.Context(), c, srv.URL, capacity/2, 8*time.Second, 5*time.Second)
			l2.wg.Wait()
			late := l2.between(calm.Add(5500*time.Millisecond), time.Now())
			for _, o := range late {
				if o.err != nil || o.status != 200 {
					t.Fatalf("%v after the overload ended: %v, status %d", o.start.Sub(calm), o.err, o.status)
				}
			}
			t.Logf("recovered: %d of %d calls ok from 5.5s after the overload", len(late), len(late))
		})
	}
}

// TestRetryAfterPacesNewCalls: a server answering 429 with Retry-After: 2
// for 3s: during each advised wait only the probes reach it; a call whose
// deadline ends before the wait does gets the server's answer at once,
// marked as the Transport's final word (Exhausted, zero attempts); the
// others wait and succeed once the storm is over. Without fail fast each
// call reaches the server.
func TestRetryAfterPacesNewCalls(t *testing.T) {
	var mu sync.Mutex
	var storm time.Time
	var arrivals []time.Time
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		mu.Lock()
		arrivals = append(arrivals, now)
		if storm.IsZero() {
			storm = now
		}
		in := now.Sub(storm) < 3*time.Second
		mu.Unlock()
		if in {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &transport.Transport{DisableFailFast: failFastOff}
	defer tr.CloseIdleConnections()
	c := transport.NewClient(tr)
	ctx := t.Context()
	var l openLoop
	// The first call meets the storm (and waits it out itself).
	l.call(ctx, c, srv.URL, 10*time.Second, false)
	time.Sleep(200 * time.Millisecond)
	start := time.Now()
	tick := time.NewTicker(50 * time.Millisecond)
	for i := 0; time.Since(start) < 3*time.Second; i++ {
		d := 10 * time.Second
		if i%2 == 0 {
			d = time.Second // ends before the advised wait
		}
		l.call(ctx, c, srv.URL, d, false)
		<-tick.C
	}
	tick.Stop()
	l.wg.Wait()
	mu.Lock()
	got := slices.Clone(arrivals)
	stormAt := storm
	mu.Unlock()
	// The storm lasts 3s; the waits end at +2s and +4s: the server sees the
	// first call, a probe at about +2s (another 429), one at about +4s.
	during := countIn(got, stormAt.Add(10*time.Millisecond), stormAt.Add(3900*time.Millisecond))
	t.Logf("%d calls reached the server in the storm's advised waits, %d in all", during, len(got))
	if during > 2 {
		t.Fatalf("%d calls reached the server during the advised waits, want only the probes", during)
	}
	short, long, probes := 0, 0, 0
	for _, o := range l.between(start, time.Now()) {
		switch {
		case o.status == http.StatusTooManyRequests:
			ex := transport.Exhausted(o.resp)
			var ee *retry.ExhaustedError
			if !errors.As(ex, &ee) {
				t.Fatalf("429: Exhausted %v, want a *retry.ExhaustedError", ex)
			}
			if ee.Attempts > 0 {
				// The probe, whose deadline ended before the next
				// pause: the server's own answer.
				probes++
				continue
			}
			short++
			if !errors.Is(ex, transport.ErrUnavailable) || o.end.Sub(o.start) > 1100*time.Millisecond {
				t.Fatalf("held answer after %v: Exhausted %v, want at once, a *retry.ExhaustedError of 0 attempts", o.end.Sub(o.start), ex)
			}
			if ra, _ := strconv.Atoi(o.resp.Header.Get("Retry-After")); ra < 1 || ra > 2 {
				t.Fatalf("held answer's Retry-After %q, want the time left", o.resp.Header.Get("Retry-After"))
			}
		case o.err == nil && o.status == 200:
			long++
		case errors.Is(o.err, context.DeadlineExceeded) && o.end.Sub(o.start) < 1100*time.Millisecond:
			// A short call that waited for the pause's end, which its
			// deadline met first.
		default:
			t.Errorf("call of %v: %v, status %d", o.end.Sub(o.start), o.err, o.status)
		}
	}
	t.Logf("%d short calls got the held 429 at once, %d waited and succeeded, %d probes got a 429", short, long, probes)
	if short == 0 || long == 0 || probes > 2 {
		t.Fatal("want both kinds of calls")
	}
}

// TestShedRefusesHedges: while an upstream is shed, no hedge starts (hedges
// and retries go first); with DisableLoadShedding a slow call is hedged.
func TestShedRefusesHedges(t *testing.T) {
	var slow atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/fail" {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		slow.Add(1)
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	for _, disabled := range []bool{false, true} {
		t.Run("DisableLoadShedding="+strconv.FormatBool(disabled), func(t *testing.T) {
			slow.Store(0)
			tr := &transport.Transport{HedgeDelay: 50 * time.Millisecond, DisableLoadShedding: disabled || failFastOff}
			defer tr.CloseIdleConnections()
			c := transport.NewClient(tr)
			for range 30 {
				if resp, err := c.Get(srv.URL + "/fail"); err == nil {
					_ = resp.Body.Close()
				}
			}
			// Slow calls until 3 went (a shed one is skipped: with the
			// upstream shedding at p ≈ 0.8, ten in a row may all be shed).
			went := 0
			for i := 0; i < 100 && went < 3; i++ {
				resp, err := c.Get(srv.URL + "/slow")
				if errors.Is(err, transport.ErrThrottled) {
					continue
				}
				if err != nil {
					t.Fatal(err)
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				went++
			}
			t.Logf("%d slow calls went, %d reached the server", went, slow.Load())
			switch {
			case disabled && slow.Load() < int64(2*went):
				t.Fatalf("no shedding: %d arrivals for %d slow calls, want each hedged", slow.Load(), went)
			case !disabled && (went == 0 || slow.Load() != int64(went)):
				t.Fatalf("shedding: %d arrivals for %d slow calls, want no hedge", slow.Load(), went)
			}
		})
	}
}
