package transport

import (
	"bufio"
	"context"
	"errors"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// A try that goes over HTTP/1.1 for sure (an http:// URL, no proxy that
// speaks TLS) has its wait for headers cut through net/http's own handle
// on the request, Transport.CancelRequest, which net/http keeps for every
// request anyway: the request's context can then be the caller's, with
// the slot's trace (tryCtx with own set), and net/http's per-request
// context registers under the caller's context exactly as it would
// without lifeline — for a context that never ends, not at all. The
// slot's own context would cost every request a registration in its map
// of children and the removal (BenchmarkKeepAliveGET; HTTP/2 needs it:
// CancelRequest does not reach HTTP/2 requests).
//
// CancelRequest is deprecated and "may become a no-op in a future release
// of Go": cancelRequestWorks checks, once per process, that it still ends
// a request waiting for headers. If it ever does not, every try uses the
// slot's context, as HTTP/2 tries do.

// cancelRequestWorks reports whether net/http's Transport.CancelRequest
// ends an HTTP/1.1 request that waits for its response headers: tried once
// per process, by the first http:// request, over an in-memory pipe (no
// socket; about 0.2ms, bounded by probeLimit); then an atomic load.
func cancelRequestWorks() bool {
	if v := cancelProbe.result.Load(); v != 0 {
		return v > 0
	}
	cancelProbe.once.Do(func() {
		v := int32(-1)
		if probeCancelRequest(probeLimit) {
			v = 1
		}
		cancelProbe.result.Store(v)
	})
	return cancelProbe.result.Load() > 0
}

var cancelProbe struct {
	once   sync.Once
	result atomic.Int32 // 0: not probed yet, 1: works, -1: does not
}

const probeLimit = 2 * time.Second

func probeCancelRequest(limit time.Duration) bool {
	client, server := net.Pipe()
	// Closing the pipe ends whatever the probe left running.
	defer client.Close()
	defer server.Close()
	ht := &http.Transport{
		DialContext:       func(context.Context, string, string) (net.Conn, error) { return client, nil },
		DisableKeepAlives: true,
	}
	defer ht.CloseIdleConnections()
	req, err := http.NewRequest(http.MethodGet, "http://cancel-request.probe.invalid/", nil)
	if err != nil {
		return false
	}
	done := make(chan error, 1)
	go func() {
		resp, err := ht.RoundTrip(req)
		if resp != nil {
			_ = resp.Body.Close()
			err = errors.New("answered")
		}
		done <- err
	}()
	// Once the server has read the request, net/http waits for headers.
	_ = server.SetDeadline(time.Now().Add(limit))
	if _, err := http.ReadRequest(bufio.NewReader(server)); err != nil {
		return false
	}
	ht.CancelRequest(req) //lint:ignore SA1019 the cheap cut of an HTTP/1.1 wait; checked here
	t := time.NewTimer(limit)
	defer t.Stop()
	select {
	case err := <-done:
		return err != nil && err.Error() != "answered"
	case <-t.C:
		return false
	}
}

// plainProxy reports whether the proxy of every http:// request speaks
// plain HTTP (or there is none), so that such a request goes over
// HTTP/1.1: true for the environment's proxies (http.ProxyFromEnvironment)
// unless HTTP_PROXY names an https:// proxy; false for a Proxy function of
// the user's, which could.
func plainProxy(userProxy bool) bool {
	if userProxy {
		return false
	}
	v := os.Getenv("HTTP_PROXY")
	if v == "" {
		v = os.Getenv("http_proxy")
	}
	return !strings.HasPrefix(strings.ToLower(strings.TrimSpace(v)), "https://")
}
