package docs_test

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// codeLine is a Go line as compared: trimmed, without a trailing comment.
func codeLine(l string) string {
	l = strings.TrimSpace(l)
	if i := strings.Index(l, " // "); i >= 0 {
		l = strings.TrimSpace(l[:i])
	}
	return l
}

// TestSDKSnippetIsTheSDK: every code line of the README's SDK snippet
// (between <!-- sdk-snippet --> and <!-- /sdk-snippet -->) is a line of
// examples/sdk/rooms, whose tests run it against a real server with
// faults injected: the README cannot show code that does not exist or has
// drifted from the SDK. Comment-only lines are the README's own.
func TestSDKSnippetIsTheSDK(t *testing.T) {
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- sdk-snippet -->")
	snippet, _, ok2 := strings.Cut(rest, "<!-- /sdk-snippet -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- sdk-snippet --> … <!-- /sdk-snippet --> section")
	}
	files, err := filepath.Glob("../examples/sdk/rooms/*.go")
	if err != nil || len(files) == 0 {
		t.Fatalf("no examples/sdk/rooms sources: %v", err)
	}
	have := map[string]bool{}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, l := range strings.Split(string(b), "\n") {
			have[codeLine(l)] = true
		}
	}
	n := 0
	for _, l := range strings.Split(snippet, "\n") {
		c := codeLine(l)
		if c == "" || strings.HasPrefix(c, "//") || strings.HasPrefix(c, "```") {
			continue
		}
		n++
		if !have[c] {
			t.Errorf("README's SDK snippet line is not in examples/sdk/rooms: %q", c)
		}
	}
	if n < 10 {
		t.Errorf("the SDK snippet has %d code lines; want the SDK's lifeline lines", n)
	}
}

// TestQuickstartCompiles: the README's quick start (between
// <!-- quickstart --> and <!-- /quickstart -->) is a whole program that
// builds against this module as it is.
func TestQuickstartCompiles(t *testing.T) {
	if testing.Short() {
		t.Skip("builds a program")
	}
	readme, err := os.ReadFile("../README.md")
	if err != nil {
		t.Fatal(err)
	}
	_, rest, ok := strings.Cut(string(readme), "<!-- quickstart -->")
	block, _, ok2 := strings.Cut(rest, "<!-- /quickstart -->")
	if !ok || !ok2 {
		t.Fatal("README.md has no <!-- quickstart --> … <!-- /quickstart --> section")
	}
	block = strings.TrimSpace(block)
	block = strings.TrimPrefix(block, "```go")
	block = strings.TrimSuffix(block, "```")
	// Inside the module (so that it builds against this checkout), in a
	// directory the test removes.
	dir, err := os.MkdirTemp(".", "quickstart-")
	if err != nil {
		t.Fatal(err)
	}
	defer os.RemoveAll(dir)
	if err := os.WriteFile(filepath.Join(dir, "main.go"), []byte(block), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("go", "vet", "./"+dir).CombinedOutput()
	if err != nil {
		t.Fatalf("the README's quick start does not build: %v\n%s", err, out)
	}
}
