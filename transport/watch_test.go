package transport_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// callerContexts are the caller's contexts a try's own context descends
// from: one that never ends, one that can, and one that carries a trace of
// the caller's (composed with the try's own hooks).
var callerContexts = []struct {
	name string
	ctx  func(t *testing.T) context.Context
}{
	{"caller context never ends", func(*testing.T) context.Context { return context.Background() }},
	{"caller context can end", func(t *testing.T) context.Context { return t.Context() }},
	{"caller context with a trace", func(t *testing.T) context.Context {
		return httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(httptrace.GotConnInfo) {}})
	}},
}

// protocols are the ways a try reaches its server: plain HTTP/1.1 (with
// the environment's proxies, or a Proxy function of the user's), HTTPS
// over HTTP/1.1 and HTTP/2. The watch cuts each through the try's own
// context.
var protocols = []protocol{
	{name: "http"},
	{name: "http, user's proxy", userProxy: true},
	{name: "https", tls: true},
	{name: "h2", tls: true, h2: true},
}

type protocol struct {
	name               string
	tls, h2, userProxy bool
}

// serve starts a server of the protocol for the test, and returns it with
// a Transport that reaches it (fields may still be set before first use).
func (p protocol) serve(t *testing.T, h http.Handler) (*httptest.Server, *transport.Transport) {
	t.Helper()
	tr := &transport.Transport{}
	if p.userProxy {
		tr.Proxy = func(*http.Request) (*url.URL, error) { return nil, nil }
	}
	if !p.tls {
		srv := httptest.NewServer(h)
		t.Cleanup(srv.Close)
		return srv, tr
	}
	srv, cfg := tlsServer(t, p.h2, h)
	tr.TLSClientConfig = cfg
	return srv, tr
}

// TestFirstByteTimeoutEveryContext: a server that reads the request and
// never answers fails each attempt after FirstByteTimeout with a
// *TimeoutError ("first_byte"), on HTTP/1.1 and HTTP/2, with and without
// TLS, whatever the caller's context; the GET is retried, and the
// Transport then serves an answering server normally.
func TestFirstByteTimeoutEveryContext(t *testing.T) {
	for _, cc := range callerContexts {
		for _, p := range protocols {
			var hits atomic.Int32
			var hang atomic.Bool
			hang.Store(true)
			srv, tr := p.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				if hang.Load() {
					<-r.Context().Done()
					return
				}
				hello(w, r)
			}))
			tr.FirstByteTimeout, tr.Retry = 200*time.Millisecond, fastRetry()
			req, err := http.NewRequestWithContext(cc.ctx(t), http.MethodGet, srv.URL+"/?token=SECRET", nil)
			require.NoError(t, err)
			start := time.Now()
			_, err = tr.RoundTrip(req)
			elapsed := time.Since(start)
			var te *transport.TimeoutError
			require.ErrorAs(t, err, &te, "%s, %s: %v", cc.name, p.name, err)
			assert.Equal(t, "first_byte", te.Phase)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.ErrorIs(t, err, retry.ErrExhausted)
			assert.EqualValues(t, 3, hits.Load(), "a GET is retried")
			assert.GreaterOrEqual(t, elapsed, 3*200*time.Millisecond, "no wait is cut before the limit")
			assert.Less(t, elapsed, 5*time.Second)
			assert.NotContains(t, err.Error(), "SECRET")

			hang.Store(false)
			for range 3 {
				resp, err := tr.RoundTrip(req.Clone(cc.ctx(t)))
				require.NoError(t, err, "%s, %s: after a cut", cc.name, p.name)
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				assert.True(t, strings.HasPrefix(string(b), "hello HTTP/"), string(b))
			}
			tr.CloseIdleConnections()
			srv.CloseClientConnections()
		}
	}
}

// slowBody gives its bytes one at a time, a pause before each.
type slowBody struct {
	left  int
	pause time.Duration
}

func (b *slowBody) Read(p []byte) (int, error) {
	if b.left == 0 {
		return 0, io.EOF
	}
	time.Sleep(b.pause)
	b.left--
	p[0] = 'x'
	return 1, nil
}

// TestFirstByteTimeoutCountsFromWritten: FirstByteTimeout counts from the
// request written, not from its start: an upload that takes three times
// the limit, answered at once when it ends, succeeds (every protocol and
// caller context).
func TestFirstByteTimeoutCountsFromWritten(t *testing.T) {
	for _, cc := range callerContexts {
		for _, p := range protocols {
			srv, tr := p.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := io.Copy(io.Discard, r.Body)
				_, _ = io.WriteString(w, strings.Repeat("y", int(n)))
			}))
			tr.FirstByteTimeout, tr.Retry = 300*time.Millisecond, &retry.Policy{MaxAttempts: 1}
			req, err := http.NewRequestWithContext(cc.ctx(t), http.MethodPut, srv.URL, &slowBody{left: 9, pause: 100 * time.Millisecond})
			require.NoError(t, err)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err, "%s, %s: a slow upload is not a slow answer", cc.name, p.name)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.NoError(t, err)
			assert.Equal(t, "yyyyyyyyy", string(b))
			tr.CloseIdleConnections()
		}
	}
}

// TestFirstByteTimeoutOwnCancel: a try that something else can cancel
// too — a hedged attempt's tries, a try under the policy's AttemptTimeout
// — is cut by the watch on every protocol: when the first try and its
// hedges all hang, each is cut after FirstByteTimeout and the attempt
// fails with a first_byte timeout.
func TestFirstByteTimeoutOwnCancel(t *testing.T) {
	for _, p := range protocols {
		for _, mode := range []string{"hedged", "attempt-timeout"} {
			var hits atomic.Int32
			srv, tr := p.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				neverAnswer(w, r)
			}))
			tr.FirstByteTimeout = 300 * time.Millisecond
			tr.Retry = &retry.Policy{MaxAttempts: 1}
			if mode == "hedged" {
				tr.HedgeDelay = 50 * time.Millisecond
			} else {
				tr.Retry.AttemptTimeout = 5 * time.Second
			}
			// The caller's deadline ends the test if the watch cannot cut.
			ctx, cancel := context.WithTimeout(context.Background(), 4*time.Second)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			require.NoError(t, err)
			start := time.Now()
			_, err = tr.RoundTrip(req)
			elapsed := time.Since(start)
			cancel()
			var te *transport.TimeoutError
			require.ErrorAs(t, err, &te, "%s, %s: %v", p.name, mode, err)
			assert.Equal(t, "first_byte", te.Phase, "%s, %s", p.name, mode)
			assert.GreaterOrEqual(t, elapsed, 300*time.Millisecond, "%s, %s: not cut before the limit", p.name, mode)
			assert.Less(t, elapsed, 3*time.Second, "%s, %s: cut by the watch, not the attempt's 5s or a hang", p.name, mode)
			if mode == "hedged" {
				assert.GreaterOrEqual(t, hits.Load(), int32(2), "%s: hedged", p.name)
			}
			tr.CloseIdleConnections()
			srv.CloseClientConnections()
		}
	}
}

// TestResponseRequestIsCallers: resp.Request is the request the caller
// gave, with its context, whatever the try sent.
func TestResponseRequestIsCallers(t *testing.T) {
	srv, cfg := tlsServer(t, true, http.HandlerFunc(hello))
	for _, tc := range []struct {
		name string
		tr   *transport.Transport
	}{
		{"zero", &transport.Transport{TLSClientConfig: cfg}},
		{"hedged", &transport.Transport{TLSClientConfig: cfg, HedgeDelay: time.Second}},
		{"lifetime", &transport.Transport{TLSClientConfig: cfg, MaxConnLifetime: time.Nanosecond}},
	} {
		for _, cc := range callerContexts {
			ctx := cc.ctx(t)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			require.NoError(t, err)
			resp, err := tc.tr.RoundTrip(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			assert.Same(t, req, resp.Request, "%s, %s", tc.name, cc.name)
			assert.Equal(t, ctx, resp.Request.Context())
		}
		tc.tr.CloseIdleConnections()
	}
}

// TestCallersTraceKept: the caller's own httptrace hooks are called as
// without lifeline, whatever its context, next to the watch's.
func TestCallersTraceKept(t *testing.T) {
	srv, cfg := tlsServer(t, true, http.HandlerFunc(hello))
	tr := &transport.Transport{TLSClientConfig: cfg}
	defer tr.CloseIdleConnections()
	for _, cc := range callerContexts {
		var got, wrote atomic.Int32
		ctx := httptrace.WithClientTrace(cc.ctx(t), &httptrace.ClientTrace{
			GotConn:      func(httptrace.GotConnInfo) { got.Add(1) },
			WroteRequest: func(httptrace.WroteRequestInfo) { wrote.Add(1) },
		})
		for range 3 {
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
			require.NoError(t, err)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			_, _ = io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		assert.EqualValues(t, 3, got.Load(), cc.name)
		assert.EqualValues(t, 3, wrote.Load(), cc.name)
	}
}

// neverAnswer holds the request until the client goes away and then drops
// the conn (or, on HTTP/2, the stream) without an answer. Returning would
// answer 200, and over TLS that answer can reach the client that gave up:
// net/http's cancel sends close_notify, which ends the handler, before it
// closes the conn, and a response that comes in between is returned, with
// no error, as net/http returns a response that races a cancel.
func neverAnswer(w http.ResponseWriter, r *http.Request) {
	<-r.Context().Done()
	panic(http.ErrAbortHandler)
}

// TestCallerCancelWhileWaiting: the caller's cancel ends a wait for
// headers with context.Canceled, not a timeout of the Transport's.
func TestCallerCancelWhileWaiting(t *testing.T) {
	for _, p := range protocols {
		srv, tr := p.serve(t, http.HandlerFunc(neverAnswer))
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		start := time.Now()
		_, err = tr.RoundTrip(req)
		require.ErrorIs(t, err, context.Canceled, p.name)
		var te *transport.TimeoutError
		assert.NotErrorAs(t, err, &te)
		assert.Less(t, time.Since(start), 5*time.Second)
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
	}
}

// TestCallerDeadlineWhileWaiting: the caller's deadline ends a wait for
// headers, and a body read, with context.DeadlineExceeded, as without
// lifeline.
func TestCallerDeadlineWhileWaiting(t *testing.T) {
	for _, p := range protocols {
		srv, tr := p.serve(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/body" {
				w.Header().Set("Content-Length", "10")
				_, _ = io.WriteString(w, "12345")
				http.NewResponseController(w).Flush()
			}
			neverAnswer(w, r)
		}))
		tr.Retry = &retry.Policy{MaxAttempts: 1}
		for _, path := range []string{"/", "/body"} {
			ctx, cancel := context.WithTimeout(context.Background(), 150*time.Millisecond)
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
			require.NoError(t, err)
			start := time.Now()
			resp, err := tr.RoundTrip(req)
			if err == nil {
				_, err = io.ReadAll(resp.Body)
				resp.Body.Close()
			}
			cancel()
			require.ErrorIs(t, err, context.DeadlineExceeded, "%s %s", p.name, path)
			var te *transport.TimeoutError
			assert.NotErrorAs(t, err, &te, "the caller's deadline, not the Transport's")
			assert.Less(t, time.Since(start), 5*time.Second)
		}
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
	}
}
