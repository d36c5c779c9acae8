package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// rawHTTPServer answers every request on loopback with reply, as bytes,
// and then closes the conn.
func rawHTTPServer(t *testing.T, reply string) string {
	t.Helper()
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
				for { // the request's head
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					if line == "\r\n" {
						break
					}
				}
				_, _ = io.WriteString(c, reply)
			}()
		}
	}()
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return "http://" + ln.Addr().String() + "/"
}

// A hostile server's Content-Length is a claim, not bytes: with
// max_response_bytes < 0 (no cap) a response that announces a terabyte
// and sends three bytes must fail the request (the body ended early), not
// make the library allocate what was announced (a fatal out-of-memory that
// takes the host down, or a recovered panic that poisons the library).
func TestHugeContentLengthWithoutCap(t *testing.T) {
	for _, cl := range []string{"1000000000000", "4611686018427387904"} {
		t.Run(cl, func(t *testing.T) {
			url := rawHTTPServer(t, "HTTP/1.1 200 OK\r\nContent-Length: "+cl+"\r\n\r\nabc")
			c := newClient()
			defer closeAndWait(c)
			if e := c.configure(func(cfg *config) *Error {
				next, e := cfg.configureJSON([]byte(`{"max_response_bytes": -1, "retry.max_attempts": 1}`))
				if e == nil {
					*cfg = next
				}
				return e
			}); e != nil {
				t.Fatal(e.Msg)
			}
			o, e := c.start(false, 10*time.Second, nil, false, func(ctx context.Context, b *built, o *op) *Error {
				return doRequest(ctx, b, o, &request{method: "GET", url: url})
			})
			if e != nil {
				t.Fatal(e.Msg)
			}
			if !o.wait(10 * time.Second) {
				t.Fatal("no result within 10s")
			}
			o.mu.Lock()
			got := o.err
			o.mu.Unlock()
			if got == nil || got.Status != statusNetwork {
				t.Fatalf("result %+v, want LIFELINE_E_NETWORK (a body shorter than announced)", got)
			}
			if poisonedError() != nil {
				t.Fatal("the library poisoned itself on a server's header")
			}
		})
	}
}
