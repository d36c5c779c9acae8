package transport_test

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// syncBuffer is a log sink safe for concurrent writers.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// lines returns the records written so far.
func (b *syncBuffer) lines() []string {
	s := strings.TrimSpace(b.String())
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}

// newTestLogger logs every level as JSON lines into b.
func newTestLogger(b *syncBuffer) *slog.Logger {
	return slog.New(slog.NewJSONHandler(b, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// TestLogFloodStaysSmall floods a Transport (and its Dialer, which logs
// too) with 2,000 failing requests from 50 goroutines — refused connects,
// 503 answers, first-byte timeouts — and checks that the log stays a
// handful of short records, one per kind, with no request detail.
func TestLogFloodStaysSmall(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			select {
			case <-r.Context().Done():
			case <-time.After(time.Second):
			}
			return
		}
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	refused := faultnet.RefusedAddr(t, "tcp")
	var buf syncBuffer
	logger := newTestLogger(&buf)
	tr := &transport.Transport{
		Logger:           logger,
		Dialer:           &dial.Dialer{Logger: logger},
		Proxy:            noProxy,
		FirstByteTimeout: 20 * time.Millisecond,
		Retry:            &retry.Policy{MaxAttempts: 2, InitialInterval: time.Millisecond, Budget: retry.NewBudget(1, 1e6)},
	}
	defer tr.CloseIdleConnections()
	urls := []string{"http://" + refused + "/x?token=s3cr3t", srv.URL + "/503?token=s3cr3t", srv.URL + "/slow?token=s3cr3t"}
	var wg sync.WaitGroup
	var failed atomic.Int64
	start := time.Now()
	for g := range 50 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 40 {
				u := urls[(g+i)%len(urls)]
				if strings.Contains(u, "/slow") && i%8 != 0 {
					u = urls[0] // timeouts cost time: fewer of them
				}
				req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, u, nil)
				req.Header.Set("Authorization", "Bearer s3cr3t")
				resp, err := tr.RoundTrip(req)
				if err != nil {
					failed.Add(1)
					continue
				}
				_, _ = io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	out := buf.String()
	lines := buf.lines()
	t.Logf("%d failed requests in %v → %d log records, %d bytes", failed.Load(), elapsed.Round(time.Millisecond), len(lines), len(out))
	require.Equal(t, int64(2000), failed.Load())
	// Each kind logs its first failure, then at most one record per 10s
	// window (the limiter's promise): a flood that a loaded machine
	// stretches past 10s may log a second window, never one per failure.
	// The kinds are a small fixed set: the four failures, and the
	// upstreams' fail fast (down, unavailable, ready again) that the
	// refused connects and first-byte timeouts set off.
	windows := 1 + int(elapsed/(10*time.Second)) + 1
	perKind := map[string]int{}
	for _, l := range lines {
		var rec struct{ Kind string }
		require.NoError(t, json.Unmarshal([]byte(l), &rec), l)
		perKind[rec.Kind]++
		assert.Less(t, len(l), 512, "a record stays short: %s", l)
	}
	for kind, n := range perKind {
		assert.LessOrEqual(t, n, windows, "kind %s logged %d times in %v", kind, n, elapsed)
	}
	assert.LessOrEqual(t, len(perKind), 10, "kinds: %v", perKind)
	for _, l := range lines {
		assert.NotContains(t, l, `"kind":"http.*`, "a kind is an error.type, never a Go type name")
	}
	for _, kind := range []string{`"kind":"http.connect_refused"`, `"kind":"http.503"`, `"kind":"http.first_byte_timeout"`, `"kind":"dial.connect_refused"`} {
		assert.Contains(t, out, kind)
	}
	assert.NotContains(t, out, secretMark)
	assert.NotContains(t, out, "/x", "no path in a record")
	for _, l := range lines {
		var rec map[string]any
		require.NoError(t, json.Unmarshal([]byte(l), &rec), l)
		assert.Less(t, len(l), 600)
	}
}
