//go:build linux

package dial

import (
	"net"

	"golang.org/x/sys/unix"
)

// userTimeoutSupported reports whether TCP_USER_TIMEOUT is set on this OS.
const userTimeoutSupported = true

// setUserTimeout sets TCP_USER_TIMEOUT (milliseconds) on the socket: how
// long written data may stay unacknowledged before the kernel gives up on
// the connection, so a peer that vanished without FIN or RST (incident 03)
// fails the next write in seconds instead of after ~15 minutes of
// retransmissions.
//
// The RawConn is taken here, where the compiler sees its concrete type
// (SyscallConn inlined, Control devirtualized), so that neither it nor the
// closure escapes: through a syscall.RawConn parameter they cost an
// allocation or more on every dial (TestDialContextAllocs).
func setUserTimeout(tc *net.TCPConn, ms int) error {
	c, err := tc.SyscallConn()
	if err != nil {
		return err
	}
	var serr error
	err = c.Control(func(fd uintptr) {
		serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, ms)
	})
	if err != nil {
		return err
	}
	if serr != nil {
		return &syscallErr{"setsockopt TCP_USER_TIMEOUT", serr}
	}
	return nil
}
