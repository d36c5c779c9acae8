//go:build unix

package pool_test

import (
	"net"
	"net/netip"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// *pool.Conn is a syscall.Conn (go-redis checks idle conns only through
// it): its RawConn reaches the socket itself, also under TLS, where it is
// found through NetConn.
func TestConnSyscallConn(t *testing.T) {
	plain := faultnet.Start(t, faultnet.Config{})
	tlsSrv, clientCfg, _ := tlsEchoServer(t, time.Minute)
	for _, tc := range []struct {
		name string
		p    *pool.Pool
	}{
		{"tcp", tcpPool(t, plain, pool.Config{})},
		{"tls", tlsPool(t, tlsSrv, clientCfg, pool.Config{})},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, err := tc.p.Acquire(t.Context())
			require.NoError(t, err)
			defer c.Release()
			sc, ok := any(c).(syscall.Conn)
			require.True(t, ok, "*pool.Conn hides SyscallConn")
			rc, err := sc.SyscallConn()
			require.NoError(t, err)
			var (
				typ   int
				local netip.AddrPort
			)
			require.NoError(t, rc.Control(func(fd uintptr) {
				typ, err = syscall.GetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_TYPE)
				require.NoError(t, err)
				sa, err := syscall.Getsockname(int(fd))
				require.NoError(t, err)
				in4 := sa.(*syscall.SockaddrInet4)
				local = netip.AddrPortFrom(netip.AddrFrom4(in4.Addr), uint16(in4.Port))
			}))
			assert.Equal(t, syscall.SOCK_STREAM, typ)
			assert.Equal(t, c.LocalAddr().(*net.TCPAddr).AddrPort(), local, "the fd is this conn's socket")
		})
	}
}
