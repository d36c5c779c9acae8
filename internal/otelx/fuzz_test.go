package otelx_test

import (
	"strconv"
	"strings"
	"testing"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// FuzzRedact: a URL made of fuzzed text, with a secret planted in its
// userinfo and in its query or fragment, inside fuzzed error text, keeps
// neither secret after Redact (nor after StripURL, for the URL alone).
// The URL is fuzzed whole: its scheme, userinfo, host and path, and the
// query around the secret may hold quotes, spaces, '@', '?', '#', "://".
//
// Two readings are fuzzed, as Redact documents them: a URL quoted the way
// Go quotes (strconv.Quote, as url.Error does; with or without "://"),
// and an unquoted URL in a text with no '"' before it (a '"' before a
// URL's scheme makes it a Go-quoted one).
// The userinfo is fuzzed within what can be userinfo at all: no '/', '?'
// or '#' (a URL's authority ends there).
func FuzzRedact(f *testing.F) {
	for _, s := range []struct {
		before, scheme, user, hostPath, q1, q2, after string
		shape                                         uint8
	}{
		{`Get `, "https", "", "host/v1", "k=", "", `: EOF`, 0},
		{`Get `, "http", "", "127.0.0.1:1/p", "q='x'&api_key=", "", `: dial tcp 127.0.0.1:1: connect: connection refused`, 0},
		{`parse `, "https", "", "host/%zz", "email=a@b.com&token=", "", `: invalid URL escape "%zz"`, 0},
		{"x ", "ws", "a:b", "[::1]:80/p", "q=a b&t=", "&z", " y", 1},
		{"", "a+b.c-d", "", "/://", "", "", "", 2},
		{"", "", "", "%zz", "", "", "\n", 3},
		{`"`, "h", "p@ss", "h:99999", "`<>`", "'", "'", 0},
		{"fetch ", "https", "u", "h/p", "q=a b&token=", ": connection refused", "", 1},
		{"", "http", "", "h/a\"b", "q=\"", "\"", "\" after", 0},
		{"", "x", "", "h/://u:p@h2/", "", "", "", 1},
		{"a", "", "", "/://x", "", "", "", 0},
		{"parse ", "api.example.com", "", ":443/v1", "key=", "", ": first path segment in URL cannot contain colon", 4},
		{"Get ", "", "", "/v1", "a=\"", "", `: unsupported protocol scheme ""`, 6},
	} {
		f.Add(s.before, s.scheme, s.user, s.hostPath, s.q1, s.q2, s.after, s.shape)
	}
	f.Fuzz(func(t *testing.T, before, scheme, user, hostPath, q1, q2, after string, shape uint8) {
		if strings.Contains(before+scheme+user+hostPath+q1+q2+after, "SECRET") ||
			strings.ContainsAny(user, "/?#") {
			return
		}
		goQuoted := shape&1 == 0
		if !goQuoted && strings.Contains(before+scheme, `"`) {
			return
		}
		sep := "?"
		if shape&2 != 0 {
			sep = "#"
		}
		u := scheme + "://" + user + "SECRETP@" + hostPath + sep + q1 + "SECRETQ" + q2
		if goQuoted && shape&4 != 0 {
			// A Go-quoted URL without "://" (url.Error's
			// `parse "host:443/v1?key=..."`, `Get "/v1?key=..."`).
			u = scheme + hostPath + sep + q1 + "SECRETQ" + q2
		}
		msg := before + u + after
		if goQuoted {
			msg = before + strconv.Quote(u) + after
		}
		if got := otelx.Redact(msg); strings.Contains(got, "SECRET") {
			t.Fatalf("Redact(%q) = %q", msg, got)
		}
		if got := otelx.StripURL(u); strings.Contains(u, "://") && strings.Contains(got, "SECRET") {
			t.Fatalf("StripURL(%q) = %q", u, got)
		}
	})
}
