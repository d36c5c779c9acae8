package otelx

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"runtime/debug"
	"syscall"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	semconv "go.opentelemetry.io/otel/semconv/v1.40.0"
	"go.opentelemetry.io/otel/trace"
)

// Version is the instrumentation scope version reported with every tracer
// and meter: the version of the lifeline module in the running binary's
// build info (see VersionOf), DevelVersion when the build carries none.
var Version = VersionOf(debug.ReadBuildInfo())

// ModulePath is lifeline's module path, looked up in the build info.
const ModulePath = "github.com/lifeline-go/lifeline"

// DevelVersion is the scope version when the build info has no version of
// lifeline: a binary built inside lifeline's own repository without VCS
// stamping (go test, go run: "(devel)"), a dependency replaced by a local
// directory, or a binary without build info. It sorts below every release
// (semver: a v0.0.0 pre-release).
const DevelVersion = "v0.0.0-devel"

// VersionOf returns lifeline's module version in bi: the dependency's
// (its replacement's, when replaced) when lifeline is a dependency of the
// main module, the main module's when lifeline is the main module (its
// tests and examples, or a build stamped from VCS), and DevelVersion when
// there is none or it is "(devel)".
func VersionOf(bi *debug.BuildInfo, ok bool) string {
	if !ok || bi == nil {
		return DevelVersion
	}
	m := &bi.Main
	if m.Path != ModulePath {
		m = nil
		for _, d := range bi.Deps {
			if d.Path == ModulePath {
				m = d
				break
			}
		}
	}
	if m == nil {
		return DevelVersion
	}
	v := m.Version
	if m.Replace != nil {
		v = m.Replace.Version // "" for a local directory
	}
	if v == "" || v == "(devel)" {
		return DevelVersion
	}
	return v
}

// Instrumentation scope names: one per package, named by import path.
const (
	ScopeDial      = "github.com/lifeline-go/lifeline/dial"
	ScopeRetry     = "github.com/lifeline-go/lifeline/retry"
	ScopePool      = "github.com/lifeline-go/lifeline/pool"
	ScopeTransport = "github.com/lifeline-go/lifeline/transport"
)

// Tracer returns the tracer for scope from tp, or from the global provider
// when tp is nil. Tracers are cached per provider and scope (see Memo), so
// the hot path does not build tracer options on every call.
func Tracer(tp trace.TracerProvider, scope string) trace.Tracer {
	if tp == nil {
		tp = otel.GetTracerProvider()
	}
	build := func() trace.Tracer { return tp.Tracer(scope, trace.WithInstrumentationVersion(Version)) }
	if !Comparable(tp) {
		// The key struct would compare the provider and panic.
		return build()
	}
	return tracers.Get(tracerKey{tp, scope}, build)
}

type tracerKey struct {
	tp    trace.TracerProvider
	scope string
}

var tracers Memo[tracerKey, trace.Tracer]

// Meter returns the meter for scope from mp, or from the global provider when
// mp is nil.
func Meter(mp metric.MeterProvider, scope string) metric.Meter {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	return mp.Meter(scope, metric.WithInstrumentationVersion(Version))
}

// lifeline's own attribute keys. Semantic-convention keys are reached through
// the helper functions below so that callers never import semconv.
const (
	// KeyPhase is the dial phase: dns, connect, tls, first_byte.
	KeyPhase = attribute.Key("lifeline.phase")
	// KeyOutcome is how a dial, attempt or phase ended: ok, error, timeout,
	// canceled, lost (a racer overtaken by another address).
	KeyOutcome = attribute.Key("lifeline.outcome")
	// KeyAttempt is the 1-based attempt number inside a retried call.
	KeyAttempt = attribute.Key("lifeline.retry.attempt")
	// KeyBackoff is the wait before an attempt, in seconds.
	KeyBackoff = attribute.Key("lifeline.retry.backoff")
	// KeyReason is why a pool connection was evicted.
	KeyReason = attribute.Key("lifeline.pool.evict_reason")
	// KeyState is a pool connection's state: idle, in_use, dialing.
	KeyState = attribute.Key("lifeline.pool.state")
	// KeyRaceIndex is the position of a raced address in the dial order.
	KeyRaceIndex = attribute.Key("lifeline.dial.race_index")
	// KeyRepeat marks a dial attempt that repeated one to the same
	// address (a lone address racing itself).
	KeyRepeat = attribute.Key("lifeline.dial.repeat")
	// KeyHedge is what a hedge did: fired or won.
	KeyHedge = attribute.Key("lifeline.http.hedge")
	// KeyResend marks an HTTP attempt that resent the request.
	KeyResend = attribute.Key("lifeline.http.resend")
	// KeyAddresses is the number of addresses a dial resolved.
	KeyAddresses = attribute.Key("lifeline.dial.addresses")
	// KeyMaskedBy says what absorbed a failure: race, retry or hedge.
	KeyMaskedBy = attribute.Key("lifeline.masked_by")
)

// Values of KeyMaskedBy.
const (
	MaskedByRace  = "race"
	MaskedByRetry = "retry"
	MaskedByHedge = "hedge"
)

// PeerOther is the network.peer.address of a masked failure whose peer is
// not one the Dialer's Health remembers: label cardinality stays bounded by
// Health's capacity, whatever a resolver returns.
const PeerOther = "other"

// MaskedLabeler is implemented by errors that know the phase and the peer
// label of the failure they describe (*dial.Error does): the peer is an IP
// only when Health remembers it, PeerOther otherwise, "" when there is none.
type MaskedLabeler interface {
	MetricLabels() (phase, peer string)
}

// MaskedLabels returns the phase and peer labels of err when an error in
// its chain is a MaskedLabeler, or "", "".
func MaskedLabels(err error) (phase, peer string) {
	var l MaskedLabeler
	if errors.As(err, &l) {
		return l.MetricLabels()
	}
	return "", ""
}

// Masked returns the option of one lifeline.masked_failures point: what
// masked it, the phase and peer (omitted when empty) and error.type.
func Masked(by, phase, peer, errorType string) metric.AddOption {
	attrs := make([]attribute.KeyValue, 0, 4)
	attrs = append(attrs, KeyMaskedBy.String(by))
	if phase != "" {
		attrs = append(attrs, KeyPhase.String(phase))
	}
	if peer != "" {
		attrs = append(attrs, PeerAddress(peer))
	}
	attrs = append(attrs, semconv.ErrorTypeKey.String(errorType))
	return metric.WithAttributes(attrs...)
}

// Outcome values for KeyOutcome.
const (
	OutcomeOK       = "ok"
	OutcomeError    = "error"
	OutcomeTimeout  = "timeout"
	OutcomeCanceled = "canceled"
	OutcomeLost     = "lost"
)

// ServerAddress is semconv server.address.
func ServerAddress(host string) attribute.KeyValue { return semconv.ServerAddress(host) }

// ServerPort is semconv server.port.
func ServerPort(port int) attribute.KeyValue { return semconv.ServerPort(port) }

// PeerAddress is semconv network.peer.address.
func PeerAddress(ip string) attribute.KeyValue { return semconv.NetworkPeerAddress(ip) }

// PeerPort is semconv network.peer.port.
func PeerPort(port int) attribute.KeyValue { return semconv.NetworkPeerPort(port) }

// TransportTCP is semconv network.transport=tcp.
var TransportTCP = semconv.NetworkTransportTCP

// ResendCount is semconv http.request.resend_count.
func ResendCount(n int) attribute.KeyValue { return semconv.HTTPRequestResendCount(n) }

// HTTPMethod is semconv http.request.method.
func HTTPMethod(m string) attribute.KeyValue { return semconv.HTTPRequestMethodKey.String(m) }

// ServerPortKey is semconv server.port's key.
const ServerPortKey = semconv.ServerPortKey

// URLScheme is semconv url.scheme.
func URLScheme(s string) attribute.KeyValue { return semconv.URLScheme(s) }

// ProtocolVersion is semconv network.protocol.version ("1.1", "2").
func ProtocolVersion(v string) attribute.KeyValue { return semconv.NetworkProtocolVersion(v) }

// ErrorTypeString is semconv error.type with the value et.
func ErrorTypeString(et string) attribute.KeyValue { return semconv.ErrorTypeKey.String(et) }

// HTTPStatus is semconv http.response.status_code.
func HTTPStatus(code int) attribute.KeyValue { return semconv.HTTPResponseStatusCode(code) }

// URLFull is semconv url.full. The caller must have removed userinfo and the
// query string first: secrets never reach a span.
func URLFull(u string) attribute.KeyValue { return semconv.URLFull(u) }

// ErrorType is semconv error.type with the low-cardinality value of
// ErrorTypeOf(err).
func ErrorType(err error) attribute.KeyValue { return semconv.ErrorTypeKey.String(ErrorTypeOf(err)) }

// ErrorTypeOf classifies err into a short, low-cardinality string for the
// error.type attribute. An error that has an ErrorType() string method (as
// *dial.Error does) names itself; otherwise well-known causes are mapped
// (timeout, canceled, connection_refused, connection_reset, dns, tls_certificate,
// eof) and anything else is its dynamic Go type, as otelhttp does.
func ErrorTypeOf(err error) string {
	if err == nil {
		return ""
	}
	var typed interface{ ErrorType() string }
	if errors.As(err, &typed) {
		if s := typed.ErrorType(); s != "" {
			return s
		}
	}
	var (
		dnsErr  *net.DNSError
		certErr *tls.CertificateVerificationError
		unkAuth x509.UnknownAuthorityError
		hostErr x509.HostnameError
		invErr  x509.CertificateInvalidError
		netErr  net.Error
	)
	switch {
	case errors.Is(err, context.Canceled):
		return "canceled"
	case errors.Is(err, context.DeadlineExceeded):
		return "timeout"
	case errors.As(err, &dnsErr):
		if dnsErr.IsNotFound {
			return "dns_not_found"
		}
		if dnsErr.IsTimeout {
			return "timeout"
		}
		return "dns"
	case errors.As(err, &certErr), errors.As(err, &unkAuth), errors.As(err, &hostErr), errors.As(err, &invErr):
		return "tls_certificate"
	case errors.Is(err, syscall.ECONNREFUSED):
		return "connection_refused"
	case errors.Is(err, syscall.ECONNRESET):
		return "connection_reset"
	case errors.Is(err, syscall.ETIMEDOUT):
		return "timeout"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.As(err, &netErr) && netErr.Timeout():
		return "timeout"
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "eof"
	}
	return fmt.Sprintf("%T", err)
}

// RecordError marks span as failed with err: an exception event, status
// Error and error.type. The status description is the error type, and the
// event's message is err's text with every URL in it stripped of userinfo
// and query (see Redact): an http.Client error quotes the whole URL, and
// secrets never reach a span. A nil err does nothing. Callers decide
// beforehand whether err is a failure at all (a caller's cancel or a lost
// race is not).
func RecordError(span trace.Span, err error) {
	if err == nil || !span.IsRecording() {
		return
	}
	et := ErrorTypeOf(err)
	span.AddEvent(semconv.ExceptionEventName, trace.WithAttributes(
		semconv.ExceptionType(fmt.Sprintf("%T", err)),
		semconv.ExceptionMessage(Redact(err.Error())),
	))
	span.SetStatus(codes.Error, et)
	span.SetAttributes(semconv.ErrorTypeKey.String(et))
}
