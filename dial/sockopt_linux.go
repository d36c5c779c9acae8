//go:build linux

package dial

import (
	"sync"
	"syscall"

	"golang.org/x/sys/unix"
)

// userTimeoutSupported reports whether TCP_USER_TIMEOUT is set on this OS.
const userTimeoutSupported = true

// userTimeoutOp carries one setsockopt through RawConn.Control. Its method
// value is bound once and the op is pooled: a closure per call would cost
// two allocations on every dial.
type userTimeoutOp struct {
	ms  int
	err error
	fn  func(fd uintptr)
}

func (op *userTimeoutOp) set(fd uintptr) {
	op.err = unix.SetsockoptInt(int(fd), unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT, op.ms)
}

var userTimeoutOps = sync.Pool{New: func() any {
	op := &userTimeoutOp{}
	op.fn = op.set
	return op
}}

// setUserTimeout sets TCP_USER_TIMEOUT (milliseconds) on the socket: how
// long written data may stay unacknowledged before the kernel gives up on
// the connection, so a peer that vanished without FIN or RST (incident 03)
// fails the next write in seconds instead of after ~15 minutes of
// retransmissions.
func setUserTimeout(c syscall.RawConn, ms int) error {
	op := userTimeoutOps.Get().(*userTimeoutOp)
	op.ms, op.err = ms, nil
	err := c.Control(op.fn)
	serr := op.err
	op.err = nil
	userTimeoutOps.Put(op)
	if err != nil {
		return err
	}
	if serr != nil {
		return &syscallErr{"setsockopt TCP_USER_TIMEOUT", serr}
	}
	return nil
}
