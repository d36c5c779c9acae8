package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

// Adversary tests of streamed bodies: a hostile server (a short body, a
// chunked body of garbage, an early 413 while the host still writes, a
// body without end) and a host that stops reading.

// A Content-Length larger than the bytes sent, then close: the reads give
// the bytes and then a failure, never a clean end.
func TestAdvStreamShortBody(t *testing.T) {
	url := rawHTTPServer(t, "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\nonly these")
	c := streamClient(t, map[string]any{"retry.max_attempts": 1})
	o := startStream(t, c, &request{url: url}, false)
	got, e := readAll(t, o, 5*time.Second)
	if e == nil {
		t.Fatalf("a body cut short ended cleanly after %q", got)
	}
	if string(got) != "only these" {
		t.Fatalf("bytes before the failure: %q", got)
	}
	if e.Status != statusNetwork {
		t.Fatalf("status %d (%s), want network", e.Status, e.Msg)
	}
	stableType(t, e)
}

// A chunked body whose chunk header is garbage fails the read.
func TestAdvStreamChunkedGarbage(t *testing.T) {
	url := rawHTTPServer(t, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nzz-not-hex\r\n")
	c := streamClient(t, map[string]any{"retry.max_attempts": 1})
	o := startStream(t, c, &request{url: url}, false)
	got, e := readAll(t, o, 5*time.Second)
	if e == nil {
		t.Fatalf("garbage chunk ended cleanly after %q", got)
	}
	stableType(t, e)
}

// A body without end and a host that stops reading: the library's buffer
// stays bounded, and reading on gets bytes again.
func TestAdvStreamEndlessBodyBounded(t *testing.T) {
	mux := http.NewServeMux()
	stop := make(chan struct{})
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		p := make([]byte, 16<<10)
		for {
			select {
			case <-stop:
				return
			case <-r.Context().Done():
				return
			default:
			}
			if _, err := w.Write(p); err != nil {
				return
			}
		}
	})
	hs := httptest.NewServer(mux)
	defer hs.Close()
	defer close(stop)
	srv := hs.URL
	c := streamClient(t, map[string]any{"retry.max_attempts": 1, "request_timeout_ms": -1})
	o := startStream(t, c, &request{url: srv, deadline: -1}, false)
	// Freed before the server's Close (defers run first): its handler is
	// blocked writing to a connection only the free ends.
	defer o.free()
	p := make([]byte, 1)
	if _, e := bodyRead(o, p, 5*time.Second); e != nil {
		t.Fatal(e.Msg)
	}
	time.Sleep(300 * time.Millisecond) // the host reads nothing
	s := o.stream
	s.mu.Lock()
	held := len(s.buf) - s.off
	c2 := cap(s.buf)
	s.mu.Unlock()
	if held > streamBuffer+streamChunk || c2 > 2*(streamBuffer+streamChunk) {
		t.Fatalf("stream holds %d bytes (cap %d) for a host that stopped reading", held, c2)
	}
	q := make([]byte, 1<<20)
	for i := 0; i < 50; i++ {
		if _, e := bodyRead(o, q, 5*time.Second); e != nil {
			t.Fatal(e.Msg)
		}
	}
}

// An upload whose server answers 413 at once (and closes) while the host
// still writes: the writes end with an answer within a bound, never an
// endless run of write timeouts.
func TestAdvStreamUploadEarly413(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil || line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, "HTTP/1.1 413 Content Too Large\r\nContent-Length: 4\r\nConnection: close\r\n\r\nbig!")
				// Keep the conn open but never read the body again.
				time.Sleep(3 * time.Second)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	c := streamClient(t, map[string]any{"retry.max_attempts": 1})
	o := startStream(t, c, &request{url: "http://" + ln.Addr().String() + "/", method: http.MethodPut}, true)
	chunk := []byte(strings.Repeat("u", 32<<10))
	start := time.Now()
	for {
		_, e := bodyWrite(o, chunk, 200*time.Millisecond)
		if e == nil {
			if time.Since(start) > 10*time.Second {
				t.Fatal("writes still accepted 10s after a 413")
			}
			continue
		}
		if e.Type == "write_timeout" {
			if time.Since(start) > 2500*time.Millisecond {
				t.Fatalf("still only write timeouts %v after a 413: the host is never told", time.Since(start))
			}
			continue
		}
		t.Logf("write ended after %v: status %d %s", time.Since(start), e.Status, e.Msg)
		break
	}
	if !o.done() {
		t.Fatal("op not finished")
	}
	o.mu.Lock()
	resp := o.resp
	o.mu.Unlock()
	if resp == nil || resp.status != 413 {
		t.Fatalf("response %+v, want 413", resp)
	}
}

// Readers blocked without a limit on a quiet body and a writer blocked
// without a limit on an upload nobody reads, while another goroutine frees
// the op: every call returns (canceled), promptly, and the race detector
// sees nothing.
func TestAdvStreamFreeUnderReadersAndWriter(t *testing.T) {
	quit := make(chan struct{})
	hs := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select { // quiet: no byte, no end; never reads an upload
		case <-quit:
		case <-r.Context().Done():
		}
	}))
	defer hs.Close()
	defer close(quit)
	c := streamClient(t, map[string]any{"retry.max_attempts": 1, "transport.stall_timeout_ms": -1})
	for _, upload := range []bool{false, true} {
		r := &request{url: hs.URL, deadline: -1}
		if upload {
			r.method = http.MethodPost
		}
		s := newStream(c, upload)
		o, e := c.startOp(false, -1, nil, false, s, func(ctx context.Context, b *built, o *op) *Error {
			return doStream(ctx, b, o, r, callOptions{}, s)
		})
		if e != nil {
			t.Fatal(e.Msg)
		}
		var wg sync.WaitGroup
		errs := make(chan *Error, 16)
		for i := 0; i < 8; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, 64)
				for {
					n, e := bodyRead(o, p, -1)
					if e != nil || n == 0 {
						errs <- e
						return
					}
				}
			}()
		}
		if upload {
			wg.Add(1)
			go func() {
				defer wg.Done()
				p := make([]byte, 1<<20)
				for {
					if _, e := bodyWrite(o, p, -1); e != nil {
						errs <- e
						return
					}
				}
			}()
		}
		time.Sleep(100 * time.Millisecond)
		start := time.Now()
		o.free()
		done := make(chan struct{})
		go func() { wg.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			t.Fatalf("upload=%v: calls still blocked 5s after free", upload)
		}
		close(errs)
		for e := range errs {
			if e == nil || e.Status != statusCanceled {
				t.Fatalf("upload=%v: a call ended with %+v after free, want canceled", upload, e)
			}
		}
		t.Logf("upload=%v: released in %v", upload, time.Since(start))
	}
}
