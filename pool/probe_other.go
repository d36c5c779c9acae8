//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package pool

import "syscall"

// peekSocket is a no-op where a non-blocking peek is not implemented: a
// plain conn is taken as alive, and a dead one is caught by the caller's
// first I/O error. (Conns with TLS in their chain are probed everywhere.)
func peekSocket(syscall.Conn) error { return nil }

// peekRecords cannot look at the socket here: it reports nothing waiting,
// and probeTLS judges by what the tls.Conn holds already.
func peekRecords(syscall.Conn) error { return nil }
