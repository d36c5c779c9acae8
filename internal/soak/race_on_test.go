//go:build race

package soak_test

import "time"

// defaultWorkers and defaultRate are lower under the race detector, which
// makes every call several times dearer in CPU.
const (
	defaultWorkers = 1000
	defaultRate    = 300
)

// raceSlack is added to the overrun limit under the race detector.
const raceSlack = 100 * time.Millisecond
