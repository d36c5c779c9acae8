package main

import (
	"bufio"
	"bytes"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// TestShortRun runs every scenario in short mode and checks the shape of
// RESULTS.md: the header, one section per scenario, each with a table of
// every contender in order whose cells parse, and its chart in PNG and SVG.
// It does not check the numbers (a loaded CI machine moves them), only
// what must hold on any machine.
func TestShortRun(t *testing.T) {
	out := t.TempDir()
	o := options{short: true, out: out, benchtime: "100ms", command: "go run ./compare -short"}
	var log bytes.Buffer
	if err := run(t.Context(), o, &log); err != nil {
		t.Fatalf("run: %v\n%s", err, log.String())
	}
	t.Logf("progress:\n%s", log.String())
	md, err := os.ReadFile(filepath.Join(out, "RESULTS.md"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"- **Date**: ", "- **Machine**: ", "- **Command**: `cd examples/interop && go run ./compare -short`", "## Contenders"} {
		if !bytes.Contains(md, []byte(want)) {
			t.Errorf("RESULTS.md has no %q", want)
		}
	}
	secs := splitSections(string(md))
	for _, sc := range scenarios {
		body, ok := secs[sc.id]
		if !ok {
			t.Errorf("no section (%s)", sc.id)
			continue
		}
		t.Run(sc.id, func(t *testing.T) { checkSection(t, out, sc, body) })
	}
}

// splitSections maps a scenario id to its section's text.
func splitSections(md string) map[string]string {
	secs := map[string]string{}
	head := regexp.MustCompile(`(?m)^## \(([a-z0-9]+)\) `)
	idx := head.FindAllStringSubmatchIndex(md, -1)
	for i, m := range idx {
		end := len(md)
		if i+1 < len(idx) {
			end = idx[i+1][0]
		}
		secs[md[m[2]:m[3]]] = md[m[0]:end]
	}
	return secs
}

func checkSection(t *testing.T, out string, scn scenario, body string) {
	id, rows := scn.id, scn.rows()
	if strings.Contains(body, "**Skipped on this machine**") {
		if id != "c" && id != "h" {
			t.Fatalf("section (%s) skipped: only (c) and (h) may be", id)
		}
		_, errIP := exec.LookPath("ip")
		_, errNft := exec.LookPath("nft")
		if os.Geteuid() == 0 && errIP == nil && errNft == nil {
			t.Errorf("(%s) skipped although root with ip and nft: %s", id, body)
		}
		t.Skipf("(%s) needs root, ip and nft: %s", id, strings.TrimSpace(body))
	}
	var table []string
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "|") {
			table = append(table, l)
		}
	}
	if len(table) != 2+len(rows) {
		t.Fatalf("table has %d lines, want a header, a separator and %d rows:\n%s", len(table), len(rows), strings.Join(table, "\n"))
	}
	header := cells(table[0])
	if len(header) < len(tableHeader) || strings.Join(header[:len(tableHeader)], "|") != strings.Join(tableHeader, "|") {
		t.Fatalf("header %q does not start with %q", header, tableHeader)
	}
	successRe := regexp.MustCompile(`^(\d+\.\d)% \((\d+)/(\d+)\)$`)
	for i, line := range table[2:] {
		row := cells(line)
		if len(row) != len(header) {
			t.Errorf("row %q has %d cells, the header %d", line, len(row), len(header))
			continue
		}
		if row[0] != rows[i].name {
			t.Errorf("row %d is %q, want %q", i, row[0], rows[i].name)
		}
		m := successRe.FindStringSubmatch(row[1])
		if m == nil {
			t.Errorf("%s: success %q", row[0], row[1])
			continue
		}
		ok, _ := strconv.Atoi(m[2])
		n, _ := strconv.Atoi(m[3])
		if n == 0 || ok > n {
			t.Errorf("%s: success %q: no calls or more ok than calls", row[0], row[1])
		}
		var lat [3]time.Duration
		for k := range lat {
			d, err := time.ParseDuration(row[2+k])
			if err != nil || d <= 0 {
				t.Errorf("%s: %s %q is not a positive duration", row[0], header[2+k], row[2+k])
			}
			lat[k] = d
		}
		if !(lat[0] <= lat[1] && lat[1] <= lat[2]) {
			t.Errorf("%s: p50 %v, p99 %v, max %v out of order", row[0], lat[0], lat[1], lat[2])
		}
		att, err := strconv.ParseFloat(row[5], 64)
		if err != nil {
			t.Errorf("%s: attempts/call %q", row[0], row[5])
		}
		// Every call asks for a new connection in the fault scenarios and
		// reaches the server on the happy path: no attempt counted at all
		// means the counting is broken. (Not at least one per call: a
		// net/http dial outlives a call that gave up and its connection
		// may serve the next call.)
		if err == nil && att <= 0 {
			t.Errorf("%s: attempts/call %v, want some", row[0], att)
		}
	}
	if check := countChecks[id]; check != nil {
		byName := map[string]map[string]string{}
		for _, line := range table[2:] {
			row := cells(line)
			m := map[string]string{}
			for k, h := range header {
				if k < len(row) {
					m[h] = row[k]
				}
			}
			byName[row[0]] = m
		}
		check(t, byName)
	}
	bases := []string{id}
	if strings.Contains(body, "charts/"+id+"-time.png") {
		bases = append(bases, id+"-time")
	} else if countChecks[id] != nil {
		t.Errorf("section (%s) has no timeline chart", id)
	}
	for _, base := range bases {
		checkChart(t, out, base, body)
	}
}

func checkChart(t *testing.T, out, id, body string) {
	for _, ext := range []string{".png", ".svg"} {
		name := filepath.Join(out, "charts", id+ext)
		if !strings.Contains(body, "charts/"+id+ext) {
			t.Errorf("section does not link %s", "charts/"+id+ext)
		}
		b, err := os.ReadFile(name)
		if err != nil {
			t.Error(err)
			continue
		}
		switch ext {
		case ".png":
			if _, err := png.Decode(bytes.NewReader(b)); err != nil {
				t.Errorf("%s: %v", name, err)
			}
		case ".svg":
			if !bytes.Contains(b, []byte("<svg")) {
				t.Errorf("%s is not an SVG", name)
			}
		}
	}
}

// cells splits a markdown table line into trimmed cells.
func cells(line string) []string {
	parts := strings.Split(strings.Trim(line, "|"), "|")
	for i := range parts {
		parts[i] = strings.TrimSpace(parts[i])
	}
	return parts
}

func TestParseFlags(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		ok   bool
	}{
		{"none", nil, true},
		{"short and only", []string{"-short", "-only", "a, f"}, true},
		{"unknown scenario", []string{"-only", "z"}, false},
		{"stray argument", []string{"a"}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var errOut bytes.Buffer
			o, err := parseFlags(tc.args, &errOut)
			if (err == nil) != tc.ok {
				t.Fatalf("parseFlags(%q): %v, want ok %v", tc.args, err, tc.ok)
			}
			if tc.name == "short and only" && (!o.short || strings.Join(o.only, ",") != "a,f" || o.benchtime != "100ms") {
				t.Errorf("parseFlags(%q) = %+v", tc.args, o)
			}
		})
	}
}

// countChecks check what the harness counted in the short runs of the
// outage scenarios, where the fault is real: not lifeline's targets (they
// are for the fail-fast and shedding work), but that the fault hit and the
// harness saw it. The rows are keyed by contender, then column.
var countChecks = map[string]func(t *testing.T, rows map[string]map[string]string){
	"h": func(t *testing.T, rows map[string]map[string]string) {
		for name, r := range rows {
			// 20 calls a second for 6s, open loop: every contender gets
			// every call, whatever the fault does to it.
			if n := callCount(t, r); n < 110 || n > 121 {
				t.Errorf("%s: %d calls, want the 120 of the schedule", name, n)
			}
		}
		std := rows["net/http default"]
		// net/http opens a conn for every call that finds none idle: the
		// hook must count connects to the dead address in the outage, and
		// the black hole must hold calls to their deadline.
		if v := num(t, std, "connects/s to the dead address in the outage (target ≤ 3)"); v <= 0 {
			t.Errorf("net/http default: %v connects/s to the dead address counted in the outage, want some", v)
		}
		if v := num(t, std, "ended by deadline"); v < 5 {
			t.Errorf("net/http default: %v calls ended by their deadline, want the outage's", v)
		}
		if v := num(t, std, "in flight at once, max (target ≤ 10% of lifeline's today)"); v < 10 {
			t.Errorf("net/http default: at most %v calls in flight, want the ~20 a 1s deadline holds at 20/s", v)
		}
	},
	"i1": func(t *testing.T, rows map[string]map[string]string) {
		overloadCounts(t, rows)
		// Fast 503s: failsafe-go retries each at once, twice.
		if v := num(t, rows["failsafe-go"], "attempts/call"); v <= 1.5 {
			t.Errorf("failsafe-go: %v requests per call, want its retries of the 503s counted", v)
		}
	},
	"i2": overloadCounts, // slow 503s come at the short run's 1s deadline: no retries
	"j": func(t *testing.T, rows map[string]map[string]string) {
		std := rows["net/http default"]
		// No retries: every call reached the upstream once, and in the
		// storm every one of them was answered 429.
		if v := num(t, std, "attempts/call"); v != 1 {
			t.Errorf("net/http default: %v requests at the upstream per call, want exactly 1", v)
		}
		storm, n429 := num(t, std, "requests in the storm"), num(t, std, "429s answered")
		if storm < 50 || n429 < storm-1 {
			t.Errorf("net/http default: %v requests in the 3s storm, %v answered 429; want ~60, all 429", storm, n429)
		}
		if v := num(t, std, "advised waits"); v < 1 || v > 3 {
			t.Errorf("net/http default: %v advised waits of 2s in a 3s storm, want 1 to 3", v)
		}
		if v := num(t, std, "requests during advised waits (per wait; target: only probes)"); v < 20 {
			t.Errorf("net/http default: %v requests during the advised waits, want its full rate (~20/s)", v)
		}
		// lifeline paces the host by the advice: during each wait only
		// a probe or so reaches the upstream (its calls wait, or end
		// with the held answer: fewer requests than calls is the point,
		// so requests per call says nothing here).
		ll := rows["lifeline"]
		if w, during := num(t, ll, "advised waits"), num(t, ll, "requests during advised waits (per wait; target: only probes)"); during > 2*max(w, 1) {
			t.Errorf("lifeline: %v requests during %v advised waits, want only probes (≤ 2 a wait)", during, w)
		}
		if v := num(t, ll, "requests in the storm"); v > storm/4 {
			t.Errorf("lifeline: %v requests in the storm, net/http %v: want a fraction", v, storm)
		}
	},
}

func overloadCounts(t *testing.T, rows map[string]map[string]string) {
	std := rows["net/http default"]
	if v := num(t, std, "attempts/call"); v != 1 {
		t.Errorf("net/http default: %v requests at the upstream per call, want exactly 1 (no retries)", v)
	}
	if v := num(t, std, "load from the overload's calls, requests/s (target ≤ 2× capacity)"); v < 250 || v > 310 {
		t.Errorf("net/http default: load %v requests/s from the overload's calls, want the 300 offered", v)
	}
	for name, r := range rows {
		// The token bucket serves 100 a second plus a burst of 10.
		if v := num(t, r, "goodput in overload, ok/s"); v > 111 {
			t.Errorf("%s: goodput %v ok/s, over the upstream's capacity", name, v)
		}
	}
}

// callCount is a row's number of calls, from its success cell "x% (ok/n)".
func callCount(t *testing.T, r map[string]string) int {
	t.Helper()
	m := regexp.MustCompile(`/(\d+)\)$`).FindStringSubmatch(r["success"])
	if m == nil {
		t.Fatalf("success %q", r["success"])
	}
	n, _ := strconv.Atoi(m[1])
	return n
}

// num is a cell's leading number ("193 (1.9×)" is 193).
func num(t *testing.T, r map[string]string, col string) float64 {
	t.Helper()
	v, ok := r[col]
	if !ok {
		t.Fatalf("no column %q", col)
	}
	f, err := strconv.ParseFloat(strings.Fields(v)[0], 64)
	if err != nil {
		t.Fatalf("%s %q: %v", col, v, err)
	}
	return f
}

func TestAdvisedWaits(t *testing.T) {
	t0 := time.Unix(1000, 0)
	at := func(ms int, status int) arrival {
		return arrival{at: t0.Add(time.Duration(ms) * time.Millisecond), status: status}
	}
	for _, tc := range []struct {
		name          string
		as            []arrival
		waits, during int
	}{
		{"none", nil, 0, 0},
		{"200s start no wait", []arrival{at(0, 200), at(100, 200)}, 0, 0},
		// 429 at 0 advises 2s: 500 and 1999 are inside (a 200 too: it
		// came during the advice), 2000 is not and starts the next wait.
		{"inside and at the end", []arrival{at(0, 429), at(500, 429), at(1999, 200), at(2000, 429), at(3000, 429)}, 2, 3},
		{"a probe per wait", []arrival{at(0, 429), at(2000, 429), at(4000, 429), at(6000, 200)}, 3, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			w, d := advisedWaits(tc.as)
			if w != tc.waits || d != tc.during {
				t.Errorf("advisedWaits = %d waits, %d during; want %d, %d", w, d, tc.waits, tc.during)
			}
		})
	}
}

func TestMaxInFlight(t *testing.T) {
	t0 := time.Unix(1000, 0)
	c := func(from, to int) call {
		return call{start: t0.Add(time.Duration(from) * time.Second), end: t0.Add(time.Duration(to) * time.Second)}
	}
	// [0,10) [1,3) [2,4) [3,5): at 2.5s three run; the one ending at 3
	// and the one starting at 3 do not overlap.
	if got := maxInFlight([]call{c(0, 10), c(1, 3), c(2, 4), c(3, 5)}); got != 3 {
		t.Errorf("maxInFlight = %d, want 3", got)
	}
	if got := maxInFlight(nil); got != 0 {
		t.Errorf("maxInFlight(nil) = %d", got)
	}
}

func TestRecovery(t *testing.T) {
	from := time.Unix(1000, 0)
	c := func(ms int, ok bool) call {
		x := call{start: from.Add(time.Duration(ms) * time.Millisecond)}
		if !ok {
			x.err = errCapped
		}
		return x
	}
	end := from.Add(5 * time.Second)
	for _, tc := range []struct {
		name  string
		calls []call
		want  string
	}{
		{"all ok", []call{c(100, true), c(4900, true)}, "0s"},
		{"failures until 2s", []call{c(100, false), c(1500, false), c(2100, true), c(4900, true)}, "2s"},
		{"a failure in the last second", []call{c(100, true), c(4500, false)}, "not within 5s"},
		{"before from does not count", []call{c(-500, false), c(100, true)}, "0s"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := recovery(tc.calls, from, end); got != tc.want {
				t.Errorf("recovery = %q, want %q", got, tc.want)
			}
		})
	}
}
