package faultnet

import (
	"net"
	"syscall"

	"golang.org/x/sys/unix"
)

const tcpEstablished = 1 // Linux TCP_ESTABLISHED (include/net/tcp_states.h)

// hold blocks without reading or writing c until the peer closes it (FIN or
// RST: reports true) or c is closed on our side (reports false). Each time
// data arrives it calls activity.
//
// Not reading matters: a silent server lets the client's send buffer and our
// receive window fill, as a hung load balancer would. The close is seen
// through the netpoller (EPOLLRDHUP/EPOLLHUP wake a pending raw read) and the
// kernel's TCP state, so unread data does not hide the FIN.
func hold(c net.Conn, activity func()) bool {
	sc, ok := c.(syscall.Conn)
	if !ok {
		return holdByReading(c, activity)
	}
	rc, err := sc.SyscallConn()
	if err != nil {
		return holdByReading(c, activity)
	}
	first, peerClosed := true, false
	err = rc.Read(func(fd uintptr) bool {
		info, err := unix.GetsockoptTCPInfo(int(fd), unix.IPPROTO_TCP, unix.TCP_INFO)
		if err != nil {
			return true
		}
		if info.State != tcpEstablished {
			peerClosed = true // CLOSE_WAIT after a FIN, CLOSE after a RST
			return true
		}
		if !first {
			activity() // woken by the arrival of new data
		}
		first = false
		return false // wait for the next readiness event
	})
	return err == nil && peerClosed
}
