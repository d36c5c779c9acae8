package faultnet

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os"
	"sync"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// RefusedPort is a loopback port reserved for one test, for a server that
// is down and later comes back on the same port: connects to it are
// refused (ECONNREFUSED, at once) until [RefusedPort.Listen] opens a
// listener on it, and refused again at once when that listener closes.
//
// The port is held by a bound, non-listening socket with SO_REUSEPORT: it
// takes no connections, so the kernel answers a SYN with RST; and no other
// socket can bind the port, neither a stranger's listener nor a client's
// ephemeral port, unless it too sets SO_REUSEPORT and belongs to the same
// user. Listen's socket sets SO_REUSEPORT as well, so it binds beside the
// reservation, which stays: the port is never free between "down" and
// "up", as it is after closing a listener and listening on its address
// again later (another test, or one of its client sockets, may take the
// port in between; then the "refused" connect reaches a stranger, or the
// listen fails with EADDRINUSE).
//
// The reservation does not set SO_REUSEADDR: Linux lets a socket with
// SO_REUSEADDR (every listener Go's net package makes) bind beside a
// non-listening one that has it too. A child process does not inherit the
// socket (close-on-exec).
//
// Create one with [ReservePort] or [NewRefusedPort]; the zero value is not
// usable. Methods are safe for concurrent use. Listeners belong to the
// caller, who closes them; Close frees the port but leaves them open.
type RefusedPort struct {
	addr    netip.AddrPort
	network string // "tcp4" or "tcp6": the listeners' network

	mu sync.Mutex // guards fd
	fd int        // the reserving socket; -1 after Close
}

// ReservePort reserves a loopback port on network — "tcp" or "tcp4"
// (127.0.0.1) or "tcp6" (::1) — and frees it at tb's Cleanup. Errors are
// tb.Fatal; the test is skipped where ::1 is unavailable.
func ReservePort(tb testing.TB, network string) *RefusedPort {
	tb.Helper()
	p, err := NewRefusedPort(network)
	if err != nil {
		if network == "tcp6" && ipv6Unavailable(err) {
			tb.Skipf("faultnet: ReservePort: IPv6 loopback unavailable: %v", err)
		}
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// NewRefusedPort reserves a loopback port on network — "tcp" or "tcp4"
// (127.0.0.1) or "tcp6" (::1). The caller closes it.
func NewRefusedPort(network string) (*RefusedPort, error) {
	ip, err := loopback(network)
	if err != nil {
		return nil, fmt.Errorf("faultnet: NewRefusedPort: %w", err)
	}
	fd, ap, err := boundSocket(netip.AddrPortFrom(ip, 0), unix.SO_REUSEPORT)
	if err != nil {
		return nil, fmt.Errorf("faultnet: reserve a port on %s: %w", ip, err)
	}
	p := &RefusedPort{addr: ap, network: "tcp4", fd: fd}
	if ip.Is6() {
		p.network = "tcp6"
	}
	return p, nil
}

// Addr returns the reserved "host:port" ("127.0.0.1:port" or "[::1]:port").
func (p *RefusedPort) Addr() string { return p.addr.String() }

// Port returns the reserved port number.
func (p *RefusedPort) Port() int { return int(p.addr.Port()) }

// Listen opens a listener on the reserved port (the server comes up); the
// reservation stays, so once the listener is closed connects are refused
// again at once, and Listen may be called again. The caller closes the
// listener. While two listeners are open the kernel spreads the
// connections between them: close one before opening the next. After
// [RefusedPort.Close] it fails with an error matching net.ErrClosed.
func (p *RefusedPort) Listen() (net.Listener, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil, fmt.Errorf("faultnet: listen %s: reservation %w", p.addr, net.ErrClosed)
	}
	lc := net.ListenConfig{Control: func(_, _ string, c syscall.RawConn) error {
		var serr error
		if err := c.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_REUSEPORT, 1)
		}); err != nil {
			return err
		}
		return os.NewSyscallError("setsockopt", serr)
	}}
	// A listen does not block: no context to wait on.
	ln, err := lc.Listen(context.Background(), p.network, p.addr.String())
	if err != nil {
		return nil, fmt.Errorf("faultnet: listen on reserved port: %w", err)
	}
	return ln, nil
}

// Close frees the port: another socket may bind it from now on. A listener
// from Listen that is still open keeps listening. Close is idempotent.
func (p *RefusedPort) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fd < 0 {
		return nil
	}
	err := unix.Close(p.fd)
	p.fd = -1
	if err != nil {
		return fmt.Errorf("faultnet: free port %s: %w", p.addr, os.NewSyscallError("close", err))
	}
	return nil
}
