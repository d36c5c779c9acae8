package dial_test

import (
	"strconv"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// TestDialerNameOnEverything: a Dialer's Name is on every span and metric
// point of its dials, the race's masked failure included; a Dialer
// without one adds no such attribute.
func TestDialerNameOnEverything(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{Addr: "127.0.0.2:0"})
	port := strconv.Itoa(srv.Port())
	// 127.0.0.3 refuses on that port: the race masks it.
	addr := hostPort(srv.Port())
	for _, name := range []string{"orders-db", ""} {
		t.Run("name="+name, func(t *testing.T) {
			tel := newTelemetry(t)
			d := dial.Dialer{Name: name, Resolver: resolverFor("127.0.0.3:"+port, "127.0.0.2:"+port),
				TracerProvider: tel.tp, MeterProvider: tel.mp}
			conn, err := d.DialContext(t.Context(), "tcp", addr)
			require.NoError(t, err)
			require.NoError(t, conn.Close())
			require.NotEmpty(t, tel.sumPoints(t, "lifeline.masked_failures"), "the refused address was masked")

			var rm metricdata.ResourceMetrics
			require.NoError(t, tel.reader.Collect(t.Context(), &rm))
			points := 0
			check := func(metric string, set attribute.Set) {
				points++
				v, ok := set.Value("lifeline.client.name")
				if name == "" {
					assert.False(t, ok, metric)
					return
				}
				assert.Equal(t, name, v.AsString(), metric)
			}
			for _, sm := range rm.ScopeMetrics {
				for _, m := range sm.Metrics {
					switch data := m.Data.(type) {
					case metricdata.Sum[int64]:
						for _, p := range data.DataPoints {
							check(m.Name, p.Attributes)
						}
					case metricdata.Histogram[float64]:
						for _, p := range data.DataPoints {
							check(m.Name, p.Attributes)
						}
					default:
						t.Fatalf("%s: %T not checked", m.Name, m.Data)
					}
				}
			}
			assert.Greater(t, points, 3)
			spans := tel.spans.Ended()
			require.NotEmpty(t, spans)
			for _, s := range spans {
				v, ok := attr(s, "lifeline.client.name")
				if name == "" {
					assert.False(t, ok, s.Name())
					continue
				}
				assert.Equal(t, name, v.AsString(), s.Name())
			}
		})
	}
}
