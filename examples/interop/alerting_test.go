package interop_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/transport"
)

// Topology of the replay (incidents 01 and 02), loopback only:
//
//	client app (this process)                 nginx (stream, 1 worker)                  backends (this process)
//	  GET https://lb.test:P/ 10/s,     ┌──> 127.0.0.2:P  proxy_pass healthy ───────────> good: HTTPS 200 "ok"
//	  a new connection each;      ─────┤                                           ┌──> (127.0.0.1, TLS ends here)
//	  lb.test → 127.0.0.2, .3          └──> 127.0.0.3:P  proxy_pass degraded ──────┤ 11
//	  (order rotated per lookup)                         (weighted round-robin)    └──> hang: forwards to good until
//	  serves /metrics (OTel → Prometheus)                                         1       the fault, then accepts
//	                                                                                      and never answers
//	Prometheus: scrapes the app every 2s, evaluates alerts/lifeline.rules.yml
//	            and the blackbox rules every 1s, sends to Alertmanager;
//	            scrapes blackbox_exporter for each LB address every 5s.
//	Alertmanager → webhook (this test).
//
// The two load-balancer addresses are the two peers the client sees, so a
// masked failure names the address whose sessions hang (127.0.0.3): after
// the fault, 1 TLS session in 12 through it reaches the hanging backend,
// and TLS through nginx's stream module is passed to the backend, so the
// client's handshake stalls (incident 01's NLBs hung "before reaching our
// backend servers"). lifeline's race overtakes the stalled handshake with
// the other address after AttemptDelay: no call fails, and the stall is
// counted on lifeline.masked_failures{masked_by=race, phase=tls, peer}.

// TestAlertingReplay replays incident 01 with real parts and measures how
// long lifeline's shipped alert takes to reach a person, beside
// blackbox_exporter probing each load-balancer address. It asserts: no
// client call failed; the webhook received LifelineMaskedFailures naming
// 127.0.0.3 and the tls phase within 60s of the fault; no alert ever named
// the healthy address; nothing fired before the fault. It prints the
// timeline.
func TestAlertingReplay(t *testing.T) {
	if testing.Short() {
		t.Skip("interop: the alerting replay takes about a minute")
	}
	bins := installStack(t)
	dir := t.TempDir()
	alertsAbs, err := filepath.Abs(alertsDir)
	if err != nil {
		t.Fatal(err)
	}

	// Backends and the load balancer.
	serverTLS, roots, caFile := selfSignedFor(t, dir, "lb.test", "127.0.0.2", "127.0.0.3")
	good := startGoodBackend(t, serverTLS)
	hang := startHangBackend(t, good)
	lbPort := sharedPort(t, "127.0.0.2", "127.0.0.3")
	healthy := "127.0.0.2:" + strconv.Itoa(lbPort)
	degraded := "127.0.0.3:" + strconv.Itoa(lbPort)
	nginxConf := writeFile(t, dir, "nginx.conf", fmt.Sprintf(`
load_module %s;
daemon off;
master_process on;
worker_processes 1;
pid %s/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
stream {
  upstream healthy  { server %s; }
  upstream degraded { server %s weight=11; server %s weight=1; }
  server { listen %s; proxy_pass healthy;  proxy_connect_timeout 2s; }
  server { listen %s; proxy_pass degraded; proxy_connect_timeout 2s; }
}
`, bins.streamModule, dir, good, good, hang.addr(), healthy, degraded))
	startPart(t, "nginx", bins.nginx, []string{"-p", dir, "-c", nginxConf, "-e", "stderr"},
		func() error {
			if err := tcpReady(healthy)(); err != nil {
				return err
			}
			return tcpReady(degraded)()
		})

	// The client application: lifeline's transport, its metrics served
	// for Prometheus.
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	metricsSrv := httptest.NewServer(promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	t.Cleanup(metricsSrv.Close)
	appAddr := strings.TrimPrefix(metricsSrv.URL, "http://")

	tr := &transport.Transport{
		Dialer: &dial.Dialer{
			Resolver: &roundRobin{host: "lb.test", addrs: []netip.Addr{
				netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}},
			Health: &dial.Health{},
			// A handshake through nginx took over 1s with other suites
			// (fuzzers) saturating this 2-core machine; a 3s stagger keeps
			// a slow but healthy handshake from being overtaken (and
			// counted as a stall of the healthy address), while a hung one
			// still costs the caller 3s, not the 5s TLSHandshakeTimeout.
			// The default (250ms) only makes the race, and so the alert,
			// come sooner.
			AttemptDelay: 3 * time.Second,
		},
		TLSClientConfig:     &tls.Config{RootCAs: roots},
		MaxIdleConnsPerHost: -1, // a new connection per call: every call dials through the LB
		MeterProvider:       mp,
	}
	client := transport.NewClient(tr)
	t.Cleanup(tr.CloseIdleConnections)

	// Alertmanager and its webhook.
	hook := &webhook{}
	hookSrv := httptest.NewServer(hook)
	t.Cleanup(hookSrv.Close)
	amConf := writeFile(t, dir, "alertmanager.yml", fmt.Sprintf(`
route:
  receiver: webhook
  group_by: [alertname, network_peer_address, lifeline_phase, instance]
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: webhook
    webhook_configs:
      - url: %s/alerts
        send_resolved: true
`, hookSrv.URL))
	amData := filepath.Join(dir, "alertmanager")
	amAddr := startWebPart(t, "alertmanager", bins.alertmanager, []string{
		"--config.file=" + amConf, "--storage.path=" + amData, "--cluster.listen-address=",
	}, "/-/ready")

	// blackbox_exporter: the anchor, an HTTPS probe of one address per
	// scrape, as its users run it against each load balancer.
	bbConf := writeFile(t, dir, "blackbox.yml", fmt.Sprintf(`
modules:
  lb_https:
    prober: http
    timeout: 4s
    http:
      valid_status_codes: [200]
      fail_if_not_ssl: true
      tls_config:
        ca_file: %s
        server_name: lb.test
`, caFile))
	bbAddr := startWebPart(t, "blackbox_exporter", bins.blackbox, []string{"--config.file=" + bbConf}, "/-/healthy")

	// The rules blackbox users deploy: awesome-prometheus-alerts'
	// BlackboxProbeFailed (any failed probe), and the same held for 30s.
	bbRules := writeFile(t, dir, "blackbox.rules.yml", `
groups:
  - name: blackbox
    rules:
      - alert: BlackboxProbeFailed
        expr: probe_success == 0
        labels: {severity: critical}
      - alert: BlackboxProbeFailedFor30s
        expr: probe_success == 0
        for: 30s
        labels: {severity: critical}
`)
	promConf := writeFile(t, dir, "prometheus.yml", fmt.Sprintf(`
global:
  scrape_interval: 2s
  scrape_timeout: 1500ms
  evaluation_interval: 1s
rule_files:
  - %s
  - %s
alerting:
  alertmanagers:
    - static_configs:
        - targets: ['%s']
scrape_configs:
  - job_name: app
    static_configs:
      - targets: ['%s']
  - job_name: blackbox
    scrape_interval: 5s
    scrape_timeout: 4500ms
    metrics_path: /probe
    params: {module: [lb_https]}
    static_configs:
      - targets: ['https://%s/', 'https://%s/']
    relabel_configs:
      - source_labels: [__address__]
        target_label: __param_target
      - source_labels: [__param_target]
        regex: 'https://([^/]+):\d+/'
        target_label: instance
      - target_label: __address__
        replacement: '%s'
`, filepath.Join(alertsAbs, "lifeline.rules.yml"), bbRules, amAddr, appAddr, healthy, degraded, bbAddr))
	promURL := "http://" + startWebPart(t, "prometheus", bins.prometheus, []string{
		"--config.file=" + promConf, "--storage.tsdb.path=" + filepath.Join(dir, "prometheus"),
	}, "/-/ready")

	// The client: 10 calls a second, each on a new connection, until the
	// test ends.
	var calls, failed atomic.Int64
	var firstErr atomic.Value
	ctx, stop := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				cctx, cancel := context.WithTimeout(ctx, 15*time.Second)
				defer cancel()
				err := call(cctx, client, "https://lb.test:"+strconv.Itoa(lbPort)+"/")
				if ctx.Err() != nil {
					return // the test is ending
				}
				calls.Add(1)
				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err.Error())
				}
			}()
		}
	}()
	t.Cleanup(func() {
		stop()
		wg.Wait()
	})

	// Warm up healthy: Prometheus scrapes the app and blackbox a few times.
	waitFor(t, 30*time.Second, "Prometheus scraping the app and blackbox", func() bool {
		s, err := promQuery(promURL, `count(up == 1)`)
		return err == nil && len(s) == 1 && s[0].Value == 3
	})
	time.Sleep(6 * time.Second)
	if a := hook.alerts(); len(a) > 0 {
		t.Fatalf("alerts before the fault: %+v", a)
	}

	// The fault: from now on the degraded address's 1-in-12 sessions hang.
	hang.hanging.Store(true)
	fault := time.Now()
	t.Logf("fault began: 1 session in 12 through %s now reaches a backend that accepts and never answers", degraded)

	var alertAt time.Time
	var alert receivedAlert
	deadline := fault.Add(60 * time.Second)
	for alertAt.IsZero() && time.Now().Before(deadline) {
		for _, a := range hook.alerts() {
			if a.Status == "firing" && a.Labels["alertname"] == "LifelineMaskedFailures" &&
				a.Labels["network_peer_address"] == "127.0.0.3" && a.Labels["lifeline_phase"] == "tls" {
				alertAt, alert = a.At, a
				break
			}
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Watch on until 45s after the fault, to see what blackbox's rules do
	// on the same fault in the same time.
	if until := fault.Add(45 * time.Second); !alertAt.IsZero() {
		time.Sleep(time.Until(until))
	}
	stop()
	wg.Wait()

	// What blackbox saw: failed probes per address since the fault.
	window := time.Since(fault).Round(time.Second)
	failedProbes := map[string]string{}
	for _, addr := range []string{"127.0.0.2", "127.0.0.3"} {
		q := fmt.Sprintf(`count_over_time(probe_success{instance=%q}[%ds]) - sum_over_time(probe_success{instance=%q}[%ds])`,
			addr, int(window.Seconds()), addr, int(window.Seconds()))
		total := fmt.Sprintf(`count_over_time(probe_success{instance=%q}[%ds])`, addr, int(window.Seconds()))
		f, err1 := promQuery(promURL, q)
		n, err2 := promQuery(promURL, total)
		if err1 != nil || err2 != nil || len(f) != 1 || len(n) != 1 {
			t.Errorf("blackbox results for %s: %v %v %v %v", addr, f, n, err1, err2)
			continue
		}
		failedProbes[addr] = fmt.Sprintf("%d of %d probes failed", int(f[0].Value), int(n[0].Value))
	}
	masked, _ := promQuery(promURL, `sum by (network_peer_address, lifeline_phase, error_type) (lifeline_masked_failures_total)`)

	// The timeline.
	var b strings.Builder
	fmt.Fprintf(&b, "timeline (s after the fault; %d calls, %d failed; the hanging backend held %d sessions):\n",
		calls.Load(), failed.Load(), hang.hung.Load())
	fmt.Fprintf(&b, "  +0.0   fault: 1 TLS session in 12 through %s hangs\n", degraded)
	events := hook.alerts()
	sort.SliceStable(events, func(i, j int) bool { return events[i].At.Before(events[j].At) })
	for _, a := range events {
		fmt.Fprintf(&b, "  %+5.1f  webhook: %s %s peer=%s phase=%s instance=%s (active since %+.1f)\n",
			a.At.Sub(fault).Seconds(), a.Status, a.Labels["alertname"], a.Labels["network_peer_address"],
			a.Labels["lifeline_phase"], a.Labels["instance"], a.StartsAt.Sub(fault).Seconds())
	}
	for _, addr := range []string{"127.0.0.2", "127.0.0.3"} {
		fmt.Fprintf(&b, "  blackbox_exporter %s: %s in %v\n", addr, failedProbes[addr], window)
	}
	for _, name := range []string{"LifelineMaskedFailures", "BlackboxProbeFailed", "BlackboxProbeFailedFor30s"} {
		first := "never fired"
		for _, a := range events {
			if a.Labels["alertname"] == name && a.Status == "firing" {
				first = fmt.Sprintf("first fired at %+.1fs (%s)", a.At.Sub(fault).Seconds(),
					a.Labels["network_peer_address"]+a.Labels["instance"])
				break
			}
		}
		fmt.Fprintf(&b, "  %s: %s\n", name, first)
	}
	for _, m := range masked {
		fmt.Fprintf(&b, "  lifeline_masked_failures_total{peer=%s, phase=%s, error_type=%s} = %v\n",
			m.Labels["network_peer_address"], m.Labels["lifeline_phase"], m.Labels["error_type"], m.Value)
	}
	t.Log("\n" + b.String())

	// The assertions.
	if n := failed.Load(); n != 0 {
		t.Errorf("%d of %d client calls failed (first: %v); lifeline's race should have hidden every hang", n, calls.Load(), firstErr.Load())
	}
	if n := calls.Load(); n < 200 {
		t.Errorf("only %d client calls completed; the client did not run at its rate", n)
	}
	if alertAt.IsZero() {
		t.Errorf("no LifelineMaskedFailures alert naming 127.0.0.3 and tls within 60s of the fault")
	} else {
		t.Logf("time to alert: %.1fs from the fault to the webhook (goal < 30s); the alert was active from %+.1fs",
			alertAt.Sub(fault).Seconds(), alert.StartsAt.Sub(fault).Seconds())
	}
	for _, a := range events {
		if a.Labels["network_peer_address"] == "127.0.0.2" || a.Labels["instance"] == "127.0.0.2" && strings.HasPrefix(a.Labels["alertname"], "Lifeline") {
			t.Errorf("an alert named the healthy address: %+v", a)
		}
	}
	if hang.hung.Load() == 0 {
		t.Errorf("no session reached the hanging backend: the fault did not happen")
	}
}

// call makes one GET and reads the whole answer.
func call(ctx context.Context, c *http.Client, u string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		return fmt.Errorf("%s: %q", resp.Status, body)
	}
	return nil
}
