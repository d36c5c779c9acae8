package main

import "golang.org/x/sys/unix"

// threadID is the calling OS thread's id.
func threadID() int64 { return int64(unix.Gettid()) }
