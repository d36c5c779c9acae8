package main

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/transport"
)

// Adversary tests of websocket sessions: a hostile host (many takers, free
// from inside a callback, free while others wait) and a hostile server
// (101 then garbage, oversized messages).

// rawWSServer accepts connections on loopback and hands each to serve
// after reading the handshake request's head.
func rawWSServer(t *testing.T, serve func(c net.Conn, br *bufio.Reader, key string)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				key := ""
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
					if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "Sec-WebSocket-Key") {
						key = strings.TrimSpace(v)
					}
				}
				serve(c, br, key)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "ws://" + ln.Addr().String() + "/ws"
}

func accept101(c net.Conn, key string) error {
	_, err := io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: "+acceptKey(key)+"\r\n\r\n")
	return err
}

// acceptKey is the Sec-WebSocket-Accept of key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}

// stableType fails t when a cause's error_type is not a short, stable
// class for dashboards (lifeline.h): a Go type name such as
// "*errors.errorString" is an implementation detail.
func stableType(t *testing.T, e *Error) {
	t.Helper()
	if e == nil || e.Type == "" || strings.ContainsAny(e.Type, "*. ") {
		t.Fatalf("error_type %q is not a stable class (cause %+v)", typeOf(e), e)
	}
}

func typeOf(e *Error) string {
	if e == nil {
		return ""
	}
	return e.Type
}

// A server that answers the upgrade with 101 and then garbage (not a
// frame) loses that connection: DISCONNECTED, then a redial; close is
// prompt and nothing leaks.
func TestAdvSession101ThenGarbage(t *testing.T) {
	var dials atomic.Int64
	url := rawWSServer(t, func(c net.Conn, br *bufio.Reader, key string) {
		dials.Add(1)
		if accept101(c, key) != nil {
			return
		}
		_, _ = io.WriteString(c, "\xff\xff\xff\xff garbage that is not a websocket frame \x00\x01")
		_, _ = io.Copy(io.Discard, br)
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, url, nil, `{"ping_interval_ms":-1}`)
	nextOf(t, s, eventConnected, 5*time.Second)
	ev := nextOf(t, s, eventDisconnected, 5*time.Second)
	if ev.cause == nil || ev.cause.Status == 0 {
		t.Fatalf("disconnected without a cause: %+v", ev)
	}
	stableType(t, ev.cause)
	nextOf(t, s, eventConnected, 5*time.Second) // redialed
	start := time.Now()
	s.close()
	nextOf(t, s, eventClosed, 5*time.Second)
	if d := time.Since(start); d > 3*time.Second {
		t.Fatalf("close took %v", d)
	}
}

// A message above max_message_bytes is never delivered: the connection
// is closed (1009) and redialed.
func TestAdvSessionOversizedMessage(t *testing.T) {
	srv := startWS(t, func(n int, _ *http.Request, c *websocket.Conn) {
		if n == 1 {
			big := make([]byte, 1<<20+1)
			_ = c.WriteMessage(websocket.BinaryMessage, big)
		} else {
			_ = c.WriteMessage(websocket.TextMessage, []byte("small"))
		}
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"max_message_bytes":1048576}`)
	deadline := time.Now().Add(10 * time.Second)
	sawDisc := false
	for {
		ev := nextEvent(t, s, time.Until(deadline))
		switch ev.kind {
		case eventMessage:
			if len(ev.data) > 1<<20 {
				t.Fatalf("a message of %d bytes passed max_message_bytes", len(ev.data))
			}
			if !sawDisc {
				t.Fatalf("message before the oversized connection was dropped")
			}
			if string(ev.data) != "small" {
				t.Fatalf("message %q", ev.data)
			}
			return
		case eventDisconnected:
			sawDisc = true
			if ev.cause == nil || ev.cause.Type != "message_too_large" {
				t.Fatalf("cause %+v, want error_type message_too_large", ev.cause)
			}
		}
	}
}

// Many threads blocked in next_event while another frees the session:
// every taker returns (CLOSED), no event is delivered twice, and the race
// detector sees nothing.
func TestAdvSessionTakersDuringFree(t *testing.T) {
	srv := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		for i := 0; ; i++ {
			if c.WriteMessage(websocket.TextMessage, []byte("m"+itoa(int64(i)))) != nil {
				return
			}
		}
	})
	for round := 0; round < 5; round++ {
		c := sessionClient(t, nil)
		s := newTestSession(t, c, srv.url(), nil, `{"queue_max_events":8}`)
		var seen sync.Map
		var wg sync.WaitGroup
		var dup atomic.Int64
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					ev, e := s.next(-1)
					if e != nil {
						return
					}
					if ev.kind == eventMessage {
						if _, loaded := seen.LoadOrStore(string(ev.data), true); loaded {
							dup.Add(1)
						}
					}
				}
			}()
		}
		time.Sleep(50 * time.Millisecond)
		done := make(chan struct{})
		go func() {
			defer close(done)
			if handles.remove(s.id) {
				s.free()
			}
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("free did not return")
		}
		wch := make(chan struct{})
		go func() { wg.Wait(); close(wch) }()
		select {
		case <-wch:
		case <-time.After(10 * time.Second):
			t.Fatal("takers still blocked after free")
		}
		if n := dup.Load(); n > 0 {
			t.Fatalf("%d events delivered twice", n)
		}
	}
}

// A callback that frees its own session (on a message), and another that
// closes it: each returns, the delivery ends, no goroutine is left.
func TestAdvSessionFreeAndCloseInCallback(t *testing.T) {
	srv := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		for {
			if c.WriteMessage(websocket.TextMessage, []byte("x")) != nil {
				return
			}
		}
	})
	for _, mode := range []string{"free", "close", "free_twice"} {
		c := sessionClient(t, nil)
		s := newTestSession(t, c, srv.url(), nil, "")
		var calls atomic.Int64
		var after atomic.Int64
		freed := make(chan struct{})
		var once sync.Once
		e := s.startDelivery(func(ev sessEvent) {
			calls.Add(1)
			select {
			case <-freed:
				after.Add(1)
				return
			default:
			}
			if ev.kind != eventMessage {
				return
			}
			once.Do(func() {
				switch mode {
				case "free":
					if handles.remove(s.id) {
						s.free()
					}
				case "free_twice":
					if handles.remove(s.id) {
						s.free()
					}
					if handles.remove(s.id) {
						t.Error("second free removed the handle again")
					}
				case "close":
					s.close()
					s.close()
				}
				if mode != "close" {
					close(freed)
				}
			})
		})
		if e != nil {
			t.Fatal(e.Msg)
		}
		deadline := time.Now().Add(5 * time.Second)
		for {
			s.mu.Lock()
			d := s.deliverDone
			s.mu.Unlock()
			select {
			case <-d:
			case <-time.After(time.Until(deadline)):
				t.Fatalf("%s: delivery goroutine still running", mode)
			}
			break
		}
		if after.Load() > 0 {
			t.Fatalf("%s: %d callbacks after free", mode, after.Load())
		}
	}
}

// A server that sends one message in fragments forever (never FIN) is cut
// at max_message_bytes: DISCONNECTED, and the memory held stays bounded by
// the limit, not by the server's patience.
func TestAdvSessionEndlessFragments(t *testing.T) {
	srv := startWS(t, func(n int, _ *http.Request, c *websocket.Conn) {
		if n > 1 {
			_ = c.WriteMessage(websocket.TextMessage, []byte("after"))
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}
		w, err := c.NextWriter(websocket.BinaryMessage)
		if err != nil {
			return
		}
		p := make([]byte, 4096)
		for {
			if _, err := w.Write(p); err != nil {
				return
			}
		}
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"max_message_bytes":262144}`)
	ev := nextOf(t, s, eventDisconnected, 10*time.Second)
	if ev.cause == nil {
		t.Fatal("no cause")
	}
	if ev.cause.Type != "message_too_large" {
		t.Fatalf("cause %s %q (%s), want error_type message_too_large", ev.cause.Phase, ev.cause.Type, ev.cause.Msg)
	}
	ev = nextOf(t, s, eventMessage, 10*time.Second)
	if string(ev.data) != "after" {
		t.Fatalf("message %q", ev.data)
	}
}

// A server that closes in the middle of a frame: DISCONNECTED with a
// cause, then a redial.
func TestAdvSessionCloseMidFrame(t *testing.T) {
	url := rawWSServer(t, func(c net.Conn, br *bufio.Reader, key string) {
		if accept101(c, key) != nil {
			return
		}
		// A binary frame, FIN, 126: 16-bit length 1000, then 10 bytes.
		_, _ = c.Write([]byte{0x82, 126, 0x03, 0xe8})
		_, _ = c.Write([]byte("0123456789"))
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, url, nil, `{"ping_interval_ms":-1}`)
	for i := 0; i < 2; i++ {
		ev := nextOf(t, s, eventDisconnected, 5*time.Second)
		if ev.cause == nil || ev.cause.Status == 0 {
			t.Fatalf("disconnected without a cause: %+v", ev)
		}
		stableType(t, ev.cause)
	}
}

// A server that never answers pings (it never reads) is found dead by the
// pong timeout and replaced.
func TestAdvSessionPingsUnanswered(t *testing.T) {
	quit := make(chan struct{})
	srv := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		<-quit // never reads: pings stay unanswered
	})
	t.Cleanup(func() { close(quit) }) // before the server's stop
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"ping_interval_ms":100,"pong_timeout_ms":200}`)
	nextOf(t, s, eventConnected, 5*time.Second)
	ev := nextOf(t, s, eventDisconnected, 5*time.Second)
	if ev.cause == nil || ev.cause.Status != statusTimeout {
		t.Fatalf("cause %+v, want a timeout", ev.cause)
	}
	t.Logf("cause: %s %s", ev.cause.Phase, ev.cause.Type)
}

// A secret in the URL's query or userinfo never reaches a cause: a server
// that refuses the upgrade (401) ends the session, and the CLOSED event's
// message names no token.
func TestAdvSessionSecretsStayOutOfCauses(t *testing.T) {
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	}))
	defer hs.Close()
	u := "ws://" + strings.TrimPrefix(hs.URL, "http://") + "/ws?token=QUERY-SECRET"
	c := sessionClient(t, nil)
	s := newTestSession(t, c, u, http.Header{"Authorization": {"Bearer HEADER-SECRET"}}, "")
	ev := nextOf(t, s, eventClosed, 5*time.Second)
	if ev.cause == nil {
		t.Fatal("no cause")
	}
	for _, secret := range []string{"PASSWORD-SECRET", "QUERY-SECRET", "HEADER-SECRET"} {
		if strings.Contains(ev.cause.Msg, secret) || strings.Contains(ev.cause.Type, secret) {
			t.Fatalf("cause carries %s: %s", secret, ev.cause.Msg)
		}
	}
	t.Logf("cause: %s %s %s", ev.cause.Phase, ev.cause.Type, ev.cause.Msg)
}

// Close while the host's connect-step send is stuck on a peer that reads
// nothing (TCP window full): close and the send both return promptly, not
// after write_timeout_ms.
func TestAdvSessionCloseDuringStuckStepSend(t *testing.T) {
	quit := make(chan struct{})
	srv := startWS(t, func(_ int, _ *http.Request, c *websocket.Conn) {
		<-quit // never reads
	})
	t.Cleanup(func() { close(quit) })
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, `{"on_connect":true,"write_timeout_ms":20000,"handshake_timeout_ms":30000,"max_message_bytes":-1}`)
	nextOf(t, s, eventConnect, 5*time.Second)
	sent := make(chan *Error, 1)
	go func() {
		sent <- s.send(websocket.BinaryMessage, make([]byte, 64<<20), 0, sendOnConnect)
	}()
	time.Sleep(300 * time.Millisecond)
	select {
	case e := <-sent:
		t.Fatalf("a 64 MiB send to a peer that reads nothing returned: %+v", e)
	default:
	}
	start := time.Now()
	done := make(chan struct{})
	go func() {
		if handles.remove(s.id) {
			s.free()
		}
		close(done)
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("free blocked 5s behind a stuck connect-step send")
	}
	select {
	case e := <-sent:
		if e == nil {
			t.Fatal("the stuck send succeeded")
		}
		t.Logf("send: %d %s %s after %v", e.Status, e.Type, e.Msg, time.Since(start))
	case <-time.After(5 * time.Second):
		t.Fatal("the send still blocked 5s after free")
	}
}

// The default max_message_bytes (16 MiB) holds: a message one byte above
// it is never delivered.
func TestAdvSessionDefaultMaxMessage(t *testing.T) {
	srv := startWS(t, func(n int, _ *http.Request, c *websocket.Conn) {
		if n == 1 {
			_ = c.WriteMessage(websocket.BinaryMessage, make([]byte, 16<<20+1))
		}
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, srv.url(), nil, "")
	for {
		ev := nextEvent(t, s, 10*time.Second)
		if ev.kind == eventMessage {
			t.Fatalf("a message of %d bytes was delivered", len(ev.data))
		}
		if ev.kind == eventDisconnected {
			if ev.cause == nil || ev.cause.Type != "message_too_large" {
				t.Fatalf("cause %+v", ev.cause)
			}
			return
		}
	}
}

// Answers that are not an upgrade — 200 OK, a 101 with a wrong
// Sec-WebSocket-Accept, 101 and then silence — are failed dials, redialed
// (the doc ends a session only on a 3xx/4xx refusal); each is bounded.
func TestAdvSessionBadUpgradeAnswers(t *testing.T) {
	var n atomic.Int64
	quit := make(chan struct{})
	url := rawWSServer(t, func(c net.Conn, br *bufio.Reader, key string) {
		switch n.Add(1) {
		case 1:
			_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
		case 2:
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
				"Sec-WebSocket-Accept: d3Jvbmc=\r\n\r\n")
		case 3:
			_, _ = io.WriteString(c, "HTTP/1.1 101 Switching")
			select {
			case <-quit:
			case <-time.After(10 * time.Second):
			}
			return
		default:
			if accept101(c, key) != nil {
				return
			}
			_, _ = c.Write([]byte{0x81, 2, 'h', 'i'})
		}
		_, _ = io.Copy(io.Discard, br)
	})
	t.Cleanup(func() { close(quit) })
	c := sessionClient(t, nil)
	s := newTestSession(t, c, url, nil, `{"handshake_timeout_ms":300}`)
	// Each failed dial's STATE (disconnected) event carries its cause,
	// phase "handshake", with a class that is no Go type name.
	var causes []string
	for {
		ev := nextEvent(t, s, 10*time.Second)
		if ev.kind == eventState && ev.state == int32(transport.WebSocketDisconnected) {
			if ev.cause == nil || ev.cause.Phase != "handshake" || ev.cause.Msg == "" || goTypeName(ev.cause.Type) {
				t.Fatalf("STATE (disconnected) cause %+v", ev.cause)
			}
			causes = append(causes, ev.cause.Type)
		}
		if ev.kind == eventMessage {
			if string(ev.data) != "hi" {
				t.Fatalf("message %q", ev.data)
			}
			break
		}
	}
	if want := []string{"http_200", "http_101", "handshake_timeout"}; strings.Join(causes, ",") != strings.Join(want, ",") {
		t.Fatalf("failed dials' causes %v, want %v", causes, want)
	}
	if got := n.Load(); got < 4 {
		t.Fatalf("%d dials", got)
	}
}

// TestSessionCauseClasses: the causes a host sees name the session's
// failures by a stable class and phase, never by a Go type name.
func TestSessionCauseClasses(t *testing.T) {
	for _, tc := range []struct {
		name       string
		err        error
		status     int32
		phase, typ string
		timeout    bool
	}{
		{"pong timeout", fmt.Errorf("read: %w", &transport.PongTimeoutError{Peer: "127.0.0.1:1", PingInterval: time.Second, PongTimeout: time.Second}),
			statusTimeout, "websocket", "pong_timeout", true},
		{"refused upgrade", &transport.HandshakeError{URL: "ws://x/", StatusCode: 503, Err: errors.New("bad status")},
			statusNetwork, "handshake", "http_503", false},
		{"handshake limit", &transport.HandshakeError{URL: "ws://x/", Err: fmt.Errorf("read: %w", context.DeadlineExceeded)},
			statusTimeout, "handshake", "handshake_timeout", true},
		{"odd handshake", &transport.HandshakeError{URL: "ws://x/", Err: errors.New("websocket: bad handshake")},
			statusNetwork, "handshake", "handshake_error", false},
		{"too large", fmt.Errorf("read: %w", websocket.ErrReadLimit), statusNetwork, "websocket", "message_too_large", false},
		{"closed", fmt.Errorf("x: %w", transport.ErrSessionClosed), statusClosed, "canceled", "closed", false},
		{"step timeout", &stepError{msg: "late", timeout: true}, statusTimeout, "connect_step", "connect_step_timeout", true},
		{"step send", &stepError{msg: "send"}, statusNetwork, "connect_step", "connect_step_failed", false},
		{"unknown", fmt.Errorf("wrapped: %w", errors.New("odd")), statusNetwork, "websocket", "websocket_error", false},
		{"close frame", &websocket.CloseError{Code: 1001}, statusNetwork, "websocket", "close_1001", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			e := sessionCause(tc.err)
			if e.Status != tc.status || e.Phase != tc.phase || e.Type != tc.typ || e.Timeout != tc.timeout || e.Msg == "" {
				t.Fatalf("sessionCause = %+v, want status %d phase %q type %q timeout %v", e, tc.status, tc.phase, tc.typ, tc.timeout)
			}
		})
	}
}

// A failed dial's STATE (disconnected) event, end to end, from servers
// that answer with 16 KiB of terminal escapes (a 503's reason phrase, a
// status line that is no HTTP): the cause has its class (http_503,
// handshake_error) and a short message with no control character, so a
// host that logs or shows it is not written to by the server.
func TestAdvSessionHostileAnswerInCause(t *testing.T) {
	junk := "\x1b[2J\x1b]0;owned\x07" + strings.Repeat("A", 16<<10)
	var n atomic.Int64
	url := rawWSServer(t, func(c net.Conn, br *bufio.Reader, key string) {
		switch n.Add(1) {
		case 1:
			_, _ = io.WriteString(c, "HTTP/1.1 503 "+junk+"\r\nContent-Length: 0\r\n\r\n")
		case 2:
			_, _ = io.WriteString(c, junk+"\r\n\r\n")
		default:
			if accept101(c, key) != nil {
				return
			}
		}
		_, _ = io.Copy(io.Discard, br)
	})
	c := sessionClient(t, nil)
	s := newTestSession(t, c, url, nil, "")
	var types []string
	for len(types) < 2 {
		ev := nextEvent(t, s, 10*time.Second)
		if ev.kind == eventConnected {
			t.Fatalf("connected after %d failed dials (%v)", len(types), types)
		}
		if ev.kind != eventState || ev.cause == nil {
			continue
		}
		types = append(types, ev.cause.Type)
		if len(ev.cause.Msg) > 1024 || strings.ContainsAny(ev.cause.Msg, "\x1b\x07") {
			t.Errorf("cause %s: message of %d bytes: %.200q", ev.cause.Type, len(ev.cause.Msg), ev.cause.Msg)
		}
	}
	if strings.Join(types, ",") != "http_503,handshake_error" {
		t.Fatalf("causes %v, want http_503 then handshake_error", types)
	}
	nextOf(t, s, eventConnected, 10*time.Second)
}
