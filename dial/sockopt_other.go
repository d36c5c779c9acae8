//go:build !linux

package dial

import "syscall"

// userTimeoutSupported reports whether TCP_USER_TIMEOUT is set on this OS.
const userTimeoutSupported = false

// setUserTimeout does nothing: TCP_USER_TIMEOUT is a Linux option.
func setUserTimeout(syscall.RawConn, int) error { return nil }
