package dial_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"math/big"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
)

// testHost is the name the fake resolver answers for.
const testHost = "lifeline.test"

// fakeResolver answers from a map; hosts it does not know are "not found".
// With block set it waits for the context instead. It counts lookups.
type fakeResolver struct {
	addrs map[string][]netip.Addr
	err   error
	block bool
	calls atomic.Int32
}

func (r *fakeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.calls.Add(1)
	if r.block {
		<-ctx.Done()
		return nil, &net.DNSError{Err: ctx.Err().Error(), Name: host, IsTimeout: true}
	}
	if r.err != nil {
		return nil, r.err
	}
	ips, ok := r.addrs[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	var out []netip.Addr
	for _, ip := range ips {
		if (network == "ip4" && !ip.Is4()) || (network == "ip6" && !ip.Is6()) {
			continue
		}
		out = append(out, ip)
	}
	return out, nil
}

// resolverFor maps testHost to the given addresses ("127.0.0.2", "::1", or
// "host:port" strings whose host is used).
func resolverFor(addrs ...string) *fakeResolver {
	var ips []netip.Addr
	for _, a := range addrs {
		if ap, err := netip.ParseAddrPort(a); err == nil {
			ips = append(ips, ap.Addr())
			continue
		}
		ips = append(ips, netip.MustParseAddr(a))
	}
	return &fakeResolver{addrs: map[string][]netip.Addr{testHost: ips}}
}

func hostPort(port int) string { return net.JoinHostPort(testHost, itoa(port)) }

func itoa(n int) string { return strconv.Itoa(n) }

// telemetryRig records spans and metrics of the dials made with its providers.
type telemetryRig struct {
	spans  *tracetest.SpanRecorder
	tp     *sdktrace.TracerProvider
	reader *sdkmetric.ManualReader
	mp     *sdkmetric.MeterProvider
}

func newTelemetry(t *testing.T) *telemetryRig {
	t.Helper()
	r := &telemetryRig{spans: tracetest.NewSpanRecorder(), reader: sdkmetric.NewManualReader()}
	r.tp = sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(r.spans))
	r.mp = sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader))
	t.Cleanup(func() {
		_ = r.tp.Shutdown(context.Background())
		_ = r.mp.Shutdown(context.Background())
	})
	return r
}

// spansNamed returns the ended spans called name, in the order they started.
func (r *telemetryRig) spansNamed(name string) []sdktrace.ReadOnlySpan {
	var out []sdktrace.ReadOnlySpan
	for _, s := range r.spans.Ended() {
		if s.Name() == name {
			out = append(out, s)
		}
	}
	for i := 1; i < len(out); i++ {
		for j := i; j > 0 && out[j].StartTime().Before(out[j-1].StartTime()); j-- {
			out[j], out[j-1] = out[j-1], out[j]
		}
	}
	return out
}

func attr(s sdktrace.ReadOnlySpan, key string) (attribute.Value, bool) {
	for _, kv := range s.Attributes() {
		if string(kv.Key) == key {
			return kv.Value, true
		}
	}
	return attribute.Value{}, false
}

// metric collects and returns the data of the named metric, or nil.
func (r *telemetryRig) metric(t *testing.T, name string) metricdata.Aggregation {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.reader.Collect(context.Background(), &rm))
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name == name {
				return m.Data
			}
		}
	}
	return nil
}

// sumPoints returns the int64 sum data points of the named metric.
func (r *telemetryRig) sumPoints(t *testing.T, name string) []metricdata.DataPoint[int64] {
	t.Helper()
	s, _ := r.metric(t, name).(metricdata.Sum[int64])
	return s.DataPoints
}

// histPoints returns the histogram data points of the named metric.
func (r *telemetryRig) histPoints(t *testing.T, name string) []metricdata.HistogramDataPoint[float64] {
	t.Helper()
	h, _ := r.metric(t, name).(metricdata.Histogram[float64])
	return h.DataPoints
}

func setValue(set attribute.Set, key string) string {
	v, _ := set.Value(attribute.Key(key))
	return v.String()
}

// testCert makes a self-signed certificate for names and returns the server
// config (which records the SNI of each ClientHello into sni) and a client
// config that trusts it and has no ServerName.
func testCert(t testing.TB, names ...string) (server, client *tls.Config, sni *sniLog) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	require.NoError(t, err)
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(time.Now().UnixNano()),
		Subject:               pkix.Name{CommonName: names[0]},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		DNSNames:              names,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	require.NoError(t, err)
	cert, err := x509.ParseCertificate(der)
	require.NoError(t, err)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	sni = &sniLog{}
	server = &tls.Config{
		Certificates: []tls.Certificate{{Certificate: [][]byte{der}, PrivateKey: key, Leaf: cert}},
		NextProtos:   []string{"h2", "http/1.1"},
		GetConfigForClient: func(hello *tls.ClientHelloInfo) (*tls.Config, error) {
			sni.add(hello.ServerName)
			return nil, nil
		},
	}
	client = &tls.Config{RootCAs: pool}
	return server, client, sni
}

type sniLog struct {
	mu    sync.Mutex
	names []string
}

func (l *sniLog) add(s string) { l.mu.Lock(); l.names = append(l.names, s); l.mu.Unlock() }
func (l *sniLog) get() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return append([]string(nil), l.names...)
}

// checkFDs fails the test if the process has more open sockets at the end
// of the test (after its other cleanups) than at the start: a leaked conn
// is a leaked socket fd. Closes complete asynchronously in places, so it
// waits a little. Tests that call it must not run in parallel.
func checkFDs(t *testing.T) {
	t.Helper()
	before := socketFDs(t)
	t.Cleanup(func() {
		deadline := time.Now().Add(3 * time.Second)
		for {
			n := socketFDs(t)
			if n <= before {
				return
			}
			if time.Now().After(deadline) {
				t.Errorf("fd leak: %d open sockets before the test, %d after", before, n)
				return
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// socketFDs counts the process's open socket file descriptors.
func socketFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("fd count unavailable: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// hasIPv6Loopback reports whether ::1 can be listened on.
func hasIPv6Loopback() bool {
	ln, err := net.Listen("tcp6", "[::1]:0")
	if err != nil {
		return false
	}
	ln.Close()
	return true
}

func requireIPv6(t *testing.T) {
	t.Helper()
	if !hasIPv6Loopback() {
		t.Skip("::1 is not available on this machine")
	}
}

// netKeepAliveOff turns TCP keep-alive off in a Dialer.
var netKeepAliveOff = net.KeepAliveConfig{Idle: -1}

// benchCerts is testCert for benchmarks, without the SNI log.
func benchCerts(b *testing.B) (server, client *tls.Config) {
	server, client, _ = testCert(b, testHost)
	server.GetConfigForClient = nil
	return server, client
}
