package transport

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
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
