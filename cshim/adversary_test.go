package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeline-go/lifeline/faultnet"
)

// rawHTTPServer answers every request on loopback with reply, as bytes,
// and then closes the conn — or, with hold, once hold is closed.
func rawHTTPServer(t *testing.T, reply string, hold ...chan struct{}) string {
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
				for _, h := range hold {
					<-h
				}
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

// The relay's TLS conn has a send buffer full to the brim (its last write
// fitted exactly; the peer stopped reading) and the relay is not in a
// Write when the host closes its descriptor: the host's end-of-file makes
// the relay send close_notify, which tls.Conn waits up to 5s to write, and
// closing a tls.Conn waits for that. lifeline.h: the relay ends within
// 100ms of close(fd), whatever it is blocked on.
func TestRelayEndsWhenCloseNotifyBlocks(t *testing.T) {
	serverTLS, clientTLS := faultnet.SelfSigned(t)
	release := make(chan struct{})
	srv := faultnet.Start(t, faultnet.Config{TLS: serverTLS, Handler: func(c net.Conn) {
		<-release // reads nothing until the test ends
	}})
	defer close(release)

	nd := net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, 16<<10) // no autotuning
		}); err != nil {
			return err
		}
		return serr
	}}
	raw, err := nd.DialContext(t.Context(), "tcp", srv.Addr())
	if err != nil {
		t.Fatal(err)
	}
	cfg := clientTLS.Clone()
	cfg.ServerName = "127.0.0.1"
	conn := tls.Client(raw, cfg)
	if err := conn.HandshakeContext(t.Context()); err != nil {
		t.Fatal(err)
	}
	// Fill the send buffer under TLS without a write of tls.Conn's
	// failing: what the relay's last write leaves when it fits exactly.
	rc, err := raw.(syscall.Conn).SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	filled := 0
	chunk := make([]byte, 512)
	for quiet := time.Now(); time.Since(quiet) < 200*time.Millisecond; {
		var n int
		var werr error
		_ = rc.Control(func(fd uintptr) { n, werr = unix.Write(int(fd), chunk) })
		switch {
		case werr == unix.EAGAIN:
			time.Sleep(5 * time.Millisecond)
		case werr != nil:
			t.Fatal(werr)
		default:
			filled += n
			quiet = time.Now()
		}
	}
	t.Logf("send buffers full after %d bytes", filled)

	c := newClient()
	defer closeAndWait(c)
	fd, e := c.relayTLS(conn)
	if e != nil {
		t.Fatal(e.Msg)
	}
	closed := time.Now()
	if err := unix.Close(fd); err != nil {
		t.Fatal(err)
	}
	for relayCount(c) != 0 {
		if time.Since(closed) > 2*time.Second {
			t.Fatalf("relay still running %v after the host closed its descriptor",
				time.Since(closed).Round(time.Millisecond))
		}
		time.Sleep(time.Millisecond)
	}
	if gone := time.Since(closed); gone > time.Second {
		t.Errorf("relay took %v to end after close(fd), want well under a second (lifeline.h: 100ms)", gone)
	}
}

// The total deadline that strikes while the body is being read names the
// body's phase ("stall", type "deadline"), as it names "tls" or
// "first_byte" when it ends those: "deadline" alone is for a deadline that
// struck outside any phase (lifeline.h).
func TestDeadlinePhaseInBody(t *testing.T) {
	url := rawHTTPServerHold(t, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nabc")
	c := newClient()
	defer closeAndWait(c)
	o, e := c.start(false, 300*time.Millisecond, nil, false, func(ctx context.Context, b *built, o *op) *Error {
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
	if got == nil || got.Status != statusTimeout || got.Type != "deadline" || got.Phase != "stall" || !got.Timeout {
		t.Fatalf("result %+v, want LIFELINE_E_TIMEOUT, phase stall, type deadline", got)
	}
}

// rawHTTPServerHold is rawHTTPServer whose conns stay open after the
// reply until the test ends.
func rawHTTPServerHold(t *testing.T, reply string) string {
	t.Helper()
	done := make(chan struct{})
	url := rawHTTPServer(t, reply, done)
	t.Cleanup(func() { close(done) }) // before rawHTTPServer's wait
	return url
}
