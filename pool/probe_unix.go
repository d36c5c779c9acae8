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

// probe tells whether an idle connection is still usable, without blocking:
// it peeks at the socket with MSG_PEEK|MSG_DONTWAIT through syscall.RawConn.
// EAGAIN means alive (nothing to read, no FIN, no RST); 0 bytes means the
// peer sent FIN; ECONNRESET and other errors mean dead; pending bytes mean
// dead for plain conns, but not under TLS (or another wrapper found through
// NetConn), where a TLS 1.3 session ticket can legitimately be waiting.
// Conns that expose no file descriptor (net.Pipe, custom types) are taken as
// alive. It returns nil for alive.
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
	var (
		buf  [1]byte
		perr error
	)
	err = rc.Read(func(fd uintptr) bool {
		for {
			n, _, e := unix.Recvfrom(int(fd), buf[:], unix.MSG_PEEK|unix.MSG_DONTWAIT)
			switch {
			case e == unix.EINTR:
				continue
			case e == unix.EAGAIN || e == unix.EWOULDBLOCK:
				perr = nil
			case e != nil:
				perr = e
			case n == 0:
				perr = io.EOF
			case !wrapped:
				perr = errUnexpectedData
			}
			return true // never wait for readability: the probe must not block
		}
	})
	if err != nil {
		return err
	}
	return perr
}
