//go:build !linux

package main

// threadID returns 0 where thread ids are not available: a wait from
// inside an op's own callback then waits for the callback (and must be
// given a timeout).
func threadID() int64 { return 0 }
