// Command probe is the per-address check that incidents 01 and 02 lacked:
// it resolves a name and establishes a connection to each of its addresses
// directly — no race, no retry — many times per interval, with a strict
// limit on every phase (TCP connect, TLS handshake, and optionally an HTTP
// request or a websocket upgrade). For each address and phase it reports
// successes, stalls, refusals, resets and other errors and the latency
// percentiles of the successes; beside them, what a user would have seen
// through lifeline's race: the success and latency of a raced dial to the
// name, under the same phase limits (so that it too ends within them). A
// load balancer that hangs one connection in twelve shows up as
// stalls on its address while the raced column stays at 100%.
//
// It builds on [dial.Dialer.Probe] (every address of the answer at once,
// one attempt each, bounded by the Dialer's phase limits) and [dial.Health]
// (the report shows each address's score). With -http or -ws each sample
// dials the address itself (its IP, one attempt, no race) so that the
// request rides the conn whose connect and handshake were measured.
//
// Modes:
//
//	probe -target api.example.com:443 -tls -once        # one interval, table, exit 1 if an address crosses a threshold
//	probe -target api.example.com:443 -tls -once -json  # the same as JSON
//	probe -target api.example.com:443 -tls -http /healthz -listen 127.0.0.1:9465
//	                                                    # continuous: a report per interval, metrics on /metrics
//
// Exit status in one-shot mode: 0 when every address probed stayed within
// -max-fail and -max-p99 and the name resolved in every round (or in as
// many as -max-fail allows), 1 when not (the report's FAILING lines name
// the address and phase, or the failed resolutions), 2 on bad flags or
// when the name never resolved.
//
// Metrics (OpenTelemetry, served for Prometheus by
// go.opentelemetry.io/otel/exporters/prometheus): lifeline_probe_results_total
// {network_peer_address, lifeline_phase, lifeline_probe_result},
// lifeline_probe_latency_seconds{lifeline_probe_quantile},
// lifeline_probe_raced_total, lifeline_probe_raced_latency_seconds
// {lifeline_probe_quantile} and lifeline_probe_addresses, each
// with server_address and server_port. Only addresses in the current answer
// become labels: an address that leaves it is no longer exported. The rules
// in alerts/lifeline-probe.rules.yml alert on them.
//
// The probe lives in lifeline's root module, so that operators can install
// it with `go install github.com/lifeline-go/lifeline/examples/probe@latest`
// (a module with replace directives, like examples/interop, cannot be
// installed that way); the price is the Prometheus exporter's requirements
// in the root go.mod, which module graph pruning keeps out of the builds of
// programs that import only the library.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/lifeline-go/lifeline/dial"
)

func main() {
	o, err := parseFlags(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	code, err := run(ctx, o, os.Stdout, os.Stderr)
	if err != nil {
		fmt.Fprintln(os.Stderr, "probe:", err)
	}
	os.Exit(code)
}

// options are the command line.
type options struct {
	config
	thresholds
	once    bool
	json    bool
	listen  string // continuous mode: serve /metrics here ("": no server)
	count   int    // continuous mode: stop after this many intervals (0: never)
	quiet   bool   // continuous mode: no report per interval
	caFile  string
	resolve string // "host=ip,ip": a fixed answer instead of DNS
}

// parseFlags reads the command line; errors (and -h) are printed to errOut.
func parseFlags(args []string, errOut io.Writer) (options, error) {
	fs := flag.NewFlagSet("probe", flag.ContinueOnError)
	fs.SetOutput(errOut)
	var o options
	fs.StringVar(&o.target, "target", "", "host:port to probe (required)")
	fs.BoolVar(&o.useTLS, "tls", false, "complete a TLS handshake after connect")
	fs.StringVar(&o.serverName, "servername", "", "TLS server name (SNI, certificate) and HTTP Host; default: the target's host")
	fs.StringVar(&o.caFile, "ca", "", "PEM file of the CAs to trust (default: the system's)")
	fs.StringVar(&o.httpPath, "http", "", "after the handshake, GET this path and expect a 2xx or 3xx answer")
	fs.StringVar(&o.wsPath, "ws", "", "after the handshake, make a websocket upgrade on this path and expect 101")
	fs.IntVar(&o.samples, "n", 20, "samples of each address per interval")
	fs.DurationVar(&o.interval, "interval", 10*time.Second, "length of one interval (one report)")
	fs.DurationVar(&o.connect, "connect-timeout", time.Second, "limit of the TCP connect")
	fs.DurationVar(&o.handshake, "tls-timeout", time.Second, "limit of the TLS handshake")
	fs.DurationVar(&o.request, "request-timeout", 2*time.Second, "limit from the request to the response headers (-http, -ws)")
	fs.BoolVar(&o.once, "once", false, "one interval, then exit 1 when an address crosses a threshold")
	fs.BoolVar(&o.json, "json", false, "print reports as JSON")
	fs.StringVar(&o.listen, "listen", "", "continuous mode: serve Prometheus metrics on this address at /metrics")
	fs.IntVar(&o.count, "count", 0, "continuous mode: stop after this many intervals (0: run until interrupted)")
	fs.BoolVar(&o.quiet, "quiet", false, "continuous mode: print no report")
	fs.Float64Var(&o.maxFailure, "max-fail", 0, "failure ratio of any phase of any address above which it is FAILING (negative: off)")
	fs.DurationVar(&o.maxP99, "max-p99", 0, "p99 of any phase of any address above which it is FAILING (0: off)")
	fs.StringVar(&o.resolve, "resolve", "", "host=ip[,ip...]: use this answer for host instead of DNS")
	if err := fs.Parse(args); err != nil {
		return o, err
	}
	bad := func(format string, a ...any) (options, error) {
		err := fmt.Errorf(format, a...)
		fmt.Fprintln(errOut, "probe:", err)
		return o, err
	}
	switch {
	case fs.NArg() > 0:
		return bad("unexpected arguments %q", fs.Args())
	case o.target == "":
		return bad("-target host:port is required")
	case o.samples < 1:
		return bad("-n must be at least 1")
	case o.interval <= 0 || o.connect <= 0 || o.handshake <= 0 || o.request <= 0:
		return bad("-interval and the timeouts must be positive")
	case o.httpPath != "" && o.wsPath != "":
		return bad("-http and -ws exclude each other")
	case o.once && o.listen != "":
		return bad("-once and -listen exclude each other")
	}
	for _, p := range []*string{&o.httpPath, &o.wsPath} {
		if *p != "" && !strings.HasPrefix(*p, "/") {
			return bad("a request path must start with /: %q", *p)
		}
	}
	if _, _, err := net.SplitHostPort(o.target); err != nil {
		return bad("-target: %v", err)
	}
	if o.caFile != "" {
		pem, err := os.ReadFile(o.caFile)
		if err != nil {
			return bad("-ca: %v", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return bad("-ca: no certificate in %s", o.caFile)
		}
		o.tlsConfig = &tls.Config{RootCAs: pool}
	}
	if o.resolve != "" {
		r, err := parseResolve(o.resolve)
		if err != nil {
			return bad("-resolve: %v", err)
		}
		o.resolver = r
	}
	return o, nil
}

// staticResolver answers one host with fixed addresses (-resolve) and
// every other host through DNS.
type staticResolver struct {
	host  string
	addrs []netip.Addr
}

func parseResolve(s string) (*staticResolver, error) {
	host, list, ok := strings.Cut(s, "=")
	if !ok || host == "" || list == "" {
		return nil, fmt.Errorf("want host=ip[,ip...], got %q", s)
	}
	r := &staticResolver{host: host}
	for _, f := range strings.Split(list, ",") {
		ip, err := netip.ParseAddr(strings.TrimSpace(f))
		if err != nil {
			return nil, err
		}
		r.addrs = append(r.addrs, ip)
	}
	return r, nil
}

// LookupNetIP implements dial.Resolver.
func (r *staticResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if !strings.EqualFold(host, r.host) {
		return net.DefaultResolver.LookupNetIP(ctx, network, host)
	}
	var out []netip.Addr
	for _, ip := range r.addrs {
		if network == "ip" || network == "ip4" && ip.Is4() || network == "ip6" && ip.Is6() {
			out = append(out, ip)
		}
	}
	return out, nil
}

var _ dial.Resolver = (*staticResolver)(nil)

// run probes as o says and returns the exit status.
func run(ctx context.Context, o options, out, errOut io.Writer) (int, error) {
	p, err := newProber(o.config)
	if err != nil {
		return 2, err
	}
	c := newCollector(p)
	write := func(r *Report) error {
		if o.json {
			return writeJSON(out, r)
		}
		err := writeTable(out, r)
		fmt.Fprintln(out)
		return err
	}
	if o.once {
		r := c.interval(ctx)
		o.thresholds.judge(r)
		if err := write(r); err != nil {
			return 2, err
		}
		switch {
		case len(r.Addresses) == 0:
			return 2, errors.New("no address was probed: " + strings.Join(r.Errors, "; "))
		case len(r.Failing) > 0:
			return 1, nil
		}
		return 0, nil
	}

	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		return 2, err
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	registration, err := registerMetrics(mp.Meter("github.com/lifeline-go/lifeline/examples/probe"), c)
	if err != nil {
		return 2, err
	}
	defer func() { _ = registration.Unregister() }()
	if o.listen != "" {
		ln, err := net.Listen("tcp", o.listen)
		if err != nil {
			return 2, err
		}
		mux := http.NewServeMux()
		mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
		srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
		done := make(chan struct{})
		// The server's goroutine ends when Close below makes Serve return;
		// run waits for it.
		go func() {
			defer close(done)
			_ = srv.Serve(ln)
		}()
		defer func() {
			_ = srv.Close()
			<-done
		}()
		fmt.Fprintf(errOut, "probe: metrics on http://%s/metrics\n", ln.Addr())
	}
	for i := 0; o.count == 0 || i < o.count; i++ {
		r := c.interval(ctx)
		if ctx.Err() != nil {
			return 0, nil
		}
		o.thresholds.judge(r)
		if !o.quiet {
			if err := write(r); err != nil {
				return 2, err
			}
		}
	}
	return 0, nil
}
