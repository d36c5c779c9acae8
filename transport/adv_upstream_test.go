package transport_test

// Adversarial tests of issue 23's fail fast, pauses and shedding, from
// outside, with real sockets: races between two things that each work
// alone, and messages no other test sent.

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/metric"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestAdvHeldAnswerCarriesNoOtherCallersHeaders: one caller's call to
// /login is answered 429 with Retry-After and the headers of that
// caller's own session (Set-Cookie, WWW-Authenticate, a request id, a
// per-token quota). Another caller of the same path (the pause is its
// scope's: path and Authorization), with a deadline
// that ends before the pause, gets the held answer: it must carry none of
// the first caller's header fields — a cookie jar would otherwise store
// the first caller's session for the second. Retry-After (the time left)
// is the held answer's own.
func TestAdvHeldAnswerCarriesNoOtherCallersHeaders(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/login" {
			h := w.Header()
			h.Set("Retry-After", "5")
			h.Add("Set-Cookie", "session=alice-secret; Path=/")
			h.Set("WWW-Authenticate", `Bearer realm="alice", error="invalid_token"`)
			h.Set("Authentication-Info", "nextnonce=alice")
			h.Set("X-Request-Id", "alice-req-1")
			h.Set("X-RateLimit-Remaining", "0")
			h.Set("Location", "/u/alice")
			h.Set("Content-Type", "application/json")
			w.WriteHeader(http.StatusTooManyRequests)
			_, _ = io.WriteString(w, `{"user":"alice"}`)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	// Alice's call: no retry (the answer is hers at once).
	actx := transport.WithCallOptions(t.Context(), transport.CallOptions{Retry: &retry.Policy{MaxAttempts: 1}})
	areq, _ := http.NewRequestWithContext(actx, http.MethodGet, srv.URL+"/login", nil)
	aresp, err := tr.RoundTrip(areq)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, aresp.Body)
	_ = aresp.Body.Close()
	if aresp.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("alice: %d", aresp.StatusCode)
	}

	// Bob's call, through a client with a cookie jar, deadline 1s.
	jar, _ := cookiejar.New(nil)
	bob := &http.Client{Transport: tr, Jar: jar}
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	breq, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/login", nil)
	bresp, err := bob.Do(breq)
	if err != nil {
		t.Fatalf("bob: %v", err)
	}
	_ = bresp.Body.Close()
	if bresp.StatusCode != http.StatusTooManyRequests || transport.Exhausted(bresp) == nil {
		t.Fatalf("bob: %d, Exhausted %v; want the held 429", bresp.StatusCode, transport.Exhausted(bresp))
	}
	for k, v := range bresp.Header {
		if strings.Contains(strings.ToLower(strings.Join(v, " ")), "alice") {
			t.Errorf("held answer to bob carries alice's %s: %q", k, v)
		}
	}
	for _, k := range []string{"Set-Cookie", "Www-Authenticate", "Authentication-Info", "X-Request-Id", "Location", "Content-Type"} {
		if v := bresp.Header.Values(k); len(v) > 0 {
			t.Errorf("held answer to bob has %s %q", k, v)
		}
	}
	u, _ := url.Parse(srv.URL + "/login")
	if cs := jar.Cookies(u); len(cs) > 0 {
		t.Errorf("bob's cookie jar got %v from a held answer", cs)
	}
	if bresp.Header.Get("Retry-After") == "" {
		t.Error("held answer without Retry-After")
	}
}

// TestAdvPauseProbeRetryDoesNotWaitForItself: a call answered 429
// (Retry-After: 1) waits out the pause and goes again as the pause's
// probe; that attempt fails without an answer (a broken one, on the
// kept-alive conn: no dial tells the gate anything) and the call retries. Its retry must not wait for the outcome of
// its own probe: with no deadline on the call it would wait for ever.
func TestAdvPauseProbeRetryDoesNotWaitForItself(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			// A broken answer on the kept-alive conn (which net/http
			// does not resend by itself, and which dials nothing).
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_, _ = io.WriteString(c, "HTTP/1.1 2x0 broken\r\n\r\n")
				_ = c.Close()
			}
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	// No deadline: the caller cancels only when the test gives up.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	done := make(chan error, 1)
	start := time.Now()
	go func() {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode != 200 {
				err = errors.New(resp.Status)
			}
		}
		done <- err
	}()
	select {
	case err := <-done:
		t.Logf("call ended after %v: %v (%d requests reached the server)", time.Since(start), err, n.Load())
		if err != nil {
			t.Fatalf("call: %v", err)
		}
	case <-time.After(8 * time.Second):
		cancel()
		<-done
		t.Fatalf("call without a deadline still waiting after 8s (%d requests reached the server): it waits for its own probe", n.Load())
	}
}

// blockingHandler is a slog.Handler that calls fn for each record with a
// message containing "upstream".
type blockingHandler struct {
	fn func()
}

func (h *blockingHandler) Enabled(context.Context, slog.Level) bool { return true }
func (h *blockingHandler) Handle(_ context.Context, r slog.Record) error {
	if strings.Contains(r.Message, "upstream") {
		h.fn()
	}
	return nil
}
func (h *blockingHandler) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h *blockingHandler) WithGroup(string) slog.Handler      { return h }

// TestAdvLogHandlerNotCalledUnderGateLock: the Transport's Logger gets a
// line when an upstream goes down. The user's handler is user code: a slow
// one (a blocked pipe) must not stall the calls that fail fast, nor may one
// that looks at the upstream (here: a call to it, as a handler shipping the
// record to the same host would) deadlock the upstream.
func TestAdvLogHandlerNotCalledUnderGateLock(t *testing.T) {
	addr := faultnet.RefusedAddr(t, "tcp") // refused from now on
	var tr *transport.Transport
	inner := make(chan error, 1)
	var once sync.Once
	h := &blockingHandler{fn: func() {
		once.Do(func() {
			// A call to the upstream from inside the handler.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/log", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_ = resp.Body.Close()
			}
			inner <- err
		})
	}}
	tr = &transport.Transport{Logger: slog.New(h), Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range 8 {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_ = resp.Body.Close()
			}
			cancel()
		}
	}()
	select {
	case <-done:
	case <-time.After(6 * time.Second):
		t.Fatal("calls to a refusing upstream stuck for 6s: the log handler runs under the upstream's lock and called the upstream")
	}
	select {
	case err := <-inner:
		if !errors.Is(err, transport.ErrUnavailable) {
			t.Logf("the handler's own call: %v", err)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the handler's call is stuck")
	}
}

// TestAdvRefusedProbesDoNotHoldDownForever: a Transport whose retry budget
// has no time-based refill (NewBudget(0.1, 0): retries add at most 10% of
// the calls). An outage drains it (retries, then probes); calls that fail
// fast deposit nothing. When the upstream comes back, it must be found:
// a refused probe may delay recovery, not forbid it for ever. (Held as it
// is: a 3s outage leaves tokens for the probes. A budget drained to
// nothing held the gate down for ever: the gate's own
// TestAdvRefusedProbesDoNotHoldDownForever, in fake time.)
func TestAdvRefusedProbesDoNotHoldDownForever(t *testing.T) {
	port := faultnet.ReservePort(t, "tcp") // refused, and no one else's port
	addr := port.Addr()
	tr := &transport.Transport{Retry: &retry.Policy{Budget: retry.NewBudget(0.1, 0)}}
	defer tr.CloseIdleConnections()
	call := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		return err
	}
	// The outage: 3s at 20 calls/s.
	for end := time.Now().Add(3 * time.Second); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
		_ = call()
	}
	if err := call(); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("during the outage: %v, want fail fast", err)
	}
	// The upstream comes back on the same port.
	ln, err := port.Listen()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") })}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	back := time.Now()
	var last error
	for time.Since(back) < 40*time.Second {
		if last = call(); last == nil {
			t.Logf("found again %v after it came back", time.Since(back).Round(time.Millisecond))
			return
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("upstream back for 40s, calls still fail: %v", last)
}

// slowConnect is a raw connect that takes d more than the real one: a
// healthy but slow network (a far region, a congested link).
func slowConnect(d time.Duration) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		var nd net.Dialer
		c, err := nd.DialContext(ctx, network, addr)
		if err != nil {
			return nil, err
		}
		select {
		case <-time.After(d):
			return c, nil
		case <-ctx.Done():
			_ = c.Close()
			return nil, ctx.Err()
		}
	}
}

// TestAdvSlowConnectIsNotDown: a reachable upstream whose connects take
// 1.2s (a slow but healthy network), first contact: a burst of 6 calls
// dials 6 conns at once; calls made while they are connecting must wait
// for them, not fail fast with "down".
func TestAdvSlowConnectIsNotDown(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(srv.Close)
	tr := &transport.Transport{Dialer: &dial.Dialer{DialFunc: slowConnect(1200 * time.Millisecond)}}
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	var mu sync.Mutex
	var errs []error
	call := func() {
		defer wg.Done()
		ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		}
		if err != nil {
			mu.Lock()
			errs = append(errs, err)
			mu.Unlock()
		}
	}
	start := time.Now()
	for range 6 {
		wg.Add(1)
		go call()
	}
	for time.Since(start) < 2*time.Second {
		time.Sleep(20 * time.Millisecond)
		wg.Add(1)
		go call()
	}
	wg.Wait()
	for _, err := range errs {
		t.Errorf("call to a reachable upstream failed: %v", err)
	}
}

// flipServer serves on one loopback port that it closes and opens again,
// answering 200, 429 (Retry-After 1), 503 or a slow 200 by the mode set.
// The port stays reserved while it is down: refused, and no one else's.
type flipServer struct {
	port *faultnet.RefusedPort
	addr string
	mode atomic.Int32 // 0: 200, 1: 429 Retry-After 1, 2: 503, 3: slow 200

	mu  sync.Mutex
	srv *http.Server
	wg  sync.WaitGroup
}

func (f *flipServer) handler(w http.ResponseWriter, r *http.Request) {
	switch f.mode.Load() {
	case 1:
		w.Header().Set("Retry-After", "1")
		w.Header().Set("Set-Cookie", "s=x")
		w.WriteHeader(http.StatusTooManyRequests)
	case 2:
		w.WriteHeader(http.StatusServiceUnavailable)
	case 3:
		select {
		case <-time.After(200 * time.Millisecond):
		case <-r.Context().Done():
		}
		_, _ = io.WriteString(w, "slow")
	default:
		_, _ = io.WriteString(w, "ok")
	}
}

func newFlipServer(t *testing.T) *flipServer {
	port := faultnet.ReservePort(t, "tcp")
	return &flipServer{port: port, addr: port.Addr()}
}

// up listens again on the port.
func (f *flipServer) up() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		return nil
	}
	ln, err := f.port.Listen()
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: http.HandlerFunc(f.handler)}
	f.srv = srv
	f.wg.Go(func() { _ = srv.Serve(ln) })
	return nil
}

// down closes the listener and every conn: connects are refused.
func (f *flipServer) down() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.srv != nil {
		_ = f.srv.Close()
		f.srv = nil
	}
}

// TestAdvFlappingUpstreamRace: 32 goroutines call one upstream that flips
// between refusing, answering 200, 429 with Retry-After, 503 and slow
// answers every 150ms, with deadlines from 20ms to 1.5s, some waiting for
// ready, some cancelling their own calls mid-way. No call may outlive its
// deadline by more than a little, none may hang, the race detector and
// goleak must stay quiet, and once the upstream is steady again calls
// succeed.
func TestAdvFlappingUpstreamRace(t *testing.T) {
	f := newFlipServer(t)
	if err := f.up(); err != nil {
		t.Fatal(err)
	}
	defer func() { f.down(); f.wg.Wait() }()
	tr := &transport.Transport{HedgeDelay: 30 * time.Millisecond}
	defer tr.CloseIdleConnections()
	stop := make(chan struct{})
	var flipper sync.WaitGroup
	flipper.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(150 * time.Millisecond):
			}
			switch i % 6 {
			case 0, 3:
				f.down()
			default:
				if err := f.up(); err != nil {
					t.Error(err)
					return
				}
				f.mode.Store(int32(i % 4))
			}
		}
	})
	var late atomic.Int64
	var calls atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				d := time.Duration(20+(g*37+i*53)%1500) * time.Millisecond
				ctx, cancel := context.WithTimeout(t.Context(), d)
				if (g+i)%5 == 0 {
					ctx = transport.WaitForReady(ctx)
				}
				if (g+i)%7 == 0 {
					time.AfterFunc(d/3, cancel)
				}
				method := http.MethodGet
				if (g+i)%3 == 0 {
					method = http.MethodPost
				}
				req, _ := http.NewRequestWithContext(ctx, method, "http://"+f.addr+"/p?token=secret", strings.NewReader("body"))
				start := time.Now()
				resp, err := tr.RoundTrip(req)
				if err == nil {
					_, _ = io.Copy(io.Discard, resp.Body)
					_ = resp.Body.Close()
				}
				if over := time.Since(start) - d; over > time.Second {
					late.Add(1)
					t.Errorf("call with a %v deadline took %v: %v", d, time.Since(start), err)
				}
				if err != nil && strings.Contains(err.Error(), "secret") {
					t.Errorf("error text carries the query: %v", err)
				}
				calls.Add(1)
				cancel()
			}
		})
	}
	time.Sleep(4 * time.Second)
	close(stop)
	wg.Wait()
	flipper.Wait()
	t.Logf("%d calls, %d late", calls.Load(), late.Load())
	// Steady again: the upstream answers; within a few seconds calls succeed.
	if err := f.up(); err != nil {
		t.Fatal(err)
	}
	f.mode.Store(0)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+f.addr+"/", nil)
		resp, err := tr.RoundTrip(req)
		cancel()
		if err == nil {
			_ = resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
			err = errors.New(resp.Status)
		}
		if time.Now().After(deadline) {
			t.Fatalf("steady upstream still failing after 5s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// TestAdvOneCallersPolicyDoesNotPauseOthersLonger: a background job's call
// allows server-advised waits of an hour (its own CallOptions); the server
// answers it 429 with Retry-After: 600. The other callers of the host are
// paced by the Transport's policy (MaxRetryAfter 2s): the pause they see
// ends after 2s, not 10 minutes — a caller with a 5s deadline waits the
// pause out and gets the upstream's answer, not a held 429.
func TestAdvOneCallersPolicyDoesNotPauseOthersLonger(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "600")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &transport.Transport{Retry: &retry.Policy{MaxRetryAfter: 2 * time.Second}}
	defer tr.CloseIdleConnections()
	// The job: its own policy waits up to an hour; it gives up after 100ms
	// here (its context), the pause stays.
	jctx, jcancel := context.WithTimeout(transport.WithCallOptions(t.Context(),
		transport.CallOptions{Retry: &retry.Policy{MaxAttempts: 1, MaxRetryAfter: time.Hour}}), 5*time.Second)
	defer jcancel()
	jreq, _ := http.NewRequestWithContext(jctx, http.MethodGet, srv.URL+"/job", nil)
	jresp, err := tr.RoundTrip(jreq)
	if err != nil {
		t.Fatal(err)
	}
	_ = jresp.Body.Close()
	// Another caller, the Transport's policy, 5s deadline.
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/interactive", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatalf("after %v: %v", time.Since(start), err)
	}
	_ = resp.Body.Close()
	t.Logf("the other caller: %d after %v (Retry-After %q)", resp.StatusCode, time.Since(start), resp.Header.Get("Retry-After"))
	if resp.StatusCode != 200 {
		t.Fatalf("the other caller got %d at once (Retry-After %s): the job's own policy paused the host for everyone",
			resp.StatusCode, resp.Header.Get("Retry-After"))
	}
}

// hangingHost returns a Transport (its MeterProvider mp, nil for the
// global; its Logger logger) that reached hostA and whose connects to A
// then hang (a black hole): three calls' dials pend past A's suspect
// time, so that the next look at A — a call, a metric collection — finds
// it down. Connects to every other host reach a live server. get calls
// host with the limit d.
func hangingHost(t *testing.T, hostA string, mp metric.MeterProvider, logger *slog.Logger) (*transport.Transport, func(host string, d time.Duration) error) {
	t.Helper()
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(live.Close)
	var holed atomic.Bool
	var nd net.Dialer
	dialFunc := func(ctx context.Context, network, addr string) (net.Conn, error) {
		if addr == hostA && holed.Load() {
			<-ctx.Done() // a black hole: the connect hangs to its limit
			return nil, ctx.Err()
		}
		return nd.DialContext(ctx, network, live.Listener.Addr().String())
	}
	tr := &transport.Transport{MeterProvider: mp, Logger: logger,
		Dialer: &dial.Dialer{DialFunc: dialFunc, ConnectTimeout: 4 * time.Second}}
	t.Cleanup(tr.CloseIdleConnections)
	get := func(host string, d time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+host+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	if err := get(hostA, 2*time.Second); err != nil {
		t.Fatal(err)
	}
	tr.CloseIdleConnections()
	holed.Store(true)
	var wg sync.WaitGroup
	for range 3 {
		wg.Go(func() { _ = get(hostA, 200*time.Millisecond) })
	}
	wg.Wait()
	time.Sleep(1200 * time.Millisecond) // A's dials now pend past its suspect time
	return tr, get
}

// TestAdvLogHandlerMayCallANewHost: the Transport's Logger ships warnings
// through the same Transport (an alerting handler posting to a webhook
// host with the application's client). Upstream A was reached, then its
// connects hang; the first look at A after that happens while the
// Transport meets a new host B (finding room among the upstreams it
// tracks). A's "down" line then reaches the handler, whose own call to a
// third host must not deadlock the Transport.
func TestAdvLogHandlerMayCallANewHost(t *testing.T) {
	const hostA, hostB, hostC = "127.0.0.11:80", "127.0.0.12:80", "127.0.0.13:80"
	var tr *transport.Transport
	handlerCall := make(chan error, 1)
	var once sync.Once
	h := &blockingHandler{fn: func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, "http://"+hostC+"/alerts", strings.NewReader("upstream down"))
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_ = resp.Body.Close()
			}
			handlerCall <- err
		})
	}}
	tr, get := hangingHost(t, hostA, nil, slog.New(h))
	done := make(chan error, 1)
	go func() { done <- get(hostB, 3*time.Second) }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("call to B: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("call to a new host stuck: the log handler ran under the Transport's upstream table lock")
	}
	// A call to A sees it down (if the Transport did not already); the
	// handler's call to C goes.
	if err := get(hostA, 2*time.Second); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("call to A: %v, want down", err)
	}
	select {
	case err := <-handlerCall:
		if err != nil {
			t.Fatalf("the handler's call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's call is stuck")
	}
}

// TestAdvLogHandlerDuringGaugeCollection: the gauge lifeline.upstream.down
// is what first sees upstream A's connects hang (a collection looks at
// every upstream); A's "down" line reaches the Logger's handler, which
// ships it through another Transport of the same meter provider, not used
// before. Neither the collection nor that call may deadlock.
func TestAdvLogHandlerDuringGaugeCollection(t *testing.T) {
	r := newRig(t)
	const hostA = "127.0.0.21:80"
	alerts := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(alerts.Close)
	shipper := &transport.Transport{MeterProvider: r.mp}
	defer shipper.CloseIdleConnections()
	handlerCall := make(chan error, 1)
	var once sync.Once
	h := &blockingHandler{fn: func() {
		once.Do(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodPost, alerts.URL+"/alerts", strings.NewReader("down"))
			resp, err := shipper.RoundTrip(req)
			if err == nil {
				_ = resp.Body.Close()
			}
			handlerCall <- err
		})
	}}
	hangingHost(t, hostA, r.mp, slog.New(h))
	collected := make(chan map[string]int64, 1)
	go func() { collected <- r.gauge(t, "lifeline.upstream.down") }()
	select {
	case g := <-collected:
		if g["127.0.0.21"] != 1 {
			t.Errorf("gauge %v, want A down", g)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("metric collection stuck: the Logger's handler ran under the gauge's lock")
	}
	select {
	case err := <-handlerCall:
		if err != nil {
			t.Fatalf("the handler's call: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's call is stuck")
	}
}

// TestAdvLogHandlerCollectsMetrics: the gauge lifeline.upstream.down is
// what first sees upstream A's connects hang, and the Logger's handler,
// on A's "down" line, collects the metrics itself (an alerting handler
// that attaches the numbers of the moment). The handler used to run
// inside the collection that found the change, and a collection inside a
// collection of the same reader waits for it for ever. The record is now
// written on the Transport's log goroutine: both collections end.
func TestAdvLogHandlerCollectsMetrics(t *testing.T) {
	r := newRig(t)
	const hostA = "127.0.0.22:80"
	handlerCollect := make(chan error, 1)
	var once sync.Once
	h := &blockingHandler{fn: func() {
		once.Do(func() {
			var rm metricdata.ResourceMetrics
			handlerCollect <- r.reader.Collect(context.Background(), &rm)
		})
	}}
	hangingHost(t, hostA, r.mp, slog.New(h))
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		var rm metricdata.ResourceMetrics
		_ = r.reader.Collect(context.Background(), &rm)
	}()
	select {
	case <-collected:
	case <-time.After(5 * time.Second):
		t.Fatal("metric collection stuck: the Logger's handler ran inside it")
	}
	select {
	case err := <-handlerCollect:
		if err != nil {
			t.Fatalf("the handler's collection: %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the handler's collection is stuck (or no 'down' record)")
	}
}

// TestAdvOnePathRateLimitedMeasure measures (and logs) what a per-path
// rate limit costs the host's other paths: /search answers 429 with
// Retry-After: 1 (its own limit, as APIs with per-resource limits do),
// /items answers 200 at once. Callers: 10 searches and 50 item reads a
// second, 500ms deadlines, for 2.5s. By the design the pause is the
// host's: item reads wait for it or get a held 429 that /items never sent.
// The test asserts only that no item read fails otherwise.
func TestAdvOnePathRateLimitedMeasure(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/search" {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	for _, off := range []bool{false, true} {
		tr := &transport.Transport{DisableFailFast: off}
		c := &http.Client{Transport: tr}
		var l openLoop
		start := time.Now()
		tick := time.NewTicker(20 * time.Millisecond)
		for i := 0; time.Since(start) < 2500*time.Millisecond; i++ {
			path := "/items"
			if i%5 == 0 {
				path = "/search"
			}
			l.call(t.Context(), c, srv.URL+path, 500*time.Millisecond, false)
			<-tick.C
		}
		tick.Stop()
		l.wg.Wait()
		tr.CloseIdleConnections()
		var items, ok, held, slow int
		for _, o := range l.between(start, time.Now()) {
			if o.resp == nil && o.err == nil {
				continue
			}
			if o.resp != nil && o.resp.Request != nil && o.resp.Request.URL.Path != "/items" {
				continue
			}
			if o.err != nil && !errors.Is(o.err, context.DeadlineExceeded) {
				t.Errorf("item read: %v", o.err)
			}
			items++
			switch {
			case o.status == 200:
				ok++
				if o.end.Sub(o.start) > 100*time.Millisecond {
					slow++
				}
			case o.status == http.StatusTooManyRequests:
				held++
			}
		}
		t.Logf("DisableFailFast=%v: /items calls %d: %d ok (%d of them after >100ms), %d got a 429 /items never sent",
			off, items, ok, slow, held)
	}
}

// TestAdvBlackholeRecoveryHighRate: as TestFailFastBlackhole, at 150
// calls/s and a short outage (3s): before the upstream is known down, the
// calls fill the host's conns (MaxConnsPerHost, dials and requests that
// hang in the hole). When the upstream returns, calls from 1.5s after must
// succeed: the probe must not queue behind conns that are still in the
// hole.
func TestAdvBlackholeRecoveryHighRate(t *testing.T) {
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
	tr := &transport.Transport{Dialer: &dial.Dialer{DialFunc: ns.DialContext}}
	t.Cleanup(tr.CloseIdleConnections)
	c := transport.NewClient(tr)
	var l openLoop
	ctx := t.Context()
	l.run(ctx, c, url, 150, time.Second, 10*time.Second)
	if err := ns.Vanish(port); err != nil {
		t.Fatal(err)
	}
	l.run(ctx, c, url, 150, 3*time.Second, 10*time.Second)
	if err := ns.Flush(); err != nil {
		t.Fatal(err)
	}
	endAt := time.Now()
	l.run(ctx, c, url, 150, 4*time.Second, 10*time.Second)
	l.wg.Wait()
	var ok, n int
	var firstOK time.Duration = -1
	for _, o := range l.between(endAt, endAt.Add(time.Hour)) {
		if o.err == nil && o.status == 200 && firstOK < 0 {
			firstOK = o.end.Sub(endAt)
		}
	}
	for _, o := range l.between(endAt.Add(1500*time.Millisecond), endAt.Add(time.Hour)) {
		n++
		if o.err == nil && o.status == 200 {
			ok++
		}
	}
	t.Logf("first success %v after the hole closed; from 1.5s after: %d of %d ok", firstOK, ok, n)
	if ok*100 < n*99 {
		t.Errorf("%d of %d calls ok from 1.5s after the outage ended, want ≥ 99%%", ok, n)
	}
}

// TestAdvOneDeadAddressOfTwo: a name with a dead address and a live one
// (127.0.0.2 refused, listed first; 127.0.0.1 served): every call dials
// afresh (the server closes each conn) and the dead address fails each
// time inside the dial; the upstream is reachable and must never be held
// down.
func TestAdvOneDeadAddressOfTwo(t *testing.T) {
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	url := "http://example.com:" + strconv.Itoa(ln.Addr().(*net.TCPAddr).Port) + "/"
	tr := &transport.Transport{Dialer: &dial.Dialer{Resolver: staticResolver{"example.com",
		[]netip.Addr{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}}}}
	defer tr.CloseIdleConnections()
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 15 {
				ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				resp, err := tr.RoundTrip(req)
				cancel()
				if err != nil {
					t.Errorf("caller %d call %d: %v", g, i, err)
					return
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
			}
		})
	}
	wg.Wait()
}

// TestAdvDeadlinesShorterThanConnects: connects take 800ms, the callers'
// deadlines are 300ms, 20 calls a second for 3s, and the server closes
// idle conns after 100ms: the callers give up during dials (which go on,
// detached) and on reused conns the server closed. The upstream is
// reachable: no call may fail fast.
func TestAdvDeadlinesShorterThanConnects(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	srv.Config.IdleTimeout = 100 * time.Millisecond
	srv.Start()
	t.Cleanup(srv.Close)
	tr := &transport.Transport{Dialer: &dial.Dialer{DialFunc: slowConnect(800 * time.Millisecond)}}
	defer tr.CloseIdleConnections()
	var l openLoop
	l.run(t.Context(), transport.NewClient(tr), srv.URL, 20, 3*time.Second, 300*time.Millisecond)
	l.wg.Wait()
	var ok, timedOut int
	for _, o := range l.between(time.Time{}, time.Now().Add(time.Hour)) {
		switch {
		case errors.Is(o.err, transport.ErrUnavailable):
			t.Errorf("failed fast: %v", o.err)
		case o.err == nil:
			ok++
		default:
			timedOut++
		}
	}
	t.Logf("%d ok, %d ended by their deadline", ok, timedOut)
}

// TestAdvMeterProvidersNotPinned: an SDK's tests (or a process with a
// provider per tenant) make many meter providers, each used by a
// Transport that met an upstream, then shut down and dropped. lifeline
// remembers only the most recent few providers (otelx's memo); the
// upstream gauge must not pin the others, with their readers and data,
// for the life of the process.
func TestAdvMeterProvidersNotPinned(t *testing.T) {
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(live.Close)
	const n = 24
	var collected atomic.Int64
	for range n {
		func() {
			reader := sdkmetric.NewManualReader()
			mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
			// The reader: what the provider's data hangs on.
			runtime.AddCleanup(reader, func(*atomic.Int64) { collected.Add(1) }, &collected)
			tr := &transport.Transport{MeterProvider: mp}
			resp, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, live.URL, nil).WithContext(t.Context()))
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			tr.CloseIdleConnections()
			_ = mp.Shutdown(context.Background())
		}()
	}
	for range 20 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
		if collected.Load() >= n-8 {
			break
		}
	}
	t.Logf("%d of %d dropped meter providers collected", collected.Load(), n)
	if collected.Load() < n-8 {
		t.Fatalf("%d of %d dropped meter providers collected, want all but the memo's 8", collected.Load(), n)
	}
}

// TestAdvNoDeadlineCallDuringEndless429s: the server answers every call
// 429 with Retry-After: 1, for good (a spent quota). A caller without a
// deadline (context.Background, an http.Client without Timeout) must get
// an answer in about the time its own retries would have taken (3
// attempts, 1s apart): not wait pause after pause for the storm's end.
func TestAdvNoDeadlineCallDuringEndless429s(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.Header().Set("Retry-After", "1")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	type result struct {
		status int
		err    error
		took   time.Duration
	}
	results := make(chan result, 4)
	for i := range 4 {
		go func() {
			time.Sleep(time.Duration(i) * 300 * time.Millisecond)
			start := time.Now()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			resp, err := tr.RoundTrip(req)
			r := result{err: err, took: time.Since(start)}
			if err == nil {
				r.status = resp.StatusCode
				_ = resp.Body.Close()
			}
			results <- r
		}()
	}
	timeout := time.After(8 * time.Second)
	for range 4 {
		select {
		case r := <-results:
			t.Logf("call without a deadline: %d %v after %v", r.status, r.err, r.took)
			if r.err != nil || r.status != http.StatusTooManyRequests {
				t.Errorf("got %d %v, want the 429", r.status, r.err)
			}
		case <-timeout:
			cancel()
			t.Fatalf("calls without a deadline still waiting after 8s (%d requests reached the server): they wait for the storm's end", n.Load())
		}
	}
}

// TestAdvLongPollProbeDoesNotHoldThePause: after a pause, the first call
// to go is its probe, and the others wait for its outcome. When that call
// is a long poll (the server answers it after 8s), the others must not
// wait for the poll's end: the upstream answers /fast at once.
func TestAdvLongPollProbeDoesNotHoldThePause(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		if r.URL.Path == "/poll" {
			select {
			case <-time.After(8 * time.Second):
			case <-r.Context().Done():
			}
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	do := func(ctx context.Context, path string) (int, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return 0, err
		}
		_ = resp.Body.Close()
		return resp.StatusCode, nil
	}
	once := transport.WithCallOptions(t.Context(), transport.CallOptions{Retry: &retry.Policy{MaxAttempts: 1}})
	if code, err := do(once, "/fast"); code != http.StatusTooManyRequests {
		t.Fatalf("first call: %d %v", code, err)
	}
	pollCtx, cancelPoll := context.WithCancel(transport.WithCallOptions(t.Context(), transport.CallOptions{FirstByteTimeout: -1}))
	defer cancelPoll()
	polled := make(chan struct{})
	go func() {
		defer close(polled)
		_, _ = do(pollCtx, "/poll") // waits out the pause, then probes
	}()
	time.Sleep(1300 * time.Millisecond) // the pause is over; the poll is out
	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Second)
	defer cancel()
	start := time.Now()
	code, err := do(ctx, "/fast")
	t.Logf("fast call: %d %v after %v", code, err, time.Since(start))
	if err != nil || code != 200 {
		t.Errorf("fast call after the pause: %d %v after %v, want 200 (not a wait for the long poll's outcome)", code, err, time.Since(start))
	}
	cancelPoll()
	<-polled
}

// TestAdvTransportsCollected: Transports made and dropped (one per tenant,
// per test) after meeting upstreams, one of them down, with a meter
// provider whose gauge watches them: each is garbage-collected.
func TestAdvTransportsCollected(t *testing.T) {
	r := newRig(t)
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }))
	t.Cleanup(live.Close)
	refused := faultnet.RefusedAddr(t, "tcp4")
	const n = 10
	var collected atomic.Int64
	for range n {
		func() {
			tr := &transport.Transport{MeterProvider: r.mp, Retry: &retry.Policy{MaxAttempts: 1}}
			runtime.AddCleanup(tr, func(*atomic.Int64) { collected.Add(1) }, &collected)
			for _, u := range []string{live.URL, "http://" + refused} {
				for range upstreamFailures {
					resp, err := tr.RoundTrip(httptest.NewRequest(http.MethodGet, u, nil).WithContext(t.Context()))
					if err == nil {
						_ = resp.Body.Close()
					}
				}
			}
			tr.CloseIdleConnections()
		}()
	}
	_ = r.gauge(t, "lifeline.upstream.down")
	for range 20 {
		runtime.GC()
		time.Sleep(20 * time.Millisecond)
		if collected.Load() == n {
			break
		}
	}
	if collected.Load() != n {
		t.Fatalf("%d of %d dropped Transports collected", collected.Load(), n)
	}
	_ = r.gauge(t, "lifeline.upstream.down")
}

// upstreamFailures takes an upstream down.
const upstreamFailures = 6
