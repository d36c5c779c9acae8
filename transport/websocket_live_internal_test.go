package transport

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
	"net/url"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
)

// stallConn stalls every Read once stalled is set: a pump held up while
// the peer's bytes reach the socket (a TLS read that waits to answer a
// KeyUpdate behind a write, or the scheduler).
type stallConn struct {
	net.Conn
	stalled atomic.Bool
	release chan struct{}
}

func (s *stallConn) Read(p []byte) (int, error) {
	if s.stalled.Load() {
		<-s.release
	}
	return s.Conn.Read(p)
}

func (s *stallConn) NetConn() net.Conn { return s.Conn }

// TestWebSocketUnreadAnswersCount: the peer answers every ping, and its
// pongs wait in the socket's receive queue while the pump is held up: the
// peer is alive, and is not declared dead for what this side did not
// read.
func TestWebSocketUnreadAnswersCount(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReader(c)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		h := sha1.Sum([]byte(req.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: %s\r\n\r\n", base64.StdEncoding.EncodeToString(h[:]))
		for {
			var f [6]byte // the client's empty pings
			if _, err := io.ReadFull(br, f[:]); err != nil {
				return
			}
			if _, err := c.Write([]byte{0x8a, 0}); err != nil {
				return
			}
		}
	}()
	sc := &stallConn{release: make(chan struct{})}
	d := &WebSocketDialer{
		Dialer: &dial.Dialer{DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := (&net.Dialer{}).DialContext(ctx, network, addr)
			sc.Conn = c
			return sc, err
		}},
		Proxy:        func(*http.Request) (*url.URL, error) { return nil, nil },
		Retry:        &retry.Policy{MaxAttempts: 1},
		// PongTimeout well above a loaded machine's scheduling lag (make
		// stress's CPU hogs delayed the peer's answer past 150ms once):
		// the stall below still outlasts it several times.
		PingInterval: 50 * time.Millisecond, PongTimeout: 400 * time.Millisecond,
	}
	c, _, err := d.Dial(t.Context(), "ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var once sync.Once
	release := func() { once.Do(func() { sc.stalled.Store(false); close(sc.release) }) }
	defer release() // before Close, which waits for the pump
	sc.stalled.Store(true)
	time.Sleep(1600 * time.Millisecond) // four PongTimeouts, pongs piling up unread
	lc := c.NetConn().(*liveConn)
	if err := lc.failure(); err != nil {
		t.Fatalf("declared dead with its answers in the receive queue: %v", err)
	}
	release()
	_ = c.SetReadDeadline(time.Now().Add(200 * time.Millisecond))
	_, _, err = c.ReadMessage()
	var ne net.Error
	if !errors.As(err, &ne) || !ne.Timeout() || errors.Is(err, ErrPongTimeout) {
		t.Fatalf("read after the stall: %v, want the read deadline's own timeout", err)
	}
}
