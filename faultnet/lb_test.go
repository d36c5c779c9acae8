package faultnet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// Every 3rd connection through the LB hangs after accept and never reaches
// the backend; the others are forwarded byte for byte.
func TestLBSilenceEveryNth(t *testing.T) {
	backend := faultnet.Start(t, faultnet.Config{}) // echo
	lb := faultnet.StartLB(t, faultnet.LBConfig{Backend: backend.Addr(), Select: faultnet.EveryNth(3)})
	for i := 1; i <= 6; i++ {
		c := dial(t, lb.Addr())
		if _, err := c.Write([]byte("ping")); err != nil {
			t.Fatal(err)
		}
		got, err := readResult(c, 300*time.Millisecond)
		if i%3 == 0 {
			if kind(err) != "timeout" {
				t.Fatalf("conn %d (hung): %q, %v, want a timeout", i, got, err)
			}
		} else if err != nil || got != "ping" {
			t.Fatalf("conn %d (forwarded): %q, %v, want the echo", i, got, err)
		}
		c.Close()
	}
	if st := lb.Stats(); st.Accepted != 6 || st.Faulted != 2 || st.Served != 4 {
		t.Fatalf("LB stats: %+v, want 6 accepted, 2 hung, 4 forwarded", st)
	}
	// The hung conns never reached the backend: a request sent on them is
	// never acted on.
	if st := backend.Stats(); st.Accepted != 4 {
		t.Fatalf("backend accepted %d conns, want 4 (hung conns must not be forwarded)", st.Accepted)
	}
	eventually(t, 5*time.Second, "LB and backend conns closed", func() bool {
		return lb.Stats().Active == 0 && backend.Stats().Active == 0
	})
}

// With StallTLS the picked conn reads the ClientHello and stalls the
// handshake; the others complete TLS with the backend behind the LB.
func TestLBStallTLS(t *testing.T) {
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	backend := faultnet.Start(t, faultnet.Config{TLS: srvTLS})
	lb := faultnet.StartLB(t, faultnet.LBConfig{Backend: backend.Addr(), Fault: faultnet.StallTLS, Select: faultnet.FirstN(1)})

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	tc := tls.Client(dial(t, lb.Addr()), cliTLS)
	if err := tc.HandshakeContext(ctx); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handshake through the stalling LB: %v, want context.DeadlineExceeded", err)
	}
	eventually(t, 5*time.Second, "ClosedByPeer after the client gave up", func() bool {
		return lb.Stats().ClosedByPeer == 1
	})

	tc2 := tls.Client(dial(t, lb.Addr()), cliTLS)
	if err := tc2.HandshakeContext(t.Context()); err != nil {
		t.Fatalf("handshake with the backend through the LB: %v", err)
	}
	if _, err := tc2.Write([]byte("pong")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(tc2, buf); err != nil || string(buf) != "pong" {
		t.Fatalf("TLS echo through the LB: %q, %v", buf, err)
	}
	if st := backend.Stats(); st.Accepted != 1 {
		t.Fatalf("backend accepted %d conns, want 1", st.Accepted)
	}
}

// A backend that is down: the LB resets the client.
func TestLBBackendDown(t *testing.T) {
	lb := faultnet.StartLB(t, faultnet.LBConfig{Backend: faultnet.RefusedAddr(t, "tcp4")})
	c, err := net.DialTimeout("tcp", lb.Addr(), 5*time.Second)
	if err == nil {
		// The RST comes after connect returned: the first read sees it.
		defer c.Close()
		_, err = readResult(c, 5*time.Second)
	}
	if kind(err) != "reset" && kind(err) != "EOF" {
		t.Fatalf("through an LB whose backend is down: %v (%s), want reset or EOF", err, kind(err))
	}
}

// Closing the LB ends forwarded conns too (goleak checks the goroutines).
func TestLBCloseEndsForwarded(t *testing.T) {
	backend := faultnet.Start(t, faultnet.Config{})
	lb, err := faultnet.NewLB(faultnet.LBConfig{Backend: backend.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, lb.Addr())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	if got, err := readResult(c, 5*time.Second); err != nil || got != "x" {
		t.Fatalf("echo: %q, %v", got, err)
	}
	done := make(chan error, 1)
	go func() { done <- lb.Close() }()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("LB Close did not return with a forwarded conn open")
	}
	if _, err := readResult(c, 5*time.Second); kind(err) == "timeout" || err == nil {
		t.Fatalf("client read after LB Close: %v, want the conn closed", err)
	}
}

func TestNewLBBadConfig(t *testing.T) {
	for name, cfg := range map[string]faultnet.LBConfig{
		"no backend":       {},
		"backend port 0":   {Backend: "127.0.0.1:0"},
		"remote backend":   {Backend: "192.0.2.1:80"},
		"fault not a hang": {Backend: "127.0.0.1:1", Fault: faultnet.Reset},
	} {
		if lb, err := faultnet.NewLB(cfg); err == nil {
			_ = lb.Close()
			t.Errorf("%s: NewLB(%+v) succeeded, want an error", name, cfg)
		} else if !strings.HasPrefix(err.Error(), "faultnet: ") {
			t.Errorf("%s: error %q lacks the package prefix", name, err)
		}
	}
}
