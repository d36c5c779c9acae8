package transport

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	"go.opentelemetry.io/otel/trace"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/otelx"
)

var noopTracerProvider trace.TracerProvider = tracenoop.NewTracerProvider()

// telemetry is a Transport's tracer and instruments.
type telemetry struct {
	tracer trace.Tracer // nil: a no-op provider, no spans
	inst   *otelx.Transport
	up     *otelx.Upstream
	log    *logx.Limiter // nil: no Logger
	// logq writes the records of the upstreams' changes of state on a
	// goroutine of its own: a change is found wherever the gate is asked
	// (a call, a metric collection through the down gauge), and the
	// Logger's handler must run in none of those places. nil: no Logger.
	logq *logx.Queue
	// quiet: no spans, no-op metrics and no Logger, so that a try's end
	// records nothing (set by newTelemetry and quieten).
	quiet       bool
	noopMetrics bool
}

// newTelemetry makes the telemetry of a Transport named name (see
// Transport.Name): its providers are named, so that every span and point
// made through them carries lifeline.client.name.
func newTelemetry(tp trace.TracerProvider, mp metric.MeterProvider, name string, log *logx.Limiter) *telemetry {
	tp, mp = otelx.NamedTracerProvider(tp, name), otelx.NamedMeterProvider(mp, name)
	t := &telemetry{inst: otelx.TransportInstruments(mp), up: otelx.UpstreamInstruments(mp, otelx.ScopeTransport), log: log, logq: logx.NewQueue(log)}
	if _, noop := tp.(tracenoop.TracerProvider); !noop {
		t.tracer = otelx.Tracer(tp, otelx.ScopeTransport)
	}
	_, t.noopMetrics = mp.(metricnoop.MeterProvider)
	t.quiet = t.tracer == nil && t.noopMetrics && t.log == nil
	return t
}

// noSpan is the span of a try when there are no spans.
var noSpan = trace.SpanFromContext(context.Background())

// clientSpan is the start options of a try's span, one slice for all: a
// slice made at each call would be an allocation per request.
var clientSpan = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindClient)}

// startSpan starts the client span of one try under the caller's span,
// named and attributed as the HTTP semantic conventions ask. url.full has
// no userinfo and every query value redacted; no header is recorded.
func (t *telemetry) startSpan(ctx context.Context, req *http.Request, resend int) (context.Context, trace.Span) {
	if t.tracer == nil {
		return ctx, noSpan
	}
	method := methodOf(req)
	ctx, span := t.tracer.Start(ctx, spanName(method), clientSpan...)
	if !span.IsRecording() {
		return ctx, span
	}
	host := req.URL.Hostname()
	attrs := []attribute.KeyValue{
		otelx.HTTPMethod(knownMethod(method)),
		otelx.ServerAddress(host),
		otelx.URLFull(redactURL(req.URL)),
		otelx.ServerPort(portOf(req.URL)),
	}
	if resend > 0 {
		attrs = append(attrs, otelx.ResendCount(resend))
	}
	span.SetAttributes(attrs...)
	return ctx, span
}

// spanName is {method}, or "HTTP" for a method outside the known set (the
// semantic conventions keep span names low-cardinality).
func spanName(method string) string {
	if m := knownMethod(method); m != "_OTHER" {
		return m
	}
	return "HTTP"
}

func knownMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodConnect, http.MethodOptions, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

// redactURL is u as url.full shows it (otelx.RedactedURL).
func redactURL(u *url.URL) string { return otelx.RedactedURL(u) }

func (t *telemetry) gotConn(span trace.Span, peer netip.AddrPort, reused bool) {
	if !span.IsRecording() || !peer.IsValid() {
		return
	}
	span.SetAttributes(otelx.PeerAddress(peer.Addr().String()), otelx.PeerPort(int(peer.Port())),
		attribute.Bool("lifeline.http.conn_reused", reused))
}

func (t *telemetry) responded(span trace.Span, resp *http.Response) {
	if span.IsRecording() {
		span.SetAttributes(otelx.HTTPStatus(resp.StatusCode))
	}
}

// timesTries reports whether the tries' durations are recorded.
func (t *telemetry) timesTries(ctx context.Context) bool {
	return !t.noopMetrics && (t.inst.RequestDuration.Enabled(ctx) || t.inst.Duration.Enabled(ctx))
}

// namedMeterProvider is mp named by name (otelx.NamedMeterProvider).
func namedMeterProvider(mp metric.MeterProvider, name string) metric.MeterProvider {
	return otelx.NamedMeterProvider(mp, name)
}

// tracerProvider is d's TracerProvider named by d.Name.
func (d *WebSocketDialer) tracerProvider() trace.TracerProvider {
	return otelx.NamedTracerProvider(d.TracerProvider, d.Name)
}

// meterProvider is d's MeterProvider named by d.Name.
func (d *WebSocketDialer) meterProvider() metric.MeterProvider {
	return otelx.NamedMeterProvider(d.MeterProvider, d.Name)
}

// ended closes a try's span and records its duration (d; -1: not
// measured, timesTries was false at its start) and outcome. A hedge
// that lost and a caller's cancel are not errors; a 4xx or 5xx answer is
// (for a client span, as the conventions say), with error.type the code.
func (t *telemetry) ended(ctx context.Context, span trace.Span, req *http.Request, resp *http.Response, err error, d time.Duration) {
	if t.quiet {
		return
	}
	outcome := otelx.OutcomeOK
	switch {
	case err == nil:
		if resp != nil && resp.StatusCode >= 400 {
			outcome = otelx.OutcomeError
		}
	case errors.Is(err, errHedgeLost):
		outcome = otelx.OutcomeLost
	case errors.Is(err, context.Canceled):
		outcome = otelx.OutcomeCanceled
	case errors.Is(err, context.DeadlineExceeded):
		outcome = otelx.OutcomeTimeout
	default:
		outcome = otelx.OutcomeError
	}
	if span.IsRecording() {
		span.SetAttributes(otelx.KeyOutcome.String(outcome))
		switch {
		case outcome == otelx.OutcomeLost, outcome == otelx.OutcomeCanceled:
		case err != nil:
			otelx.RecordError(span, err)
		case resp != nil && resp.StatusCode >= 400:
			code := strconv.Itoa(resp.StatusCode)
			span.SetStatus(codes.Error, code)
			span.SetAttributes(attribute.String("error.type", code))
		}
	}
	span.End()
	if t.log != nil && (outcome == otelx.OutcomeError || outcome == otelx.OutcomeTimeout) {
		t.logFailure(ctx, req, resp, err)
	}
	if t.inst.Attempts.Enabled(ctx) {
		t.inst.Attempts.Add(ctx, 1, metric.WithAttributes(otelx.KeyOutcome.String(outcome)))
	}
	if d >= 0 && t.inst.RequestDuration.Enabled(ctx) {
		t.inst.RequestDuration.Record(ctx, d.Seconds(), metric.WithAttributes(requestAttrs(req, resp, err, outcome)...))
	}
	if d >= 0 && t.inst.Duration.Enabled(ctx) {
		attrs := []attribute.KeyValue{otelx.HTTPMethod(knownMethod(methodOf(req))), otelx.KeyOutcome.String(outcome)}
		if resp != nil {
			attrs = append(attrs, otelx.HTTPStatus(resp.StatusCode))
		}
		t.inst.Duration.Record(ctx, d.Seconds(), metric.WithAttributes(attrs...))
	}
}

// requestAttrs are the attributes of an http.client.request.duration
// point, as the semantic conventions list them: method, status code,
// error.type (the error's type, or the status code of a 4xx or 5xx
// answer; "hedge_lost" for a try a hedge overtook, canceled for a caller's
// cancel), server address and port, scheme and protocol version.
func requestAttrs(req *http.Request, resp *http.Response, err error, outcome string) []attribute.KeyValue {
	attrs := make([]attribute.KeyValue, 0, 7)
	attrs = append(attrs, otelx.HTTPMethod(knownMethod(methodOf(req))),
		otelx.ServerAddress(req.URL.Hostname()), otelx.ServerPort(portOf(req.URL)),
		otelx.URLScheme(req.URL.Scheme))
	switch {
	case outcome == otelx.OutcomeLost:
		attrs = append(attrs, otelx.ErrorTypeString("hedge_lost"))
	case err != nil:
		attrs = append(attrs, otelx.ErrorTypeString(otelx.ErrorTypeOf(err)))
	case resp != nil && resp.StatusCode >= 400:
		attrs = append(attrs, otelx.ErrorTypeString(strconv.Itoa(resp.StatusCode)))
	}
	if resp != nil {
		attrs = append(attrs, otelx.HTTPStatus(resp.StatusCode), otelx.ProtocolVersion(protoVersion(resp)))
	}
	return attrs
}

// portOf is u's port, or the scheme's default.
func portOf(u *url.URL) int {
	if p, err := strconv.Atoi(u.Port()); err == nil {
		return p
	}
	if u.Scheme == "https" || u.Scheme == "wss" {
		return 443
	}
	return 80
}

// protoVersion is network.protocol.version of resp: "1.1", "2".
func protoVersion(resp *http.Response) string {
	switch {
	case resp.ProtoMajor == 2:
		return "2"
	case resp.ProtoMajor == 1 && resp.ProtoMinor == 1:
		return "1.1"
	case resp.ProtoMajor == 1 && resp.ProtoMinor == 0:
		return "1.0"
	}
	return strconv.Itoa(resp.ProtoMajor) + "." + strconv.Itoa(resp.ProtoMinor)
}

// logFailure logs a failed attempt (an error, or a 5xx answer) through
// the rate limiter: method, host and the error's type and redacted text,
// nothing else of the request.
func (t *telemetry) logFailure(ctx context.Context, req *http.Request, resp *http.Response, err error) {
	var et string
	switch {
	case err != nil:
		et = otelx.ErrorTypeOf(err)
	case resp != nil && resp.StatusCode >= 500:
		et = strconv.Itoa(resp.StatusCode)
		err = errors.New("transport: " + strconv.Itoa(resp.StatusCode) + " " + http.StatusText(resp.StatusCode))
	default:
		return // a 4xx is the request's fault, not a failure to log
	}
	t.log.Failure(ctx, "http."+et, "lifeline: http attempt failed", err,
		slog.String("method", knownMethod(methodOf(req))), slog.String("server.address", req.URL.Host),
		slog.String("error.type", et))
}

func (t *telemetry) stalled(ctx context.Context) {
	if t.inst.Stalls.Enabled(ctx) {
		t.inst.Stalls.Add(ctx, 1)
	}
}

func (t *telemetry) hedge(ctx context.Context, what string) {
	if t.inst.Hedges.Enabled(ctx) {
		t.inst.Hedges.Add(ctx, 1, metric.WithAttributes(otelx.KeyHedge.String(what)))
	}
}

// hedgeMasked counts what a winning try hid, on lifeline.masked_failures
// with masked_by=hedge: tries that failed (with their error's type), and
// tries started before the winner that were still waiting when it
// answered. Those were cancelled before they could fail or answer: a hung
// conn (incident 01) and a try that was merely slow look the same, so they
// are kept apart from proven failures; with HedgeQuantile some are
// overtaken by design (about 1-quantile of the tries). A try whose request
// was written was waiting for headers from its peer: phase first_byte,
// error.type "first_byte_overtaken". A try whose request was not written
// yet was still waiting for a connection (its DNS, connect or TLS, or a
// MaxConnsPerHost slot): phase connect, error.type "connect_overtaken", and
// a peer only if it had a conn; the Dialer counts what stalled there by
// its own phase and peer (masked_by=race). alerts/lifeline.rules.yml pages
// on the share of the attempts overtaken at first byte, not on each one.
func (t *telemetry) hedgeMasked(ctx context.Context, winner *try, failed []tryResult, lost []*try) {
	if !t.inst.Masked.Enabled(ctx) {
		return
	}
	for _, r := range failed {
		phase, peer := otelx.MaskedLabels(r.err)
		if peer == "" {
			peer = r.tr.peerLabel()
		}
		t.inst.Masked.Add(ctx, 1, otelx.Masked(otelx.MaskedByHedge, phase, peer, otelx.ErrorTypeOf(r.err)))
	}
	for _, tr := range lost {
		switch {
		case !tr.start.Before(winner.start):
			// Started after the winner: it merely lost.
		case tr.traced && !tr.wrote.Load():
			peer := ""
			if tr.hasPeer() {
				peer = tr.peerLabel()
			}
			t.inst.Masked.Add(ctx, 1, otelx.Masked(otelx.MaskedByHedge, "connect", peer, "connect_overtaken"))
		default:
			t.inst.Masked.Add(ctx, 1, otelx.Masked(otelx.MaskedByHedge, "first_byte", tr.peerLabel(), "first_byte_overtaken"))
		}
	}
}
