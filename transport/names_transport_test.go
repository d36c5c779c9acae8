package transport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// pointSets returns every data point's attribute set of every metric the
// reader has, by metric name, whatever the metric's kind.
func (r *rig) pointSets(t *testing.T) map[string][]attribute.Set {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	out := map[string][]attribute.Set{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], p.Attributes)
				}
			case metricdata.Sum[float64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], p.Attributes)
				}
			case metricdata.Histogram[float64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], p.Attributes)
				}
			case metricdata.Histogram[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], p.Attributes)
				}
			case metricdata.Gauge[int64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], p.Attributes)
				}
			case metricdata.Gauge[float64]:
				for _, p := range d.DataPoints {
					out[m.Name] = append(out[m.Name], p.Attributes)
				}
			default:
				t.Fatalf("metric %s: data of kind %T not checked", m.Name, m.Data)
			}
		}
	}
	return out
}

// TestNamesTellClientsApart: two Transports and two WebSocketDialers with
// different Names in one process, on one MeterProvider and one span
// recorder: every metric point and every span carries its client's name,
// those of the retries, the hedges and the dials included.
func TestNamesTellClientsApart(t *testing.T) {
	var mu sync.Mutex
	seen := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		seen[r.URL.Path]++
		n := seen[r.URL.Path]
		mu.Unlock()
		if n == 1 {
			w.WriteHeader(http.StatusServiceUnavailable) // each client's first try: retried, masked
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	ws := startWS(t, echo, nil)

	rg := newRig(t)
	for _, name := range []string{"alpha", "beta"} {
		tr := &transport.Transport{Name: name, TracerProvider: rg.tp, MeterProvider: rg.mp,
			Dialer: &dial.Dialer{AttemptDelay: 50 * time.Millisecond},
			Retry:  &retry.Policy{InitialInterval: time.Millisecond}, HedgeDelay: time.Second}
		defer tr.CloseIdleConnections()
		for i := range 2 {
			req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, srv.URL+"/"+name+"/"+strconv.Itoa(i), nil)
			require.NoError(t, err)
			resp, err := tr.RoundTrip(req)
			require.NoError(t, err)
			_, _ = io.ReadAll(resp.Body)
			require.NoError(t, resp.Body.Close())
			require.Equal(t, http.StatusOK, resp.StatusCode)
		}
	}
	for _, name := range []string{"ws-a", "ws-b"} {
		d := fastDialer(2)
		d.Name, d.TracerProvider, d.MeterProvider = name, rg.tp, rg.mp
		c, _, err := d.Dial(t.Context(), wsURL("ws", ws, "/"), nil)
		require.NoError(t, err)
		roundTrip(t, c, "hello "+name)
		require.NoError(t, c.Close())
	}
	// The conns' spans end when their goroutines have seen the close.
	eventually(t, 10*time.Second, "websocket.conn spans ended", func() bool {
		n := 0
		for _, s := range rg.spans.Ended() {
			if s.Name() == "websocket.conn" {
				n++
			}
		}
		return n == 2
	})

	names := []string{"alpha", "beta", "ws-a", "ws-b"}
	byMetric := map[string]map[string]bool{}
	for metric, sets := range rg.pointSets(t) {
		byMetric[metric] = map[string]bool{}
		for _, set := range sets {
			v, ok := set.Value("lifeline.client.name")
			if !assert.True(t, ok, "a point of %s without lifeline.client.name: %v", metric, set.ToSlice()) {
				continue
			}
			assert.Contains(t, names, v.AsString(), "metric %s", metric)
			byMetric[metric][v.AsString()] = true
		}
	}
	for metric, want := range map[string][]string{
		"http.client.request.duration":          {"alpha", "beta"},
		"lifeline.http.client.duration":         {"alpha", "beta"},
		"lifeline.http.attempts":                {"alpha", "beta"},
		"lifeline.retry.attempts":               {"alpha", "beta", "ws-a", "ws-b"},
		"lifeline.retry.recovered":              {"alpha", "beta"},
		"lifeline.masked_failures":              {"alpha", "beta"},
		"lifeline.dial.duration":                {"alpha", "beta", "ws-a", "ws-b"},
		"lifeline.dial.attempts":                {"alpha", "beta", "ws-a", "ws-b"},
		"lifeline.websocket.handshake.duration": {"ws-a", "ws-b"},
	} {
		var got []string
		for n := range byMetric[metric] {
			got = append(got, n)
		}
		sort.Strings(got)
		assert.Equal(t, want, got, "names on %s", metric)
	}

	spanNames := map[string]map[string]bool{}
	for _, s := range rg.spans.Ended() {
		name := spanAttr(s, "lifeline.client.name")
		assert.Contains(t, names, name, "span %s", s.Name())
		if spanNames[s.Name()] == nil {
			spanNames[s.Name()] = map[string]bool{}
		}
		spanNames[s.Name()][name] = true
	}
	for span, want := range map[string][]string{
		"GET":                 {"alpha", "beta"},
		"dial":                {"alpha", "beta", "ws-a", "ws-b"},
		"dial.connect":        {"alpha", "beta", "ws-a", "ws-b"},
		"retry.attempt":       {"ws-a", "ws-b"},
		"websocket.handshake": {"ws-a", "ws-b"},
		"websocket.conn":      {"ws-a", "ws-b"},
	} {
		for _, n := range want {
			assert.True(t, spanNames[span][n], "no %s span named %s; have %v", span, n, spanNames[span])
		}
	}
}

// TestNamedDialerKeepsItsName: a Transport's Dialer with a Name of its own
// keeps it on the dials' telemetry; the Transport's own spans and points
// carry the Transport's.
func TestNamedDialerKeepsItsName(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	rg := newRig(t)
	tr := &transport.Transport{Name: "api", TracerProvider: rg.tp, MeterProvider: rg.mp,
		Dialer: &dial.Dialer{Name: "api-dialer"}}
	defer tr.CloseIdleConnections()
	resp, err := transport.NewClient(tr).Get(srv.URL)
	require.NoError(t, err)
	_, _ = io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	for metric, sets := range rg.pointSets(t) {
		want := "api"
		if slices.Contains([]string{"lifeline.dial.duration", "lifeline.dial.attempts"}, metric) {
			want = "api-dialer"
		}
		for _, set := range sets {
			assert.Equal(t, want, val(set, "lifeline.client.name"), metric)
		}
	}
	for _, s := range rg.spans.Ended() {
		want := "api"
		if s.Name() == "dial" || s.Name() == "dial.connect" {
			want = "api-dialer"
		}
		assert.Equal(t, want, spanAttr(s, "lifeline.client.name"), s.Name())
	}
}

// TestUnnamedClientHasNoNameAttribute: Name "" adds nothing.
func TestUnnamedClientHasNoNameAttribute(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(hello))
	defer srv.Close()
	rg := newRig(t)
	tr := &transport.Transport{TracerProvider: rg.tp, MeterProvider: rg.mp}
	defer tr.CloseIdleConnections()
	resp, err := transport.NewClient(tr).Get(srv.URL)
	require.NoError(t, err)
	_, _ = io.ReadAll(resp.Body)
	require.NoError(t, resp.Body.Close())
	sets := rg.pointSets(t)
	require.NotEmpty(t, sets["http.client.request.duration"])
	for metric, sets := range sets {
		for _, set := range sets {
			_, ok := set.Value("lifeline.client.name")
			assert.False(t, ok, metric)
		}
	}
	for _, s := range rg.spans.Ended() {
		assert.Empty(t, spanAttr(s, "lifeline.client.name"), s.Name())
	}
}

// TestRequestDurationSemconv: http.client.request.duration in seconds,
// with the conventions' buckets, one point per HTTP request sent (each
// try), with method, status, error.type, server address and port, scheme
// and protocol version.
func TestRequestDurationSemconv(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/missing":
			w.WriteHeader(http.StatusNotFound)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())

	// A port nothing listens on: a dial error, no answer.
	closed := faultnet.RefusedAddr(t, "tcp")

	rg := newRig(t)
	tr := &transport.Transport{TracerProvider: rg.tp, MeterProvider: rg.mp,
		TLSClientConfig: &tls.Config{RootCAs: pool}, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	c := transport.NewClient(tr)
	for _, path := range []string{"/ok", "/missing"} {
		resp, err := c.Get(srv.URL + path)
		require.NoError(t, err)
		_, _ = io.ReadAll(resp.Body)
		require.NoError(t, resp.Body.Close())
	}
	_, err := c.Get("http://" + closed + "/")
	require.Error(t, err)

	var rm metricdata.ResourceMetrics
	require.NoError(t, rg.reader.Collect(t.Context(), &rm))
	var h *metricdata.Metrics
	for _, sm := range rm.ScopeMetrics {
		for i, m := range sm.Metrics {
			if m.Name == "http.client.request.duration" {
				h = &sm.Metrics[i]
			}
		}
	}
	require.NotNil(t, h, "http.client.request.duration recorded")
	assert.Equal(t, "s", h.Unit)
	points := h.Data.(metricdata.Histogram[float64]).DataPoints
	require.Len(t, points, 3)
	byStatus := map[string]metricdata.HistogramDataPoint[float64]{}
	for _, p := range points {
		assert.Equal(t, []float64{0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10}, p.Bounds)
		assert.EqualValues(t, 1, p.Count)
		assert.Less(t, p.Sum, 5.0, "seconds, not milliseconds")
		byStatus[val(p.Attributes, "http.response.status_code")] = p
	}
	ok := byStatus["200"].Attributes
	assert.Equal(t, map[string]string{
		"http.request.method": "GET", "http.response.status_code": "200", "server.address": "127.0.0.1",
		"server.port": port, "url.scheme": "https", "network.protocol.version": "2",
	}, attrMap(ok))
	missing := byStatus["404"].Attributes
	assert.Equal(t, "404", val(missing, "error.type"))
	assert.Equal(t, "2", val(missing, "network.protocol.version"))
	failed := byStatus[""].Attributes
	assert.Equal(t, "connect_refused", val(failed, "error.type"), "the dial error names itself")
	assert.Equal(t, "http", val(failed, "url.scheme"))
	_, hasVersion := failed.Value("network.protocol.version")
	assert.False(t, hasVersion, "no answer, no protocol version")
}

func attrMap(set attribute.Set) map[string]string {
	out := map[string]string{}
	for _, kv := range set.ToSlice() {
		out[string(kv.Key)] = kv.Value.String()
	}
	return out
}

// saysOnce fails when text repeats a phrase the error texts used to say
// twice.
func saysOnce(t *testing.T, text string) {
	t.Helper()
	for _, phrase := range []string{"retry: ", "websocket: ", "transport: ", "context deadline exceeded", "last error"} {
		assert.LessOrEqual(t, strings.Count(text, phrase), 1, "%q says %q more than once", text, phrase)
	}
}

// TestErrorTextsThroughRetrySayEachThingOnce: the Transport's and the
// WebSocketDialer's errors inside retry's: a first-byte TimeoutError
// exhausted, a dial error refused by the budget, a websocket handshake
// answered 503 — each thing said once, the chain intact.
func TestErrorTextsThroughRetrySayEachThingOnce(t *testing.T) {
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(5 * time.Second):
		}
	}))
	defer hang.Close()
	closed := faultnet.RefusedAddr(t, "tcp")

	t.Run("first-byte timeouts exhausted", func(t *testing.T) {
		tr := &transport.Transport{FirstByteTimeout: 50 * time.Millisecond, Retry: &retry.Policy{InitialInterval: time.Millisecond}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, hang.URL, nil)
		_, err := tr.RoundTrip(req)
		require.Error(t, err)
		host := strings.TrimPrefix(hang.URL, "http://")
		assert.Equal(t, "retry: 3 attempts failed: transport: GET "+host+": first_byte: no response headers within 50ms of the request", err.Error())
		saysOnce(t, err.Error())
		var te *transport.TimeoutError
		assert.ErrorAs(t, err, &te)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.ErrorIs(t, err, retry.ErrExhausted)
	})
	t.Run("budget refusal of a dial error", func(t *testing.T) {
		b := retry.NewBudget(0, 0)
		for b.Withdraw() {
		}
		tr := &transport.Transport{Retry: &retry.Policy{Budget: b}}
		defer tr.CloseIdleConnections()
		req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://"+closed+"/", nil)
		_, err := tr.RoundTrip(req)
		require.Error(t, err)
		assert.Equal(t, "retry: stopped after 1 attempt: retry budget exhausted: last error: dial tcp "+closed+": connect: connection refused", err.Error())
		saysOnce(t, err.Error())
		var de *dial.Error
		assert.ErrorAs(t, err, &de)
		assert.ErrorIs(t, err, retry.ErrBudgetExhausted)
	})
	t.Run("caller's deadline", func(t *testing.T) {
		tr := &transport.Transport{Retry: &retry.Policy{InitialInterval: time.Millisecond}}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(t.Context(), 80*time.Millisecond)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, hang.URL, nil)
		_, err := tr.RoundTrip(req)
		require.Error(t, err)
		saysOnce(t, err.Error())
		assert.ErrorIs(t, err, context.DeadlineExceeded)
	})
	t.Run("websocket handshake answered 503", func(t *testing.T) {
		s := startWS(t, func(w http.ResponseWriter, r *http.Request) { w.WriteHeader(http.StatusServiceUnavailable) }, nil)
		_, _, err := fastDialer(2).Dial(t.Context(), wsURL("ws", s, "/"), nil)
		require.Error(t, err)
		assert.Equal(t, "retry: 2 attempts failed: websocket: handshake with "+wsURL("ws", s, "/")+": 503 Service Unavailable: bad handshake", err.Error())
		saysOnce(t, err.Error())
		var he *transport.HandshakeError
		require.ErrorAs(t, err, &he)
		assert.Equal(t, http.StatusServiceUnavailable, he.StatusCode)
		assert.ErrorIs(t, err, websocket.ErrBadHandshake)
	})
}

// TestNamedSessionReconnects: a session's own telemetry (its reconnect
// spans, its reconnect and outage metrics) carries its Dialer's Name.
func TestNamedSessionReconnects(t *testing.T) {
	var conns atomic.Int32
	ws := startWS(t, func(w http.ResponseWriter, r *http.Request) {
		if conns.Add(1) == 1 {
			c, err := upgrader.Upgrade(w, r, nil)
			if err == nil {
				_ = c.Close() // the first connection drops at once
			}
			return
		}
		echo(w, r)
	}, nil)
	rg := newRig(t)
	d := fastDialer(1)
	d.Name, d.TracerProvider, d.MeterProvider = "signal", rg.tp, rg.mp
	var connected atomic.Int32
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: wsURL("ws", ws, "/"), Dialer: d,
		OnStateChange: func(st transport.WebSocketState) {
			if st == transport.WebSocketConnected {
				connected.Add(1)
			}
		},
	})
	require.NoError(t, err)
	eventually(t, 10*time.Second, "connected again after the drop", func() bool { return connected.Load() >= 2 })
	require.NoError(t, s.Close())

	sets := rg.pointSets(t)
	for _, metric := range []string{"lifeline.websocket.reconnects", "lifeline.websocket.disconnected.duration"} {
		require.NotEmpty(t, sets[metric], metric)
	}
	for metric, sets := range sets {
		for _, set := range sets {
			assert.Equal(t, "signal", val(set, "lifeline.client.name"), metric)
		}
	}
	reconnectSpans := 0
	for _, sp := range rg.spans.Ended() {
		assert.Equal(t, "signal", spanAttr(sp, "lifeline.client.name"), sp.Name())
		if sp.Name() == "websocket.reconnect" {
			reconnectSpans++
		}
	}
	assert.Positive(t, reconnectSpans, "a websocket.reconnect span")
}
