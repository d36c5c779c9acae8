package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMain runs the demo's own main when asked to (runMainEnv), so that a
// test can run the program as a user does, with real pipes or a terminal
// as its output; otherwise the tests, under goleak.
func TestMain(m *testing.M) {
	if args, ok := os.LookupEnv(runMainEnv); ok {
		os.Args = append([]string{"hangdemo"}, strings.Fields(args)...)
		main()
		os.Exit(0)
	}
	goleak.VerifyTestMain(m)
}

// runMainEnv, set to the demo's arguments, makes the test binary run the
// demo itself.
const runMainEnv = "HANGDEMO_RUN_MAIN"

// demoCommand is the demo, in a process of its own, with args.
func demoCommand(t *testing.T, args string) *exec.Cmd {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.CommandContext(t.Context(), exe)
	cmd.Env = append(os.Environ(), runMainEnv+"="+args)
	return cmd
}

// TestHangDemoPiped runs the program with its stdout and stderr on pipes,
// as in `go run ./examples/hangdemo 2>&1 | tee demo.txt`: the progress is
// one plain line per step, never carriage returns that a pipe runs into
// one line, and the table follows on stdout.
func TestHangDemoPiped(t *testing.T) {
	cmd := demoCommand(t, "-short")
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr // os/exec hands the child pipes
	if err := cmd.Run(); err != nil {
		t.Fatalf("hangdemo: %v\nstderr: %s", err, stderr.String())
	}
	if strings.Contains(stdout.String(), "\r") || strings.Contains(stderr.String(), "\r") {
		t.Errorf("carriage returns in piped output:\nstdout: %q\nstderr: %q", stdout.String(), stderr.String())
	}
	lines := strings.Split(strings.TrimSpace(stderr.String()), "\n")
	if len(lines) < 2 {
		t.Errorf("want a progress line per step and client, got %q", stderr.String())
	}
	for _, line := range lines {
		if !regexp.MustCompile(`^\s*\d+\.\ds\s+(net/http|lifeline) \d+/48 done, \d+ failed$`).MatchString(line) {
			t.Errorf("not a progress line: %q", line)
		}
	}
	checkProgress(t, stderr.String(), 48)
	if !regexp.MustCompile(`(?m)^\s*succeeded\s+\d+/48 `).MatchString(stdout.String()) {
		t.Errorf("no table on stdout: %q", stdout.String())
	}
}

// TestHangDemoShort runs the demo in its short mode, for each protocol, and
// checks what it prints: every lifeline request succeeded, the balancer
// hung connections (net/http lost requests to them), the table's rows are
// there, and lifeline counted masked failures.
func TestHangDemoShort(t *testing.T) {
	for _, proto := range []string{"https", "http"} {
		// -hedge: the default (adaptive) for both.
		t.Run(proto, func(t *testing.T) {
			o, err := parseFlags([]string{"-short", "-proto", proto}, io.Discard)
			if err != nil {
				t.Fatal(err)
			}
			var out, progress bytes.Buffer
			if err := run(t.Context(), o, &out, &progress); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			text := out.String()
			t.Log("\n" + text)

			for _, row := range []string{"succeeded", "p50", "p99", "max", "attempts", "all done after", "most in flight at once", "connections hung by the LB", "masked failures counted"} {
				if !regexp.MustCompile(`(?m)^\s*` + regexp.QuoteMeta(row) + `\s{3,}\S`).MatchString(text) {
					t.Errorf("table lacks the row %q", row)
				}
			}
			if !strings.Contains(text, "capped at 1s so the demo ends") {
				t.Error("net/http's cap is not labelled")
			}
			m := regexp.MustCompile(`(?m)^\s*succeeded\s+(\d+)/(\d+) \S+\s+(\d+)/(\d+) `).FindStringSubmatch(text)
			if m == nil {
				t.Fatal("no succeeded row with two columns")
			}
			plainOK, _ := strconv.Atoi(m[1])
			llOK, _ := strconv.Atoi(m[3])
			llTotal, _ := strconv.Atoi(m[4])
			if llTotal != o.n || llOK != o.n {
				t.Errorf("lifeline: %d/%d succeeded, want all %d", llOK, llTotal, o.n)
			}
			if plainOK >= o.n {
				t.Errorf("net/http succeeded %d/%d: the balancer hung none of its connections", plainOK, o.n)
			}
			m = regexp.MustCompile(`(?m)^\s*all done after\s+(\S+)\s+(\S+)`).FindStringSubmatch(text)
			if m == nil {
				t.Fatal("no all-done row")
			}
			for _, d := range m[1:] {
				if v, err := time.ParseDuration(d); err != nil || v <= 0 {
					t.Errorf("all done after %q: want a positive duration", d)
				}
			}
			m = regexp.MustCompile(`(?m)^\s*connections hung by the LB\s+(\d+)\s+(\d+)`).FindStringSubmatch(text)
			if m == nil {
				t.Fatal("no hung row")
			}
			if n, _ := strconv.Atoi(m[2]); n == 0 {
				t.Error("no connection of lifeline's was hung")
			}
			m = regexp.MustCompile(`(?m)^\s*masked failures counted\s+-\s+(\d+)`).FindStringSubmatch(text)
			if m == nil {
				t.Fatal("no masked failures row")
			}
			if n, _ := strconv.Atoi(m[1]); n == 0 {
				t.Error("lifeline counted no masked failure")
			}
			if !regexp.MustCompile(`masked_by=(race|hedge|retry) +phase=\S+ +peer=127\.0\.0\.1 +error\.type=\S+ +[1-9]`).MatchString(text) {
				t.Error("no masked failure labelled with the balancer's address")
			}
			if !strings.Contains(progress.String(), "lifeline "+strconv.Itoa(o.n)+"/"+strconv.Itoa(o.n)+" done") {
				t.Errorf("progress line never showed lifeline done: %q", progress.String())
			}
			checkProgress(t, progress.String(), o.n)
		})
	}
}

// checkProgress: the progress written to a pipe (not a terminal) is
// plain lines, no carriage returns, each about one client; and the
// clients ran one after the other, net/http first, each to its end before
// the next began (at once, they shared the CPU and lifeline's p50 read
// ten times net/http's).
func checkProgress(t *testing.T, progress string, n int) {
	t.Helper()
	if strings.Contains(progress, "\r") {
		t.Errorf("progress to a pipe has carriage returns: %q", progress)
	}
	var order []string
	for _, line := range strings.Split(strings.TrimSpace(progress), "\n") {
		plain, ll := strings.Contains(line, "net/http "), strings.Contains(line, "lifeline ")
		switch {
		case plain == ll:
			t.Errorf("progress line about both clients or neither: %q", line)
		case plain:
			order = append(order, "net/http")
		default:
			order = append(order, "lifeline")
		}
	}
	first := slices.Index(order, "lifeline")
	if first < 1 || slices.Contains(order[first:], "net/http") {
		t.Errorf("clients not one after the other, net/http first: %q", order)
	}
	total := strconv.Itoa(n) + "/" + strconv.Itoa(n) + " done"
	if i := strings.Index(progress, "lifeline "); i < 0 || !strings.Contains(progress[:i], "net/http "+total) {
		t.Errorf("net/http's progress did not reach %s before lifeline's began: %q", total, progress)
	}
}

func TestHangDemoFlags(t *testing.T) {
	o, err := parseFlags(nil, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if o.n != 400 || o.hang != 0.08 || o.proto != "https" || o.hedge != "adaptive" {
		t.Errorf("defaults: %+v", o)
	}
	for _, args := range [][]string{
		{"-n", "0"}, {"-hang", "1"}, {"-hang", "-0.1"}, {"-proto", "ftp"}, {"-hedge", "always"}, {"-rate", "0"}, {"-rate", "-1"}, {"-cap", "0s"},
	} {
		var errOut bytes.Buffer
		if _, err := parseFlags(args, &errOut); err == nil {
			t.Errorf("parseFlags(%q) accepted", args)
		} else if !strings.Contains(errOut.String(), "Usage") {
			t.Errorf("parseFlags(%q): no usage printed: %q", args, errOut.String())
		}
	}
}
