package dial

import (
	"context"
	"math"
	"net"
	"sync"
	"syscall"
	"time"
)

// syscallErr names the socket option that could not be set.
type syscallErr struct {
	op  string
	err error
}

func (e *syscallErr) Error() string { return e.op + ": " + e.err.Error() }
func (e *syscallErr) Unwrap() error { return e.err }

// sockConfig is the socket configuration of a Dialer, resolved from its
// KeepAlive and UserTimeout fields; it is comparable so that the net.Dialer
// built for it can be cached.
type sockConfig struct {
	ka            net.KeepAliveConfig // Enable false: keep-alive off
	userTimeoutMs int                 // < 0: leave the OS default
}

func userTimeoutMs(d time.Duration) int {
	if d < 0 {
		return -1
	}
	ms := d.Milliseconds()
	if ms > math.MaxInt32 {
		ms = math.MaxInt32
	}
	if ms == 0 {
		ms = 1 // a positive duration below 1ms must not become "off" (0)
	}
	return int(ms)
}

// netDialers caches one *net.Dialer per sockConfig: a net.Dialer is
// immutable configuration, safe to share, and building it (with its control
// closure) for every dial would cost allocations on the hot path.
var netDialers struct {
	mu sync.RWMutex // guards m
	m  map[sockConfig]*net.Dialer
}

func netDialerFor(sc sockConfig) *net.Dialer {
	netDialers.mu.RLock()
	nd := netDialers.m[sc]
	netDialers.mu.RUnlock()
	if nd != nil {
		return nd
	}
	nd = &net.Dialer{
		// Both the per-attempt and the whole-dial limits arrive through the
		// context; the net.Dialer adds none of its own.
		FallbackDelay: -1,
	}
	if sc.ka.Enable {
		nd.KeepAliveConfig = sc.ka
	} else {
		nd.KeepAlive = -1
	}
	if sc.userTimeoutMs >= 0 && userTimeoutSupported {
		ms := sc.userTimeoutMs
		// Set before connect, so the option also covers data sent right
		// after the handshake.
		nd.ControlContext = func(_ context.Context, _, _ string, c syscall.RawConn) error {
			return setUserTimeout(c, ms)
		}
	}
	netDialers.mu.Lock()
	defer netDialers.mu.Unlock()
	if netDialers.m == nil {
		netDialers.m = make(map[sockConfig]*net.Dialer)
	}
	if prev := netDialers.m[sc]; prev != nil {
		return prev
	}
	if len(netDialers.m) >= 64 {
		// Bound the cache against programs that vary the options per dial.
		clear(netDialers.m)
	}
	netDialers.m[sc] = nd
	return nd
}

// applySockopts sets keep-alive and TCP_USER_TIMEOUT on a conn that a
// DialFunc returned. Only *net.TCPConn is touched: other conns (pipes,
// proxies, conns already wrapped) have no TCP socket of their own to set.
func applySockopts(c net.Conn, sc sockConfig) error {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	if sc.ka.Enable {
		if err := tc.SetKeepAliveConfig(sc.ka); err != nil {
			return err
		}
	} else if err := tc.SetKeepAlive(false); err != nil {
		return err
	}
	if sc.userTimeoutMs >= 0 && userTimeoutSupported {
		rc, err := tc.SyscallConn()
		if err != nil {
			return err
		}
		return setUserTimeout(rc, sc.userTimeoutMs)
	}
	return nil
}
