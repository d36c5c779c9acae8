//go:build !lifeline_testhooks

package main

// hookPanic is a no-op outside test builds (see hook_on.go).
func hookPanic(string) {}
