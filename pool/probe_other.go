//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package pool

import "net"

// probe is a no-op where a non-blocking peek is not implemented: the conn is
// taken as alive, and a dead one is caught by the caller's first I/O error.
func probe(net.Conn) error { return nil }
