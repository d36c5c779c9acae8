package otelx

import "go.opentelemetry.io/otel/attribute"

// Attribute keys used by the pool package in addition to KeyReason and KeyState.
const (
	// KeyPoolName is a pool's Config.Name, to tell several pools apart.
	KeyPoolName = attribute.Key("lifeline.pool.name")
	// KeyPoolDialStarted says whether a waiting acquire started a new dial.
	KeyPoolDialStarted = attribute.Key("lifeline.pool.dial_started")
)
