// Command websocket shows a lifeline WebSocketSession riding out a server
// that is killed and restarted: the client sends and receives through the
// outage, printing every state change, the cause of each loss and what
// got through. The server runs in-process on a loopback port; nothing
// leaves the machine.
//
//	go run ./examples/websocket
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"sync"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

func main() {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "websocket:", err)
		os.Exit(1)
	}
}

// server is an echo server that can be killed (listener and every conn
// closed at once, like a crashed process) and started again on its port.
type server struct {
	addr  string
	mu    sync.Mutex
	ln    net.Listener
	srv   *http.Server
	conns map[*websocket.Conn]struct{}
	wg    sync.WaitGroup // Serve and the handlers
}

func (s *server) start() error {
	ln, err := net.Listen("tcp", s.addr)
	if err != nil {
		return err
	}
	s.addr = ln.Addr().String()
	up := websocket.Upgrader{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := up.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		defer s.wg.Done()
		defer c.Close()
		for {
			typ, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			if err := c.WriteMessage(typ, append([]byte("echo: "), msg...)); err != nil {
				return
			}
		}
	}), ReadHeaderTimeout: 5 * time.Second}
	s.mu.Lock()
	s.ln, s.srv, s.conns = ln, srv, map[*websocket.Conn]struct{}{}
	s.mu.Unlock()
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		_ = srv.Serve(ln)
	}()
	return nil
}

// kill stops the server abruptly: no close frame, conns just dropped.
func (s *server) kill() {
	s.mu.Lock()
	_ = s.srv.Close() // the listener and conns not yet upgraded
	for c := range s.conns {
		_ = c.NetConn().Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func run(ctx context.Context, out io.Writer) error {
	srv := &server{addr: "127.0.0.1:0"}
	if err := srv.start(); err != nil {
		return err
	}
	defer srv.kill()

	var mu sync.Mutex // orders the lines of the hooks and of run
	say := func(format string, args ...any) {
		mu.Lock()
		defer mu.Unlock()
		fmt.Fprintf(out, format+"\n", args...)
	}
	connected := make(chan struct{}, 1)
	echoes := make(chan string, 16)
	sess, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws://" + srv.addr + "/echo",
		Dialer: &transport.WebSocketDialer{
			HandshakeTimeout: 2 * time.Second,
			PingInterval:     500 * time.Millisecond,
			PongTimeout:      500 * time.Millisecond,
			Retry:            &retry.Policy{InitialInterval: 50 * time.Millisecond, MaxInterval: 400 * time.Millisecond},
		},
		OnStateChange: func(st transport.WebSocketState) {
			say("state: %s", st)
			if st == transport.WebSocketConnected {
				select {
				case connected <- struct{}{}:
				default:
				}
			}
		},
		OnDisconnect: func(cause error) { say("lost the connection: %v", cause) },
		OnMessage:    func(_ int, data []byte) { echoes <- string(data) },
	})
	if err != nil {
		return err
	}
	defer sess.Close()

	waitConnected := func() error {
		select {
		case <-connected:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	send := func(msg string) error {
		if err := sess.WriteMessage(ctx, websocket.TextMessage, []byte(msg)); err != nil {
			return err
		}
		select {
		case e := <-echoes:
			say("received %q", e)
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	for round := 1; round <= 3; round++ {
		if err := waitConnected(); err != nil {
			return err
		}
		if err := send(fmt.Sprintf("hello %d", round)); err != nil {
			return err
		}
		if round == 3 {
			break
		}
		say("-- killing the server")
		srv.kill()
		// While it is down, writes fail at once: nothing is queued.
		for sess.State() == transport.WebSocketConnected {
			time.Sleep(10 * time.Millisecond)
		}
		err := sess.WriteMessage(ctx, websocket.TextMessage, []byte("while down"))
		say("write while down: disconnected=%v", errors.Is(err, transport.ErrDisconnected))
		time.Sleep(300 * time.Millisecond)
		say("-- restarting the server")
		if err := srv.start(); err != nil {
			return err
		}
	}
	say("-- closing")
	return sess.Close()
}
