package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeline-go/lifeline/faultnet"
)

// Go tests of streamed bodies (stream.go), under -race. The C side is
// tested by ctest ("/* streamed bodies */") and the Python binding.

func init() {
	expectedOK = append(expectedOK, "stream_sse", "stream_stall", "stream_cancel", "stream_upload", "stream_loop", "stream_poll",
		"stream_faults", "session_slow_reader", "stream_slow_reader")
}

// streamClient is a client configured by doc, closed (and waited for) at
// the end of the test.
func streamClient(t *testing.T, doc map[string]any) *client {
	t.Helper()
	c := newClient()
	t.Cleanup(func() { closeAndWait(c) })
	if doc != nil {
		data, _ := json.Marshal(doc)
		if e := c.configure(func(cfg *config) *Error {
			next, e := cfg.configureJSON(data)
			if e == nil {
				*cfg = next
			}
			return e
		}); e != nil {
			t.Fatalf("configure: %s", e.Msg)
		}
	}
	return c
}

// startStream is lifeline_request_start_stream without C.
func startStream(t *testing.T, c *client, r *request, upload bool) *op {
	t.Helper()
	return startStreamWith(t, c, r, upload, callOptions{})
}

func startStreamWith(t *testing.T, c *client, r *request, upload bool, co callOptions) *op {
	t.Helper()
	if r.method == "" {
		r.method = http.MethodGet
	}
	s := newStream(c, upload)
	o, e := c.startOp(false, r.deadline, nil, false, s, func(ctx context.Context, b *built, o *op) *Error {
		return doStream(ctx, b, o, r, co, s)
	})
	if e != nil {
		s.done(errStreamDone)
		t.Fatalf("start: %s", e.Msg)
	}
	t.Cleanup(o.free)
	return o
}

// bodyRead is lifeline_body_read without C.
func bodyRead(o *op, p []byte, d time.Duration) (int, *Error) {
	s, e := o.streamOf()
	if e != nil {
		return 0, e
	}
	t := newTimer(d)
	defer t.stop()
	if e := o.waitHeaders(t); e != nil {
		return 0, e
	}
	return s.read(p, d, t)
}

func bodyWrite(o *op, p []byte, d time.Duration) (int, *Error) {
	t := newTimer(d)
	defer t.stop()
	return o.stream.up.write(p, t)
}

// readAll reads o's body to its end, each read waiting at most d.
func readAll(t *testing.T, o *op, d time.Duration) ([]byte, *Error) {
	t.Helper()
	var out []byte
	p := make([]byte, 4096)
	for {
		n, e := bodyRead(o, p, d)
		out = append(out, p[:n]...)
		if e != nil {
			return out, e
		}
		if n == 0 {
			return out, nil
		}
	}
}

// TestStreamTrickle is a server-sent events stream: events 60ms apart. A
// read with a shorter timeout returns read_timeout and the body stays
// readable; every event arrives, then the end, every time after it too.
func TestStreamTrickle(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for i := range 5 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			time.Sleep(60 * time.Millisecond)
		}
	}))
	defer srv.Close()
	c := streamClient(t, nil)
	o := startStream(t, c, &request{url: srv.URL + "/events", deadline: -1}, false)
	if !o.wait(5 * time.Second) {
		t.Fatal("no headers within 5s")
	}
	resp, e := o.takeResponse()
	if e != nil || resp.status != 200 || len(resp.body) != 0 {
		t.Fatalf("response %+v, %v", resp, e)
	}
	var got bytes.Buffer
	timeouts := 0
	p := make([]byte, 1024)
	for {
		n, e := bodyRead(o, p, 10*time.Millisecond)
		if e != nil {
			if e.Status != statusTimeout || e.Phase != "read" || e.Type != "read_timeout" {
				t.Fatalf("read: %+v", e)
			}
			timeouts++
			continue
		}
		if n == 0 {
			break
		}
		got.Write(p[:n])
	}
	want := ""
	for i := range 5 {
		want += fmt.Sprintf("data: event %d\n\n", i)
	}
	if got.String() != want {
		t.Fatalf("body %q, want %q", got.String(), want)
	}
	if timeouts == 0 {
		t.Error("no read timed out between events 60ms apart with a 10ms timeout")
	}
	for range 2 {
		if n, e := bodyRead(o, p, 0); n != 0 || e != nil {
			t.Fatalf("after the end: %d, %+v", n, e)
		}
	}
}

// TestStreamStall: a body that stops mid-way fails with phase "stall" at
// the client's stall limit; the bytes before it are delivered first.
func TestStreamStall(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "partial")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	c := streamClient(t, map[string]any{"transport.stall_timeout_ms": 300, "retry.max_attempts": 1})
	o := startStream(t, c, &request{url: srv.URL, deadline: -1}, false)
	start := time.Now()
	got, e := readAll(t, o, -1)
	took := time.Since(start)
	if string(got) != "partial" {
		t.Errorf("bytes before the stall %q", got)
	}
	if e == nil || e.Status != statusTimeout || e.Phase != "stall" || e.Type != "stall_timeout" {
		t.Fatalf("error %+v, want a stall", e)
	}
	if took > 3*time.Second {
		t.Errorf("the stall ended the read after %v; limit 300ms", took)
	}
	// Final: the next read says the same at once.
	if _, e2 := bodyRead(o, make([]byte, 8), 0); e2 == nil || e2.Phase != "stall" {
		t.Fatalf("second read %+v", e2)
	}
}

// TestStreamSlowReaderIsNotAStall: a host that reads a fast 1 MiB body
// with pauses longer than the stall limit gets all of it; the library
// buffers at most streamBuffer plus a chunk meanwhile.
func TestStreamSlowReaderIsNotAStall(t *testing.T) {
	big := make([]byte, 1<<20)
	for i := range big {
		big[i] = byte(i % 251)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) }))
	defer srv.Close()
	// max_response_bytes does not apply to a stream.
	c := streamClient(t, map[string]any{"transport.stall_timeout_ms": 150, "max_response_bytes": 1000})
	o := startStream(t, c, &request{url: srv.URL, deadline: -1}, false)
	var got []byte
	p := make([]byte, 100<<10)
	for i := 0; ; i++ {
		if i < 3 {
			time.Sleep(300 * time.Millisecond)
			if n, _ := o.stream.available(); n > streamBuffer+streamChunk {
				t.Fatalf("%d bytes buffered ahead of the host", n)
			}
		}
		n, e := bodyRead(o, p, 5*time.Second)
		if e != nil {
			t.Fatalf("read after %d bytes: %+v", len(got), e)
		}
		if n == 0 {
			break
		}
		got = append(got, p[:n]...)
	}
	if !bytes.Equal(got, big) {
		t.Fatalf("got %d bytes, not the body", len(got))
	}
}

// TestStreamEndedByHost: a read blocked without a timeout on a body that
// never ends returns promptly when another goroutine cancels the op,
// frees it, or closes the client.
func TestStreamEndedByHost(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
		w.(http.Flusher).Flush()
		select {
		case <-r.Context().Done():
		case <-stop:
		}
	}))
	defer srv.Close()
	defer close(stop)
	for _, tc := range []struct {
		name string
		end  func(c *client, o *op)
		want int32
	}{
		{"cancel", func(_ *client, o *op) { o.cancelByHost() }, statusCanceled},
		{"free", func(_ *client, o *op) { o.free() }, statusCanceled},
		{"close", func(c *client, _ *op) { c.close() }, statusClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := streamClient(t, map[string]any{"transport.stall_timeout_ms": -1})
			o := startStream(t, c, &request{url: srv.URL, deadline: -1}, false)
			p := make([]byte, 8)
			if n, e := bodyRead(o, p, 5*time.Second); n != 1 || e != nil {
				t.Fatalf("first read %d %+v", n, e)
			}
			done := make(chan *Error, 1)
			go func() {
				_, e := bodyRead(o, p, -1)
				done <- e
			}()
			time.Sleep(100 * time.Millisecond)
			ended := time.Now()
			tc.end(c, o)
			select {
			case e := <-done:
				if e == nil || e.Status != tc.want {
					t.Fatalf("blocked read returned %+v, want status %d", e, tc.want)
				}
				if took := time.Since(ended); took > 2*time.Second {
					t.Errorf("the blocked read ended %v after", took)
				}
			case <-time.After(5 * time.Second):
				t.Fatal("the blocked read did not end within 5s")
			}
			c.wg.Wait() // the pump ended and released the connection
		})
	}
}

// TestStreamDeadline: the request's deadline bounds the body too.
func TestStreamDeadline(t *testing.T) {
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for {
			io.WriteString(w, "x")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}))
	defer srv.Close()
	defer close(stop)
	c := streamClient(t, nil)
	o := startStream(t, c, &request{url: srv.URL, deadline: 400 * time.Millisecond}, false)
	got, e := readAll(t, o, -1)
	if len(got) == 0 || e == nil || e.Status != statusTimeout || e.Phase != "stall" || e.Type != "deadline" {
		t.Fatalf("%d bytes, error %+v: want bytes, then the deadline in phase stall", len(got), e)
	}
}

// TestStreamUpload writes a body in pieces to an echo server and reads
// the echo back as a stream.
func TestStreamUpload(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// net/http's HTTP/1 server stops reading a request once its
		// handler writes: read first.
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
	}))
	defer srv.Close()
	c := streamClient(t, nil)
	o := startStream(t, c, &request{method: "POST", url: srv.URL, body: []byte("head:"), deadline: -1}, true)
	var want bytes.Buffer
	want.WriteString("head:")
	for i := range 50 {
		piece := bytes.Repeat([]byte{byte('a' + i%26)}, 10000)
		if n, e := bodyWrite(o, piece, 5*time.Second); n != len(piece) || e != nil {
			t.Fatalf("write %d: %d %+v", i, n, e)
		}
		want.Write(piece)
	}
	if e := o.stream.up.closeWrite(); e != nil {
		t.Fatal(e.Msg)
	}
	if e := o.stream.up.closeWrite(); e == nil || e.Status != statusState {
		t.Fatalf("second close: %+v", e)
	}
	got, e := readAll(t, o, 5*time.Second)
	if e != nil || !bytes.Equal(got, want.Bytes()) {
		t.Fatalf("echo: %d bytes (want %d), %+v", len(got), want.Len(), e)
	}
	if _, e := bodyWrite(o, []byte("late"), 0); e == nil || e.Status != statusState {
		t.Fatalf("write after close: %+v", e)
	}
}

// TestStreamUploadStall: a peer that takes no byte of the body fails the
// upload with phase "upload_stall"; the host's writes (without a timeout
// of their own) return that error. A write with a timeout returns
// write_timeout first and the upload goes on.
func TestStreamUploadStall(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	c := streamClient(t, map[string]any{"transport.stall_timeout_ms": 300, "retry.max_attempts": 1})
	o := startStream(t, c, &request{method: "POST", url: "http://" + srv.Addr() + "/up", deadline: -1}, true)
	piece := make([]byte, 1<<20)
	sawTimeout := false
	start := time.Now()
	var last *Error
	for time.Since(start) < 20*time.Second {
		d := time.Duration(-1)
		if !sawTimeout {
			d = 50 * time.Millisecond
		}
		_, e := bodyWrite(o, piece, d)
		if e != nil && e.Phase == "write" {
			if e.Type != "write_timeout" || e.Status != statusTimeout {
				t.Fatalf("write timeout %+v", e)
			}
			sawTimeout = true
			continue
		}
		if e != nil {
			last = e
			break
		}
	}
	if !sawTimeout {
		t.Error("no write timed out against a peer that reads nothing")
	}
	if last == nil || last.Status != statusTimeout || last.Phase != "upload_stall" {
		t.Fatalf("write error %+v, want upload_stall", last)
	}
	if !o.wait(5 * time.Second) {
		t.Fatal("op still running")
	}
	if _, e := bodyRead(o, make([]byte, 8), 0); e == nil || e.Phase != "upload_stall" {
		t.Fatalf("read after the upload failed: %+v", e)
	}
}

// TestStreamUploadCancel: a write blocked on a full buffer returns
// E_CANCELED when another goroutine cancels the op.
func TestStreamUploadCancel(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	c := streamClient(t, map[string]any{"transport.stall_timeout_ms": -1, "retry.max_attempts": 1})
	o := startStream(t, c, &request{method: "PUT", url: "http://" + srv.Addr() + "/up", deadline: -1}, true)
	done := make(chan *Error, 1)
	go func() {
		piece := make([]byte, 1<<20)
		for {
			if _, e := bodyWrite(o, piece, -1); e != nil {
				done <- e
				return
			}
		}
	}()
	time.Sleep(300 * time.Millisecond)
	o.cancelByHost()
	select {
	case e := <-done:
		if e.Status != statusCanceled {
			t.Fatalf("write returned %+v", e)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("blocked write did not end")
	}
}

// TestStreamStateMachine drives the stream's buffer with a pipe for a
// body, in a synctest bubble: timeouts are exact, a blocked read wakes for
// bytes, the end, and the host's abort, and the pump stops reading while
// the buffer is full.
func TestStreamStateMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newClient()
		defer closeAndWait(c)
		s := newStream(c, false)
		pr, pw := io.Pipe()
		c.wg.Add(1)
		go s.pump(pr)
		p := make([]byte, 16)

		start := time.Now()
		tm := newTimer(time.Second)
		n, e := s.read(p, time.Second, tm)
		tm.stop()
		if n != 0 || e == nil || e.Type != "read_timeout" || time.Since(start) != time.Second {
			t.Fatalf("empty read: %d %+v after %v", n, e, time.Since(start))
		}

		go pw.Write([]byte("hello"))
		tm = newTimer(-1)
		n, e = s.read(p, -1, tm)
		if string(p[:n]) != "hello" || e != nil {
			t.Fatalf("read %q %+v", p[:n], e)
		}

		// Fill the buffer: the pump stops reading (a writer stays blocked).
		wrote := make(chan int, 1)
		go func() {
			n, _ := pw.Write(make([]byte, streamBuffer+3*streamChunk))
			wrote <- n
		}()
		synctest.Wait()
		if got, _ := s.available(); got < streamBuffer || got > streamBuffer+streamChunk {
			t.Fatalf("buffered %d", got)
		}
		select {
		case <-wrote:
			t.Fatal("the pump read past its buffer")
		default:
		}

		// The host's cancel: buffered bytes dropped, reads fail, the pump
		// ends (the pipe's writer sees it closed).
		s.abort(errCanceledByHost)
		if n, e := s.read(p, 0, newTimer(0)); n != 0 || e == nil || e.Status != statusCanceled {
			t.Fatalf("after abort: %d %+v", n, e)
		}
		<-wrote
		synctest.Wait()
	})
}

// TestStreamNotAStream: the body calls on an op of a buffered request.
func TestStreamNotAStream(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	defer srv.Close()
	c := streamClient(t, nil)
	o, e := c.start(false, 0, nil, false, func(ctx context.Context, b *built, o *op) *Error {
		return doRequest(ctx, b, o, &request{method: "GET", url: srv.URL})
	})
	if e != nil {
		t.Fatal(e.Msg)
	}
	defer o.free()
	o.wait(-1)
	if _, e := bodyRead(o, make([]byte, 4), 0); e == nil || e.Status != statusState || !strings.Contains(e.Msg, "not a streamed") {
		t.Fatalf("%+v", e)
	}
}

// TestStreamConcurrentReaders: readers on several goroutines share one
// body; together they get every byte once.
func TestStreamConcurrentReaders(t *testing.T) {
	big := make([]byte, 256<<10)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(big) }))
	defer srv.Close()
	c := streamClient(t, nil)
	o := startStream(t, c, &request{url: srv.URL, deadline: -1}, false)
	var mu sync.Mutex
	total := 0
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			p := make([]byte, 1000)
			for {
				n, e := bodyRead(o, p, 5*time.Second)
				if e != nil || n == 0 {
					return
				}
				mu.Lock()
				total += n
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if total != len(big) {
		t.Fatalf("read %d bytes of %d", total, len(big))
	}
}

// streamServers are the loopback servers of the C tests of streamed
// bodies (LL_STREAM); startServers (cshim_test.go) adds them.
func streamServers(t *testing.T) []string {
	t.Helper()
	mux := http.NewServeMux()
	// Server-sent events: five events 50ms apart, then the end.
	mux.HandleFunc("/sse", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		for i := range 5 {
			fmt.Fprintf(w, "data: event %d\n\n", i)
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	// The request body back, read whole first (net/http's HTTP/1 server
	// stops reading a request once its handler writes).
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if err != nil {
			w.WriteHeader(400)
			return
		}
		w.Write(b)
	})
	// A body that trickles: 40 lines of 200 bytes, 50ms apart (far under
	// a 300ms stall limit), 2s in all.
	mux.HandleFunc("/trickle", func(w http.ResponseWriter, r *http.Request) {
		for i := range 40 {
			fmt.Fprintf(w, "%03d:%s\n", i, strings.Repeat("x", 195))
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	})
	// A server that goes away mid-body: 5 of 100 bytes, then the
	// connection is dropped.
	mux.HandleFunc("/cut", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "100")
		io.WriteString(w, "hello")
		w.(http.Flusher).Flush()
		time.Sleep(100 * time.Millisecond)
		panic(http.ErrAbortHandler)
	})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return []string{"LL_STREAM=" + srv.URL}
}

// readable polls fd for up to d.
func readable(t *testing.T, fd int, d time.Duration) bool {
	t.Helper()
	pfd := []unix.PollFd{{Fd: int32(fd), Events: unix.POLLIN}}
	for {
		n, err := unix.Poll(pfd, int(d.Milliseconds()))
		if err == unix.EINTR {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		return n == 1
	}
}

// TestStreamReadyFD: the descriptor is readable exactly while a read
// would return at once: not before the headers, with bytes, not once they
// were read, and for good at the end.
func TestStreamReadyFD(t *testing.T) {
	step, stop := make(chan struct{}), make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		for _, b := range []string{"a", "b"} {
			select {
			case <-step:
			case <-stop: // the test failed: end so that Close returns
				return
			}
			io.WriteString(w, b)
			w.(http.Flusher).Flush()
		}
	}))
	defer srv.Close()
	defer close(stop)
	c := streamClient(t, nil)
	o := startStream(t, c, &request{url: srv.URL, deadline: -1}, false)
	fd, e := o.stream.readyFD()
	if e != nil {
		t.Fatal(e.Msg)
	}
	if fd2, _ := o.stream.readyFD(); fd2 != fd {
		t.Fatalf("second call gave %d, first %d", fd2, fd)
	}
	if readable(t, fd, 100*time.Millisecond) {
		t.Fatal("readable before the headers")
	}
	step <- struct{}{}
	if !readable(t, fd, 5*time.Second) {
		t.Fatal("not readable with a byte waiting")
	}
	p := make([]byte, 8)
	if n, e := bodyRead(o, p, 0); n != 1 || p[0] != 'a' || e != nil {
		t.Fatalf("read %d %q %+v", n, p[:n], e)
	}
	if readable(t, fd, 100*time.Millisecond) {
		t.Fatal("readable with nothing waiting")
	}
	step <- struct{}{}
	var got []byte
	for {
		if !readable(t, fd, 5*time.Second) {
			t.Fatal("not readable before the end")
		}
		n, e := bodyRead(o, p, 0)
		if e != nil {
			t.Fatalf("read after poll: %+v", e)
		}
		if n == 0 {
			break
		}
		got = append(got, p[:n]...)
	}
	if string(got) != "b" {
		t.Fatalf("got %q", got)
	}
	if !readable(t, fd, 0) {
		t.Fatal("not readable at the end")
	}
	o.free()
	if _, e := o.stream.readyFD(); e == nil || e.Status != statusState {
		t.Fatalf("descriptor after free: %+v", e)
	}
}

// TestStreamCallOptions: one client, its limits changed for one call: a
// long poll answered after the client's first-byte limit passes with the
// limit off; a stall limit of the call's own; no retry for a call.
func TestStreamCallOptions(t *testing.T) {
	var busy atomic.Int64
	stop := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/poll":
			time.Sleep(600 * time.Millisecond)
			io.WriteString(w, "news")
		case "/stall":
			w.Header().Set("Content-Length", "10")
			io.WriteString(w, "par")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-stop:
			}
		case "/busy":
			busy.Add(1)
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	defer close(stop)
	c := streamClient(t, map[string]any{"transport.first_byte_timeout_ms": 200, "transport.stall_timeout_ms": -1,
		"retry.max_attempts": 3, "retry.initial_interval_ms": 1, "retry.max_interval_ms": 2})

	// The client's limit cuts the long poll; the call's option lets it wait.
	o := startStream(t, c, &request{url: srv.URL + "/poll", deadline: 5 * time.Second, headers: [][2]string{{"Idempotency-Key", "x"}}}, false)
	o.wait(-1)
	if _, e := o.takeResponse(); e == nil || e.Phase != "first_byte" {
		t.Fatalf("without options: %+v, want a first_byte timeout", e)
	}
	o = startStreamWith(t, c, &request{url: srv.URL + "/poll", deadline: 5 * time.Second}, false, callOptions{firstByte: -1})
	if got, e := readAll(t, o, -1); e != nil || string(got) != "news" {
		t.Fatalf("long poll: %q %+v", got, e)
	}

	// A stall limit for this call only (the client has none).
	o = startStreamWith(t, c, &request{url: srv.URL + "/stall", deadline: -1}, false, callOptions{stall: 300 * time.Millisecond})
	if got, e := readAll(t, o, -1); string(got) != "par" || e == nil || e.Phase != "stall" {
		t.Fatalf("stall: %q %+v", got, e)
	}

	// No retry for this call: one request, the 503 returned.
	o = startStreamWith(t, c, &request{url: srv.URL + "/busy", deadline: -1}, false, callOptions{maxAttempts: 1})
	o.wait(-1)
	if r, e := o.takeResponse(); e != nil || r.status != 503 {
		t.Fatalf("busy: %+v %+v", r, e)
	}
	if n := busy.Load(); n != 1 {
		t.Fatalf("%d requests with max_attempts 1", n)
	}
	// The client's policy retries it (3 attempts).
	o = startStream(t, c, &request{url: srv.URL + "/busy", deadline: -1}, false)
	o.wait(-1)
	if n := busy.Load(); n != 4 {
		t.Fatalf("%d requests in all, want 1 + 3", n)
	}
}

// TestStreamHTTP2: a streamed upload and a trickling body over HTTP/2
// (TLS, ALPN h2), where a body read returns as soon as its stream has a
// byte and a cancel resets the stream, not the conn.
func TestStreamHTTP2(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Write(b)
		w.(http.Flusher).Flush()
		time.Sleep(50 * time.Millisecond)
		io.WriteString(w, "|tail")
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	c := streamClient(t, map[string]any{"tls.insecure_skip_verify": true})
	o := startStream(t, c, &request{method: "POST", url: srv.URL, deadline: -1}, true)
	want := bytes.Repeat([]byte("0123456789"), 20000)
	if n, e := bodyWrite(o, want, 5*time.Second); n != len(want) || e != nil {
		t.Fatalf("write: %d %+v", n, e)
	}
	if e := o.stream.up.closeWrite(); e != nil {
		t.Fatal(e.Msg)
	}
	got, e := readAll(t, o, 5*time.Second)
	if e != nil || !bytes.Equal(got, append(want, "|tail"...)) {
		t.Fatalf("echo over h2: %d bytes, %+v", len(got), e)
	}
	r, e := o.takeResponse()
	if e != nil || r.major != 2 {
		t.Fatalf("response %+v %+v, want HTTP/2", r, e)
	}
}

// TestStreamReadyMeansReadable: once the descriptor is readable a read with
// timeout 0 returns at once, also in the moment between the headers
// reaching the stream (which signals the descriptor) and the op storing
// its result. Many streams, so that the moment is hit.
func TestStreamReadyMeansReadable(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "x")
	}))
	defer srv.Close()
	c := streamClient(t, nil)
	p := make([]byte, 8)
	for i := range 300 {
		o := startStream(t, c, &request{url: srv.URL, deadline: -1}, false)
		fd, e := o.stream.readyFD()
		if e != nil {
			t.Fatal(e.Msg)
		}
		if !readable(t, fd, 5*time.Second) {
			t.Fatalf("stream %d: not readable within 5s", i)
		}
		if n, e := bodyRead(o, p, 0); n != 1 || e != nil {
			t.Fatalf("stream %d: readable, then a read with timeout 0 gave %d, %+v", i, n, e)
		}
		o.free()
	}
}
