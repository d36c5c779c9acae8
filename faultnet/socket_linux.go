package faultnet

import "golang.org/x/sys/unix"

// streamSocket creates a TCP socket that a child process does not inherit:
// SOCK_CLOEXEC sets close-on-exec atomically, so a fork on another thread
// (an openssl or nginx a test starts) cannot slip in before the flag is set.
func streamSocket(family int) (int, error) {
	return unix.Socket(family, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
}
