package faultnet

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// boundSocket creates a TCP socket bound to ap (port 0: a free port) and
// returns it with the bound address. It is not listening, and a child
// process does not inherit it. Each of opts is a SOL_SOCKET option set to 1
// before the bind.
func boundSocket(ap netip.AddrPort, opts ...int) (int, netip.AddrPort, error) {
	var sa unix.Sockaddr
	family := unix.AF_INET
	if ap.Addr().Is4() {
		sa = &unix.SockaddrInet4{Port: int(ap.Port()), Addr: ap.Addr().As4()}
	} else {
		family = unix.AF_INET6
		sa = &unix.SockaddrInet6{Port: int(ap.Port()), Addr: ap.Addr().As16()}
	}
	fd, err := streamSocket(family)
	if err != nil {
		return -1, netip.AddrPort{}, os.NewSyscallError("socket", err)
	}
	for _, opt := range opts {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, 1); err != nil {
			unix.Close(fd)
			return -1, netip.AddrPort{}, os.NewSyscallError("setsockopt", err)
		}
	}
	if err := unix.Bind(fd, sa); err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, os.NewSyscallError("bind", err)
	}
	got, err := unix.Getsockname(fd)
	if err != nil {
		unix.Close(fd)
		return -1, netip.AddrPort{}, os.NewSyscallError("getsockname", err)
	}
	var port int
	switch got := got.(type) {
	case *unix.SockaddrInet4:
		port = got.Port
	case *unix.SockaddrInet6:
		port = got.Port
	}
	return fd, netip.AddrPortFrom(ap.Addr(), uint16(port)), nil
}

// RefusedAddr returns a loopback "host:port" where nothing listens, so a
// connect gets ECONNREFUSED at once. network is "tcp" or "tcp4" (127.0.0.1)
// or "tcp6" (::1; the test is skipped where ::1 is unavailable). The port
// stays reserved by a bound, non-listening socket until tb's Cleanup, so no
// other test can start listening on it. A test that listens on the port
// later (a server down, then up) uses [ReservePort] instead.
func RefusedAddr(tb testing.TB, network string) string {
	tb.Helper()
	ip, err := loopback(network)
	if err != nil {
		tb.Fatalf("faultnet: RefusedAddr: %v", err)
	}
	fd, ap, err := boundSocket(netip.AddrPortFrom(ip, 0))
	if err != nil {
		if ip.Is6() && ipv6Unavailable(err) {
			tb.Skipf("faultnet: RefusedAddr: IPv6 loopback unavailable: %v", err)
		}
		tb.Fatalf("faultnet: RefusedAddr: %v", err)
	}
	tb.Cleanup(func() { unix.Close(fd) })
	return ap.String()
}

// loopback is network's loopback address: 127.0.0.1 for "tcp" and "tcp4",
// ::1 for "tcp6".
func loopback(network string) (netip.Addr, error) {
	switch network {
	case "tcp", "tcp4":
		return netip.AddrFrom4([4]byte{127, 0, 0, 1}), nil
	case "tcp6":
		return netip.IPv6Loopback(), nil
	}
	return netip.Addr{}, fmt.Errorf("network %q: want tcp, tcp4 or tcp6", network)
}

// ipv6Unavailable reports whether err from creating or binding a socket on
// ::1 means the host has no IPv6 loopback (IPv6 disabled, or no ::1 on lo).
func ipv6Unavailable(err error) bool {
	return errors.Is(err, unix.EAFNOSUPPORT) || errors.Is(err, unix.EPROTONOSUPPORT) ||
		errors.Is(err, unix.EADDRNOTAVAIL)
}

// Blackhole is a loopback address where connect() hangs: a listening socket
// (backlog 0) that never accepts and whose accept queue is already full, so
// the kernel drops every further SYN (net.ipv4.tcp_abort_on_overflow=0, the
// default) and the client keeps retransmitting until its own timeout. It
// needs no root. Create it with [NewBlackhole]; the zero value is not usable.
// Methods are safe for concurrent use.
type Blackhole struct {
	addr string

	mu      sync.Mutex // guards the fields below
	fd      int        // the listening socket; -1 after Close
	fillers []net.Conn // the connections that fill the accept queue
}

// Blackhole fill parameters: a connect that does not complete within
// fillTimeout means the queue is full; maxFill bounds the attempts.
const (
	fillTimeout = 200 * time.Millisecond
	maxFill     = 64
)

// NewBlackhole makes a Blackhole on addr ("" = "127.0.0.1:0"; "[::1]:0"
// for IPv6; loopback only) and closes it at tb's Cleanup. Errors are
// tb.Fatal. It takes about 200ms (one connect that must time out to prove
// the queue is full).
func NewBlackhole(tb testing.TB, addr string) *Blackhole {
	tb.Helper()
	b, err := newBlackhole(addr, false, true)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = b.Close() })
	return b
}

// newBlackhole makes a Blackhole on addr; reuse rebinds a port whose
// connections are still open, and loopbackOnly refuses other addresses (a
// Proxy with AnyAddr black-holes its own, already allowed, address).
func newBlackhole(addr string, reuse, loopbackOnly bool) (*Blackhole, error) {
	ap, err := parseListenAddr("NewBlackhole addr", addr, loopbackOnly)
	if err != nil {
		return nil, err
	}
	var opts []int
	if reuse {
		// Rebinding a port whose accepted connections are still open or
		// in TIME_WAIT (a proxy black-holing its own address).
		opts = append(opts, unix.SO_REUSEADDR)
	}
	fd, bound, err := boundSocket(ap, opts...)
	if err != nil {
		return nil, fmt.Errorf("faultnet: blackhole %s: %w", ap, err)
	}
	// Backlog 0: Linux queues one connection, then drops SYNs.
	if err := unix.Listen(fd, 0); err != nil {
		unix.Close(fd)
		return nil, fmt.Errorf("faultnet: blackhole %s: %w", bound, os.NewSyscallError("listen", err))
	}
	b := &Blackhole{addr: bound.String(), fd: fd}
	d := net.Dialer{Timeout: fillTimeout}
	for range maxFill {
		c, err := d.Dial("tcp", b.addr)
		if err == nil {
			b.fillers = append(b.fillers, c)
			continue
		}
		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			return b, nil // queue full: SYNs are dropped now
		}
		b.Close()
		return nil, fmt.Errorf("faultnet: blackhole %s: filling the accept queue: %w", b.addr, err)
	}
	b.Close()
	return nil, fmt.Errorf("faultnet: blackhole %s: accept queue still not full after %d connects", b.addr, maxFill)
}

// Addr returns the blackholed "host:port".
func (b *Blackhole) Addr() string { return b.addr }

// Close closes the listening socket and the connections that filled its
// queue; connects to Addr are then refused. It is idempotent.
func (b *Blackhole) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.fd < 0 {
		return nil
	}
	for _, c := range b.fillers {
		_ = c.Close()
	}
	b.fillers = nil
	err := unix.Close(b.fd)
	b.fd = -1
	if err != nil {
		return fmt.Errorf("faultnet: blackhole %s: %w", b.addr, os.NewSyscallError("close", err))
	}
	return nil
}
