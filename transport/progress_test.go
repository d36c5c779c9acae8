package transport_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// pacedBody gives n pieces of size bytes, a pause before each; Close does
// not stop it (as a body that net/http gave up on may still be read).
type pacedBody struct {
	n, size int
	pause   time.Duration
}

func (b *pacedBody) Read(p []byte) (int, error) {
	if b.n == 0 {
		return 0, io.EOF
	}
	time.Sleep(b.pause)
	b.n--
	k := min(len(p), b.size)
	for i := range p[:k] {
		p[i] = 'u'
	}
	return k, nil
}

func (b *pacedBody) Close() error { return nil }

// staleServer is a raw HTTP/1.1 server: it answers every request after
// reading its body, except a request to /stale that is not the first on
// its conn, which it reads and then hangs up on (a keep-alive conn the
// server closed as the client reused it: net/http sends a replayable
// request again on another conn, by itself).
func staleServer(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = true
			mu.Unlock()
			wg.Go(func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for n := 0; ; n++ {
					req, err := http.ReadRequest(br)
					if err != nil {
						return
					}
					body, _ := io.Copy(io.Discard, req.Body)
					if req.URL.Path == "/stale" && n > 0 {
						return
					}
					if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s",
						len(strconv.FormatInt(body, 10)), strconv.FormatInt(body, 10)); err != nil {
						return
					}
				}
			})
		}
	})
	return "http://" + ln.Addr().String()
}

// TestLateWroteRequestStaysWithItsTry (issue 20, break 1): net/http sends
// a replayable upload again on another conn, by itself, when the server
// had closed the keep-alive conn it first wrote it on; the WroteRequest
// hook of that first write must not start the wait for headers of the
// second, which here is a healthy upload far longer than
// FirstByteTimeout (2.5s, 1s): it succeeds, every time, and so does the next request
// (no hook of an earlier try reaches it; -race sees no race between them).
func TestLateWroteRequestStaysWithItsTry(t *testing.T) {
	base := staleServer(t)
	tr := &transport.Transport{FirstByteTimeout: time.Second, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	put := func(path string, copies ...pacedBody) (string, error) {
		var n atomic.Int32
		req, err := http.NewRequestWithContext(t.Context(), http.MethodPut, base+path, nil)
		require.NoError(t, err)
		req.Header.Set("Idempotency-Key", "k") // replayable: net/http sends it again by itself
		req.GetBody = func() (io.ReadCloser, error) {
			b := copies[min(int(n.Add(1)), len(copies))-1]
			return &b, nil
		}
		req.Body, _ = req.GetBody()
		n.Store(0)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return "", err
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		return string(b), err
	}
	upload := pacedBody{n: 25, size: 1, pause: 100 * time.Millisecond} // 2.5s
	for i := range 2 {
		// A conn to reuse.
		got, err := put("/", pacedBody{n: 1, size: 1})
		require.NoError(t, err)
		require.Equal(t, "1", got)
		// Written at once on the conn the server then closes, then
		// uploaded in 2.5s on a new one.
		start := time.Now()
		got, err = put("/stale", pacedBody{n: 1, size: 1}, upload)
		require.NoError(t, err, "round %d: a healthy upload sent again by net/http, %v in", i, time.Since(start))
		require.Equal(t, "25", got)
		// The next request: a healthy upload too.
		start = time.Now()
		got, err = put("/", upload)
		require.NoError(t, err, "round %d: a healthy upload after, %v in", i, time.Since(start))
		require.Equal(t, "25", got)
		tr.CloseIdleConnections()
	}
}

// trickleServer answers every request with a body that trickles: on
// HTTP/1.1 one large chunk (Transfer-Encoding: chunked) whose bytes come
// 1 KiB every 100ms, on HTTP/2 DATA frames at the same pace; with
// stallAfter > 0 it stops sending after that many pieces and holds the
// response open. net/http's chunked reader stays inside one Read until its
// buffer is full or the chunk ends (3s here): longer than the Transport's
// StallTimeout of 1s, which no gap between bytes comes near.
func trickleServer(t *testing.T, h2 bool, pieces, stallAfter int) (*httptest.Server, *transport.Transport) {
	const piece, gap = 1 << 10, 100 * time.Millisecond
	srv, cfg := tlsServer(t, h2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		data := bytes.Repeat([]byte{'d'}, piece)
		if h2 {
			for i := range pieces {
				if stallAfter > 0 && i == stallAfter {
					<-r.Context().Done()
					return
				}
				time.Sleep(gap)
				if _, err := w.Write(data); err != nil {
					return
				}
				http.NewResponseController(w).Flush()
			}
			return
		}
		c, brw, err := http.NewResponseController(w).Hijack()
		if err != nil {
			return
		}
		defer c.Close()
		_ = brw.Flush()
		if _, err := fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n%x\r\n", pieces*piece); err != nil {
			return
		}
		for i := range pieces {
			if stallAfter > 0 && i == stallAfter {
				_, _ = c.Read(make([]byte, 1)) // until the client goes away
				return
			}
			time.Sleep(gap)
			if _, err := c.Write(data); err != nil {
				return
			}
		}
		_, _ = io.WriteString(c, "\r\n0\r\n\r\n")
	}))
	return srv, &transport.Transport{TLSClientConfig: cfg, StallTimeout: time.Second,
		Retry: &retry.Policy{MaxAttempts: 1}}
}

// TestStallTricklingBodyIsNotAStall (issue 20, break 16): a healthy slow
// stream whose bytes keep arriving, though net/http's chunked reader stays
// inside one Read for longer than StallTimeout, is read to its end on
// HTTP/1.1 and HTTP/2; a stream that really stops is still cut within the
// bound.
func TestStallTricklingBodyIsNotAStall(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		srv, tr := trickleServer(t, h2, 30, 0) // 30 KiB in 3s
		resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
		require.NoError(t, err)
		// Reads of 64 KiB (io.Discard's ReadFrom would read 8 KiB at a time).
		n, err := io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, make([]byte, 64<<10))
		resp.Body.Close()
		require.NoError(t, err, "h2=%v: a trickling body is not a stall (after %d bytes)", h2, n)
		assert.EqualValues(t, 30<<10, n)
		tr.CloseIdleConnections()
		srv.CloseClientConnections()

		srv, tr = trickleServer(t, h2, 30, 3)
		resp, err = tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
		require.NoError(t, err)
		start := time.Now()
		_, err = io.CopyBuffer(struct{ io.Writer }{io.Discard}, resp.Body, make([]byte, 64<<10))
		elapsed := time.Since(start)
		resp.Body.Close()
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te, "h2=%v", h2)
		assert.Equal(t, "stall", te.Phase)
		assert.Less(t, elapsed, 5*time.Second, "h2=%v: a real stall is cut (1s and a tick after the last byte)", h2)
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
	}
}

// TestUploadStall (issue 20, break 19): a 64 MiB upload to a handler that
// never reads it and never answers fails after StallTimeout without
// progress, with a *TimeoutError of phase "upload_stall", on HTTP/1.1 and
// HTTP/2, long before the caller's deadline (and FirstByteTimeout, whose
// clock never starts: the request is never written); an upload whose producer is
// slower than StallTimeout (the caller's time, not the peer's) succeeds.
func TestUploadStall(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		// An HTTP/1.1 server notices no client that went away while its
		// handler has not read the body: the test ends the handler.
		release := make(chan struct{})
		srv, cfg := tlsServer(t, h2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Path == "/read" {
				n, _ := io.Copy(io.Discard, r.Body)
				_, _ = io.WriteString(w, strconv.FormatInt(n, 10))
				return
			}
			select {
			case <-r.Context().Done():
			case <-release:
			}
			panic(http.ErrAbortHandler)
		}))
		t.Cleanup(func() { close(release) })
		tr := &transport.Transport{TLSClientConfig: cfg, FirstByteTimeout: 2 * time.Second,
			StallTimeout: 300 * time.Millisecond, Retry: &retry.Policy{MaxAttempts: 1}}
		ctx, cancel := context.WithTimeout(t.Context(), 6*time.Second)
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/hold", bytes.NewReader(make([]byte, 64<<20)))
		require.NoError(t, err)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		elapsed := time.Since(start)
		cancel()
		if resp != nil {
			resp.Body.Close()
		}
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te, "h2=%v: %v after %v", h2, err, elapsed)
		assert.Equal(t, "upload_stall", te.Phase)
		assert.Equal(t, "upload_stall_timeout", te.ErrorType())
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "no request body byte written for 300ms")
		assert.Less(t, elapsed, 4*time.Second, "h2=%v: cut by StallTimeout, not the caller's 6s", h2)

		// A producer that pauses longer than StallTimeout is not a stall.
		req, err = http.NewRequestWithContext(t.Context(), http.MethodPost, srv.URL+"/read",
			io.NopCloser(&pacedBody{n: 3, size: 10, pause: 450 * time.Millisecond}))
		require.NoError(t, err)
		resp, err = tr.RoundTrip(req)
		require.NoError(t, err, "h2=%v: a slow producer is not a stalled upload", h2)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Equal(t, "30", string(b))
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
	}
}

// twoAddrResolver resolves every name to its addresses, in order.
type twoAddrResolver []netip.Addr

func (r twoAddrResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return r, nil
}

// TestFirstByteStallReachesHealth (issue 20, break 17): a name with two
// addresses, the first accepting and then silent: the Transport's own
// first-byte timeout is held against the silent peer in the shared
// Health, so the retry goes to the healthy one and the call succeeds.
func TestFirstByteStallReachesHealth(t *testing.T) {
	var silent, healthy net.Listener
	for range 20 {
		s, err := net.Listen("tcp", "127.0.0.2:0")
		require.NoError(t, err)
		port := s.Addr().(*net.TCPAddr).Port
		h, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			s.Close()
			continue
		}
		silent, healthy = s, h
		break
	}
	require.NotNil(t, silent, "no port free on both 127.0.0.1 and 127.0.0.2")
	var held sync.WaitGroup
	stop := make(chan struct{})
	held.Go(func() {
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		go func() { <-stop; silent.Close() }()
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c) // accepted, never answered
		}
	})
	defer func() { close(stop); held.Wait() }()
	srv := &http.Server{Handler: http.HandlerFunc(hello)}
	go func() { _ = srv.Serve(healthy) }()
	defer srv.Close()

	port := silent.Addr().(*net.TCPAddr).Port
	health := &dial.Health{}
	tr := &transport.Transport{
		Dialer: &dial.Dialer{Health: health,
			Resolver: twoAddrResolver{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}},
		FirstByteTimeout: time.Second,
		Retry:            fastRetry(),
		Proxy:            func(*http.Request) (*url.URL, error) { return nil, nil },
	}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, "http://svc.test:"+strconv.Itoa(port)+"/", ""))
	require.NoError(t, err, "the retry goes to the healthy address")
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.True(t, strings.HasPrefix(string(b), "hello"))
	st, ok := health.Stats(netip.AddrPortFrom(netip.MustParseAddr("127.0.0.2"), uint16(port)))
	require.True(t, ok, "Health knows the silent peer")
	assert.EqualValues(t, 1, st.FirstByteStalls, "the Transport's first-byte timeout is held against the peer")
	assert.True(t, st.Demoted)
}

// TestLifetimeKeepsConnectionOptions (issue 20, break 20): a request on a
// conn past MaxConnLifetime carries the "close" option next to the
// caller's own (an upgrade's "Upgrade" stays), and the caller's header map
// is not touched.
func TestLifetimeKeepsConnectionOptions(t *testing.T) {
	var got []string
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		got = append(got, strings.Join(r.Header.Values("Connection"), " | "))
		mu.Unlock()
	}))
	defer srv.Close()
	tr := &transport.Transport{MaxConnLifetime: time.Nanosecond}
	defer tr.CloseIdleConnections()
	for i := range 2 {
		if i > 0 {
			// Past the lifetime even by the Transport's rough clock (a
			// tick of its watch late at most).
			time.Sleep(100 * time.Millisecond)
		}
		req := newReq(t, http.MethodGet, srv.URL, "")
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "example/1")
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		assert.Equal(t, []string{"Upgrade"}, req.Header["Connection"], "the caller's header is untouched")
	}
	mu.Lock()
	defer mu.Unlock()
	require.Len(t, got, 2)
	assert.Equal(t, "Upgrade", got[0], "a new conn: the caller's header as it is")
	assert.Equal(t, "Upgrade, close", got[1], "an expired conn: close added, Upgrade kept")
}
