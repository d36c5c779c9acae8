package transport_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

func roundTrip(t *testing.T, c *websocket.Conn, msg string) {
	t.Helper()
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if err := c.WriteMessage(websocket.TextMessage, []byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	typ, got, err := c.ReadMessage()
	if err != nil {
		t.Fatalf("read: %v", err)
	}
	if typ != websocket.TextMessage || string(got) != msg {
		t.Fatalf("echo: type %d %q, want text %q", typ, got, msg)
	}
	_ = c.SetReadDeadline(time.Time{})
}

// TestWebSocketDialEcho dials ws and wss (to a server that offers h2 as
// well: only http/1.1 may be offered) and exchanges a message.
func TestWebSocketDialEcho(t *testing.T) {
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	h2 := srvTLS.Clone()
	h2.NextProtos = []string{"h2", "http/1.1"}
	for _, tc := range []struct {
		name   string
		scheme string
		srv    *tls.Config
	}{
		{"ws", "ws", nil},
		{"wss", "wss", srvTLS},
		{"wss to a server offering h2", "wss", h2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := startWS(t, echo, tc.srv)
			d := fastDialer(1)
			d.TLSClientConfig = cliTLS.Clone()
			d.TLSClientConfig.NextProtos = []string{"h2", "http/1.1"} // as a config shared with net/http would
			c, resp, err := d.Dial(t.Context(), wsURL(tc.scheme, s, "/echo"), nil)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			if resp.StatusCode != http.StatusSwitchingProtocols {
				t.Fatalf("status %d, want 101", resp.StatusCode)
			}
			if tc.srv != nil {
				if resp.TLS == nil || resp.TLS.NegotiatedProtocol == "h2" {
					t.Fatalf("resp.TLS = %+v, want a TLS state without h2", resp.TLS)
				}
			}
			roundTrip(t, c, "hello")
		})
	}
}

// TestWebSocketDialVerifiesCertificate: a certificate for another name is
// refused, and not retried.
func TestWebSocketDialVerifiesCertificate(t *testing.T) {
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	s := startWS(t, echo, srvTLS)
	d := fastDialer(3)
	d.TLSClientConfig = cliTLS.Clone()
	d.TLSClientConfig.ServerName = "other.example"
	_, _, err := d.Dial(t.Context(), wsURL("wss", s, "/"), nil)
	var de *dial.Error
	if !errors.As(err, &de) || de.Phase != dial.PhaseTLS {
		t.Fatalf("Dial: %v, want a *dial.Error of phase tls", err)
	}
	if got := s.Stats().Accepted; got != 1 {
		t.Fatalf("server accepted %d conns, want 1 (a certificate error is not retried)", got)
	}
}

// TestWebSocketDialHandshakeTimeout: a server that accepts TCP and never
// answers the upgrade. Dial fails within HandshakeTimeout plus slack (the
// hang would be the Dialer's 30s first-byte limit), with a timeout that
// names the limit.
func TestWebSocketDialHandshakeTimeout(t *testing.T) {
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			cfg := faultnet.Config{Fault: faultnet.Silence}
			s := faultnet.Start(t, cfg)
			d := fastDialer(1)
			d.HandshakeTimeout = 300 * time.Millisecond
			if scheme == "wss" {
				// TLS completes; the upgrade is never answered.
				srvTLS, cliTLS := faultnet.SelfSigned(t)
				s = faultnet.Start(t, faultnet.Config{TLS: srvTLS, Handler: func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }})
				d.TLSClientConfig = cliTLS
			}
			start := time.Now()
			_, resp, err := d.Dial(t.Context(), wsURL(scheme, s, "/"), nil)
			took := time.Since(start)
			if err == nil {
				t.Fatal("Dial succeeded against a silent server")
			}
			if resp != nil {
				t.Fatalf("resp = %v, want none", resp.Status)
			}
			if took > 3*time.Second {
				t.Fatalf("Dial took %v, want about HandshakeTimeout (300ms)", took)
			}
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("err %v does not match context.DeadlineExceeded", err)
			}
			var ne net.Error
			if !errors.As(err, &ne) || !ne.Timeout() {
				t.Fatalf("err %v is not a net.Error with Timeout()", err)
			}
			var he *transport.HandshakeError
			if !errors.As(err, &he) || he.StatusCode != 0 {
				t.Fatalf("err %v: want a *HandshakeError without status", err)
			}
			if !strings.Contains(err.Error(), "HandshakeTimeout 300ms") {
				t.Fatalf("err %q does not name the limit", err)
			}
		})
	}
}

// TestWebSocketDialRetriesBounded: with the default 3 attempts, a silent
// server costs 3 handshake timeouts plus backoff, not more.
func TestWebSocketDialRetriesBounded(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	d := fastDialer(3)
	d.HandshakeTimeout = 200 * time.Millisecond
	_, _, err := d.Dial(t.Context(), wsURL("ws", s, "/"), nil)
	var ex *retry.ExhaustedError
	if !errors.As(err, &ex) || ex.Attempts != 3 {
		t.Fatalf("err %v, want an ExhaustedError after 3 attempts", err)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v does not match context.DeadlineExceeded", err)
	}
	eventually(t, 10*time.Second, "server saw 3 conns closed", func() bool { return s.Stats().Accepted == 3 })
}

// TestWebSocketDialStallingTLS: two addresses, the first accepts TCP and
// stalls TLS. Dial succeeds through the second after about AttemptDelay,
// not after the TLS handshake timeout.
func TestWebSocketDialStallingTLS(t *testing.T) {
	srvTLS, cliTLS, err := faultnet.NewSelfSigned("ws.test")
	if err != nil {
		t.Fatal(err)
	}
	group := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", Fault: faultnet.StallTLS},
		faultnet.Config{Addr: "127.0.0.3:0", Handler: wsHandler(echo), TLS: srvTLS})
	d := fastDialer(1)
	d.Dialer = &dial.Dialer{
		AttemptDelay:        100 * time.Millisecond,
		TLSHandshakeTimeout: 5 * time.Second,
		Resolver:            wsResolver{group[0].AddrPort().Addr(), group[1].AddrPort().Addr()},
	}
	d.TLSClientConfig = cliTLS
	start := time.Now()
	c, _, err := d.Dial(t.Context(), "wss://ws.test:"+strconv.Itoa(group[0].Port())+"/", nil)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	defer c.Close()
	roundTrip(t, c, "raced")
	if got := group[0].Stats().Faulted; got < 1 {
		t.Fatalf("the stalling address saw %d conns, want it tried first", got)
	}
	if took > 2*time.Second {
		t.Fatalf("Dial took %v; want about AttemptDelay (100ms), far below TLSHandshakeTimeout (5s)", took)
	}
	t.Logf("dial through a TLS-stalling first address took %v (AttemptDelay 100ms)", took)
}

// TestWebSocketDialRefusalIsFinal: 401, 403 and 404 are answered once,
// returned with their answer, never retried; 503 is retried.
func TestWebSocketDialRefusalIsFinal(t *testing.T) {
	for _, tc := range []struct {
		status   int
		attempts int64
	}{
		{http.StatusUnauthorized, 1},
		{http.StatusForbidden, 1},
		{http.StatusNotFound, 1},
		{http.StatusServiceUnavailable, 3},
	} {
		t.Run(http.StatusText(tc.status), func(t *testing.T) {
			var n atomic.Int64
			s := startWS(t, func(w http.ResponseWriter, r *http.Request) {
				n.Add(1)
				w.WriteHeader(tc.status)
				_, _ = io.WriteString(w, "go away")
			}, nil)
			d := fastDialer(3)
			_, resp, err := d.Dial(t.Context(), wsURL("ws", s, "/x?token=SECRET"), nil)
			var he *transport.HandshakeError
			if !errors.As(err, &he) || he.StatusCode != tc.status {
				t.Fatalf("err %v, want a *HandshakeError with status %d", err, tc.status)
			}
			if !errors.Is(err, websocket.ErrBadHandshake) {
				t.Fatalf("err %v does not match websocket.ErrBadHandshake", err)
			}
			if resp == nil || resp.StatusCode != tc.status {
				t.Fatalf("resp %v, want the %d answer", resp, tc.status)
			}
			body, _ := io.ReadAll(resp.Body)
			if string(body) != "go away" {
				t.Fatalf("body %q, want the answer's", body)
			}
			if got := n.Load(); got != tc.attempts {
				t.Fatalf("server answered %d times, want %d", got, tc.attempts)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("error text leaks the query: %q", err)
			}
		})
	}
}

// TestWebSocketDialCancel: the caller's cancel stops a handshake waiting
// for its answer at once (gorilla itself only watches the deadline).
func TestWebSocketDialCancel(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	d := fastDialer(3)
	d.HandshakeTimeout = -1
	ctx, cancel := context.WithCancel(t.Context())
	go func() {
		// Cancel once the server holds the conn.
		for s.Stats().Faulted == 0 {
			time.Sleep(5 * time.Millisecond)
		}
		cancel()
	}()
	start := time.Now()
	_, _, err := d.Dial(ctx, wsURL("ws", s, "/"), nil)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("cancel took %v to stop the dial", took)
	}
	if got := s.Stats().Accepted; got != 1 {
		t.Fatalf("%d conns, want 1: a cancel is not retried", got)
	}
}

// connectProxy is a minimal HTTP CONNECT proxy on loopback that records
// the targets and Proxy-Authorization it saw.
type connectProxy struct {
	ln      net.Listener
	wg      sync.WaitGroup
	mu      sync.Mutex
	targets []string
	auth    []string
	conns   map[net.Conn]struct{}
	refuse  int // answer CONNECT with this status when non-zero
}

func startProxy(t *testing.T) *connectProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &connectProxy{ln: ln, conns: map[net.Conn]struct{}{}}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			p.mu.Lock()
			p.conns[c] = struct{}{}
			p.mu.Unlock()
			p.wg.Add(1)
			go p.serve(c)
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		p.mu.Lock()
		for c := range p.conns {
			c.Close()
		}
		p.mu.Unlock()
		p.wg.Wait()
	})
	return p
}

func (p *connectProxy) serve(c net.Conn) {
	defer p.wg.Done()
	defer c.Close()
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil || req.Method != http.MethodConnect {
		return
	}
	p.mu.Lock()
	p.targets = append(p.targets, req.Host)
	p.auth = append(p.auth, req.Header.Get("Proxy-Authorization"))
	refuse := p.refuse
	p.mu.Unlock()
	if refuse != 0 {
		_, _ = io.WriteString(c, "HTTP/1.1 "+strconv.Itoa(refuse)+" "+http.StatusText(refuse)+"\r\nContent-Length: 0\r\n\r\n")
		return
	}
	up, err := net.Dial("tcp", req.Host)
	if err != nil {
		_, _ = io.WriteString(c, "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
		return
	}
	p.mu.Lock()
	p.conns[up] = struct{}{}
	p.mu.Unlock()
	defer up.Close()
	_, _ = io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := make(chan struct{})
	go func() {
		_, _ = io.Copy(up, br)
		up.(*net.TCPConn).CloseWrite()
		close(done)
	}()
	_, _ = io.Copy(c, up)
	c.Close()
	<-done
}

// TestWebSocketDialThroughProxy: ws and wss through a CONNECT proxy (gorilla
// v1.5.3 would dial the proxy with TLS and skip TLS to the server); the
// certificate checked is the server's, for the URL's host; the proxy
// URL's userinfo becomes Proxy-Authorization and never reaches an error.
func TestWebSocketDialThroughProxy(t *testing.T) {
	srvTLS, cliTLS, err := faultnet.NewSelfSigned("ws.test")
	if err != nil {
		t.Fatal(err)
	}
	for _, scheme := range []string{"ws", "wss"} {
		t.Run(scheme, func(t *testing.T) {
			var cfg *tls.Config
			if scheme == "wss" {
				cfg = srvTLS
			}
			s := startWS(t, echo, cfg)
			p := startProxy(t)
			d := fastDialer(1)
			d.TLSClientConfig = cliTLS
			proxyURL, _ := url.Parse("http://alice:s3cret@" + p.ln.Addr().String())
			d.Proxy = http.ProxyURL(proxyURL)
			// The certificate is for ws.test (cliTLS.ServerName), the
			// backend's, not the proxy's.
			target := wsURL(scheme, s, "/echo")
			c, _, err := d.Dial(t.Context(), target, nil)
			if err != nil {
				t.Fatalf("Dial: %v", err)
			}
			defer c.Close()
			roundTrip(t, c, "tunnelled")
			p.mu.Lock()
			defer p.mu.Unlock()
			if len(p.targets) != 1 || p.targets[0] != s.Addr() {
				t.Fatalf("proxy saw CONNECT %v, want [%s]", p.targets, s.Addr())
			}
			want := "Basic " + base64.StdEncoding.EncodeToString([]byte("alice:s3cret"))
			if p.auth[0] != want {
				t.Fatalf("Proxy-Authorization %q, want %q", p.auth[0], want)
			}
		})
	}
	t.Run("refused", func(t *testing.T) {
		s := startWS(t, echo, nil)
		p := startProxy(t)
		p.refuse = http.StatusProxyAuthRequired
		d := fastDialer(3)
		proxyURL, _ := url.Parse("http://alice:s3cret@" + p.ln.Addr().String())
		d.Proxy = http.ProxyURL(proxyURL)
		_, _, err := d.Dial(t.Context(), wsURL("ws", s, "/"), nil)
		var pe *transport.ProxyError
		if !errors.As(err, &pe) || pe.StatusCode != http.StatusProxyAuthRequired {
			t.Fatalf("err %v, want a *ProxyError 407", err)
		}
		if strings.Contains(err.Error(), "s3cret") {
			t.Fatalf("error leaks the proxy password: %q", err)
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if len(p.targets) != 1 {
			t.Fatalf("proxy saw %d CONNECTs, want 1 (407 is final)", len(p.targets))
		}
	})
	t.Run("wss verifies the server, not the proxy", func(t *testing.T) {
		s := startWS(t, echo, srvTLS)
		p := startProxy(t)
		d := fastDialer(1)
		d.TLSClientConfig = cliTLS.Clone()
		d.TLSClientConfig.ServerName = "" // the URL's host (127.0.0.1) is not in the certificate
		d.Proxy = http.ProxyURL(&url.URL{Scheme: "http", Host: p.ln.Addr().String()})
		_, _, err := d.Dial(t.Context(), wsURL("wss", s, "/"), nil)
		var de *dial.Error
		if !errors.As(err, &de) || de.Phase != dial.PhaseTLS {
			t.Fatalf("err %v, want a TLS *dial.Error (certificate not for 127.0.0.1)", err)
		}
	})
}

// TestWebSocketHandshakeSpans: one websocket.handshake span per attempt,
// with the URL stripped of its query, the status and error.type; the
// conn's span ends at Close.
func TestWebSocketHandshakeSpans(t *testing.T) {
	var n atomic.Int64
	s := startWS(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		echo(w, r)
	}, nil)
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	d := fastDialer(3)
	d.TracerProvider = tp
	c, _, err := d.Dial(t.Context(), wsURL("ws", s, "/path?token=SECRET"), http.Header{"Authorization": {"Bearer SECRET"}})
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	c.Close()
	var handshakes []sdktrace.ReadOnlySpan
	conns := 0
	for _, sp := range rec.Ended() {
		switch sp.Name() {
		case "websocket.handshake":
			handshakes = append(handshakes, sp)
		case "websocket.conn":
			conns++
		}
		for _, a := range sp.Attributes() {
			if strings.Contains(a.Value.String(), "SECRET") {
				t.Fatalf("span %s attribute %s leaks a secret: %q", sp.Name(), a.Key, a.Value.String())
			}
		}
		for _, e := range sp.Events() {
			for _, a := range e.Attributes {
				if strings.Contains(a.Value.String(), "SECRET") {
					t.Fatalf("span %s event %s leaks a secret", sp.Name(), e.Name)
				}
			}
		}
	}
	if len(handshakes) != 2 || conns != 1 {
		t.Fatalf("%d handshake spans and %d conn spans, want 2 and 1", len(handshakes), conns)
	}
	attr := func(sp sdktrace.ReadOnlySpan, k attribute.Key) string {
		for _, a := range sp.Attributes() {
			if a.Key == k {
				return a.Value.String()
			}
		}
		return ""
	}
	if got := attr(handshakes[0], "http.response.status_code"); got != "503" {
		t.Fatalf("first attempt status %q, want 503", got)
	}
	if got := attr(handshakes[0], "error.type"); got != "http_503" {
		t.Fatalf("first attempt error.type %q, want http_503", got)
	}
	if got := attr(handshakes[1], "url.full"); got != "ws://"+s.Addr()+"/path" {
		t.Fatalf("url.full %q, want it without the query", got)
	}
	if got := attr(handshakes[1], "http.response.status_code"); got != "101" {
		t.Fatalf("second attempt status %q, want 101", got)
	}
}

// TestWebSocketDialBadURL: bad URLs fail before any dial, without echoing
// credentials.
func TestWebSocketDialBadURL(t *testing.T) {
	d := fastDialer(3)
	for _, u := range []string{"http://example.com/", "ws://user:pw@example.com/", "ws:///nohost", "wss://%zz"} {
		_, _, err := d.Dial(t.Context(), u, nil)
		if err == nil {
			t.Fatalf("Dial(%q) succeeded", u)
		}
		if strings.Contains(err.Error(), "pw@") {
			t.Fatalf("Dial(%q): error leaks userinfo: %v", u, err)
		}
	}
}
