package transport

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// tenantKey carries a tenant's name in a request's context, for
// tenantCreds.
type tenantKey struct{}

// tenantCreds are the Credentials of a multi-tenant service: one
// Transport, the token of the tenant named by the request's context.
type tenantCreds struct{}

func (tenantCreds) Apply(req *http.Request) error {
	if t, ok := req.Context().Value(tenantKey{}).(string); ok {
		req.Header.Set("Authorization", "Bearer token-"+t)
	}
	return nil
}

func (tenantCreds) Refresh(context.Context, *http.Request) error { return nil }

// TestAdvScopeCredentialsTenants: a Transport whose Credentials apply
// each tenant's token (the caller's request has no Authorization; the
// try's has). Tenant t0 is over its quota on /q (429, Retry-After: 2):
// the other tenants' calls to /q go at once and succeed — the scope is
// the token sent, not the field of the caller's request.
func TestAdvScopeCredentialsTenants(t *testing.T) {
	var other atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer token-t0" {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		other.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{Credentials: tenantCreds{}}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	get := func(tenant string, deadline time.Duration) (int, bool, error) {
		ctx := context.WithValue(context.Background(), tenantKey{}, tenant)
		ctx, cancel := context.WithTimeout(ctx, deadline)
		defer cancel()
		ctx = WithCallOptions(ctx, CallOptions{Retry: nil})
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/q", nil)
		resp, err := c.Do(req)
		if err != nil {
			return 0, false, err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
		return resp.StatusCode, Exhausted(resp) != nil, nil
	}
	if st, _, err := get("t0", 500*time.Millisecond); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("t0: %d %v", st, err)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for i := 1; i <= 50; i++ {
		wg.Go(func() {
			st, held, err := get("t"+strconv.Itoa(i), time.Second)
			if err != nil || st != http.StatusOK {
				if bad.Add(1) <= 3 {
					t.Errorf("tenant t%d: %d held %v, %v", i, st, held, err)
				}
			}
		})
	}
	wg.Wait()
	if n := bad.Load(); n > 0 {
		t.Fatalf("%d of 50 other tenants' calls got t0's 429 (the server saw %d)", n, other.Load())
	}
}

// TestAdvScopeEscapedPath: /a%2Fb and /a/b are two resources to the
// server (an id with a slash in it); a 429 of one must not pause the
// other.
func TestAdvScopeEscapedPath(t *testing.T) {
	var plain atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.EscapedPath() == "/a%2Fb" {
			w.Header().Set("Retry-After", "2")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		plain.Add(1)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	if st, _, _, err := scopeGet(c, srv.URL+"/a%2Fb", "", 5*time.Second, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("/a%%2Fb: %d %v", st, err)
	}
	st, took, held, err := scopeGet(c, srv.URL+"/a/b", "", time.Second, false)
	if err != nil || st != http.StatusOK || plain.Load() != 1 {
		t.Fatalf("/a/b during /a%%2Fb's pause: %d held %v after %v, %v", st, held, took, err)
	}
	// And the escaped path is still paused.
	st, _, held, err = scopeGet(c, srv.URL+"/a%2Fb", "", time.Second, false)
	if err != nil || st != http.StatusTooManyRequests || !held {
		t.Fatalf("/a%%2Fb during its pause: %d held %v, %v", st, held, err)
	}
}

// TestAdvScopeProbeGivesUp: /s is paused (429, Retry-After: 1); its probe
// after the pause meets a server that hangs, and its caller gives up; the
// next probe is answered by a conn closed without an answer. Neither
// leaves the scope shut: the next call probes and succeeds at once, and
// the calls that waited meanwhile succeed within their deadlines.
func TestAdvScopeProbeGivesUp(t *testing.T) {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
		case 2:
			<-r.Context().Done()
		case 3:
			c, _, err := http.NewResponseController(w).Hijack()
			if err == nil {
				_ = c.Close()
			}
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	if st, _, _, err := scopeGet(c, srv.URL+"/s", "", 500*time.Millisecond, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("first: %d %v", st, err)
	}
	time.Sleep(1100 * time.Millisecond)
	// The probe that hangs; its caller gives up after 300ms.
	if st, _, _, err := scopeGet(c, srv.URL+"/s", "", 300*time.Millisecond, true); err == nil {
		t.Fatalf("the hanging probe: %d", st)
	}
	// The probe answered by a closed conn (no retry: the call fails).
	if st, _, _, err := scopeGet(c, srv.URL+"/s", "", 2*time.Second, true); err == nil {
		t.Fatalf("the closed probe: %d", st)
	}
	var wg sync.WaitGroup
	var bad atomic.Int64
	for range 20 {
		wg.Go(func() {
			st, took, _, err := scopeGet(c, srv.URL+"/s", "", 3*time.Second, true)
			if err != nil || st != http.StatusOK || took > 1500*time.Millisecond {
				if bad.Add(1) <= 3 {
					t.Errorf("after the failed probes: %d after %v, %v", st, took, err)
				}
			}
		})
	}
	wg.Wait()
	u := tr.get().ups.upstreamOf(mustURL(t, srv.URL), time.Now().UnixNano())
	if p := u.scopes.paused.Load(); p != 0 {
		t.Fatalf("paused count %d after the scope answered 200", p)
	}
}

// TestAdvScopePausedCountRace: 200 goroutines on 40 paths and 5 tokens
// for 2s against a server whose answers flip between 200 and 429 (with
// Retry-After 1, 0, an HTTP-date, or none), then all 200: once every
// scope has answered 200, no scope is paused and the paused count is 0
// (not negative, not stuck above 0, which would have every call take the
// table's lock for ever).
func TestAdvScopePausedCountRace(t *testing.T) {
	var limited atomic.Bool
	limited.Store(true)
	var seq atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		i := seq.Add(1)
		if limited.Load() && i%2 == 0 {
			switch i % 8 {
			case 0:
				w.Header().Set("Retry-After", "1")
			case 2:
				w.Header().Set("Retry-After", "0")
			case 4:
				w.Header().Set("Retry-After", time.Now().Add(time.Second).UTC().Format(http.TimeFormat))
			}
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	stop := time.Now().Add(2 * time.Second)
	var wg sync.WaitGroup
	for g := range 200 {
		wg.Go(func() {
			for i := 0; time.Now().Before(stop); i++ {
				_, _, _, _ = scopeGet(c, srv.URL+"/p/"+strconv.Itoa((g+i)%40), "Bearer t"+strconv.Itoa(g%5), 300*time.Millisecond, i%2 == 0)
			}
		})
	}
	wg.Wait()
	limited.Store(false)
	u := tr.get().ups.upstreamOf(mustURL(t, srv.URL), time.Now().UnixNano())
	deadline := time.Now().Add(10 * time.Second)
	for {
		for p := range 40 {
			for tok := range 5 {
				wg.Go(func() {
					_, _, _, _ = scopeGet(c, srv.URL+"/p/"+strconv.Itoa(p), "Bearer t"+strconv.Itoa(tok), 5*time.Second, false)
				})
			}
		}
		wg.Wait()
		u.scopes.mu.Lock()
		notReady := 0
		for _, sc := range u.scopes.m {
			if sc.gate.State() != 0 {
				notReady++
			}
		}
		u.scopes.mu.Unlock()
		p := u.scopes.paused.Load()
		if p == 0 && notReady == 0 {
			return
		}
		if p < 0 || time.Now().After(deadline) {
			t.Fatalf("paused count %d, %d scopes not ready, %d tracked, host %v", p, notReady, u.scopes.size(), u.gate.State())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestAdvScopeHostProbeNotHeldByScope: /a is paused for 10s (429), then
// the host for 1s (a 503 with Retry-After: 1). A hundred calls to /a that
// can wait 15s and one to /b wait for the host. When the host's pause
// ends, its probe must not be taken by a call that then waits 10s for
// /a's pause (the host's other calls waiting a probe interval each time
// for a probe that never goes): /b succeeds about 1s in.
func TestAdvScopeHostProbeNotHeldByScope(t *testing.T) {
	var bSeen atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/a":
			w.Header().Set("Retry-After", "10")
			w.WriteHeader(http.StatusTooManyRequests)
		case "/z":
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusServiceUnavailable)
		default:
			bSeen.Add(1)
			_, _ = io.WriteString(w, "ok")
		}
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	if st, _, _, err := scopeGet(c, srv.URL+"/a", "", 500*time.Millisecond, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("/a: %d %v", st, err)
	}
	if st, _, _, err := scopeGet(c, srv.URL+"/z", "", 500*time.Millisecond, true); err != nil || st != http.StatusServiceUnavailable {
		t.Fatalf("/z: %d %v", st, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel()
	for range 100 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/a", nil)
			if resp, err := c.Do(req); err == nil {
				_ = resp.Body.Close()
			}
		})
	}
	time.Sleep(50 * time.Millisecond)
	st, took, held, err := scopeGet(c, srv.URL+"/b", "", 6*time.Second, true)
	if err != nil || st != http.StatusOK || took > 3*time.Second {
		t.Fatalf("/b after the host's 1s pause: %d held %v after %v, %v (the server saw %d)", st, held, took, err, bSeen.Load())
	}
}

// TestAdvScopeInFlightAnswerKeepsPause: nine calls to /r are in flight
// (the server takes 200ms) when a tenth gets a 429 with Retry-After: 2.
// The nine 200s that arrive after it were admitted before the limit and
// say nothing of it: they must not reopen the scope. During the advised
// wait no call of /r reaches the server (the calls that cannot wait get
// the held answer at once).
func TestAdvScopeInFlightAnswerKeepsPause(t *testing.T) {
	var arrived atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) <= 9 {
			time.Sleep(200 * time.Millisecond)
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
	var wg sync.WaitGroup
	for range 9 {
		wg.Go(func() {
			if st, _, _, err := scopeGet(c, srv.URL+"/r", "", 5*time.Second, true); err != nil || st != http.StatusOK {
				t.Errorf("in flight: %d %v", st, err)
			}
		})
	}
	for arrived.Load() < 9 {
		time.Sleep(time.Millisecond)
	}
	if st, _, _, err := scopeGet(c, srv.URL+"/r", "", time.Second, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("the tenth: %d %v", st, err)
	}
	wg.Wait()
	for i := range 5 {
		st, took, held, err := scopeGet(c, srv.URL+"/r", "", 500*time.Millisecond, false)
		if err != nil || st != http.StatusTooManyRequests || !held {
			t.Fatalf("call %d in the advised wait: %d held %v after %v, %v", i, st, held, took, err)
		}
	}
	if n := arrived.Load(); n != 10 {
		t.Fatalf("the server saw %d calls of /r, want 10: the in-flight answers reopened its pause", n)
	}
}

// TestAdvScopeProbeDoesNotHedge: /h is paused (429, Retry-After: 1);
// its probe is a call that may hedge (HedgeDelay 50ms) and the server
// takes 300ms to answer: the probe is one request, no hedge joins it
// (a second request at a limit the server asked to be left alone).
func TestAdvScopeProbeDoesNotHedge(t *testing.T) {
	var arrived atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) == 1 {
			w.Header().Set("Retry-After", "1")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		time.Sleep(300 * time.Millisecond)
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	if st, _, _, err := scopeGet(c, srv.URL+"/h", "", 500*time.Millisecond, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("first: %d %v", st, err)
	}
	time.Sleep(1100 * time.Millisecond)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	ctx = WithCallOptions(ctx, CallOptions{HedgeDelay: 50 * time.Millisecond})
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/h", nil)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("the probe: %v %v", resp, err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	if n := arrived.Load() - 1; n != 1 {
		t.Fatalf("the probe of the pause sent %d requests, want 1", n)
	}
}

// queryCreds put the tenant's key in the URL's query, as Credentials
// may: on the copy they are given, never on the caller's request.
type queryCreds struct{}

func (queryCreds) Apply(req *http.Request) error {
	q := req.URL.Query()
	q.Set("key", "secret")
	req.URL.RawQuery = q.Encode()
	req.Header.Set("Authorization", "Bearer x")
	return nil
}

func (queryCreds) Refresh(context.Context, *http.Request) error { return nil }

// TestAdvScopeKeyLeavesCallerRequest: while a scope is paused, finding a
// call's scope applies the Credentials to a copy: the caller's request
// (its URL, its header) is left as it was.
func TestAdvScopeKeyLeavesCallerRequest(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/a" {
			w.Header().Set("Retry-After", "5")
			w.WriteHeader(http.StatusTooManyRequests)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{Credentials: queryCreds{}}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	if st, _, _, err := scopeGet(c, srv.URL+"/a", "", 500*time.Millisecond, true); err != nil || st != http.StatusTooManyRequests {
		t.Fatalf("/a: %d %v", st, err)
	}
	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/b?x=1", nil)
	resp, err := c.Do(req)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/b: %v %v", resp, err)
	}
	_ = resp.Body.Close()
	if req.URL.RawQuery != "x=1" || len(req.Header) != 0 {
		t.Fatalf("the caller's request was changed: query %q, header %v", req.URL.RawQuery, req.Header)
	}
}

// TestAdvScopeHundredThousandPaths: 100,000 paths (and 1,000 tokens)
// each answered 429 once: the table stays within maxScopes, the host is
// paused, and the paused count is the number of scopes not Ready.
func TestAdvScopeHundredThousandPaths(t *testing.T) {
	tr := &Transport{}
	st := tr.get()
	u := mustURL(t, "https://api.example/")
	up := st.ups.upstreamOf(u, time.Now().UnixNano())
	for i := range 100_000 {
		req, _ := http.NewRequest(http.MethodGet, "https://api.example/p/"+strconv.Itoa(i), nil)
		req.Header.Set("Authorization", "Bearer t"+strconv.Itoa(i%1000))
		resp := &http.Response{StatusCode: http.StatusTooManyRequests, Header: http.Header{"Retry-After": {"30"}}, Request: req}
		c := &call{st: st, lim: &st.lim, up: up, req: req}
		if !c.pauses(resp) {
			t.Fatalf("429 %d paused nothing", i)
		}
	}
	if n := up.scopes.size(); n > maxScopes {
		t.Fatalf("%d scopes tracked, want at most %d", n, maxScopes)
	}
	if up.gate.Current() == 0 {
		t.Fatal("the host is not paused")
	}
	up.scopes.mu.Lock()
	notReady := 0
	for _, sc := range up.scopes.m {
		if sc.gate.Current() != 0 {
			notReady++
		}
	}
	up.scopes.mu.Unlock()
	if p := int(up.scopes.paused.Load()); p != notReady {
		t.Fatalf("paused count %d, %d scopes not ready", p, notReady)
	}
}

// TestAdvHostInFlightAnswerKeepsPause: as TestAdvScopeInFlightAnswerKeepsPause
// for the host: nine calls in flight when a tenth gets a 503 with
// Retry-After: 2 (the host's pause); their 200s do not end the advised
// wait.
func TestAdvHostInFlightAnswerKeepsPause(t *testing.T) {
	var arrived atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if arrived.Add(1) <= 9 {
			time.Sleep(200 * time.Millisecond)
			_, _ = io.WriteString(w, "ok")
			return
		}
		w.Header().Set("Retry-After", "2")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	t.Cleanup(srv.Close)
	tr := &Transport{}
	defer tr.CloseIdleConnections()
	c := NewClient(tr)
	var wg sync.WaitGroup
	for i := range 9 {
		wg.Go(func() {
			if st, _, _, err := scopeGet(c, srv.URL+"/r/"+strconv.Itoa(i), "", 5*time.Second, true); err != nil || st != http.StatusOK {
				t.Errorf("in flight: %d %v", st, err)
			}
		})
	}
	for arrived.Load() < 9 {
		time.Sleep(time.Millisecond)
	}
	if st, _, _, err := scopeGet(c, srv.URL+"/z", "", time.Second, true); err != nil || st != http.StatusServiceUnavailable {
		t.Fatalf("the tenth: %d %v", st, err)
	}
	wg.Wait()
	for i := range 5 {
		st, took, held, err := scopeGet(c, srv.URL+"/y/"+strconv.Itoa(i), "", 500*time.Millisecond, false)
		if err != nil || st != http.StatusServiceUnavailable || !held {
			t.Fatalf("call %d in the advised wait: %d held %v after %v, %v", i, st, held, took, err)
		}
	}
	if n := arrived.Load(); n != 10 {
		t.Fatalf("the server saw %d calls, want 10: the in-flight answers reopened the host's pause", n)
	}
}
