package pool_test

import (
	"context"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/pool"
)

func attr(kvs []attribute.KeyValue, key string) (attribute.Value, bool) {
	for _, kv := range kvs {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// A pool.acquire span only when an acquire waits or dials; a timeout is an
// error, a caller's cancel is not.
func TestAcquireSpans(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 1, Name: "db", TracerProvider: tp})
		require.NoError(t, err)
		defer p.Close()

		c, err := p.Acquire(t.Context()) // dials: span
		require.NoError(t, err)
		c.Release()
		c, err = p.Acquire(t.Context()) // idle: no span
		require.NoError(t, err)
		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err = p.Acquire(ctx) // waits, times out: error span
		cancel()
		require.Error(t, err)
		ctx, cancel = context.WithCancel(t.Context())
		go func() { time.Sleep(time.Second); cancel() }()
		_, err = p.Acquire(ctx) // waits, canceled: not an error
		require.Error(t, err)
		c.Release()

		spans := rec.Ended()
		require.Len(t, spans, 3)
		for _, s := range spans {
			assert.Equal(t, "pool.acquire", s.Name())
			v, _ := attr(s.Attributes(), "lifeline.pool.name")
			assert.Equal(t, "db", v.AsString())
		}
		dialed, _ := attr(spans[0].Attributes(), "lifeline.pool.dial_started")
		assert.True(t, dialed.AsBool())
		assert.Equal(t, codes.Unset, spans[0].Status().Code)
		outcome, _ := attr(spans[1].Attributes(), "lifeline.outcome")
		assert.Equal(t, "timeout", outcome.AsString())
		assert.Equal(t, codes.Error, spans[1].Status().Code)
		assert.Equal(t, time.Second, spans[1].EndTime().Sub(spans[1].StartTime()))
		outcome, _ = attr(spans[2].Attributes(), "lifeline.outcome")
		assert.Equal(t, "canceled", outcome.AsString())
		assert.Equal(t, codes.Unset, spans[2].Status().Code)
	})
}

func TestMetrics(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		defer mp.Shutdown(context.Background())
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 3, Name: "cache", MeterProvider: mp, DialRate: -1})
		require.NoError(t, err)

		a, _ := p.Acquire(t.Context())
		b, _ := p.Acquire(t.Context())
		c, _ := p.Acquire(t.Context())
		a.Release()
		b.MarkBroken()
		b.Release()
		p.Reset() // a: reset

		var rm metricdata.ResourceMetrics
		require.NoError(t, reader.Collect(t.Context(), &rm))
		got := map[string]int64{}
		var waitCount uint64
		for _, sm := range rm.ScopeMetrics {
			assert.Equal(t, "github.com/lifeline-go/lifeline/pool", sm.Scope.Name)
			for _, m := range sm.Metrics {
				switch data := m.Data.(type) {
				case metricdata.Gauge[int64]:
					for _, dp := range data.DataPoints {
						st, _ := dp.Attributes.Value("lifeline.pool.state")
						got[m.Name+"/"+st.AsString()] = dp.Value
					}
				case metricdata.Sum[int64]:
					for _, dp := range data.DataPoints {
						r, _ := dp.Attributes.Value("lifeline.pool.evict_reason")
						o, _ := dp.Attributes.Value("lifeline.outcome")
						got[m.Name+"/"+r.AsString()+o.AsString()] = dp.Value
						name, _ := dp.Attributes.Value("lifeline.pool.name")
						assert.Equal(t, "cache", name.AsString())
					}
				case metricdata.Histogram[float64]:
					for _, dp := range data.DataPoints {
						waitCount += dp.Count
					}
				}
			}
		}
		assert.Equal(t, int64(1), got["lifeline.pool.connections/in_use"])
		assert.Equal(t, int64(0), got["lifeline.pool.connections/idle"])
		assert.Equal(t, int64(0), got["lifeline.pool.waiting/"])
		assert.Equal(t, int64(1), got["lifeline.pool.evictions/broken"])
		assert.Equal(t, int64(1), got["lifeline.pool.evictions/reset"])
		assert.Equal(t, int64(3), got["lifeline.pool.dials/ok"])
		assert.Equal(t, uint64(3), waitCount, "three acquires waited for their dial")

		// Close unregisters the gauge callback.
		c.Release()
		require.NoError(t, p.Close())
		rm = metricdata.ResourceMetrics{}
		require.NoError(t, reader.Collect(t.Context(), &rm))
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if g, ok := m.Data.(metricdata.Gauge[int64]); ok {
					assert.Empty(t, g.DataPoints, "gauge %s still reported after Close", m.Name)
				}
			}
		}
	})
}
