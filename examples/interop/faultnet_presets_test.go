package interop_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestFaultnetPresets replays each of faultnet's incident presets, as an
// SDK author outside lifeline would (this module imports the public
// faultnet), against net/http's default client (http.DefaultTransport's
// settings; capped by the test so that it ends) and against lifeline's
// transport.Transport, and checks what each preset's doc promises. The
// figures it logs are the ones the presets' docs quote.
func TestFaultnetPresets(t *testing.T) {
	t.Run("incident01", func(t *testing.T) {
		t.Parallel()
		up := presetUpstream(t, false)
		const n, capAt = 24, 2 * time.Second
		t.Run("nethttp-default", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident01.Start(t, up.Listener.Addr().String())
			res := sequential(defaultClient(nil, false), "http://"+p.Addr()+"/", n, capAt, 0)
			t.Logf("incident01 nethttp-default: %v; proxy %+v", res, p.Stats())
			// Every 12th request waited on its silent connection until
			// the test's cap: nothing in the client ended it.
			if res.failed != n/12 || res.failMin < capAt-100*time.Millisecond {
				t.Errorf("%v: want the %d requests on hung connections to fail at the %v cap", res, n/12, capAt)
			}
		})
		t.Run("lifeline", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident01.Start(t, up.Listener.Addr().String())
			tr := &transport.Transport{HedgeDelay: 250 * time.Millisecond, MaxIdleConnsPerHost: -1}
			defer tr.CloseIdleConnections()
			res := sequential(transport.NewClient(tr), "http://"+p.Addr()+"/", n, 30*time.Second, 0)
			st := p.Stats()
			t.Logf("incident01 lifeline: %v; proxy %+v", res, st)
			if res.failed != 0 || res.max > 3*time.Second || st.Faulted < n/12 {
				t.Errorf("%v, %d hung: want every request to succeed, bounded near the 250ms hedge (a hung one alone waits 15s)", res, st.Faulted)
			}
			tr.CloseIdleConnections()
			waitFor(t, 10*time.Second, "the client closed every hung connection", func() bool { st = p.Stats(); return st.ClosedByPeer == st.Faulted })
		})
	})

	t.Run("incident02", func(t *testing.T) {
		t.Parallel()
		up := presetUpstream(t, true)
		const n = 12
		tlsConf := up.Client().Transport.(*http.Transport).TLSClientConfig
		t.Run("nethttp-default", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident02.Start(t, up.Listener.Addr().String())
			res := sequential(defaultClient(tlsConf, false), "https://"+p.Addr()+"/", n, 30*time.Second, 0)
			t.Logf("incident02 nethttp-default: %v; proxy %+v", res, p.Stats())
			// DefaultTransport's TLSHandshakeTimeout (10s) ends the hung
			// handshake; nothing retries it.
			if res.failed != 1 || res.failMin < 9*time.Second {
				t.Errorf("%v: want the request on the hung handshake to fail after ~10s", res)
			}
		})
		t.Run("lifeline", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident02.Start(t, up.Listener.Addr().String())
			tr := &transport.Transport{HedgeDelay: 250 * time.Millisecond, MaxIdleConnsPerHost: -1, TLSClientConfig: tlsConf}
			defer tr.CloseIdleConnections()
			res := sequential(transport.NewClient(tr), "https://"+p.Addr()+"/", n, 30*time.Second, 0)
			st := p.Stats()
			t.Logf("incident02 lifeline: %v; proxy %+v", res, st)
			if res.failed != 0 || res.max > 3*time.Second || st.Faulted < 1 {
				t.Errorf("%v: want every request to succeed near the 250ms hedge (TLS handshake bound 5s)", res)
			}
		})
	})

	t.Run("incident03", func(t *testing.T) {
		t.Parallel()
		up := presetUpstream(t, false)
		// Four workers, keep-alive, a request every 50ms each for 3.5s:
		// three flaps.
		const workers, every, span = 4, 50 * time.Millisecond, 3500 * time.Millisecond
		for _, c := range []struct {
			name   string
			client func() (*http.Client, func())
		}{
			{"nethttp-default", func() (*http.Client, func()) {
				c := defaultClient(nil, true)
				return c, c.CloseIdleConnections
			}},
			{"lifeline", func() (*http.Client, func()) {
				tr := &transport.Transport{}
				return transport.NewClient(tr), tr.CloseIdleConnections
			}},
		} {
			t.Run(c.name, func(t *testing.T) {
				t.Parallel()
				p := faultnet.Incident03.Start(t, up.Listener.Addr().String())
				client, done := c.client()
				defer done()
				res := concurrent(client, "http://"+p.Addr()+"/", workers, span, every, 5*time.Second)
				st := p.Stats()
				t.Logf("incident03 %s: %v; proxy %+v", c.name, res, st)
				// Every request ends (none hangs on a reset connection),
				// at most one per worker and flap fails, and the dead
				// sessions the server holds stay at about one per worker
				// and flap: the client replaced, not multiplied, its
				// connections.
				flaps := int(span / time.Second)
				if res.failed > workers*flaps || res.max >= 5*time.Second {
					t.Errorf("%v: want at most %d failures, none at the cap", res, workers*flaps)
				}
				if st.Dropped < int64(flaps)-1 || st.Lingering > int64(workers*(flaps+1)) || st.MaxActive > 2*workers {
					t.Errorf("proxy %+v: want dropped >= %d, lingering <= %d, max active <= %d", st, flaps-1, workers*(flaps+1), 2*workers)
				}
			})
		}
	})

	t.Run("incident04", func(t *testing.T) {
		t.Parallel()
		up := presetUpstream(t, false)
		const outage = 4 * time.Second
		t.Run("nethttp-default", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident04.Start(t, up.Listener.Addr().String())
			res := sequential(defaultClient(nil, false), "http://"+p.Addr()+"/", 1, 20*time.Second, 0)
			t.Logf("incident04 nethttp-default: %v", res)
			// The connect waits for a SYN retransmit after the route
			// returns (the kernel's backoff sends them 1s, 3s and 7s after
			// the first: about 7s).
			if res.max < outage {
				t.Errorf("%v: want the request to wait out the %v outage", res, outage)
			}
		})
		t.Run("lifeline", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident04.Start(t, up.Listener.Addr().String())
			tr := &transport.Transport{
				Dialer: &dial.Dialer{ConnectTimeout: 500 * time.Millisecond},
				Retry:  &retry.Policy{MaxAttempts: 10, InitialInterval: 100 * time.Millisecond, MaxInterval: 400 * time.Millisecond},
			}
			defer tr.CloseIdleConnections()
			// A caller that rides out the outage says so: without
			// WaitForReady the call ends with ErrUnavailable once five
			// connects in a row failed (fail fast; ~2.5–5s in, racing
			// the restore).
			waits := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
				return tr.RoundTrip(r.WithContext(transport.WaitForReady(r.Context())))
			})}
			res := sequential(waits, "http://"+p.Addr()+"/", 1, 20*time.Second, 0)
			t.Logf("incident04 lifeline: %v", res)
			// Each connect attempt is bounded (500ms), retried with
			// backoff or waiting for the upstream's probe, and the first
			// after the restore succeeds.
			if res.failed != 0 || res.max < outage-500*time.Millisecond || res.max > outage+3*time.Second {
				t.Errorf("%v: want success within ~1s after the %v outage", res, outage)
			}
		})
	})

	t.Run("incident05", func(t *testing.T) {
		t.Parallel()
		up := presetUpstream(t, false)
		const n = 40
		t.Run("nethttp-default", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident05.Start(t, up.Listener.Addr().String())
			res := sequential(defaultClient(nil, false), "http://"+p.Addr()+"/", n, 10*time.Second, 0)
			t.Logf("incident05 nethttp-default: %v; proxy %+v", res, p.Stats())
			// A reset on a new connection is returned, not retried.
			if res.failed != n/10 {
				t.Errorf("%v: want the %d reset requests to fail", res, n/10)
			}
		})
		t.Run("lifeline", func(t *testing.T) {
			t.Parallel()
			p := faultnet.Incident05.Start(t, up.Listener.Addr().String())
			tr := &transport.Transport{MaxIdleConnsPerHost: -1}
			defer tr.CloseIdleConnections()
			res := sequential(transport.NewClient(tr), "http://"+p.Addr()+"/", n, 10*time.Second, 0)
			st := p.Stats()
			t.Logf("incident05 lifeline: %v; proxy %+v (%.2f connections per request)", res, st, float64(st.Accepted)/n)
			if res.failed != 0 || st.Accepted > n+n/5 || st.MaxActive > 8 {
				t.Errorf("%v, proxy %+v: want every request to succeed with few extra connections", res, st)
			}
		})
	})
}

// presetUpstream is the SDK's server: "ok" to every GET.
func presetUpstream(t *testing.T, useTLS bool) *httptest.Server {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	up.Config.ErrorLog = log.New(io.Discard, "", 0)
	if useTLS {
		up.StartTLS()
	} else {
		up.Start()
	}
	t.Cleanup(up.Close)
	return up
}

// defaultClient is net/http's default client (http.DefaultTransport's
// settings, in a transport of its own), trusting tlsConf's roots; without
// keepAlive each request opens a new connection.
func defaultClient(tlsConf *tls.Config, keepAlive bool) *http.Client {
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.DisableKeepAlives = !keepAlive
	if tlsConf != nil {
		tr.TLSClientConfig = tlsConf.Clone()
	}
	return &http.Client{Transport: tr}
}

// presetResult is what a client saw over a replay.
type presetResult struct {
	ok, failed int
	max        time.Duration // the slowest request
	failMin    time.Duration // the fastest failure
	firstErr   error
}

func (r presetResult) String() string {
	s := fmt.Sprintf("%d/%d ok, slowest %v", r.ok, r.ok+r.failed, r.max.Round(time.Millisecond))
	if r.failed > 0 {
		s += fmt.Sprintf(", fastest failure %v (%v)", r.failMin.Round(time.Millisecond), r.firstErr)
	}
	return s
}

func (r *presetResult) add(d time.Duration, err error) {
	r.max = max(r.max, d)
	if err == nil {
		r.ok++
		return
	}
	if r.failed == 0 || d < r.failMin {
		r.failMin = d
	}
	if r.firstErr == nil {
		r.firstErr = err
	}
	r.failed++
}

// sequential sends n GETs one after another, each capped at capAt, with
// pause between them.
func sequential(c *http.Client, url string, n int, capAt, pause time.Duration) presetResult {
	var res presetResult
	for range n {
		ctx, cancel := context.WithTimeout(context.Background(), capAt)
		start := time.Now()
		err := getOK(ctx, c, url)
		res.add(time.Since(start), err)
		cancel()
		if pause > 0 {
			time.Sleep(pause)
		}
	}
	if tr, ok := c.Transport.(interface{ CloseIdleConnections() }); ok {
		tr.CloseIdleConnections()
	}
	return res
}

// concurrent runs workers that each send a GET every `every` for span.
func concurrent(c *http.Client, url string, workers int, span, every, capAt time.Duration) presetResult {
	var (
		mu  sync.Mutex
		res presetResult
		wg  sync.WaitGroup
	)
	end := time.Now().Add(span)
	for range workers {
		wg.Go(func() {
			for time.Now().Before(end) {
				ctx, cancel := context.WithTimeout(context.Background(), capAt)
				start := time.Now()
				err := getOK(ctx, c, url)
				d := time.Since(start)
				cancel()
				mu.Lock()
				res.add(d, err)
				mu.Unlock()
				time.Sleep(every)
			}
		})
	}
	wg.Wait()
	return res
}

// roundTripFunc is an http.RoundTripper made of a function.
type roundTripFunc func(*http.Request) (*http.Response, error)

// RoundTrip calls f.
func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }
