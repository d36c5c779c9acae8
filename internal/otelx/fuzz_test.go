package otelx_test

import (
	"strings"
	"testing"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// FuzzRedact: an error text quoting a URL with userinfo, a query and a
// fragment keeps none of them after Redact, whatever surrounds the URL.
func FuzzRedact(f *testing.F) {
	for _, s := range [][3]string{{`Get "https`, `host/v1`, `": EOF`}, {"", "h", ""}, {"x ws", "[::1]:80/p", " y"},
		{"a+b.c-d", "/://", ""}, {"", "%zz", "\n"}, {"\"", "h:99999", "'"}} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, before, hostPath, after string) {
		if strings.Contains(before+hostPath+after, "SECRET") || strings.ContainsAny(hostPath, " \"'`<>\n\t") {
			return
		}
		msg := before + "://u:SECRETP@" + hostPath + "?k=SECRETQ#SECRETF" + after
		if got := otelx.Redact(msg); strings.Contains(got, "SECRET") {
			t.Fatalf("Redact(%q) = %q", msg, got)
		}
		if got := otelx.StripURL(before + "://u:SECRETP@" + hostPath + "?k=SECRETQ#SECRETF"); strings.Contains(got, "SECRET") {
			t.Fatalf("StripURL = %q", got)
		}
	})
}
