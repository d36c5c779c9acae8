package faultnet_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// httpUpstream starts a loopback HTTP server answering "hello" and counting
// requests.
func httpUpstream(t *testing.T) (addr string, hits *atomic.Int64) {
	t.Helper()
	hits = new(atomic.Int64)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		_, _ = io.WriteString(w, "hello")
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().String(), hits
}

func httpClient(t *testing.T) *http.Client {
	t.Helper()
	tr := &http.Transport{DisableKeepAlives: true}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

func get(ctx context.Context, c *http.Client, addr string) (string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
	if err != nil {
		return "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return string(b), err
}

func TestProxyPass(t *testing.T) {
	up, hits := httpUpstream(t)
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up})
	body, err := get(t.Context(), httpClient(t), p.Addr())
	if err != nil || body != "hello" {
		t.Fatalf("through the proxy: %q, %v", body, err)
	}
	if hits.Load() != 1 {
		t.Fatalf("upstream saw %d requests, want 1", hits.Load())
	}
	eventually(t, 5*time.Second, "Active=0", func() bool { return p.Stats().Active == 0 })
	if st := p.Stats(); st.Accepted != 1 || st.Served != 1 || st.Faulted != 0 || st.MaxActive != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestProxyHoldResponse(t *testing.T) {
	up, hits := httpUpstream(t)
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up, Fault: faultnet.HoldResponse})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := get(ctx, httpClient(t), p.Addr())
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("GET through HoldResponse: %v, want context.DeadlineExceeded (response never starts)", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("failed after %v, before the 300ms timeout", el)
	}
	if hits.Load() != 1 {
		t.Fatalf("upstream saw %d requests, want 1: the request must be forwarded", hits.Load())
	}
	eventually(t, 5*time.Second, "ClosedByPeer=1 once the client gave up", func() bool {
		st := p.Stats()
		return st.ClosedByPeer == 1 && st.Active == 0
	})
	if st := p.Stats(); st.Faulted != 1 || st.Served != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestProxyStallBody(t *testing.T) {
	body := bytes.Repeat([]byte("0123456789"), 100) // 1000 bytes
	up := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
		_, _ = c.Write(body)
		_, _ = io.Copy(io.Discard, c) // keep the conn open until the proxy closes it
	}})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), Fault: faultnet.StallBody, StallAfter: 100})
	c := dial(t, p.Addr())
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 100)
	if _, err := io.ReadFull(c, got); err != nil || !bytes.Equal(got, body[:100]) {
		t.Fatalf("first 100 bytes: %q, %v", got, err)
	}
	if more, err := readResult(c, 300*time.Millisecond); kind(err) != "timeout" {
		t.Fatalf("after StallAfter bytes: got %d more bytes, %v; want nothing until the timeout", len(more), err)
	}
	c.Close()
	eventually(t, 5*time.Second, "ClosedByPeer=1", func() bool { return p.Stats().ClosedByPeer == 1 })
}

// A reply shorter than StallAfter passes whole, with its end.
func TestProxyStallBodyShortReply(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) { _, _ = c.Write([]byte("short")) }})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), Fault: faultnet.StallBody, StallAfter: 100})
	c := dial(t, p.Addr())
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	b, err := io.ReadAll(c)
	if err != nil || string(b) != "short" {
		t.Fatalf("short reply: %q, %v", b, err)
	}
}

func TestProxyDelay(t *testing.T) {
	const lat = 60 * time.Millisecond
	up := faultnet.Start(t, faultnet.Config{})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), Fault: faultnet.Delay, Latency: lat, LatencyMax: 2 * lat})
	c := dial(t, p.Addr())
	for i := range 3 {
		start := time.Now()
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil || string(buf) != "ping" {
			t.Fatalf("round %d: %q, %v", i, buf, err)
		}
		// Delayed once each way.
		if el := time.Since(start); el < 2*lat {
			t.Fatalf("round %d took %v, less than 2×%v", i, el, lat)
		}
	}
	if st := p.Stats(); st.Faulted != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestProxySelectorAndSetFault(t *testing.T) {
	up, _ := httpUpstream(t)
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up, Fault: faultnet.HoldResponse, Select: faultnet.EveryNth(2)})
	cl := httpClient(t)
	try := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		defer cancel()
		_, err := get(ctx, cl, p.Addr())
		return err
	}
	pattern := []bool{false, true, false, true}
	for i, wantHeld := range pattern {
		err := try()
		if held := errors.Is(err, context.DeadlineExceeded); held != wantHeld {
			t.Fatalf("conn %d: err %v, want held=%v", i+1, err, wantHeld)
		}
	}
	p.SetFault(faultnet.ProxyPass, nil)
	if err := try(); err != nil {
		t.Fatalf("after SetFault(ProxyPass): %v", err)
	}
	if st := p.Stats(); st.Accepted != 5 || st.Faulted != 2 || st.Served != 3 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestProxyUpstreamRefused(t *testing.T) {
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: faultnet.RefusedAddr(t, "tcp")})
	c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second) // the reset can beat connect's return
	if err == nil {
		defer c.Close()
		_, err = readResult(c, 5*time.Second)
	}
	if k := kind(err); k != "reset" && k != "EOF" {
		t.Fatalf("client of a proxy whose upstream refuses: %v (%s), want the conn closed", err, k)
	}
	eventually(t, 5*time.Second, "Active=0", func() bool { return p.Stats().Active == 0 })
	if st := p.Stats(); st.Accepted != 1 || st.Faulted != 0 || st.Served != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestProxyCloseIdempotent(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{})
	p, err := faultnet.NewProxy(faultnet.ProxyConfig{Upstream: up.Addr(), Fault: faultnet.HoldResponse})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, p.Addr())
	eventually(t, 5*time.Second, "held", func() bool { return p.Stats().Faulted == 1 })
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	_, err = readResult(c, 5*time.Second)
	if k := kind(err); k != "EOF" && k != "reset" {
		t.Fatalf("held conn after Close: %v, want closed", err)
	}
	if st := p.Stats(); st.Active != 0 || st.ClosedByPeer != 0 {
		t.Fatalf("stats after Close: %+v", st)
	}
}

func TestNewProxyBadConfig(t *testing.T) {
	tests := []struct {
		name  string
		cfg   faultnet.ProxyConfig
		field string
	}{
		{"no upstream", faultnet.ProxyConfig{}, "ProxyConfig.Upstream"},
		{"upstream not loopback", faultnet.ProxyConfig{Upstream: "192.0.2.1:80"}, "ProxyConfig.Upstream"},
		{"upstream port 0", faultnet.ProxyConfig{Upstream: "127.0.0.1:0"}, "ProxyConfig.Upstream"},
		{"unknown fault", faultnet.ProxyConfig{Upstream: "127.0.0.1:1", Fault: 42}, "ProxyConfig.Fault"},
		{"negative StallAfter", faultnet.ProxyConfig{Upstream: "127.0.0.1:1", StallAfter: -1}, "ProxyConfig.StallAfter"},
		{"negative Latency", faultnet.ProxyConfig{Upstream: "127.0.0.1:1", Latency: -1}, "ProxyConfig.Latency"},
		{"LatencyMax below Latency", faultnet.ProxyConfig{Upstream: "127.0.0.1:1", Latency: 2, LatencyMax: 1}, "ProxyConfig.LatencyMax"},
		{"Addr not loopback", faultnet.ProxyConfig{Upstream: "127.0.0.1:1", Addr: "192.0.2.1:0"}, "ProxyConfig.Addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := faultnet.NewProxy(tt.cfg)
			if err == nil {
				p.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name %s", err, tt.field)
			}
		})
	}
}
