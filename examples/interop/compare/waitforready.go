package main

import "context"

// waitForReady marks a call's context as one that waits for a known-down
// upstream to recover (within its own deadline) instead of failing fast.
// It is transport.WaitForReady once lifeline has it; until then it is nil
// and the "lifeline WaitForReady" contender runs as zero-config lifeline.
// After the merge this file becomes one line:
//
//	var waitForReady = transport.WaitForReady
var waitForReady func(context.Context) context.Context
