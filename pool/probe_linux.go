package pool

import "golang.org/x/sys/unix"

// tcpEstablished is Linux's TCP_ESTABLISHED (include/net/tcp_states.h).
const tcpEstablished = 1

// peerClosed reports whether the TCP socket fd has left ESTABLISHED: in
// CLOSE_WAIT the peer sent FIN, in CLOSE it reset. A socket that is not
// TCP (TCP_INFO fails) is reported open.
func peerClosed(fd int) bool {
	info, err := unix.GetsockoptTCPInfo(fd, unix.IPPROTO_TCP, unix.TCP_INFO)
	return err == nil && info.State != tcpEstablished
}
