package transport_test

import (
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/transport"
)

// pongFirstConn holds each ping the client writes until the answer has
// been read from the conn: the pong arrives before the ping's Write
// returns, as on loopback, a sidecar or a fast LAN (issue 20, break 11).
type pongFirstConn struct {
	net.Conn
	mu      sync.Mutex
	waiting chan struct{}
}

func (c *pongFirstConn) Write(p []byte) (int, error) {
	if len(p) < 2 || p[0] != 0x89 { // not a ping frame
		return c.Conn.Write(p)
	}
	ch := make(chan struct{})
	c.mu.Lock()
	c.waiting = ch
	c.mu.Unlock()
	n, err := c.Conn.Write(p)
	if err == nil {
		select {
		case <-ch:
		case <-time.After(time.Second):
		}
	}
	return n, err
}

func (c *pongFirstConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	if n > 0 {
		c.mu.Lock()
		if c.waiting != nil {
			close(c.waiting)
			c.waiting = nil
		}
		c.mu.Unlock()
	}
	return n, err
}

// pongServer upgrades, counts the pings it answers, and reads until the
// conn ends; it never sends a message.
func pongServer(pings *atomic.Int64) func(net.Conn) {
	return wsHandler(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetPingHandler(func(data string) error {
			pings.Add(1)
			return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
		})
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				return
			}
		}
	})
}

// wsReadAll reads c until it fails and sends the error and the count of
// messages read.
func wsReadAll(c *websocket.Conn, n *atomic.Int64) <-chan error {
	errc := make(chan error, 1)
	go func() {
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				errc <- err
				return
			}
			n.Add(1)
		}
	}()
	return errc
}

// TestWebSocketFastPongCounts: every pong arrives before the write of its
// ping returns. The peer is alive: 5s of pings (200ms) and pongs (200ms)
// without a PongTimeoutError.
func TestWebSocketFastPongCounts(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var pings atomic.Int64
		p := newPipeNet(func(int) func(net.Conn) { return pongServer(&pings) })
		p.wrap = func(c net.Conn) net.Conn { return &pongFirstConn{Conn: c} }
		defer p.close()
		d := pipeDialer(p)
		d.PingInterval, d.PongTimeout = 200*time.Millisecond, 200*time.Millisecond
		c, _, err := d.Dial(t.Context(), pipeURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		var msgs atomic.Int64
		errc := wsReadAll(c, &msgs)
		time.Sleep(5 * time.Second)
		synctest.Wait()
		select {
		case err := <-errc:
			t.Fatalf("after %d pings answered at once: %v", pings.Load(), err)
		default:
		}
		if n := pings.Load(); n < 20 {
			t.Fatalf("%d pings in 5s at 200ms, want about 25", n)
		}
		c.Close()
		<-errc
	})
}

// slowReadConn reads at most 4 KiB per Read, each after a pause: a peer
// that reads slowly.
type slowReadConn struct {
	net.Conn
	pause time.Duration
}

func (c *slowReadConn) Read(p []byte) (int, error) {
	time.Sleep(c.pause)
	return c.Conn.Read(p[:min(len(p), 4096)])
}

// TestWebSocketAliveWhileWriting: the application writes a large message
// to a peer that reads slowly (each 4 KiB frame takes 250ms to go, longer
// than PongTimeout) while the peer sends a message every 2ms. Bytes keep
// arriving: the peer is alive, however long the write holds gorilla's
// write lock across the ping interval (issue 20, break 5).
func TestWebSocketAliveWhileWriting(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var pings atomic.Int64
		p := newPipeNet(nil)
		p.plan = func(int) func(net.Conn) {
			h := wsHandler(func(w http.ResponseWriter, r *http.Request) {
				c, err := upgrader.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer c.Close()
				c.SetPingHandler(func(data string) error {
					pings.Add(1)
					return c.WriteControl(websocket.PongMessage, []byte(data), time.Now().Add(time.Second))
				})
				done := make(chan struct{})
				defer close(done)
				go func() {
					tick := time.NewTicker(2 * time.Millisecond)
					defer tick.Stop()
					for {
						select {
						case <-done:
							return
						case <-p.quit:
							return
						case <-tick.C:
						}
						if c.WriteMessage(websocket.TextMessage, []byte("tick")) != nil {
							return
						}
					}
				}()
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			})
			return func(nc net.Conn) { h(&slowReadConn{Conn: nc, pause: 250 * time.Millisecond}) }
		}
		defer p.close()
		d := pipeDialer(p)
		d.PingInterval, d.PongTimeout = 100*time.Millisecond, 200*time.Millisecond
		c, _, err := d.Dial(t.Context(), pipeURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		var msgs atomic.Int64
		errc := wsReadAll(c, &msgs)
		start := time.Now()
		if err := c.WriteMessage(websocket.BinaryMessage, make([]byte, 128<<10)); err != nil {
			t.Fatalf("write of 128 KiB after %v (%d messages received): %v", time.Since(start), msgs.Load(), err)
		}
		took := time.Since(start)
		select {
		case err := <-errc:
			t.Fatalf("conn failed during the write (%v, %d messages received): %v", took, msgs.Load(), err)
		default:
		}
		if took < 2*time.Second || msgs.Load() < 500 || pings.Load() == 0 {
			t.Fatalf("write took %v, %d messages and %d pings arrived: not the scenario", took, msgs.Load(), pings.Load())
		}
		t.Logf("128 KiB written in %v; %d messages received, %d pings answered", took, msgs.Load(), pings.Load())
		c.Close()
		<-errc
	})
}

// TestWebSocketWriteDeadlineWithPingStuck: a ping is stuck in a socket
// that the peer does not drain; a write with a 100ms deadline fails at
// its deadline, not when the ping's write gives up (the risk of issue 20:
// an overrun of up to PongTimeout).
func TestWebSocketWriteDeadlineWithPingStuck(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPipeNet(nil)
		p.plan = func(int) func(net.Conn) { return upgradeAndIgnore(p.quit) }
		defer p.close()
		d := pipeDialer(p)
		d.PingInterval, d.PongTimeout = 100*time.Millisecond, 10*time.Second
		c, _, err := d.Dial(t.Context(), pipeURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		time.Sleep(time.Second) // the first ping went out at 100ms and is stuck
		synctest.Wait()
		start := time.Now()
		_ = c.SetWriteDeadline(start.Add(100 * time.Millisecond))
		err = c.WriteMessage(websocket.TextMessage, []byte("x"))
		took := time.Since(start)
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("write: %v, want a timeout", err)
		}
		if took > 100*time.Millisecond {
			t.Fatalf("write with a 100ms deadline returned after %v", took)
		}
		if errors.Is(err, transport.ErrPongTimeout) {
			t.Fatalf("write: %v; the unsent ping started a pong clock", err)
		}
	})
}

// TestWebSocketMutePeerExactBound: a peer that takes every byte and never
// answers is declared dead exactly PongTimeout after the first ping was
// written (PingInterval 100ms + PongTimeout 200ms), and the error says so.
func TestWebSocketMutePeerExactBound(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPipeNet(func(int) func(net.Conn) {
			return wsHandler(func(w http.ResponseWriter, r *http.Request) {
				if c, err := upgrader.Upgrade(w, r, nil); err == nil {
					_, _ = io.Copy(io.Discard, c.NetConn()) // drains, never parses, never answers
				}
			})
		})
		defer p.close()
		d := pipeDialer(p)
		d.PingInterval, d.PongTimeout = 100*time.Millisecond, 200*time.Millisecond
		c, _, err := d.Dial(t.Context(), pipeURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		start := time.Now()
		_, _, err = c.ReadMessage()
		checkPongTimeout(t, err)
		if took := time.Since(start); took != 300*time.Millisecond {
			t.Fatalf("declared dead after %v, want exactly 300ms", took)
		}
	})
}

// TestWebSocketPongNeverHoldsWrites: the peer pings the client and then
// stops reading, so the client's own ping is stuck in the socket. The
// pong owed to the peer does not take gorilla's write lock (gorilla's own
// handler would hold it for up to a second): a write with a 100ms
// deadline fails at its deadline. Once the peer reads again, the pong
// reaches it with the ping's payload.
func TestWebSocketPongNeverHoldsWrites(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		pongs := make(chan string, 4)
		p := newPipeNet(nil)
		p.plan = func(int) func(net.Conn) {
			return wsHandler(func(w http.ResponseWriter, r *http.Request) {
				c, err := upgrader.Upgrade(w, r, nil)
				if err != nil {
					return
				}
				defer c.Close()
				c.SetPongHandler(func(data string) error {
					pongs <- data
					return nil
				})
				if c.WriteControl(websocket.PingMessage, []byte("are you there"), time.Now().Add(time.Second)) != nil {
					return
				}
				select {
				case <-release:
				case <-p.quit:
					return
				}
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						return
					}
				}
			})
		}
		defer p.close()
		d := pipeDialer(p)
		d.PingInterval, d.PongTimeout = 100*time.Millisecond, 10*time.Second
		c, _, err := d.Dial(t.Context(), pipeURL, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		var msgs atomic.Int64
		errc := wsReadAll(c, &msgs) // handles the peer's ping
		time.Sleep(time.Second)
		synctest.Wait()
		start := time.Now()
		_ = c.SetWriteDeadline(start.Add(100 * time.Millisecond))
		err = c.WriteMessage(websocket.TextMessage, []byte("x"))
		if took := time.Since(start); err == nil || took > 100*time.Millisecond {
			t.Fatalf("write with a 100ms deadline: %v after %v; want a timeout at the deadline", err, took)
		}
		close(release)
		select {
		case got := <-pongs:
			if got != "are you there" {
				t.Fatalf("pong payload %q", got)
			}
		case <-time.After(time.Second):
			t.Fatal("no pong reached the peer once it read again")
		}
		c.Close()
		<-errc
	})
}
