package transport_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// gauge returns the points of an int64 gauge by server.address.
func (r *rig) gauge(t *testing.T, name string) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				for _, p := range m.Data.(metricdata.Gauge[int64]).DataPoints {
					out[val(p.Attributes, "server.address")] = p.Value
				}
			}
		}
	}
	return out
}

// logSink is a log sink for concurrent writers.
type logSink struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *logSink) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *logSink) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// waitLog waits (10s at most) for a record holding s: the records of an
// upstream's changes are written on the Transport's log goroutine.
func waitLog(t *testing.T, b interface{ String() string }, s string) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !strings.Contains(b.String(), s); {
		if time.Now().After(deadline) {
			t.Fatalf("no log record %q after 10s:\n%s", s, b.String())
		}
		time.Sleep(time.Millisecond)
	}
}

// TestFailFastTelemetry: a call not attempted gets one client span with
// error.type and lifeline.not_attempted (and no query), it is counted on
// lifeline.throttled by reason and bounded server.address, the upstream's
// state is the gauge lifeline.upstream.down, probes are counted by
// outcome, and each change of state is one log line, not one per call.
func TestFailFastTelemetry(t *testing.T) {
	r := newRig(t)
	var logs logSink
	live := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(live.Close)
	refused := faultnet.RefusedAddr(t, "tcp4")
	var back atomic.Bool
	var nd net.Dialer
	tr := &transport.Transport{TracerProvider: r.tp, MeterProvider: r.mp,
		Logger: slog.New(slog.NewTextHandler(&logs, nil)),
		Dialer: &dial.Dialer{DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if back.Load() {
				return nd.DialContext(ctx, network, live.Listener.Addr().String())
			}
			return nd.DialContext(ctx, network, refused)
		}}}
	defer tr.CloseIdleConnections()
	c := transport.NewClient(tr)
	url := "http://" + refused + "/q?token=s3cret"
	get := func() error {
		resp, err := c.Get(url)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	for i := 0; ; i++ {
		if errors.Is(get(), transport.ErrUnavailable) {
			break
		}
		if i > 10 {
			t.Fatal("never failed fast")
		}
	}
	for range 20 {
		if err := get(); !errors.Is(err, transport.ErrUnavailable) {
			t.Fatalf("while down: %v", err)
		}
	}
	var notAttempted int
	for _, s := range r.httpSpans() {
		if spanAttr(s, "lifeline.not_attempted") == "unavailable" {
			notAttempted++
			if spanAttr(s, "error.type") != "unavailable" || strings.Contains(spanAttr(s, "url.full"), "s3cret") {
				t.Fatalf("not-attempted span: error.type %q url.full %q", spanAttr(s, "error.type"), spanAttr(s, "url.full"))
			}
		}
	}
	// (The call that first failed fast may have been attempted: its
	// retry found the upstream down.)
	if notAttempted != 20 && notAttempted != 21 {
		t.Fatalf("%d not-attempted spans, want one per call failed fast (20 or 21)", notAttempted)
	}
	var throttled int64
	for _, p := range r.sums(t, "lifeline.throttled") {
		if val(p.Attributes, "lifeline.reason") != "unavailable" || val(p.Attributes, "server.address") != "127.0.0.1" {
			t.Fatalf("lifeline.throttled point %v", p.Attributes)
		}
		throttled += p.Value
	}
	if throttled != int64(notAttempted) {
		t.Fatalf("lifeline.throttled %d, want %d", throttled, notAttempted)
	}
	if g := r.gauge(t, "lifeline.upstream.down"); g["127.0.0.1"] != 1 {
		t.Fatalf("lifeline.upstream.down %v, want 1 for the upstream", g)
	}
	waitLog(t, &logs, "upstream down") // written on the Transport's log goroutine
	if n := strings.Count(logs.String(), "upstream down"); n != 1 {
		t.Fatalf("%d log lines for the outage, want 1:\n%s", n, logs.String())
	}
	if strings.Contains(logs.String(), "s3cret") {
		t.Fatal("the query in a log line")
	}
	// The Transport's probe fails (the calls fail at once meanwhile: none
	// is a probe); then the upstream is back and the next probe re-opens
	// it.
	time.Sleep(1300 * time.Millisecond)
	err := get()
	var de *dial.Error
	if !errors.Is(err, transport.ErrUnavailable) || !errors.As(err, &de) {
		t.Fatalf("after a probe failed: %v, want failed at once, the dial's failure inside", err)
	}
	back.Store(true)
	time.Sleep(1300 * time.Millisecond)
	if err := get(); err != nil {
		t.Fatalf("probe after the upstream came back: %v", err)
	}
	probes := map[string]int64{}
	for _, p := range r.sums(t, "lifeline.upstream.probes") {
		probes[val(p.Attributes, "lifeline.outcome")] += p.Value
	}
	if probes["ok"] != 1 || probes["failed"] != 1 {
		t.Fatalf("probes %v, want one failed and one ok", probes)
	}
	if g := r.gauge(t, "lifeline.upstream.down"); g["127.0.0.1"] != 0 {
		t.Fatalf("lifeline.upstream.down %v after recovery, want 0", g)
	}
	waitLog(t, &logs, "upstream ready again")
	if !strings.Contains(logs.String(), "upstream ready again") {
		t.Fatalf("no log line for the recovery:\n%s", logs.String())
	}
}
