package main

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// The vanished peer: a server in a network namespace the test creates,
// whose traffic nftables then drops (no FIN, no RST: a network flap). The
// C, Python and Rust tests replay the same fault through the C ABI.

// nsServe serves handler on a listener inside ns; it returns the port.
func nsServe(t *testing.T, ns *faultnet.Netns, handler http.Handler) int {
	t.Helper()
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: handler}
	done := make(chan struct{})
	go func() { defer close(done); srv.Serve(ln) }()
	t.Cleanup(func() { srv.Close(); <-done })
	return ln.Addr().(*net.TCPAddr).Port
}

// nsEcho is a websocket echo handler whose connections are closed when
// the test ends (a hijacked conn is not the http.Server's to close, and
// one whose peer vanished would read forever).
func nsEcho(t *testing.T) http.Handler {
	up := websocket.Upgrader{}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		defer context.AfterFunc(t.Context(), func() { c.Close() })()
		echo(0, r, c)
	})
}

// nsClient is a client whose every dial is made inside ns.
func nsClient(t *testing.T, ns *faultnet.Netns, doc map[string]any) *client {
	t.Helper()
	c := sessionClient(t, doc)
	c.mu.Lock()
	b, e := c.freeze()
	c.mu.Unlock()
	if e != nil {
		t.Fatal(e.Msg)
	}
	b.tr.Dialer.DialFunc = ns.DialContext
	return c
}

// TestSessionVanishedPeer: the peer vanishes. The session reports
// DISCONNECTED with phase "websocket", error type "pong_timeout" within
// PingInterval + PongTimeout (plus slack); its redials fail while the
// traffic is dropped (each STATE event says why), and it reconnects once
// the traffic flows again.
func TestSessionVanishedPeer(t *testing.T) {
	ns := faultnet.NewNetns(t)
	port := nsServe(t, ns, nsEcho(t))
	c := nsClient(t, ns, map[string]any{"dial.connect_timeout_ms": 300, "dial.timeout_ms": 600})
	const ping, pong = 200 * time.Millisecond, 400 * time.Millisecond
	s := newTestSession(t, c, fmt.Sprintf("ws://127.0.0.1:%d/", port), nil,
		`{"ping_interval_ms": 200, "pong_timeout_ms": 400, "handshake_timeout_ms": 600}`)
	if ev := nextOf(t, s, eventConnected, 10*time.Second); ev.conn != 1 {
		t.Fatalf("connected: connection %d", ev.conn)
	}
	if e := s.send(websocket.TextMessage, []byte("before"), time.Second, 0); e != nil {
		t.Fatal(e.Msg)
	}
	if ev := nextOf(t, s, eventMessage, 5*time.Second); string(ev.data) != "before" {
		t.Fatalf("echo %q", ev.data)
	}
	if err := ns.Vanish(port); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	ev := nextOf(t, s, eventDisconnected, 10*time.Second)
	took := time.Since(start)
	if ev.cause == nil || ev.cause.Status != statusTimeout || ev.cause.Phase != "websocket" ||
		ev.cause.Type != "pong_timeout" || !ev.cause.Timeout {
		t.Fatalf("disconnected cause %+v, want a pong_timeout", ev.cause)
	}
	// A loaded machine gets slack; a hang would last until TCP gave up.
	if limit := ping + pong + 2*time.Second; took > limit {
		t.Fatalf("vanished peer reported after %v, want within %v", took, limit)
	}
	t.Logf("vanished peer reported after %v (ping %v + pong %v)", took, ping, pong)
	// The redials fail while the traffic is dropped; each says why.
	for {
		ev := nextEvent(t, s, 10*time.Second)
		if ev.kind == eventConnected {
			t.Fatal("connected while the peer's traffic is dropped")
		}
		if ev.kind == eventState && ev.state == int32(transport.WebSocketDisconnected) {
			if ev.cause == nil || !ev.cause.Timeout || ev.cause.Msg == "" {
				t.Fatalf("failed redial's STATE cause %+v", ev.cause)
			}
			t.Logf("redial failed: %s/%s", ev.cause.Phase, ev.cause.Type)
			break
		}
	}
	if err := ns.Flush(); err != nil {
		t.Fatal(err)
	}
	if ev := nextOf(t, s, eventConnected, 10*time.Second); ev.conn != 2 {
		t.Fatalf("reconnected as connection %d", ev.conn)
	}
	if e := s.send(websocket.TextMessage, []byte("after"), time.Second, 0); e != nil {
		t.Fatal(e.Msg)
	}
	if ev := nextOf(t, s, eventMessage, 5*time.Second); string(ev.data) != "after" {
		t.Fatalf("echo %q", ev.data)
	}
}

// TestStreamVanishedPeer: a streamed body whose peer vanishes mid-way
// ends by the stall limit, with phase "stall", the bytes before it
// delivered first.
func TestStreamVanishedPeer(t *testing.T) {
	ns := faultnet.NewNetns(t)
	stop := make(chan struct{})
	port := nsServe(t, ns, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(func() { close(stop) })
	c := nsClient(t, ns, map[string]any{"transport.stall_timeout_ms": 500, "retry.max_attempts": 1})
	o := startStream(t, c, &request{url: fmt.Sprintf("http://127.0.0.1:%d/events", port), deadline: -1}, false)
	p := make([]byte, 4096)
	got := 0
	for got < 30 {
		n, e := bodyRead(o, p, 5*time.Second)
		if e != nil || n == 0 {
			t.Fatalf("read before the fault: %d, %+v", n, e)
		}
		got += n
	}
	if err := ns.Vanish(port); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	var e *Error
	for {
		var n int
		n, e = bodyRead(o, p, -1)
		if e != nil || n == 0 {
			break
		}
	}
	took := time.Since(start)
	if e == nil || e.Status != statusTimeout || e.Phase != "stall" || e.Type != "stall_timeout" {
		t.Fatalf("read after the peer vanished: %+v, want the stall", e)
	}
	if took > 500*time.Millisecond+3*time.Second {
		t.Fatalf("stall reported after %v; limit 500ms", took)
	}
	t.Logf("vanished body peer: stall after %v (limit 500ms)", took)
}

// TestSessionSlowReader: a host that does not drain its events. The queue
// stops at queue_max_events (and at queue_max_bytes), nothing is dropped,
// and the session stops reading from the socket without losing the
// connection: the peer is still answered pings while the host sleeps
// through many ping intervals, so no DISCONNECTED comes and every message
// arrives in order once the host drains.
func TestSessionSlowReader(t *testing.T) {
	const total = 500
	payload := make([]byte, 1000)
	srv := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		for i := range total {
			copy(payload, fmt.Sprintf("%04d", i))
			if c.WriteMessage(websocket.BinaryMessage, payload) != nil {
				return
			}
		}
		c.ReadMessage()
	})
	for _, tc := range []struct {
		name, cfg string
		bound     int
	}{
		{"events", `{"queue_max_events": 16, "ping_interval_ms": 100, "pong_timeout_ms": 200}`, 16},
		// 4 messages of 1000 bytes fit 4500 bytes; the STATE
		// (connecting) and CONNECTED events before them have none.
		{"bytes", `{"queue_max_bytes": 4500, "ping_interval_ms": 100, "pong_timeout_ms": 200}`, 6},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := sessionClient(t, nil)
			s := newTestSession(t, c, srv.url(), nil, tc.cfg)
			// Many ping intervals with the host asleep: a session that
			// stopped answering pings would lose the connection here.
			time.Sleep(1500 * time.Millisecond)
			s.mu.Lock()
			n, bytes := len(s.events), s.bytes
			s.mu.Unlock()
			if n != tc.bound || bytes > 4500 && tc.name == "bytes" {
				t.Fatalf("queue holds %d events (%d bytes) after 1.5s, want it at its bound %d", n, bytes, tc.bound)
			}
			for i := range total {
				ev := nextEvent(t, s, 5*time.Second)
				for ev.kind != eventMessage {
					if ev.kind == eventDisconnected || ev.kind == eventClosed {
						t.Fatalf("before message %d: event %d (cause %+v): the slow host cost the connection", i, ev.kind, ev.cause)
					}
					ev = nextEvent(t, s, 5*time.Second)
				}
				if got := string(ev.data[:4]); got != fmt.Sprintf("%04d", i) || ev.conn != 1 {
					t.Fatalf("message %d = %q on connection %d", i, got, ev.conn)
				}
			}
		})
	}
}

// TestStreamSlowReaderWhileBytesArrive: a body that trickles (a piece
// every 50ms, far under the 300ms stall limit) read by a host that
// sleeps a second between reads is not cut: the stall limit times the
// peer, not the host.
func TestStreamSlowReaderWhileBytesArrive(t *testing.T) {
	const pieces = 40
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := range pieces {
			fmt.Fprintf(w, "%03d:%s\n", i, strings.Repeat("x", 195))
			w.(http.Flusher).Flush()
			time.Sleep(50 * time.Millisecond)
		}
	}))
	defer srv.Close()
	c := streamClient(t, map[string]any{"transport.stall_timeout_ms": 300, "retry.max_attempts": 1})
	o := startStream(t, c, &request{url: srv.URL, deadline: -1}, false)
	var got []byte
	p := make([]byte, 64<<10)
	for i := 0; ; i++ {
		if i < 3 {
			time.Sleep(time.Second)
		}
		n, e := bodyRead(o, p, 5*time.Second)
		if e != nil {
			t.Fatalf("read after %d bytes: %+v: a slow host was taken for a stall", len(got), e)
		}
		if n == 0 {
			break
		}
		got = append(got, p[:n]...)
	}
	if len(got) != pieces*200 {
		t.Fatalf("got %d bytes, want %d", len(got), pieces*200)
	}
}

// TestCVanishedPeer runs the C tests of vanished peers (ctest "vanish")
// inside a namespace, with `ip netns exec`, against servers in it: the
// program makes nftables drop their traffic and lets it flow again with
// the commands it is given.
func TestCVanishedPeer(t *testing.T) {
	needCC(t)
	ns := faultnet.NewNetns(t)
	wsPort := nsServe(t, ns, nsEcho(t))
	stop := make(chan struct{})
	streamPort := nsServe(t, ns, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for i := 0; ; i++ {
			if _, err := fmt.Fprintf(w, "data: %d\n\n", i); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	t.Cleanup(func() { close(stop) })
	lib := build(t, &shared, "c-shared", "liblifeline.so", "")
	bin := filepath.Join(t.TempDir(), "lifeline_test_vanish")
	compileShared(t, lib, bin)
	rules := filepath.Join(t.TempDir(), "vanish.nft")
	var b strings.Builder
	b.WriteString("table inet lifeline {\n\tchain input {\n\t\ttype filter hook input priority 0; policy accept;\n\t}\n}\n")
	for _, p := range []int{wsPort, streamPort} {
		fmt.Fprintf(&b, "add rule inet lifeline input tcp dport %d drop\nadd rule inet lifeline input tcp sport %d drop\n", p, p)
	}
	if err := os.WriteFile(rules, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	nft, err := exec.LookPath("nft")
	if err != nil {
		t.Skip("nft not found")
	}
	ip, err := exec.LookPath("ip")
	if err != nil {
		t.Skip("ip not found")
	}
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, ip, "netns", "exec", ns.Name, bin, "vanish")
	cmd.Env = append(os.Environ(),
		fmt.Sprintf("LL_NS_WS=ws://127.0.0.1:%d/", wsPort),
		fmt.Sprintf("LL_NS_STREAM=http://127.0.0.1:%d/events", streamPort),
		"LL_VANISH_CMD="+nft+" -f "+rules,
		// Deleting a table that is not there fails: declare it first.
		"LL_FLOW_CMD="+nft+" 'table inet lifeline {}; delete table inet lifeline'",
		"NO_PROXY=*", "no_proxy=*")
	out, err := cmd.CombinedOutput()
	t.Logf("%s", out)
	if err != nil {
		t.Fatalf("ip netns exec %s: %v", bin, err)
	}
	checkOK(t, strings.Split(string(out), "\n"), "session_vanish", "stream_vanish")
}
