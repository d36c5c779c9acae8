package main

import "github.com/lifeline-go/lifeline/transport"

// waitForReady marks a call's context as one that waits for a known-down
// upstream to recover (within its own deadline) instead of failing fast.
var waitForReady = transport.WaitForReady
