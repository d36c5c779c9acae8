package dial_test

import (
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/internal/otelx"
)

func TestTelemetryOfTLSDial(t *testing.T) {
	serverCfg, clientCfg, _ := testCert(t, testHost)
	srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg})
	tel := newTelemetry(t)
	d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, TracerProvider: tel.tp, MeterProvider: tel.mp}
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	require.NoError(t, err)
	conn.Close()

	root := tel.spansNamed("dial")
	require.Len(t, root, 1)
	assert.Equal(t, otelx.ScopeDial, root[0].InstrumentationScope().Name)
	assert.Equal(t, "client", root[0].SpanKind().String())
	for _, name := range []string{"dial.dns", "dial.connect", "dial.tls"} {
		spans := tel.spansNamed(name)
		require.Len(t, spans, 1, name)
		assert.Equal(t, root[0].SpanContext().SpanID(), spans[0].Parent().SpanID(), "%s is a child of dial", name)
		v, _ := attr(spans[0], "lifeline.outcome")
		assert.Equal(t, "ok", v.AsString(), name)
	}
	v, _ := attr(tel.spansNamed("dial.tls")[0], "tls.protocol.version")
	assert.Equal(t, "1.3", v.AsString())
	v, _ = attr(tel.spansNamed("dial.connect")[0], "network.peer.port")
	assert.EqualValues(t, srv.Port(), v.AsInt64())

	phases := map[string]string{}
	for _, p := range tel.histPoints(t, "lifeline.dial.duration") {
		phases[setValue(p.Attributes, "lifeline.phase")] = setValue(p.Attributes, "lifeline.outcome")
		assert.EqualValues(t, 1, p.Count)
	}
	assert.Equal(t, map[string]string{"dns": "ok", "connect": "ok", "tls": "ok", "total": "ok"}, phases)
	assert.Empty(t, tel.sumPoints(t, "lifeline.masked_failures"), "nothing was masked")
}

func TestTelemetryOfFailedDial(t *testing.T) {
	addr := faultnet.RefusedAddr(t, "tcp")
	tel := newTelemetry(t)
	d := dial.Dialer{TracerProvider: tel.tp, MeterProvider: tel.mp}
	_, err := d.DialContext(t.Context(), "tcp", addr)
	require.Error(t, err)
	root := tel.spansNamed("dial")[0]
	assert.Equal(t, "Error", root.Status().Code.String())
	v, _ := attr(root, "error.type")
	assert.Equal(t, "connect_refused", v.AsString())
	require.Len(t, root.Events(), 1, "the error is recorded as an event")
	outcomes := map[string]int64{}
	for _, p := range tel.sumPoints(t, "lifeline.dial.attempts") {
		outcomes[setValue(p.Attributes, "lifeline.outcome")] += p.Value
	}
	assert.Equal(t, map[string]int64{"error": 1}, outcomes)
	assert.Empty(t, tel.sumPoints(t, "lifeline.masked_failures"), "a failed dial masks nothing")
	for _, p := range tel.histPoints(t, "lifeline.dial.duration") {
		assert.Equal(t, "error", setValue(p.Attributes, "lifeline.outcome"))
	}
}

func TestTelemetryFirstByte(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	tel := newTelemetry(t)
	d := dial.Dialer{FirstByteTimeout: 100 * time.Millisecond, MeterProvider: tel.mp}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, _ = conn.Write([]byte("x"))
	_, err = conn.Read(make([]byte, 1))
	require.Error(t, err)
	found := false
	for _, p := range tel.histPoints(t, "lifeline.dial.duration") {
		if setValue(p.Attributes, "lifeline.phase") == "first_byte" {
			found = true
			assert.Equal(t, "timeout", setValue(p.Attributes, "lifeline.outcome"))
		}
	}
	assert.True(t, found, "first_byte duration recorded")
}
