package main

import (
	"bytes"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestQuickstart runs the whole quick start and checks what it claims:
// the race is won by the healthy address well before the 5s handshake
// limit, the stall is counted as a masked failure, the budget keeps a total
// outage's attempts near the calls, and the pool rides out the flaps within
// its cap without a failed request.
func TestQuickstart(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)

	m := regexp.MustCompile(`won by 127\.0\.0\.1 in (\S+) `).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("race not won by the healthy address")
	}
	if took, err := time.ParseDuration(m[1]); err != nil || took >= 2*time.Second {
		t.Errorf("race took %s; want well under the 5s handshake limit", m[1])
	}
	for _, want := range []string{
		"masked failures seen by metrics: map[tls@127.0.0.2:1]",
		"health of 127.0.0.2: tls stalls 1, demoted true",
		"no budget:         200 calls made 1000 attempts",
		"requests: 160 ok, 0 failed",
	} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	m = regexp.MustCompile(`budget 10%:\s+200 calls made (\d+) attempts`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no budget line")
	}
	if n, _ := strconv.Atoi(m[1]); n > 240 {
		t.Errorf("with a 10%% budget 200 calls made %d attempts; want ≤ 1.2× the calls", n)
	}
	m = regexp.MustCompile(`at most (\d+) \(MaxConns 4\)`).FindStringSubmatch(text)
	if m == nil {
		t.Fatal("no pool line")
	}
	if n, _ := strconv.Atoi(m[1]); n > 4 {
		t.Errorf("the server saw %d connections at once; the pool's cap is 4", n)
	}
}
