package transport_test

import (
	"context"
	"strconv"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// wsMetricSums collects r and returns, per metric name, the sum of its
// counters' points (or the count of its histograms' points).
func wsMetricSums(t *testing.T, r *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch data := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range data.DataPoints {
					out[m.Name] += dp.Value
				}
			case metricdata.Histogram[float64]:
				for _, dp := range data.DataPoints {
					out[m.Name] += int64(dp.Count)
				}
			default:
				out[m.Name] += 0
			}
		}
	}
	return out
}

// TestWebSocketProvidersReachDials: three of four addresses stall the TLS
// handshake; the race masks them. The masked failures, the dial metrics
// and the dial spans land on the WebSocketDialer's own providers (issue
// 20, break 12: they went to the otel global), and so do Retry's.
func TestWebSocketProvidersReachDials(t *testing.T) {
	srvTLS, cliTLS, err := faultnet.NewSelfSigned("ws.test")
	if err != nil {
		t.Fatal(err)
	}
	group := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", Fault: faultnet.StallTLS},
		faultnet.Config{Addr: "127.0.0.3:0", Fault: faultnet.StallTLS},
		faultnet.Config{Addr: "127.0.0.4:0", Fault: faultnet.StallTLS},
		faultnet.Config{Addr: "127.0.0.5:0", Handler: wsHandler(echo), TLS: srvTLS})
	reader := sdkmetric.NewManualReader()
	rec := tracetest.NewSpanRecorder()
	d := fastDialer(1)
	d.Dialer = &dial.Dialer{
		AttemptDelay:          50 * time.Millisecond,
		MaxAttemptsPerAddress: 1,
		Resolver: wsResolver{group[0].AddrPort().Addr(), group[1].AddrPort().Addr(),
			group[2].AddrPort().Addr(), group[3].AddrPort().Addr()},
	}
	d.TLSClientConfig = cliTLS
	d.MeterProvider = sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	d.TracerProvider = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c, _, err := d.Dial(t.Context(), "wss://ws.test:"+strconv.Itoa(group[0].Port())+"/", nil)
	if err != nil {
		t.Fatalf("Dial: %v", err)
	}
	roundTrip(t, c, "raced")
	c.Close()
	stalled := 0
	for _, g := range group[:3] {
		stalled += int(g.Stats().Faulted)
	}
	if stalled != 3 {
		t.Fatalf("%d hung handshakes, want 3", stalled)
	}
	sums := wsMetricSums(t, reader)
	for _, name := range []string{"lifeline.masked_failures", "lifeline.dial.duration", "lifeline.dial.attempts",
		"lifeline.retry.attempts", "lifeline.websocket.handshake.duration"} {
		if _, ok := sums[name]; !ok {
			t.Errorf("metric %s not on the caller's provider; have %v", name, sums)
		}
	}
	if n := sums["lifeline.masked_failures"]; n < 3 {
		t.Errorf("lifeline.masked_failures = %d on the caller's provider, want the 3 stalls", n)
	}
	spans := map[string]int{}
	for _, sp := range rec.Ended() {
		spans[sp.Name()]++
	}
	for _, name := range []string{"dial", "dial.tls", "retry.attempt", "websocket.handshake"} {
		if spans[name] == 0 {
			t.Errorf("no %s span on the caller's provider; have %v", name, spans)
		}
	}
	t.Logf("metrics: %v; spans: %v", sums, spans)
}
