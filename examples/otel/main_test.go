package main

import (
	"bytes"
	"regexp"
	"strings"
	"testing"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// TestOtelExample runs the example and checks what a backend would get:
// the span tree has one span per attempt (the two GET tries with the
// resend count, the dial with both raced addresses, the stalled handshake
// as lost rather than failed, both retry attempts with the refused connect
// failed), the masked-failure counter names each hidden fault by what
// masked it, phase and peer, the exporters' JSON carries the same, and no
// query value reaches the telemetry.
func TestOtelExample(t *testing.T) {
	var out bytes.Buffer
	if err := run(t.Context(), &out, true); err != nil {
		t.Fatalf("run: %v\n%s", err, out.String())
	}
	text := out.String()
	summary, exported, _ := strings.Cut(text, "--- stdouttrace")
	t.Log("\n" + summary)

	for _, re := range []string{
		`(?m)^  checkout$`,
		`(?m)^    GET network\.peer\.address=127\.0\.0\.2 .*http\.response\.status_code=503 .*\[error: 503\]$`,
		`(?m)^      dial lifeline\.outcome=ok$`,
		`(?m)^        dial\.tls network\.peer\.address=127\.0\.0\.3 lifeline\.dial\.race_index=0 lifeline\.outcome=lost$`,
		`(?m)^        dial\.tls network\.peer\.address=127\.0\.0\.2 lifeline\.dial\.race_index=1 lifeline\.outcome=ok$`,
		`(?m)^    GET http\.request\.resend_count=1 network\.peer\.address=127\.0\.0\.2 lifeline\.outcome=ok http\.response\.status_code=200 `,
		`(?m)^    retry\.attempt lifeline\.retry\.attempt=1 .*error\.type=connect_refused`,
		`(?m)^        dial\.connect network\.peer\.address=127\.0\.0\.4 .*\[error: connect_refused\]$`,
		`(?m)^    retry\.attempt lifeline\.retry\.attempt=2 lifeline\.outcome=ok$`,
		`(?m)^  masked_by=race phase=tls network\.peer\.address=127\.0\.0\.3 error\.type=tls_stall  1 `,
		`(?m)^  masked_by=retry phase=connect network\.peer\.address=127\.0\.0\.4 error\.type=connect_refused  1 `,
		`(?m)^  masked_by=retry phase=response network\.peer\.address=127\.0\.0\.2 error\.type=503  1 `,
	} {
		if !regexp.MustCompile(re).MatchString(summary) {
			t.Errorf("summary lacks %s", re)
		}
	}
	if n := strings.Count(summary, "\n    GET "); n != 2 {
		t.Errorf("%d GET spans, want 2 (one per try)", n)
	}
	for _, want := range []string{`"Name": "dial.tls"`, `"Name": "retry.attempt"`, `"Name": "GET"`,
		`"Name": "lifeline.masked_failures"`, `"Value": "tls_stall"`} {
		if !strings.Contains(exported, want) {
			t.Errorf("exporters' JSON lacks %s", want)
		}
	}
	if strings.Contains(text, "secret") {
		t.Errorf("the query value reached the telemetry")
	}
}
