//go:build !race

package soak_test

// defaultWorkers is the number of concurrent callers of a default run.
const defaultWorkers = 100
