// Package docs_test checks the documentation: README.md and docs/*.md.
// Every relative link must reach a file or directory of the repository,
// every #anchor a heading of the page it names, and every repository path
// quoted in backticks (`examples/probe`, `transport/hostile_test.go`) must
// exist, so that moving or renaming a file or a heading cannot leave a
// dead reference behind.
package docs_test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"unicode"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// pages are the documents checked, relative to the repository root.
func pages(t *testing.T) []string {
	t.Helper()
	docs, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	if len(docs) == 0 {
		t.Fatal("no docs/*.md found")
	}
	out := []string{"README.md"}
	for _, d := range docs {
		out = append(out, filepath.Join("docs", d))
	}
	return out
}

var (
	// linkRE finds inline links and images: [text](target) and ![alt](target).
	linkRE = regexp.MustCompile(`!?\[[^\]]*\]\(([^)\s]+)\)`)
	// codeRE finds inline code spans.
	codeRE = regexp.MustCompile("`([^`\n]+)`")
	// repoPathRE: a code span that names a path in this repository.
	repoPathRE = regexp.MustCompile(`^(?:\./)?(?:examples|cshim|alerts|internal|transport|dial|retry|pool|docs|bench)/[A-Za-z0-9_./-]*$`)
	// goSelectorRE: `internal/otelx.Memo` names a Go identifier, not a file.
	goSelectorRE = regexp.MustCompile(`\.[A-Z]`)
)

// futurePaths are quoted paths that name what does not exist yet, on
// purpose: faultnet's public package is the subject of a later issue.
var futurePaths = []string{"faultnet/"}

// prose returns the lines of a markdown document outside fenced code
// blocks, with their 1-based line numbers.
func prose(text string) (lines []string, numbers []int) {
	fenced := false
	for i, line := range strings.Split(text, "\n") {
		trimmed := strings.TrimSpace(line)
		if strings.HasPrefix(trimmed, "```") {
			fenced = !fenced
			continue
		}
		if !fenced {
			lines = append(lines, line)
			numbers = append(numbers, i+1)
		}
	}
	return lines, numbers
}

// anchors returns the anchors GitHub gives the headings of a markdown
// document: lower case, spaces to hyphens, everything but letters, digits,
// '_' and '-' dropped; a repeated heading gets -1, -2, ...
func anchors(text string) map[string]bool {
	out := map[string]bool{}
	seen := map[string]int{}
	lines, _ := prose(text)
	for _, line := range lines {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		heading := strings.TrimSpace(strings.TrimLeft(line, "#"))
		var b strings.Builder
		for _, r := range strings.ToLower(heading) {
			switch {
			case unicode.IsLetter(r), unicode.IsDigit(r), r == '_', r == '-':
				b.WriteRune(r)
			case r == ' ':
				b.WriteByte('-')
			}
		}
		slug := b.String()
		if n := seen[slug]; n > 0 {
			out[slug+"-"+itoa(n)] = true
		} else {
			out[slug] = true
		}
		seen[slug]++
	}
	return out
}

func itoa(n int) string {
	if n < 10 {
		return string(rune('0' + n))
	}
	return itoa(n/10) + string(rune('0'+n%10))
}

func TestAnchors(t *testing.T) {
	got := anchors("# dial — a dialer that cannot hang\n```\n# not a heading\n```\n## Knobs (`dial.Dialer`; zero value = default)\n## Knobs (`dial.Dialer`; zero value = default)\n### Credentials: auth that refreshes\n")
	want := []string{"dial--a-dialer-that-cannot-hang", "knobs-dialdialer-zero-value--default", "knobs-dialdialer-zero-value--default-1", "credentials-auth-that-refreshes"}
	var keys []string
	for k := range got {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	slices.Sort(want)
	if !slices.Equal(keys, want) {
		t.Errorf("anchors = %q, want %q", keys, want)
	}
}

// TestRelativeLinks checks every relative link and #anchor of the pages.
func TestRelativeLinks(t *testing.T) {
	root := ".."
	texts := map[string]string{} // page (from the root) → its text, read once
	read := func(page string) (string, error) {
		if s, ok := texts[page]; ok {
			return s, nil
		}
		b, err := os.ReadFile(filepath.Join(root, page))
		texts[page] = string(b)
		return string(b), err
	}
	links := 0
	for _, page := range pages(t) {
		text, err := read(page)
		if err != nil {
			t.Fatal(err)
		}
		lines, numbers := prose(text)
		for i, line := range lines {
			// Links inside code spans are not links.
			line = codeRE.ReplaceAllString(line, "``")
			for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
				target := m[1]
				if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
					continue
				}
				links++
				where := page + ":" + itoa(numbers[i])
				path, anchor, _ := strings.Cut(target, "#")
				dest := page // a bare #anchor is in the same page
				if path != "" {
					dest = filepath.Clean(filepath.Join(filepath.Dir(page), path))
					if strings.HasPrefix(dest, "..") {
						t.Errorf("%s: link %q leaves the repository", where, target)
						continue
					}
					if _, err := os.Stat(filepath.Join(root, dest)); err != nil {
						t.Errorf("%s: link %q: %s does not exist", where, target, dest)
						continue
					}
				}
				if anchor == "" {
					continue
				}
				if !strings.HasSuffix(dest, ".md") {
					t.Errorf("%s: link %q: an anchor into a file that is not markdown", where, target)
					continue
				}
				destText, err := read(dest)
				if err != nil {
					t.Errorf("%s: link %q: %v", where, target, err)
					continue
				}
				if !anchors(destText)[anchor] {
					t.Errorf("%s: link %q: %s has no heading with the anchor #%s", where, target, dest, anchor)
				}
			}
		}
	}
	if links < 10 {
		t.Errorf("only %d relative links found: is the link pattern still right?", links)
	}
}

// TestQuotedPaths checks that repository paths quoted in backticks in
// prose (`examples/probe`, `cshim/ctest/`) exist.
func TestQuotedPaths(t *testing.T) {
	root := ".."
	for _, page := range pages(t) {
		b, err := os.ReadFile(filepath.Join(root, page))
		if err != nil {
			t.Fatal(err)
		}
		lines, numbers := prose(string(b))
		for i, line := range lines {
			for _, m := range codeRE.FindAllStringSubmatch(line, -1) {
				p := m[1]
				if !repoPathRE.MatchString(p) || goSelectorRE.MatchString(p) || slices.Contains(futurePaths, p) {
					continue
				}
				if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
					t.Errorf("%s:%d: `%s` does not exist in the repository", page, numbers[i], p)
				}
			}
		}
	}
}
