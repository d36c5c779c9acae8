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
		t.Run(sc.id, func(t *testing.T) { checkSection(t, out, sc.id, body) })
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

func checkSection(t *testing.T, out, id, body string) {
	if strings.Contains(body, "**Skipped on this machine**") {
		if id != "c" {
			t.Fatalf("section (%s) skipped: only (c) may be", id)
		}
		_, errIP := exec.LookPath("ip")
		_, errNft := exec.LookPath("nft")
		if os.Geteuid() == 0 && errIP == nil && errNft == nil {
			t.Errorf("(c) skipped although root with ip and nft: %s", body)
		}
		t.Skipf("(c) needs root, ip and nft: %s", strings.TrimSpace(body))
	}
	var table []string
	sc := bufio.NewScanner(strings.NewReader(body))
	for sc.Scan() {
		if l := sc.Text(); strings.HasPrefix(l, "|") {
			table = append(table, l)
		}
	}
	if len(table) != 2+len(contenders) {
		t.Fatalf("table has %d lines, want a header, a separator and %d rows:\n%s", len(table), len(contenders), strings.Join(table, "\n"))
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
		if row[0] != contenders[i].name {
			t.Errorf("row %d is %q, want %q", i, row[0], contenders[i].name)
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
