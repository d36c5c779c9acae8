// Package otelx is lifeline's single place for OpenTelemetry plumbing: the
// instrumentation scope names and version, the attribute keys (it is the only
// package that imports semconv), the metric instruments of every package, and
// small span helpers.
//
// A nil TracerProvider or MeterProvider always means the otel global one; the
// library never calls otel.Set*. Instruments are built once per
// MeterProvider and cached, so the hot path only records.
//
// A client with a Name (Transport, WebSocketDialer, Dialer) records through
// NamedTracerProvider and NamedMeterProvider, which put lifeline.client.name
// on every span and point made through them. The scope version is Version,
// read from the build info (VersionOf, DevelVersion).
package otelx
