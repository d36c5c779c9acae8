package main

import (
	"bytes"
	"io"
	"os"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal: the controller end, which reads what is
// written to the terminal, and the terminal end, given to the demo.
func openPTY(t *testing.T) (controller, terminal *os.File) {
	t.Helper()
	controller, err := os.OpenFile("/dev/ptmx", os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Skipf("no pseudo-terminals here: %v", err)
	}
	t.Cleanup(func() { controller.Close() })
	fd := int(controller.Fd())
	if err := unix.IoctlSetPointerInt(fd, unix.TIOCSPTLCK, 0); err != nil { // unlockpt
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(fd, unix.TIOCGPTN) // ptsname
	if err != nil {
		t.Fatal(err)
	}
	terminal, err = os.OpenFile("/dev/pts/"+strconv.Itoa(n), os.O_RDWR|unix.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { terminal.Close() })
	// Raw output: the terminal must not turn "\n" into "\r\n", so that
	// every carriage return read back is one the demo wrote.
	tio, err := unix.IoctlGetTermios(int(terminal.Fd()), unix.TCGETS)
	if err != nil {
		t.Fatal(err)
	}
	tio.Oflag &^= unix.OPOST
	if err := unix.IoctlSetTermios(int(terminal.Fd()), unix.TCSETS, tio); err != nil {
		t.Fatal(err)
	}
	return controller, terminal
}

// TestHangDemoTerminal runs the program with its progress (stderr) on a
// terminal: there it is one line per client, rewritten in place with
// carriage returns and ended with a newline, while the table goes to
// stdout, a pipe here, with no carriage return.
func TestHangDemoTerminal(t *testing.T) {
	controller, terminal := openPTY(t)
	if !isTerminal(terminal) {
		t.Fatal("isTerminal(a pseudo-terminal) = false")
	}
	cmd := demoCommand(t, "-short")
	var stdout bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, terminal
	var onTerminal bytes.Buffer
	copied := make(chan error, 1)
	go func() {
		_, err := io.Copy(&onTerminal, controller) // ends with EIO once no one holds the terminal end
		copied <- err
	}()
	err := cmd.Run()
	terminal.Close() // the child has exited: the controller's reads end
	<-copied
	if err != nil {
		t.Fatalf("hangdemo: %v\nterminal: %q", err, onTerminal.String())
	}
	progress := onTerminal.String()
	lines := strings.Split(strings.TrimSuffix(progress, "\n"), "\n")
	if len(lines) != 2 {
		t.Fatalf("want one line per client on the terminal, got %d: %q", len(lines), progress)
	}
	for i, name := range []string{"net/http", "lifeline"} {
		updates := strings.Split(strings.TrimPrefix(lines[i], "\r"), "\r")
		if len(updates) < 2 {
			t.Errorf("%s: the line was not updated in place: %q", name, lines[i])
		}
		last := updates[len(updates)-1]
		if !regexp.MustCompile(`^\s*\d+\.\ds\s+` + regexp.QuoteMeta(name) + ` 48/48 done, \d+ failed$`).MatchString(last) {
			t.Errorf("%s: last update %q, want it done", name, last)
		}
	}
	if strings.Contains(stdout.String(), "\r") || !strings.Contains(stdout.String(), "succeeded") {
		t.Errorf("table on stdout: %q", stdout.String())
	}
}
