package otelx_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// TestAdvNamesPastTheCache: a program with more named clients than the
// interned wrappers (per-tenant Transports named by tenant) still names
// every point and span right, two providers with the same name stay
// apart, and a name past the cache costs allocations, not memory that
// grows per call.
func TestAdvNamesPastTheCache(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	const n = 200
	for i := range n {
		name := fmt.Sprintf("tenant-%d\n\"x\"", i) // odd bytes pass as they are
		c, err := otelx.NamedMeterProvider(mp, name).Meter("adv").Int64Counter("adv.calls")
		require.NoError(t, err)
		c.Add(context.Background(), 1)
		_, span := otelx.NamedTracerProvider(tp, name).Tracer("adv").Start(context.Background(), "s")
		span.End()
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(context.Background(), &rm))
	seen := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				v, _ := p.Attributes.Value(otelx.KeyClientName)
				seen[v.AsString()] += p.Value
			}
		}
	}
	assert.Len(t, seen, n, "a point per name")
	for name, v := range seen {
		assert.EqualValues(t, 1, v, name)
	}
	spans := map[string]bool{}
	for _, s := range rec.Ended() {
		for _, a := range s.Attributes() {
			if a.Key == otelx.KeyClientName {
				spans[a.Value.AsString()] = true
			}
		}
	}
	assert.Len(t, spans, n, "a span per name")

	// Same name, another provider: its own points.
	reader2 := sdkmetric.NewManualReader()
	mp2 := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader2))
	c2, _ := otelx.NamedMeterProvider(mp2, "tenant-1\n\"x\"").Meter("adv").Int64Counter("adv.calls")
	c2.Add(context.Background(), 5)
	var rm2 metricdata.ResourceMetrics
	require.NoError(t, reader2.Collect(context.Background(), &rm2))
	require.Len(t, rm2.ScopeMetrics, 1)
	assert.EqualValues(t, 5, rm2.ScopeMetrics[0].Metrics[0].Data.(metricdata.Sum[int64]).DataPoints[0].Value)

	// A client named after the flood is interned still: the cache is
	// not full for good of the names that came first (the tenants that
	// are gone, a test binary's earlier tests).
	assert.Same(t, otelx.NamedMeterProvider(mp, "after-the-flood"), otelx.NamedMeterProvider(mp, "after-the-flood"))
	assert.Same(t, otelx.NamedTracerProvider(tp, "after-the-flood"), otelx.NamedTracerProvider(tp, "after-the-flood"))

	late := fmt.Sprintf("tenant-%d\n\"x\"", n-1)
	allocs := testing.AllocsPerRun(100, func() { _ = otelx.NamedMeterProvider(mp, late) })
	t.Logf("a name past the cache: %.0f allocations per wrapper", allocs)
}
