package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// callWith makes one GET of url on tr with o in its context (none when
// o is nil) and returns the status (0 on error) and the error, body read.
func callWith(t *testing.T, tr *transport.Transport, o *transport.CallOptions, url string) (int, error) {
	t.Helper()
	// A bound for the test, should a limit not cut: far beyond any here.
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if o != nil {
		ctx = transport.WithCallOptions(ctx, *o)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	if _, err := io.ReadAll(resp.Body); err != nil {
		return resp.StatusCode, err
	}
	return resp.StatusCode, nil
}

func startServer(t *testing.T, h2 bool, h http.HandlerFunc) *httptest.Server {
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	// The Dialer races TLS handshakes: the losers' resets are no news.
	srv.Config.ErrorLog = quietLog()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv
}

// sleepCtx waits d or until ctx ends, and reports whether d passed.
func sleepCtx(ctx context.Context, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	}
}

// TestCallOptionsRetry: one Transport, calls with different retry
// policies; concurrent, they do not leak into each other.
func TestCallOptionsRetry(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			var mu sync.Mutex
			hits := map[string]int{}
			srv := startServer(t, h2, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				hits[r.URL.Path]++
				mu.Unlock()
				w.WriteHeader(http.StatusServiceUnavailable)
			})
			// (An upstream that answers every call with 503 is drowning:
			// load shedding would refuse these retries. The policies are
			// under test here.)
			tr := &transport.Transport{TLSClientConfig: trustTLS(srv), DisableLoadShedding: true,
				Retry: &retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 3, Budget: retry.NewBudget(1, 1000)}}
			defer tr.CloseIdleConnections()
			noRetry := &transport.CallOptions{Retry: &retry.Policy{MaxAttempts: 1}}
			five := &transport.CallOptions{Retry: &retry.Policy{MaxAttempts: 5, InitialInterval: time.Millisecond}}
			var wg sync.WaitGroup
			for i := range 10 {
				wg.Go(func() {
					code, err := callWith(t, tr, noRetry, srv.URL+fmt.Sprintf("/once/%d", i))
					assert.NoError(t, err)
					assert.Equal(t, http.StatusServiceUnavailable, code)
				})
				wg.Go(func() {
					code, err := callWith(t, tr, nil, srv.URL+fmt.Sprintf("/default/%d", i))
					assert.NoError(t, err)
					assert.Equal(t, http.StatusServiceUnavailable, code)
				})
				wg.Go(func() {
					code, err := callWith(t, tr, five, srv.URL+fmt.Sprintf("/five/%d", i))
					assert.NoError(t, err)
					assert.Equal(t, http.StatusServiceUnavailable, code)
				})
			}
			wg.Wait()
			for i := range 10 {
				assert.Equal(t, 1, hits[fmt.Sprintf("/once/%d", i)], "MaxAttempts 1: no retry for this call")
				assert.Equal(t, 3, hits[fmt.Sprintf("/default/%d", i)], "the Transport's policy")
				assert.Equal(t, 5, hits[fmt.Sprintf("/five/%d", i)], "the call's policy")
			}
		})
	}
}

// TestCallOptionsRetryInvalid: a call's invalid policy fails that call,
// naming the field, and no other.
func TestCallOptionsRetryInvalid(t *testing.T) {
	srv := startServer(t, false, func(http.ResponseWriter, *http.Request) {})
	tr := &transport.Transport{TLSClientConfig: trustTLS(srv)}
	defer tr.CloseIdleConnections()
	_, err := callWith(t, tr, &transport.CallOptions{Retry: &retry.Policy{MaxAttempts: -1}}, srv.URL)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "MaxAttempts")
	code, err := callWith(t, tr, nil, srv.URL)
	require.NoError(t, err)
	assert.Equal(t, http.StatusOK, code)
}

// TestCallOptionsLongPoll: a long poll that answers after longer than the
// Transport's FirstByteTimeout succeeds with FirstByteTimeout -1, while a
// concurrent ordinary call on the same Transport is still cut; the
// StallTimeout still bounds the long poll's body unless it is -1 too.
func TestCallOptionsLongPoll(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			t.Parallel()
			srv := startServer(t, h2, func(w http.ResponseWriter, r *http.Request) {
				// The long poll's wait (and a hang for the others), and the
				// body's stall: far beyond the 200ms limits, so that a
				// watch held up by a loaded machine still cuts first.
				if !sleepCtx(r.Context(), time.Second) {
					return
				}
				w.Header().Set("Content-Length", "4")
				fmt.Fprint(w, "da")
				w.(http.Flusher).Flush()
				// (Once the client cut the stall, the rest is not sent:
				// it could still reach the cut Read and complete it.)
				if r.URL.Path == "/stall" && !sleepCtx(r.Context(), 1500*time.Millisecond) {
					return
				}
				fmt.Fprint(w, "ta")
			})
			tr := &transport.Transport{TLSClientConfig: trustTLS(srv), FirstByteTimeout: 200 * time.Millisecond,
				StallTimeout: 200 * time.Millisecond, Retry: &retry.Policy{MaxAttempts: 1}}
			defer tr.CloseIdleConnections()
			longPoll := &transport.CallOptions{FirstByteTimeout: -1}
			var wg sync.WaitGroup
			for range 3 {
				wg.Go(func() {
					code, err := callWith(t, tr, longPoll, srv.URL)
					assert.NoError(t, err)
					assert.Equal(t, http.StatusOK, code)
				})
				wg.Go(func() {
					_, err := callWith(t, tr, nil, srv.URL)
					var te *transport.TimeoutError
					if assert.ErrorAs(t, err, &te, "the Transport's FirstByteTimeout still cuts the other calls") {
						assert.Equal(t, "first_byte", te.Phase)
						assert.Equal(t, 200*time.Millisecond, te.Limit)
					}
				})
			}
			wg.Wait()

			_, err := callWith(t, tr, longPoll, srv.URL+"/stall")
			var te *transport.TimeoutError
			if assert.ErrorAs(t, err, &te, "StallTimeout still applies") {
				assert.Equal(t, "stall", te.Phase)
			}
			code, err := callWith(t, tr, &transport.CallOptions{FirstByteTimeout: -1, StallTimeout: -1}, srv.URL+"/stall")
			assert.NoError(t, err)
			assert.Equal(t, http.StatusOK, code)
		})
	}
}

// TestCallOptionsShorterLimits: a call's own FirstByteTimeout and
// StallTimeout, shorter than the Transport's defaults, and turned on where
// the Transport has them off, cut that call (and say so in the error).
func TestCallOptionsShorterLimits(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			srv := startServer(t, h2, func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/hang" {
					<-r.Context().Done()
					return
				}
				w.Header().Set("Content-Length", "4")
				fmt.Fprint(w, "da")
				w.(http.Flusher).Flush()
				<-r.Context().Done()
			})
			for _, tr := range []*transport.Transport{
				{TLSClientConfig: trustTLS(srv), Retry: &retry.Policy{MaxAttempts: 1}},
				{TLSClientConfig: trustTLS(srv), Retry: &retry.Policy{MaxAttempts: 1},
					FirstByteTimeout: -1, StallTimeout: -1, MaxConnLifetime: -1},
			} {
				o := &transport.CallOptions{FirstByteTimeout: 150 * time.Millisecond, StallTimeout: 150 * time.Millisecond}
				for path, phase := range map[string]string{"/hang": "first_byte", "/body": "stall"} {
					start := time.Now()
					_, err := callWith(t, tr, o, srv.URL+path)
					var te *transport.TimeoutError
					if assert.ErrorAs(t, err, &te, path) {
						assert.Equal(t, phase, te.Phase)
						assert.Equal(t, 150*time.Millisecond, te.Limit)
					}
					assert.Less(t, time.Since(start), 3*time.Second, "cut at the call's limit, not the Transport's 15s/30s or never")
				}
				tr.CloseIdleConnections()
			}
		})
	}
}

// TestCallOptionsHedge: HedgeDelay -1 turns the Transport's hedging off for
// a call; a positive one hedges a call on a Transport that does not.
func TestCallOptionsHedge(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			var mu sync.Mutex
			hits := map[string]int{}
			srv := startServer(t, h2, func(w http.ResponseWriter, r *http.Request) {
				mu.Lock()
				hits[r.URL.Path]++
				n := hits[r.URL.Path]
				mu.Unlock()
				if n == 1 {
					sleepCtx(r.Context(), 400*time.Millisecond) // slow first try
				}
				fmt.Fprint(w, "ok")
			})
			hedging := &transport.Transport{TLSClientConfig: trustTLS(srv), HedgeDelay: 50 * time.Millisecond}
			plain := &transport.Transport{TLSClientConfig: trustTLS(srv)}
			defer hedging.CloseIdleConnections()
			defer plain.CloseIdleConnections()
			var wg sync.WaitGroup
			wg.Go(func() {
				_, err := callWith(t, hedging, &transport.CallOptions{HedgeDelay: -1}, srv.URL+"/nohedge")
				assert.NoError(t, err)
			})
			wg.Go(func() {
				_, err := callWith(t, hedging, nil, srv.URL+"/default")
				assert.NoError(t, err)
			})
			wg.Go(func() {
				_, err := callWith(t, plain, &transport.CallOptions{HedgeDelay: 50 * time.Millisecond}, srv.URL+"/hedge")
				assert.NoError(t, err)
			})
			wg.Wait()
			// A hedge that takes over 50ms to answer (a loaded machine)
			// is followed by another: at least 2 where a hedge fired.
			assert.Equal(t, 1, hits["/nohedge"], "no hedge for this call")
			assert.GreaterOrEqual(t, hits["/default"], 2, "the Transport's hedge")
			assert.GreaterOrEqual(t, hits["/hedge"], 2, "the call's hedge")
		})
	}
}

// TestCallOptionsMerge: nested options merge, the inner non-zero fields
// win; a context without options gives the zero value.
func TestCallOptionsMerge(t *testing.T) {
	assert.Equal(t, transport.CallOptions{}, transport.CallOptionsFrom(context.Background()))
	p1, p2 := &retry.Policy{MaxAttempts: 1}, &retry.Policy{MaxAttempts: 2}
	outer := transport.WithCallOptions(context.Background(), transport.CallOptions{
		Retry: p1, FirstByteTimeout: time.Second, StallTimeout: -1})
	inner := transport.WithCallOptions(outer, transport.CallOptions{Retry: p2, HedgeDelay: -1, StallTimeout: 2 * time.Second})
	assert.Equal(t, transport.CallOptions{Retry: p2, FirstByteTimeout: time.Second, StallTimeout: 2 * time.Second, HedgeDelay: -1},
		transport.CallOptionsFrom(inner))
	assert.Equal(t, transport.CallOptions{Retry: p1, FirstByteTimeout: time.Second, StallTimeout: -1},
		transport.CallOptionsFrom(outer), "the outer context is unchanged")
}

// TestCallOptionsAttemptTimeout: a call's policy's AttemptTimeout bounds
// its attempts.
func TestCallOptionsAttemptTimeout(t *testing.T) {
	srv := startServer(t, true, func(w http.ResponseWriter, r *http.Request) { <-r.Context().Done() })
	tr := &transport.Transport{TLSClientConfig: trustTLS(srv)}
	defer tr.CloseIdleConnections()
	start := time.Now()
	_, err := callWith(t, tr, &transport.CallOptions{Retry: &retry.Policy{MaxAttempts: 2, AttemptTimeout: 100 * time.Millisecond,
		InitialInterval: time.Millisecond}}, srv.URL)
	var te *transport.TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "attempt", te.Phase)
	assert.Equal(t, 100*time.Millisecond, te.Limit)
	assert.True(t, errors.Is(err, context.DeadlineExceeded))
	assert.Less(t, time.Since(start), 3*time.Second)
}

// TestCallOptionsLongPollFreshConn: a long poll on a conn dialled for it
// is not cut by the Dialer's first-byte watch either.
func TestCallOptionsLongPollFreshConn(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			srv := startServer(t, h2, func(w http.ResponseWriter, r *http.Request) {
				if sleepCtx(r.Context(), 500*time.Millisecond) {
					fmt.Fprint(w, "news")
				}
			})
			tr := &transport.Transport{TLSClientConfig: trustTLS(srv), FirstByteTimeout: 100 * time.Millisecond,
				Dialer: &dial.Dialer{FirstByteTimeout: 100 * time.Millisecond}, Retry: &retry.Policy{MaxAttempts: 1}}
			defer tr.CloseIdleConnections()
			code, err := callWith(t, tr, &transport.CallOptions{FirstByteTimeout: -1}, srv.URL)
			require.NoError(t, err)
			assert.Equal(t, http.StatusOK, code)
		})
	}
}
