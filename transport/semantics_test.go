package transport_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
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

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// fastRetry is a policy with short waits, so that retry tests take
// milliseconds.
func fastRetry() *retry.Policy {
	return &retry.Policy{InitialInterval: time.Millisecond, MaxInterval: 5 * time.Millisecond}
}

// hangUp closes the request's conn without answering: the request was
// written and read, and no answer comes.
func hangUp(w http.ResponseWriter) {
	c, _, err := http.NewResponseController(w).Hijack()
	if err == nil {
		c.Close()
	}
}

func newReq(t *testing.T, method, u string, body string) *http.Request {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	req, err := http.NewRequestWithContext(t.Context(), method, u, r)
	require.NoError(t, err)
	return req
}

// TestPostNotResentAfterWritten: a POST whose conn dies after the request
// was written is not retried (the server counts one) unless it carries an
// Idempotency-Key; a GET is.
func TestPostNotResentAfterWritten(t *testing.T) {
	cases := []struct {
		name    string
		method  string
		key     bool
		wantOK  bool
		wantHit int32
	}{
		{"POST", http.MethodPost, false, false, 1},
		{"POST with Idempotency-Key", http.MethodPost, true, true, 2},
		{"GET", http.MethodGet, false, true, 2},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, _ = io.ReadAll(r.Body)
				if hits.Add(1) == 1 {
					hangUp(w)
					return
				}
				_, _ = io.WriteString(w, "ok")
			}))
			defer srv.Close()
			tr := &transport.Transport{Retry: fastRetry()}
			defer tr.CloseIdleConnections()
			req := newReq(t, tc.method, srv.URL, "payload")
			if tc.key {
				req.Header.Set("Idempotency-Key", "k-1")
			}
			resp, err := tr.RoundTrip(req)
			if tc.wantOK {
				require.NoError(t, err)
				resp.Body.Close()
			} else {
				require.Error(t, err)
			}
			assert.Equal(t, tc.wantHit, hits.Load(), "requests the server saw")
			assert.Empty(t, req.Header.Get("Connection"), "the caller's request is not modified")
		})
	}
}

// TestPutBodyIntactOnEveryAttempt: each retry of a PUT sends the whole body
// again (from GetBody), and the caller's body is closed once.
func TestPutBodyIntactOnEveryAttempt(t *testing.T) {
	var mu sync.Mutex
	var bodies []string
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		mu.Lock()
		bodies = append(bodies, string(b))
		n := len(bodies)
		mu.Unlock()
		if n < 3 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "stored")
	}))
	defer srv.Close()
	tr := &transport.Transport{Retry: fastRetry()}
	defer tr.CloseIdleConnections()
	payload := strings.Repeat("0123456789", 5000)
	req := newReq(t, http.MethodPut, srv.URL, payload)
	cb := &closeCounter{ReadCloser: req.Body}
	req.Body = cb
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, http.StatusOK, resp.StatusCode)
	assert.Equal(t, []string{payload, payload, payload}, bodies)
	assert.EqualValues(t, 1, cb.closed.Load(), "the caller's body is closed exactly once")
}

type closeCounter struct {
	io.ReadCloser
	closed atomic.Int32
}

func (c *closeCounter) Close() error { c.closed.Add(1); return c.ReadCloser.Close() }

// TestBodyWithoutGetBodySentOnce: a body that cannot be replayed is sent
// once, whatever the method: a 503 comes back as it is.
func TestBodyWithoutGetBodySentOnce(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		hits.Add(1)
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	tr := &transport.Transport{Retry: fastRetry()}
	defer tr.CloseIdleConnections()
	req := newReq(t, http.MethodPut, srv.URL, "")
	req.Body = io.NopCloser(strings.NewReader("one-shot"))
	req.GetBody = nil
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.EqualValues(t, 1, hits.Load())
}

// TestRetryAfter: a 503 with Retry-After: 1 is retried after about a
// second (seconds and HTTP-date forms); Retry-After: 3600 is beyond
// MaxRetryAfter and the 503 comes back at once.
func TestRetryAfter(t *testing.T) {
	cases := []struct {
		name      string
		value     func() string
		wantCode  int
		wantHits  int32
		min, max_ time.Duration
	}{
		{"seconds", func() string { return "1" }, 200, 2, 900 * time.Millisecond, 5 * time.Second},
		{"HTTP-date", func() string { return time.Now().Add(2 * time.Second).UTC().Format(http.TimeFormat) }, 200, 2, 900 * time.Millisecond, 5 * time.Second},
		{"beyond MaxRetryAfter", func() string { return "3600" }, 503, 1, 0, time.Second},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if hits.Add(1) == 1 {
					w.Header().Set("Retry-After", tc.value())
					w.WriteHeader(http.StatusServiceUnavailable)
					_, _ = io.WriteString(w, "busy")
					return
				}
				_, _ = io.WriteString(w, "ok")
			}))
			defer srv.Close()
			tr := &transport.Transport{Retry: fastRetry()}
			defer tr.CloseIdleConnections()
			start := time.Now()
			resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
			elapsed := time.Since(start)
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, tc.wantCode, resp.StatusCode)
			assert.Equal(t, tc.wantHits, hits.Load())
			assert.GreaterOrEqual(t, elapsed, tc.min)
			assert.Less(t, elapsed, tc.max_)
			if tc.wantCode == 503 {
				assert.Equal(t, "busy", string(b), "the returned answer is intact")
			}
		})
	}
}

// stallHandler writes half a body, flushes it, and then holds until the
// client goes away.
func stallHandler(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Content-Length", "20")
	_, _ = io.WriteString(w, "0123456789")
	http.NewResponseController(w).Flush()
	<-r.Context().Done()
}

// TestStall: a body that stalls half-way fails within StallTimeout plus
// slack with a *TimeoutError that says "stall", on HTTP/1.1 and HTTP/2.
func TestStall(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		srv, cfg := tlsServer(t, h2, http.HandlerFunc(stallHandler))
		tr := &transport.Transport{TLSClientConfig: cfg, StallTimeout: 300 * time.Millisecond}
		resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
		require.NoError(t, err)
		start := time.Now()
		b, err := io.ReadAll(resp.Body)
		elapsed := time.Since(start)
		resp.Body.Close()
		assert.Equal(t, "0123456789", string(b))
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te, "h2=%v: %v", h2, err)
		assert.Equal(t, "stall", te.Phase)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		var ne net.Error
		require.ErrorAs(t, err, &ne)
		assert.True(t, ne.Timeout())
		assert.Contains(t, err.Error(), "stall")
		assert.Less(t, elapsed, 3*time.Second)
		assert.GreaterOrEqual(t, elapsed, 250*time.Millisecond)
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
	}
}

// TestSlowConsumerIsNotAStall: the body arrives steadily and the consumer
// pauses between reads for longer than StallTimeout; only time inside Read
// counts, so nothing fails.
func TestSlowConsumerIsNotAStall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for range 4 {
			_, _ = io.WriteString(w, strings.Repeat("x", 100))
			http.NewResponseController(w).Flush()
		}
	}))
	defer srv.Close()
	tr := &transport.Transport{StallTimeout: 100 * time.Millisecond}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err)
	defer resp.Body.Close()
	buf := make([]byte, 100)
	total := 0
	for {
		n, err := resp.Body.Read(buf)
		total += n
		if err == io.EOF {
			break
		}
		require.NoError(t, err)
		time.Sleep(200 * time.Millisecond) // the consumer is slow, not the server
	}
	assert.Equal(t, 400, total)
}

// TestFirstByteTimeout: a server that reads the request and never answers
// fails each attempt after FirstByteTimeout with a *TimeoutError
// ("first_byte") on HTTP/1.1 and HTTP/2; a GET is retried.
func TestFirstByteTimeout(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		var hits atomic.Int32
		srv, cfg := tlsServer(t, h2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			hits.Add(1)
			<-r.Context().Done()
		}))
		tr := &transport.Transport{TLSClientConfig: cfg, FirstByteTimeout: 200 * time.Millisecond, Retry: fastRetry()}
		start := time.Now()
		_, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
		elapsed := time.Since(start)
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te, "h2=%v: %v", h2, err)
		assert.Equal(t, "first_byte", te.Phase)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, retry.ErrExhausted)
		assert.EqualValues(t, 3, hits.Load(), "a GET is retried")
		assert.Less(t, elapsed, 5*time.Second)
		assert.NotContains(t, err.Error(), "?", "no query in errors")
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
	}
}

// TestMaxConnLifetime: under a steady stream of keep-alive requests, conns
// older than MaxConnLifetime stop being reused and close, on HTTP/1.1 and
// HTTP/2, and not a single request fails.
func TestMaxConnLifetime(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		var opened, closed atomic.Int32
		srv := httptest.NewUnstartedServer(http.HandlerFunc(hello))
		srv.EnableHTTP2 = h2
		srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
			switch s {
			case http.StateNew:
				opened.Add(1)
			case http.StateClosed:
				closed.Add(1)
			}
		}
		srv.StartTLS()
		cfg := trustTLS(srv)
		tr := &transport.Transport{TLSClientConfig: cfg, MaxConnLifetime: 200 * time.Millisecond}
		client := transport.NewClient(tr)
		deadline := time.Now().Add(1500 * time.Millisecond)
		var wg sync.WaitGroup
		var failed, ok atomic.Int32
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for time.Now().Before(deadline) {
					resp, err := client.Get(srv.URL)
					if err != nil {
						failed.Add(1)
						t.Log(err)
						continue
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					ok.Add(1)
				}
			}()
		}
		wg.Wait()
		assert.Zero(t, failed.Load(), "h2=%v: no request fails", h2)
		assert.Positive(t, ok.Load())
		assert.GreaterOrEqual(t, opened.Load(), int32(3), "h2=%v: conns were replaced (opened %d)", h2, opened.Load())
		assert.Positive(t, closed.Load(), "h2=%v: old conns were closed", h2)
		tr.CloseIdleConnections()
		srv.Close()
	}
}

func trustTLS(srv *httptest.Server) *tls.Config {
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return &tls.Config{RootCAs: pool}
}

// TestBadRequests: bad input gets a clear error, never a panic, and a nil
// *Transport behaves as the zero value.
func TestBadRequests(t *testing.T) {
	var tr *transport.Transport
	_, err := tr.RoundTrip(nil)
	assert.ErrorIs(t, err, transport.ErrBadRequest)
	_, err = tr.RoundTrip(&http.Request{Header: http.Header{}})
	assert.ErrorIs(t, err, transport.ErrBadRequest)
	_, err = tr.RoundTrip(&http.Request{URL: &url.URL{Scheme: "http", Host: "x"}})
	assert.ErrorIs(t, err, transport.ErrBadRequest, "nil header")
	_, err = tr.RoundTrip(newReq(t, http.MethodGet, "ftp://127.0.0.1/x", ""))
	assert.ErrorIs(t, err, transport.ErrBadRequest)
	_, err = tr.RoundTrip(newReq(t, http.MethodGet, "http:///x", ""))
	assert.ErrorIs(t, err, transport.ErrBadRequest)

	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err, "a nil *Transport works like the zero value")
	resp.Body.Close()
	tr.CloseIdleConnections()
}

// TestInvalidRetryPolicy: a Transport whose Retry policy is invalid
// fails every request with the policy's error, sends nothing, and closes
// the request's body.
func TestInvalidRetryPolicy(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) }))
	defer srv.Close()
	tr := &transport.Transport{Retry: &retry.Policy{Multiplier: 0.5}}
	defer tr.CloseIdleConnections()
	for range 2 {
		body := &closeCounter{ReadCloser: io.NopCloser(strings.NewReader("x"))}
		req := newReq(t, http.MethodPost, srv.URL, "")
		req.Body = body
		_, err := tr.RoundTrip(req)
		require.Error(t, err)
		assert.Contains(t, err.Error(), "Multiplier")
		assert.Equal(t, int32(1), body.closed.Load(), "the body is closed")
	}
	assert.Zero(t, hits.Load(), "nothing was sent")
}

// TestConnectProxyLimits: a CONNECT proxy that accepts the tunnel and then
// stalls the TLS handshake is bounded by the Dialer's TLSHandshakeTimeout;
// a working one carries the request.
func TestConnectProxyLimits(t *testing.T) {
	backend, cfg := tlsServer(t, true, http.HandlerFunc(hello))
	for _, stall := range []bool{true, false} {
		proxy := startConnectProxy(t, stall)
		tr := &transport.Transport{
			TLSClientConfig: cfg,
			Dialer:          &dial.Dialer{TLSHandshakeTimeout: 300 * time.Millisecond},
			Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: proxy}),
			Retry:           &retry.Policy{MaxAttempts: 1},
		}
		start := time.Now()
		resp, err := tr.RoundTrip(newReq(t, http.MethodGet, backend.URL, ""))
		if stall {
			require.Error(t, err)
			assert.Less(t, time.Since(start), 3*time.Second, "TLSHandshakeTimeout bounds the handshake through the proxy")
		} else {
			require.NoError(t, err)
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			assert.Equal(t, "hello HTTP/2.0", string(b), "h2 through the tunnel")
		}
		tr.CloseIdleConnections()
	}
}

// startConnectProxy is a minimal CONNECT proxy on loopback; with stall it
// answers the CONNECT and then holds the tunnel silent.
func startConnectProxy(t *testing.T, stall bool) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
				if stall {
					go func() { <-done; c.Close() }()
					_, _ = io.Copy(io.Discard, br)
					return
				}
				up, err := net.Dial("tcp", req.Host)
				if err != nil {
					return
				}
				defer up.Close()
				go func() { _, _ = io.Copy(up, br); up.Close() }()
				_, _ = io.Copy(c, up)
			}()
		}
	}()
	return ln.Addr().String()
}
