package transport_test

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
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
