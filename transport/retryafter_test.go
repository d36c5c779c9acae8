package transport_test

import (
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/lifeline-go/lifeline/transport"
)

// TestRetryAfterOfAnswer: delay-seconds, HTTP-dates against the answer's Date (or
// now), and the values that are no advice.
func TestRetryAfterOfAnswer(t *testing.T) {
	date := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	httpDate := func(t time.Time) string { return t.Format(http.TimeFormat) }
	const year = 365 * 24 * time.Hour
	for _, tc := range []struct {
		name       string
		retryAfter []string // nil: no field
		date       string
		want       time.Duration
		ok         bool
	}{
		{name: "none"},
		{name: "seconds", retryAfter: []string{"120"}, want: 2 * time.Minute, ok: true},
		{name: "zero", retryAfter: []string{"0"}, want: 0, ok: true},
		{name: "spaces", retryAfter: []string{" 7 "}, want: 7 * time.Second, ok: true},
		{name: "negative", retryAfter: []string{"-1"}},
		{name: "fraction", retryAfter: []string{"1.5"}},
		{name: "garbage", retryAfter: []string{"soon"}},
		{name: "empty", retryAfter: []string{""}},
		{name: "huge seconds", retryAfter: []string{"99999999999999999999999"}, want: year, ok: true},
		{name: "more than a year", retryAfter: []string{"40000000"}, want: year, ok: true},
		{name: "date against Date", retryAfter: []string{httpDate(date.Add(90 * time.Second))}, date: httpDate(date),
			want: 90 * time.Second, ok: true},
		{name: "date in the past", retryAfter: []string{httpDate(date.Add(-time.Minute))}, date: httpDate(date), want: 0, ok: true},
		{name: "RFC 850 date", retryAfter: []string{date.Add(time.Hour).Format(time.RFC850)}, date: httpDate(date),
			want: time.Hour, ok: true},
		{name: "ANSI C date", retryAfter: []string{date.Add(time.Hour).Format(time.ANSIC)}, date: httpDate(date),
			want: time.Hour, ok: true},
		{name: "bad Date: against now", retryAfter: []string{httpDate(date)}, date: "yesterday", want: 0, ok: true},
		{name: "malformed date", retryAfter: []string{"Fri, 31 Feb 2026 25:00:00 GMT"}, date: httpDate(date)},
		{name: "first value counts", retryAfter: []string{"3", "9"}, want: 3 * time.Second, ok: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			resp := &http.Response{Header: http.Header{}}
			if tc.retryAfter != nil {
				resp.Header["Retry-After"] = tc.retryAfter
			}
			if tc.date != "" {
				resp.Header.Set("Date", tc.date)
			}
			got, ok := transport.RetryAfter(resp)
			assert.Equal(t, tc.ok, ok)
			assert.Equal(t, tc.want, got)
		})
	}
	_, ok := transport.RetryAfter(nil)
	assert.False(t, ok)

	// Without a Date, an HTTP-date is taken against now.
	resp := &http.Response{Header: http.Header{"Retry-After": {httpDate(time.Now().Add(time.Hour))}}}
	got, ok := transport.RetryAfter(resp)
	assert.True(t, ok)
	assert.InDelta(t, float64(time.Hour), float64(got), float64(2*time.Second))
}

// FuzzRetryAfterOfAnswer: any field values give a wait in [0, a year] or none,
// and never a panic.
func FuzzRetryAfterOfAnswer(f *testing.F) {
	for _, s := range [][2]string{
		{"120", ""}, {"-1", ""}, {"0", ""}, {"99999999999999999999", ""}, {"1e3", ""}, {"+5", ""},
		{"Fri, 02 Jan 2026 03:05:35 GMT", "Fri, 02 Jan 2026 03:04:05 GMT"},
		{"Friday, 02-Jan-26 03:05:35 GMT", "garbage"}, {"Fri Jan  2 03:05:35 2026", ""},
		{"Mon, 01 Jan 0001 00:00:00 GMT", "Fri, 31 Dec 9999 23:59:59 GMT"},
	} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, retryAfter, date string) {
		resp := &http.Response{Header: http.Header{"Retry-After": {retryAfter}}}
		if date != "" {
			resp.Header.Set("Date", date)
		}
		d, ok := transport.RetryAfter(resp)
		if !ok && d != 0 {
			t.Fatalf("no advice with a wait: %v", d)
		}
		if d < 0 || d > 365*24*time.Hour {
			t.Fatalf("wait %v out of [0, a year]", d)
		}
	})
}
