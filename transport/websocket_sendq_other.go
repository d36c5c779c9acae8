//go:build !linux

package transport

import "syscall"

// sendQueue is not known outside Linux: every ping is judged as if the
// socket had sent it at once.
func sendQueue(syscall.RawConn) (queued int, acked uint64, ok bool) { return 0, 0, false }

// recvQueued is not known outside Linux.
func recvQueued(syscall.RawConn) (int, bool) { return 0, false }
