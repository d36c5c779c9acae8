package transport_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// adv30ResetServer serves HTTPS on loopback by hand: the first conn
// answers one request (keep-alive), then resets when the next request on
// it arrives — a server closing an idle conn as a request arrives, which
// net/http retries itself on a new conn for a GET; every later conn is
// reset during its TLS handshake. It returns the address and the root
// config of its certificate.
func adv30ResetServer(t *testing.T) (string, *tls.Config) {
	t.Helper()
	ts := httptest.NewUnstartedServer(http.NotFoundHandler())
	ts.StartTLS()
	srvCfg := ts.TLS.Clone()
	srvCfg.NextProtos = []string{"http/1.1"}
	cliCfg := ts.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	ts.Close()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var n atomic.Int64
	done := make(chan struct{})
	t.Cleanup(func() { _ = ln.Close(); <-done })
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			tc := c.(*net.TCPConn)
			if n.Add(1) > 1 {
				// Reset during the handshake: read the ClientHello, RST.
				_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
				_, _ = c.Read(make([]byte, 512))
				_ = tc.SetLinger(0)
				_ = c.Close()
				continue
			}
			func() {
				defer c.Close()
				_ = c.SetDeadline(time.Now().Add(10 * time.Second))
				sc := tls.Server(c, srvCfg)
				br := bufio.NewReader(sc)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				_ = req.Body.Close()
				_, _ = io.WriteString(sc, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
				if _, err := http.ReadRequest(br); err != nil {
					return
				}
				_ = tc.SetLinger(0) // the second request: reset, unanswered
			}()
		}
	}()
	return ln.Addr().String(), cliCfg
}

// TestAdv30ResetCountedOnceDialAndTry: a GET on a reused HTTP/1.1 conn
// that the server resets is retried by net/http itself on a new conn;
// that conn's TLS handshake is reset. The Dialer records the handshake's
// reset (EventReset, as for any dial); the try's error is that dial's
// error, and the transport must not record it a second time — nor the
// reset of the reused conn, which net/http retried (a keep-alive race,
// benign). One reset happened to a dial: Health says one.
func TestAdv30ResetCountedOnceDialAndTry(t *testing.T) {
	addr, cliCfg := adv30ResetServer(t)
	h := &dial.Health{}
	tr := &transport.Transport{Dialer: &dial.Dialer{Health: h}, TLSClientConfig: cliCfg,
		Retry: &retry.Policy{MaxAttempts: 1}}
	t.Cleanup(tr.CloseIdleConnections)
	get := func() error {
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+addr+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		return resp.Body.Close()
	}
	if err := get(); err != nil {
		t.Fatalf("the first call: %v", err)
	}
	err := get()
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("the second call: %v, want a reset", err)
	}
	st, ok := h.Stats(netip.MustParseAddrPort(addr))
	if !ok {
		t.Fatal("Health knows nothing of the server")
	}
	t.Logf("second call: %v; Health: %d resets, %d successes", err, st.Resets, st.Successes)
	if st.Resets != 1 {
		t.Fatalf("Health counts %d resets for one reset dial, want 1", st.Resets)
	}
}

// TestAdv30SilentCloseUnderABodyReadIsNoFirstByte: an HTTP/2 conn
// carries a response whose headers came and whose body is being read when
// the peer goes silent; another call on the conn gives up on its headers,
// and a second later lifeline closes the silent conn. The body read ends
// with that close — but its headers came: its error must not say
// first_byte (no headers came, the request was unanswered), which tells
// the caller and the metrics the wrong thing about a call that was
// answered.
func TestAdv30SilentCloseUnderABodyReadIsNoFirstByte(t *testing.T) {
	release := make(chan struct{})
	srv, cfg := tlsServer(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/body" {
			_, _ = io.WriteString(w, "part")
			w.(http.Flusher).Flush()
			select {
			case <-release:
			case <-r.Context().Done():
			}
			return
		}
		hello(w, r)
	}))
	t.Cleanup(func() { close(release) })
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: u.Host})
	tr := &transport.Transport{TLSClientConfig: cfg, Retry: &retry.Policy{MaxAttempts: 1},
		FirstByteTimeout: 300 * time.Millisecond, StallTimeout: 20 * time.Second, DisableFailFast: true}
	t.Cleanup(tr.CloseIdleConnections)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.Addr()+"/body", nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.ProtoMajor != 2 {
		t.Fatalf("HTTP/%d", resp.ProtoMajor)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(resp.Body, buf); err != nil {
		t.Fatal(err)
	}
	if err := p.SetBlackhole(true); err != nil {
		t.Fatal(err)
	}
	// Another call on the conn gives up on its headers: the conn is watched.
	req2, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.Addr()+"/", nil)
	if resp2, err := tr.RoundTrip(req2); err == nil {
		_ = resp2.Body.Close()
		t.Fatal("an answer through the black hole")
	}
	start := time.Now()
	_, err = io.ReadAll(resp.Body)
	el := time.Since(start)
	t.Logf("the body read: %v after %v", err, el.Round(time.Millisecond))
	if err == nil {
		t.Fatal("the body read ended without error")
	}
	var te *transport.TimeoutError
	if errors.As(err, &te) && te.Phase == "first_byte" {
		t.Fatalf("a body read of an answered call ends with %v: phase first_byte", err)
	}
}
