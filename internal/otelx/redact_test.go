package otelx_test

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// closedAddr is a loopback address nothing listens on, reserved until the
// test ends (a port freed by closing a listener may be taken by another
// test's listener meanwhile).
func closedAddr(t *testing.T) string {
	t.Helper()
	return faultnet.RefusedAddr(t, "tcp")
}

type lockedBuf struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// TestNoQuerySecretInRealErrors (issue 20, break 18): the error texts of
// real http.Client calls whose query holds a quote, a space, an '@' or a
// backtick: inside retry.Do, neither a retry.attempt span (its
// exception.message) nor a log line (logx) keeps the planted secret.
func TestNoQuerySecretInRealErrors(t *testing.T) {
	addr := closedAddr(t)
	urls := map[string]string{
		"quote":     "http://" + addr + "/p?q='x'&api_key=SECRET",
		"at":        "https://host.invalid/%zz?email=a@b.com&token=SECRET",
		"space":     "http://" + addr + "/p?q=a b&token=SECRET",
		"backtick":  "http://" + addr + "/p?q=`<b>`&token=SECRET",
		"dquote":    "http://" + addr + `/p?q="x"&token=SECRET`,
		"userinfo":  "http://SECRET:pw@" + addr + "/p?q=1",
		"fragment":  "http://" + addr + "/p#SECRET",
		"at-in-key": "http://u@" + addr + "/p?SECRET@x",
		// url.Error quotes URLs without "://" too.
		"schemeless": "api.example.com:443/v1?key=SECRET",
		"relative":   "/v1?token=SECRET",
	}
	for name, u := range urls {
		t.Run(name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			var logs lockedBuf
			log := logx.For(slog.New(slog.NewTextHandler(&logs, nil)))
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			p := &retry.Policy{MaxAttempts: 1, TracerProvider: tp, MeterProvider: metricnoop.NewMeterProvider()}
			err := p.Do(t.Context(), func(ctx context.Context) error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
				if err != nil {
					return err
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				return errors.Join(resp.Body.Close(), errors.New("unexpected answer"))
			})
			if err == nil || !strings.Contains(err.Error(), "SECRET") {
				t.Fatalf("want an error quoting the URL, got %v", err)
			}
			log.Failure(t.Context(), "k", "lifeline: attempt failed", err)
			if strings.Contains(logs.String(), "SECRET") {
				t.Errorf("log line keeps the secret: %s", logs.String())
			}
			if !strings.Contains(logs.String(), "error=") {
				t.Errorf("no error in the log line: %s", logs.String())
			}
			spans := rec.Ended()
			if len(spans) == 0 {
				t.Fatal("no span")
			}
			var events int
			for _, s := range spans {
				texts := []string{s.Name(), s.Status().Description}
				for _, kv := range s.Attributes() {
					texts = append(texts, kv.Value.String())
				}
				for _, ev := range s.Events() {
					events++
					for _, kv := range ev.Attributes {
						texts = append(texts, kv.Value.String())
					}
				}
				for _, x := range texts {
					if strings.Contains(x, "SECRET") {
						t.Errorf("span %s keeps the secret: %q (error %q)", s.Name(), x, err)
					}
				}
			}
			if events == 0 {
				t.Error("no exception event: nothing was checked")
			}
		})
	}
}

// TestURLFullBareKey (issue 20, break 18): url.full on a real request
// through the Transport replaces a bare query key whole ("?TOKEN" is
// itself the secret) and every value, and keeps the keys of key=value.
func TestURLFullBareKey(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {}))
	defer srv.Close()
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	tr := &transport.Transport{TracerProvider: tp, MeterProvider: metricnoop.NewMeterProvider()}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/p?SECRETTOKEN&page=SECRET2&&x=", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := tr.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	var full string
	for _, s := range rec.Ended() {
		for _, kv := range s.Attributes() {
			if kv.Key == "url.full" {
				full = kv.Value.String()
			}
		}
	}
	if want := srv.URL + "/p?REDACTED&page=REDACTED&&x=REDACTED"; full != want {
		t.Fatalf("url.full = %q, want %q", full, want)
	}
}

func TestRedactedURL(t *testing.T) {
	for in, want := range map[string]string{
		"https://u:p@h/x?token=T&a=b#frag": "https://h/x?token=REDACTED&a=REDACTED",
		"http://h/?":                       "http://h/?",
		"http://h/?a":                      "http://h/?REDACTED",
		"http://h/?=v&&k==v2":              "http://h/?=REDACTED&&k=REDACTED",
		"http://h/p":                       "http://h/p",
	} {
		u, err := url.Parse(in)
		if err != nil {
			t.Fatal(err)
		}
		if got := otelx.RedactedURL(u); got != want {
			t.Errorf("RedactedURL(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestRedactLinear: Redact takes time linear in the text, whatever the
// text: long error texts (a body echoed in an error) full of "://", of
// quoted URLs inside quoted URLs, or of authorities that do not parse.
// Quadratic versions took 24s on 200KB; a linear one takes milliseconds,
// so the 5s bound for 400KB is slack for a loaded machine.
func TestRedactLinear(t *testing.T) {
	const n = 40000
	for name, s := range map[string]string{
		"schemes":       strings.Repeat("a://b ", n),
		"nested":        `"` + strings.Repeat(`a://b\" `, n) + `"`,
		"quoted":        strings.Repeat(`"a://b" `, n),
		"userinfo":      strings.Repeat("x://u@h/p ", n),
		"quoted-query":  strings.Repeat(`"a?b" `, n),
		"bad-authority": strings.Repeat("x://u:p w@h:bad ", n),
	} {
		start := time.Now()
		got := otelx.Redact(s)
		if el := time.Since(start); el > 5*time.Second {
			t.Errorf("%s: Redact of %d bytes took %v", name, len(s), el)
		}
		if strings.Contains(got, "u@") || strings.Contains(got, "p w@") {
			t.Errorf("%s: userinfo left", name)
		}
	}
}
