// Command compare puts lifeline next to its peers on the same faults, on
// real sockets on loopback (and in network namespaces it creates), and
// writes RESULTS.md: per scenario a table (success rate, p50, p99, max,
// attempts per call, and the scenario's own columns) and a latency CDF
// chart (PNG and SVG) per contender, plus a chart over time for (h)..(j).
//
// The contenders: net/http's default client; net/http with Client.Timeout
// 5s; hashicorp/go-retryablehttp with its defaults (timeout 5s);
// failsafe-go's failsafehttp with retries and a 1s per-attempt timeout;
// lifeline with zero config; lifeline with fixed and with adaptive
// hedging; in (h)..(j) also failsafe-go's circuit breaker and
// sony/gobreaker around net/http, and lifeline whose calls opt in to
// transport.WaitForReady (see waitforready.go). The scenarios: (a) 8% of
// connections hang after accept; (b) the same over HTTPS, in the
// handshake, GETs and POSTs; (c) one of three addresses drops SYNs; (d)
// one of three accepts and stalls TLS; (e) a 10s total outage under steady
// load; (f) the happy path's cost; (g) a body that stalls half-way; (h) a
// black-holed upstream (every packet dropped for 15s) under open-loop
// load; (i1), (i2) an upstream with capacity for 100 calls/s offered 300,
// answering 503 beyond it at once or after 1s; (j) a 429 storm with
// Retry-After.
//
// Run it from examples/interop (a full run takes about 12 minutes on 2
// cores: (i1) and (i2) run their contenders one after another, about 3
// minutes each; (c) and (h) need root, `ip` and `nft`, and are skipped
// without them):
//
//	go run ./compare
//	go run ./compare -only h,i1,i2,j -out /tmp/cmp
//	go run ./compare -short   # seconds per scenario; what the test runs
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func main() {
	testing.Init() // testing.Benchmark reads -test.benchtime
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	o.command = strings.Join(append([]string{"go run ./compare"}, os.Args[1:]...), " ")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	if err := run(ctx, o, os.Stderr); err != nil {
		fmt.Fprintln(os.Stderr, "compare:", err)
		os.Exit(1)
	}
}

// options are the run's settings.
type options struct {
	short     bool
	verbose   bool     // print every slow call
	out       string   // directory for RESULTS.md and charts/
	only      []string // scenario ids; empty: all
	benchtime string   // testing.Benchmark's time per run in (f)
	command   string   // as printed in RESULTS.md
}

func parseFlags(args []string, errOut io.Writer) (options, error) {
	fs := flag.NewFlagSet("compare", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var o options
	var only string
	fs.BoolVar(&o.short, "short", false, "a quick run (a few seconds per scenario, 2s caps) that checks the shape, not the numbers")
	fs.BoolVar(&o.verbose, "v", false, "print every call slower than 200ms: contender, latency, connects, error")
	fs.StringVar(&o.out, "out", "compare", "directory for RESULTS.md and charts/ (relative to the working directory)")
	fs.StringVar(&only, "only", "", "comma-separated scenario ids to run (a,b1,b2,c,d,e,f,g,h,i1,i2,j); empty: all")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	if fs.NArg() > 0 {
		err := fmt.Errorf("unexpected arguments %q", fs.Args())
		fmt.Fprintln(errOut, "compare:", err)
		return o, err
	}
	for _, id := range strings.Split(only, ",") {
		if id = strings.TrimSpace(id); id == "" {
			continue
		}
		if !knownScenario(id) {
			err := fmt.Errorf("-only: unknown scenario %q", id)
			fmt.Fprintln(errOut, "compare:", err)
			return o, err
		}
		o.only = append(o.only, id)
	}
	o.benchtime = "1s"
	if o.short {
		o.benchtime = "100ms"
	}
	return o, nil
}

func knownScenario(id string) bool {
	for _, s := range scenarios {
		if s.id == id {
			return true
		}
	}
	return false
}

func (o options) wants(id string) bool {
	if len(o.only) == 0 {
		return true
	}
	for _, x := range o.only {
		if x == id {
			return true
		}
	}
	return false
}

// run runs the scenarios, printing progress to log, and writes
// o.out/RESULTS.md and o.out/charts/.
func run(ctx context.Context, o options, log io.Writer) error {
	if f := flag.Lookup("test.benchtime"); f != nil {
		if err := f.Value.Set(o.benchtime); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(o.out, "charts"), 0o755); err != nil {
		return err
	}
	m := describeMachine()
	start := time.Now()
	var secs []*section
	for _, sc := range scenarios {
		if !o.wants(sc.id) {
			continue
		}
		m.sample()
		t0 := time.Now()
		fmt.Fprintf(log, "(%s) %s ...", sc.id, sc.title)
		s, err := sc.run(ctx, o)
		if err != nil {
			fmt.Fprintln(log)
			return fmt.Errorf("scenario (%s): %w", sc.id, err)
		}
		s.id, s.title = sc.id, sc.title
		if s.skipped == "" {
			s.chart = "charts/" + sc.id
			if err := writeChart(filepath.Join(o.out, s.chart), s); err != nil {
				return fmt.Errorf("scenario (%s): chart: %w", sc.id, err)
			}
			if s.timeline != nil {
				if err := writeTimeline(filepath.Join(o.out, s.chart+"-time"), s); err != nil {
					return fmt.Errorf("scenario (%s): timeline chart: %w", sc.id, err)
				}
			}
			fmt.Fprintf(log, " %v\n", time.Since(t0).Round(100*time.Millisecond))
		} else {
			fmt.Fprintf(log, " skipped: %s\n", s.skipped)
		}
		if o.verbose {
			printSlow(log, s)
		}
		secs = append(secs, s)
	}
	if len(secs) == 0 {
		return errors.New("no scenario ran")
	}
	m.finish(start)
	f, err := os.Create(filepath.Join(o.out, "RESULTS.md"))
	if err != nil {
		return err
	}
	if err := writeResults(f, o, m, secs); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// printSlow lists the section's calls slower than 200ms, in order of their
// start.
func printSlow(w io.Writer, s *section) {
	for _, r := range s.rows {
		calls := slices.Clone(r.st.calls)
		slices.SortFunc(calls, func(a, b call) int { return a.start.Compare(b.start) })
		for _, c := range calls {
			if c.dur() >= 200*time.Millisecond {
				fmt.Fprintf(w, "  (%s) %-22s %9s  connects %d  err %v\n", s.id, r.name, fmtDur(c.dur()), c.attempts, c.err)
			}
		}
	}
}
