//go:build !linux

package faultnet

import (
	"syscall"

	"golang.org/x/sys/unix"
)

// streamSocket creates a TCP socket that a child process does not inherit.
// Without SOCK_CLOEXEC everywhere, it holds syscall.ForkLock (as the net
// package does) so that no fork happens between socket and close-on-exec.
func streamSocket(family int) (int, error) {
	syscall.ForkLock.RLock()
	defer syscall.ForkLock.RUnlock()
	fd, err := unix.Socket(family, unix.SOCK_STREAM, 0)
	if err != nil {
		return -1, err
	}
	unix.CloseOnExec(fd)
	return fd, nil
}
