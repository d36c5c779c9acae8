package pool

import "golang.org/x/sys/unix"

// tcpsEstablished is Darwin's TCPS_ESTABLISHED (netinet/tcp_fsm.h).
const tcpsEstablished = 4

// peerClosed reports whether the TCP socket fd has left ESTABLISHED (the
// peer sent FIN or reset). A socket that is not TCP is reported open.
func peerClosed(fd int) bool {
	info, err := unix.GetsockoptTCPConnectionInfo(fd, unix.IPPROTO_TCP, unix.TCP_CONNECTION_INFO)
	return err == nil && info.State != tcpsEstablished
}
