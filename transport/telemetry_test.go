package transport_test

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

type rig struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newRig(t *testing.T) *rig {
	r := &rig{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	r.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() {
		_ = r.tp.Shutdown(context.Background())
		_ = r.mp.Shutdown(context.Background())
	})
	return r
}

// sums returns the data points of an int64 sum, with their attribute sets.
func (r *rig) sums(t *testing.T, name string) []metricdata.DataPoint[int64] {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	var out []metricdata.DataPoint[int64]
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				out = append(out, m.Data.(metricdata.Sum[int64]).DataPoints...)
			}
		}
	}
	return out
}

// httpSpans are the ended spans of HTTP attempts (the dial's are there too).
func (r *rig) httpSpans() []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		if !strings.HasPrefix(s.Name(), "dial") {
			out = append(out, s)
		}
	}
	return out
}

func val(set attribute.Set, key string) string {
	v, _ := set.Value(attribute.Key(key))
	return v.String()
}

func spanAttr(s sdktrace.ReadOnlySpan, key string) string {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value.String()
		}
	}
	return ""
}

// TestSpansPerAttempt: one client span per attempt, named by the method,
// a child of the caller's span, attributed per the HTTP conventions; the
// resend has http.request.resend_count; nothing secret reaches a span; the
// failure the retry masked is counted with masked_by=retry.
func TestSpansPerAttempt(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	rg := newRig(t)
	tr := &transport.Transport{TracerProvider: rg.tp, MeterProvider: rg.mp,
		Retry: &retry.Policy{InitialInterval: time.Millisecond}}
	defer tr.CloseIdleConnections()
	ctx, parent := rg.tp.Tracer("test").Start(t.Context(), "caller")
	u := strings.Replace(srv.URL, "http://", "http://alice:pw@", 1) + "/v1/items?api_key=SECRET&page=2#frag"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	require.NoError(t, err)
	req.Header.Set("Authorization", "Bearer SECRET")
	req.Header.Set("Cookie", "session=SECRET")
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	_, _ = io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	parent.End()

	var attempts []sdktrace.ReadOnlySpan
	for _, s := range rg.spans.Ended() {
		for _, kv := range s.Attributes() {
			assert.NotContains(t, kv.Value.String(), "SECRET", "span %s attribute %s", s.Name(), kv.Key)
			assert.NotContains(t, kv.Value.String(), "alice")
		}
		assert.NotContains(t, s.Status().Description, "SECRET")
		if s.Name() == "GET" {
			attempts = append(attempts, s)
		}
	}
	require.Len(t, attempts, 2, "one span per attempt")
	for i, s := range attempts {
		assert.Equal(t, parent.SpanContext().SpanID(), s.Parent().SpanID(), "a child of the caller's span")
		assert.Equal(t, "GET", spanAttr(s, "http.request.method"))
		assert.Equal(t, "127.0.0.1", spanAttr(s, "server.address"))
		assert.NotEmpty(t, spanAttr(s, "server.port"))
		assert.Equal(t, "127.0.0.1", spanAttr(s, "network.peer.address"))
		full := spanAttr(s, "url.full")
		assert.Contains(t, full, "/v1/items?api_key=REDACTED&page=REDACTED")
		assert.NotContains(t, full, "#frag")
		if i == 0 {
			assert.Equal(t, "503", spanAttr(s, "http.response.status_code"))
			assert.Equal(t, "503", spanAttr(s, "error.type"))
			assert.Empty(t, spanAttr(s, "http.request.resend_count"))
		} else {
			assert.Equal(t, "200", spanAttr(s, "http.response.status_code"))
			assert.Equal(t, "1", spanAttr(s, "http.request.resend_count"))
			assert.Empty(t, spanAttr(s, "error.type"))
			assert.Equal(t, "Unset", s.Status().Code.String())
		}
	}
	masked := rg.sums(t, "lifeline.masked_failures")
	require.Len(t, masked, 1)
	assert.EqualValues(t, 1, masked[0].Value)
	assert.Equal(t, "retry", val(masked[0].Attributes, "lifeline.masked_by"))
	assert.Equal(t, "503", val(masked[0].Attributes, "error.type"))
	assert.Equal(t, "response", val(masked[0].Attributes, "lifeline.phase"))
	assert.Equal(t, "127.0.0.1", val(masked[0].Attributes, "network.peer.address"), "a zero-config Transport names the peer its own Health remembers")
}

// TestSpanEndsWithBody: the attempt's span ends when the body is read to
// EOF or closed, not when RoundTrip returns.
func TestSpanEndsWithBody(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	rg := newRig(t)
	tr := &transport.Transport{TracerProvider: rg.tp, MeterProvider: rg.mp}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err)
	assert.Empty(t, rg.httpSpans(), "open while the body is unread")
	_, _ = io.ReadAll(resp.Body)
	assert.Len(t, rg.httpSpans(), 1, "ended at EOF")
	require.NoError(t, resp.Body.Close())
	assert.Len(t, rg.httpSpans(), 1, "once")
}

// TestHedgeFixed: the first try gets no headers; after HedgeDelay a second
// try answers. The hedge wins, the loser is cancelled (not an error), the
// winner's body is whole even though it streams after RoundTrip returned,
// and the hedge is counted (fired, won, masked_by=hedge).
func TestHedgeFixed(t *testing.T) {
	var hits atomic.Int32
	loserGone := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hits.Add(1) == 1 {
			<-r.Context().Done() // the hung try: cancelled when the hedge wins
			close(loserGone)
			return
		}
		w.Header().Set("Content-Length", "300")
		_, _ = io.WriteString(w, strings.Repeat("a", 100))
		http.NewResponseController(w).Flush()
		time.Sleep(100 * time.Millisecond) // the rest after RoundTrip returned
		_, _ = io.WriteString(w, strings.Repeat("b", 200))
	}))
	defer srv.Close()
	rg := newRig(t)
	tr := &transport.Transport{HedgeDelay: 100 * time.Millisecond, TracerProvider: rg.tp, MeterProvider: rg.mp}
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err)
	assert.Less(t, time.Since(start), 2*time.Second, "about HedgeDelay, not the hang")
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err, "the winner's context lives until its body is read")
	resp.Body.Close()
	assert.Len(t, b, 300)
	select {
	case <-loserGone:
	case <-time.After(5 * time.Second):
		t.Fatal("the losing try was not cancelled")
	}
	var lost, won int
	for _, s := range rg.httpSpans() {
		switch spanAttr(s, "lifeline.outcome") {
		case "lost":
			lost++
			assert.Equal(t, "Unset", s.Status().Code.String(), "a hedge loser is not an error")
		case "ok":
			won++
		}
	}
	assert.Equal(t, 1, lost)
	assert.Equal(t, 1, won)
	hedges := rg.hedges(t)
	assert.Equal(t, map[string]int64{"fired": 1, "won": 1}, hedges)
	masked := rg.sums(t, "lifeline.masked_failures")
	require.Len(t, masked, 1)
	assert.Equal(t, "hedge", val(masked[0].Attributes, "lifeline.masked_by"))
	assert.Equal(t, "first_byte_overtaken", val(masked[0].Attributes, "error.type"))
}

// TestHedgeBudget: with an exhausted budget no hedge starts; the try in
// flight is not touched.
func TestHedgeBudget(t *testing.T) {
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		time.Sleep(150 * time.Millisecond)
		_, _ = io.WriteString(w, "slow")
	}))
	defer srv.Close()
	budget := retry.NewBudget(0, 0)
	for budget.Withdraw() {
	}
	rg := newRig(t)
	tr := &transport.Transport{HedgeDelay: 20 * time.Millisecond, Retry: &retry.Policy{Budget: budget}, MeterProvider: rg.mp}
	defer tr.CloseIdleConnections()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err)
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	assert.Equal(t, "slow", string(b))
	assert.EqualValues(t, 1, hits.Load(), "no hedge without budget")
	assert.Empty(t, rg.sums(t, "lifeline.http.hedges"))
}

// TestHedgeAdaptive: after a warm-up of fast answers, the adaptive delay
// follows the host's 95th percentile (clamped at 10ms), not the ceiling
// (HedgeDelay; 10s here, far above what a loaded machine adds to the
// answers, where the default 1s is not): a hung try is overtaken quickly.
func TestHedgeAdaptive(t *testing.T) {
	var hang atomic.Bool
	var hung atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if hang.Load() && hung.Add(1) == 1 {
			<-r.Context().Done()
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	tr := &transport.Transport{HedgeQuantile: 0.95, HedgeDelay: 10 * time.Second}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)
	for range 50 {
		resp, err := client.Get(srv.URL)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	hang.Store(true)
	start := time.Now()
	resp, err := client.Get(srv.URL)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Less(t, time.Since(start), 3*time.Second, "hedged after about the p95 of ~1ms answers (10ms floor), not the 10s ceiling")
}
