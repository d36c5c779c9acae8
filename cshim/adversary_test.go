package main

import (
	"bufio"
	"context"
	"io"
	"net"
	"strings"
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

// Secrets in a URL (userinfo, query) and in a proxy URL never reach an
// error message, nor the configuration snapshot (lifeline.h: messages
// "never contain URL paths, queries or header values").
func TestSecretsStayOutOfMessages(t *testing.T) {
	refused := "127.0.0.1:1"
	for _, tc := range []struct {
		name, proxy, url string
	}{
		{"url", "none", "http://user:SECRET1@" + refused + "/p/SECRET2?token=SECRET3#SECRET4"},
		{"proxy", "http://puser:SECRET5@" + refused, "http://example.test/SECRET2?token=SECRET3"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := newClient()
			defer closeAndWait(c)
			doc := `{"transport.proxy": "` + tc.proxy + `", "retry.max_attempts": 1}`
			if e := c.configure(func(cfg *config) *Error {
				next, e := cfg.configureJSON([]byte(doc))
				if e == nil {
					*cfg = next
				}
				return e
			}); e != nil {
				t.Fatal(e.Msg)
			}
			o, e := c.start(false, 5*time.Second, nil, false, func(ctx context.Context, b *built, o *op) *Error {
				return doRequest(ctx, b, o, &request{method: "GET", url: tc.url})
			})
			var msg string
			if e != nil {
				msg = e.Msg
			} else {
				o.wait(10 * time.Second)
				o.mu.Lock()
				if o.err != nil {
					msg = o.err.Msg
				}
				o.mu.Unlock()
			}
			if msg == "" {
				t.Fatal("the request did not fail")
			}
			if strings.Contains(msg, "SECRET") {
				t.Errorf("error message carries a secret: %s", msg)
			}
			snap, _ := c.snapshot()
			if strings.Contains(string(snap), "SECRET") {
				t.Errorf("metrics snapshot carries a secret")
			}
			cfgDoc, _ := c.configJSON()
			if strings.Contains(string(cfgDoc), "SECRET") {
				t.Errorf("config snapshot carries a secret: %s", cfgDoc)
			}
		})
	}
	t.Run("proxy rejected", func(t *testing.T) {
		_, e := config{}.configureJSON([]byte(`{"transport.proxy": "http://u:SECRET6@h%zz:1"}`))
		if e == nil || e.Status != statusBadValue {
			t.Fatalf("got %+v, want LIFELINE_E_BAD_VALUE", e)
		}
		if strings.Contains(e.Msg, "SECRET") {
			t.Errorf("error message carries a secret: %s", e.Msg)
		}
	})
}
