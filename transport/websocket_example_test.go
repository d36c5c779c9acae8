package transport_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/transport"
)

// echoServer is a websocket echo server on loopback.
func echoServer() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(echo))
}

// A WebSocketDialer dials like gorilla's Dialer, with every phase bounded
// and a conn that pings its peer.
func ExampleWebSocketDialer_Dial() {
	srv := echoServer()
	defer srv.Close()

	d := &transport.WebSocketDialer{
		HandshakeTimeout: 5 * time.Second,  // DNS to the 101
		PingInterval:     15 * time.Second, // the default
		PongTimeout:      10 * time.Second, // the default
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, resp, err := d.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+"/echo", nil)
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer conn.Close()
	fmt.Println("status:", resp.StatusCode)

	_ = conn.WriteMessage(websocket.TextMessage, []byte("hello"))
	_, msg, err := conn.ReadMessage()
	fmt.Printf("echo: %s %v\n", msg, err)
	// Output:
	// status: 101
	// echo: hello <nil>
}

// A WebSocketSession keeps the connection up; hooks report its states and
// deliver messages in order.
func ExampleWebSocketSession() {
	srv := echoServer()
	defer srv.Close()

	connected := make(chan struct{}, 1)
	got := make(chan string, 1)
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/echo",
		OnStateChange: func(st transport.WebSocketState) {
			fmt.Println("state:", st)
			if st == transport.WebSocketConnected {
				connected <- struct{}{}
			}
		},
		OnMessage: func(_ int, data []byte) { got <- string(data) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	<-connected
	if err := s.WriteMessage(context.Background(), websocket.TextMessage, []byte("hello")); err != nil {
		fmt.Println("write:", err)
	}
	fmt.Println("echo:", <-got)
	s.Close() // returns once everything the session started has ended
	// Output:
	// state: connecting
	// state: connected
	// echo: hello
	// state: closed
}

// authEcho is an echo server that takes only "Bearer fresh".
func authEcho() *httptest.Server {
	return httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer fresh" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		echo(w, r)
	}))
}

// renewingToken is a Credentials whose token was "stale" until renewed.
type renewingToken struct {
	mu    sync.Mutex
	token string
}

func (c *renewingToken) Apply(req *http.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	req.Header.Set("Authorization", "Bearer "+c.token)
	return nil
}

func (c *renewingToken) Refresh(ctx context.Context, rejected *http.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if rejected.Header.Get("Authorization") == "Bearer "+c.token {
		fmt.Println("refreshing after a 401")
		c.token = "fresh" // a real one fetches, bounded by ctx
	}
	return nil
}

// Credentials go on every handshake; a 401 or 403 renews them once and
// the handshake is tried again.
func ExampleWebSocketDialer_credentials() {
	srv := authEcho()
	defer srv.Close()

	d := &transport.WebSocketDialer{Credentials: &renewingToken{token: "stale"}}
	conn, resp, err := d.Dial(context.Background(), "ws"+strings.TrimPrefix(srv.URL, "http"), nil)
	if err != nil {
		fmt.Println("dial:", err)
		return
	}
	defer conn.Close()
	fmt.Println("status:", resp.StatusCode)
	// Output:
	// refreshing after a 401
	// status: 101
}

// An SDK's subscribe: WriteMessageWhenConnected waits for the connection
// and its OnConnect (which resubscribes after each reconnect), so a
// subscribe made while the session connects is neither lost nor sent
// before OnConnect's messages. HeaderFunc gives each dial fresh headers.
func ExampleWebSocketSession_WriteMessageWhenConnected() {
	srv := authEcho()
	defer srv.Close()

	got := make(chan string, 2)
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws" + strings.TrimPrefix(srv.URL, "http"),
		HeaderFunc: func(ctx context.Context) (http.Header, error) {
			return http.Header{"Authorization": {"Bearer fresh"}}, nil // from a token source
		},
		OnConnect: func(ctx context.Context, conn *websocket.Conn) error {
			return conn.WriteMessage(websocket.TextMessage, []byte("hello"))
		},
		OnMessage: func(_ int, data []byte) { got <- string(data) },
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	// Sent now, before the session is connected: it waits.
	if err := s.WriteMessageWhenConnected(ctx, websocket.TextMessage, []byte("sub rooms/1")); err != nil {
		fmt.Println("subscribe:", err)
		return
	}
	fmt.Println("connected:", s.WaitConnected(ctx) == nil)
	fmt.Println("echo:", <-got)
	fmt.Println("echo:", <-got)
	// Output:
	// connected: true
	// echo: hello
	// echo: sub rooms/1
}

// WaitConnected waits, bounded by its context, for the session's
// connection (after OnConnect), instead of a loop around OnStateChange.
func ExampleWebSocketSession_WaitConnected() {
	srv := echoServer()
	defer srv.Close()

	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws" + strings.TrimPrefix(srv.URL, "http"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("wait:", s.WaitConnected(ctx), s.State())
	s.Close()
	fmt.Println("after Close:", s.WaitConnected(ctx))
	// Output:
	// wait: <nil> connected
	// after Close: transport: websocket session closed
}
