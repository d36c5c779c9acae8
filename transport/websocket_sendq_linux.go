//go:build linux

package transport

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// sendQueue returns the bytes in the socket's send queue (written by the
// application and not yet acknowledged by the peer's TCP: SIOCOUTQ) and
// how many bytes the peer's TCP has acknowledged so far (tcpi_bytes_acked).
// The queue is read first, so that acks arriving in between never make
// the queue look shorter than it was.
func sendQueue(rc syscall.RawConn) (queued int, acked uint64, ok bool) {
	var err error
	cerr := rc.Control(func(fd uintptr) {
		queued, err = unix.IoctlGetInt(int(fd), unix.SIOCOUTQ)
		if err != nil {
			return
		}
		var info *unix.TCPInfo
		info, err = unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err == nil {
			acked = info.Bytes_acked
		}
	})
	return queued, acked, cerr == nil && err == nil
}

// recvQueued returns the bytes that wait in the socket's receive queue,
// not yet read (SIOCINQ).
func recvQueued(rc syscall.RawConn) (int, bool) {
	var n int
	var err error
	cerr := rc.Control(func(fd uintptr) { n, err = unix.IoctlGetInt(int(fd), unix.SIOCINQ) })
	return n, cerr == nil && err == nil
}
