package interop_test

import (
	"bytes"
	"os"
	"os/exec"
	"sync"
	"testing"
	"time"
)

// runServer starts a real server process for a test and waits until ready
// reports nil (polled every 20ms, for up to wait). At cleanup it sends stop,
// kills the process if it has not exited 10s later, and shows the server's
// output when the test failed. It fails the test if the server does not
// start, exits early or is not ready in time.
func runServer(t *testing.T, name string, cmd *exec.Cmd, stop os.Signal, wait time.Duration, ready func() error) {
	t.Helper()
	runServerLog(t, name, cmd, stop, wait, func(string) error { return ready() })
}

// runServerLog is runServer whose ready check also reads the server's
// output so far (where a server started on port 0 reports its port).
func runServerLog(t *testing.T, name string, cmd *exec.Cmd, stop os.Signal, wait time.Duration, ready func(out string) error) {
	t.Helper()
	var log syncBuffer // the server's output, shown only when the test fails
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatalf("interop: start %s: %v", name, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(stop)
		timer := time.NewTimer(10 * time.Second)
		defer timer.Stop()
		select {
		case <-done:
		case <-timer.C:
			_ = cmd.Process.Kill()
			<-done
		}
		if t.Failed() {
			t.Logf("%s output:\n%s", name, log.String())
		}
	})
	deadline := time.Now().Add(wait)
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := ready(log.String())
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("interop: %s not ready within %v: %v", name, wait, err)
		}
		select {
		case err := <-done:
			t.Fatalf("interop: %s exited: %v", name, err)
		case <-tick.C:
		}
	}
}

// syncBuffer is a bytes.Buffer safe for the writes of a child process's
// output copier and the test's read.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}
