package interop_test

import (
	"context"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/failsafe-go/failsafe-go/failsafehttp"
	"github.com/failsafe-go/failsafe-go/timeout"
	"github.com/hashicorp/go-retryablehttp"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// Peers on incident 01's fault (transport/incident_test.go has lifeline's
// own replay): plain HTTP load balancers that hang every 12th new
// connection after accept, in front of a real backend, each request on a
// new connection (the peers' transports have DisableKeepAlives), one
// balancer per worker sending one request after another, so the
// connection a retry opens right after a hung one is never hung itself.
//
// The peers, each as its documentation sets it up:
//   - nethttp-default: http.Client with no Timeout. It waits forever on a
//     hung connection; the test and the benchmark cap each request (capAt)
//     only so that they end.
//   - nethttp-timeout5s: http.Client{Timeout: 5s}: the hung requests fail.
//   - retryablehttp: github.com/hashicorp/go-retryablehttp's NewClient
//     (4 retries, waits from 1s) on an http.Client with Timeout 5s: a hung
//     request costs 5s, a 1s wait and a retry.
//   - failsafehttp: github.com/failsafe-go/failsafe-go's failsafehttp
//     RoundTripper with its HTTP retry policy around a 1s timeout.
//   - lifeline: transport.Transport with HedgeDelay 250ms.

const peerHangEvery = 12

// peerFault is the backend and one balancer per worker.
type peerFault struct {
	urls []string
	lbs  []*faultnet.Server
}

func startPeerFault(tb testing.TB, workers int) *peerFault {
	tb.Helper()
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	backend.Config.ErrorLog = log.New(io.Discard, "", 0)
	backend.Start()
	tb.Cleanup(backend.Close)
	f := &peerFault{}
	for range workers {
		lb := faultnet.StartLB(tb, faultnet.LBConfig{
			Backend: backend.Listener.Addr().String(),
			Fault:   faultnet.Silence,
			Select:  faultnet.EveryNth(peerHangEvery),
		})
		f.lbs = append(f.lbs, lb)
		f.urls = append(f.urls, "http://"+lb.Addr()+"/")
	}
	return f
}

func (f *peerFault) stats() (accepted, hung int64) {
	for _, lb := range f.lbs {
		st := lb.Stats()
		accepted += st.Accepted
		hung += st.Faulted
	}
	return accepted, hung
}

// peerResult is what one client saw over a replay.
type peerResult struct {
	ok, failed int
	lat        []time.Duration // every request's, sorted
	failLat    []time.Duration // the failed requests', sorted
	conns      int64           // connections the balancers accepted
	hung       int64
}

func (r peerResult) q(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[min(max(int(q*float64(len(r.lat))+0.5)-1, 0), len(r.lat)-1)]
}

func (r peerResult) String() string {
	n := r.ok + r.failed
	return fmt.Sprintf("success %.1f%% (%d/%d), p50 %v, p99 %v, max %v, %.3f attempts/req (%d conns, %d hung)",
		100*float64(r.ok)/float64(n), r.ok, n, r.q(0.5).Round(time.Millisecond), r.q(0.99).Round(time.Millisecond),
		r.q(1).Round(time.Millisecond), float64(r.conns)/float64(n), r.conns, r.hung)
}

// replay sends n GETs, worker w to balancer w, one after another, each
// capped at capAt so that a client that waits forever ends.
func (f *peerFault) replay(client *http.Client, n int, capAt time.Duration) peerResult {
	var (
		mu  sync.Mutex
		res peerResult
		wg  sync.WaitGroup
	)
	workers := len(f.urls)
	for w, url := range f.urls {
		wg.Go(func() {
			for i := w; i < n; i += workers {
				ctx, cancel := context.WithTimeout(context.Background(), capAt)
				start := time.Now()
				err := getOK(ctx, client, url)
				d := time.Since(start)
				cancel()
				mu.Lock()
				res.lat = append(res.lat, d)
				if err == nil {
					res.ok++
				} else {
					res.failed++
					res.failLat = append(res.failLat, d)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(res.lat)
	slices.Sort(res.failLat)
	res.conns, res.hung = f.stats()
	return res
}

func getOK(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && (resp.StatusCode != http.StatusOK || string(b) != "ok") {
		err = fmt.Errorf("answer %d %q", resp.StatusCode, b)
	}
	return err
}

// peer is one client under comparison; make returns it and its cleanup.
type peer struct {
	name string
	make func() (*http.Client, func())
}

func noKeepAlive() *http.Transport {
	return &http.Transport{DisableKeepAlives: true}
}

var peers = []peer{
	{"nethttp-default", func() (*http.Client, func()) {
		t := noKeepAlive()
		return &http.Client{Transport: t}, t.CloseIdleConnections
	}},
	{"nethttp-timeout5s", func() (*http.Client, func()) {
		t := noKeepAlive()
		return &http.Client{Transport: t, Timeout: 5 * time.Second}, t.CloseIdleConnections
	}},
	{"retryablehttp", func() (*http.Client, func()) {
		t := noKeepAlive()
		rc := retryablehttp.NewClient()
		rc.HTTPClient = &http.Client{Transport: t, Timeout: 5 * time.Second}
		rc.Logger = nil
		return rc.StandardClient(), t.CloseIdleConnections
	}},
	{"failsafehttp", func() (*http.Client, func()) {
		t := noKeepAlive()
		rt := failsafehttp.NewRoundTripper(t,
			failsafehttp.NewRetryPolicyBuilder().Build(),
			timeout.New[*http.Response](time.Second))
		return &http.Client{Transport: rt}, t.CloseIdleConnections
	}},
	{"lifeline", func() (*http.Client, func()) {
		t := &transport.Transport{HedgeDelay: 250 * time.Millisecond, MaxIdleConnsPerHost: -1}
		return transport.NewClient(t), t.CloseIdleConnections
	}},
}

// TestPeersOnIncidentFault checks the shape of each peer's answer to the
// fault on a short replay (4 balancers, 12 requests each: one hung
// connection per balancer): what fails, and what it costs.
func TestPeersOnIncidentFault(t *testing.T) {
	const (
		workers = 4
		n       = workers * peerHangEvery
		capAt   = 3 * time.Second // nethttp-default: the test's patience, not the client's
	)
	for _, p := range peers {
		t.Run(p.name, func(t *testing.T) {
			t.Parallel()
			f := startPeerFault(t, workers)
			client, done := p.make()
			defer done()
			limit := capAt
			if p.name != "nethttp-default" {
				limit = 30 * time.Second // no peer here may need it
			}
			res := f.replay(client, n, limit)
			t.Logf("%s: %v", p.name, res)
			if res.hung < workers {
				t.Fatalf("the balancers hung %d connections, want at least %d", res.hung, workers)
			}
			switch p.name {
			case "nethttp-default":
				// Every request on a hung connection was still waiting when
				// the test gave up: no timeout of its own would end it.
				if res.failed != workers {
					t.Errorf("%d failed, want the %d on hung connections", res.failed, workers)
				}
				for _, d := range res.failLat {
					if d < capAt-100*time.Millisecond {
						t.Errorf("a failure after %v, before the test's %v cap: the client gave up by itself", d, capAt)
					}
				}
			case "nethttp-timeout5s":
				if res.failed != workers || res.ok != n-workers {
					t.Errorf("%d ok, %d failed; want the %d on hung connections failed, no retry", res.ok, res.failed, workers)
				}
				for _, d := range res.failLat {
					if d < 5*time.Second {
						t.Errorf("a failure after %v, before Client.Timeout (5s)", d)
					}
				}
			case "retryablehttp":
				if res.failed != 0 {
					t.Errorf("%d failed, want none (retried)", res.failed)
				}
				if res.q(1) < 6*time.Second {
					t.Errorf("slowest %v, want at least Client.Timeout 5s + RetryWaitMin 1s", res.q(1))
				}
			case "failsafehttp":
				if res.failed != 0 {
					t.Errorf("%d failed, want none (retried)", res.failed)
				}
				if res.q(1) < time.Second || res.q(1) > 4*time.Second {
					t.Errorf("slowest %v, want the 1s timeout and a retry", res.q(1))
				}
			case "lifeline":
				if res.failed != 0 {
					t.Errorf("%d failed, want none (hedged)", res.failed)
				}
				// About 250ms (the hedge) on a quiet machine; a hung
				// connection left alone lasts FirstByteTimeout (15s). The
				// bound leaves a loaded machine (the race detector, the
				// peers running in parallel) its lag.
				if res.q(1) >= 3*time.Second {
					t.Errorf("slowest %v, want the 250ms hedge, far from the 15s FirstByteTimeout", res.q(1))
				}
			}
		})
	}
}

// BenchmarkPeersIncidentReplay replays the fault with b.N requests over 8
// balancers and reports success (%), p50, p99 and max (ms) and attempts
// (connections) per request for each peer, next to lifeline's; run with a
// fixed count, e.g.
//
//	go test -run '^$' -bench PeersIncidentReplay -benchtime 400x .
//
// nethttp-default is capped at 10s per request so that it ends: its
// max-ms is the cap, uncapped it waits forever.
func BenchmarkPeersIncidentReplay(b *testing.B) {
	const workers = 8
	for _, p := range peers {
		b.Run("peer="+p.name, func(b *testing.B) {
			f := startPeerFault(b, workers)
			client, done := p.make()
			defer done()
			b.ResetTimer()
			res := f.replay(client, b.N, 10*time.Second)
			b.StopTimer()
			ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }
			b.ReportMetric(100*float64(res.ok)/float64(b.N), "success-%")
			b.ReportMetric(ms(res.q(0.5)), "p50-ms")
			b.ReportMetric(ms(res.q(0.99)), "p99-ms")
			b.ReportMetric(ms(res.q(1)), "max-ms")
			b.ReportMetric(float64(res.conns)/float64(b.N), "attempts/req")
			b.ReportMetric(0, "ns/op")
		})
	}
}
