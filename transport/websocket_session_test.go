package transport_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

func sessionDialer() *transport.WebSocketDialer {
	d := fastDialer(1)
	d.PingInterval, d.PongTimeout = testPing, testPong
	d.Retry = &retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond}
	return d
}

func newSession(t *testing.T, cfg transport.WebSocketSessionConfig) *transport.WebSocketSession {
	t.Helper()
	if cfg.Dialer == nil {
		cfg.Dialer = sessionDialer()
	}
	s, err := transport.NewWebSocketSession(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// streamServer sends "gen:seq" messages on every conn, gen being the
// server's incarnation, until drained; a drained conn ends with a close
// frame after its last message. While draining, new upgrades get 503.
type streamServer struct {
	srv      *faultnet.Server
	gen      atomic.Int64
	draining atomic.Bool
	mu       sync.Mutex
	stops    []chan struct{} // one per live conn
	handlers sync.WaitGroup
	sent     map[int64]int // messages sent per generation
}

func startStream(t *testing.T) *streamServer {
	ss := &streamServer{sent: map[int64]int{}}
	ss.gen.Store(1)
	ss.srv = startWS(t, ss.serve, nil)
	return ss
}

func (ss *streamServer) serve(w http.ResponseWriter, r *http.Request) {
	if ss.draining.Load() {
		w.WriteHeader(http.StatusServiceUnavailable)
		return
	}
	ss.handlers.Add(1)
	defer ss.handlers.Done()
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	gen := ss.gen.Load()
	stop := make(chan struct{})
	ss.mu.Lock()
	ss.stops = append(ss.stops, stop)
	ss.mu.Unlock()
	readDone := make(chan struct{})
	go func() {
		defer close(readDone)
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	}()
	tick := time.NewTicker(2 * time.Millisecond)
	defer tick.Stop()
	for seq := 0; ; seq++ {
		select {
		case <-stop:
			_ = c.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseGoingAway, "restart"), time.Now().Add(time.Second))
			select {
			case <-readDone: // the client answered the close
			case <-time.After(2 * time.Second):
			}
			return
		case <-readDone:
			return
		case <-tick.C:
		}
		_ = c.SetWriteDeadline(time.Now().Add(2 * time.Second))
		if err := c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("%d:%d", gen, seq))); err != nil {
			return
		}
		ss.mu.Lock()
		ss.sent[gen]++
		ss.mu.Unlock()
	}
}

// restart drains every conn gracefully, takes the listener down and brings
// it back as the next generation.
func (ss *streamServer) restart(t *testing.T) {
	ss.draining.Store(true)
	ss.mu.Lock()
	for _, s := range ss.stops {
		close(s)
	}
	ss.stops = nil
	ss.mu.Unlock()
	ss.handlers.Wait()
	if err := ss.srv.Down(); err != nil {
		t.Fatal(err)
	}
	ss.gen.Add(1)
	if err := ss.srv.Up(); err != nil {
		t.Fatal(err)
	}
	ss.draining.Store(false)
}

// TestWebSocketSessionRestarts: the server restarts three times during a
// stream of messages; the session reconnects each time and the application
// receives every message each incarnation sent, in order, and the
// incarnations in order.
func TestWebSocketSessionRestarts(t *testing.T) {
	ss := startStream(t)
	var mu sync.Mutex
	var got []string
	var states []transport.WebSocketState
	var causes []error
	s := newSession(t, transport.WebSocketSessionConfig{
		URL: wsURL("ws", ss.srv, "/stream"),
		OnMessage: func(_ int, data []byte) {
			mu.Lock()
			got = append(got, string(data))
			mu.Unlock()
		},
		OnStateChange: func(st transport.WebSocketState) {
			mu.Lock()
			states = append(states, st)
			mu.Unlock()
		},
		OnDisconnect: func(cause error) {
			mu.Lock()
			causes = append(causes, cause)
			mu.Unlock()
		},
	})
	countGen := func(gen int64) int {
		mu.Lock()
		defer mu.Unlock()
		n := 0
		for _, m := range got {
			if strings.HasPrefix(m, strconv.FormatInt(gen, 10)+":") {
				n++
			}
		}
		return n
	}
	for gen := int64(1); gen <= 4; gen++ {
		eventually(t, 10*time.Second, fmt.Sprintf("20 messages of incarnation %d", gen), func() bool { return countGen(gen) >= 20 })
		if gen < 4 {
			ss.restart(t)
		}
	}
	s.Close()
	ss.mu.Lock()
	// A copy: the last incarnation's handler may still count a message
	// it wrote as the session closed.
	sent := maps.Clone(ss.sent)
	ss.mu.Unlock()

	mu.Lock()
	defer mu.Unlock()
	next := map[int64]int{}
	lastGen := int64(0)
	for _, m := range got {
		var gen int64
		var seq int
		if _, err := fmt.Sscanf(m, "%d:%d", &gen, &seq); err != nil {
			t.Fatalf("bad message %q", m)
		}
		if gen < lastGen {
			t.Fatalf("message %q after incarnation %d: out of order", m, lastGen)
		}
		lastGen = gen
		if seq != next[gen] {
			t.Fatalf("incarnation %d: got seq %d, want %d (lost or reordered)", gen, seq, next[gen])
		}
		next[gen]++
	}
	for gen := int64(1); gen <= 3; gen++ {
		if next[gen] != sent[gen] {
			t.Fatalf("incarnation %d sent %d messages, the application got %d", gen, sent[gen], next[gen])
		}
	}
	if len(causes) != 3 {
		t.Fatalf("OnDisconnect called %d times, want 3", len(causes))
	}
	for _, c := range causes {
		var ce *websocket.CloseError
		if !errors.As(c, &ce) || ce.Code != websocket.CloseGoingAway {
			t.Fatalf("disconnect cause %v, want the server's close frame (1001)", c)
		}
	}
	connected := 0
	for _, st := range states {
		if st == transport.WebSocketConnected {
			connected++
		}
	}
	if connected != 4 || states[len(states)-1] != transport.WebSocketClosed {
		t.Fatalf("states %v: want 4 connections and closed last", states)
	}
	t.Logf("messages per incarnation: %v", next)
}

// collector records the messages a server receives, per conn.
type collector struct {
	mu   sync.Mutex
	msgs []string
	subs int
}

func (c *collector) serve(w http.ResponseWriter, r *http.Request) {
	ws, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer ws.Close()
	for {
		_, m, err := ws.ReadMessage()
		if err != nil {
			return
		}
		c.mu.Lock()
		if string(m) == "subscribe" {
			c.subs++
		} else {
			c.msgs = append(c.msgs, string(m))
		}
		c.mu.Unlock()
	}
}

func (c *collector) count() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.msgs)
}

func waitState(t *testing.T, s *transport.WebSocketSession, want transport.WebSocketState) {
	t.Helper()
	eventually(t, 10*time.Second, "state "+want.String(), func() bool { return s.State() == want })
}

// TestWebSocketSessionConcurrentWrites: 50 goroutines write at once (run
// under -race); every message arrives whole, each writer's in its order.
func TestWebSocketSessionConcurrentWrites(t *testing.T) {
	col := &collector{}
	srv := startWS(t, col.serve, nil)
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/")})
	waitState(t, s, transport.WebSocketConnected)
	const writers, each = 50, 20
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				if err := s.WriteMessage(t.Context(), websocket.TextMessage, []byte(fmt.Sprintf("%d:%d:%s", w, i, strings.Repeat("x", 100*w)))); err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatalf("write: %v", err)
	}
	eventually(t, 10*time.Second, "all messages at the server", func() bool { return col.count() == writers*each })
	col.mu.Lock()
	defer col.mu.Unlock()
	next := make([]int, writers)
	for _, m := range col.msgs {
		parts := strings.SplitN(m, ":", 3)
		w, _ := strconv.Atoi(parts[0])
		i, _ := strconv.Atoi(parts[1])
		if i != next[w] || len(parts[2]) != 100*w {
			t.Fatalf("message %.20q: want writer %d's message %d, whole", m, w, next[w])
		}
		next[w]++
	}
}

// TestWebSocketSessionDisconnected: with no connection, writes fail at
// once with ErrDisconnected naming the cause; nothing is queued. The
// OnConnect hook resubscribes on each connection before writes are let
// through.
func TestWebSocketSessionDisconnected(t *testing.T) {
	col := &collector{}
	srv := startWS(t, col.serve, nil)
	var lost atomic.Int64
	s := newSession(t, transport.WebSocketSessionConfig{
		URL: wsURL("ws", srv, "/"),
		OnConnect: func(ctx context.Context, c *websocket.Conn) error {
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			return c.WriteMessage(websocket.TextMessage, []byte("subscribe"))
		},
		OnDisconnect: func(error) { lost.Add(1) },
	})
	waitState(t, s, transport.WebSocketConnected)
	if err := s.WriteMessage(t.Context(), websocket.TextMessage, []byte("one")); err != nil {
		t.Fatal(err)
	}
	// Down resets the conn: a message still in the server's socket buffer
	// would be lost with it.
	eventually(t, 5*time.Second, "one message", func() bool { return col.count() == 1 })
	if err := srv.Down(); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "loss noticed", func() bool { return lost.Load() == 1 })
	start := time.Now()
	err := s.WriteMessage(t.Context(), websocket.TextMessage, []byte("lost"))
	if !errors.Is(err, transport.ErrDisconnected) {
		t.Fatalf("write while down: %v, want ErrDisconnected", err)
	}
	// At once on a quiet machine; a write that waited for the reconnect
	// would wait until Up below (never, here). A second leaves a loaded
	// machine its lag.
	if took := time.Since(start); took > time.Second {
		t.Fatalf("write while down took %v, want it to fail at once", took)
	}
	if err := srv.Up(); err != nil {
		t.Fatal(err)
	}
	waitState(t, s, transport.WebSocketConnected)
	if err := s.WriteMessage(t.Context(), websocket.TextMessage, []byte("two")); err != nil {
		t.Fatal(err)
	}
	eventually(t, 5*time.Second, "two messages", func() bool { return col.count() == 2 })
	col.mu.Lock()
	defer col.mu.Unlock()
	if strings.Join(col.msgs, ",") != "one,two" || col.subs != 2 {
		t.Fatalf("server got %v and %d subscribes; want one,two and 2", col.msgs, col.subs)
	}
}

// TestWebSocketSessionPongTimeout: a peer that stops answering is replaced:
// OnDisconnect gets the *PongTimeoutError, the session reconnects, and the
// outage shows in the reconnect span and metrics.
func TestWebSocketSessionPongTimeout(t *testing.T) {
	var n atomic.Int64
	srv := startWS(t, func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			mute(w, r)
			return
		}
		listening(w, r)
	}, nil)
	reader := sdkmetric.NewManualReader()
	rec := tracetest.NewSpanRecorder()
	d := sessionDialer()
	d.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	d.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	causes := make(chan error, 4)
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/"), Dialer: d,
		OnDisconnect: func(err error) { causes <- err }})
	select {
	case err := <-causes:
		checkPongTimeout(t, err)
	case <-time.After(testPing + testPong + slack):
		t.Fatal("mute peer not detected")
	}
	eventually(t, 5*time.Second, "reconnected", func() bool { return n.Load() == 2 && s.State() == transport.WebSocketConnected })
	s.Close()

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	found := map[string]bool{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			found[m.Name] = true
		}
	}
	for _, name := range []string{"lifeline.websocket.reconnects", "lifeline.websocket.disconnected.duration",
		"lifeline.websocket.ping_timeouts", "lifeline.websocket.handshake.duration"} {
		if !found[name] {
			t.Fatalf("metric %s not recorded; have %v", name, found)
		}
	}
	var reconnect, pingEvent bool
	for _, sp := range rec.Ended() {
		for _, e := range sp.Events() {
			switch {
			case sp.Name() == "websocket.reconnect" && e.Name == "websocket.reconnected":
				reconnect = true
			case sp.Name() == "websocket.conn" && e.Name == "websocket.ping_timeout":
				pingEvent = true
			}
		}
	}
	if !reconnect || !pingEvent {
		t.Fatalf("reconnected event %v, ping_timeout event %v; want both", reconnect, pingEvent)
	}
}

// TestWebSocketSessionBackoff: a flapping server (upgrades, then drops at
// once) is redialled with a growing backoff, not hammered; after a stable
// connection the backoff starts afresh.
func TestWebSocketSessionBackoff(t *testing.T) {
	var dials atomic.Int64
	var flap atomic.Bool
	flap.Store(true)
	srv := startWS(t, func(w http.ResponseWriter, r *http.Request) {
		dials.Add(1)
		if flap.Load() {
			c, err := upgrader.Upgrade(w, r, nil)
			if err == nil {
				c.Close()
			}
			return
		}
		listening(w, r)
	}, nil)
	d := sessionDialer()
	d.Retry = &retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 320 * time.Millisecond, Jitter: -1}
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/"), Dialer: d, StableAfter: 300 * time.Millisecond})
	// Waits 20, 40, 80, 160, 320, 320...: about 8 dials in 1.5s, where a
	// fixed 20ms wait would make about 75.
	time.Sleep(1500 * time.Millisecond)
	if n := dials.Load(); n > 12 || n < 4 {
		t.Fatalf("%d dials to a flapping server in 1.5s; want about 8", n)
	}
	flap.Store(false)
	waitState(t, s, transport.WebSocketConnected)
	time.Sleep(400 * time.Millisecond) // past StableAfter
	before := dials.Load()
	srv.DropAll()
	start := time.Now()
	eventually(t, 5*time.Second, "rejoined", func() bool { return dials.Load() > before && s.State() == transport.WebSocketConnected })
	if took := time.Since(start); took > 250*time.Millisecond+slack/4 {
		t.Fatalf("rejoined a recovered server after %v; want about InitialInterval (20ms), not MaxInterval", took)
	}
}

// TestWebSocketSessionRefused: a 403 ends the session: Err has the answer,
// Done is closed, writes fail with ErrSessionClosed.
func TestWebSocketSessionRefused(t *testing.T) {
	var n atomic.Int64
	srv := startWS(t, func(w http.ResponseWriter, r *http.Request) {
		n.Add(1)
		w.WriteHeader(http.StatusForbidden)
	}, nil)
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/")})
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session did not end on a 403")
	}
	var he *transport.HandshakeError
	if !errors.As(s.Err(), &he) || he.StatusCode != http.StatusForbidden {
		t.Fatalf("Err() = %v, want the 403", s.Err())
	}
	if s.State() != transport.WebSocketClosed || n.Load() != 1 {
		t.Fatalf("state %v after %d dials; want closed after 1", s.State(), n.Load())
	}
	if err := s.WriteMessage(t.Context(), websocket.TextMessage, []byte("x")); !errors.Is(err, transport.ErrSessionClosed) {
		t.Fatalf("write: %v, want ErrSessionClosed", err)
	}
}

// TestWebSocketSessionNotAWebSocket: answers that are not a refusal (a
// 200 from something that is not a websocket server, an invalid 101) do
// not end the session: it redials at the backoff's pace and connects once
// the server upgrades.
func TestWebSocketSessionNotAWebSocket(t *testing.T) {
	var n atomic.Int64
	srv := startWS(t, func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			w.WriteHeader(http.StatusOK)
		case 2:
			w.Header().Set("Upgrade", "websocket")
			w.Header().Set("Connection", "Upgrade")
			w.Header().Set("Sec-WebSocket-Accept", "wrong")
			w.WriteHeader(http.StatusSwitchingProtocols)
		default:
			echo(w, r)
		}
	}, nil)
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/")})
	eventually(t, 5*time.Second, "connected after a 200 and an invalid 101", func() bool {
		return s.State() == transport.WebSocketConnected
	})
	if got := n.Load(); got != 3 {
		t.Fatalf("%d dials, want 3", got)
	}
}

// TestHandshakeErrorRetryable: an answer's status decides, except when a
// time limit cut the exchange after it (the 101 came too late: the server
// did not refuse).
func TestHandshakeErrorRetryable(t *testing.T) {
	timeout := &transport.TimeoutError{Phase: "attempt", Limit: time.Second}
	for _, tc := range []struct {
		name   string
		status int
		err    error
		want   bool
	}{
		{"403", http.StatusForbidden, errors.New("bad handshake"), false},
		{"302", http.StatusFound, errors.New("bad handshake"), false},
		{"invalid 101", http.StatusSwitchingProtocols, errors.New("bad handshake"), false},
		{"503", http.StatusServiceUnavailable, errors.New("bad handshake"), true},
		{"429: busy", http.StatusTooManyRequests, errors.New("bad handshake"), true},
		{"408: busy", http.StatusRequestTimeout, errors.New("bad handshake"), true},
		{"proxy 407", 0, &transport.ProxyError{Proxy: "p:3128", StatusCode: http.StatusProxyAuthRequired}, false},
		{"proxy 502", 0, &transport.ProxyError{Proxy: "p:3128", StatusCode: http.StatusBadGateway}, true},
		{"101 then timeout", http.StatusSwitchingProtocols, timeout, true},
		{"no answer, timeout", 0, timeout, true},
		{"canceled", 0, context.Canceled, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			he := &transport.HandshakeError{URL: "ws://example.com/", StatusCode: tc.status, Err: tc.err}
			if got := he.Retryable(); got != tc.want {
				t.Fatalf("Retryable() = %v, want %v", got, tc.want)
			}
		})
	}
}

// TestWebSocketSessionCloseWhileConnecting: Close cancels a handshake that
// hangs and returns promptly; it is idempotent; goleak checks that
// nothing is left.
func TestWebSocketSessionCloseWhileConnecting(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	d := sessionDialer()
	d.HandshakeTimeout = time.Minute
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/"), Dialer: d})
	eventually(t, 5*time.Second, "handshake hanging", func() bool { return srv.Stats().Faulted == 1 })
	start := time.Now()
	s.Close()
	s.Close()
	if took := time.Since(start); took > time.Second {
		t.Fatalf("Close took %v with a hanging handshake", took)
	}
	if s.State() != transport.WebSocketClosed {
		t.Fatalf("state %v after Close", s.State())
	}
}

// TestWebSocketSessionConfig: a bad config is an error naming the field.
func TestWebSocketSessionConfig(t *testing.T) {
	for _, tc := range []struct {
		cfg  transport.WebSocketSessionConfig
		want string
	}{
		{transport.WebSocketSessionConfig{}, "URL"},
		{transport.WebSocketSessionConfig{URL: "http://x/"}, "URL"},
		{transport.WebSocketSessionConfig{URL: "ws://x/", StableAfter: -1}, "StableAfter"},
		{transport.WebSocketSessionConfig{URL: "ws://x/", WriteTimeout: -1}, "WriteTimeout"},
		{transport.WebSocketSessionConfig{URL: "ws://x/", Dialer: &transport.WebSocketDialer{Retry: &retry.Policy{Multiplier: 0.5}}}, "Multiplier"},
	} {
		s, err := transport.NewWebSocketSession(tc.cfg)
		if err == nil {
			s.Close()
			t.Fatalf("%+v: no error", tc.cfg)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Fatalf("error %q does not name %s", err, tc.want)
		}
	}
}

// TestWebSocketSessionProxyRefusal: a CONNECT proxy that answers 407 ends
// the session after one CONNECT (credentials do not heal by retrying):
// Err is a *ProxyError saying so, without the password. A proxy that
// answers 503 is retried.
func TestWebSocketSessionProxyRefusal(t *testing.T) {
	for _, tc := range []struct {
		status int
		final  bool
	}{{http.StatusProxyAuthRequired, true}, {http.StatusServiceUnavailable, false}} {
		t.Run(strconv.Itoa(tc.status), func(t *testing.T) {
			srv := startWS(t, echo, nil)
			p := startProxy(t)
			p.refuse = tc.status
			d := sessionDialer()
			proxyURL, _ := url.Parse("http://alice:s3cret@" + p.ln.Addr().String())
			d.Proxy = http.ProxyURL(proxyURL)
			s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/"), Dialer: d})
			connects := func() int {
				p.mu.Lock()
				defer p.mu.Unlock()
				return len(p.targets)
			}
			if !tc.final {
				eventually(t, 5*time.Second, "3 CONNECTs", func() bool { return connects() >= 3 })
				if s.State() == transport.WebSocketClosed {
					t.Fatalf("session ended on a proxy's %d: %v", tc.status, s.Err())
				}
				return
			}
			select {
			case <-s.Done():
			case <-time.After(5 * time.Second):
				t.Fatalf("session still %v after a 407; %d CONNECTs", s.State(), connects())
			}
			var pe *transport.ProxyError
			if err := s.Err(); !errors.As(err, &pe) || pe.StatusCode != tc.status {
				t.Fatalf("Err() = %v, want a *ProxyError %d", err, tc.status)
			}
			msg := s.Err().Error()
			if !strings.Contains(msg, "407 Proxy Authentication Required") || strings.Contains(msg, "s3cret") {
				t.Fatalf("Err() = %q: want the 407 named, and no password", msg)
			}
			if n := connects(); n != 1 {
				t.Fatalf("%d CONNECTs, want 1", n)
			}
		})
	}
}
