//go:build !linux

package dial

import "net"

// userTimeoutSupported reports whether TCP_USER_TIMEOUT is set on this OS.
const userTimeoutSupported = false

// setUserTimeout does nothing: TCP_USER_TIMEOUT is a Linux option.
func setUserTimeout(*net.TCPConn, int) error { return nil }
