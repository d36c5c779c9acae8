package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestWebSocketSessionMaskedDials: a session whose first dial stalls in
// the upgrade (cut by HandshakeTimeout) and whose second gets a 503
// connects on the third; the two failed dials are counted on
// lifeline.masked_failures with masked_by=retry (phase, error.type), and
// OnDialFailed saw each, in order, before the state went disconnected.
func TestWebSocketSessionMaskedDials(t *testing.T) {
	var n atomic.Int64
	release := make(chan struct{})
	srv := startWS(t, func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) {
		case 1:
			<-release // silent: the upgrade's answer never comes
		case 2:
			http.Error(w, "busy", http.StatusServiceUnavailable)
		default:
			echo(w, r)
		}
	}, nil)
	defer close(release)
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	d := sessionDialer()
	d.HandshakeTimeout = 200 * time.Millisecond
	d.MeterProvider = mp

	var mu sync.Mutex
	var seen []string // "fail:<error.type>" and "state:<state>" in hook order
	s := newSession(t, transport.WebSocketSessionConfig{
		URL:    wsURL("ws", srv, "/"),
		Dialer: d,
		OnDialFailed: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			var he *transport.HandshakeError
			if !errors.As(err, &he) {
				t.Errorf("OnDialFailed: %T %v, want a *HandshakeError", err, err)
			}
			seen = append(seen, "fail:"+he.ErrorType())
		},
		OnStateChange: func(st transport.WebSocketState) {
			mu.Lock()
			defer mu.Unlock()
			seen = append(seen, "state:"+st.String())
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	got := append([]string(nil), seen...)
	mu.Unlock()
	var fails []string
	for i, e := range got {
		if len(e) > 5 && e[:5] == "fail:" {
			fails = append(fails, e[5:])
			if i+1 >= len(got) || got[i+1] != "state:disconnected" {
				t.Errorf("hooks %v: OnDialFailed not followed by the disconnected state", got)
			}
		}
	}
	if len(fails) != 2 || fails[1] != "http_503" {
		t.Fatalf("OnDialFailed saw %v, want the stalled handshake then http_503 (hooks %v)", fails, got)
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	byType := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "lifeline.masked_failures" {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				by, _ := p.Attributes.Value("lifeline.masked_by")
				phase, _ := p.Attributes.Value("lifeline.phase")
				et, _ := p.Attributes.Value("error.type")
				if by.AsString() != "retry" {
					continue
				}
				if phase.AsString() == "" {
					t.Errorf("masked point without a phase: %v", p.Attributes.ToSlice())
				}
				byType[et.AsString()] += p.Value
			}
		}
	}
	if byType["http_503"] != 1 || byType[fails[0]] != 1 || len(byType) != 2 {
		t.Fatalf("masked_failures by error.type %v, want one %s and one http_503", byType, fails[0])
	}
}

// OnDialFailed learns why each dial the session will retry failed, as
// OnDisconnect learns why a connection was lost; the failures a later dial
// recovered are also counted on lifeline.masked_failures.
func ExampleWebSocketSessionConfig_onDialFailed() {
	var n atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			http.Error(w, "busy", http.StatusServiceUnavailable) // the first upgrade
			return
		}
		echo(w, r)
	}))
	defer srv.Close()

	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws" + strings.TrimPrefix(srv.URL, "http") + "/",
		Dialer: &transport.WebSocketDialer{
			Retry: &retry.Policy{InitialInterval: 10 * time.Millisecond},
		},
		OnDialFailed: func(err error) {
			var he *transport.HandshakeError
			if errors.As(err, &he) {
				fmt.Println("dial failed:", he.ErrorType())
			}
		},
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer s.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	fmt.Println("connected:", s.WaitConnected(ctx) == nil)
	// Output:
	// dial failed: http_503
	// connected: true
}
