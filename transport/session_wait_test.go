package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// msgLog records the messages each server conn received, as "conn:msg".
type msgLog struct {
	mu   sync.Mutex
	msgs []string
}

func (l *msgLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.msgs...)
}

// recorder upgrades and logs every message as "id:msg"; after hold (0:
// never) it drops the conn.
func (l *msgLog) recorder(id int, hold time.Duration) func(net.Conn) {
	return wsHandler(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		if hold > 0 {
			t := time.AfterFunc(hold, func() { c.NetConn().Close() })
			defer t.Stop()
		}
		for {
			_, msg, err := c.ReadMessage()
			if err != nil {
				return
			}
			l.mu.Lock()
			l.msgs = append(l.msgs, strconv.Itoa(id)+":"+string(msg))
			l.mu.Unlock()
		}
	})
}

const txt = websocket.TextMessage

// TestWebSocketSessionWriteDuringOnConnect walks the interleaving of issue
// 21: OnConnect has taken its snapshot of the subscriptions and is
// sending them when the application subscribes once more. The late
// subscribe, sent with WriteMessageWhenConnected, waits for OnConnect to
// return and reaches the same connection after OnConnect's messages;
// WriteMessage at the same point fails with ErrDisconnected (the
// subscribe that the SDK's next OnConnect would send, missing from this
// connection).
func TestWebSocketSessionWriteDuringOnConnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log msgLog
		p := newPipeNet(func(n int) func(net.Conn) { return log.recorder(n, 0) })
		defer p.close()
		var s *transport.WebSocketSession
		started := make(chan struct{})
		var mu sync.Mutex
		subs := []string{"a"}
		late, plain := make(chan error, 1), make(chan error, 1)
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: pipeDialer(p),
			OnConnect: func(ctx context.Context, conn *websocket.Conn) error {
				<-started
				mu.Lock()
				snap := append([]string(nil), subs...)
				mu.Unlock()
				// The application subscribes now: after the snapshot,
				// before the session counts as connected.
				go func() {
					mu.Lock()
					subs = append(subs, "b")
					mu.Unlock()
					late <- s.WriteMessageWhenConnected(context.Background(), txt, []byte("sub b"))
				}()
				go func() { plain <- s.WriteMessage(context.Background(), txt, []byte("plain")) }()
				synctest.Wait() // the late subscribe waits; the plain write has failed
				if s.State() != transport.WebSocketConnecting {
					t.Errorf("state %v during OnConnect", s.State())
				}
				for _, sub := range snap {
					if err := conn.WriteMessage(txt, []byte("sub "+sub)); err != nil {
						return err
					}
				}
				time.Sleep(50 * time.Millisecond) // the server's answer, say
				return conn.WriteMessage(txt, []byte("ready"))
			}})
		if err != nil {
			t.Fatal(err)
		}
		close(started)
		defer s.Close()
		time.Sleep(time.Second)
		synctest.Wait()
		if err := <-late; err != nil {
			t.Fatalf("late subscribe: %v", err)
		}
		if err := <-plain; !errors.Is(err, transport.ErrDisconnected) {
			t.Fatalf("WriteMessage during OnConnect: %v, want ErrDisconnected", err)
		}
		if got, want := strings.Join(log.get(), " "), "1:sub a 1:ready 1:sub b"; got != want {
			t.Fatalf("server got %q, want %q: the late subscribe on the connection, after OnConnect's", got, want)
		}
		if p.dials() != 1 || s.State() != transport.WebSocketConnected {
			t.Fatalf("%d dials, state %v", p.dials(), s.State())
		}
	})
}

// TestWebSocketSessionWaitAcrossReconnect: writers and waiters that come
// while the session waits out its backoff go on once the next connection
// is up and its OnConnect has returned, and write on that connection,
// after OnConnect's messages.
func TestWebSocketSessionWaitAcrossReconnect(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var log msgLog
		p := newPipeNet(func(n int) func(net.Conn) {
			if n == 1 {
				return log.recorder(n, time.Second)
			}
			return log.recorder(n, 0)
		})
		defer p.close()
		d := pipeDialer(p)
		d.Retry.InitialInterval = 500 * time.Millisecond
		var onConnects atomic.Int64
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: d,
			OnConnect: func(ctx context.Context, conn *websocket.Conn) error {
				n := onConnects.Add(1)
				time.Sleep(100 * time.Millisecond)
				return conn.WriteMessage(txt, []byte(fmt.Sprintf("hello %d", n)))
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if err := s.WaitConnected(t.Context()); err != nil {
			t.Fatal(err)
		}
		if onConnects.Load() != 1 {
			t.Fatalf("WaitConnected returned before OnConnect")
		}
		time.Sleep(1200 * time.Millisecond) // lost at 1.1s; the next dial at 1.6s
		synctest.Wait()
		if s.State() != transport.WebSocketDisconnected {
			t.Fatalf("state %v, want disconnected (in the backoff)", s.State())
		}
		waited, wrote := make(chan int64, 1), make(chan error, 1)
		go func() {
			if err := s.WaitConnected(context.Background()); err != nil {
				waited <- -1
				return
			}
			waited <- onConnects.Load()
		}()
		go func() { wrote <- s.WriteMessageWhenConnected(context.Background(), txt, []byte("x")) }()
		synctest.Wait()
		select {
		case <-waited:
			t.Fatal("WaitConnected returned while disconnected")
		case err := <-wrote:
			t.Fatalf("WriteMessageWhenConnected returned %v while disconnected", err)
		default:
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if n := <-waited; n != 2 {
			t.Fatalf("WaitConnected returned after %d OnConnects (-1: an error), want 2", n)
		}
		if err := <-wrote; err != nil {
			t.Fatalf("write across the reconnect: %v", err)
		}
		if got, want := strings.Join(log.get(), " "), "1:hello 1 2:hello 2 2:x"; got != want {
			t.Fatalf("server got %q, want %q", got, want)
		}
	})
}

// TestWebSocketSessionWaitEnds: WaitConnected and WriteMessageWhenConnected
// end with ctx (its error, on time), with Close (ErrSessionClosed, at
// once, however long the dial would hang) and with a refusal (matching
// ErrSessionClosed and the *HandshakeError).
func TestWebSocketSessionWaitEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPipeNet(func(int) func(net.Conn) { return nil }) // every dial hangs
		defer p.close()
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: pipeDialer(p)})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		start := time.Now()
		if err := s.WaitConnected(ctx); !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != time.Second {
			t.Fatalf("WaitConnected: %v after %v, want the deadline after 1s", err, time.Since(start))
		}
		if err := s.WriteMessageWhenConnected(ctx, txt, []byte("x")); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("WriteMessageWhenConnected with an ended ctx: %v", err)
		}
		errs := make(chan error, 2)
		go func() { errs <- s.WaitConnected(context.Background()) }()
		go func() { errs <- s.WriteMessageWhenConnected(context.Background(), txt, []byte("x")) }()
		time.Sleep(time.Second)
		synctest.Wait()
		start = time.Now()
		s.Close()
		for range 2 {
			if err := <-errs; !errors.Is(err, transport.ErrSessionClosed) {
				t.Errorf("waiter: %v, want ErrSessionClosed", err)
			}
		}
		if took := time.Since(start); took != 0 {
			t.Errorf("waiters woke %v after Close", took)
		}
		if err := s.WaitConnected(context.Background()); !errors.Is(err, transport.ErrSessionClosed) {
			t.Errorf("WaitConnected after Close: %v", err)
		}

		p2 := newPipeNet(func(int) func(net.Conn) {
			return wsHandler(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
		})
		defer p2.close()
		s2, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: pipeDialer(p2)})
		if err != nil {
			t.Fatal(err)
		}
		defer s2.Close()
		err = s2.WriteMessageWhenConnected(context.Background(), txt, []byte("x"))
		var he *transport.HandshakeError
		if !errors.Is(err, transport.ErrSessionClosed) || !errors.As(err, &he) || he.StatusCode != http.StatusForbidden {
			t.Fatalf("after a refusal: %v, want ErrSessionClosed with the 403", err)
		}
	})
}

// subServer is a real websocket server that records the subscriptions
// ("sub <topic>") each connection received, and which connection came
// last.
type subServer struct {
	mu     sync.Mutex
	topics map[int]map[string]bool // by connection
	last   int
	next   atomic.Int64
}

func (ss *subServer) serve(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	id := int(ss.next.Add(1))
	ss.mu.Lock()
	ss.topics[id] = map[string]bool{}
	ss.last = id
	ss.mu.Unlock()
	for {
		_, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if topic, ok := strings.CutPrefix(string(msg), "sub "); ok {
			ss.mu.Lock()
			ss.topics[id][topic] = true
			ss.mu.Unlock()
		}
	}
}

// missing returns the topics of want that the last connection lacks.
func (ss *subServer) missing(want []string) []string {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	var out []string
	for _, topic := range want {
		if !ss.topics[ss.last][topic] {
			out = append(out, topic)
		}
	}
	return out
}

// TestWebSocketSessionSubscribeNeverLost: the SDK pattern against a real
// server whose connections are dropped ten times while the application
// subscribes every millisecond: Subscribe adds the topic to the SDK's set
// and sends it with WriteMessageWhenConnected; OnConnect sends the set and
// then waits 30ms (an answer from the server). After each reconnect, once
// the subscribes in flight have returned, the connection has every
// topic: none fell between OnConnect's snapshot and the connected state.
func TestWebSocketSessionSubscribeNeverLost(t *testing.T) {
	ss := &subServer{topics: map[int]map[string]bool{}}
	srv := startWS(t, ss.serve, nil)
	var mu sync.Mutex
	var subs []string
	d := sessionDialer()
	d.Retry = &retry.Policy{InitialInterval: 5 * time.Millisecond, MaxInterval: 20 * time.Millisecond}
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/"), Dialer: d,
		OnConnect: func(ctx context.Context, conn *websocket.Conn) error {
			mu.Lock()
			snap := append([]string(nil), subs...)
			mu.Unlock()
			for _, topic := range snap {
				if err := conn.WriteMessage(txt, []byte("sub "+topic)); err != nil {
					return err
				}
			}
			time.Sleep(30 * time.Millisecond)
			return nil
		}})
	var inflight sync.WaitGroup
	var failed atomic.Int64
	subscribe := func(topic string) {
		defer inflight.Done()
		mu.Lock()
		subs = append(subs, topic)
		mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := s.WriteMessageWhenConnected(ctx, txt, []byte("sub "+topic)); err != nil {
			// A write that broke with its connection is the next
			// OnConnect's to send; any other error is a failure.
			if !errors.Is(err, transport.ErrDisconnected) {
				failed.Add(1)
				t.Errorf("subscribe %s: %v", topic, err)
			}
		}
	}
	n := 0
	for round := 0; round < 10; {
		before := ss.next.Load()
		srv.DropAll()
		for deadline := time.Now().Add(80 * time.Millisecond); time.Now().Before(deadline); {
			n++
			inflight.Add(1)
			go subscribe("t" + strconv.Itoa(n))
			time.Sleep(time.Millisecond)
		}
		inflight.Wait()
		if ss.next.Load() == before {
			t.Logf("round %d: no reconnect during the subscribes", round)
		}
		mu.Lock()
		all := append([]string(nil), subs...)
		mu.Unlock()
		if err := s.WaitConnected(t.Context()); err != nil {
			t.Fatal(err)
		}
		eventually(t, 5*time.Second, "the connection has every subscription", func() bool {
			if m := ss.missing(all); len(m) > 0 && time.Now().UnixMilli()%500 == 0 {
				t.Logf("round %d: missing %d: %v", round, len(m), m[:min(len(m), 5)])
			}
			return len(ss.missing(all)) == 0 || s.State() != transport.WebSocketConnected
		})
		if s.State() == transport.WebSocketConnected {
			round++ // else dropped again before the check: check the next one
		}
	}
	if failed.Load() > 0 {
		t.Fatalf("%d subscribes failed", failed.Load())
	}
	t.Logf("%d subscribes over %d connections", n, ss.next.Load())
}
