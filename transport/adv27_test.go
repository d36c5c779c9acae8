package transport

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/internal/upstream"
	"github.com/lifeline-go/lifeline/retry"
)

// adv27Get makes one call (one attempt) of c to u with the deadline
// given, and returns its status, whether the answer was the Transport's
// held one, and the error.
func adv27Get(c *http.Client, u *url.URL, deadline time.Duration) (int, bool, error) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	ctx = WithCallOptions(ctx, CallOptions{Retry: &retry.Policy{MaxAttempts: 1}})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://placeholder/", nil)
	req.URL = u
	req.Host = u.Host
	resp, err := c.Do(req)
	if err != nil {
		return 0, false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	var ee *retry.ExhaustedError
	return resp.StatusCode, errors.As(Exhausted(resp), &ee) && ee.Attempts == 0, nil
}

// TestAdv27ScopeEmptyPathIsSlash: a URL with no path and one with "/"
// send the same request line ("GET / HTTP/1.1"): one resource, one scope.
// A 429 (Retry-After: 30) of https://host pauses https://host/ — the call
// with a short deadline gets the held answer, and the server is not asked.
func TestAdv27ScopeEmptyPathIsSlash(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	bare, _ := url.Parse(srv.URL)
	if st, _, err := adv27Get(c, bare, 5*time.Second); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("first call: %d %v", st, err)
	}
	slash, _ := url.Parse(srv.URL + "/")
	st, held, err := adv27Get(c, slash, time.Second)
	if err != nil || st != http.StatusTooManyRequests || !held || hits.Load() != 1 {
		t.Fatalf("GET / during the pause of GET / (spelt without the slash): %d held %v, %v; the server saw %d requests, want 1",
			st, held, err, hits.Load())
	}
}

// TestAdv27ScopeStaleRawPath: a URL parsed with an escaped path
// (/t%2F1/) whose Path a caller then extends (u.Path += "items": its
// RawPath is stale) is sent as its Path escaped — net/http ignores a
// RawPath that is not an encoding of Path. The scope is the path as sent:
// a 429 of /t/1/items does not pause /t/1/users (another resource, whose
// stale RawPath is the same), and does pause /t/1/items spelt afresh.
func TestAdv27ScopeStaleRawPath(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "h1", true: "h2"}[h2], func(t *testing.T) { adv27StaleRawPath(t, h2) })
	}
}

func adv27StaleRawPath(t *testing.T, h2 bool) {
	var users, items atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
			w.WriteHeader(http.StatusHTTPVersionNotSupported)
			return
		}
		switch r.URL.EscapedPath() {
		case "/t/1/items":
			items.Add(1)
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		default:
			users.Add(1)
			_, _ = io.WriteString(w, "ok")
		}
	}))
	srv.EnableHTTP2 = h2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	roots := x509.NewCertPool()
	roots.AddCert(srv.Certificate())
	tr := &Transport{TLSClientConfig: &tls.Config{RootCAs: roots}}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	base, _ := url.Parse(srv.URL + "/t%2F1/")
	if base.RawPath == "" {
		t.Fatal("the base has no RawPath")
	}
	derived := func(name string) *url.URL {
		u := *base
		u.Path += name
		return &u
	}
	if st, _, err := adv27Get(c, derived("items"), 5*time.Second); err != nil || st != http.StatusTooManyRequests || items.Load() != 1 {
		t.Fatalf("items: %d %v (server saw %d)", st, err, items.Load())
	}
	st, held, err := adv27Get(c, derived("users"), 2*time.Second)
	if err != nil || st != http.StatusOK || users.Load() != 1 {
		t.Fatalf("/t/1/users during /t/1/items's pause: %d held %v, %v (server saw %d); want 200 from the server", st, held, err, users.Load())
	}
	fresh, _ := url.Parse(srv.URL + "/t/1/items")
	st, held, err = adv27Get(c, fresh, time.Second)
	if err != nil || st != http.StatusTooManyRequests || !held || items.Load() != 1 {
		t.Fatalf("/t/1/items spelt afresh during its pause: %d held %v, %v (server saw %d); want the held answer", st, held, err, items.Load())
	}
}

// TestShedArrivalBehindQueueWeight pins the throttle's weight for a
// standing queue (admit): a first attempt that arrives behind one is
// counted as an overload request before the throttle decides on it, and
// a refusal counts once more, as every refusal does — R = the requests
// before + n arrivals + the refused. (Counted once, the queue of
// TestShedSlowRefusalsQueue kept 23–30 of 240 calls to their deadline
// against the control's 170, more than its bound of an eighth.) Judged by
// the rejection probability: with no accepts it is R/(R+8).
func TestShedArrivalBehindQueueWeight(t *testing.T) {
	tr := &Transport{MaxConnsPerHost: 4}
	st := tr.get()
	u := &url.URL{Scheme: "http", Host: "127.0.0.1:9"}
	now := st.roughNow()
	up := st.ups.upstreamOf(u, now)
	const before = 20
	for range before {
		up.thr.Record(now, true)
	}
	up.queued.Store(int32(st.queueSignal))
	up.queueSince.Store(now - int64(time.Second))
	req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	shed := 0
	const n = 200
	for range n {
		c := &call{st: st, lim: &st.lim, up: up, req: req}
		c.cctx.Context = t.Context()
		c.ctx = &c.cctx
		_, err := c.admit(true)
		if err != nil {
			shed++
			if c.queued.Load() {
				t.Fatal("a refused call keeps an admission count to settle")
			}
		} else if !c.queued.Load() {
			t.Fatal("a call admitted behind the standing queue has no count to settle")
		}
	}
	if shed == 0 || shed == n {
		t.Fatalf("%d of %d shed: the test shows nothing", shed, n)
	}
	r := float64(before + n + shed)
	want := r / (r + upstream.ThrottlePadding)
	got := up.thr.Probability(st.roughNow())
	if d := got - want; d > 1e-9 || d < -1e-9 {
		counted := got * upstream.ThrottlePadding / (1 - got)
		t.Fatalf("%d calls (%d shed) after %d requests: the throttle counted %.0f requests, want %.0f", n, shed, before, counted, r)
	}
}

// TestAdv27ProbeRetryForgetsQueuedAttempt: an attempt counted as an
// overload request at its admission (behind a standing queue) that ended
// without an answer (its wait for a conn cut) is done with; the call's
// retry, when it is the probe of its upstream's pause, must not settle
// that count with its own answer (an accept with no request: a healthy
// upstream's count skewed, an overloaded one shed less). Control: the
// same retry when it is no probe.
func TestAdv27ProbeRetryForgetsQueuedAttempt(t *testing.T) {
	for _, paused := range []bool{false, true} {
		tr := &Transport{}
		st := tr.get()
		u := &url.URL{Scheme: "http", Host: "127.0.0.1:9"}
		up := st.ups.upstreamOf(u, st.roughNow())
		if paused {
			up.gate.Pause(time.Millisecond, time.Second)
			time.Sleep(5 * time.Millisecond)
		}
		req, _ := http.NewRequest(http.MethodGet, u.String(), nil)
		c := &call{st: st, lim: &st.lim, up: up, req: req}
		c.cctx.Context = t.Context()
		c.ctx = &c.cctx
		c.queued.Store(true) // the last attempt's, cut unanswered
		if _, err := c.admit(false); err != nil {
			t.Fatal(err)
		}
		if c.probe.Probe() != paused {
			t.Fatalf("paused %v: probe %v", paused, c.probe.Probe())
		}
		if c.queued.Load() {
			t.Errorf("paused %v: the retry's answer would settle the last attempt's count", paused)
		}
		c.endProbe()
	}
}

// signingCreds sign each request anew (a nonce in the Authorization, as
// request-signing schemes do): no two Applies send the same field.
type signingCreds struct{ n atomic.Int64 }

func (s *signingCreds) Apply(req *http.Request) error {
	req.Header.Set("Authorization", "Sig nonce="+strconv.FormatInt(s.n.Add(1), 10))
	return nil
}

func (*signingCreds) Refresh(context.Context, *http.Request) error { return nil }

// TestAdv27ScopeSigningCredentials: with Credentials that sign each
// request anew, no later call meets the scope of a 429's Authorization
// (its own differs). The server's Retry-After: 30 on /q must still hold:
// of 300 calls to /q the server sees one and the rest get the held answer
// (as with a fixed token, the control) — not one per scope until the
// table is full (65) and then a pause of the whole host: a call to /other
// still goes to the server.
func TestAdv27ScopeSigningCredentials(t *testing.T) {
	for _, signing := range []bool{false, true} {
		var hits atomic.Int64
		srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/other" {
				_, _ = io.WriteString(w, "ok")
				return
			}
			hits.Add(1)
			w.Header().Set("Retry-After", "30")
			w.WriteHeader(http.StatusTooManyRequests)
		}))
		tr := &Transport{}
		if signing {
			tr.Credentials = &signingCreds{}
		}
		c := NewClient(tr)
		u, _ := url.Parse(srv.URL + "/q")
		held := 0
		for range 300 {
			st, h, err := adv27Get(c, u, time.Second)
			if err != nil || st != http.StatusTooManyRequests {
				t.Fatalf("signing %v: %d %v", signing, st, err)
			}
			if h {
				held++
			}
		}
		other, _ := url.Parse(srv.URL + "/other")
		st, h, err := adv27Get(c, other, time.Second)
		tr.CloseIdleConnections()
		srv.Close()
		if n := hits.Load(); n != 1 || held != 299 {
			t.Fatalf("signing %v: the server saw %d of 300 calls to /q (want 1), %d held", signing, n, held)
		}
		if err != nil || st != http.StatusOK || h {
			t.Fatalf("signing %v: /other during /q's pause: %d held %v, %v", signing, st, h, err)
		}
	}
}

// TestAdv27ScopeRaceManyScopes (run with -race): 32 goroutines call 8
// paths as 20 tenants (Credentials by context); the server limits tenants
// 0-3 on /p0 and /p1 (429, Retry-After: 1) and serves every other call.
// Two paths paused at once are no host-wide limit: no call of another
// tenant, or to another path, gets a 429 (held or the server's); every
// call of a limited tenant on a limited path gets one.
func TestAdv27ScopeRaceManyScopes(t *testing.T) {
	limited := func(path, tenant string) bool {
		return (path == "/p0" || path == "/p1") && tenant < "t4" && len(tenant) == 2
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		tenant := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer token-")
		if limited(r.URL.Path, tenant) {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{Credentials: tenantCreds{}}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	var wrong, limitedOK atomic.Int64
	var wg sync.WaitGroup
	for g := range 32 {
		wg.Go(func() {
			for i := range 40 {
				path := "/p" + strconv.Itoa((g+i)%8)
				tenant := "t" + strconv.Itoa((g*7+i)%20)
				ctx := context.WithValue(context.Background(), tenantKey{}, tenant)
				// A limited call's deadline is shorter than the pause
				// (Retry-After: 1s), so that it gets the held 429; the
				// others' is no part of the claim (no 429 for them) and
				// only has to outlast a starved machine (gate run 56:
				// an ordinary call passed 300ms under make stress).
				deadline := 10 * time.Second
				if limited(path, tenant) {
					deadline = 300 * time.Millisecond
				}
				ctx, cancel := context.WithTimeout(ctx, deadline)
				ctx = WithCallOptions(ctx, CallOptions{Retry: &retry.Policy{MaxAttempts: 1}})
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
				resp, err := c.Do(req)
				cancel()
				if err != nil {
					// A limited tenant's call may wait for its scope's
					// probe and end at its 300ms deadline on a loaded
					// machine (make stress: -race beside CPU hogs);
					// nobody else's may (10s).
					if !limited(path, tenant) {
						wrong.Add(1)
						t.Errorf("%s %s: %v", path, tenant, err)
					}
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				_ = resp.Body.Close()
				switch lim := limited(path, tenant); {
				case lim && resp.StatusCode != http.StatusTooManyRequests:
					limitedOK.Add(1)
				case !lim && resp.StatusCode != http.StatusOK:
					if wrong.Add(1) <= 3 {
						t.Errorf("%s %s: %d", path, tenant, resp.StatusCode)
					}
				}
			}
		})
	}
	wg.Wait()
	if wrong.Load() > 0 || limitedOK.Load() > 0 {
		t.Fatalf("%d calls of tenants within their quotas failed; %d of limited tenants succeeded", wrong.Load(), limitedOK.Load())
	}
}
