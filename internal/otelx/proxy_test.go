package otelx_test

import (
	"bufio"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// fakeProxy is a loopback proxy that reads one request head per conn and
// then does what its mode says: "407" answers Proxy Authentication
// Required, "hangup" closes, "garbage" sends a non-HTTP line, "silent"
// waits until the client goes. It records whether the client sent the
// proxy's credentials.
type fakeProxy struct {
	ln     net.Listener
	mode   string
	wg     sync.WaitGroup
	mu     sync.Mutex
	conns  []net.Conn
	authed bool
}

func newFakeProxy(t *testing.T, mode string) *fakeProxy {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &fakeProxy{ln: ln, mode: mode}
	p.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns = append(p.conns, c)
			p.mu.Unlock()
			p.wg.Go(func() { p.serve(c) })
		}
	})
	t.Cleanup(func() {
		_ = ln.Close()
		p.mu.Lock()
		for _, c := range p.conns {
			_ = c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *fakeProxy) serve(c net.Conn) {
	defer c.Close()
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	p.mu.Lock()
	p.authed = p.authed || req.Header.Get("Proxy-Authorization") != ""
	p.mu.Unlock()
	switch p.mode {
	case "407":
		_, _ = io.WriteString(c, "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	case "garbage":
		_, _ = io.WriteString(c, "SSH-2.0-OpenSSH_9.6\r\n")
	case "silent":
		_, _ = io.Copy(io.Discard, c)
	}
}

// TestNoProxyUserinfo (issue 20, risk "a proxy URL with userinfo
// reaching an error text"): a proxy URL with a password, for http and
// https targets through the Transport and for ws and wss targets through
// the WebSocketDialer, against a proxy that refuses the connection,
// answers 407, hangs up, speaks garbage or stays silent: the password is
// in no error text, span or log line, and neither is the target's query.
func TestNoProxyUserinfo(t *testing.T) {
	const secret = "PSECRET"
	for _, mode := range []string{"refused", "407", "hangup", "garbage", "silent"} {
		for _, scheme := range []string{"http", "https", "ws", "wss"} {
			t.Run(mode+"/"+scheme, func(t *testing.T) {
				var addr string
				var p *fakeProxy
				if mode == "refused" {
					addr = closedAddr(t)
				} else {
					p = newFakeProxy(t, mode)
					addr = p.ln.Addr().String()
				}
				pu := &url.URL{Scheme: "http", User: url.UserPassword("alice", secret), Host: addr}
				rec := tracetest.NewSpanRecorder()
				tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
				var logs lockedBuf
				logger := slog.New(slog.NewTextHandler(&logs, nil))
				pol := &retry.Policy{MaxAttempts: 2, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}
				ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
				defer cancel()
				target := scheme + "://target.invalid/p?token=QSECRET"
				var err error
				var status int
				if scheme == "http" || scheme == "https" {
					tr := &transport.Transport{Proxy: http.ProxyURL(pu), Retry: pol, TracerProvider: tp,
						MeterProvider: metricnoop.NewMeterProvider(), Logger: logger}
					defer tr.CloseIdleConnections()
					req, rerr := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
					if rerr != nil {
						t.Fatal(rerr)
					}
					var resp *http.Response
					resp, err = tr.RoundTrip(req)
					if err == nil {
						status = resp.StatusCode
						_, _ = io.Copy(io.Discard, resp.Body)
						_ = resp.Body.Close()
					}
				} else {
					d := &transport.WebSocketDialer{Proxy: http.ProxyURL(pu), Retry: pol, TracerProvider: tp,
						MeterProvider: metricnoop.NewMeterProvider(), Logger: logger}
					var c interface{ Close() error }
					var resp *http.Response
					c, resp, err = d.Dial(ctx, target, nil)
					if err == nil {
						_ = c.Close()
						t.Fatal("a websocket through a broken proxy connected")
					}
					if resp != nil {
						_ = resp.Body.Close()
					}
				}
				if err == nil && status == 0 {
					t.Fatal("neither an error nor an answer")
				}
				t.Logf("error: %v (status %d)", err, status)
				if err != nil && strings.Contains(err.Error(), secret) {
					t.Errorf("error text keeps the proxy password: %v", err)
				}
				if p != nil && mode != "refused" {
					p.mu.Lock()
					authed := p.authed
					p.mu.Unlock()
					if !authed {
						t.Error("the proxy never saw the credentials: the test did not reach it")
					}
				}
				var texts []string
				for _, s := range rec.Ended() {
					texts = append(texts, s.Name(), s.Status().Description)
					for _, kv := range s.Attributes() {
						texts = append(texts, kv.Value.String())
					}
					for _, ev := range s.Events() {
						for _, kv := range ev.Attributes {
							texts = append(texts, kv.Value.String())
						}
					}
				}
				if len(texts) == 0 {
					t.Error("no span")
				}
				texts = append(texts, logs.String())
				for _, x := range texts {
					if strings.Contains(x, secret) || strings.Contains(x, "QSECRET") {
						t.Errorf("span or log keeps a secret: %q", x)
					}
				}
			})
		}
	}
}
