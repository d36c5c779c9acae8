package interop_test

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// alertsDir is the directory of the shipped Prometheus rules files.
const alertsDir = "../../alerts"

// TestAlertRules checks the shipped rules files with Prometheus's own tools:
// `promtool check rules` (syntax, templates) and `promtool test rules`, which
// replays the series in each *.test.yml and fails when an alert fires when it
// should not, does not fire when it should, or carries other labels or
// annotations than the test expects.
func TestAlertRules(t *testing.T) {
	promtool := lookBin(t, "promtool", "prometheus")
	rules, _ := filepath.Glob(filepath.Join(alertsDir, "*.rules.yml"))
	tests, _ := filepath.Glob(filepath.Join(alertsDir, "*.rules.test.yml"))
	if len(rules) < 2 || len(tests) != len(rules) {
		t.Fatalf("want a test file for each of at least two rules files in %s; rules %v, tests %v", alertsDir, rules, tests)
	}
	check := exec.Command(promtool, append([]string{"check", "rules"}, rules...)...)
	if out, err := check.CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules: %v\n%s", err, out)
	}
	for _, f := range tests {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cmd := exec.Command(promtool, "test", "rules", filepath.Base(f))
			cmd.Dir = alertsDir
			out, err := cmd.CombinedOutput()
			if err != nil {
				t.Fatalf("promtool test rules %s: %v\n%s", f, err, out)
			}
			if !strings.Contains(string(out), "SUCCESS") {
				t.Fatalf("promtool test rules %s: no SUCCESS in its output:\n%s", f, out)
			}
		})
	}
}

// lookBin finds a binary, installing its Debian package when it is missing
// (or skipping the test, saying why, when it cannot).
func lookBin(t *testing.T, bin, pkg string) string {
	t.Helper()
	find := func() (string, error) {
		if p, err := exec.LookPath(bin); err == nil {
			return p, nil
		}
		// Debian puts nginx in /usr/sbin, which a user's PATH may lack.
		return exec.LookPath(filepath.Join("/usr/sbin", bin))
	}
	if p, err := find(); err == nil {
		return p
	}
	aptInstall(t, pkg)
	p, err := find()
	if err != nil {
		t.Fatalf("interop: %s still missing after installing %s: %v", bin, pkg, err)
	}
	return p
}
