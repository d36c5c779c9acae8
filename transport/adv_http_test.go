package transport_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/transport"
)

// foreignServer records the Authorization values it receives.
type foreignServer struct {
	srv  *httptest.Server
	mu   sync.Mutex
	auth []string
}

func startForeign(t *testing.T, tls bool) *foreignServer {
	f := &foreignServer{}
	f.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		f.auth = append(f.auth, r.Header.Get("Authorization"))
		f.mu.Unlock()
		fmt.Fprint(w, "foreign")
	}))
	f.srv.Config.ErrorLog = quietLog()
	if tls {
		f.srv.StartTLS()
	} else {
		f.srv.Start()
	}
	t.Cleanup(f.srv.Close)
	return f
}

func (f *foreignServer) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.auth...)
}

// TestAdvRedirectDoesNotCarryCredentials: an http.Client that follows the
// API's redirect to another origin sends the Transport's credentials to
// the API only: net/http strips the caller's Authorization on a redirect to
// another host, and the Transport must not add its own back. A redirect
// within the origin keeps them; one that left the origin and came back
// does not get them again (the foreign hop chose where it goes).
func TestAdvRedirectDoesNotCarryCredentials(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			a := startAuthServer(t, h2)
			foreignTLS := startForeign(t, true)
			foreignPlain := startForeign(t, false)
			a.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
				switch r.URL.Path {
				case "/tls":
					http.Redirect(w, r, foreignTLS.srv.URL+"/x", http.StatusFound)
					return false
				case "/plain":
					http.Redirect(w, r, foreignPlain.srv.URL+"/x", http.StatusFound)
					return false
				case "/same":
					http.Redirect(w, r, "/", http.StatusFound)
					return false
				case "/bounce":
					// Through another origin and back to the API's.
					http.Redirect(w, r, foreignTLS.srv.URL+"/back", http.StatusFound)
					return false
				}
				return true
			})
			foreignTLS.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				foreignTLS.mu.Lock()
				foreignTLS.auth = append(foreignTLS.auth, r.Header.Get("Authorization"))
				foreignTLS.mu.Unlock()
				if r.URL.Path == "/back" {
					http.Redirect(w, r, a.srv.URL+"/", http.StatusFound)
					return
				}
				fmt.Fprint(w, "foreign")
			})
			tr := a.transport(t, transport.NewBearerCredentials(a.fetch))
			cfg := tr.TLSClientConfig.Clone()
			cfg.RootCAs.AddCert(foreignTLS.srv.Certificate())
			tr.TLSClientConfig = cfg
			client := transport.NewClient(tr)

			code, body := getBody(t, client, t.Context(), a.srv.URL+"/same")
			assert.Equal(t, http.StatusOK, code, "a redirect within the origin keeps the credentials")
			assert.Equal(t, "ok", body)

			code, body = getBody(t, client, t.Context(), a.srv.URL+"/tls")
			assert.Equal(t, http.StatusOK, code)
			assert.Equal(t, "foreign", body)
			code, _ = getBody(t, client, t.Context(), a.srv.URL+"/plain")
			assert.Equal(t, http.StatusOK, code)
			for _, v := range append(foreignTLS.seen(), foreignPlain.seen()...) {
				assert.Empty(t, v, "the token went to another origin")
			}

			before := a.rejected.Load()
			code, _ = getBody(t, client, t.Context(), a.srv.URL+"/bounce")
			assert.Equal(t, http.StatusUnauthorized, code, "back from a foreign hop: no credentials")
			assert.EqualValues(t, before+1, a.rejected.Load(), "and no Refresh and resend for it")
			for _, v := range foreignTLS.seen() {
				assert.Empty(t, v, "the token went to another origin")
			}
		})
	}
}

// TestAdvAuth401Shapes: the 401 rule holds for the shapes of call that
// mix it with hedging, Retry-After, a replayable body and a proxy.
func TestAdvAuth401Shapes(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2)+"/hedged both 401", func(t *testing.T) {
			// Every try waits, so the hedge starts, then is refused:
			// the 401 that wins makes one Refresh, the resend is hedged
			// too, its 401 is the answer.
			var hits atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				select {
				case <-time.After(100 * time.Millisecond):
				case <-r.Context().Done():
					return
				}
				w.Header().Set("Retry-After", "1")
				w.WriteHeader(http.StatusUnauthorized)
			}))
			srv.EnableHTTP2 = h2
			srv.Config.ErrorLog = quietLog()
			srv.StartTLS()
			defer srv.Close()
			creds := &countingCreds{}
			tr := &transport.Transport{TLSClientConfig: trustTLS(srv), Credentials: creds, HedgeDelay: 20 * time.Millisecond}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL, nil)
			start := time.Now()
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusUnauthorized, resp.StatusCode)
			assert.EqualValues(t, 1, creds.refreshed.Load(), "one Refresh per call")
			assert.LessOrEqual(t, hits.Load(), int32(6), "two attempts (the call's and the resend) of at most three tries (two hedges)")
			assert.LessOrEqual(t, hits.Load(), creds.applied.Load(), "every try sent was Apply'd (a hedge cut before its send is not sent)")
			assert.Less(t, time.Since(start), 900*time.Millisecond, "a 401's Retry-After is not waited for")
		})
		t.Run(protoName(h2)+"/POST GetBody resent whole", func(t *testing.T) {
			var bodies []string
			var mu sync.Mutex
			var hits atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				b, _ := io.ReadAll(r.Body)
				mu.Lock()
				bodies = append(bodies, string(b))
				mu.Unlock()
				if hits.Add(1) == 1 {
					w.WriteHeader(http.StatusUnauthorized)
					return
				}
				fmt.Fprint(w, "created")
			}))
			srv.EnableHTTP2 = h2
			srv.Config.ErrorLog = quietLog()
			srv.StartTLS()
			defer srv.Close()
			creds := &countingCreds{}
			tr := &transport.Transport{TLSClientConfig: trustTLS(srv), Credentials: creds}
			defer tr.CloseIdleConnections()
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL, stringsReader("payload-123"))
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			resp.Body.Close()
			assert.Equal(t, http.StatusOK, resp.StatusCode)
			assert.Equal(t, []string{"payload-123", "payload-123"}, bodies)
			assert.EqualValues(t, 1, creds.refreshed.Load())
		})
	}
	t.Run("407 from a proxy", func(t *testing.T) {
		var hits atomic.Int32
		proxy := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			w.Header().Set("Proxy-Authenticate", `Basic realm="p"`)
			w.WriteHeader(http.StatusProxyAuthRequired)
		}))
		defer proxy.Close()
		creds := &countingCreds{}
		pu, _ := url.Parse(proxy.URL)
		tr := &transport.Transport{Credentials: creds, Proxy: http.ProxyURL(pu)}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://127.0.0.1:9/x", nil)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		resp.Body.Close()
		assert.Equal(t, http.StatusProxyAuthRequired, resp.StatusCode)
		assert.Zero(t, creds.refreshed.Load(), "a proxy's 407 is not the server's 401")
		assert.EqualValues(t, 1, hits.Load())
	})
}

func stringsReader(s string) io.Reader { return strings.NewReader(s) }

// TestAdvBearerFetchErrorQuotingTokenRedacted: BearerCredentials' own
// fetch error that quotes the token the server rejected (an identity
// provider refusing to renew it: "token X revoked") reaches the caller,
// the span and the log with that token redacted, as an error of a
// Credentials of the caller's own does (TestAuthErrorsRedactCredentials).
func TestAdvBearerFetchErrorQuotingTokenRedacted(t *testing.T) {
	a := startAuthServer(t, false)
	var last atomic.Pointer[string]
	fetch := func(ctx context.Context) (string, time.Time, error) {
		if p := last.Load(); p != nil {
			return "", time.Time{}, fmt.Errorf("identity provider: refresh of %s refused", *p)
		}
		tok, exp, err := a.fetch(ctx)
		last.Store(&tok)
		return tok, exp, err
	}
	client := transport.NewClient(a.transport(t, transport.NewBearerCredentials(fetch)))
	code, _ := getBody(t, client, t.Context(), a.srv.URL)
	require.Equal(t, http.StatusOK, code)
	a.revoke()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL, nil)
	_, err := client.Do(req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "refresh of")
	assert.NotContains(t, err.Error(), "secret-token-1")
}

// TestAdvBearerTokenWithNewline: a token read from a file or an env var
// keeps its trailing newline by mistake; it is not a valid header value.
// The call neither retries a request net/http refuses to send each time
// nor leaks the token: the token is used trimmed (RFC 6750's b64token
// has no whitespace), and a token with a control byte inside is a fetch
// error, not cached.
func TestAdvBearerTokenWithNewline(t *testing.T) {
	a := startAuthServer(t, false)
	var fetches atomic.Int32
	bad := atomic.Bool{}
	fetch := func(ctx context.Context) (string, time.Time, error) {
		fetches.Add(1)
		if bad.Load() {
			return "secret-bad\r\nX-Injected: 1", time.Time{}, nil
		}
		tok, exp, err := a.fetch(ctx)
		return tok + "\n", exp, err
	}
	client := transport.NewClient(a.transport(t, transport.NewBearerCredentials(fetch)))
	code, body := getBody(t, client, t.Context(), a.srv.URL)
	assert.Equal(t, http.StatusOK, code, body)

	bad.Store(true)
	a.revoke()
	before := a.requests.Load()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL, nil)
	_, err := client.Do(req)
	require.Error(t, err)
	assert.Contains(t, err.Error(), "transport: credentials")
	assert.NotContains(t, err.Error(), "secret-bad")
	assert.Equal(t, before+1, a.requests.Load(), "the 401, then no send of the bad token")
	f := fetches.Load()
	_, err = client.Do(req.Clone(t.Context()))
	require.Error(t, err)
	assert.Equal(t, f+1, fetches.Load(), "a bad token is not cached")
}

type badApply struct{ applied atomic.Int32 }

func (b *badApply) Apply(req *http.Request) error {
	b.applied.Add(1)
	req.Header.Set("Authorization", "Bearer secret-xyz\n")
	return nil
}

func (b *badApply) Refresh(context.Context, *http.Request) error { return nil }

// TestAdvApplyLeavesBadHeader: a Credentials whose Apply sets a value
// net/http refuses to send fails the call once (ErrBadRequest), quoting
// no credential, instead of spending every attempt on the same refusal.
func TestAdvApplyLeavesBadHeader(t *testing.T) {
	a := startAuthServer(t, true)
	creds := &badApply{}
	client := transport.NewClient(a.transport(t, creds))
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL, nil)
	_, err := client.Do(req)
	require.Error(t, err)
	assert.ErrorIs(t, err, transport.ErrBadRequest)
	assert.Contains(t, err.Error(), "transport: credentials: apply")
	assert.NotContains(t, err.Error(), "secret-xyz")
	assert.EqualValues(t, 1, creds.applied.Load(), "not retried")
	assert.Zero(t, a.requests.Load())
}

// TestAdvCredentialsNeverInTelemetry: the token of BearerCredentials goes
// through success, a 401 and its resend, a refresh whose error quotes the
// rejected token, a hedge whose Apply waits for a fetch, and a redirect;
// no span (attributes, events, status), metric point or log record of the
// Transport's holds it.
func TestAdvCredentialsNeverInTelemetry(t *testing.T) {
	a := startAuthServer(t, true)
	a.setBefore(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == "/slow" {
			sleepCtx(r.Context(), 80*time.Millisecond)
		}
		return true
	})
	var failRenew atomic.Bool
	var last atomic.Pointer[string]
	fetch := func(ctx context.Context) (string, time.Time, error) {
		if p := last.Load(); p != nil && failRenew.Load() {
			return "", time.Time{}, fmt.Errorf("cannot renew %s", *p)
		}
		tok, exp, err := a.fetch(ctx)
		last.Store(&tok)
		return tok, exp, err
	}
	r := newRig(t)
	var logBuf syncBuffer
	tr := a.transport(t, transport.NewBearerCredentials(fetch))
	tr.TracerProvider, tr.MeterProvider, tr.Logger = r.tp, r.mp, newTestLogger(&logBuf)
	tr.HedgeDelay = 20 * time.Millisecond
	tr.Name = "adv"
	client := transport.NewClient(tr)

	code, _ := getBody(t, client, t.Context(), a.srv.URL+"/slow") // hedged
	require.Equal(t, http.StatusOK, code)
	a.revoke()
	code, _ = getBody(t, client, t.Context(), a.srv.URL+"/") // 401, refresh, resend
	require.Equal(t, http.StatusOK, code)
	failRenew.Store(true)
	a.revoke()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, a.srv.URL+"/slow", nil)
	_, err := client.Do(req)
	require.Error(t, err)

	var texts []string
	texts = append(texts, err.Error())
	for _, s := range r.spans.Ended() {
		texts = append(texts, spanText(s)...)
		texts = append(texts, s.Status().Description)
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	texts = append(texts, fmt.Sprintf("%+v", rm))
	texts = append(texts, logBuf.lines()...)
	require.Greater(t, len(r.spans.Ended()), 3)
	for _, txt := range texts {
		assert.NotContains(t, txt, "secret-token")
	}
}

// queryKeyCreds put an API key in the query, as many APIs take it.
type queryKeyCreds struct{ applied atomic.Int32 }

func (q *queryKeyCreds) Apply(req *http.Request) error {
	v := req.URL.Query()
	v.Add("key", fmt.Sprintf("api-key-%d", q.applied.Add(1)))
	req.URL.RawQuery = v.Encode()
	return nil
}

func (q *queryKeyCreds) Refresh(context.Context, *http.Request) error { return nil }

// TestAdvApplyQueryCredential: Credentials that sign the URL (an API key
// in the query) change only the try's own copy: the caller's request is
// untouched, the tries of a hedged call (run -race) do not share one URL,
// and each try carries one key, not the keys of the tries before it.
func TestAdvApplyQueryCredential(t *testing.T) {
	var mu sync.Mutex
	var keys [][]string
	var hits atomic.Int32
	srv := startServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		keys = append(keys, r.URL.Query()["key"])
		mu.Unlock()
		if hits.Add(1) == 1 {
			sleepCtx(r.Context(), 300*time.Millisecond)
		}
		fmt.Fprint(w, "ok")
	})
	creds := &queryKeyCreds{}
	tr := &transport.Transport{TLSClientConfig: trustTLS(srv), Credentials: creds, HedgeDelay: 20 * time.Millisecond}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/v1?page=2", nil)
	for range 3 {
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	assert.Equal(t, "page=2", req.URL.RawQuery, "the caller's URL is never modified")
	mu.Lock()
	defer mu.Unlock()
	for _, k := range keys {
		assert.Len(t, k, 1, "one key per try: %v", k)
	}
}
