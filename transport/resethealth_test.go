package transport_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestResetAfterEstablishmentIsThePeers: a server that resets a conn once
// the request arrives (incident 05's resets, after the dial succeeded) is
// held to account in the Dialer's Health as the Dialer holds a reset
// during establishment: one EventReset per reset, none for the answers.
// (Before, a reset that came after the dial was recorded nowhere, and
// which resets Health saw depended on whether each RST beat the dial.)
func TestResetAfterEstablishmentIsThePeers(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ln.Close() })
	n := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			n++
			go func(c net.Conn, reset bool) {
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				if reset {
					// The request arrived: reset, with nothing sent.
					_ = c.(*net.TCPConn).SetLinger(0)
					return
				}
				_ = req.Body.Close()
				_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
			}(c, n%2 == 1)
		}
	}()
	h := &dial.Health{}
	tr := &transport.Transport{Dialer: &dial.Dialer{Health: h}, Retry: &retry.Policy{MaxAttempts: 1}}
	t.Cleanup(tr.CloseIdleConnections)
	resets := 0
	for range 6 {
		ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
		} else if errors.Is(err, syscall.ECONNRESET) {
			resets++
		} else {
			t.Fatalf("a call: %v, want an answer or a reset", err)
		}
		cancel()
	}
	st, ok := h.Stats(netip.MustParseAddrPort(ln.Addr().String()))
	if !ok {
		t.Fatal("Health knows nothing of the server")
	}
	t.Logf("%d calls reset; Health: %d resets, %d successes, %d other failures", resets, st.Resets, st.Successes, st.OtherFailures)
	if resets != 3 || st.Resets != 3 {
		t.Fatalf("%d calls reset, Health counted %d resets: want 3 and 3", resets, st.Resets)
	}
}
