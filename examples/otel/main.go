// Command otel shows what lifeline sends to an OpenTelemetry backend after
// a faulty call, using the OTel SDK with its stdout exporters in place of
// a collector: the spans of every attempt (the dial and its race, each
// address's connect and TLS handshake, each retry attempt, each HTTP try)
// and the lifeline.masked_failures counter that says which address failed
// in which phase while the call itself succeeded.
//
// The faults, on loopback: api.lifeline.test resolves to 127.0.0.3, whose
// server accepts and never answers the TLS handshake (incident 01's load
// balancer), and 127.0.0.2, which answers — but with a 503 to the first
// request. One GET through lifeline's transport succeeds: the race
// overtakes the stalled handshake after AttemptDelay, and the retry policy
// resends after the 503. Then a raw TCP dial wrapped in retry.Do is refused
// by its first address and succeeds on its second attempt. Nothing failed
// for the caller; the telemetry shows all three faults.
//
// Run it with:
//
//	go run ./examples/otel            # the span tree and the counter, then the exporters' JSON
//	go run ./examples/otel -json=false
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"os"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

func main() {
	fs := flag.NewFlagSet("otel", flag.ExitOnError)
	jsonOut := fs.Bool("json", true, "also print what the stdout exporters emit (spans and metrics as JSON)")
	_ = fs.Parse(os.Args[1:])
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := run(ctx, os.Stdout, *jsonOut); err != nil {
		fmt.Fprintln(os.Stderr, "otel:", err)
		os.Exit(1)
	}
}

const host = "api.lifeline.test"

// run makes the faulty call with the OTel SDK installed, prints the span
// tree and the masked failures to out, and, with jsonOut, the stdout
// exporters' output after them.
func run(ctx context.Context, out io.Writer, jsonOut bool) error {
	serverTLS, clientTLS, err := faultnet.NewSelfSigned(host)
	if err != nil {
		return err
	}
	good, stalled, err := startServers(serverTLS)
	if err != nil {
		return err
	}
	defer good.close()
	defer stalled.close()

	// The SDK: spans to the stdout exporter (and to memory, for the tree
	// printed first), metrics to the stdout exporter (and to a manual
	// reader, for the counter).
	var exported strings.Builder
	spanJSON, err := stdouttrace.New(stdouttrace.WithWriter(&exported), stdouttrace.WithPrettyPrint())
	if err != nil {
		return err
	}
	mem := tracetest.NewInMemoryExporter()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(spanJSON), sdktrace.WithSyncer(mem))
	defer func() { _ = tp.Shutdown(context.Background()) }()
	var metricsOut strings.Builder
	metricJSON, err := stdoutmetric.New(stdoutmetric.WithWriter(&metricsOut), stdoutmetric.WithPrettyPrint())
	if err != nil {
		return err
	}
	manual := sdkmetric.NewManualReader()
	periodic := sdkmetric.NewPeriodicReader(metricJSON, sdkmetric.WithInterval(time.Hour))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(manual), sdkmetric.WithReader(periodic))
	defer func() { _ = mp.Shutdown(context.Background()) }()

	port := good.addr.Port()
	tr := &transport.Transport{
		Dialer: &dial.Dialer{
			// The stalling address first, as a round-robin answer would put
			// it for half of the dials.
			Resolver:     staticResolver{netip.MustParseAddr("127.0.0.3"), netip.MustParseAddr("127.0.0.2")},
			AttemptDelay: 100 * time.Millisecond,
			Health:       &dial.Health{}, // peers it remembers are labelled by IP
		},
		TLSClientConfig: clientTLS,
		Retry:           &retry.Policy{InitialInterval: 10 * time.Millisecond},
		TracerProvider:  tp,
		MeterProvider:   mp,
	}
	client := transport.NewClient(tr)
	defer tr.CloseIdleConnections()

	// The caller's span: lifeline's spans are its children.
	cctx, span := tp.Tracer("example/checkout").Start(ctx, "checkout")
	status, body, err := get(cctx, client, fmt.Sprintf("https://%s:%d/items?token=secret", host, port))
	if err != nil {
		span.End()
		return fmt.Errorf("the call failed: %w", err)
	}
	// A raw TCP client (a cache, a database) retried with retry.Do: its
	// first attempt gets an answer naming an address where nothing listens
	// (refused), the second the address that works — a failover the caller
	// never sees.
	cache := &dial.Dialer{
		Resolver: failover{first: netip.MustParseAddr("127.0.0.4"), then: netip.MustParseAddr("127.0.0.2")},
		Health:   &dial.Health{}, TracerProvider: tp, MeterProvider: mp,
	}
	policy := &retry.Policy{InitialInterval: 10 * time.Millisecond, TracerProvider: tp, MeterProvider: mp}
	conn, err := retry.Do(cctx, policy, func(ctx context.Context) (net.Conn, error) {
		return cache.DialContext(ctx, "tcp", fmt.Sprintf("cache.lifeline.test:%d", port))
	})
	span.End()
	if err != nil {
		return fmt.Errorf("the cache dial failed: %w", err)
	}
	_ = conn.Close()
	fmt.Fprintf(out, "the calls: GET %d %q and a cache connection — both succeeded; here is what the telemetry says happened.\n\n", status, body)

	// The spans, as a tree.
	fmt.Fprintln(out, "spans (one per attempt):")
	writeTree(out, mem.GetSpans())

	// The masked failures.
	var rm metricdata.ResourceMetrics
	if err := manual.Collect(ctx, &rm); err != nil {
		return err
	}
	fmt.Fprintln(out, "\nlifeline.masked_failures (failures the call hid from its caller):")
	for _, line := range maskedLines(rm) {
		fmt.Fprintln(out, "  "+line)
	}

	if jsonOut {
		if err := periodic.ForceFlush(ctx); err != nil {
			return err
		}
		fmt.Fprintln(out, "\n--- stdouttrace (what a trace backend receives) ---")
		fmt.Fprint(out, exported.String())
		fmt.Fprintln(out, "--- stdoutmetric (what a metrics backend receives) ---")
		fmt.Fprint(out, metricsOut.String())
	}
	return nil
}

// get makes one GET and reads the answer.
func get(ctx context.Context, c *http.Client, url string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}

// staticResolver answers every name with its addresses, in order.
type staticResolver []netip.Addr

func (r staticResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	return r, nil
}

// failover answers with first on a retry.Do's first attempt and with then
// afterwards.
type failover struct{ first, then netip.Addr }

func (f failover) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if retry.Attempt(ctx) <= 1 {
		return []netip.Addr{f.first}, nil
	}
	return []netip.Addr{f.then}, nil
}

// server is a loopback listener with the goroutines serving it; close
// ends them all.
type server struct {
	addr  netip.AddrPort
	close func()
}

// startServers starts, on one port, an HTTPS server on 127.0.0.2 that
// answers the first request with 503 and the others with 200, and on
// 127.0.0.3 a listener that accepts, reads, and never answers.
func startServers(cfg *tls.Config) (good, stalled *server, err error) {
	for range 8 { // the port may be taken on 127.0.0.3: pick another
		gl, err := net.Listen("tcp", "127.0.0.2:0")
		if err != nil {
			return nil, nil, err
		}
		ap := gl.Addr().(*net.TCPAddr).AddrPort()
		sl, err := net.Listen("tcp", netip.AddrPortFrom(netip.MustParseAddr("127.0.0.3"), ap.Port()).String())
		if err != nil {
			gl.Close()
			continue
		}
		return serveGood(gl, cfg), serveStalled(sl), nil
	}
	return nil, nil, errors.New("no port free on both 127.0.0.2 and 127.0.0.3")
}

func serveGood(ln net.Listener, cfg *tls.Config) *server {
	var n atomic.Int32
	srv := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if n.Add(1) == 1 {
				w.Header().Set("Retry-After", "0")
				http.Error(w, "busy", http.StatusServiceUnavailable)
				return
			}
			_, _ = io.WriteString(w, "ok")
		}),
		TLSConfig:         cfg,
		ReadHeaderTimeout: 5 * time.Second,
		// The cache client connects and closes without a handshake: its
		// "TLS handshake error" lines are noise here.
		ErrorLog: log.New(io.Discard, "", 0),
	}
	done := make(chan struct{})
	// Ends when close makes ServeTLS return.
	go func() {
		defer close(done)
		_ = srv.ServeTLS(ln, "", "")
	}()
	return &server{addr: ln.Addr().(*net.TCPAddr).AddrPort(), close: func() { _ = srv.Close(); <-done }}
}

func serveStalled(ln net.Listener) *server {
	var (
		mu    sync.Mutex
		conns []net.Conn
		wg    sync.WaitGroup
	)
	wg.Add(1)
	// Accepts until close; each conn is read and never answered, and
	// closed by close.
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, _ = io.Copy(io.Discard, c)
			}()
		}
	}()
	return &server{addr: ln.Addr().(*net.TCPAddr).AddrPort(), close: func() {
		ln.Close()
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	}}
}

// shownAttrs are the attributes the tree prints, in this order.
var shownAttrs = []attribute.Key{
	"lifeline.retry.attempt", "http.request.resend_count", "network.peer.address", "lifeline.dial.race_index",
	"lifeline.outcome", "http.response.status_code", "error.type", "url.full",
}

// writeTree prints spans as a tree under their parents, children in start
// order, with the attributes that tell the story.
func writeTree(w io.Writer, spans tracetest.SpanStubs) {
	children := make(map[string][]tracetest.SpanStub)
	ids := make(map[string]bool)
	for _, s := range spans {
		ids[s.SpanContext.SpanID().String()] = true
	}
	var roots []tracetest.SpanStub
	for _, s := range spans {
		p := s.Parent.SpanID().String()
		if s.Parent.IsValid() && ids[p] {
			children[p] = append(children[p], s)
		} else {
			roots = append(roots, s)
		}
	}
	byStart := func(l []tracetest.SpanStub) {
		sort.SliceStable(l, func(i, j int) bool { return l[i].StartTime.Before(l[j].StartTime) })
	}
	var walk func(s tracetest.SpanStub, depth int)
	walk = func(s tracetest.SpanStub, depth int) {
		var b strings.Builder
		fmt.Fprintf(&b, "%s%s", strings.Repeat("  ", depth+1), s.Name)
		attrs := make(map[attribute.Key]attribute.Value)
		for _, kv := range s.Attributes {
			attrs[kv.Key] = kv.Value
		}
		for _, k := range shownAttrs {
			if v, ok := attrs[k]; ok {
				fmt.Fprintf(&b, " %s=%s", k, v.String())
			}
		}
		if s.Status.Code == codes.Error {
			fmt.Fprintf(&b, " [error: %s]", s.Status.Description)
		}
		fmt.Fprintln(w, b.String())
		kids := children[s.SpanContext.SpanID().String()]
		byStart(kids)
		for _, k := range kids {
			walk(k, depth+1)
		}
	}
	byStart(roots)
	for _, r := range roots {
		walk(r, 0)
	}
}

// maskedLines returns one line per lifeline.masked_failures point.
func maskedLines(rm metricdata.ResourceMetrics) []string {
	var out []string
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "lifeline.masked_failures" {
				continue
			}
			sum, ok := m.Data.(metricdata.Sum[int64])
			if !ok {
				continue
			}
			for _, p := range sum.DataPoints {
				get := func(k attribute.Key) string {
					v, _ := p.Attributes.Value(k)
					return v.String()
				}
				out = append(out, fmt.Sprintf("masked_by=%s phase=%s network.peer.address=%s error.type=%s  %d   (scope %s)",
					get("lifeline.masked_by"), get("lifeline.phase"), get("network.peer.address"), get("error.type"),
					p.Value, sm.Scope.Name))
			}
		}
	}
	sort.Strings(out)
	if len(out) == 0 {
		out = append(out, "(none)")
	}
	return out
}
