//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package pool

import (
	"io"
	"syscall"

	"golang.org/x/sys/unix"
)

// peekSocket is probe's verdict on a socket that carries the protocol's
// own bytes: nothing to read (EAGAIN) is alive; end-of-file, an error or a
// pending byte is dead.
func peekSocket(sc syscall.Conn) error {
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	// Control, not Read: the peek never waits for readiness, and Read would
	// fail on a read deadline that passed (set on the embedded conn by a
	// former holder), which says nothing about the peer.
	err = rc.Control(func(fd uintptr) { perr = peek(int(fd)) })
	if err != nil {
		return err
	}
	return perr
}

func peek(fd int) error {
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
		}
		return errUnexpectedData
	}
}
