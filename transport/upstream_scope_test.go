package transport

import (
	"context"
	"errors"
	"fmt"
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

	"github.com/lifeline-go/lifeline/retry"
)

// scopeGet makes one call of c to url with the Authorization auth (none
// when empty) and the given deadline; attempts 1: no retry of its own.
// It returns the status (0 on error), the time it took, whether the answer
// was the Transport's held one (Exhausted, zero attempts) and the error.
func scopeGet(c *http.Client, url, auth string, deadline time.Duration, once bool) (status int, took time.Duration, held bool, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), deadline)
	defer cancel()
	if once {
		ctx = WithCallOptions(ctx, CallOptions{Retry: &retry.Policy{MaxAttempts: 1}})
	}
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if auth != "" {
		req.Header.Set("Authorization", auth)
	}
	start := time.Now()
	resp, err := c.Do(req)
	took = time.Since(start)
	if err != nil {
		return 0, took, false, err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	var ee *retry.ExhaustedError
	held = errors.As(Exhausted(resp), &ee) && ee.Attempts == 0
	return resp.StatusCode, took, held, nil
}

// TestScope429PausesOnlyItsPath: /a answers 429 with Retry-After: 2, /b
// 200. A 429 speaks for /a (per-path rate limits are common): every call
// to /b during /a's pause goes at once and succeeds, none gets a 429;
// a call to /a with a short deadline gets the held answer at once.
// (Before scopes, the pause was the host's: /b's calls got /a's 429.)
func TestScope429PausesOnlyItsPath(t *testing.T) {
	var bCalls atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/a" {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		bCalls.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	if st, _, _, err := scopeGet(c, srv.URL+"/a?x=1", "", 5*time.Second, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("/a: %d %v", st, err)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := range 100 {
		wg.Go(func() {
			st, took, _, err := scopeGet(c, srv.URL+"/b?i="+strconv.Itoa(i), "", 1500*time.Millisecond, false)
			if err != nil || st != http.StatusOK {
				if bad.Add(1) <= 3 {
					t.Errorf("/b call %d: %d after %v, %v", i, st, took, err)
				}
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d of 100 calls to /b failed or got a 429 their path never sent", n)
	}
	if n := bCalls.Load(); n != 100 {
		t.Fatalf("the server saw %d calls to /b, want 100", n)
	}
	// /a is still paused: a call that cannot wait gets the held answer.
	st, took, held, err := scopeGet(c, srv.URL+"/a", "", time.Second, false)
	if err != nil || st != http.StatusTooManyRequests || !held || took > 500*time.Millisecond {
		t.Fatalf("/a during its pause: %d held %v after %v, %v; want the held 429 at once", st, held, took, err)
	}
}

// TestScope429PerToken: two Authorization tokens on one path, one of
// them over its quota (429, Retry-After: 2): the other token's calls go
// at once and succeed; the limited token's call that cannot wait gets
// the held answer.
func TestScope429PerToken(t *testing.T) {
	var other atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer limited" {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		other.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	if st, _, _, err := scopeGet(c, srv.URL+"/q", "Bearer limited", 5*time.Second, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("limited: %d %v", st, err)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 50 {
		wg.Go(func() {
			if st, took, _, err := scopeGet(c, srv.URL+"/q", "Bearer other", 1500*time.Millisecond, false); err != nil || st != http.StatusOK {
				if bad.Add(1) <= 3 {
					t.Errorf("other token: %d after %v, %v", st, took, err)
				}
			}
		})
	}
	wg.Wait()
	if bad.Load() > 0 || other.Load() != 50 {
		t.Fatalf("%d of the other token's 50 calls failed; the server saw %d", bad.Load(), other.Load())
	}
	st, took, held, err := scopeGet(c, srv.URL+"/q", "Bearer limited", time.Second, false)
	if err != nil || st != http.StatusTooManyRequests || !held || took > 500*time.Millisecond {
		t.Fatalf("limited token during its pause: %d held %v after %v, %v; want the held 429 at once", st, held, took, err)
	}
}

// TestScope429TenantsOnOnePathDoNotPauseHost: five tenants (tokens) over
// their quotas on one path are five scopes of one path, not a host-wide
// limit: another tenant's calls to that path and any call to another
// path go at once.
func TestScope429TenantsOnOnePathDoNotPauseHost(t *testing.T) {
	var served atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.Header.Get("Authorization"), "Bearer over") {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		served.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	for i := range 5 {
		if st, _, _, err := scopeGet(c, srv.URL+"/q", fmt.Sprintf("Bearer over%d", i), 5*time.Second, true); err != nil || st != http.StatusTooManyRequests {
			t.Fatalf("tenant over%d: %d %v", i, st, err)
		}
	}
	for _, path := range []string{"/q", "/other"} {
		st, took, held, err := scopeGet(c, srv.URL+path, "Bearer fine", time.Second, false)
		if err != nil || st != http.StatusOK || held {
			t.Errorf("a tenant within its quota, %s: %d (held %v) after %v, %v; want 200 at once", path, st, held, took, err)
		}
	}
	if served.Load() != 2 {
		t.Errorf("the server served %d calls of the tenant within its quota, want 2", served.Load())
	}
}

// TestScope429ThreePathsPauseHost: 429s on three paths at once are a
// host-wide limit: the host pauses, and a fourth path's call waits for
// the pause (or gets the held answer when it cannot wait) without
// reaching the server during it; after it, that call succeeds.
func TestScope429ThreePathsPauseHost(t *testing.T) {
	var p4 atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/p4" {
			p4.Add(1)
			_, _ = io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	for i := 1; i <= 2; i++ {
		if st, _, _, err := scopeGet(c, srv.URL+"/p"+strconv.Itoa(i), "", 5*time.Second, true); err != nil || st != http.StatusTooManyRequests {
			t.Fatalf("/p%d: %d %v", i, st, err)
		}
	}
	// Two scopes paused: /p4 still goes.
	if st, _, held, err := scopeGet(c, srv.URL+"/p4", "", time.Second, false); err != nil || st != http.StatusOK || held {
		t.Fatalf("/p4 with two paths paused: %d held %v, %v", st, held, err)
	}
	if st, _, _, err := scopeGet(c, srv.URL+"/p3", "", 5*time.Second, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("/p3: %d %v", st, err)
	}
	before := p4.Load()
	st, took, held, err := scopeGet(c, srv.URL+"/p4", "", time.Second, false)
	if err != nil || st != http.StatusTooManyRequests || !held || took > 500*time.Millisecond {
		t.Fatalf("/p4 with three paths paused: %d held %v after %v, %v; want the host's held 429 at once", st, held, took, err)
	}
	st, took, held, err = scopeGet(c, srv.URL+"/p4", "", 10*time.Second, false)
	if err != nil || st != http.StatusOK || held || took < time.Second {
		t.Fatalf("/p4 that waits: %d held %v after %v, %v; want 200 after the host's pause", st, held, took, err)
	}
	if n := p4.Load() - before; n != 1 {
		t.Fatalf("the server saw %d calls to /p4 during and after the pause, want 1", n)
	}
}

// TestScopeTableBounded: 100 calls to 100 paths in flight at once, all
// answered 429 (Retry-After: 2), then 900 more paths: the table holds at
// most maxScopes scopes, the host is paused (the calls to the 900 paths
// never reach the server during the pause, each gets the held answer),
// the count of paused scopes is exact, and after the pause a call goes.
func TestScopeTableBounded(t *testing.T) {
	var arrived atomic.Int64
	var limited atomic.Bool
	limited.Store(true)
	release := make(chan struct{})
	var once sync.Once
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !limited.Load() {
			_, _ = io.WriteString(w, "ok")
			return
		}
		if arrived.Add(1) >= 100 {
			once.Do(func() { close(release) })
		}
		select {
		case <-release:
		case <-time.After(3 * time.Second):
		}
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			if st, _, _, err := scopeGet(c, srv.URL+"/x/"+strconv.Itoa(i), "", 10*time.Second, true); err != nil || st != http.StatusTooManyRequests {
				t.Errorf("/x/%d: %d %v", i, st, err)
			}
		})
	}
	wg.Wait()
	u := tr.get().ups.upstreamOf(mustURL(t, srv.URL), time.Now().UnixNano())
	if n := u.scopes.size(); n > maxScopes || n < hostScopes {
		t.Fatalf("%d scopes tracked, want %d to %d", n, hostScopes, maxScopes)
	}
	for i := 100; i < 1000; i++ {
		st, _, held, err := scopeGet(c, srv.URL+"/x/"+strconv.Itoa(i), "", 500*time.Millisecond, false)
		if err != nil || st != http.StatusTooManyRequests || !held {
			t.Fatalf("/x/%d during the host's pause: %d held %v, %v", i, st, held, err)
		}
	}
	if n := arrived.Load(); n != 100 {
		t.Fatalf("the server saw %d calls, want the first 100", n)
	}
	if n := u.scopes.size(); n > maxScopes {
		t.Fatalf("%d scopes tracked, want at most %d", n, maxScopes)
	}
	u.scopes.mu.Lock()
	notReady := 0
	for _, sc := range u.scopes.m {
		if sc.gate.Current() != 0 {
			notReady++
		}
	}
	u.scopes.mu.Unlock()
	if p := int(u.scopes.paused.Load()); p != notReady {
		t.Fatalf("paused count %d, %d scopes not ready", p, notReady)
	}
	limited.Store(false)
	if st, took, _, err := scopeGet(c, srv.URL+"/x/999", "", 10*time.Second, false); err != nil || st != http.StatusOK {
		t.Fatalf("after the pause: %d after %v, %v", st, took, err)
	}
}

// TestScopeStormEveryPath: the (j) storm on every path (all answer 429,
// Retry-After: 2, for 3s) while calls go round five paths at 20/s: once
// three paths are paused the host is, and during each advised wait after
// that only the host's probes reach the server; the calls that wait
// succeed after the storm.
func TestScopeStormEveryPath(t *testing.T) {
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
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	var wg sync.WaitGroup
	var ok, failed atomic.Int64
	tick := time.NewTicker(50 * time.Millisecond)
	for i := range 60 {
		wg.Go(func() {
			st, _, _, err := scopeGet(c, srv.URL+"/s/"+strconv.Itoa(i%5), "", 10*time.Second, false)
			if err == nil && st == http.StatusOK {
				ok.Add(1)
			} else {
				failed.Add(1)
			}
		})
		<-tick.C
	}
	tick.Stop()
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if len(arrivals) < hostScopes {
		t.Fatalf("%d arrivals", len(arrivals))
	}
	// The host pauses at the third 429: from then on, only probes (one
	// at about +2s, whose 429 renews the pause, one at about +4s).
	esc := arrivals[hostScopes-1]
	during := 0
	for _, a := range arrivals[hostScopes:] {
		if a.Sub(esc) < 3900*time.Millisecond {
			during++
		}
	}
	t.Logf("%d arrivals in all, %d in the advised waits after the host paused; %d calls ok, %d not", len(arrivals), during, ok.Load(), failed.Load())
	if during > 2 {
		t.Fatalf("%d calls reached the server during the host's advised waits, want only the probes", during)
	}
	if failed.Load() > 0 {
		t.Fatalf("%d calls with 10s deadlines failed", failed.Load())
	}
}

func mustURL(t *testing.T, s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		t.Fatal(err)
	}
	return u
}

// TestScopeAdmitAllocs: a call to a path that is not paused, while
// another path's scope is (the table is looked up), passes without
// allocating, and one of the paused scope with a deadline before the
// pause's end gets the held answer; the scope's key holds no value of
// the path or the token.
func TestScopeAdmitAllocs(t *testing.T) {
	tr := &Transport{}
	st := tr.get()
	u := &url.URL{Scheme: "https", Host: "api.example", Path: "/search", RawQuery: "q=1"}
	now := time.Now().UnixNano()
	up := st.ups.upstreamOf(u, now)
	limited, _ := http.NewRequest(http.MethodGet, u.String(), nil)
	limited.Header.Set("Authorization", "Bearer secret-token")
	resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"30"}}}
	pc := &call{st: st, lim: &st.lim, up: up, req: limited}
	if !pc.pauses(resp) || up.scopes.paused.Load() != 1 || up.gate.Current() != 0 {
		t.Fatalf("the 429 paused %d scopes, host state %v", up.scopes.paused.Load(), up.gate.Current())
	}
	other, _ := http.NewRequest(http.MethodGet, "https://api.example/items", nil)
	other.Header.Set("Authorization", "Bearer secret-token")
	c := &call{st: st, lim: &st.lim, req: other}
	c.cctx.Context = t.Context()
	c.ctx = &c.cctx
	n := testing.AllocsPerRun(1000, func() {
		c.up = st.ups.upstreamOf(u, now)
		if resp, err := c.admit(true); resp != nil || err != nil {
			t.Fatal(resp, err)
		}
		c.endProbe()
	})
	if n != 0 {
		t.Fatalf("%v allocations per call while another scope is paused", n)
	}
	// The same path, another query: the paused scope.
	same, _ := http.NewRequest(http.MethodGet, "https://api.example/search?q=2", nil)
	same.Header.Set("Authorization", "Bearer secret-token")
	ctx, cancel := context.WithTimeout(t.Context(), time.Second)
	defer cancel()
	hc := &call{st: st, lim: &st.lim, req: same.WithContext(ctx), ctx: ctx, up: up}
	r, err := hc.admit(true)
	if err != nil || r == nil || r.StatusCode != http.StatusTooManyRequests {
		t.Fatalf("the paused scope's call: %v, %v; want the held 429", r, err)
	}
	var ue *UnavailableError
	if !errors.As(Exhausted(r), &ue) || strings.Contains(ue.Error(), "search") || strings.Contains(ue.Error(), "secret") {
		t.Fatalf("held answer's error %v", Exhausted(r))
	}
}
