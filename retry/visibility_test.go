package retry_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"testing/synctest"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"go.opentelemetry.io/otel/trace/embedded"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/retry"
)

// TestNoSecretInSpans: an http.Client error quotes the request URL, with
// its userinfo and query. A failed GET inside Do, for real on loopback,
// leaves none of it in the attempt spans: not in a name, an attribute, the
// status description (which is the error type) or an event attribute.
func TestNoSecretInSpans(t *testing.T) {
	hangUp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		conn, _, err := http.NewResponseController(w).Hijack()
		if err == nil {
			_ = conn.Close() // no response: the client sees EOF
		}
	}))
	defer hangUp.Close()
	cases := []struct {
		name     string
		hostPort string
		errType  string
	}{
		{"refused", refusedAddr(t), "connection_refused"},
		{"server hangs up", hangUp.Listener.Addr().String(), "eof"},
	}
	secrets := []string{"SECRET", "alice", "pw", "api_key"}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			tr := &http.Transport{}
			defer tr.CloseIdleConnections()
			client := &http.Client{Transport: tr}
			url := "http://alice:pw@" + tc.hostPort + "/v1?api_key=SECRET&x=1"
			p := &retry.Policy{MaxAttempts: 2, InitialInterval: 1, MaxInterval: 1, TracerProvider: tp, MeterProvider: metricnoop.NewMeterProvider()}
			err := p.Do(t.Context(), func(ctx context.Context) error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return retry.Permanent(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				return resp.Body.Close()
			})
			require.Error(t, err)
			require.Contains(t, err.Error(), "SECRET", "the error itself is the caller's; only spans are redacted")
			spans := rec.Ended()
			require.Len(t, spans, 2)
			for _, s := range spans {
				texts := []string{s.Name(), s.Status().Description}
				for _, kv := range s.Attributes() {
					texts = append(texts, string(kv.Key), kv.Value.String())
				}
				require.NotEmpty(t, s.Events())
				for _, ev := range s.Events() {
					texts = append(texts, ev.Name)
					for _, kv := range ev.Attributes {
						texts = append(texts, string(kv.Key), kv.Value.String())
					}
				}
				for _, text := range texts {
					for _, secret := range secrets {
						assert.NotContains(t, text, secret)
					}
				}
				assert.Equal(t, codes.Error, s.Status().Code)
				assert.Equal(t, tc.errType, s.Status().Description, "the status says the error type")
				assert.Equal(t, tc.errType, attrs(s.Attributes())["error.type"].AsString())
				msg := attrs(s.Events()[0].Attributes)["exception.message"].AsString()
				assert.Contains(t, msg, `"http://`+tc.hostPort+`/v1"`, "the URL stays, without userinfo and query")
			}
		})
	}
}

// maskedPoints returns the lifeline.masked_failures points of the retry
// scope, keyed by their attributes ("key=value,..." in attribute order).
func maskedPoints(t *testing.T, reader *sdkmetric.ManualReader) map[string]int64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, reader.Collect(t.Context(), &rm))
	got := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		if sm.Scope.Name != otelx.ScopeRetry {
			continue
		}
		for _, m := range sm.Metrics {
			if m.Name != otelx.MaskedFailuresName {
				continue
			}
			for _, dp := range m.Data.(metricdata.Sum[int64]).DataPoints {
				var kvs []string
				for _, kv := range dp.Attributes.ToSlice() {
					kvs = append(kvs, string(kv.Key)+"="+kv.Value.String())
				}
				got[strings.Join(kvs, ",")] += dp.Value
			}
		}
	}
	return got
}

// TestMaskedFailures: the failures of a call that a retry then turned into
// a success are counted on lifeline.masked_failures with
// lifeline.masked_by=retry, by phase, peer and error.type, as a race's are;
// a call that fails every attempt, or succeeds at once, masks nothing.
func TestMaskedFailures(t *testing.T) {
	addr := refusedAddr(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			_ = c.Close()
		}
	}()
	d := &dial.Dialer{Health: &dial.Health{}, TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()}
	var nd net.Dialer

	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	defer func() { require.NoError(t, mp.Shutdown(context.Background())) }()
	p := &retry.Policy{MaxAttempts: 3, InitialInterval: 1, MaxInterval: 1, MeterProvider: mp, TracerProvider: tracenoop.NewTracerProvider()}

	// Fails through dial.Dialer, then through net.Dialer, then succeeds.
	var dialErr error
	err = p.Do(t.Context(), func(ctx context.Context) error {
		var conn net.Conn
		var err error
		switch retry.Attempt(ctx) {
		case 1:
			conn, err = d.DialContext(ctx, "tcp", addr)
			dialErr = err
		case 2:
			conn, err = nd.DialContext(ctx, "tcp", addr)
		default:
			conn, err = d.DialContext(ctx, "tcp", ln.Addr().String())
		}
		if err == nil {
			_ = conn.Close()
		}
		return err
	})
	if dialErr == nil {
		t.Skip("something else took the port")
	}
	require.NoError(t, err)
	var de *dial.Error
	require.ErrorAs(t, dialErr, &de)
	phase, peer := otelx.MaskedLabels(dialErr)
	if _, ok := any(de).(otelx.MaskedLabeler); ok {
		assert.Equal(t, "connect", phase)
		assert.NotEmpty(t, peer)
	}
	labels := func(phase, peer, errType string) string {
		var kvs []attribute.KeyValue
		kvs = append(kvs, attribute.String("error.type", errType), otelx.KeyMaskedBy.String(otelx.MaskedByRetry))
		if phase != "" {
			kvs = append(kvs, otelx.KeyPhase.String(phase))
		}
		if peer != "" {
			kvs = append(kvs, otelx.PeerAddress(peer))
		}
		set := attribute.NewSet(kvs...)
		var s []string
		for _, kv := range set.ToSlice() {
			s = append(s, string(kv.Key)+"="+kv.Value.String())
		}
		return strings.Join(s, ",")
	}
	want := map[string]int64{
		labels(phase, peer, otelx.ErrorTypeOf(dialErr)): 1,
		labels("", "", "connection_refused"):            1,
	}
	got := maskedPoints(t, reader)
	t.Logf("masked by the retry: %v", got)
	assert.Equal(t, want, got, "two failures masked by the retry")

	// A call that fails every attempt masks nothing; nor does one that
	// succeeds at once.
	err = p.Do(t.Context(), func(ctx context.Context) error {
		conn, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			_ = conn.Close()
		}
		return err
	})
	require.ErrorIs(t, err, retry.ErrExhausted)
	require.NoError(t, p.Do(t.Context(), func(context.Context) error { return nil }))
	assert.Equal(t, want, maskedPoints(t, reader), "unchanged")

	// Many failures of one kind, then a success: each is counted.
	synctest.Test(t, func(t *testing.T) {
		many := *p
		many.MaxAttempts = 50
		require.NoError(t, many.Do(t.Context(), func(ctx context.Context) error {
			if retry.Attempt(ctx) < 50 {
				return fmt.Errorf("read: %w", errBoom)
			}
			return nil
		}))
	})
	assert.Equal(t, int64(49), maskedPoints(t, reader)[labels("", "", "*fmt.wrapError")])
}

// TestProvidersNotPinned: the providers a Policy names are cached for the
// most recent few pairs only; an old pair can be collected.
func TestProvidersNotPinned(t *testing.T) {
	tp, mp := sdktrace.NewTracerProvider(), sdkmetric.NewMeterProvider()
	wtp, wmp := weak.Make(tp), weak.Make(mp)
	require.NoError(t, (&retry.Policy{TracerProvider: tp, MeterProvider: mp}).Do(t.Context(), succeed))
	tp, mp = nil, nil
	for range 32 {
		p := &retry.Policy{TracerProvider: sdktrace.NewTracerProvider(), MeterProvider: sdkmetric.NewMeterProvider()}
		require.NoError(t, p.Do(t.Context(), succeed))
	}
	runtime.GC()
	runtime.GC()
	assert.Nil(t, wtp.Value(), "the TracerProvider is still reachable")
	assert.Nil(t, wmp.Value(), "the MeterProvider is still reachable")
}

// uncomparableTP is a TracerProvider whose dynamic type cannot be a map
// key (it holds a slice): it must work, uncached, and never panic a
// comparison.
type uncomparableTP struct {
	embedded.TracerProvider
	tp   trace.TracerProvider
	tags []string
}

func (u uncomparableTP) Tracer(name string, opts ...trace.TracerOption) trace.Tracer {
	return u.tp.Tracer(name, opts...)
}

// TestUncomparableProviders: providers of non-comparable types, alone and
// alternating with comparable ones, make spans on every call.
func TestUncomparableProviders(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	sdk := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	mp := metricnoop.NewMeterProvider()
	policies := []*retry.Policy{
		{TracerProvider: uncomparableTP{tp: sdk, tags: []string{"a"}}, MeterProvider: mp},
		{TracerProvider: sdk, MeterProvider: mp},
		{TracerProvider: uncomparableTP{tp: sdk, tags: []string{"b"}}, MeterProvider: mp},
	}
	for range 3 {
		for _, p := range policies {
			require.NoError(t, p.Do(t.Context(), succeed))
		}
	}
	assert.Len(t, rec.Ended(), 9)
}
