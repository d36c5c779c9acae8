package otelx

import (
	"net/url"
	"strings"
)

// Redacted replaces the values of sensitive query parameters in URLs that
// are kept whole (url.full), and stands for the text Redact removed when
// a URL's query ran to the end of the text.
const Redacted = "REDACTED"

// Redact returns msg with the secrets of every URL in it (a "scheme://"
// run) removed: userinfo, query and fragment. Error texts of net/http
// quote the whole request URL ("Get \"https://alice:pw@host/v1?api_key=SECRET\": EOF");
// after Redact they read "Get \"https://host/v1\": EOF". Text without
// "://" is returned as is, without allocating.
//
// The rule does not depend on recognising where a URL ends, since a
// malformed URL (a space, a quote or an '@' in its query) ends nowhere
// one could recognise:
//
//   - From a URL's first '?' or '#' on, everything goes: up to the
//     closing quote when the URL follows a '"' (Go's %q quoting, as in
//     url.Error, where a '"' inside is escaped), and otherwise up to the
//     end of the text, which then ends in "?REDACTED" so that a reader
//     knows the rest was removed.
//   - Userinfo goes up to the last '@' of the authority (up to the first
//     '/'); if the URL does not parse (taken up to its query, its closing
//     quote or, unquoted, the end of the text), up to the last '@' before
//     that end: an '@' in prose after an unquoted URL may then take the
//     host with it, never leave a password.
func Redact(msg string) string {
	if !strings.Contains(msg, "://") {
		return msg
	}
	return stripUserinfo(stripQueries(msg))
}

// StripURL returns raw, taken whole as one URL, without userinfo, query
// and fragment: everything from the first '?' or '#' goes, and userinfo
// as in Redact.
func StripURL(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	return stripUserinfo(raw)
}

// stripQueries removes from msg the query and fragment of every URL: from
// the first '?' or '#' after its "://" to its closing quote (a URL that
// follows a '"') or to the end of msg.
func stripQueries(msg string) string {
	var b strings.Builder
	b.Grow(len(msg))
	for {
		i := strings.Index(msg, "://")
		if i < 0 {
			b.WriteString(msg)
			return b.String()
		}
		a := i + 3
		end, closed := tokenEnd(msg, i)
		q := strings.IndexAny(msg[a:end], "?#")
		if q < 0 {
			b.WriteString(msg[:a])
			msg = msg[a:]
			continue
		}
		q += a
		b.WriteString(msg[:q])
		if !closed {
			b.WriteByte(msg[q])
			b.WriteString(Redacted)
		}
		msg = msg[end:]
	}
}

// stripUserinfo removes the userinfo of every URL in s (which has no
// queries left).
func stripUserinfo(s string) string {
	var b strings.Builder
	b.Grow(len(s))
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		a := i + 3
		end, _ := tokenEnd(s, i)
		if q := strings.IndexAny(s[a:end], "?#"); q >= 0 {
			end = a + q
		}
		region := s[a:end]
		auth := region
		if j := strings.IndexByte(region, '/'); j >= 0 {
			auth = region[:j]
		}
		at := strings.LastIndexByte(auth, '@')
		if !parses(s[schemeStart(s, i):end]) {
			// Unsure where the authority ends: remove more.
			at = strings.LastIndexByte(region, '@')
		}
		b.WriteString(s[:a])
		s = s[a+at+1:]
	}
}

// parses reports whether u parses as a URL with a scheme and a host.
func parses(u string) bool {
	p, err := url.Parse(u)
	return err == nil && p.Scheme != "" && p.Host != ""
}

// schemeStart is where the scheme before the "://" at i begins: it runs
// back over letters, digits, + - .
func schemeStart(s string, i int) int {
	for i > 0 && isSchemeByte(s[i-1]) {
		i--
	}
	return i
}

// tokenEnd is where the URL whose "://" is at i ends for sure: at its
// closing quote (closed) when it follows a '"', read as Go quotes (a
// backslash escapes the next byte); otherwise, or without a closing
// quote, at the end of s.
func tokenEnd(s string, i int) (end int, closed bool) {
	start := schemeStart(s, i)
	if start == 0 || s[start-1] != '"' {
		return len(s), false
	}
	for j := i + 3; j < len(s); j++ {
		switch s[j] {
		case '\\':
			j++
		case '"':
			return j, true
		}
	}
	return len(s), false
}

func isSchemeByte(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '+' || c == '-' || c == '.'
}

// RedactedURL is u as url.full shows it: without userinfo and fragment,
// with the value of every query parameter replaced by REDACTED (keys tell
// what was asked, values may be secrets: api_key=..., signatures,
// tokens). A part without '=' is replaced whole: a bare key ("?TOKEN") is
// itself the secret.
func RedactedURL(u *url.URL) string {
	r := *u
	r.User = nil
	r.Fragment, r.RawFragment = "", ""
	if r.RawQuery != "" {
		parts := strings.Split(r.RawQuery, "&")
		for i, p := range parts {
			if k, _, ok := strings.Cut(p, "="); ok {
				parts[i] = k + "=" + Redacted
			} else if p != "" {
				parts[i] = Redacted
			}
		}
		r.RawQuery = strings.Join(parts, "&")
	}
	return r.String()
}
