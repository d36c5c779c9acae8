package otelx

import (
	"net/url"
	"strings"
)

// Redacted replaces the values of sensitive query parameters in URLs that
// are kept whole (url.full).
const Redacted = "REDACTED"

// Redact returns msg with every URL in it (a "scheme://" run up to the next
// space or quote) cut down to scheme, host and path: userinfo, query string
// and fragment are dropped. Error texts of net/http quote the whole request
// URL ("Get \\"https://alice:pw@host/v1?api_key=SECRET\\": EOF"); after Redact
// they read "Get \\"https://host/v1\\": EOF". Text without "://" is returned
// as is, without allocating.
func Redact(msg string) string {
	if !strings.Contains(msg, "://") {
		return msg
	}
	var b strings.Builder
	b.Grow(len(msg))
	for {
		i := strings.Index(msg, "://")
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		// The scheme runs back from "://" over letters, digits, + - .
		start := i
		for start > 0 && isSchemeByte(msg[start-1]) {
			start--
		}
		end := i + 3
		for end < len(msg) && !isURLEnd(msg[end]) {
			end++
		}
		b.WriteString(msg[:start])
		b.WriteString(StripURL(msg[start:end]))
		msg = msg[end:]
	}
}

// StripURL returns raw without userinfo, query and fragment. Text that does
// not parse as a URL with a host is cut as text: what lies between "://"
// and the last '@' goes, and everything from the first '?' or '#'.
func StripURL(raw string) string {
	u, err := url.Parse(raw)
	// Without a scheme and a host the text is cut as text: "/://u:pw@h"
	// and "//://u:pw@h" parse as paths, and what looks like userinfo in
	// them must go too (so must "://u:pw@" inside a path).
	if err != nil || u.Scheme == "" || u.Host == "" || strings.Contains(u.Path, "://") {
		if i := strings.LastIndexByte(raw, '@'); i >= 0 {
			if j := strings.Index(raw, "://"); j >= 0 && j < i {
				raw = raw[:j+3] + raw[i+1:]
			}
		}
		if i := strings.IndexAny(raw, "?#"); i >= 0 {
			raw = raw[:i]
		}
		return raw
	}
	u.User = nil
	u.RawQuery = ""
	u.ForceQuery = false
	u.Fragment = ""
	u.RawFragment = ""
	return u.String()
}

func isSchemeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}

func isURLEnd(c byte) bool {
	return c == ' ' || c == '"' || c == '\'' || c == '`' || c == '<' || c == '>' || c == '\n' || c == '\t'
}
