package transport_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestConnWaitAtCapIsBounded: a request waiting for a conn at
// MaxConnsPerHost, behind a healthy long response that holds the only
// conn, with no deadline of the caller's, fails with a *TimeoutError of
// phase "conn" after the Dialer's Timeout (the establishment bound), not
// never; the response holding the conn is not harmed.
func TestConnWaitAtCapIsBounded(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusOK)
		w.(http.Flusher).Flush()
		if r.URL.Path == "/hold" {
			<-release
		}
		_, _ = w.Write([]byte("end"))
	}))
	defer srv.Close()
	defer close(release)
	tr := &transport.Transport{
		MaxConnsPerHost: 1,
		Dialer:          &dial.Dialer{Timeout: 300 * time.Millisecond},
		Retry:           &retry.Policy{MaxAttempts: 1},
	}
	defer tr.CloseIdleConnections()

	req, _ := http.NewRequest(http.MethodGet, srv.URL+"/hold", nil)
	held, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer held.Body.Close()

	done := make(chan error, 1)
	go func() {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/next", nil)
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, "conn", te.Phase)
		assert.Equal(t, 300*time.Millisecond, te.Limit)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.NotContains(t, err.Error(), "/next")
	case <-time.After(10 * time.Second):
		t.Fatal("a request waiting for a conn at MaxConnsPerHost was not bounded")
	}
	// The held response still reads to its end.
	release <- struct{}{}
	b, err := io.ReadAll(held.Body)
	require.NoError(t, err)
	assert.Equal(t, "end", string(b))
}

// TestHeadersToNonReadingPeerAreBounded: a request whose headers are
// larger than the socket buffers, sent to a peer that accepts and never
// reads, fails within the StallTimeout (no byte taken by the peer), as
// an upload would; it is not left to TCP's own timeouts.
func TestHeadersToNonReadingPeerAreBounded(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var conns []net.Conn
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // never read
		}
	}()
	defer func() {
		ln.Close()
		<-accepted
		for _, c := range conns {
			c.Close()
		}
	}()
	tr := &transport.Transport{
		StallTimeout: 300 * time.Millisecond,
		Retry:        &retry.Policy{MaxAttempts: 1},
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	req.Header.Set("X-Big", strings.Repeat("b", 64<<20))
	done := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, "upload_stall", te.Phase)
	case <-time.After(10 * time.Second):
		t.Fatal("headers to a peer that never reads were not bounded by StallTimeout")
	}
}

// TestInvalidRequestIsBadRequestNotRetried: a request net/http refuses
// before it looks for a conn (an invalid method, header field name or
// value) is the caller's mistake: ErrBadRequest at once, one refusal, no
// retry paid from the budget, the body closed, no field value in the
// error text.
func TestInvalidRequestIsBadRequestNotRetried(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	for name, mut := range map[string]func(*http.Request){
		"name":   func(r *http.Request) { r.Header["X Bad"] = []string{"v"} },
		"value":  func(r *http.Request) { r.Header["X-Token"] = []string{"SECRET\r\nInjected: 1"} },
		"method": func(r *http.Request) { r.Method = "GE T" },
	} {
		t.Run(name, func(t *testing.T) {
			closed := make(chan struct{})
			req, _ := http.NewRequest(http.MethodPut, srv.URL, &closeNotice{Reader: strings.NewReader("x"), closed: closed})
			req.GetBody = func() (io.ReadCloser, error) { return io.NopCloser(strings.NewReader("x")), nil }
			mut(req)
			resp, err := tr.RoundTrip(req)
			if resp != nil {
				resp.Body.Close()
			}
			require.ErrorIs(t, err, transport.ErrBadRequest)
			assert.NotContains(t, err.Error(), "SECRET")
			var ex *retry.ExhaustedError
			assert.False(t, errors.As(err, &ex), "retried: %v", err)
			select {
			case <-closed:
			default:
				t.Fatal("the body was not closed")
			}
		})
	}
}

type closeNotice struct {
	io.Reader
	closed chan struct{}
}

func (c *closeNotice) Close() error {
	select {
	case <-c.closed:
	default:
		close(c.closed)
	}
	return nil
}

// TestGetBodyErrorIsFinal: a request whose GetBody fails cannot be sent:
// its error is returned after one try, not retried with backoff (each
// retry would call GetBody again and pay the budget), and the caller's
// body is closed.
func TestGetBodyErrorIsFinal(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	defer srv.Close()
	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	gone := errors.New("body gone")
	calls := 0
	closed := make(chan struct{})
	req, _ := http.NewRequest(http.MethodPut, srv.URL, &closeNotice{Reader: strings.NewReader("x"), closed: closed})
	req.GetBody = func() (io.ReadCloser, error) { calls++; return nil, gone }
	resp, err := tr.RoundTrip(req)
	if resp != nil {
		resp.Body.Close()
	}
	require.ErrorIs(t, err, gone)
	assert.Equal(t, 1, calls, "GetBody calls")
	var ex *retry.ExhaustedError
	assert.False(t, errors.As(err, &ex), "retried: %v", err)
	select {
	case <-closed:
	default:
		t.Fatal("the body was not closed")
	}
}

// TestSlowConnectAnswerIsNotAConnWait: the bound on the wait for a conn
// (the Dialer's Timeout) does not cut a request whose own dial is past
// its TCP connect and in the proxy's CONNECT exchange, which has limits
// of its own: a proxy that answers CONNECT after 700ms carries the
// request with a Dialer Timeout of 300ms.
func TestSlowConnectAnswerIsNotAConnWait(t *testing.T) {
	backend, cfg := tlsServer(t, false, http.HandlerFunc(hello))
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	defer wg.Wait()
	defer ln.Close()
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil || req.Method != http.MethodConnect {
			return
		}
		time.Sleep(700 * time.Millisecond)
		_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
		up, err := net.Dial("tcp", req.Host)
		if err != nil {
			return
		}
		defer up.Close()
		go func() { _, _ = io.Copy(up, br); up.Close() }()
		_, _ = io.Copy(c, up)
	}()
	tr := &transport.Transport{
		TLSClientConfig: cfg,
		Dialer:          &dial.Dialer{Timeout: 300 * time.Millisecond},
		Proxy:           http.ProxyURL(&url.URL{Scheme: "http", Host: ln.Addr().String()}),
		Retry:           &retry.Policy{MaxAttempts: 1},
	}
	req, _ := http.NewRequest(http.MethodGet, backend.URL, nil)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "hello HTTP/1.1", string(b))
	tr.CloseIdleConnections()
	backend.CloseClientConnections()
}
