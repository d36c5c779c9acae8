package main

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attribute keys of the probe's metrics, beside lifeline's own
// (lifeline.phase) and the semantic conventions' (server.address,
// network.peer.address).
const (
	keyServerAddress = attribute.Key("server.address")
	keyServerPort    = attribute.Key("server.port")
	keyPeer          = attribute.Key("network.peer.address")
	keyPhase         = attribute.Key("lifeline.phase")
	keyResult        = attribute.Key("lifeline.probe.result")
	// keyQuantile is not "quantile": in Prometheus that label belongs to
	// summaries, and promtool refuses it on a gauge.
	keyQuantile = attribute.Key("lifeline.probe.quantile")
)

// quantiles are the latency gauges' quantile values and how to read them
// from a PhaseReport.
var quantiles = []struct {
	name string
	get  func(PhaseReport) float64
}{
	{"0.5", func(p PhaseReport) float64 { return p.P50ms }},
	{"0.9", func(p PhaseReport) float64 { return p.P90ms }},
	{"0.99", func(p PhaseReport) float64 { return p.P99ms }},
	{"1", func(p PhaseReport) float64 { return p.MaxMs }},
}

// registerMetrics registers the probe's instruments on m. All of them are
// observable: each collection reports the addresses of the current answer
// only, so an address that left it stops being exported (its series go
// stale in Prometheus) and no other address ever becomes a label.
//
//	lifeline.probe.results        counter  by address, phase, result (every result, zeros included)
//	lifeline.probe.latency        gauge, s by address, phase, lifeline.probe.quantile (last interval's successes)
//	lifeline.probe.raced          counter  by result: dials through lifeline's race
//	lifeline.probe.raced.latency  gauge, s by lifeline.probe.quantile
//	lifeline.probe.addresses      gauge    addresses in the current answer
func registerMetrics(m metric.Meter, c *collector) (metric.Registration, error) {
	resultsCtr, err := m.Int64ObservableCounter("lifeline.probe.results", metric.WithUnit("{sample}"),
		metric.WithDescription("Outcomes of the probe's direct samples of each address, by phase and result (ok, stall, refused, reset, error)."))
	if err != nil {
		return nil, err
	}
	latency, err := m.Float64ObservableGauge("lifeline.probe.latency", metric.WithUnit("s"),
		metric.WithDescription("Latency quantiles of each address and phase over the last interval's successful samples."))
	if err != nil {
		return nil, err
	}
	raced, err := m.Int64ObservableCounter("lifeline.probe.raced", metric.WithUnit("{dial}"),
		metric.WithDescription("Dials through lifeline's race (what a user sees), by result."))
	if err != nil {
		return nil, err
	}
	racedLatency, err := m.Float64ObservableGauge("lifeline.probe.raced.latency", metric.WithUnit("s"),
		metric.WithDescription("Latency quantiles of the last interval's successful raced dials."))
	if err != nil {
		return nil, err
	}
	addresses, err := m.Int64ObservableGauge("lifeline.probe.addresses", metric.WithUnit("{address}"),
		metric.WithDescription("Addresses in the current answer for the probed name."))
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(c.p.cfg.target)
	portN, _ := strconv.Atoi(port)
	target := []attribute.KeyValue{keyServerAddress.String(host), keyServerPort.Int(portN)}
	with := func(kv ...attribute.KeyValue) metric.ObserveOption {
		return metric.WithAttributes(append(append([]attribute.KeyValue(nil), target...), kv...)...)
	}
	return m.RegisterCallback(func(_ context.Context, o metric.Observer) error {
		c.mu.Lock()
		defer c.mu.Unlock()
		o.ObserveInt64(addresses, int64(len(c.answer)), with())
		for _, peer := range c.answer {
			ip := keyPeer.String(peer.Addr().String())
			for _, ph := range c.p.cfg.phases() {
				for _, res := range results {
					o.ObserveInt64(resultsCtr, c.totals[peer][ph][res], with(ip, keyPhase.String(ph), keyResult.String(res)))
				}
			}
		}
		for _, res := range results {
			o.ObserveInt64(raced, c.racedTot[res], with(keyResult.String(res)))
		}
		if c.last == nil {
			return nil
		}
		for _, a := range c.last.Addresses {
			ap, _ := parsePeer(a.Address)
			// The report also keeps addresses that left the answer during
			// its interval; labels are the current answer's only.
			if !slices.ContainsFunc(c.answer, func(p netip.AddrPort) bool { return p.String() == a.Address }) {
				continue
			}
			for _, p := range a.Phases {
				if p.OK == 0 {
					continue
				}
				for _, q := range quantiles {
					o.ObserveFloat64(latency, q.get(p)/1000, with(keyPeer.String(ap), keyPhase.String(p.Phase), keyQuantile.String(q.name)))
				}
			}
		}
		if c.last.Raced.OK > 0 {
			for _, q := range quantiles {
				o.ObserveFloat64(racedLatency, q.get(c.last.Raced)/1000, with(keyQuantile.String(q.name)))
			}
		}
		return nil
	}, resultsCtr, latency, raced, racedLatency, addresses)
}

// parsePeer returns the IP of an "ip:port" report address.
func parsePeer(s string) (string, error) {
	host, _, err := net.SplitHostPort(s)
	return host, err
}
