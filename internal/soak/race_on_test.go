//go:build race

package soak_test

// defaultWorkers is lower under the race detector, which makes every call
// several times dearer in CPU.
const defaultWorkers = 50
