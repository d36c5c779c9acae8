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
