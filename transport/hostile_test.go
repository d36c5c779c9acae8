package transport_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// hostile is a loopback TCP server that answers every conn with serve and
// counts the bytes it managed to write: what a client read (and could
// have buffered) is at most that.
type hostile struct {
	ln      net.Listener
	wrote   atomic.Int64
	conns   atomic.Int64
	wg      sync.WaitGroup
	done    chan struct{}
	mu      sync.Mutex
	open    map[net.Conn]struct{}
	closing sync.Once
}

func startHostile(t *testing.T, serve func(h *hostile, c net.Conn, br *bufio.Reader)) *hostile {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	h := &hostile{ln: ln, done: make(chan struct{}), open: map[net.Conn]struct{}{}}
	h.wg.Add(1)
	go func() {
		defer h.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			h.conns.Add(1)
			// Small socket buffers on both ends, so that what the server
			// got written tells what the client read.
			_ = c.(*net.TCPConn).SetWriteBuffer(64 << 10)
			h.mu.Lock()
			h.open[c] = struct{}{}
			h.mu.Unlock()
			h.wg.Add(1)
			go func() {
				defer h.wg.Done()
				defer c.Close()
				serve(h, c, bufio.NewReader(c))
			}()
		}
	}()
	t.Cleanup(h.close)
	return h
}

func (h *hostile) close() {
	h.closing.Do(func() {
		close(h.done)
		h.ln.Close()
		h.mu.Lock()
		for c := range h.open {
			c.Close()
		}
		h.mu.Unlock()
		h.wg.Wait()
	})
}

func (h *hostile) addr() string { return h.ln.Addr().String() }

// write writes p and counts it; false once the client is gone.
func (h *hostile) write(c net.Conn, p []byte) bool {
	_ = c.SetWriteDeadline(time.Now().Add(5 * time.Second))
	n, err := c.Write(p)
	h.wrote.Add(int64(n))
	return err == nil
}

// endless writes head, then fill forever, until the client stops reading
// (the write stays blocked, then times out) or goes away.
func (h *hostile) endless(c net.Conn, head string, fill []byte) {
	if !h.write(c, []byte(head)) {
		return
	}
	for {
		select {
		case <-h.done:
			return
		default:
		}
		if !h.write(c, fill) {
			return
		}
	}
}

// readRequest consumes the request head.
func readRequest(br *bufio.Reader) *http.Request {
	req, err := http.ReadRequest(br)
	if err != nil {
		return nil
	}
	return req
}

// smallBuffers is a Dialer whose conns have a 64 KiB receive buffer.
func smallBuffers() *dial.Dialer {
	return &dial.Dialer{DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, network, addr)
		if err == nil {
			_ = c.(*net.TCPConn).SetReadBuffer(64 << 10)
		}
		return c, err
	}}
}

func hostileTransport() *transport.Transport {
	return &transport.Transport{Proxy: noProxy, Retry: &retry.Policy{MaxAttempts: 1}, Dialer: smallBuffers()}
}

func get(t *testing.T, tr *transport.Transport, ctx context.Context, url string) (*http.Response, error) {
	t.Helper()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	require.NoError(t, err)
	return tr.RoundTrip(req)
}

// TestHostileHugeHeaders: a header value that never ends, and header lines
// that never end, fail the request in the header phase within seconds,
// with the client having read at most MaxResponseHeaderBytes (1 MiB by
// default) plus socket buffers.
func TestHostileHugeHeaders(t *testing.T) {
	for _, tc := range []struct {
		name, head string
		fill       []byte
	}{
		{"one endless header", "HTTP/1.1 200 OK\r\nX-Big: ", []byte(strings.Repeat("a", 64<<10))},
		{"endless header lines", "HTTP/1.1 200 OK\r\n", []byte(strings.Repeat("X-Many: v\r\n", 4<<10))},
	} {
		t.Run(tc.name, func(t *testing.T) {
			h := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
				if readRequest(br) != nil {
					h.endless(c, tc.head, tc.fill)
				}
			})
			tr := hostileTransport()
			defer tr.CloseIdleConnections()
			start := time.Now()
			resp, err := get(t, tr, t.Context(), "http://"+h.addr()+"/")
			took := time.Since(start)
			require.Error(t, err)
			require.Nil(t, resp)
			var hl *transport.HeaderLimitError
			require.ErrorAs(t, err, &hl)
			assert.EqualValues(t, 1<<20, hl.Limit)
			assert.Equal(t, "response_headers_too_large", hl.ErrorType())
			assert.ErrorContains(t, hl.Unwrap(), "exceeded 1048576 bytes", "net/http's own error is kept")
			assert.Less(t, took, 5*time.Second)
			h.close()
			// 1 MiB of headers plus the sockets' buffers, never the 10 MiB
			// net/http allows by default.
			assert.Less(t, h.wrote.Load(), int64(2<<20), "bytes the server got into the client")
			t.Logf("%s after %v, server wrote %d bytes", err, took, h.wrote.Load())
		})
	}
}

// TestHostileHugeHeadersHTTP2: over HTTP/2 the Transport advertises
// MaxResponseHeaderBytes as SETTINGS_MAX_HEADER_LIST_SIZE. A server that
// sends far more fails the request at once: net/http's framer stops
// reading the header block and closes the conn with PROTOCOL_ERROR (a
// connection error with nothing to tell it from other protocol errors, so
// it is not a *HeaderLimitError; one just over the limit would be). The
// client never holds the whole block, and each attempt ends in
// milliseconds.
func TestHostileHugeHeadersHTTP2(t *testing.T) {
	var hits atomic.Int32
	srv, cfg := tlsServer(t, true, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		for i := range 2000 {
			w.Header().Set("X-Big-"+strconv.Itoa(i), strings.Repeat("a", 1<<10))
		}
		_, _ = io.WriteString(w, "body")
	}))
	tr := &transport.Transport{TLSClientConfig: cfg, Proxy: noProxy, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := get(t, tr, t.Context(), srv.URL+"/")
	if resp != nil {
		resp.Body.Close()
	}
	took := time.Since(start)
	require.Error(t, err)
	assert.ErrorContains(t, err, "PROTOCOL_ERROR")
	assert.Less(t, took, 5*time.Second)
	assert.EqualValues(t, 1, hits.Load())
	t.Logf("%v after %v", err, took)
}

// TestHostileBodies: an endless body and a slow-drip body (a byte every
// 50ms: never a stall) end at the caller's deadline with an error that
// matches context.DeadlineExceeded; a silent body ends at StallTimeout
// with a *TimeoutError; invalid chunking is an error, not a hang or a
// panic, and the conn is not reused.
func TestHostileBodies(t *testing.T) {
	drip := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		if readRequest(br) == nil {
			return
		}
		if !h.write(c, []byte("HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")) {
			return
		}
		for {
			select {
			case <-h.done:
				return
			case <-time.After(50 * time.Millisecond):
			}
			if !h.write(c, []byte("x")) {
				return
			}
		}
	})
	flood := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		if readRequest(br) != nil {
			h.endless(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", []byte("10000\r\n"+strings.Repeat("z", 0x10000)+"\r\n"))
		}
	})
	silent := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		if readRequest(br) != nil && h.write(c, []byte("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nab")) {
			<-h.done
		}
	})
	badChunks := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		for readRequest(br) != nil {
			if !h.write(c, []byte("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ-not-hex\r\n\r\n")) {
				return
			}
		}
	})

	for _, tc := range []struct{ name, url string }{{"slow drip", drip.addr()}, {"endless", flood.addr()}} {
		t.Run(tc.name, func(t *testing.T) {
			tr := hostileTransport()
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(t.Context(), 400*time.Millisecond)
			defer cancel()
			start := time.Now()
			resp, err := get(t, tr, ctx, "http://"+tc.url+"/")
			require.NoError(t, err)
			n, err := io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			took := time.Since(start)
			require.Error(t, err)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			assert.Less(t, took, 400*time.Millisecond+time.Second, "ended at the caller's deadline")
			t.Logf("read %d bytes, then %v after %v", n, err, took)
		})
	}

	t.Run("silent", func(t *testing.T) {
		tr := hostileTransport()
		tr.StallTimeout = 200 * time.Millisecond
		defer tr.CloseIdleConnections()
		resp, err := get(t, tr, t.Context(), "http://"+silent.addr()+"/")
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te)
		assert.Equal(t, "stall", te.Phase)
	})

	t.Run("invalid chunking", func(t *testing.T) {
		tr := hostileTransport()
		defer tr.CloseIdleConnections()
		for range 2 {
			resp, err := get(t, tr, t.Context(), "http://"+badChunks.addr()+"/")
			require.NoError(t, err)
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			require.Error(t, err)
			assert.Equal(t, "hello", string(b))
		}
		assert.Equal(t, int64(2), badChunks.conns.Load(), "a conn with a broken body is not reused")
	})
}

// TestHostileRetryAfterFarFuture: a 503 whose Retry-After is years away
// (seconds or an HTTP-date) is returned to the caller at once: the policy
// does not sleep past MaxRetryAfter, let alone the server's wish.
func TestHostileRetryAfterFarFuture(t *testing.T) {
	for _, ra := range []string{"999999999999", "Fri, 31 Dec 2100 23:59:59 GMT", "-5", "soon", strings.Repeat("9", 400)} {
		var n atomic.Int32
		h := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
			for readRequest(br) != nil {
				n.Add(1)
				if !h.write(c, []byte("HTTP/1.1 503 Service Unavailable\r\nRetry-After: "+ra+"\r\nContent-Length: 0\r\n\r\n")) {
					return
				}
			}
		})
		tr := &transport.Transport{Proxy: noProxy, Retry: &retry.Policy{MaxAttempts: 3, InitialInterval: time.Millisecond}}
		start := time.Now()
		resp, err := get(t, tr, t.Context(), "http://"+h.addr()+"/")
		took := time.Since(start)
		require.NoError(t, err, ra)
		resp.Body.Close()
		tr.CloseIdleConnections()
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Less(t, took, 2*time.Second, "Retry-After %q", ra)
		switch ra {
		case "999999999999", "Fri, 31 Dec 2100 23:59:59 GMT", strings.Repeat("9", 400):
			assert.Equal(t, int32(1), n.Load(), "Retry-After %.20q beyond MaxRetryAfter: no retry", ra)
		default:
			assert.Equal(t, int32(3), n.Load(), "invalid Retry-After %q: ordinary backoff", ra)
		}
	}
}

// TestHostileRedirectLoop: a server that redirects to itself forever
// makes NewClient's client give up after 10 redirects, at once.
func TestHostileRedirectLoop(t *testing.T) {
	var n atomic.Int32
	h := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		for readRequest(br) != nil {
			n.Add(1)
			if !h.write(c, []byte("HTTP/1.1 302 Found\r\nLocation: /again?token=s3cr3t\r\nContent-Length: 0\r\n\r\n")) {
				return
			}
		}
	})
	tr := hostileTransport()
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := transport.NewClient(tr).Get("http://" + h.addr() + "/")
	require.Error(t, err)
	if resp != nil {
		// http.Client returns the last redirect with the error, body closed.
		assert.Equal(t, http.StatusFound, resp.StatusCode)
	}
	assert.ErrorContains(t, err, "stopped after 10 redirects")
	assert.Equal(t, int32(10), n.Load())
	assert.Less(t, time.Since(start), 2*time.Second)
}

// wsFrameHeader is the header of an unmasked server frame with a 64-bit
// length.
func wsFrameHeader(opcode byte, length uint64) []byte {
	b := []byte{0x80 | opcode, 127, 0, 0, 0, 0, 0, 0, 0, 0}
	binary.BigEndian.PutUint64(b[2:], length)
	return b
}

// TestHostileWebSocket: a peer announcing a frame of 1 TiB, one streaming
// a message past MaxMessageSize, and one whose 101 answer has headers that
// never end: each fails with a clear error, promptly, having buffered
// at most the limit.
func TestHostileWebSocket(t *testing.T) {
	upgrade := func(h *hostile, c net.Conn, br *bufio.Reader) bool {
		req := readRequest(br)
		if req == nil {
			return false
		}
		return h.write(c, []byte("HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: "+acceptKey(req.Header.Get("Sec-WebSocket-Key"))+"\r\n\r\n"))
	}
	huge := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		if upgrade(h, c, br) && h.write(c, wsFrameHeader(websocket.BinaryMessage, 1<<40)) {
			h.endless(c, "", make([]byte, 64<<10))
		}
	})
	long := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		if !upgrade(h, c, br) {
			return
		}
		// Many 64 KiB fragments of one message, never final.
		frag := append([]byte{websocket.BinaryMessage, 127}, make([]byte, 8)...)
		binary.BigEndian.PutUint64(frag[2:], 64<<10)
		frag = append(frag, make([]byte, 64<<10)...)
		cont := append([]byte{0, 127}, frag[2:]...)
		if h.write(c, frag) {
			h.endless(c, "", cont)
		}
	})
	endlessHead := startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
		if readRequest(br) != nil {
			h.endless(c, "HTTP/1.1 101 Switching Protocols\r\nX-Big: ", []byte(strings.Repeat("a", 64<<10)))
		}
	})

	wd := &transport.WebSocketDialer{Proxy: noProxy, MaxMessageSize: 1 << 20, Dialer: smallBuffers(), HandshakeTimeout: 2 * time.Second,
		Retry: &retry.Policy{MaxAttempts: 1}}
	for _, tc := range []struct {
		name string
		h    *hostile
	}{{"frame of 1 TiB", huge}, {"endless fragments", long}} {
		t.Run(tc.name, func(t *testing.T) {
			c, _, err := wd.Dial(t.Context(), "ws://"+tc.h.addr()+"/", nil)
			require.NoError(t, err)
			defer c.Close()
			start := time.Now()
			_, _, err = c.ReadMessage()
			require.ErrorIs(t, err, websocket.ErrReadLimit)
			assert.Less(t, time.Since(start), 2*time.Second)
			c.Close()
			tc.h.close()
			assert.Less(t, tc.h.wrote.Load(), int64(2<<20))
		})
	}

	t.Run("session", func(t *testing.T) {
		causes := make(chan error, 4)
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
			URL: "ws://" + startHostile(t, func(h *hostile, c net.Conn, br *bufio.Reader) {
				if upgrade(h, c, br) && h.write(c, wsFrameHeader(websocket.TextMessage, 1<<40)) {
					<-h.done
				}
			}).addr() + "/",
			Dialer:       wd,
			OnDisconnect: func(err error) { causes <- err },
		})
		require.NoError(t, err)
		defer s.Close()
		select {
		case err := <-causes:
			assert.ErrorIs(t, err, websocket.ErrReadLimit)
		case <-time.After(5 * time.Second):
			t.Fatal("the session did not drop the peer")
		}
	})

	t.Run("endless handshake headers", func(t *testing.T) {
		start := time.Now()
		_, _, err := wd.Dial(t.Context(), "ws://"+endlessHead.addr()+"/", nil)
		took := time.Since(start)
		require.Error(t, err)
		var he *transport.HandshakeError
		require.ErrorAs(t, err, &he)
		assert.ErrorIs(t, err, transport.ErrHandshakeTooLarge)
		assert.Less(t, took, time.Second, "long before HandshakeTimeout")
		endlessHead.close()
		assert.Less(t, endlessHead.wrote.Load(), int64(2<<20), "bytes the server got into the client")
		t.Logf("%v after %v, server wrote %d bytes", err, took, endlessHead.wrote.Load())
	})
}

// acceptKey is the Sec-WebSocket-Accept for key (RFC 6455 §4.2.2).
func acceptKey(key string) string {
	h := sha1.Sum([]byte(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	return base64.StdEncoding.EncodeToString(h[:])
}
