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
	n, err := peekFD(fd, buf[:])
	switch {
	case err != nil:
		return err
	case n > 0:
		return errUnexpectedData
	}
	return nil
}

// peekFD peeks at what waits on fd without consuming it or waiting: 0 and
// nil is nothing (EAGAIN), 0 and io.EOF the peer's FIN.
func peekFD(fd int, buf []byte) (int, error) {
	for {
		n, _, err := unix.Recvfrom(fd, buf, unix.MSG_PEEK|unix.MSG_DONTWAIT)
		switch {
		case err == unix.EINTR:
			continue
		case err == unix.EAGAIN || err == unix.EWOULDBLOCK:
			return 0, nil
		case err != nil:
			return 0, err
		case n == 0:
			return 0, io.EOF
		}
		return n, nil
	}
}

// peekRecords is probeTLS's look at the socket under a *tls.Conn: nil when
// nothing waits; errRecordsPending when whole TLS records do (tls.Conn is
// to tell what they are); errUnexpectedData when part of a record does, or
// more than tlsPeekMax; end-of-file or the socket's error otherwise.
func peekRecords(sc syscall.Conn) error {
	rc, err := sc.SyscallConn()
	if err != nil {
		return err
	}
	var perr error
	err = rc.Control(func(fd uintptr) {
		var one [1]byte
		n, err := peekFD(int(fd), one[:])
		if err != nil || n == 0 {
			perr = err
			return
		}
		// Rare (records came since the last read): the buffer is made
		// only now.
		buf := make([]byte, tlsPeekMax)
		if n, perr = peekFD(int(fd), buf); perr == nil {
			perr = errUnexpectedData
			if wholeRecords(buf[:n], n == len(buf)) {
				perr = errRecordsPending
			}
		}
	})
	if err != nil {
		return err
	}
	return perr
}
