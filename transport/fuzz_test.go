package transport_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// pipeServer answers every conn the Dialer makes with reply: it reads the
// request head (an upgrade request for websockets) and writes reply, then
// keeps the conn open until the client closes it or the test ends.
type pipeServer struct {
	mu    sync.Mutex
	reply []byte
	wg    sync.WaitGroup
	done  chan struct{}
}

func newPipeServer(tb testing.TB) *pipeServer {
	ps := &pipeServer{done: make(chan struct{})}
	tb.Cleanup(func() { close(ps.done); ps.wg.Wait() })
	return ps
}

func (ps *pipeServer) set(reply []byte) {
	ps.mu.Lock()
	ps.reply = reply
	ps.mu.Unlock()
}

// dialer is a dial.Dialer whose conns are in-memory pipes to ps: each
// reads the request and answers with the fuzzed reply.
func (ps *pipeServer) dialer() *dial.Dialer {
	return ps.pipeDialer(func(server net.Conn, _ *http.Request, reply []byte) error {
		_, err := server.Write(reply)
		return err
	})
}

// pipe returns the client side of an in-memory pipe whose server side
// serve handles, with the reply set now, on its own goroutine: ps.done
// closes the server side, ps.wg waits for serve to return.
func (ps *pipeServer) pipe(serve func(server net.Conn, reply []byte)) net.Conn {
	client, server := net.Pipe()
	ps.mu.Lock()
	reply := ps.reply
	ps.mu.Unlock()
	ps.wg.Add(1)
	go func() {
		defer ps.wg.Done()
		defer server.Close()
		stop := make(chan struct{})
		defer close(stop)
		go func() {
			select {
			case <-ps.done:
				server.Close()
			case <-stop:
			}
		}()
		serve(server, reply)
	}()
	return client
}

// pipeDialer is a dial.Dialer whose conns are in-memory pipes to ps; each
// conn's server side reads one request, calls answer with it and the
// fuzzed reply, then reads until the client closes.
func (ps *pipeServer) pipeDialer(answer func(server net.Conn, req *http.Request, reply []byte) error) *dial.Dialer {
	return &dial.Dialer{Timeout: time.Second, DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return ps.pipe(func(server net.Conn, reply []byte) {
			br := bufio.NewReader(server)
			req, err := http.ReadRequest(br)
			if err != nil {
				return
			}
			if answer(server, req, reply) != nil {
				return
			}
			_, _ = io.Copy(io.Discard, br) // until the client closes
		}), nil
	}}
}

// FuzzServerReply feeds an arbitrary server reply (status line, headers,
// chunked or sized body, garbage) to the Transport: RoundTrip and the
// body read end, with a response or an error, well within their limits —
// no panic, no hang, and (goleak at TestMain) no goroutine left behind.
func FuzzServerReply(f *testing.F) {
	for _, s := range []string{
		"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhel",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nfffffffffffffffff\r\n",
		"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nTrailer: x\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 99999999999\r\n\r\nx",
		"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
		"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nab",
		"HTTP/1.1 503 Service Unavailable\r\nRetry-After: 1\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 429 Too Many\r\nRetry-After: Fri, 31 Dec 2100 23:59:59 GMT\r\n\r\n",
		"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\nConnection: Upgrade\r\n\r\n",
		"HTTP/1.1 204 No Content\r\nContent-Length: 10\r\n\r\n",
		"HTTP/1.0 200 OK\r\n\r\nbody until close",
		"HTTP/1.1 999 ???\r\n\r\n",
		"HTTP/1.1 200 OK\r\nX: a\r\n b\r\n\r\n",
		"HTTP/1.1 200 OK\nContent-Length: 2\n\nok",
		"HTTP/2.0 200 OK\r\n\r\n",
		"\x00\x00\x12\x04\x00\x00\x00\x00\x00",
		"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: 3\r\n\r\nabc",
		"",
	} {
		f.Add([]byte(s))
	}
	ps := newPipeServer(f)
	tr := &transport.Transport{
		Dialer:           ps.dialer(),
		Proxy:            noProxy,
		FirstByteTimeout: 200 * time.Millisecond,
		StallTimeout:     200 * time.Millisecond,
		Retry:            &retry.Policy{MaxAttempts: 2, InitialInterval: time.Millisecond, MaxRetryAfter: 10 * time.Millisecond},
	}
	f.Cleanup(tr.CloseIdleConnections)
	f.Fuzz(func(t *testing.T, reply []byte) {
		ps.set(reply)
		getBounded(t, tr, "http://127.0.0.1:1/x", 0)
	})
}

// getBounded makes a GET through tr to a server that answers with the
// fuzzed reply: RoundTrip and the body read (up to 1 MiB) end, with a
// response (over HTTP/proto.x, when proto is not 0) or an error, within
// two tries of FirstByteTimeout or StallTimeout plus slack for a loaded
// machine — never the 5s of the context.
func getBounded(t *testing.T, tr *transport.Transport, url string, proto int) {
	t.Helper()
	// A hang past the context's own deadline would stall the fuzzer
	// without a word: crash with every goroutine's stack instead, so that
	// the input is saved and the stuck place is named.
	hung := time.AfterFunc(10*time.Second, func() {
		buf := make([]byte, 1<<20)
		panic("a fuzzed reply hung the transport past its deadline:\n" + string(buf[:runtime.Stack(buf, true)]))
	})
	defer hung.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	start := time.Now()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := tr.RoundTrip(req)
	if err == nil {
		if resp == nil {
			t.Fatal("no response and no error")
		}
		if proto != 0 && resp.ProtoMajor != proto {
			t.Fatalf("answer over HTTP/%d.%d, want HTTP/%d", resp.ProtoMajor, resp.ProtoMinor, proto)
		}
		// A 101's body is the upgraded conn, the caller's to bound.
		if resp.Body != nil && resp.StatusCode != http.StatusSwitchingProtocols {
			_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 1<<20))
		}
		if resp.Body != nil {
			resp.Body.Close()
		}
	}
	if d := time.Since(start); d > 3*time.Second || errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("took %v (err %v)", d, err)
	}
	tr.CloseIdleConnections()
}

// FuzzWebSocketFrames feeds arbitrary bytes after a valid 101 answer (the
// frames a hostile or broken peer sends) to a conn from WebSocketDialer and
// to a WebSocketSession: reading ends with an error, quickly, without a
// panic (gorilla panics on repeated reads of a failed conn; nothing here
// may do that) and without a goroutine left behind.
func FuzzWebSocketFrames(f *testing.F) {
	for _, s := range []string{
		"\x81\x05hello",                            // text
		"\x82\x7e\x00\x04abcd",                     // binary, 16-bit length
		"\x82\x7f\x00\x00\x01\x00\x00\x00\x00\x00", // 1 TiB
		"\x01\x02he\x80\x03llo",                    // fragments
		"\x89\x00\x8a\x00\x81\x01x",                // ping, pong, text
		"\x88\x02\x03\xe8",                         // close 1000
		"\x88\x01\x03",                             // bad close payload
		"\x81\x85\x00\x00\x00\x00hello",            // masked by the server: invalid
		"\x83\x00",                                 // reserved opcode
		"\xc1\x00",                                 // RSV1 without extension
		"\x81\x02\xff\xfe",                         // invalid UTF-8
		"\x09\x00",                                 // fragmented control frame
		"",
	} {
		f.Add([]byte(s))
	}
	ps := newPipeServer(f)
	const head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
		"Sec-WebSocket-Accept: "
	wd := &transport.WebSocketDialer{Dialer: ps.dialer(), Proxy: noProxy, HandshakeTimeout: time.Second,
		PingInterval: 100 * time.Millisecond, PongTimeout: 100 * time.Millisecond, MaxMessageSize: 1 << 16,
		Retry: &retry.Policy{MaxAttempts: 1}}
	f.Fuzz(func(t *testing.T, frames []byte) {
		// The accept key depends on the client's random key: the pipe
		// server computes it per conn.
		ps.set(frames)
		d := *wd
		d.Dialer = ps.upgradeDialer(head)
		start := time.Now()
		c, _, err := d.Dial(context.Background(), "ws://127.0.0.1:1/", nil)
		if err != nil {
			t.Fatalf("handshake: %v", err)
		}
		for {
			if _, _, err := c.ReadMessage(); err != nil {
				break
			}
			if time.Since(start) > 3*time.Second {
				t.Fatal("the peer's frames kept a reader busy for 3s")
			}
		}
		c.Close()

		msgs := make(chan struct{}, 64)
		lost := make(chan error, 1)
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
			URL: "ws://127.0.0.1:1/", Dialer: &d,
			OnMessage: func(int, []byte) {
				select {
				case msgs <- struct{}{}:
				default:
				}
			},
			OnDisconnect: func(err error) {
				select {
				case lost <- err:
				default:
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-lost:
		case <-time.After(300 * time.Millisecond):
		}
		closed := make(chan struct{})
		go func() { s.Close(); close(closed) }()
		select {
		case <-closed:
		case <-time.After(3 * time.Second):
			t.Fatal("session Close hung")
		}
	})
}

// upgradeDialer is dialer, but each conn answers the upgrade with head,
// the accept key for the request's key, and then the fuzzed frames.
func (ps *pipeServer) upgradeDialer(head string) *dial.Dialer {
	return ps.pipeDialer(func(server net.Conn, req *http.Request, frames []byte) error {
		if _, err := io.WriteString(server, head+acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n"); err != nil {
			return err
		}
		_, err := server.Write(frames)
		return err
	})
}
