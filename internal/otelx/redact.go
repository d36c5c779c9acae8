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
// "://" and without a quoted '?' or '#' is returned as is, without
// allocating.
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
//   - After a text's first '"', from every '?' or '#' on, everything goes
//     up to the next '"' (or the end of the text): url.Error quotes URLs
//     without "://" too (`parse "host:443/v1?key=..."`, `Get "/v1?key=..."`),
//     and a quote may open or close a string.
//   - Userinfo goes up to the last '@' of the authority (up to the first
//     '/'); if the authority does not parse (a '/', a space or a quote in
//     a password), up to the last '@' before the URL's query, its closing
//     quote or, unquoted, the end of the text: an '@' in prose after such
//     a URL may then take the host with it, never leave a password.
//
// Redact takes time linear in len(msg), whatever msg holds.
func Redact(msg string) string {
	if !strings.Contains(msg, "://") && !(strings.IndexByte(msg, '"') >= 0 && strings.ContainsAny(msg, "?#")) {
		return msg
	}
	return stripUserinfo(stripQuoted(stripQueries(msg)), false)
}

// stripQuoted removes, after the first '"' of msg, everything from each
// '?' or '#' to the next '"' (a backslash escaping the next byte), or to
// the end of msg (then marked): the queries of Go-quoted strings, without
// relying on pairing the quotes right (prose between two quoted strings
// may lose a tail). It runs after stripQueries, whose cuts it only adds
// to. Linear in len(msg).
func stripQuoted(msg string) string {
	first := strings.IndexByte(msg, '"')
	if first < 0 || !strings.ContainsAny(msg[first:], "?#") {
		return msg
	}
	var b strings.Builder
	b.Grow(len(msg))
	pos, cut := 0, -1 // cut: where the cut under way began
	for j := first + 1; j < len(msg); j++ {
		switch msg[j] {
		case '\\':
			j++
		case '"':
			if cut >= 0 {
				b.WriteString(msg[pos:cut])
				pos, cut = j, -1
			}
		case '?', '#':
			if cut < 0 {
				cut = j
			}
		}
	}
	if cut >= 0 {
		b.WriteString(msg[pos:cut])
		b.WriteByte(msg[cut])
		b.WriteString(Redacted)
		pos = len(msg)
	}
	b.WriteString(msg[pos:])
	return b.String()
}

// StripURL returns raw, taken whole as one URL, without userinfo, query
// and fragment: everything from the first '?' or '#' goes, and userinfo
// as in Redact.
func StripURL(raw string) string {
	if i := strings.IndexAny(raw, "?#"); i >= 0 {
		raw = raw[:i]
	}
	return stripUserinfo(raw, true)
}

// stripQueries removes from msg the query and fragment of every URL: from
// the first '?' or '#' after its "://" to its closing quote (a URL that
// follows a '"') or to the end of msg, then marked. Linear in len(msg).
func stripQueries(msg string) string {
	var b strings.Builder
	b.Grow(len(msg))
	t := tokens{s: msg}
	pos, scan := 0, 0
	clean := 0 // msg[a:clean) holds no '?' or '#' for any URL at a < clean met so far
	for {
		k := strings.Index(msg[scan:], "://")
		if k < 0 {
			break
		}
		i := scan + k
		a := i + 3
		end, closed, quoted := t.end(i)
		if !quoted {
			// Its query, if any, runs to the end: nothing after it survives.
			if q := strings.IndexAny(msg[max(a, clean):], "?#"); q >= 0 {
				q += max(a, clean)
				b.WriteString(msg[pos:q])
				b.WriteByte(msg[q])
				b.WriteString(Redacted)
				pos = len(msg)
			}
			break
		}
		if a < clean {
			scan = a // inside a quoted URL known to have no query
			continue
		}
		q := strings.IndexAny(msg[a:end], "?#")
		if q < 0 {
			clean, scan = end, a
			continue
		}
		q += a
		b.WriteString(msg[pos:q])
		if !closed {
			b.WriteByte(msg[q])
			b.WriteString(Redacted)
		}
		pos, scan = end, end
	}
	b.WriteString(msg[pos:])
	return b.String()
}

// stripUserinfo removes the userinfo of every URL in s (which has no
// queries left); whole: s is one URL, no quote in it ends it. Linear in
// len(s): the searches below are cached across the URLs that share them.
func stripUserinfo(s string, whole bool) string {
	var b strings.Builder
	b.Grow(len(s))
	t := tokens{s: s, whole: whole}
	nextQ, nextSlash := next{s: s, of: "?#"}, next{s: s, of: "/"}
	var atEnd, atPos int = -1, -1 // the last '@' before atEnd, once searched
	pos, scan := 0, 0
	for {
		k := strings.Index(s[scan:], "://")
		if k < 0 {
			break
		}
		i := scan + k
		a := i + 3
		end, _, _ := t.end(i)
		end = min(end, nextQ.at(a))
		authEnd := min(end, nextSlash.at(a))
		at := strings.LastIndexByte(s[a:authEnd], '@')
		if _, err := url.Parse("http://" + s[a:authEnd]); err != nil {
			// Unsure where the authority ends: remove more, up to the
			// last '@' before the URL's query or end.
			if atEnd != end {
				atEnd, atPos = end, strings.LastIndexByte(s[a:end], '@')
				if atPos >= 0 {
					atPos += a
				}
			}
			at = -1
			if atPos >= a {
				at = atPos - a
			}
		}
		if at < 0 {
			scan = a
			continue
		}
		b.WriteString(s[pos:a])
		pos = a + at + 1
		scan = pos
	}
	b.WriteString(s[pos:])
	return b.String()
}

// next finds the next byte of a set at or after a position, remembering
// the answer for the positions before it.
type next struct {
	s, of     string
	ok        bool
	from, hit int // s[from:hit) has none of of; hit is one of them, or len(s)
}

func (n *next) at(a int) int {
	if !n.ok || a < n.from || a > n.hit {
		n.ok, n.from, n.hit = true, a, len(n.s)
		if i := strings.IndexAny(n.s[a:], n.of); i >= 0 {
			n.hit = a + i
		}
	}
	return n.hit
}

// tokens finds where the URL whose "://" is at i ends for sure: at its
// closing quote (closed) when it follows a '"', read as Go quotes (a
// backslash escapes the next byte); otherwise (not quoted), or without a
// closing quote, at the end of s. A URL inside the quoted one scanned last
// ends where it does, without a second scan.
type tokens struct {
	s     string
	whole bool // s is one URL: not quoted

	from, end_ int
	closed     bool
}

func (t *tokens) end(i int) (end int, closed, quoted bool) {
	start := schemeStart(t.s, i)
	if t.whole || start == 0 || t.s[start-1] != '"' {
		return len(t.s), false, false
	}
	a := i + 3
	if t.from < a && a < t.end_ {
		return t.end_, t.closed, true
	}
	t.from, t.end_, t.closed = a, len(t.s), false
	for j := a; j < len(t.s); j++ {
		switch t.s[j] {
		case '\\':
			j++
		case '"':
			t.end_, t.closed = j, true
			return j, true, true
		}
	}
	return t.end_, false, true
}

// schemeStart is where the scheme before the "://" at i begins: it runs
// back over letters, digits, + - .
func schemeStart(s string, i int) int {
	for i > 0 && isSchemeByte(s[i-1]) {
		i--
	}
	return i
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
