package main

import (
	"bytes"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestWebSocketExample runs the example and checks its story in order:
// connected, echo, kill, loss noticed with its cause, fail-fast write,
// restart, reconnected, echo — twice — then closed.
func TestWebSocketExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	t.Log("\n" + text)
	want := []string{
		"state: connecting",
		"state: connected",
		`received "echo: hello 1"`,
		"-- killing the server",
		"state: disconnected",
		"lost the connection: ",
		"write while down: disconnected=true",
		"-- restarting the server",
		"state: connected",
		`received "echo: hello 2"`,
		"-- killing the server",
		"lost the connection: ",
		"write while down: disconnected=true",
		"-- restarting the server",
		"state: connected",
		`received "echo: hello 3"`,
		"-- closing",
		"state: closed",
	}
	rest := text
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Fatalf("output lacks %q after the earlier lines", w)
		}
		rest = rest[i+len(w):]
	}
	if n := strings.Count(text, "state: connected"); n != 3 {
		t.Fatalf("%d connections, want 3", n)
	}
}
