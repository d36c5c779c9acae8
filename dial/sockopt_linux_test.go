//go:build linux

package dial_test

import (
	"context"
	"crypto/tls"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"golang.org/x/sys/unix"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

type sockopts struct {
	keepalive, idle, interval, count, userTimeoutMs int
}

// readSockopts reads the options back from the kernel with getsockopt.
func readSockopts(t *testing.T, c net.Conn) sockopts {
	t.Helper()
	for {
		if u, ok := c.(interface{ NetConn() net.Conn }); ok {
			c = u.NetConn()
			continue
		}
		break
	}
	sc, ok := c.(syscall.Conn)
	require.True(t, ok, "%T is not a syscall.Conn", c)
	rc, err := sc.SyscallConn()
	require.NoError(t, err)
	var got sockopts
	var gerr error
	require.NoError(t, rc.Control(func(fd uintptr) {
		get := func(level, opt int) int {
			v, err := unix.GetsockoptInt(int(fd), level, opt)
			if err != nil && gerr == nil {
				gerr = err
			}
			return v
		}
		got.keepalive = get(unix.SOL_SOCKET, unix.SO_KEEPALIVE)
		got.idle = get(unix.IPPROTO_TCP, unix.TCP_KEEPIDLE)
		got.interval = get(unix.IPPROTO_TCP, unix.TCP_KEEPINTVL)
		got.count = get(unix.IPPROTO_TCP, unix.TCP_KEEPCNT)
		got.userTimeoutMs = get(unix.IPPROTO_TCP, unix.TCP_USER_TIMEOUT)
	}))
	require.NoError(t, gerr)
	return got
}

func TestSocketOptions(t *testing.T) {
	serverCfg, clientCfg, _ := testCert(t, testHost)
	plain := faultnet.Start(t, faultnet.Config{})
	tlsSrv := faultnet.Start(t, faultnet.Config{TLS: serverCfg})
	// What a socket gets from the kernel when nobody sets anything.
	osDefault := func() sockopts {
		c, err := (&net.Dialer{KeepAlive: -1}).Dial("tcp", plain.Addr())
		require.NoError(t, err)
		defer c.Close()
		return readSockopts(t, c)
	}()
	require.Zero(t, osDefault.keepalive)
	require.Zero(t, osDefault.userTimeoutMs)

	bareDialFunc := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return (&net.Dialer{KeepAlive: -1}).DialContext(ctx, network, addr)
	}
	cases := []struct {
		name string
		d    dial.Dialer
		tls  bool
		want sockopts
	}{
		{"defaults", dial.Dialer{}, false, sockopts{1, 15, 5, 3, 30000}},
		{"custom", dial.Dialer{
			KeepAlive:   net.KeepAliveConfig{Enable: true, Idle: 7 * time.Second, Interval: 2 * time.Second, Count: 4},
			UserTimeout: 1500 * time.Millisecond,
		}, false, sockopts{1, 7, 2, 4, 1500}},
		{"partial config takes defaults", dial.Dialer{
			KeepAlive: net.KeepAliveConfig{Enable: true, Idle: 20 * time.Second},
		}, false, sockopts{1, 20, 5, 3, 30000}},
		{"off", dial.Dialer{KeepAlive: net.KeepAliveConfig{Idle: -1}, UserTimeout: -1}, false,
			sockopts{0, osDefault.idle, osDefault.interval, osDefault.count, 0}},
		{"DialFunc conn", dial.Dialer{DialFunc: bareDialFunc}, false, sockopts{1, 15, 5, 3, 30000}},
		{"DialFunc conn custom", dial.Dialer{DialFunc: bareDialFunc, UserTimeout: 2 * time.Second,
			KeepAlive: net.KeepAliveConfig{Enable: true, Idle: 9 * time.Second, Interval: 3 * time.Second, Count: 2}},
			false, sockopts{1, 9, 3, 2, 2000}},
		{"first-byte wrapped", dial.Dialer{FirstByteTimeout: time.Second}, false, sockopts{1, 15, 5, 3, 30000}},
		{"tls", dial.Dialer{}, true, sockopts{1, 15, 5, 3, 30000}},
		{"tls first-byte wrapped", dial.Dialer{FirstByteTimeout: time.Second}, true, sockopts{1, 15, 5, 3, 30000}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := tc.d
			var conn net.Conn
			var err error
			if tc.tls {
				d.Resolver = resolverFor(tlsSrv.Addr())
				d.TLSConfig = clientCfg
				conn, err = d.DialTLSContext(t.Context(), "tcp", hostPort(tlsSrv.Port()))
				if err == nil {
					_, isTLS := conn.(*tls.Conn)
					assert.True(t, isTLS)
				}
			} else {
				conn, err = d.DialContext(t.Context(), "tcp", plain.Addr())
			}
			require.NoError(t, err)
			defer conn.Close()
			assert.Equal(t, tc.want, readSockopts(t, conn))
		})
	}
}
