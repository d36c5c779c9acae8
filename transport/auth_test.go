package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

const authRefreshes = "lifeline.http.auth.refreshes"

// authServer is an API and its identity provider: fetch issues a new
// token, which becomes the only one the API accepts; revoke makes the API
// reject every token until the next fetch.
type authServer struct {
	srv      *httptest.Server
	valid    atomic.Pointer[string]
	fetches  atomic.Int32
	requests atomic.Int32
	rejected atomic.Int32
	seen     sync.Map // Authorization values the API received
	// before, when set, runs in the handler before the token is checked.
	before atomic.Pointer[func(w http.ResponseWriter, r *http.Request) bool]
}

func (a *authServer) setBefore(f func(w http.ResponseWriter, r *http.Request) bool) {
	a.before.Store(&f)
}

func startAuthServer(t *testing.T, h2 bool) *authServer {
	a := &authServer{}
	a.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.requests.Add(1)
		got := r.Header.Get("Authorization")
		a.seen.Store(got, true)
		if f := a.before.Load(); f != nil && !(*f)(w, r) {
			return
		}
		if v := a.valid.Load(); v == nil || got != "Bearer "+*v {
			a.rejected.Add(1)
			w.WriteHeader(http.StatusUnauthorized)
			fmt.Fprint(w, "token rejected")
			return
		}
		fmt.Fprint(w, "ok")
	}))
	a.srv.EnableHTTP2 = h2
	a.srv.Config.ErrorLog = quietLog()
	a.srv.StartTLS()
	t.Cleanup(a.srv.Close)
	return a
}

// fetch is the identity provider: a fresh token each time.
func (a *authServer) fetch(ctx context.Context) (string, time.Time, error) {
	n := a.fetches.Add(1)
	tok := fmt.Sprintf("secret-token-%d", n)
	a.valid.Store(&tok)
	return tok, time.Time{}, nil
}

func (a *authServer) revoke() { a.valid.Store(nil) }

func (a *authServer) transport(t *testing.T, creds transport.Credentials) *transport.Transport {
	tr := &transport.Transport{TLSClientConfig: trustTLS(a.srv), Credentials: creds,
		Retry: &retry.Policy{InitialInterval: time.Millisecond}}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

func protoName(h2 bool) string {
	if h2 {
		return "h2"
	}
	return "h1"
}

func getBody(t *testing.T, client *http.Client, ctx context.Context, url string) (int, string) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	resp, err := client.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, string(b)
}

// TestAuthTokenExpiresMidRun: a token the server stops accepting in the
// middle of a run of calls costs one refresh and one resend; every call
// succeeds, the caller never sees the 401.
func TestAuthTokenExpiresMidRun(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			a := startAuthServer(t, h2)
			m := newMetrics(t)
			tr := a.transport(t, transport.NewBearerCredentials(a.fetch))
			tr.MeterProvider = m.mp
			client := transport.NewClient(tr)
			for i := range 10 {
				if i == 5 {
					a.revoke()
				}
				code, body := getBody(t, client, t.Context(), a.srv.URL)
				require.Equal(t, http.StatusOK, code, "call %d: %s", i, body)
			}
			assert.EqualValues(t, 2, a.fetches.Load(), "the first use and one refresh")
			assert.EqualValues(t, 1, a.rejected.Load(), "one 401, answered by the resend")
			assert.EqualValues(t, 11, a.requests.Load())
			assert.EqualValues(t, 1, m.sum(t, authRefreshes, attribute.String("lifeline.outcome", "resent")))
		})
	}
}

// TestAuthSecond401IsTheAnswer: a server that rejects every token gets
// one resend, and its second 401 is the call's answer, body readable.
func TestAuthSecond401IsTheAnswer(t *testing.T) {
	a := startAuthServer(t, false)
	var fetches atomic.Int32
	creds := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
		return fmt.Sprintf("never-good-%d", fetches.Add(1)), time.Time{}, nil
	})
	client := transport.NewClient(a.transport(t, creds))
	code, body := getBody(t, client, t.Context(), a.srv.URL)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Equal(t, "token rejected", body)
	assert.EqualValues(t, 2, a.requests.Load(), "one resend per call, never a loop")
	assert.EqualValues(t, 2, fetches.Load())
}

// TestAuthConcurrentRejectionsOneFetch: many calls rejected at the same
// moment share one token fetch, and all succeed.
func TestAuthConcurrentRejectionsOneFetch(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			const n = 20
			a := startAuthServer(t, h2)
			slowFetch := func(ctx context.Context) (string, time.Time, error) {
				select {
				case <-time.After(50 * time.Millisecond): // the identity provider's latency
				case <-ctx.Done():
					return "", time.Time{}, ctx.Err()
				}
				return a.fetch(ctx)
			}
			client := transport.NewClient(a.transport(t, transport.NewBearerCredentials(slowFetch)))
			code, _ := getBody(t, client, t.Context(), a.srv.URL) // the first token
			require.Equal(t, http.StatusOK, code)

			// All n requests reach the server before any is rejected.
			var arrived sync.WaitGroup
			arrived.Add(n)
			var gate atomic.Bool
			gate.Store(true)
			a.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
				if gate.Load() && r.Header.Get("Authorization") == "Bearer secret-token-1" {
					arrived.Done()
					arrived.Wait()
				}
				return true
			})
			a.revoke()
			var wg sync.WaitGroup
			codes := make([]int, n)
			for i := range n {
				wg.Go(func() {
					req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL, nil)
					resp, err := client.Do(req)
					if !assert.NoError(t, err) {
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					codes[i] = resp.StatusCode
				})
			}
			wg.Wait()
			gate.Store(false)
			for i, c := range codes {
				assert.Equal(t, http.StatusOK, c, "call %d", i)
			}
			assert.EqualValues(t, 2, a.fetches.Load(), "n calls rejected at once: one fetch")
			assert.EqualValues(t, n, a.rejected.Load())
		})
	}
}

// TestAuthFetchHangsBoundedByDeadline: a token fetch that never returns
// ends with the call's deadline, at first use and on refresh, and its
// context is cancelled (goleak checks the fetch's goroutine ended).
func TestAuthFetchHangsBoundedByDeadline(t *testing.T) {
	a := startAuthServer(t, true)
	var hang atomic.Bool
	var ended atomic.Int32
	fetch := func(ctx context.Context) (string, time.Time, error) {
		if hang.Load() {
			<-ctx.Done()
			ended.Add(1)
			return "", time.Time{}, ctx.Err()
		}
		return a.fetch(ctx)
	}
	client := transport.NewClient(a.transport(t, transport.NewBearerCredentials(fetch)))

	call := func() (time.Duration, error) {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, a.srv.URL, nil)
		start := time.Now()
		resp, err := client.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		return time.Since(start), err
	}
	// At first use.
	hang.Store(true)
	took, err := call()
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Contains(t, err.Error(), "transport: credentials")
	assert.Less(t, took, 3*time.Second, "bounded by the call's 300ms deadline")
	assert.Zero(t, a.requests.Load(), "nothing sent without a token")

	// On refresh, after a 401.
	hang.Store(false)
	_, err = call()
	require.NoError(t, err)
	hang.Store(true)
	a.revoke()
	took, err = call()
	require.Error(t, err)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, took, 3*time.Second)
	require.Eventually(t, func() bool { return ended.Load() == 2 }, 5*time.Second, 5*time.Millisecond,
		"each hanging fetch's context was cancelled once nobody waited")
}

// TestAuthPipeBody401NotResent: a POST whose body cannot be replayed is
// never sent twice: its 401 is the answer (the credentials are refreshed
// for the next call).
func TestAuthPipeBody401NotResent(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			a := startAuthServer(t, h2)
			var bodies atomic.Int32
			a.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
				if b, _ := io.ReadAll(r.Body); string(b) == "payload" {
					bodies.Add(1)
				}
				return true
			})
			m := newMetrics(t)
			tr := a.transport(t, transport.NewBearerCredentials(a.fetch))
			tr.MeterProvider = m.mp
			code, _ := getBody(t, transport.NewClient(tr), t.Context(), a.srv.URL)
			require.Equal(t, http.StatusOK, code)
			a.revoke()

			pr, pw := io.Pipe()
			go func() {
				_, _ = pw.Write([]byte("payload"))
				_ = pw.Close()
			}()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, a.srv.URL, pr)
			require.Nil(t, req.GetBody)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.Equal(t, "token rejected", string(b))
			assert.EqualValues(t, 1, bodies.Load(), "the POST was sent once")
			assert.EqualValues(t, 2, a.requests.Load())
			assert.EqualValues(t, 2, a.fetches.Load(), "refreshed for the next call")
			assert.EqualValues(t, 1, m.sum(t, authRefreshes, attribute.String("lifeline.outcome", "not_resent")))

			// The next call carries the fresh token.
			code, _ = getBody(t, transport.NewClient(tr), t.Context(), a.srv.URL)
			assert.Equal(t, http.StatusOK, code)
			assert.EqualValues(t, 2, a.fetches.Load())
		})
	}
}

// countingCreds gives every Apply its own value, so that each try's
// credential can be told apart.
type countingCreds struct {
	applied   atomic.Int32
	refreshed atomic.Int32
}

func (c *countingCreds) Apply(req *http.Request) error {
	req.Header.Set("Authorization", fmt.Sprintf("Bearer try-%d", c.applied.Add(1)))
	return nil
}

func (c *countingCreds) Refresh(context.Context, *http.Request) error {
	c.refreshed.Add(1)
	return nil
}

// TestAuthHedgeEachTryApplied: a hedged GET's two tries each carry a
// credential of their own Apply, and the caller's request is untouched.
func TestAuthHedgeEachTryApplied(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			var hits atomic.Int32
			var seen sync.Map
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Store(r.Header.Get("Authorization"), true)
				if hits.Add(1) == 1 {
					<-r.Context().Done() // the first try hangs: the hedge answers
					return
				}
				fmt.Fprint(w, "ok")
			}))
			srv.EnableHTTP2 = h2
			srv.Config.ErrorLog = quietLog()
			srv.StartTLS()
			defer srv.Close()
			creds := &countingCreds{}
			tr := &transport.Transport{TLSClientConfig: trustTLS(srv), Credentials: creds, HedgeDelay: 50 * time.Millisecond}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			// Two tries on a quiet machine; a hedge that takes over 50ms
			// to answer (a loaded machine) is followed by another, which
			// may be cancelled before it is sent. Close waits for the
			// handlers, so that the counts are final.
			srv.Close()
			n := hits.Load()
			assert.GreaterOrEqual(t, n, int32(2), "the hedge reached the server")
			assert.GreaterOrEqual(t, creds.applied.Load(), n, "each try Apply'd")
			distinct := int32(0)
			seen.Range(func(k, _ any) bool {
				if strings.HasPrefix(k.(string), "Bearer try-") {
					distinct++
				}
				return true
			})
			_, first := seen.Load("Bearer try-1")
			assert.True(t, first, "the first try carried the first credential")
			assert.Equal(t, n, distinct, "each try carried its own credential")
			assert.Empty(t, req.Header.Get("Authorization"), "the caller's request is never modified")
			assert.Zero(t, creds.refreshed.Load())
		})
	}
}

// TestAuthRetriesEachApplied: a retried attempt (503) gets Apply again.
func TestAuthRetriesEachApplied(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		if r.Header.Get("Authorization") != "Bearer try-2" {
			w.WriteHeader(http.StatusTeapot)
		}
	}))
	defer srv.Close()
	creds := &countingCreds{}
	tr := &transport.Transport{Credentials: creds, Retry: &retry.Policy{InitialInterval: time.Millisecond}}
	defer tr.CloseIdleConnections()
	code, _ := getBody(t, transport.NewClient(tr), t.Context(), srv.URL)
	assert.Equal(t, http.StatusOK, code)
	assert.EqualValues(t, 2, creds.applied.Load())
}

// TestAuthFetchErrorSurfaces: an identity provider that fails ends the
// call with an error that says so and wraps the provider's error; it is
// asked once per call, not in a loop, and nothing is sent.
func TestAuthFetchErrorSurfaces(t *testing.T) {
	a := startAuthServer(t, false)
	errIdP := errors.New("identity provider: 500")
	var fetches atomic.Int32
	creds := transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
		fetches.Add(1)
		return "", time.Time{}, errIdP
	})
	tr := a.transport(t, creds)
	for i := 1; i <= 2; i++ {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL, nil)
		resp, err := tr.RoundTrip(req)
		require.Error(t, err)
		assert.Nil(t, resp)
		assert.ErrorIs(t, err, errIdP)
		assert.Equal(t, "transport: credentials: fetching a token: identity provider: 500", err.Error())
		assert.EqualValues(t, i, fetches.Load(), "one fetch per call, never retried")
	}
	assert.Zero(t, a.requests.Load())

	// A failing Refresh ends the call too, counted.
	good := true
	var n atomic.Int32
	creds2 := transport.NewBearerCredentials(func(ctx context.Context) (string, time.Time, error) {
		n.Add(1)
		if good {
			return a.fetch(ctx)
		}
		return "", time.Time{}, errIdP
	})
	m := newMetrics(t)
	tr2 := a.transport(t, creds2)
	tr2.MeterProvider = m.mp
	code, _ := getBody(t, transport.NewClient(tr2), t.Context(), a.srv.URL)
	require.Equal(t, http.StatusOK, code)
	good = false
	a.revoke()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL, nil)
	_, err := tr2.RoundTrip(req)
	require.ErrorIs(t, err, errIdP)
	assert.Equal(t, "transport: credentials: fetching a token: identity provider: 500", err.Error())
	assert.EqualValues(t, 2, n.Load())
	assert.EqualValues(t, 1, m.sum(t, authRefreshes, attribute.String("lifeline.outcome", "error")))
}

// TestAuthApplyErrorNotRetried: an Apply error ends the call at once.
func TestAuthApplyErrorNotRetried(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { hits.Add(1) }))
	defer srv.Close()
	var applied atomic.Int32
	tr := &transport.Transport{Credentials: applyFunc(func(*http.Request) error {
		applied.Add(1)
		return errors.New("signing key unavailable")
	})}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, srv.URL, nil)
	_, err := tr.RoundTrip(req)
	require.Error(t, err)
	assert.Equal(t, "transport: credentials: apply: signing key unavailable", err.Error())
	assert.EqualValues(t, 1, applied.Load())
	assert.Zero(t, hits.Load())
}

type applyFunc func(*http.Request) error

func (f applyFunc) Apply(req *http.Request) error                { return f(req) }
func (f applyFunc) Refresh(context.Context, *http.Request) error { return nil }

// TestAuthTokenNeverRecorded: with spans, metrics and a Logger on, and a
// run of 503s, 401s and a refresh, no token value reaches a span, a log
// record or an error text.
func TestAuthTokenNeverRecorded(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			a := startAuthServer(t, h2)
			var n atomic.Int32
			a.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
				if n.Add(1)%3 == 1 {
					w.WriteHeader(http.StatusServiceUnavailable)
					fmt.Fprint(w, r.Header.Get("Authorization")) // a server that echoes it
					return false
				}
				return true
			})
			spans := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
			defer func() { _ = tp.Shutdown(context.Background()) }()
			var logs syncBuffer
			m := newMetrics(t)
			tr := a.transport(t, transport.NewBearerCredentials(a.fetch))
			tr.TracerProvider, tr.MeterProvider, tr.Logger = tp, m.mp, newTestLogger(&logs)
			tr.Retry = &retry.Policy{InitialInterval: time.Millisecond, MaxAttempts: 2}
			client := transport.NewClient(tr)
			var errs []string
			for i := range 6 {
				if i%2 == 1 {
					a.revoke()
				}
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL+"/x?q=1", nil)
				resp, err := client.Do(req)
				if err != nil {
					errs = append(errs, err.Error())
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			require.Positive(t, a.rejected.Load(), "the run had 401s")
			require.GreaterOrEqual(t, a.fetches.Load(), int32(2), "and refreshes")
			var recorded strings.Builder
			for _, s := range spans.Ended() {
				fmt.Fprintln(&recorded, s.Name(), s.Attributes(), s.Status(), s.Events())
			}
			require.NotEmpty(t, spans.Ended())
			fmt.Fprintln(&recorded, logs.String(), errs)
			assert.NotContains(t, recorded.String(), "secret-token")
			assert.NotContains(t, recorded.String(), "Bearer")
		})
	}
}

// TestAuthResendOutsideRetryBudget: the resend after a refresh is not an
// attempt of the policy: it happens with MaxAttempts 1 and with an empty
// budget, and leaves the budget as it was.
func TestAuthResendOutsideRetryBudget(t *testing.T) {
	a := startAuthServer(t, true)
	budget := retry.NewBudget(0, 0)
	for budget.Withdraw() { // spend the starting burst
	}
	tr := a.transport(t, transport.NewBearerCredentials(a.fetch))
	tr.Retry = &retry.Policy{MaxAttempts: 1, Budget: budget}
	client := transport.NewClient(tr)
	code, _ := getBody(t, client, t.Context(), a.srv.URL)
	require.Equal(t, http.StatusOK, code)
	a.revoke()
	before := budget.Available()
	code, _ = getBody(t, client, t.Context(), a.srv.URL)
	assert.Equal(t, http.StatusOK, code, "resent after the refresh")
	assert.EqualValues(t, 1, a.rejected.Load())
	assert.InDelta(t, before, budget.Available(), 0.5, "the resend took nothing from the budget")
}

// TestAuthTokenEndpointOnSameTransport: the token is fetched through the
// very Transport whose Credentials need it, the fetch marked NoCredentials:
// no wait on itself, no Authorization on the token request, and the API
// call carries the token. Without NoCredentials the fetch's Apply waits
// for the fetch in flight (bounded only by the call's deadline).
func TestAuthTokenEndpointOnSameTransport(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			a := startAuthServer(t, h2)
			var tokenAuth atomic.Pointer[string]
			a.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
				if r.URL.Path != "/token" {
					return true
				}
				got := r.Header.Get("Authorization")
				tokenAuth.Store(&got)
				tok, _, _ := a.fetch(r.Context())
				fmt.Fprint(w, tok)
				return false
			})
			var client *http.Client
			creds := transport.NewBearerCredentials(func(ctx context.Context) (string, time.Time, error) {
				ctx = transport.WithCallOptions(ctx, transport.CallOptions{NoCredentials: true})
				req, err := http.NewRequestWithContext(ctx, http.MethodPost, a.srv.URL+"/token", nil)
				if err != nil {
					return "", time.Time{}, err
				}
				resp, err := client.Do(req)
				if err != nil {
					return "", time.Time{}, err
				}
				defer resp.Body.Close()
				b, err := io.ReadAll(resp.Body)
				return string(b), time.Now().Add(time.Hour), err
			})
			client = transport.NewClient(a.transport(t, creds))
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			start := time.Now()
			code, body := getBody(t, client, ctx, a.srv.URL+"/api")
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, "ok", body)
			assert.Less(t, time.Since(start), 2*time.Second, "the fetch waited on itself")
			require.NotNil(t, tokenAuth.Load())
			assert.Empty(t, *tokenAuth.Load(), "the token request carried credentials")
		})
	}
}

// echoCreds sets a token and fails Refresh (or Apply, when failApply) with
// an error that quotes the request's Authorization, as token code does.
type echoCreds struct{ failApply bool }

func (c echoCreds) Apply(req *http.Request) error {
	req.Header.Set("Authorization", "Bearer s3cr3t-token-from-apply")
	if c.failApply {
		return fmt.Errorf("token %q rejected by the signer", req.Header.Get("Authorization"))
	}
	return nil
}

func (c echoCreds) Refresh(_ context.Context, rejected *http.Request) error {
	return fmt.Errorf("cannot renew %s", rejected.Header.Get("Authorization"))
}

// TestAuthErrorsRedactCredentials: an Apply or Refresh error that quotes
// the credential reaches the caller with the credential redacted; the
// cause is still reachable.
func TestAuthErrorsRedactCredentials(t *testing.T) {
	a := startAuthServer(t, false)
	for _, failApply := range []bool{true, false} {
		client := transport.NewClient(a.transport(t, echoCreds{failApply: failApply}))
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL+"/api", nil)
		require.NoError(t, err)
		_, err = client.Do(req)
		require.Error(t, err)
		assert.NotContains(t, err.Error(), "s3cr3t-token-from-apply")
		assert.Contains(t, err.Error(), "[redacted]")
		var inner interface{ Unwrap() error }
		require.ErrorAs(t, err, &inner)
	}
}
