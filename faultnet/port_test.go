package faultnet_test

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// TestReservePort: a reserved port refuses at once; a stranger cannot
// listen on it; Listen opens a listener that takes every connection while
// the reservation stays; once it closes, connects are refused again at
// once, and Listen works again (with the first round's connections in
// TIME_WAIT on the port); Close frees the port.
func TestReservePort(t *testing.T) {
	for _, network := range []string{"tcp", "tcp4", "tcp6"} {
		t.Run(network, func(t *testing.T) {
			p := faultnet.ReservePort(t, network)
			addr := p.Addr()
			wantHost := "127.0.0.1"
			if network == "tcp6" {
				wantHost = "::1"
			}
			if host, port, err := net.SplitHostPort(addr); err != nil || host != wantHost || port == "0" || port != strconv.Itoa(p.Port()) {
				t.Fatalf("Addr %q, Port %d: want %s and a port", addr, p.Port(), wantHost)
			}

			expectRefused(t, addr, "reserved, not listening")
			expectStrangerFails(t, network, addr, "reserved")
			for round := 1; round <= 2; round++ {
				ln, err := p.Listen()
				if err != nil {
					t.Fatalf("round %d: Listen: %v", round, err)
				}
				if ln.Addr().String() != addr {
					ln.Close()
					t.Fatalf("round %d: listening on %s, want %s", round, ln.Addr(), addr)
				}
				expectStrangerFails(t, network, addr, "listening")
				for i := range 5 {
					expectAccepted(t, ln, addr, round, i)
				}
				if err := ln.Close(); err != nil {
					t.Fatal(err)
				}
				expectRefused(t, addr, "after the listener closed")
				expectStrangerFails(t, network, addr, "after the listener closed")
			}

			if err := p.Close(); err != nil {
				t.Fatal(err)
			}
			if err := p.Close(); err != nil {
				t.Fatalf("second Close: %v", err)
			}
			if ln, err := p.Listen(); !errors.Is(err, net.ErrClosed) {
				if ln != nil {
					ln.Close()
				}
				t.Fatalf("Listen after Close: %v, want net.ErrClosed", err)
			}
			// Freed: anyone may listen there now.
			ln, err := net.Listen(network, addr)
			if err != nil {
				t.Fatalf("listen on %s after Close: %v", addr, err)
			}
			ln.Close()
		})
	}
}

// expectRefused dials addr and wants ECONNREFUSED, at once.
func expectRefused(t *testing.T, addr, when string) {
	t.Helper()
	start := time.Now()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("%s: dial %s connected, want refused", when, addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("%s: dial %s: %v, want ECONNREFUSED", when, addr, err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("%s: refusal took %v, want immediate", when, el)
	}
}

// expectStrangerFails wants a plain listen on addr, as any other test would
// make it, to fail with EADDRINUSE.
func expectStrangerFails(t *testing.T, network, addr, when string) {
	t.Helper()
	ln, err := net.Listen(network, addr)
	if err == nil {
		ln.Close()
		t.Fatalf("%s: a stranger listened on %s", when, addr)
	}
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("%s: a stranger's listen on %s: %v, want EADDRINUSE", when, addr, err)
	}
}

// expectAccepted dials addr and wants ln to accept that very connection
// and echo a byte over it.
func expectAccepted(t *testing.T, ln net.Listener, addr string, round, i int) {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatalf("round %d, conn %d: dial %s: %v", round, i, addr, err)
	}
	defer c.Close()
	_ = ln.(*net.TCPListener).SetDeadline(time.Now().Add(5 * time.Second))
	s, err := ln.Accept()
	if err != nil {
		t.Fatalf("round %d, conn %d: accept: %v", round, i, err)
	}
	if s.RemoteAddr().String() != c.LocalAddr().String() {
		s.Close()
		t.Fatalf("round %d, conn %d: accepted %s, want the client %s", round, i, s.RemoteAddr(), c.LocalAddr())
	}
	_, _ = c.Write([]byte{byte(i)})
	_ = s.SetDeadline(time.Now().Add(5 * time.Second))
	b := make([]byte, 1)
	if _, err := s.Read(b); err != nil || b[0] != byte(i) {
		s.Close()
		t.Fatalf("round %d, conn %d: read %v, %v", round, i, b, err)
	}
	// The server closes first: the connection's TIME_WAIT is on the
	// reserved port, which the next round's Listen must not mind.
	s.Close()
}

// TestRefusedPortCloseKeepsListener: Close frees the reservation but leaves
// a listener from Listen open and accepting; a stranger still cannot bind
// the port while that listener is up.
func TestRefusedPortCloseKeepsListener(t *testing.T) {
	p := faultnet.ReservePort(t, "tcp")
	ln, err := p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	expectAccepted(t, ln, p.Addr(), 1, 0)
	expectStrangerFails(t, "tcp", p.Addr(), "listening after Close")
}

// TestRefusedPortPortsDiffer: reservations never share a port, even though
// each sets SO_REUSEPORT (a port-0 bind picks a port no one holds).
func TestRefusedPortPortsDiffer(t *testing.T) {
	seen := map[string]bool{}
	for range 50 {
		p := faultnet.ReservePort(t, "tcp")
		if seen[p.Addr()] {
			t.Fatalf("port %s reserved twice", p.Addr())
		}
		seen[p.Addr()] = true
	}
}

// TestRefusedPortConcurrent: Listen, Close and Addr from several goroutines
// (for the race detector); every Listen either listens on the port or
// fails with net.ErrClosed.
func TestRefusedPortConcurrent(t *testing.T) {
	p, err := faultnet.NewRefusedPort("tcp")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex // serializes the listeners: one open at a time
	var wg sync.WaitGroup
	for g := range 4 {
		wg.Go(func() {
			for i := range 20 {
				if g == 0 && i == 10 {
					if err := p.Close(); err != nil {
						t.Error(err)
					}
				}
				mu.Lock()
				ln, err := p.Listen()
				if err == nil {
					if ln.Addr().String() != p.Addr() {
						t.Errorf("listening on %s, want %s", ln.Addr(), p.Addr())
					}
					ln.Close()
				} else if !errors.Is(err, net.ErrClosed) {
					t.Errorf("Listen: %v", err)
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	if _, err := p.Listen(); !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Listen after Close: %v", err)
	}
}

// TestNewRefusedPortBadNetwork: a network other than tcp, tcp4 or tcp6 is
// an error naming it.
func TestNewRefusedPortBadNetwork(t *testing.T) {
	for _, network := range []string{"udp", "", "unix", "ip4"} {
		p, err := faultnet.NewRefusedPort(network)
		if err == nil {
			p.Close()
			t.Errorf("NewRefusedPort(%q): no error", network)
			continue
		}
		t.Logf("%q: %v", network, err)
	}
}

// TestReservePortListenerServes: a real server on the reserved port, down,
// up and down again, as the converted tests use it: connects are refused,
// then a client gets its answer, then refused again.
func TestReservePortListenerServes(t *testing.T) {
	p := faultnet.ReservePort(t, "tcp")
	expectRefused(t, p.Addr(), "down")
	ln, err := p.Listen()
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_, _ = c.Write([]byte("up"))
			c.Close()
		}
	})
	var d net.Dialer
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	c, err := d.DialContext(ctx, "tcp", p.Addr())
	if err != nil {
		t.Fatal(err)
	}
	got, err := readResult(c, 5*time.Second)
	c.Close()
	if got != "up" {
		t.Fatalf("read %q, %v, want \"up\"", got, err)
	}
	ln.Close()
	wg.Wait()
	expectRefused(t, p.Addr(), "down again")
}
