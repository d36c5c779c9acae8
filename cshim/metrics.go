package main

import (
	"context"
	"encoding/json"
	"runtime"
	"runtime/metrics"
	"sort"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

var noopMeter metric.MeterProvider = metricnoop.NewMeterProvider()

// liveAllocations reports the library allocations handed to the host and
// not yet freed (counted in shim.c); nil outside the C build.
var liveAllocations func() int64

type snapshot struct {
	Client  clientStats  `json:"client"`
	Health  []peerJSON   `json:"health"`
	Metrics []metricJSON `json:"metrics"`
	Process processJSON  `json:"process"`
}

type clientStats struct {
	Frozen          bool             `json:"frozen"`
	Closed          bool             `json:"closed"`
	RequestsStarted int64            `json:"requests_started"`
	RequestsOK      int64            `json:"requests_ok"`
	RequestsFailed  int64            `json:"requests_failed"`
	DialsStarted    int64            `json:"dials_started"`
	DialsOK         int64            `json:"dials_ok"`
	DialsFailed     int64            `json:"dials_failed"`
	Canceled        int64            `json:"canceled"`
	Timeouts        int64            `json:"timeouts"`
	InFlight        int64            `json:"in_flight"`
	TLSRelays       int              `json:"tls_relays"`
	ResponseBytes   int64            `json:"response_bytes"`
	FailuresByPhase map[string]int64 `json:"failures_by_phase"`
	FailuresByType  map[string]int64 `json:"failures_by_type"`
}

type peerJSON struct {
	Peer            string  `json:"peer"`
	Successes       uint64  `json:"successes"`
	Refusals        uint64  `json:"refusals"`
	Resets          uint64  `json:"resets"`
	ConnectTimeouts uint64  `json:"connect_timeouts"`
	ConnectStalls   uint64  `json:"connect_stalls"`
	TLSStalls       uint64  `json:"tls_stalls"`
	TLSFailures     uint64  `json:"tls_failures"`
	FirstByteStalls uint64  `json:"first_byte_stalls"`
	OtherFailures   uint64  `json:"other_failures"`
	LastLatencyMS   float64 `json:"last_latency_ms"`
	LatencyEWMAMS   float64 `json:"latency_ewma_ms"`
	Score           float64 `json:"score"`
	Demoted         bool    `json:"demoted"`
	LastEvent       string  `json:"last_event"`
}

type metricJSON struct {
	Name   string      `json:"name"`
	Unit   string      `json:"unit,omitempty"`
	Kind   string      `json:"kind"` // "sum", "gauge", "histogram"
	Points []pointJSON `json:"points"`
}

type pointJSON struct {
	Attributes map[string]string `json:"attributes"`
	Value      *float64          `json:"value,omitempty"`
	Count      *uint64           `json:"count,omitempty"`
	Sum        *float64          `json:"sum,omitempty"`
}

type processJSON struct {
	Goroutines      int    `json:"goroutines"`
	GoHeapBytes     uint64 `json:"go_heap_bytes"`
	LiveAllocations int64  `json:"live_allocations"`
}

func (c *client) snapshot() ([]byte, *Error) {
	s := snapshot{Health: []peerJSON{}, Metrics: []metricJSON{}}
	c.mu.Lock()
	b := c.built
	s.Client.Frozen = b != nil
	s.Client.Closed = c.closed
	s.Client.TLSRelays = len(c.relays)
	c.mu.Unlock()
	st := &c.stats
	s.Client.RequestsStarted = st.requestsStarted.Load()
	s.Client.RequestsOK = st.requestsOK.Load()
	s.Client.RequestsFailed = st.requestsFailed.Load()
	s.Client.DialsStarted = st.dialsStarted.Load()
	s.Client.DialsOK = st.dialsOK.Load()
	s.Client.DialsFailed = st.dialsFailed.Load()
	s.Client.Canceled = st.canceled.Load()
	s.Client.Timeouts = st.timeouts.Load()
	s.Client.InFlight = st.inFlight.Load()
	s.Client.ResponseBytes = st.responseBytes.Load()
	st.mu.Lock()
	s.Client.FailuresByPhase = clone(st.byPhase)
	s.Client.FailuresByType = clone(st.byType)
	st.mu.Unlock()

	if b != nil {
		for _, p := range b.health.Snapshot() {
			s.Health = append(s.Health, peerJSON{
				Peer: p.Peer.String(), Successes: p.Successes, Refusals: p.Refusals, Resets: p.Resets,
				ConnectTimeouts: p.ConnectTimeouts, ConnectStalls: p.ConnectStalls, TLSStalls: p.TLSStalls,
				TLSFailures: p.TLSFailures, FirstByteStalls: p.FirstByteStalls, OtherFailures: p.OtherFailures,
				LastLatencyMS: float64(p.LastLatency.Microseconds()) / 1000,
				LatencyEWMAMS: float64(p.LatencyEWMA.Microseconds()) / 1000,
				Score:         p.Score, Demoted: p.Demoted, LastEvent: p.LastEvent.String(),
			})
		}
	}

	var rm metricdata.ResourceMetrics
	if err := c.reader.Collect(context.Background(), &rm); err == nil {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if mj, ok := metricOf(m); ok {
					s.Metrics = append(s.Metrics, mj)
				}
			}
		}
	}
	sort.SliceStable(s.Metrics, func(i, j int) bool { return s.Metrics[i].Name < s.Metrics[j].Name })

	s.Process.Goroutines = runtime.NumGoroutine()
	sample := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}}
	metrics.Read(sample)
	if sample[0].Value.Kind() == metrics.KindUint64 {
		s.Process.GoHeapBytes = sample[0].Value.Uint64()
	}
	if liveAllocations != nil {
		s.Process.LiveAllocations = liveAllocations()
	}
	out, err := json.Marshal(s)
	if err != nil {
		return nil, &Error{Status: statusInternal, Type: "internal", Msg: "lifeline: encoding metrics: " + err.Error()}
	}
	return out, nil
}

func clone(m map[string]int64) map[string]int64 {
	out := make(map[string]int64, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func attrs(set attribute.Set) map[string]string {
	out := map[string]string{}
	for _, kv := range set.ToSlice() {
		out[string(kv.Key)] = kv.Value.String()
	}
	return out
}

func f64(v float64) *float64 { return &v }

// valuePoints appends the points of a sum or a gauge.
func valuePoints[N int64 | float64](out []pointJSON, dps []metricdata.DataPoint[N]) []pointJSON {
	for _, p := range dps {
		out = append(out, pointJSON{Attributes: attrs(p.Attributes), Value: f64(float64(p.Value))})
	}
	return out
}

func metricOf(m metricdata.Metrics) (metricJSON, bool) {
	mj := metricJSON{Name: m.Name, Unit: m.Unit, Points: []pointJSON{}}
	switch d := m.Data.(type) {
	case metricdata.Sum[int64]:
		mj.Kind, mj.Points = "sum", valuePoints(mj.Points, d.DataPoints)
	case metricdata.Sum[float64]:
		mj.Kind, mj.Points = "sum", valuePoints(mj.Points, d.DataPoints)
	case metricdata.Gauge[int64]:
		mj.Kind, mj.Points = "gauge", valuePoints(mj.Points, d.DataPoints)
	case metricdata.Gauge[float64]:
		mj.Kind, mj.Points = "gauge", valuePoints(mj.Points, d.DataPoints)
	case metricdata.Histogram[float64]:
		mj.Kind = "histogram"
		for _, p := range d.DataPoints {
			n := p.Count
			mj.Points = append(mj.Points, pointJSON{Attributes: attrs(p.Attributes), Count: &n, Sum: f64(p.Sum)})
		}
	case metricdata.Histogram[int64]:
		mj.Kind = "histogram"
		for _, p := range d.DataPoints {
			n := p.Count
			mj.Points = append(mj.Points, pointJSON{Attributes: attrs(p.Attributes), Count: &n, Sum: f64(float64(p.Sum))})
		}
	default:
		return mj, false
	}
	return mj, true
}
