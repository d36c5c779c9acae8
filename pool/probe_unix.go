//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package pool

import (
	"errors"
	"io"
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

// errUnexpectedData: an idle request/response connection has bytes waiting
// that nobody asked for — typically the server's goodbye (an error message
// before it closes), or a reply to a request whose caller gave up.
var errUnexpectedData = errors.New("pool: unexpected data on an idle connection")

// errPeerClosed: bytes wait on an idle wrapped (TLS) connection and the
// peer has closed its side: the bytes are its close_notify alert, the FIN
// right behind them.
var errPeerClosed = errors.New("pool: peer closed the idle connection")

// probe tells whether an idle connection is still usable, without blocking.
// It unwraps c through NetConn methods (*tls.Conn and other wrappers) to the
// innermost conn and peeks at its socket with MSG_PEEK|MSG_DONTWAIT. It
// returns nil for alive:
//
//   - nothing to read (EAGAIN): alive;
//   - 0 bytes: the peer sent FIN; ECONNRESET or another error: dead;
//   - bytes pending on a plain conn: dead (a request/response peer sends
//     nothing unasked but its goodbye);
//   - bytes pending under a wrapper: a TLS 1.3 session ticket on a live
//     conn, or the close_notify alert of a server that closed, whose FIN
//     follows it. The TCP state tells them apart where the OS reports it
//     (peerClosed); elsewhere the conn is taken as alive.
//
// Conns that expose no file descriptor (net.Pipe, custom types) are taken
// as alive.
func probe(c net.Conn) error {
	wrapped := false
	for {
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
		wrapped = true
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	// Control, not Read: the peek never waits for readiness, and Read would
	// fail on a read deadline that passed (set on the embedded conn by a
	// former holder), which says nothing about the peer.
	err = rc.Control(func(fd uintptr) { perr = peek(int(fd), wrapped) })
	if err != nil {
		return err
	}
	return perr
}

// peek is probe's verdict on the socket fd.
func peek(fd int, wrapped bool) error {
	var buf [1]byte
	for {
		n, _, err := unix.Recvfrom(fd, buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || err == unix.EWOULDBLOCK:
			return nil
		case err != nil:
			return err
		case n == 0:
			return io.EOF
		case !wrapped:
			return errUnexpectedData
		case peerClosed(fd):
			return errPeerClosed
		}
		return nil
	}
}
