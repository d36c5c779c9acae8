package main

import (
	"encoding/json"
	"encoding/pem"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"golang.org/x/sys/unix"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// Go tests of websocket sessions through the shim's core, against real
// gorilla servers on loopback. The C tests (ctest) cover the same calls
// through the ABI.

// wsServer is a gorilla server on a loopback port that can be stopped
// and restarted on the same port. handle serves one connection: its
// number (1, 2, ... across restarts) and the handshake request.
type wsServer struct {
	t      *testing.T
	port   *faultnet.RefusedPort // held between stop and start: refused, and no one else's
	addr   string
	handle func(n int, r *http.Request, c *websocket.Conn)
	mu     sync.Mutex
	srv    *http.Server
	conns  map[*websocket.Conn]struct{}
	wg     sync.WaitGroup
	n      atomic.Int64
}

func startWS(t *testing.T, handle func(n int, r *http.Request, c *websocket.Conn)) *wsServer {
	t.Helper()
	s := &wsServer{t: t, port: faultnet.ReservePort(t, "tcp"), handle: handle, conns: map[*websocket.Conn]struct{}{}}
	s.addr = s.port.Addr()
	s.start()
	t.Cleanup(s.stop)
	return s
}

func (s *wsServer) url() string { return "ws://" + s.addr + "/ws" }

func (s *wsServer) start() {
	ln, err := s.port.Listen()
	if err != nil {
		s.t.Fatal(err)
	}
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()
		defer func() {
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
			c.Close()
		}()
		s.handle(int(s.n.Add(1)), r, c)
	})}
	s.mu.Lock()
	s.srv = srv
	s.mu.Unlock()
	s.wg.Add(1)
	go func() { defer s.wg.Done(); srv.Serve(ln) }()
}

// stop takes the server away: listener and every connection.
func (s *wsServer) stop() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	if srv != nil {
		srv.Close()
	}
	s.wg.Wait()
}

// echo reads messages and sends each back.
func echo(_ int, _ *http.Request, c *websocket.Conn) {
	for {
		typ, data, err := c.ReadMessage()
		if err != nil {
			return
		}
		if c.WriteMessage(typ, data) != nil {
			return
		}
	}
}

func sessionClient(t *testing.T, doc map[string]any) *client {
	t.Helper()
	c := newClient()
	t.Cleanup(func() { closeAndWait(c) })
	if doc == nil {
		doc = map[string]any{}
	}
	if _, ok := doc["retry.initial_interval_ms"]; !ok {
		doc["retry.initial_interval_ms"] = 20
		doc["retry.max_interval_ms"] = 200
	}
	data, _ := json.Marshal(doc)
	if e := c.configure(func(cfg *config) *Error {
		next, e := cfg.configureJSON(data)
		if e == nil {
			*cfg = next
		}
		return e
	}); e != nil {
		t.Fatalf("configure: %s", e.Msg)
	}
	return c
}

func newTestSession(t *testing.T, c *client, url string, hdr http.Header, cfg string) *session {
	t.Helper()
	sc, e := parseSessionConfig([]byte(cfg))
	if e != nil {
		t.Fatalf("session config: %s", e.Msg)
	}
	if hdr == nil {
		hdr = http.Header{}
	}
	s, e := newSession(c, url, hdr, sc)
	if e != nil {
		t.Fatalf("newSession: %s", e.Msg)
	}
	t.Cleanup(func() {
		if handles.remove(s.id) {
			s.free()
		}
	})
	return s
}

// nextEvent takes an event, failing the test after d.
func nextEvent(t *testing.T, s *session, d time.Duration) sessEvent {
	t.Helper()
	ev, e := s.next(d)
	if e != nil {
		t.Fatalf("next event: status %d: %s", e.Status, e.Msg)
	}
	return ev
}

// nextOf skips events until one of kind, which it returns.
func nextOf(t *testing.T, s *session, kind int32, d time.Duration) sessEvent {
	t.Helper()
	deadline := time.Now().Add(d)
	for {
		ev := nextEvent(t, s, time.Until(deadline))
		if ev.kind == kind {
			return ev
		}
		if ev.kind == eventClosed {
			t.Fatalf("session closed while waiting for event %d (cause %+v)", kind, ev.cause)
		}
	}
}

func TestSessionConnectAndEcho(t *testing.T) {
	srv := startWS(t, echo)
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, "")
	if e := s.waitConnected(5 * time.Second); e != nil {
		t.Fatalf("wait_connected: %s", e.Msg)
	}
	ev := nextEvent(t, s, time.Second)
	if ev.kind != eventState || ev.state != int32(transport.WebSocketConnecting) {
		t.Fatalf("first event = %+v, want state connecting", ev)
	}
	if ev = nextEvent(t, s, time.Second); ev.kind != eventConnected || ev.conn != 1 {
		t.Fatalf("second event = %+v, want connected 1", ev)
	}
	for i := range 5 {
		if e := s.send(websocket.TextMessage, []byte(fmt.Sprint("m", i)), 0, 0); e != nil {
			t.Fatalf("send: %s", e.Msg)
		}
	}
	if e := s.send(websocket.BinaryMessage, []byte{0, 1, 2}, 0, 0); e != nil {
		t.Fatalf("send binary: %s", e.Msg)
	}
	for i := range 5 {
		ev := nextOf(t, s, eventMessage, 5*time.Second)
		if string(ev.data) != fmt.Sprint("m", i) || ev.msgType != websocket.TextMessage || ev.conn != 1 {
			t.Fatalf("message %d = %+v", i, ev)
		}
	}
	if ev := nextOf(t, s, eventMessage, 5*time.Second); ev.msgType != websocket.BinaryMessage || string(ev.data) != "\x00\x01\x02" {
		t.Fatalf("binary = %+v", ev)
	}
	if e := s.send(websocket.TextMessage, []byte{0xff}, 0, 0); e == nil || e.Status != statusInvalidArgument {
		t.Fatalf("text that is not UTF-8: %+v, want invalid argument", e)
	}
	s.close()
	if ev := nextOf(t, s, eventClosed, 5*time.Second); ev.cause != nil {
		t.Fatalf("closed by the host has a cause: %+v", ev.cause)
	}
	if _, e := s.next(0); e == nil || e.Status != statusClosed {
		t.Fatalf("next after the closed event: %+v, want closed", e)
	}
	if e := s.send(websocket.TextMessage, []byte("x"), 0, 0); e == nil || e.Status != statusClosed {
		t.Fatalf("send after close: %+v, want closed", e)
	}
}

// TestSessionServerRestart: a server that sends numbered messages on each
// connection is restarted (listener and connections taken away, then
// back on the same port) three times; every connection's messages arrive
// in order, after its CONNECTED and before its DISCONNECTED, and the
// session redials by itself each time.
func TestSessionServerRestart(t *testing.T) {
	const perConn = 50
	srv := startWS(t, func(n int, _ *http.Request, c *websocket.Conn) {
		for i := range perConn {
			if c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("%d:%d", n, i))) != nil {
				return
			}
		}
		c.ReadMessage() // until the restart takes the connection away
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"stable_after_ms": 1}`)
	for round := 1; round <= 4; round++ {
		ev := nextOf(t, s, eventConnected, 10*time.Second)
		if ev.conn != uint64(round) {
			t.Fatalf("round %d: connected event of connection %d", round, ev.conn)
		}
		for i := range perConn {
			ev := nextEvent(t, s, 5*time.Second)
			want := fmt.Sprintf("%d:%d", round, i)
			if ev.kind != eventMessage || string(ev.data) != want || ev.conn != uint64(round) {
				t.Fatalf("round %d: event %+v (data %q), want message %q", round, ev, ev.data, want)
			}
		}
		if round == 4 {
			break
		}
		srv.stop()
		ev = nextOf(t, s, eventDisconnected, 10*time.Second)
		if ev.cause == nil || ev.cause.Type == "" || ev.conn != uint64(round) {
			t.Fatalf("round %d: disconnected event %+v, want a cause with an error type", round, ev)
		}
		t.Logf("round %d: lost with %s/%s: %s", round, ev.cause.Phase, ev.cause.Type, ev.cause.Msg)
		if e := s.send(websocket.TextMessage, []byte("x"), 0, 0); e == nil || e.Status != statusDisconnected {
			// The server is away: nothing can be connected.
			t.Fatalf("round %d: send while disconnected: %+v, want LIFELINE_E_DISCONNECTED", round, e)
		}
		srv.start()
	}
}

// TestSessionHandshakeStall: a server that accepts and never answers the
// upgrade. The handshake limit ends each dial, the session keeps
// redialing, wait_connected times out, and close returns promptly.
func TestSessionHandshakeStall(t *testing.T) {
	hang := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, "ws://"+hang.Addr()+"/", nil, `{"handshake_timeout_ms": 200}`)
	start := time.Now()
	e := s.waitConnected(1500 * time.Millisecond)
	if e == nil || e.Status != statusTimeout {
		t.Fatalf("wait_connected against a stalled handshake: %+v, want a timeout", e)
	}
	// The stalled dials ended by the handshake limit: the session went
	// through disconnected and dialled again within the wait.
	sawDisconnected, connecting := false, 0
	for {
		ev, e := s.next(0)
		if e != nil {
			break
		}
		if ev.kind == eventState && ev.state == int32(transport.WebSocketDisconnected) {
			sawDisconnected = true
			// A failed dial's STATE event says why, as DISCONNECTED does.
			if c := ev.cause; c == nil || c.Status != statusTimeout || c.Phase != "handshake" ||
				c.Type != "handshake_timeout" || !c.Timeout || c.Msg == "" {
				t.Fatalf("STATE (disconnected) of a stalled handshake: cause %+v", c)
			}
		}
		if ev.kind == eventState && ev.state == int32(transport.WebSocketConnecting) && ev.cause != nil {
			t.Fatalf("STATE (connecting) with a cause %+v", ev.cause)
		}
		if ev.kind == eventState && ev.state == int32(transport.WebSocketConnecting) {
			connecting++
		}
	}
	if !sawDisconnected || connecting < 2 {
		t.Fatalf("after %v: disconnected seen %v, %d dials: the handshake limit did not end the stalled dials",
			time.Since(start), sawDisconnected, connecting)
	}
	closeStart := time.Now()
	s.close()
	if d := time.Since(closeStart); d > time.Second {
		t.Fatalf("close during a stalled handshake took %v", d)
	}
}

// TestSessionCloseInEveryState closes sessions in each state — a stalled
// handshake, connected, backoff after a refused dial, the connect step
// waiting for ready, a send waiting for a connection, and a reader held by
// a full queue — and checks that close returns promptly (100ms promised;
// asserted with slack for a loaded machine) and the closed event is last.
func TestSessionCloseInEveryState(t *testing.T) {
	hang := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	srv := startWS(t, echo)
	flood := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		for i := 0; ; i++ {
			if c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))) != nil {
				return
			}
		}
	})
	refused := faultnet.RefusedAddr(t, "tcp")
	cases := []struct {
		name  string
		url   string
		cfg   string
		setup func(t *testing.T, s *session)
	}{
		{"handshake", "ws://" + hang.Addr() + "/", "", func(t *testing.T, s *session) {
			time.Sleep(50 * time.Millisecond)
		}},
		{"connected", srv.url(), "", func(t *testing.T, s *session) {
			if e := s.waitConnected(5 * time.Second); e != nil {
				t.Fatal(e.Msg)
			}
		}},
		{"backoff", "ws://" + refused + "/", "", func(t *testing.T, s *session) {
			nextOf(t, s, eventState, 5*time.Second)
			for s.ws.State() != transport.WebSocketDisconnected {
				time.Sleep(time.Millisecond)
			}
		}},
		{"connect_step", srv.url(), `{"on_connect": true}`, func(t *testing.T, s *session) {
			nextOf(t, s, eventConnect, 5*time.Second)
		}},
		{"send_waiting", "ws://" + hang.Addr() + "/", "", func(t *testing.T, s *session) {
			done := make(chan *Error, 1)
			go func() { done <- s.send(websocket.TextMessage, []byte("x"), -1, sendWhenConnected) }()
			time.Sleep(50 * time.Millisecond)
			t.Cleanup(func() {
				select {
				case e := <-done:
					if e == nil || e.Status != statusClosed {
						t.Errorf("waiting send after close: %+v, want closed", e)
					}
				case <-time.After(2 * time.Second):
					t.Errorf("waiting send not released by close")
				}
			})
		}},
		{"queue_full", flood.url(), `{"queue_max_events": 8}`, func(t *testing.T, s *session) {
			for {
				s.mu.Lock()
				n := len(s.events)
				s.mu.Unlock()
				if n >= 8 {
					return
				}
				time.Sleep(time.Millisecond)
			}
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := sessionClient(t, map[string]any{"retry.initial_interval_ms": 2000, "retry.max_interval_ms": 5000})
			s := newTestSession(t, c, tc.url, nil, tc.cfg)
			tc.setup(t, s)
			start := time.Now()
			s.close()
			if d := time.Since(start); d > time.Second {
				t.Fatalf("close took %v", d)
			}
			t.Logf("close returned in %v", time.Since(start))
			var last sessEvent
			for {
				ev, e := s.next(2 * time.Second)
				if e != nil {
					if e.Status != statusClosed {
						t.Fatalf("next: %+v", e)
					}
					break
				}
				last = ev
			}
			if last.kind != eventClosed {
				t.Fatalf("last event %+v, want closed", last)
			}
		})
	}
}

// TestSessionConnectStep: with on_connect, each connection waits in its
// connect step: a plain send fails fast, a send WHEN_CONNECTED waits, the
// step's own sends go out first, and the server sees them in that order.
func TestSessionConnectStep(t *testing.T) {
	got := make(chan string, 100)
	srv := startWS(t, func(n int, _ *http.Request, c *websocket.Conn) {
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			got <- fmt.Sprintf("%d:%s", n, data)
		}
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"on_connect": true, "handshake_timeout_ms": 5000}`)
	ev := nextOf(t, s, eventConnect, 5*time.Second)
	if e := s.send(websocket.TextMessage, []byte("early"), 0, 0); e == nil || e.Status != statusDisconnected {
		t.Fatalf("plain send in the connect step: %+v, want LIFELINE_E_DISCONNECTED", e)
	}
	waiting := make(chan *Error, 1)
	go func() { waiting <- s.send(websocket.TextMessage, []byte("after"), 5*time.Second, sendWhenConnected) }()
	time.Sleep(50 * time.Millisecond) // let it wait
	if e := s.send(websocket.TextMessage, []byte("subscribe"), 0, sendOnConnect); e != nil {
		t.Fatalf("send on connect: %s", e.Msg)
	}
	if e := s.ready(ev.conn + 1); e == nil || e.Status != statusState {
		t.Fatalf("ready of another connection: %+v, want LIFELINE_E_STATE", e)
	}
	if e := s.ready(ev.conn); e != nil {
		t.Fatalf("ready: %s", e.Msg)
	}
	if e := <-waiting; e != nil {
		t.Fatalf("send when connected: %s", e.Msg)
	}
	if ev := nextOf(t, s, eventConnected, 5*time.Second); ev.conn != 1 {
		t.Fatalf("connected %+v", ev)
	}
	for _, want := range []string{"1:subscribe", "1:after"} {
		select {
		case m := <-got:
			if m != want {
				t.Fatalf("server got %q, want %q", m, want)
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("server never got %q", want)
		}
	}
	if e := s.send(websocket.TextMessage, []byte("x"), 0, sendOnConnect); e == nil || e.Status != statusState {
		t.Fatalf("ON_CONNECT send with no step: %+v, want LIFELINE_E_STATE", e)
	}
}

// TestSessionConnectStepTimesOut: a host that never calls ready has its
// connection closed after the handshake limit, and the session redials
// with a new step.
func TestSessionConnectStepTimesOut(t *testing.T) {
	srv := startWS(t, echo)
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"on_connect": true, "handshake_timeout_ms": 200}`)
	first := nextOf(t, s, eventConnect, 5*time.Second)
	second := nextOf(t, s, eventConnect, 5*time.Second)
	if second.conn <= first.conn {
		t.Fatalf("connect steps %d then %d", first.conn, second.conn)
	}
	if e := s.ready(first.conn); e == nil || e.Status != statusState {
		t.Fatalf("late ready: %+v, want LIFELINE_E_STATE", e)
	}
	if e := s.ready(second.conn); e != nil {
		t.Fatalf("ready: %s", e.Msg)
	}
	nextOf(t, s, eventConnected, 5*time.Second)
}

// TestSessionHeaderForNextDial: set_header reaches the dials after it (a
// refreshed token), replacing the creation header's value.
func TestSessionHeaderForNextDial(t *testing.T) {
	auth := make(chan string, 10)
	srv := startWS(t, func(_ int, r *http.Request, c *websocket.Conn) {
		auth <- r.Header.Get("Authorization")
		c.ReadMessage()
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), http.Header{"Authorization": {"Bearer one"}}, "")
	if got := <-auth; got != "Bearer one" {
		t.Fatalf("first dial: %q", got)
	}
	nextOf(t, s, eventConnected, 5*time.Second)
	s.setHeader("Authorization", ptr("Bearer two"))
	srv.stop()
	srv.start()
	if got := <-auth; got != "Bearer two" {
		t.Fatalf("redial: %q, want the header set for it", got)
	}
}

func ptr(s string) *string { return &s }

// TestSessionBackpressure: a host that does not drain holds the queue at
// its bound; the messages all arrive, in order, once it drains.
func TestSessionBackpressure(t *testing.T) {
	const total = 2000
	srv := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		for i := range total {
			if c.WriteMessage(websocket.BinaryMessage, []byte(fmt.Sprint(i))) != nil {
				return
			}
		}
		c.ReadMessage()
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"queue_max_events": 16}`)
	time.Sleep(300 * time.Millisecond)
	s.mu.Lock()
	n := len(s.events)
	s.mu.Unlock()
	if n > 16 {
		t.Fatalf("queue holds %d events, bound 16", n)
	}
	if n < 16 {
		t.Fatalf("queue holds %d events after 300ms, want it full (16)", n)
	}
	for i := range total {
		ev := nextOf(t, s, eventMessage, 5*time.Second)
		if string(ev.data) != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, ev.data)
		}
	}
}

// TestSessionEventFD: the pipe is readable exactly while events wait
// (level-triggered), and stays readable after the closed event.
func TestSessionEventFD(t *testing.T) {
	srv := startWS(t, echo)
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, "")
	readable := func(ms int) bool {
		fds := []unix.PollFd{{Fd: int32(s.rfd), Events: unix.POLLIN}}
		n, err := unix.Poll(fds, ms)
		if err != nil && err != unix.EINTR {
			t.Fatal(err)
		}
		return n == 1
	}
	if !readable(5000) {
		t.Fatal("no event signalled within 5s of starting")
	}
	if e := s.waitConnected(5 * time.Second); e != nil {
		t.Fatal(e.Msg)
	}
	for { // drain
		if _, e := s.next(0); e != nil {
			break
		}
	}
	if readable(0) {
		t.Fatal("readable with an empty queue")
	}
	s.send(websocket.TextMessage, []byte("ping"), 0, 0)
	if !readable(5000) {
		t.Fatal("not readable after a message arrived")
	}
	if !readable(0) {
		t.Fatal("not readable on a second poll: not level-triggered")
	}
	nextOf(t, s, eventMessage, time.Second)
	if readable(0) {
		t.Fatal("readable after the queue was drained")
	}
	s.close()
	nextOf(t, s, eventClosed, 5*time.Second)
	if !readable(0) {
		t.Fatal("not readable after the closed event was taken")
	}
}

// TestSessionTenThousandMessages: 10,000 messages through one session,
// every one delivered in order, and no goroutine left behind by many
// sessions opened and freed.
func TestSessionTenThousandMessages(t *testing.T) {
	const total = 10000
	srv := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			if string(data) == "go" {
				for i := range total {
					if c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))) != nil {
						return
					}
				}
			}
		}
	})
	c := sessionClient(t, nil)
	before := runtime.NumGoroutine()
	for round := range 3 {
		s := newTestSession(t, c, srv.url(), nil, "")
		if e := s.send(websocket.TextMessage, []byte("go"), 5*time.Second, sendWhenConnected); e != nil {
			t.Fatalf("send: %s", e.Msg)
		}
		for i := range total {
			ev := nextOf(t, s, eventMessage, 5*time.Second)
			if string(ev.data) != fmt.Sprint(i) {
				t.Fatalf("round %d: message %d = %q", round, i, ev.data)
			}
		}
		handles.remove(s.id)
		s.free()
	}
	deadline := time.Now().Add(5 * time.Second)
	for runtime.NumGoroutine() > before+2 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if n := runtime.NumGoroutine(); n > before+2 {
		t.Fatalf("goroutines: %d before, %d after three sessions were freed", before, n)
	}
}

// TestSessionRefusedEnds: a 401 on the upgrade ends the session; the
// closed event carries it.
func TestSessionRefusedEnds(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	})}
	go srv.Serve(ln)
	defer srv.Close()
	c := sessionClient(t, nil)
	s := newTestSession(t, c, "ws://"+ln.Addr().String()+"/?token=secret-in-query", nil, "")
	ev := nextOf(t, s, eventClosed, 5*time.Second)
	if ev.cause == nil || !strings.Contains(ev.cause.Type, "401") {
		t.Fatalf("closed event cause %+v, want the 401", ev.cause)
	}
	if strings.Contains(ev.cause.Msg, "secret-in-query") {
		t.Fatalf("cause message carries the query: %s", ev.cause.Msg)
	}
	if e := s.waitConnected(time.Second); e == nil || e.Status != statusClosed {
		t.Fatalf("wait_connected on a refused session: %+v", e)
	}
}

func TestSessionHandshakeHeadersRefused(t *testing.T) {
	for _, name := range []string{"upgrade", "Connection", "sec-websocket-key", "Sec-WebSocket-Version", "Sec-WebSocket-Extensions"} {
		if e := checkSessionHeader(name, "headers[0].name"); e == nil || e.Status != statusInvalidArgument {
			t.Errorf("%s: %+v, want invalid argument", name, e)
		}
	}
	for _, name := range []string{"Authorization", "Sec-WebSocket-Protocol", "Origin"} {
		if e := checkSessionHeader(name, "headers[0].name"); e != nil {
			t.Errorf("%s refused: %s", name, e.Msg)
		}
	}
}

func TestSessionConfigRejections(t *testing.T) {
	for _, tc := range []struct {
		doc  string
		want int32
	}{
		{`{"nope": 1}`, statusUnknownKey},
		{`{"ping_interval_ms": "x"}`, statusBadValue},
		{`{"on_connect": 1}`, statusBadValue},
		{`{"write_timeout_ms": -1}`, statusBadValue},
		{`[]`, statusInvalidArgument},
		{`{`, statusInvalidArgument},
	} {
		if _, e := parseSessionConfig([]byte(tc.doc)); e == nil || e.Status != tc.want {
			t.Errorf("%s: %+v, want status %d", tc.doc, e, tc.want)
		}
	}
}

// wsHandlers adds the websocket servers of the C tests (LL_WS) to mux:
// /ws/echo sends every message back; /ws/drop sends "N:0" to "N:9" on its
// Nth connection and then closes it (1001, going away); /ws/burst sends
// "0" to "9999" when it reads "go".
func wsHandlers(mux *http.ServeMux) {
	up := websocket.Upgrader{}
	var drops atomic.Int64
	serve := func(f func(c *websocket.Conn)) http.HandlerFunc {
		return func(w http.ResponseWriter, r *http.Request) {
			c, err := up.Upgrade(w, r, nil)
			if err != nil {
				return
			}
			defer c.Close()
			f(c)
		}
	}
	mux.HandleFunc("/ws/echo", serve(func(c *websocket.Conn) { echo(0, nil, c) }))
	mux.HandleFunc("/ws/drop", serve(func(c *websocket.Conn) {
		n := drops.Add(1)
		for i := range 10 {
			if c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprintf("%d:%d", n, i))) != nil {
				return
			}
		}
		c.WriteControl(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseGoingAway, "bye"),
			time.Now().Add(time.Second))
	}))
	mux.HandleFunc("/ws/burst", serve(func(c *websocket.Conn) {
		for {
			_, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			if string(data) == "go" {
				for i := range 10000 {
					if c.WriteMessage(websocket.TextMessage, []byte(fmt.Sprint(i))) != nil {
						return
					}
				}
			}
		}
	}))
}

// TestSessionWSS: a wss:// session trusts the client's tls.ca_pem roots
// (and fails without them: the cause says tls_certificate), and the
// client's metrics carry the websocket metrics.
func TestSessionWSS(t *testing.T) {
	srvTLS, _ := faultnet.SelfSigned(t)
	up := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		echo(0, r, c)
	}))
	srv.TLS = srvTLS.Clone()
	srv.StartTLS()
	t.Cleanup(srv.Close)
	url := "wss://127.0.0.1:" + srv.Listener.Addr().(*net.TCPAddr).AddrPort().String()[len("127.0.0.1:"):] + "/"
	caPEM := string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srvTLS.Certificates[0].Certificate[0]}))

	c := sessionClient(t, map[string]any{"tls.ca_pem": caPEM})
	s := newTestSession(t, c, url, nil, "")
	if e := s.waitConnected(5 * time.Second); e != nil {
		t.Fatalf("wss with the CA: %s", e.Msg)
	}
	if e := s.send(websocket.TextMessage, []byte("over tls"), 0, 0); e != nil {
		t.Fatal(e.Msg)
	}
	if ev := nextOf(t, s, eventMessage, 5*time.Second); string(ev.data) != "over tls" {
		t.Fatalf("echo %q", ev.data)
	}
	snap, e := c.snapshot()
	if e != nil {
		t.Fatal(e.Msg)
	}
	if !strings.Contains(string(snap), "websocket") {
		t.Errorf("metrics snapshot has no websocket metric:\n%s", snap)
	}

	untrusting := sessionClient(t, nil)
	s2 := newTestSession(t, untrusting, url, nil, `{"handshake_timeout_ms": 1000}`)
	if e := s2.waitConnected(500 * time.Millisecond); e == nil {
		t.Fatal("connected to a server whose certificate the client does not trust")
	}
}

// TestSessionSilentPeer: a peer that stops answering (upgraded, then
// never reads: no pong comes back) is found dead by the pings, the
// disconnected event says pong_timeout, and the session redials.
func TestSessionSilentPeer(t *testing.T) {
	release := make(chan struct{})
	srv := startWS(t, func(n int, _ *http.Request, c *websocket.Conn) {
		if n == 1 {
			<-release // silent: never reads, so never answers a ping
			return
		}
		echo(n, nil, c)
	})
	t.Cleanup(func() { close(release) })
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"ping_interval_ms": 100, "pong_timeout_ms": 300}`)
	nextOf(t, s, eventConnected, 5*time.Second)
	start := time.Now()
	ev := nextOf(t, s, eventDisconnected, 10*time.Second)
	if ev.cause == nil || ev.cause.Type != "pong_timeout" || !ev.cause.Timeout {
		t.Fatalf("disconnected cause %+v, want a pong_timeout", ev.cause)
	}
	t.Logf("silent peer found dead after %v", time.Since(start))
	if ev := nextOf(t, s, eventConnected, 5*time.Second); ev.conn != 2 {
		t.Fatalf("redial: connection %d", ev.conn)
	}
}

// TestSessionCallbackMode: every event reaches the callback in order, one
// call at a time, the last being the closed event; a free from inside
// the callback does not wait for itself.
func TestSessionCallbackMode(t *testing.T) {
	srv := startWS(t, echo)
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, "")
	var mu sync.Mutex
	var kinds []int32
	var msgs []string
	freed := make(chan struct{})
	if e := s.startDelivery(func(ev sessEvent) {
		mu.Lock()
		kinds = append(kinds, ev.kind)
		if ev.kind == eventMessage {
			msgs = append(msgs, string(ev.data))
		}
		mu.Unlock()
		if ev.kind == eventClosed {
			handles.remove(s.id)
			s.free() // from inside the callback
			close(freed)
		}
	}); e != nil {
		t.Fatal(e.Msg)
	}
	if e := s.startDelivery(func(sessEvent) {}); e == nil || e.Status != statusState {
		t.Fatalf("second callback: %+v, want LIFELINE_E_STATE", e)
	}
	for i := range 100 {
		if e := s.send(websocket.TextMessage, []byte(fmt.Sprint(i)), 5*time.Second, sendWhenConnected); e != nil {
			t.Fatal(e.Msg)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		n := len(msgs)
		mu.Unlock()
		if n == 100 || time.Now().After(deadline) {
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	s.close()
	select {
	case <-freed:
	case <-time.After(5 * time.Second):
		t.Fatal("the closed event never reached the callback, or free from it hung")
	}
	mu.Lock()
	defer mu.Unlock()
	for i, m := range msgs {
		if m != fmt.Sprint(i) {
			t.Fatalf("message %d = %q", i, m)
		}
	}
	if len(msgs) != 100 || kinds[len(kinds)-1] != eventClosed {
		t.Fatalf("%d messages, last kind %d", len(msgs), kinds[len(kinds)-1])
	}
}
