package transport

import (
	"net"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// FuzzRetryAfter: any Retry-After value parses without panicking to
// either "no advice" or a wait in [0, 1 year]; delay-seconds are read
// exactly up to the year, and more digits than an int64 holds are a
// year, not "no advice".
func FuzzRetryAfter(f *testing.F) {
	for _, s := range []string{"0", "5", "120", "-1", "+7", " 3 ", "1.5", "", "soon",
		"99999999999999999999999", "Fri, 31 Dec 2100 23:59:59 GMT", "Sun, 06 Nov 1994 08:49:37 GMT",
		"Sunday, 06-Nov-94 08:49:37 GMT", "Sun Nov  6 08:49:37 1994", "\x00", "0x10", "1e9"} {
		f.Add(s)
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	const year = 365 * 24 * time.Hour
	f.Fuzz(func(t *testing.T, v string) {
		h := http.Header{}
		h["Retry-After"] = []string{v}
		d, ok := retryAfter(h, now)
		if !ok {
			if d != 0 {
				t.Fatalf("%q: no advice but a wait of %v", v, d)
			}
			return
		}
		if d < 0 || d > year {
			t.Fatalf("%q: wait %v outside [0, 1y]", v, d)
		}
		s := strings.TrimSpace(v)
		if s != "" && strings.Trim(s, "0123456789") == "" && len(strings.TrimLeft(s, "0")) > 19 && d != year {
			t.Fatalf("%q: a huge number of seconds gave %v, want a year", v, d)
		}
	})
}

// FuzzRedactURL: url.full keeps no userinfo, no fragment and no query
// value, whatever the URL.
func FuzzRedactURL(f *testing.F) {
	for _, s := range []string{"https://u:p@h/x?token=T&a=b#frag", "http://h/?", "http://h/?a", "http://h/?=v&&k==v2",
		"https://[::1]:443/p%20q?x=%zz", "http://h/p?a=1;b=2", "http://h?k=v#f?k2=v2"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		u, err := url.Parse(raw)
		if err != nil {
			return
		}
		got := redactURL(u)
		r, err := url.Parse(got)
		if err != nil {
			// The redacted text need not reparse (a path with a bad
			// escape stays as it was), but it must hold no secret.
			r = &url.URL{RawQuery: got[strings.IndexByte(got, '?')+1:]}
			if !strings.Contains(got, "?") {
				r.RawQuery = ""
			}
		}
		if r.User != nil {
			t.Fatalf("%q → %q keeps userinfo", raw, got)
		}
		if strings.Contains(got, "#") {
			t.Fatalf("%q → %q keeps the fragment", raw, got)
		}
		if r.RawQuery == "" {
			return
		}
		for _, part := range strings.Split(r.RawQuery, "&") {
			_, v, ok := strings.Cut(part, "=")
			if part != "" && part != "REDACTED" && (!ok || v != "REDACTED") {
				t.Fatalf("%q → %q: query part %q not redacted", raw, got, part)
			}
		}
	})
}

// FuzzWebSocketURL: a websocket URL made of fuzzed text with a secret
// in its query and fragment, or in its userinfo, either fails to parse
// with an error that holds no secret, or gives a target whose host:port
// splits again and whose safe form (spans, errors, logs) holds no secret.
func FuzzWebSocketURL(f *testing.F) {
	for _, s := range [][2]string{{"ws://h", "/"}, {"wss://h:443", "/p"}, {"ws://[::1]:80", ""}, {"http://h", "/"},
		{"ws://", ""}, {"ws://h:99999", "/"}, {"ws://h", "/%zz"}, {"ws:/h", ""}, {"ws://h:", "/"}, {"%", "x"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, head, path string) {
		if strings.Contains(head+path, "SECRET") {
			return
		}
		userinfo := head
		if i := strings.Index(head, "://"); i >= 0 {
			userinfo = head[:i+3] + "u:SECRETP@" + head[i+3:]
		}
		for _, raw := range []string{head + path + "?token=SECRETQ#SECRETF", userinfo + path} {
			tg, err := parseTarget(raw)
			if err != nil {
				if strings.Contains(err.Error(), "SECRET") {
					t.Fatalf("%q: error names a secret: %v", raw, err)
				}
				continue
			}
			if strings.Contains(tg.safe, "SECRET") {
				t.Fatalf("%q: safe form %q holds a secret", raw, tg.safe)
			}
			if _, _, err := net.SplitHostPort(tg.hostPort); err != nil {
				t.Fatalf("%q: hostPort %q: %v", raw, tg.hostPort, err)
			}
		}
	})
}
