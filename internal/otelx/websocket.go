package otelx

import (
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Attribute keys of the websocket half of transport.
const (
	// KeyPingInterval is the ping interval of a websocket conn, in seconds.
	KeyPingInterval = attribute.Key("lifeline.websocket.ping_interval")
	// KeyPongTimeout is the pong timeout of a websocket conn, in seconds.
	KeyPongTimeout = attribute.Key("lifeline.websocket.pong_timeout")
	// KeyProxied says whether a websocket handshake went through a proxy.
	KeyProxied = attribute.Key("lifeline.websocket.proxied")
	// KeyReconnectAttempt is the 1-based number of a dial inside one
	// reconnect of a websocket session.
	KeyReconnectAttempt = attribute.Key("lifeline.websocket.reconnect.attempt")
	// KeyDisconnectCause is the error.type of what ended a websocket
	// session's connection.
	KeyDisconnectCause = attribute.Key("lifeline.websocket.disconnect_cause")
)

// WebSocket holds the instruments of transport's websockets.
type WebSocket struct {
	// Handshakes is lifeline.websocket.handshake.duration (s): one point
	// per handshake attempt (DNS to the 101), by KeyOutcome.
	Handshakes metric.Float64Histogram
	// PingTimeouts is lifeline.websocket.ping_timeouts: conns closed because
	// the peer stopped answering pings.
	PingTimeouts metric.Int64Counter
	// Reconnects is lifeline.websocket.reconnects: dials made by a session
	// to replace a lost connection, by KeyOutcome.
	Reconnects metric.Int64Counter
	// Disconnected is lifeline.websocket.disconnected.duration (s): one
	// point per outage of a session, from the loss to the next connection
	// (KeyOutcome ok) or to Close (KeyOutcome canceled) or to a refusal that
	// ended the session (error).
	Disconnected metric.Float64Histogram
}

var webSocketCache Memo[metric.MeterProvider, *WebSocket]

// Outages run from milliseconds to hours.
var outageBuckets = metric.WithExplicitBucketBoundaries(
	0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)

// WebSocketInstruments returns the cached websocket instruments of mp (nil:
// global), in the transport scope.
func WebSocketInstruments(mp metric.MeterProvider) *WebSocket {
	return instruments(&webSocketCache, mp, ScopeTransport, func(m metric.Meter) *WebSocket {
		w := &WebSocket{}
		w.Handshakes, _ = m.Float64Histogram("lifeline.websocket.handshake.duration", metric.WithUnit("s"),
			metric.WithDescription("Duration of each websocket handshake attempt, DNS to the 101, by outcome."), durationBuckets)
		w.PingTimeouts, _ = m.Int64Counter("lifeline.websocket.ping_timeouts", metric.WithUnit("{connection}"),
			metric.WithDescription("Websocket connections closed because the peer stopped answering pings."))
		w.Reconnects, _ = m.Int64Counter("lifeline.websocket.reconnects", metric.WithUnit("{attempt}"),
			metric.WithDescription("Dials made by websocket sessions to replace a lost connection, by outcome."))
		w.Disconnected, _ = m.Float64Histogram("lifeline.websocket.disconnected.duration", metric.WithUnit("s"),
			metric.WithDescription("Time websocket sessions spent without a connection, one point per outage, by how it ended."), outageBuckets)
		return w
	})
}
