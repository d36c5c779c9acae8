package transport_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/transport"
)

// Two SDKs built on lifeline in one process, on one MeterProvider: their
// Transports' Names tell their metrics apart (lifeline.client.name, in
// Prometheus lifeline_client_name). The HTTP duration is the semantic
// conventions' http.client.request.duration, in seconds.
func ExampleTransport_Name() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "ok")
	}))
	defer srv.Close()
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer mp.Shutdown(context.Background())

	for _, name := range []string{"rooms-api", "billing"} {
		tr := &transport.Transport{Name: name, MeterProvider: mp}
		resp, err := transport.NewClient(tr).Get(srv.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		tr.CloseIdleConnections()
	}

	var rm metricdata.ResourceMetrics
	_ = reader.Collect(context.Background(), &rm)
	var lines []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "http.client.request.duration" {
				continue
			}
			for _, p := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				name, _ := p.Attributes.Value("lifeline.client.name")
				status, _ := p.Attributes.Value("http.response.status_code")
				lines = append(lines, fmt.Sprintf("%s %s: %d request, status %d", m.Name, m.Unit, p.Count, status.AsInt64())+
					" from "+name.AsString())
			}
		}
	}
	slices.Sort(lines)
	for _, l := range lines {
		fmt.Println(l)
	}
	// Output:
	// http.client.request.duration s: 1 request, status 200 from billing
	// http.client.request.duration s: 1 request, status 200 from rooms-api
}
