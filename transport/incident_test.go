package transport_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"log"
	"maps"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// Incident 01 (shared/incidents/01, 02): two load balancers hung about 8%
// of new HTTPS connections after accept; SDKs with timeouts and retries hid
// it from monitoring. The replay: a real backend behind load balancers
// (faultnet.NewLB) that hang every 12th new connection, each request on a
// new connection.

// hangEvery is the incident's ~8%: every 12th new connection hangs.
const hangEvery = 12

// incident is a backend behind one load balancer per worker. Each worker
// sends its requests one after another to its own balancer, so "every 12th
// new connection" stays exact: the connection a hedge, a retry or a dial
// race opens right after a hung one is never hung itself. (Two hangs in a
// row for one request are a different incident; with one shared balancer
// and concurrent clients they happen at random.)
type incident struct {
	https   bool
	backend *httptest.Server
	lbs     []*faultnet.Server
	urls    []string
	tls     *tls.Config // trusts the backend; nil for plain HTTP
	// ctlURL is a healthy balancer of its own in front of the same
	// backend, for the control beside a replay (replayBeside); its
	// requests are not counted in posts or gets.
	ctlURL string

	mu    sync.Mutex
	posts map[string]int // POST bodies (request ids) the backend received
	gets  atomic.Int64
}

// startIncident starts the backend and workers healthy load balancers in
// front of it.
func startIncident(tb testing.TB, https bool, workers int) *incident {
	tb.Helper()
	in := &incident{https: https, posts: map[string]int{}}
	in.backend = httptest.NewUnstartedServer(http.HandlerFunc(in.serve))
	// Racers and hedges that lost are closed mid-handshake or before the
	// request: the backend logs each, which is noise here.
	in.backend.Config.ErrorLog = log.New(io.Discard, "", 0)
	scheme := "http"
	if https {
		in.backend.StartTLS() // HTTP/1.1: one request per conn, as in the incident
		pool := x509.NewCertPool()
		pool.AddCert(in.backend.Certificate())
		in.tls = &tls.Config{RootCAs: pool}
		scheme = "https"
	} else {
		in.backend.Start()
	}
	tb.Cleanup(in.backend.Close)
	for range workers {
		lb := faultnet.StartLB(tb, faultnet.LBConfig{Backend: in.backend.Listener.Addr().String()})
		in.lbs = append(in.lbs, lb)
		in.urls = append(in.urls, scheme+"://"+lb.Addr()+"/")
	}
	ctl := faultnet.StartLB(tb, faultnet.LBConfig{Backend: in.backend.Listener.Addr().String()})
	in.ctlURL = scheme + "://" + ctl.Addr() + controlPath
	return in
}

// controlPath is the control's path: the backend answers it without
// counting it.
const controlPath = "/control"

func (in *incident) serve(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path == controlPath {
		_, _ = io.WriteString(w, "ok")
		return
	}
	if r.Method == http.MethodPost {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			return
		}
		in.mu.Lock()
		in.posts[string(b)]++
		in.mu.Unlock()
	} else {
		in.gets.Add(1)
	}
	_, _ = io.WriteString(w, "ok")
}

// degrade makes every balancer hang every 12th of its new connections from
// now on: after accept for plain HTTP, in the TLS handshake for HTTPS.
func (in *incident) degrade() {
	f := faultnet.Silence
	if in.https {
		f = faultnet.StallTLS
	}
	for _, lb := range in.lbs {
		lb.SetFault(f, faultnet.EveryNth(hangEvery))
	}
}

// hung is the number of connections the balancers hung.
func (in *incident) hung() int64 {
	var n int64
	for _, lb := range in.lbs {
		n += lb.Stats().Faulted
	}
	return n
}

// accepted is the number of connections the balancers accepted.
func (in *incident) accepted() int64 {
	var n int64
	for _, lb := range in.lbs {
		n += lb.Stats().Accepted
	}
	return n
}

// expectedHung is how many connections the balancers hang when each of
// them gets perLB requests and every hung connection costs one more
// connection (a hedge, a retry or a raced handshake): the h with
// h = (perLB+h)/12, per balancer.
func (in *incident) expectedHung(perLB int) int64 {
	h := 0
	for {
		next := (perLB + h) / hangEvery
		if next == h {
			return int64(h * len(in.lbs))
		}
		h = next
	}
}

// postCounts returns how many POSTs carried each id.
func (in *incident) postCounts() map[string]int {
	in.mu.Lock()
	defer in.mu.Unlock()
	return maps.Clone(in.posts)
}

// replayResult is what the clients saw.
type replayResult struct {
	lat  []time.Duration // every request's, successes and failures, sorted
	ok   int
	errs []error // failures (at most 5 kept)
	nerr int
}

func (r replayResult) quantile(q float64) time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	i := int(q*float64(len(r.lat))+0.5) - 1
	return r.lat[min(max(i, 0), len(r.lat)-1)]
}

func (r replayResult) max() time.Duration {
	if len(r.lat) == 0 {
		return 0
	}
	return r.lat[len(r.lat)-1]
}

func (r replayResult) String() string {
	return fmt.Sprintf("%d/%d ok, p50 %v, p99 %v, max %v", r.ok, len(r.lat),
		r.quantile(0.5).Round(time.Millisecond), r.quantile(0.99).Round(time.Millisecond), r.max().Round(time.Millisecond))
}

// run sends n requests (method GET or POST; a POST's body is its unique
// id), worker w sending to balancer w one request after another, each
// bounded by limit so that a client that hangs ends the run as a failure.
// clients[w] is worker w's client.
func (in *incident) run(ctx context.Context, clients []*http.Client, n int, method string, limit time.Duration) replayResult {
	var (
		mu  sync.Mutex
		res replayResult
		wg  sync.WaitGroup
	)
	workers := len(in.urls)
	for w, url := range in.urls {
		client := clients[w]
		wg.Go(func() {
			// A fixed share per worker (requests w, w+workers, ...), so
			// each balancer sees the same number of requests every run.
			for i := w; i < n; i += workers {
				d, err := in.do(ctx, client, method, url, "req-"+strconv.Itoa(i), limit)
				mu.Lock()
				res.lat = append(res.lat, d)
				if err == nil {
					res.ok++
				} else {
					res.nerr++
					if len(res.errs) < 5 {
						res.errs = append(res.errs, err)
					}
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	slices.Sort(res.lat)
	return res
}

// replayBeside is run with a control beside it, for as long as it runs:
// a plain net/http client (no lifeline; a new connection per request, as
// the replays' clients) sending GETs one after another (5ms apart) through a healthy
// balancer of its own to the same backend. What the control's requests
// cost is what the machine alone adds at that moment (the race detector,
// CPU hogs, the scheduler's lag), so that the replays' latency bounds
// and their counts of slow healthy requests are judged against it, not
// against a quiet machine's figures.
func (in *incident) replayBeside(ctx context.Context, clients []*http.Client, n int, method string, limit time.Duration) (res, ctl replayResult) {
	ht := &http.Transport{TLSClientConfig: in.tls, DisableKeepAlives: true}
	defer ht.CloseIdleConnections()
	client := &http.Client{Transport: ht}
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-stop:
				slices.Sort(ctl.lat)
				return
			default:
			}
			// Paced: a sample of the machine, not a load of its own (nor
			// tens of thousands of loopback ports in TIME_WAIT).
			time.Sleep(5 * time.Millisecond)
			d, err := in.do(ctx, client, http.MethodGet, in.ctlURL, "", limit)
			ctl.lat = append(ctl.lat, d)
			if err == nil {
				ctl.ok++
			} else {
				ctl.nerr++
				if len(ctl.errs) < 5 {
					ctl.errs = append(ctl.errs, err)
				}
			}
		}
	}()
	res = in.run(ctx, clients, n, method, limit)
	close(stop)
	<-done
	return res, ctl
}

// over is how many of r's requests took longer than d.
func (r replayResult) over(d time.Duration) int {
	i, _ := slices.BinarySearch(r.lat, d+1)
	return len(r.lat) - i
}

// slowAllowance is how many of n healthy requests may take longer than d
// for the machine's sake alone: twice the control's share of requests
// over d (as lifeline's requests do more, and a sample is a sample), and
// none when no control request took as long.
func (r replayResult) slowAllowance(n int, d time.Duration) int64 {
	k := r.over(d)
	if k == 0 || len(r.lat) == 0 {
		return 0
	}
	return int64(2*k*n/len(r.lat) + 2)
}

// do sends one request and reads the whole answer.
func (in *incident) do(ctx context.Context, client *http.Client, method, url, id string, limit time.Duration) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, limit)
	defer cancel()
	var body io.Reader
	if method == http.MethodPost {
		body = bytes.NewReader([]byte(id))
	}
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, method, url, body)
	if err != nil {
		return 0, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return time.Since(start), err
	}
	b, err := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	d := time.Since(start)
	switch {
	case err != nil:
		return d, err
	case resp.StatusCode != http.StatusOK || string(b) != "ok":
		return d, fmt.Errorf("answer %d %q", resp.StatusCode, b)
	}
	return d, nil
}

// warmUp sends healthy traffic before the balancers degrade: the service
// had a history (the adaptive hedge delay learns from it).
func (in *incident) warmUp(tb testing.TB, clients []*http.Client, perLB int) {
	tb.Helper()
	res := in.run(tb.Context(), clients, perLB*len(in.urls), http.MethodGet, 10*time.Second)
	if res.nerr > 0 {
		tb.Fatalf("warm-up against healthy balancers: %v; %v", res, res.errs)
	}
}

// metrics is a MeterProvider with a ManualReader and sums over what it
// collected.
type metrics struct {
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newMetrics(tb testing.TB) *metrics {
	r := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(r))
	tb.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	return &metrics{reader: r, mp: mp}
}

// sum adds the points of the int64 counter name whose attributes include
// every one of match.
func (m *metrics) sum(tb testing.TB, name string, match ...attribute.KeyValue) int64 {
	tb.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(tb, m.reader.Collect(context.Background(), &rm))
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, mt := range sm.Metrics {
			if mt.Name != name {
				continue
			}
			data, ok := mt.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, p := range data.DataPoints {
				all := true
				for _, kv := range match {
					if v, ok := p.Attributes.Value(kv.Key); !ok || v != kv.Value {
						all = false
					}
				}
				if all {
					n += p.Value
				}
			}
		}
	}
	return n
}

const (
	maskedFailures = "lifeline.masked_failures"
	httpAttempts   = "lifeline.http.attempts"
)

var (
	maskedByHedge = attribute.String("lifeline.masked_by", "hedge")
	maskedByRace  = attribute.String("lifeline.masked_by", "race")
	maskedByRetry = attribute.String("lifeline.masked_by", "retry")
)

// Workload of the replay tests: 400 requests, as issue 8 asks, over 4
// balancers (100 each: 8 hung connections per balancer).
const (
	replayRequests = 400
	replayWorkers  = 4
	// noneOver is the bound the issue sets on every request; a hang left
	// alone would last FirstByteTimeout (15s) or the test's limit.
	noneOver = 2 * time.Second
	// requestLimit ends a request that hangs anyway, as a failure.
	requestLimit = 20 * time.Second
)

// clients returns one client per balancer, each on its own Transport made
// by mk: each Transport's adaptive hedge delay then sees one balancer's
// latencies, as one service's would.
func (in *incident) clients(tb testing.TB, mk func() *transport.Transport) []*http.Client {
	var cs []*http.Client
	for range in.urls {
		tr := mk()
		tb.Cleanup(tr.CloseIdleConnections)
		cs = append(cs, transport.NewClient(tr))
	}
	return cs
}

// Plain HTTP, hedged after a fixed 250ms: every GET succeeds, none takes
// over 2s, and the hedges are counted as masked failures.
func TestIncidentReplayHTTPHedged(t *testing.T) {
	in := startIncident(t, false, replayWorkers)
	m := newMetrics(t)
	clients := in.clients(t, func() *transport.Transport {
		return &transport.Transport{
			HedgeDelay:          250 * time.Millisecond,
			MaxIdleConnsPerHost: -1, // each request on a new connection
			MeterProvider:       m.mp,
		}
	})
	in.degrade()
	res, ctl := in.replayBeside(t.Context(), clients, replayRequests, http.MethodGet, requestLimit)
	t.Logf("hedged 250ms: %v; %d conns, %d hung, %d http attempts, masked by hedge %d; control beside it: %v",
		res, in.accepted(), in.hung(), m.sum(t, httpAttempts), m.sum(t, maskedFailures, maskedByHedge), ctl)

	require.Zero(t, res.nerr, "failures: %v", res.errs)
	require.Zero(t, ctl.nerr, "the control failed (the machine or the balancer, not lifeline): %v", ctl.errs)
	// noneOver on top of what the machine alone added to a plain request
	// meanwhile: an unmasked hang lasts FirstByteTimeout (15s).
	assert.Less(t, res.max(), noneOver+ctl.max(), "slowest request (the control's slowest: %v)", ctl.max())
	hung := in.hung()
	// Each balancer hangs the 12th, 24th... of its new connections, hedges
	// included; a hedge of a slow healthy request adds a connection.
	assert.GreaterOrEqual(t, hung, in.expectedHung(replayRequests/replayWorkers), "connections hung")
	// Every GET reached the backend once, and a hedge of a healthy request
	// slower than HedgeDelay (a loaded machine: the control counts them)
	// reaches it a second time.
	gets := in.gets.Load()
	assert.GreaterOrEqual(t, gets, int64(replayRequests), "GETs the backend answered")
	assert.LessOrEqual(t, gets, int64(replayRequests)+ctl.slowAllowance(replayRequests, 250*time.Millisecond),
		"GETs the backend answered beyond one per request (the control's requests over 250ms: %d of %d)", ctl.over(250*time.Millisecond), len(ctl.lat))
	attempts := m.sum(t, httpAttempts)
	assert.GreaterOrEqual(t, attempts, int64(replayRequests)+hung, "a hedge per hung connection")
	// A healthy request slower than HedgeDelay is hedged too: as many as
	// the control saw slow requests are allowed on top.
	assert.LessOrEqual(t, attempts, int64(replayRequests)*115/100+ctl.slowAllowance(replayRequests, 250*time.Millisecond),
		"attempts: hedges beyond the hung conns (the control's requests over 250ms: %d of %d)", ctl.over(250*time.Millisecond), len(ctl.lat))
	assert.GreaterOrEqual(t, m.sum(t, maskedFailures, maskedByHedge), hung, "hangs counted as masked by a hedge")
}

// Plain HTTP, FirstByteTimeout 1s and no hedging: the hung GETs time out
// after 1s and are retried on a new connection; every GET succeeds.
func TestIncidentReplayHTTPFirstByteTimeout(t *testing.T) {
	in := startIncident(t, false, replayWorkers)
	m := newMetrics(t)
	clients := in.clients(t, func() *transport.Transport {
		return &transport.Transport{
			FirstByteTimeout:    time.Second,
			MaxIdleConnsPerHost: -1,
			MeterProvider:       m.mp,
		}
	})
	in.degrade()
	res, ctl := in.replayBeside(t.Context(), clients, replayRequests, http.MethodGet, requestLimit)
	t.Logf("first byte 1s: %v; %d conns, %d hung, %d http attempts, masked by retry %d; control beside it: %v",
		res, in.accepted(), in.hung(), m.sum(t, httpAttempts), m.sum(t, maskedFailures, maskedByRetry), ctl)

	require.Zero(t, res.nerr, "failures: %v", res.errs)
	require.Zero(t, ctl.nerr, "the control failed (the machine or the balancer, not lifeline): %v", ctl.errs)
	hung := in.hung()
	attempts := m.sum(t, httpAttempts)
	masked := m.sum(t, maskedFailures, maskedByRetry)
	assert.GreaterOrEqual(t, hung, in.expectedHung(replayRequests/replayWorkers), "connections hung")
	assert.EqualValues(t, int64(replayRequests)+masked, attempts, "one retry per timed-out try, each counted as masked by a retry")
	assert.EqualValues(t, in.accepted(), attempts, "one connection per try")
	assert.GreaterOrEqual(t, masked, hung, "every hung connection timed out and was retried")
	// A healthy try whose first byte took over 1s (a loaded machine)
	// times out and is retried as well: as many as the control saw
	// requests over 1s are allowed beyond the hung ones.
	assert.LessOrEqual(t, masked-hung, ctl.slowAllowance(replayRequests, time.Second),
		"timeouts beyond the hung connections (the control's requests over 1s: %d of %d)", ctl.over(time.Second), len(ctl.lat))
	assert.GreaterOrEqual(t, res.max(), time.Second, "a hung try lasts FirstByteTimeout")
	assert.Less(t, res.max(), 3*time.Second+ctl.max(), "slowest: 1s, a backoff and a second try (the control's slowest: %v)", ctl.max())
}

// HTTPS with the hang in the TLS handshake: the Dialer races a second
// handshake to the same (lone) address after AttemptDelay (250ms), so
// nothing is resent: POSTs, which are never retried once written, succeed
// too, and the backend receives each exactly once.
func TestIncidentReplayHTTPSHandshake(t *testing.T) {
	for _, method := range []string{http.MethodGet, http.MethodPost} {
		t.Run(method, func(t *testing.T) {
			in := startIncident(t, true, replayWorkers)
			m := newMetrics(t)
			clients := in.clients(t, func() *transport.Transport {
				return &transport.Transport{
					// The zero Dialer: AttemptDelay 250ms, MaxAttemptsPerAddress 2.
					TLSClientConfig:     in.tls,
					MaxIdleConnsPerHost: -1,
					MeterProvider:       m.mp,
				}
			})
			in.degrade()
			res, ctl := in.replayBeside(t.Context(), clients, replayRequests, method, requestLimit)
			masked := m.sum(t, maskedFailures, maskedByRace, attribute.String("lifeline.phase", "tls"))
			t.Logf("https %s: %v; %d conns, %d hung, %d http attempts, masked by race (tls) %d; control beside it: %v",
				method, res, in.accepted(), in.hung(), m.sum(t, httpAttempts), masked, ctl)

			require.Zero(t, res.nerr, "failures: %v", res.errs)
			require.Zero(t, ctl.nerr, "the control failed (the machine or the balancer, not lifeline): %v", ctl.errs)
			// An unmasked handshake stall lasts TLSHandshakeTimeout (5s).
			assert.Less(t, res.max(), noneOver+ctl.max(), "slowest request (the control's slowest: %v)", ctl.max())
			hung := in.hung()
			assert.GreaterOrEqual(t, hung, in.expectedHung(replayRequests/replayWorkers), "connections hung")
			assert.EqualValues(t, replayRequests, m.sum(t, httpAttempts), "one HTTP attempt per request: the race resends nothing")
			// A hang met by a dial's second attempt, after a first attempt
			// that was merely slow (over AttemptDelay: a loaded machine)
			// and then won, is not a stall the race masked. Such benign
			// races are the dials' second connections beyond the masked
			// stalls, measured in this run; about one in hangEvery of
			// their second attempts meets a hang. Allow twice that, on top
			// of a tenth of the hangs.
			benign := in.accepted() - replayRequests - masked
			assert.LessOrEqual(t, hung-masked, hung/10+2*benign/hangEvery,
				"handshake stalls not counted as masked by the race (%d benign races)", benign)
			if method == http.MethodPost {
				posts := in.postCounts()
				assert.Len(t, posts, replayRequests, "distinct POSTs the backend received")
				for id, n := range posts {
					if n != 1 {
						t.Errorf("POST %s received %d times, want exactly once", id, n)
					}
				}
			} else {
				assert.EqualValues(t, replayRequests, in.gets.Load(), "GETs the backend answered")
			}
		})
	}
}

// staticResolver answers every lookup of its host with fixed addresses.
type staticResolver struct {
	host  string
	addrs []netip.Addr
}

func (r staticResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if host != r.host {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return r.addrs, nil
}

// A host with two addresses, the first stalling every TLS handshake: each
// request (on a new connection, with a Health that forgets at once, so each one meets
// the stall first) is won by the second address after AttemptDelay, well
// under a second on top of what a plain net/http request to the healthy
// address costs on the machine meanwhile (the control, one after each
// request; a stall left alone lasts TLSHandshakeTimeout, 5s).
func TestTwoAddressesOneStallingHandshakes(t *testing.T) {
	backend := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	backend.Config.ErrorLog = log.New(io.Discard, "", 0)
	backend.StartTLS() // its certificate is valid for example.com
	t.Cleanup(backend.Close)
	pool := x509.NewCertPool()
	pool.AddCert(backend.Certificate())

	srv := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", Fault: faultnet.StallTLS},
		faultnet.Config{Addr: "127.0.0.3:0", Handler: faultnet.Forward(backend.Listener.Addr().String())},
	)
	stalling, healthy := srv[0], srv[1]
	m := newMetrics(t)
	tr := &transport.Transport{
		Dialer: &dial.Dialer{Resolver: staticResolver{"example.com",
			[]netip.Addr{stalling.AddrPort().Addr(), healthy.AddrPort().Addr()}},
			// No memory (a penalty gone in a nanosecond): a Dialer without
			// a Health keeps its own and would demote the stalling address.
			Health: &dial.Health{HalfLife: time.Nanosecond}},
		TLSClientConfig:     &tls.Config{RootCAs: pool},
		MaxIdleConnsPerHost: -1,
		MeterProvider:       m.mp,
	}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)
	url := "https://example.com:" + strconv.Itoa(stalling.Port()) + "/"

	// The control: plain net/http, a new connection per request, straight
	// to the healthy address.
	ctlTr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "example.com"}, DisableKeepAlives: true}
	defer ctlTr.CloseIdleConnections()
	ctlClient := &http.Client{Transport: ctlTr, Timeout: 10 * time.Second}
	ctlURL := "https://" + healthy.Addr() + "/"

	const n = 20
	var slowest, ctlSlowest time.Duration
	var lat []time.Duration
	for i := range n {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		start := time.Now()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := client.Do(req)
		require.NoError(t, err, "request %d", i)
		b, err := io.ReadAll(resp.Body)
		_ = resp.Body.Close()
		cancel()
		require.NoError(t, err)
		require.Equal(t, "ok", string(b))
		d := time.Since(start)
		slowest = max(slowest, d)
		lat = append(lat, d)

		start = time.Now()
		resp, err = ctlClient.Get(ctlURL)
		require.NoError(t, err, "control %d (the machine or the forwarder, not lifeline)", i)
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		ctlSlowest = max(ctlSlowest, time.Since(start))
	}
	for i, d := range lat {
		assert.Less(t, d, time.Second+ctlSlowest, "request %d (the control's slowest: %v)", i, ctlSlowest)
	}
	masked := m.sum(t, maskedFailures, maskedByRace, attribute.String("lifeline.phase", "tls"))
	t.Logf("slowest of %d: %v (the control's: %v); stalling address hung %d handshakes, healthy served %d; masked by race (tls) %d",
		n, slowest, ctlSlowest, stalling.Stats().Faulted, healthy.Stats().Served, masked)
	// n on a quiet machine: each dial's first attempt. A healthy handshake
	// slower than AttemptDelay (a loaded machine) lets the race start the
	// stalling address's second attempt (MaxAttemptsPerAddress 2) as well.
	assert.GreaterOrEqual(t, stalling.Stats().Faulted, int64(n), "every request met the stalling address first")
	assert.LessOrEqual(t, stalling.Stats().Faulted, int64(2*n), "at most MaxAttemptsPerAddress (2) per dial")
	assert.EqualValues(t, n, masked, "every stall counted as masked by the race")
}
