//go:build freebsd || netbsd || openbsd || dragonfly

package pool

// peerClosed is not implemented here (golang.org/x/sys/unix has no TCP
// state getter for these systems): a wrapped conn with bytes pending is
// taken as alive, and a dead one is caught by the caller's first I/O error.
func peerClosed(int) bool { return false }
