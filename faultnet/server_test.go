package faultnet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

func TestServerEchoByDefault(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{})
	if got := s.AddrPort().Addr().String(); got != "127.0.0.1" {
		t.Fatalf("default address %s, want 127.0.0.1", got)
	}
	if s.Port() == 0 || !strings.HasSuffix(s.Addr(), ":"+strconv.Itoa(s.Port())) {
		t.Fatalf("Addr %q and Port %d disagree", s.Addr(), s.Port())
	}
	c := dial(t, s.Addr())
	if _, err := c.Write([]byte("hello")); err != nil {
		t.Fatal(err)
	}
	got, err := readResult(c, 5*time.Second)
	if err != nil || got != "hello" {
		t.Fatalf("echo: got %q, %v", got, err)
	}
	st := s.Stats()
	if st.Accepted != 1 || st.Served != 1 || st.Faulted != 0 || st.Active != 1 || st.MaxActive != 1 {
		t.Fatalf("stats while open: %+v", st)
	}
	c.Close()
	eventually(t, 5*time.Second, "Active back to 0", func() bool { return s.Stats().Active == 0 })
	if st := s.Stats(); st.ClosedByPeer != 0 || st.MaxActive != 1 {
		t.Fatalf("stats after close: %+v (ClosedByPeer counts faulted conns only)", st)
	}
}

func TestServerSilence(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	c := dial(t, s.Addr())
	if _, err := c.Write([]byte("GET / HTTP/1.1\r\n\r\n")); err != nil {
		t.Fatal(err)
	}
	if got, err := readResult(c, 300*time.Millisecond); kind(err) != "timeout" {
		t.Fatalf("read from a silent server: %q, %v (%s), want a timeout", got, err, kind(err))
	}
	st := s.Stats()
	if st.Accepted != 1 || st.Faulted != 1 || st.Served != 0 || st.Active != 1 || st.ClosedByPeer != 0 {
		t.Fatalf("stats while held: %+v", st)
	}
	c.Close()
	eventually(t, 5*time.Second, "ClosedByPeer=1 after the client closed", func() bool {
		st := s.Stats()
		return st.ClosedByPeer == 1 && st.Active == 0
	})
}

func TestServerSilenceNeverReads(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	c := dial(t, s.Addr())
	// Never read: the client's writes stop once the kernel buffers fill.
	_ = c.SetWriteDeadline(time.Now().Add(500 * time.Millisecond))
	big := make([]byte, 1<<20)
	var err error
	for i := 0; i < 64 && err == nil; i++ {
		_, err = c.Write(big)
	}
	if kind(err) != "timeout" {
		t.Fatalf("writing 64MiB to a server that never reads: %v, want a write timeout", err)
	}
}

func TestServerSilenceSeesFINWithoutData(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	c := dial(t, s.Addr())
	eventually(t, 5*time.Second, "accepted", func() bool { return s.Stats().Faulted == 1 })
	c.Close()
	eventually(t, 5*time.Second, "ClosedByPeer=1", func() bool { return s.Stats().ClosedByPeer == 1 })
}

func TestServerStallTLS(t *testing.T) {
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	// The first connection stalls after the ClientHello; the second is served over TLS.
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.StallTLS, Select: faultnet.FirstN(1), TLS: srvTLS})

	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	start := time.Now()
	c := dial(t, s.Addr())
	tc := tls.Client(c, cliTLS)
	err := tc.HandshakeContext(ctx)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("handshake against StallTLS: %v, want context.DeadlineExceeded", err)
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("handshake failed after %v, before the 300ms timeout", el)
	}
	eventually(t, 5*time.Second, "ClosedByPeer after the stalled client gave up", func() bool {
		return s.Stats().ClosedByPeer == 1
	})

	c2 := dial(t, s.Addr())
	tc2 := tls.Client(c2, cliTLS)
	if err := tc2.HandshakeContext(t.Context()); err != nil {
		t.Fatalf("handshake with the healthy TLS connection: %v", err)
	}
	if _, err := tc2.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 4)
	if _, err := io.ReadFull(tc2, buf); err != nil || string(buf) != "ping" {
		t.Fatalf("TLS echo: %q, %v", buf, err)
	}
	if st := s.Stats(); st.Accepted != 2 || st.Faulted != 1 || st.Served != 1 {
		t.Fatalf("stats: %+v", st)
	}
}

// StallTLS reads exactly one record and then holds: a client that sends a
// whole record gets no answer, and the server does not treat the record's
// arrival as a close.
func TestServerStallTLSReadsOneRecord(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.StallTLS})
	c := dial(t, s.Addr())
	rec := append([]byte{22, 3, 1, 0, 4}, 1, 2, 3, 4)
	if _, err := c.Write(rec); err != nil {
		t.Fatal(err)
	}
	if got, err := readResult(c, 300*time.Millisecond); kind(err) != "timeout" {
		t.Fatalf("after one record: %q, %v, want a timeout", got, err)
	}
	if st := s.Stats(); st.ClosedByPeer != 0 || st.Faulted != 1 || st.Active != 1 {
		t.Fatalf("stats while stalled: %+v", st)
	}
	c.Close()
	eventually(t, 5*time.Second, "ClosedByPeer=1", func() bool { return s.Stats().ClosedByPeer == 1 })
}

func TestServerReset(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Reset})
	// The RST can beat connect's return: then the dial itself reports it.
	c, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second)
	if err == nil {
		defer c.Close()
		_, err = readResult(c, 5*time.Second)
	}
	if !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("after Reset: %v (%s), want ECONNRESET", err, kind(err))
	}
	eventually(t, 5*time.Second, "reset counted", func() bool { return s.Stats().Active == 0 && s.Stats().Faulted == 1 })
}

func TestServerCloseNow(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.CloseNow})
	c := dial(t, s.Addr())
	// Data the server never reads must not turn the FIN into a RST.
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	if _, err := readResult(c, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("read after CloseNow: %v (%s), want io.EOF", err, kind(err))
	}
	if st := s.Stats(); st.Faulted != 1 || st.Served != 0 || st.ClosedByPeer != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestServerSlowDrip(t *testing.T) {
	const interval = 30 * time.Millisecond
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.SlowDrip, DripInterval: interval})
	c := dial(t, s.Addr())
	msg := "abcdefgh"
	start := time.Now()
	if _, err := c.Write([]byte(msg)); err != nil {
		t.Fatal(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var got []byte
	reads := 0
	buf := make([]byte, 64)
	for len(got) < len(msg) {
		n, err := c.Read(buf)
		if err != nil {
			t.Fatalf("after %q: %v", got, err)
		}
		got = append(got, buf[:n]...)
		reads++
	}
	el := time.Since(start)
	if string(got) != msg {
		t.Fatalf("got %q, want %q", got, msg)
	}
	// One byte per interval: 8 bytes cannot arrive in less than 8 intervals.
	if el < time.Duration(len(msg))*interval {
		t.Fatalf("%d bytes arrived in %v, faster than 1 byte per %v", len(msg), el, interval)
	}
	if reads < 2 {
		t.Fatalf("the whole reply arrived in one read: not dribbled")
	}
	if st := s.Stats(); st.Faulted != 1 || st.Served != 0 {
		t.Fatalf("stats: %+v", st)
	}
}

// The selector sees accept ordinals; EveryNth(3) faults exactly conns 3 and 6.
func TestServerSelectorEveryNth(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.CloseNow, Select: faultnet.EveryNth(3)})
	var faulted []int
	for i := 1; i <= 6; i++ {
		c := dial(t, s.Addr())
		_, _ = c.Write([]byte("x"))
		got, err := readResult(c, 5*time.Second)
		switch {
		case err == nil && got == "x":
		case errors.Is(err, io.EOF) || errors.Is(err, syscall.ECONNRESET):
			faulted = append(faulted, i)
		default:
			t.Fatalf("conn %d: %q, %v", i, got, err)
		}
		c.Close()
	}
	if len(faulted) != 2 || faulted[0] != 3 || faulted[1] != 6 {
		t.Fatalf("faulted conns %v, want [3 6]", faulted)
	}
	if st := s.Stats(); st.Accepted != 6 || st.Faulted != 2 || st.Served != 4 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestServerSetFault(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{})
	try := func() string {
		c := dial(t, s.Addr())
		defer c.Close()
		_, _ = c.Write([]byte("x"))
		_, err := readResult(c, 5*time.Second)
		return kind(err)
	}
	if k := try(); k != "ok" {
		t.Fatalf("before SetFault: %s", k)
	}
	s.SetFault(faultnet.CloseNow, faultnet.FirstN(1)) // counting restarts: the next conn is 1
	if k := try(); k != "EOF" && k != "reset" {
		t.Fatalf("first conn after SetFault: %s, want closed", k)
	}
	if k := try(); k != "ok" {
		t.Fatalf("second conn after SetFault: %s, want served", k)
	}
	s.SetFault(faultnet.None, nil)
	if k := try(); k != "ok" {
		t.Fatalf("after SetFault(None): %s", k)
	}
	if err := s.SetFault(faultnet.Fault(99), faultnet.All()); err == nil { // unknown: an error, nothing changes
		t.Fatal("SetFault(99): no error")
	}
	if k := try(); k != "ok" {
		t.Fatalf("after SetFault(99): %s", k)
	}
}

func TestServerIdleClose(t *testing.T) {
	const idle = 400 * time.Millisecond
	s := faultnet.Start(t, faultnet.Config{IdleClose: idle})
	c := dial(t, s.Addr())
	// Traffic every 40ms for twice the idle limit keeps the conn open.
	start := time.Now()
	var lastSend time.Time
	for time.Since(start) < 2*idle {
		lastSend = time.Now()
		if _, err := c.Write([]byte("p")); err != nil {
			t.Fatalf("write while active: %v", err)
		}
		if got, err := readResult(c, 5*time.Second); err != nil || got != "p" {
			t.Fatalf("echo while active (after %v): %q, %v", time.Since(start), got, err)
		}
		time.Sleep(40 * time.Millisecond)
	}
	// Then silence: the server closes it, IdleClose after the last byte it got.
	if _, err := readResult(c, 10*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("idle conn: %v (%s), want EOF from the server's close", err, kind(err))
	}
	if el := time.Since(lastSend); el < idle-10*time.Millisecond || el > 5*time.Second {
		t.Fatalf("closed %v after the last send, want about %v", el, idle)
	}
}

func TestServerIdleCloseHeldConn(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence, IdleClose: 200 * time.Millisecond})
	c := dial(t, s.Addr())
	if _, err := readResult(c, 10*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("idle silent conn: %v (%s), want EOF", err, kind(err))
	}
	eventually(t, 5*time.Second, "Active=0", func() bool { return s.Stats().Active == 0 })
	if st := s.Stats(); st.ClosedByPeer != 0 {
		t.Fatalf("server-side idle close counted as ClosedByPeer: %+v", st)
	}
}

func TestServerActiveAndMaxActive(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence, Select: faultnet.EveryNth(2)})
	var conns []net.Conn
	for range 4 {
		conns = append(conns, dial(t, s.Addr()))
	}
	eventually(t, 5*time.Second, "4 active", func() bool { return s.Stats().Active == 4 })
	for _, c := range conns {
		c.Close()
	}
	eventually(t, 5*time.Second, "0 active", func() bool { return s.Stats().Active == 0 })
	st := s.Stats()
	if st.Accepted != 4 || st.Faulted != 2 || st.Served != 2 || st.MaxActive != 4 || st.ClosedByPeer != 2 {
		t.Fatalf("stats: %+v", st)
	}
}

func TestServerDropAll(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{})
	var conns []net.Conn
	for range 3 {
		conns = append(conns, dial(t, s.Addr()))
	}
	eventually(t, 5*time.Second, "3 active", func() bool { return s.Stats().Active == 3 })
	s.DropAll()
	for i, c := range conns {
		if _, err := readResult(c, 5*time.Second); !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("conn %d after DropAll: %v (%s), want ECONNRESET", i, err, kind(err))
		}
	}
	c := dial(t, s.Addr()) // still listening
	_, _ = c.Write([]byte("x"))
	if got, err := readResult(c, 5*time.Second); err != nil || got != "x" {
		t.Fatalf("after DropAll: %q, %v", got, err)
	}
}

func TestServerDownUp(t *testing.T) {
	s := faultnet.Start(t, faultnet.Config{})
	addr := s.Addr()
	c := dial(t, addr)
	eventually(t, 5*time.Second, "1 active", func() bool { return s.Stats().Active == 1 })
	if err := s.Down(); err != nil {
		t.Fatal(err)
	}
	if err := s.Down(); err != nil { // twice is fine
		t.Fatal(err)
	}
	if _, err := readResult(c, 5*time.Second); !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("open conn after Down: %v (%s), want ECONNRESET", err, kind(err))
	}
	if _, err := net.DialTimeout("tcp", addr, 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial while down: %v, want ECONNREFUSED", err)
	}
	if err := s.Up(); err != nil {
		t.Fatal(err)
	}
	if s.Addr() != addr {
		t.Fatalf("Up moved the server from %s to %s", addr, s.Addr())
	}
	c2 := dial(t, addr)
	_, _ = c2.Write([]byte("back"))
	if got, err := readResult(c2, 5*time.Second); err != nil || got != "back" {
		t.Fatalf("after Up: %q, %v", got, err)
	}
}

func TestServerCloseIdempotent(t *testing.T) {
	s, err := faultnet.Listen(faultnet.Config{Fault: faultnet.Silence})
	if err != nil {
		t.Fatal(err)
	}
	held := dial(t, s.Addr())
	eventually(t, 5*time.Second, "held", func() bool { return s.Stats().Active == 1 })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if st := s.Stats(); st.Active != 0 || st.ClosedByPeer != 0 {
		t.Fatalf("after Close: %+v", st)
	}
	if _, err := readResult(held, 5*time.Second); !errors.Is(err, io.EOF) {
		t.Fatalf("held conn after Close: %v, want EOF", err)
	}
	if _, err := net.DialTimeout("tcp", s.Addr(), 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("dial after Close: %v, want ECONNREFUSED", err)
	}
	if err := s.Down(); err == nil {
		t.Fatal("Down after Close: no error")
	}
	if err := s.Up(); err == nil {
		t.Fatal("Up after Close: no error")
	}
}

func TestListenBadConfig(t *testing.T) {
	tests := []struct {
		name  string
		cfg   faultnet.Config
		field string
	}{
		{"unknown fault", faultnet.Config{Fault: 99}, "Config.Fault"},
		{"negative drip", faultnet.Config{DripInterval: -1}, "Config.DripInterval"},
		{"not loopback", faultnet.Config{Addr: "192.0.2.1:0"}, "Config.Addr"},
		{"no port", faultnet.Config{Addr: "127.0.0.1"}, "Config.Addr"},
		{"bad port", faultnet.Config{Addr: "127.0.0.1:http"}, "Config.Addr"},
		{"host name", faultnet.Config{Addr: "example.com:0"}, "Config.Addr"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, err := faultnet.Listen(tt.cfg)
			if err == nil {
				s.Close()
				t.Fatal("no error")
			}
			if !strings.Contains(err.Error(), tt.field) {
				t.Fatalf("error %q does not name %s", err, tt.field)
			}
		})
	}
}

func TestServerIPv6(t *testing.T) {
	skipNoIPv6(t)
	s := faultnet.Start(t, faultnet.Config{Addr: "[::1]:0"})
	if !s.AddrPort().Addr().Is6() {
		t.Fatalf("Addr %s is not IPv6", s.Addr())
	}
	c := dial(t, s.Addr())
	_, _ = c.Write([]byte("6"))
	if got, err := readResult(c, 5*time.Second); err != nil || got != "6" {
		t.Fatalf("echo over ::1: %q, %v", got, err)
	}
}

func skipNoIPv6(t *testing.T) {
	t.Helper()
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		t.Skipf("IPv6 loopback unavailable: %v", err)
	}
	ln.Close()
}

func TestStartGroup(t *testing.T) {
	cfgs := []faultnet.Config{
		{Addr: "127.0.0.2:0"},
		{Addr: "127.0.0.3:0", Fault: faultnet.CloseNow},
	}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		cfgs = append(cfgs, faultnet.Config{Addr: "[::1]:0"})
	}
	servers := faultnet.StartGroup(t, cfgs...)
	if len(servers) != len(cfgs) {
		t.Fatalf("%d servers for %d configs", len(servers), len(cfgs))
	}
	port := servers[0].Port()
	for i, s := range servers {
		if s.Port() != port {
			t.Fatalf("server %d on port %d, server 0 on %d", i, s.Port(), port)
		}
		c := dial(t, s.Addr())
		_, _ = c.Write([]byte("g"))
		got, err := readResult(c, 5*time.Second)
		want := "ok"
		if cfgs[i].Fault == faultnet.CloseNow {
			want = "EOF"
		}
		if kind(err) != want {
			t.Fatalf("server %d (%s): %q, %v, want %s", i, s.Addr(), got, err, want)
		}
		if st := s.Stats(); st.Accepted != 1 {
			t.Fatalf("server %d accepted %d, want 1 (its own conn only)", i, st.Accepted)
		}
	}
}

func TestRefusedAddr(t *testing.T) {
	networks := []string{"tcp", "tcp4"}
	if ln, err := net.Listen("tcp6", "[::1]:0"); err == nil {
		ln.Close()
		networks = append(networks, "tcp6")
	}
	for _, network := range networks {
		addr := faultnet.RefusedAddr(t, network)
		start := time.Now()
		_, err := net.DialTimeout("tcp", addr, 5*time.Second)
		if !errors.Is(err, syscall.ECONNREFUSED) {
			t.Fatalf("%s: dial %s: %v, want ECONNREFUSED", network, addr, err)
		}
		if el := time.Since(start); el > 2*time.Second {
			t.Fatalf("%s: refusal took %v, want immediate", network, el)
		}
	}
}

func TestBlackhole(t *testing.T) {
	t.Run("IPv4", func(t *testing.T) { testBlackhole(t, "") })
	t.Run("IPv6", func(t *testing.T) {
		skipNoIPv6(t)
		testBlackhole(t, "[::1]:0")
	})
}

func testBlackhole(t *testing.T, addr string) {
	b := faultnet.NewBlackhole(t, addr)
	start := time.Now()
	c, err := net.DialTimeout("tcp", b.Addr(), 300*time.Millisecond)
	if err == nil {
		c.Close()
		t.Fatal("connect to a blackhole succeeded")
	}
	if !isTimeout(err) || errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect to a blackhole: %v (%s), want a timeout", err, kind(err))
	}
	if el := time.Since(start); el < 250*time.Millisecond {
		t.Fatalf("connect failed after %v, before its 300ms timeout", el)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	if err := b.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := net.DialTimeout("tcp", b.Addr(), 5*time.Second); !errors.Is(err, syscall.ECONNREFUSED) {
		t.Fatalf("connect after Close: %v, want ECONNREFUSED", err)
	}
}
