//go:build !race

package soak_test

// defaultWorkers and defaultRate size a default run: callers, and calls
// started per second by all of them.
const (
	defaultWorkers = 3000
	defaultRate    = 3000
)

// raceSlack is added to the overrun limit under the race detector.
const raceSlack = 0
