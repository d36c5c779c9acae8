package faultnet_test

import (
	"context"
	"errors"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// nsDial dials addr from inside n with a timeout.
func nsDial(t *testing.T, n *faultnet.Netns, addr string, timeout time.Duration) (net.Conn, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), timeout)
	defer cancel()
	c, err := n.DialContext(ctx, "tcp", addr)
	if err == nil {
		t.Cleanup(func() { c.Close() })
	}
	return c, err
}

func echoOnce(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatalf("write: %v", err)
	}
	if got, err := readResult(c, 5*time.Second); err != nil || got != msg {
		t.Fatalf("echo: %q, %v", got, err)
	}
}

func TestNetnsRunIsInside(t *testing.T) {
	n := faultnet.NewNetns(t)
	if !strings.HasPrefix(n.Name, "lifeline-") {
		t.Fatalf("Name %q", n.Name)
	}
	var names []string
	err := n.Run(func() error {
		ifs, err := net.Interfaces()
		for _, i := range ifs {
			names = append(names, i.Name)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(names) != 1 || names[0] != "lo" {
		t.Fatalf("interfaces inside: %v, want only lo", names)
	}
	want := errors.New("from fn")
	if err := n.Run(func() error { return want }); !errors.Is(err, want) {
		t.Fatalf("Run returned %v, want fn's error", err)
	}
}

// A socket from DialContext is in the namespace: a host server on the same
// port is not reached, and a namespace server is.
func TestNetnsDialContextIsInside(t *testing.T) {
	n := faultnet.NewNetns(t)
	host := faultnet.Start(t, faultnet.Config{})
	if _, err := nsDial(t, n, host.Addr(), 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial from the namespace to the host's %s: %v, want ECONNREFUSED", host.Addr(), err)
	}
	if st := host.Stats(); st.Accepted != 0 {
		t.Fatalf("the host server accepted %d conns from the namespace", st.Accepted)
	}
	ns := n.Start(t, faultnet.Config{})
	c, err := nsDial(t, n, ns.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, "in")
	// And the host cannot reach the namespace server.
	if hc, err := net.DialTimeout("tcp", ns.Addr(), 5*time.Second); err == nil {
		hc.Close()
		if host.Port() != ns.Port() {
			t.Fatalf("host reached the namespace server at %s", ns.Addr())
		}
	}
}

func TestNetnsListen(t *testing.T) {
	n := faultnet.NewNetns(t)
	ln, err := n.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	done := make(chan error, 1)
	go func() {
		c, err := ln.Accept()
		if err == nil {
			c.Close()
		}
		done <- err
	}()
	if _, err := nsDial(t, n, ln.Addr().String(), 5*time.Second); err != nil {
		t.Fatal(err)
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

func TestNetnsDropSYN(t *testing.T) {
	n := faultnet.NewNetns(t)
	s := n.Start(t, faultnet.Config{})
	if err := n.DropSYN(s.Port()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := nsDial(t, n, s.Addr(), 300*time.Millisecond)
	if !isTimeout(err) {
		t.Fatalf("connect with SYNs dropped: %v (%s), want a timeout", err, kind(err))
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("connect failed after %v, before its 300ms timeout", el)
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	c, err := nsDial(t, n, s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatalf("after Flush: %v", err)
	}
	echoOnce(t, c, "ok")
	if st := s.Stats(); st.Accepted != 1 {
		t.Fatalf("server accepted %d, want only the conn after Flush", st.Accepted)
	}
}

// DropSYN leaves established connections alone.
func TestNetnsDropSYNKeepsEstablished(t *testing.T) {
	n := faultnet.NewNetns(t)
	s := n.Start(t, faultnet.Config{})
	c, err := nsDial(t, n, s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if err := n.DropSYN(s.Port()); err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, "still")
}

func TestNetnsRejectReset(t *testing.T) {
	n := faultnet.NewNetns(t)
	s := n.Start(t, faultnet.Config{})
	if err := n.RejectReset(s.Port()); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	_, err := nsDial(t, n, s.Addr(), 5*time.Second)
	if !errors.Is(err, syscall.ECONNREFUSED) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("connect with reject: %v (%s), want refused", err, kind(err))
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("refusal took %v, want immediate", el)
	}
	if st := s.Stats(); st.Accepted != 0 {
		t.Fatalf("server accepted %d", st.Accepted)
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := nsDial(t, n, s.Addr(), 5*time.Second); err != nil {
		t.Fatalf("after Flush: %v", err)
	}
}

func TestNetnsLossTotal(t *testing.T) {
	n := faultnet.NewNetns(t)
	s := n.Start(t, faultnet.Config{})
	if err := n.Loss(s.Port(), 100); err != nil {
		t.Fatal(err)
	}
	if _, err := nsDial(t, n, s.Addr(), 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("connect with 100%% loss: %v (%s), want a timeout", err, kind(err))
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if _, err := nsDial(t, n, s.Addr(), 5*time.Second); err != nil {
		t.Fatalf("after Flush: %v", err)
	}
}

// Loss 0 drops nothing: the rule's percentage is really applied.
func TestNetnsLossNone(t *testing.T) {
	n := faultnet.NewNetns(t)
	s := n.Start(t, faultnet.Config{})
	if err := n.Loss(s.Port(), 0); err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		c, err := nsDial(t, n, s.Addr(), 5*time.Second)
		if err != nil {
			t.Fatalf("conn %d with 0%% loss: %v", i, err)
		}
		echoOnce(t, c, "x")
	}
}

func TestNetnsVanish(t *testing.T) {
	n := faultnet.NewNetns(t)
	s := n.Start(t, faultnet.Config{})
	c, err := nsDial(t, n, s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, "before")
	if err := n.Vanish(s.Port()); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Write([]byte("gone?")); err != nil {
		t.Fatalf("write after Vanish: %v (the kernel buffers it; no error expected)", err)
	}
	// No answer, and no FIN or RST either: only the deadline ends the read.
	if got, err := readResult(c, 500*time.Millisecond); kind(err) != "timeout" {
		t.Fatalf("read after Vanish: %q, %v (%s), want a timeout", got, err, kind(err))
	}
	// New connects vanish too.
	if _, err := nsDial(t, n, s.Addr(), 300*time.Millisecond); !isTimeout(err) {
		t.Fatalf("connect after Vanish: %v, want a timeout", err)
	}
}

func TestNetnsBadInput(t *testing.T) {
	n := faultnet.NewNetns(t)
	for name, err := range map[string]error{
		"DropSYN(0)":         n.DropSYN(0),
		"RejectReset(70000)": n.RejectReset(70000),
		"Loss(port,-1)":      n.Loss(80, -1),
		"Loss(port,101)":     n.Loss(80, 101),
		"Vanish(-5)":         n.Vanish(-5),
	} {
		if err == nil {
			t.Errorf("%s: no error", name)
		}
	}
	if err := n.Nft("this is not nft"); err == nil || !strings.Contains(err.Error(), "nft") {
		t.Fatalf("bad ruleset: %v", err)
	}
	// Flush with no rules is fine.
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
	if err := n.Flush(); err != nil {
		t.Fatal(err)
	}
}

// A Netns literal naming an existing namespace works; the zero value fails
// with an error naming the field.
func TestNetnsLiteral(t *testing.T) {
	n := faultnet.NewNetns(t)
	lit := &faultnet.Netns{Name: n.Name}
	s := n.Start(t, faultnet.Config{})
	c, err := nsDial(t, lit, s.Addr(), 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	echoOnce(t, c, "lit")
	if err := lit.Vanish(s.Port()); err != nil {
		t.Fatal(err)
	}
	if err := lit.Flush(); err != nil {
		t.Fatal(err)
	}
	var zero faultnet.Netns
	if err := zero.Run(func() error { return nil }); err == nil || !strings.Contains(err.Error(), "Netns.Name") {
		t.Fatalf("zero Netns Run: %v", err)
	}
	if err := zero.DropSYN(80); err == nil || !strings.Contains(err.Error(), "Netns.Name") {
		t.Fatalf("zero Netns DropSYN: %v", err)
	}
}

// Loss(port, 20) drops packets at random: of 20 connects (each needing a
// SYN and a SYN-ACK through, p≈0.64) some succeed and some time out. All
// 20 land on one side about once in 8,000 runs, so the test goes on (up to
// 100 connects, ≈1e-19) until it has seen both.
func TestNetnsLossPartial(t *testing.T) {
	n := faultnet.NewNetns(t)
	s := n.Start(t, faultnet.Config{})
	if err := n.Loss(s.Port(), 20); err != nil {
		t.Fatal(err)
	}
	ok, lost := 0, 0
	for i := 0; i < 20 || (i < 100 && (ok == 0 || lost == 0)); i++ {
		c, err := nsDial(t, n, s.Addr(), 150*time.Millisecond)
		switch {
		case err == nil:
			ok++
			c.Close()
		case isTimeout(err):
			lost++
		default:
			t.Fatalf("connect with 20%% loss: %v", err)
		}
	}
	if ok == 0 || lost == 0 {
		t.Fatalf("20%% loss: %d connects succeeded, %d timed out; want some of each", ok, lost)
	}
	t.Logf("20%% loss: %d of %d connects succeeded", ok, ok+lost)
}
