package dial

import (
	"math"
	"net"
	"sync"
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

// netDialers caches one *net.Dialer per keep-alive configuration: a
// net.Dialer is immutable configuration, safe to share.
var netDialers struct {
	mu sync.RWMutex // guards m
	m  map[net.KeepAliveConfig]*net.Dialer
}

func netDialerFor(ka net.KeepAliveConfig) *net.Dialer {
	netDialers.mu.RLock()
	nd := netDialers.m[ka]
	netDialers.mu.RUnlock()
	if nd != nil {
		return nd
	}
	nd = &net.Dialer{
		// The per-attempt and whole-dial limits arrive through the context;
		// the net.Dialer adds none of its own and races nothing (it gets
		// one IP).
		FallbackDelay: -1,
	}
	if ka.Enable {
		nd.KeepAliveConfig = ka
	} else {
		nd.KeepAlive = -1
	}
	netDialers.mu.Lock()
	defer netDialers.mu.Unlock()
	if netDialers.m == nil {
		netDialers.m = make(map[net.KeepAliveConfig]*net.Dialer)
	}
	if prev := netDialers.m[ka]; prev != nil {
		return prev
	}
	if len(netDialers.m) >= 64 {
		// Bound the cache against programs that vary the option per dial.
		clear(netDialers.m)
	}
	netDialers.m[ka] = nd
	return nd
}

// setUserTimeoutConn sets TCP_USER_TIMEOUT on a *net.TCPConn; ms < 0 or
// another conn type leaves it alone. It is set right after connect, before
// the conn carries any data.
func setUserTimeoutConn(c net.Conn, ms int) error {
	if ms < 0 || !userTimeoutSupported {
		return nil
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return nil
	}
	return setUserTimeout(tc, ms)
}

// applySockopts sets keep-alive and TCP_USER_TIMEOUT on a conn that a
// DialFunc returned, or on the *net.TCPConn it wraps (found through NetConn
// methods). Other conns (pipes, proxies) have no TCP socket of their own to
// set.
func applySockopts(c net.Conn, sc sockConfig) error {
	tc, ok := c.(*net.TCPConn)
	for !ok {
		w, wraps := c.(interface{ NetConn() net.Conn })
		if !wraps {
			return nil
		}
		c = w.NetConn()
		tc, ok = c.(*net.TCPConn)
	}
	if sc.ka.Enable {
		if err := tc.SetKeepAliveConfig(sc.ka); err != nil {
			return err
		}
	} else if err := tc.SetKeepAlive(false); err != nil {
		return err
	}
	return setUserTimeoutConn(tc, sc.userTimeoutMs)
}
