package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	otelprom "go.opentelemetry.io/otel/exporters/prometheus"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/faultnet"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// fleet is a name served by loopback addresses on one port: 127.0.0.2
// healthy, 127.0.0.3 stalling some TLS handshakes (or requests), 127.0.0.4
// with nothing listening (refused).
type fleet struct {
	port      int
	tlsClient options // tlsConfig set; the rest zero
	stalling  *faultnet.Server
}

// answerHTTP serves one HTTP/1.1 request on c: a websocket upgrade gets
// 101, anything else 200.
func answerHTTP(c net.Conn) {
	req, err := http.ReadRequest(bufio.NewReader(c))
	if err != nil {
		return
	}
	if req.Header.Get("Upgrade") == "websocket" {
		_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n")
		return
	}
	_, _ = io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
}

// startFleet starts the fleet; the stalling address stalls the handshakes
// (or, with stallRequests, the requests after the handshake) that sel picks.
func startFleet(t *testing.T, sel faultnet.Selector, stallRequests bool) *fleet {
	t.Helper()
	serverTLS, clientTLS, err := faultnet.NewSelfSigned("svc.test")
	if err != nil {
		t.Fatal(err)
	}
	bad := faultnet.Config{Addr: "127.0.0.3:0", TLS: serverTLS, Handler: answerHTTP, Fault: faultnet.StallTLS, Select: sel}
	if stallRequests {
		var once sync.Mutex
		n := 0
		bad = faultnet.Config{Addr: "127.0.0.3:0", TLS: serverTLS, Handler: func(c net.Conn) {
			once.Lock()
			n++
			hang := sel(n)
			once.Unlock()
			if hang {
				_, _ = io.Copy(io.Discard, c) // read the request, never answer
				return
			}
			answerHTTP(c)
		}}
	}
	srv := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", TLS: serverTLS, Handler: answerHTTP},
		bad,
	)
	f := &fleet{port: srv[0].Port(), stalling: srv[1]}
	f.tlsClient.tlsConfig = clientTLS
	return f
}

// options returns probe options for the fleet's name, answered by r.
func (f *fleet) options(t *testing.T, args ...string) options {
	t.Helper()
	o, err := parseFlags(append([]string{"-target", "svc.test:" + strconv.Itoa(f.port),
		"-resolve", "svc.test=127.0.0.2,127.0.0.3,127.0.0.4",
		"-connect-timeout", "2s", "-tls-timeout", "2s", "-request-timeout", "2s"}, args...), io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.tlsConfig = f.tlsClient.tlsConfig
	return o
}

func phaseOf(t *testing.T, r *Report, addr, phase string) PhaseReport {
	t.Helper()
	for _, a := range r.Addresses {
		if a.Address != addr {
			continue
		}
		for _, p := range a.Phases {
			if p.Phase == phase {
				return p
			}
		}
	}
	t.Fatalf("report has no %s %s:\n%+v", addr, phase, r)
	return PhaseReport{}
}

// TestProbeOnceTLS: one interval against the fleet. Every sample of the
// healthy address succeeds; the stalling one shows TLS stalls after good
// connects; the dead one refusals; the raced dial (what a user sees)
// always succeeds; the exit status is 1 and FAILING names the two bad
// addresses with their phases, never the healthy one.
func TestProbeOnceTLS(t *testing.T) {
	f := startFleet(t, faultnet.EveryNth(3), false)
	o := f.options(t, "-tls", "-once", "-n", "12", "-interval", "1200ms")
	var out bytes.Buffer
	start := time.Now()
	code, err := run(t.Context(), o, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	t.Log("\n" + out.String())
	if code != 1 {
		t.Errorf("exit status %d, want 1", code)
	}
	// 1.2s of rounds, then at most the 2s limits of the last round's
	// phases: generous slack for a loaded machine.
	if el := time.Since(start); el > 8*time.Second {
		t.Errorf("one interval of 1.2s (phase limits 2s) took %v", el)
	}
	port := strconv.Itoa(f.port)
	good, bad, dead := "127.0.0.2:"+port, "127.0.0.3:"+port, "127.0.0.4:"+port

	// Parse the table back: the report behind it is not returned by run.
	rows := tableRows(t, out.String())
	check := func(addr, phase string, want func(c map[string]int) bool, what string) {
		t.Helper()
		c, ok := rows[addr+" "+phase]
		if !ok {
			t.Fatalf("no row %s %s", addr, phase)
		}
		if !want(c) {
			t.Errorf("%s %s: %v, want %s", addr, phase, c, what)
		}
	}
	check(good, "connect", func(c map[string]int) bool { return c["samples"] == 12 && c["ok"] == 12 }, "12 of 12 ok")
	check(good, "tls", func(c map[string]int) bool { return c["samples"] == 12 && c["ok"] == 12 }, "12 of 12 ok")
	check(bad, "connect", func(c map[string]int) bool { return c["ok"] == 12 }, "12 ok connects")
	check(bad, "tls", func(c map[string]int) bool { return c["stall"] >= 1 && c["ok"] >= 1 && c["ok"]+c["stall"] == 12 },
		"stalls and successes, nothing else")
	check(dead, "connect", func(c map[string]int) bool { return c["refused"] == 12 }, "12 refusals")
	check("raced (what users see)", "raced", func(c map[string]int) bool { return c["samples"] == 12 && c["ok"] == 12 }, "12 of 12 ok")
	if _, ok := rows[dead+" tls"]; !ok {
		t.Errorf("the refused address has no tls row (it should show 0 samples)")
	}

	text := out.String()
	for _, want := range []string{"FAILING " + bad + " tls:", "FAILING " + dead + " connect:"} {
		if !strings.Contains(text, want) {
			t.Errorf("output lacks %q", want)
		}
	}
	if strings.Contains(text, "FAILING "+good) {
		t.Errorf("the healthy address is FAILING")
	}
}

// tableRows maps "address phase" to the counts of the table's rows.
func tableRows(t *testing.T, text string) map[string]map[string]int {
	t.Helper()
	cols := []string{"samples", "ok", "stall", "refused", "reset", "error"}
	re := regexp.MustCompile(`(?m)^\s*(\S+(?: \(what users see\))?)\s+(connect|tls|http|websocket|raced)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)\s`)
	rows := make(map[string]map[string]int)
	for _, m := range re.FindAllStringSubmatch(text, -1) {
		c := make(map[string]int)
		for i, col := range cols {
			c[col], _ = strconv.Atoi(m[3+i])
		}
		rows[m[1]+" "+m[2]] = c
	}
	if len(rows) == 0 {
		t.Fatalf("no table rows in:\n%s", text)
	}
	return rows
}

// TestProbeOnceHTTPJSON: with -http the request is a phase of its own, and
// a peer that completes the handshake and never answers the request stalls
// in it (incident 01's "accepted, then silence"); -json prints the same
// report as JSON. Thresholds: -max-fail 0.5 lets the stalling address
// (1 in 3) pass, so the exit status is 1 only for the refusing one.
func TestProbeOnceHTTPJSON(t *testing.T) {
	f := startFleet(t, faultnet.EveryNth(3), true)
	o := f.options(t, "-tls", "-http", "/healthz", "-once", "-json", "-n", "9", "-interval", "900ms", "-max-fail", "0.5")
	var out bytes.Buffer
	code, err := run(t.Context(), o, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatalf("not JSON: %v\n%s", err, out.String())
	}
	t.Logf("%+v", r)
	port := strconv.Itoa(f.port)
	if len(r.Addresses) != 3 {
		t.Fatalf("%d addresses, want 3", len(r.Addresses))
	}
	if p := phaseOf(t, &r, "127.0.0.2:"+port, "http"); p.OK != 9 || p.P50ms <= 0 || p.P99ms < p.P50ms || p.MaxMs < p.P99ms {
		t.Errorf("healthy http: %+v, want 9 ok with ordered percentiles", p)
	}
	if p := phaseOf(t, &r, "127.0.0.3:"+port, "tls"); p.OK != 9 {
		t.Errorf("stalling address tls: %+v, want 9 ok (it stalls requests, not handshakes)", p)
	}
	if p := phaseOf(t, &r, "127.0.0.3:"+port, "http"); p.Stalls != 3 || p.OK != 6 {
		t.Errorf("stalling address http: %+v, want 3 stalls and 6 ok", p)
	}
	if r.Raced.OK != 9 {
		t.Errorf("raced: %+v, want 9 ok", r.Raced)
	}
	if code != 1 || len(r.Failing) != 1 || !strings.HasPrefix(r.Failing[0], "127.0.0.4:"+port+" connect") {
		t.Errorf("exit %d, failing %q; want 1 and only the refusing address", code, r.Failing)
	}
}

// TestProbeWebsocket: -ws makes an upgrade the last phase, 101 is ok.
func TestProbeWebsocket(t *testing.T) {
	f := startFleet(t, faultnet.EveryNth(1000), false)
	o := f.options(t, "-tls", "-ws", "/signal", "-once", "-json", "-n", "3", "-interval", "300ms")
	o.resolver = &staticResolver{host: "svc.test", addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}
	var out bytes.Buffer
	code, err := run(t.Context(), o, &out, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if p := phaseOf(t, &r, "127.0.0.2:"+strconv.Itoa(f.port), "websocket"); p.OK != 3 {
		t.Errorf("websocket: %+v, want 3 ok", p)
	}
	if code != 0 {
		t.Errorf("exit %d, want 0: %q", code, r.Failing)
	}
}

// failingAfter answers svc.test with 127.0.0.2 until its cutoff, then
// fails as a resolver that lost its server would.
type failingAfter struct{ cutoff time.Time }

func (r *failingAfter) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if time.Now().After(r.cutoff) {
		return nil, &net.DNSError{Err: "server misbehaving", Name: host, IsTemporary: true}
	}
	return []netip.Addr{netip.MustParseAddr("127.0.0.2")}, nil
}

// TestProbeOnceLastRoundUnresolved (issue 20, probe risk): in -once mode
// the name resolves for the first rounds and not for the last. The report
// keeps the address probed in the earlier rounds, lists the failed
// resolutions, and the run exits 1 (a failure found), not 2 (the name
// never resolved).
func TestProbeOnceLastRoundUnresolved(t *testing.T) {
	f := startFleet(t, faultnet.EveryNth(1000), false)
	o := f.options(t, "-tls", "-once", "-json", "-n", "4", "-interval", "1s")
	// Rounds start at 0, 250, 500 and 750ms (later under load, never
	// earlier): the first resolves, the last does not.
	o.resolver = &failingAfter{cutoff: time.Now().Add(500 * time.Millisecond)}
	var out bytes.Buffer
	code, err := run(t.Context(), o, &out, io.Discard)
	t.Logf("exit %d, err %v\n%s", code, err, out.String())
	var r Report
	if jerr := json.Unmarshal(out.Bytes(), &r); jerr != nil {
		t.Fatalf("not JSON: %v", jerr)
	}
	if code != 1 {
		t.Errorf("exit %d (%v), want 1", code, err)
	}
	if len(r.Errors) == 0 {
		t.Error("the failed resolutions are not reported")
	}
	p := phaseOf(t, &r, "127.0.0.2:"+strconv.Itoa(f.port), "tls")
	if p.OK < 1 || p.OK != p.Samples {
		t.Errorf("127.0.0.2 tls: %+v, want the earlier rounds' successes", p)
	}
	found := false
	for _, fl := range r.Failing {
		found = found || strings.Contains(fl, "resolve")
	}
	if !found {
		t.Errorf("FAILING does not name the resolution: %q", r.Failing)
	}
}

// TestProbeRacedWithinLimits (issue 20, probe risk): when every address
// stalls its TLS handshakes, the raced dial (what users see) is bounded by
// the probe's own phase limits, like the direct samples, not by a Dialer's
// defaults (5s per handshake, 15s per dial): one interval of 400ms with
// 300ms limits ends in about a second, where the defaults took 10s.
func TestProbeRacedWithinLimits(t *testing.T) {
	serverTLS, clientTLS, err := faultnet.NewSelfSigned("svc.test")
	if err != nil {
		t.Fatal(err)
	}
	srv := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", TLS: serverTLS, Handler: answerHTTP, Fault: faultnet.StallTLS, Select: faultnet.EveryNth(1)},
		faultnet.Config{Addr: "127.0.0.3:0", TLS: serverTLS, Handler: answerHTTP, Fault: faultnet.StallTLS, Select: faultnet.EveryNth(1)},
	)
	o, err := parseFlags([]string{"-target", "svc.test:" + strconv.Itoa(srv[0].Port()),
		"-resolve", "svc.test=127.0.0.2,127.0.0.3", "-connect-timeout", "300ms", "-tls-timeout", "300ms",
		"-tls", "-once", "-json", "-n", "2", "-interval", "400ms"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	o.tlsConfig = clientTLS
	var out bytes.Buffer
	start := time.Now()
	code, err := run(t.Context(), o, &out, io.Discard)
	el := time.Since(start)
	t.Logf("exit %d in %v\n%s", code, el, out.String())
	if err != nil {
		t.Fatal(err)
	}
	var r Report
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	// 200ms between the rounds, then the last round's limits: about 1s.
	// The defaults' 5s handshakes would take at least 5s.
	if el > 4*time.Second {
		t.Errorf("one interval of 400ms with 300ms limits took %v", el)
	}
	if r.Raced.Samples != 2 || r.Raced.Stalls != 2 {
		t.Errorf("raced: %+v, want 2 stalls", r.Raced)
	}
}

// switchResolver answers svc.test with whatever the test set last.
type switchResolver struct {
	mu    sync.Mutex
	addrs []netip.Addr
}

func (r *switchResolver) set(ips ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.addrs = r.addrs[:0]
	for _, ip := range ips {
		r.addrs = append(r.addrs, netip.MustParseAddr(ip))
	}
}

func (r *switchResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]netip.Addr(nil), r.addrs...), nil
}

// TestProbeMetrics: the Prometheus exposition names each address of the
// current answer with its phase and result (zeros included, so that a rate
// of stalls exists before the first stall), and an address that left the
// answer is no longer exported.
func TestProbeMetrics(t *testing.T) {
	f := startFleet(t, faultnet.EveryNth(2), false)
	o := f.options(t, "-tls", "-n", "6", "-interval", "600ms")
	res := &switchResolver{}
	res.set("127.0.0.2", "127.0.0.3")
	o.resolver = res
	p, err := newProber(o.config)
	if err != nil {
		t.Fatal(err)
	}
	c := newCollector(p)
	reg := prometheus.NewRegistry()
	exp, err := otelprom.New(otelprom.WithRegisterer(reg))
	if err != nil {
		t.Fatal(err)
	}
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(exp))
	defer func() { _ = mp.Shutdown(context.Background()) }()
	if _, err := registerMetrics(mp.Meter("probe"), c); err != nil {
		t.Fatal(err)
	}
	scrape := func() string {
		rec := httptest.NewRecorder()
		promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
		return rec.Body.String()
	}
	c.interval(t.Context())
	text := scrape()
	has := func(text, name string, labels ...string) (float64, bool) {
		for _, line := range strings.Split(text, "\n") {
			if !strings.HasPrefix(line, name+"{") {
				continue
			}
			all := true
			for _, l := range labels {
				all = all && strings.Contains(line, l)
			}
			if all {
				v, err := strconv.ParseFloat(line[strings.LastIndexByte(line, ' ')+1:], 64)
				return v, err == nil
			}
		}
		return 0, false
	}
	if v, ok := has(text, "lifeline_probe_results_total", `network_peer_address="127.0.0.3"`, `lifeline_phase="tls"`, `lifeline_probe_result="stall"`); !ok || v < 1 {
		t.Errorf("stalls of 127.0.0.3 in tls: %v %v, want >= 1\n%s", v, ok, text)
	}
	if v, ok := has(text, "lifeline_probe_results_total", `network_peer_address="127.0.0.2"`, `lifeline_phase="tls"`, `lifeline_probe_result="stall"`); !ok || v != 0 {
		t.Errorf("stalls of 127.0.0.2 in tls: %v %v, want an exported 0", v, ok)
	}
	if v, ok := has(text, "lifeline_probe_results_total", `network_peer_address="127.0.0.2"`, `lifeline_phase="connect"`, `lifeline_probe_result="ok"`); !ok || v != 6 {
		t.Errorf("connects of 127.0.0.2: %v %v, want 6", v, ok)
	}
	if v, ok := has(text, "lifeline_probe_latency_seconds", `network_peer_address="127.0.0.2"`, `lifeline_phase="tls"`, `lifeline_probe_quantile="0.99"`); !ok || v <= 0 || v > 2 {
		t.Errorf("p99 of 127.0.0.2 tls: %v %v, want in (0, 2s], the limit", v, ok)
	}
	if v, ok := has(text, "lifeline_probe_raced_total", `lifeline_probe_result="ok"`, `server_address="svc.test"`); !ok || v != 6 {
		t.Errorf("raced ok: %v %v, want 6", v, ok)
	}
	if v, ok := has(text, "lifeline_probe_addresses"); !ok || v != 2 {
		t.Errorf("addresses: %v %v, want 2", v, ok)
	}

	// The answer shrinks: 127.0.0.3 is no longer a label.
	res.set("127.0.0.2")
	c.interval(t.Context())
	text = scrape()
	if strings.Contains(text, `network_peer_address="127.0.0.3"`) {
		t.Errorf("127.0.0.3 left the answer but is still exported:\n%s", text)
	}
	if v, ok := has(text, "lifeline_probe_results_total", `network_peer_address="127.0.0.2"`, `lifeline_phase="connect"`, `lifeline_probe_result="ok"`); !ok || v != 12 {
		t.Errorf("connects of 127.0.0.2 after two intervals: %v %v, want 12", v, ok)
	}
	if v, ok := has(text, "lifeline_probe_addresses"); !ok || v != 1 {
		t.Errorf("addresses: %v %v, want 1", v, ok)
	}
}

// TestProbeServesMetrics: the continuous mode serves /metrics while it
// runs, and stops after -count intervals.
func TestProbeServesMetrics(t *testing.T) {
	f := startFleet(t, faultnet.EveryNth(1000), false)
	o := f.options(t, "-tls", "-n", "4", "-interval", "400ms", "-listen", "127.0.0.1:0", "-count", "3", "-quiet")
	pr, pw := io.Pipe()
	done := make(chan int, 1)
	go func() {
		code, err := run(t.Context(), o, io.Discard, pw)
		if err != nil {
			t.Error(err)
		}
		pw.Close()
		done <- code
	}()
	line, err := bufio.NewReader(pr).ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	go func() { _, _ = io.Copy(io.Discard, pr) }()
	url := regexp.MustCompile(`http://\S+/metrics`).FindString(line)
	if url == "" {
		t.Fatalf("no metrics URL in %q", line)
	}
	var body string
	// Until the first interval has closed: its latency gauges are in.
	complete := func(body string) bool {
		return strings.Contains(body, `lifeline_probe_results_total{`) && strings.Contains(body, `lifeline_probe_raced_latency_seconds{`)
	}
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) && !complete(body) {
		resp, err := http.Get(url)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		body = string(b)
		time.Sleep(50 * time.Millisecond)
	}
	if !complete(body) || !strings.Contains(body, `network_peer_address="127.0.0.2"`) {
		t.Errorf("no probe results served:\n%s", body)
	}
	checkExposition(t, body)
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit %d", code)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("run did not stop after -count 3 intervals of 400ms (phase limits 2s)")
	}
}

// TestParseFlags: bad command lines are refused with a reason.
func TestParseFlags(t *testing.T) {
	for name, args := range map[string][]string{
		"no target":     {},
		"no port":       {"-target", "example.com"},
		"http and ws":   {"-target", "a:1", "-http", "/", "-ws", "/"},
		"relative path": {"-target", "a:1", "-http", "healthz"},
		"once listen":   {"-target", "a:1", "-once", "-listen", "127.0.0.1:0"},
		"zero n":        {"-target", "a:1", "-n", "0"},
		"bad resolve":   {"-target", "a:1", "-resolve", "a=notanip"},
	} {
		t.Run(name, func(t *testing.T) {
			var errOut bytes.Buffer
			if _, err := parseFlags(args, &errOut); err == nil {
				t.Errorf("accepted %q", args)
			} else if errOut.Len() == 0 {
				t.Errorf("no message for %q", args)
			}
		})
	}
}

// promtool returns the path of Prometheus's promtool. Without it the test
// is skipped, saying so, unless CI is set: CI installs it (.ci/run).
func promtool(t *testing.T) string {
	t.Helper()
	p, err := exec.LookPath("promtool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("promtool is missing and CI is set: %v", err)
		}
		t.Skipf("promtool is not installed (Debian package prometheus), so the probe's metrics and rules are not checked: %v", err)
	}
	return p
}

// probeRules is the rules file that alerts on the probe's metrics.
const probeRules = "../../alerts/lifeline-probe.rules.yml"

// checkExposition checks what the probe served on /metrics with
// Prometheus's own tools (issue 20, break 21): `promtool check metrics`
// accepts it (a "quantile" label on a gauge is refused), every metric and
// label that the probe's shipped rules query is in it, and `promtool test
// rules` passes those rules' tests.
func checkExposition(t *testing.T, body string) {
	t.Helper()
	pt := promtool(t)
	cmd := exec.Command(pt, "check", "metrics")
	cmd.Stdin = strings.NewReader(body)
	if out, err := cmd.CombinedOutput(); err != nil || len(bytes.TrimSpace(out)) > 0 {
		t.Errorf("promtool check metrics on the probe's /metrics: %v\n%s", err, out)
	}
	rules, err := os.ReadFile(probeRules)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, m := range regexp.MustCompile(`\b(lifeline_probe_\w+)\s*[{(]`).FindAllStringSubmatch(string(rules), -1) {
		names = append(names, m[1]+"{")
	}
	for _, m := range regexp.MustCompile(`(\w+)\s*(?:=~|!~|!=|=)\s*"`).FindAllStringSubmatch(string(rules), -1) {
		names = append(names, m[1]+`="`)
	}
	for _, m := range regexp.MustCompile(`by \(([^)]*)\)`).FindAllStringSubmatch(string(rules), -1) {
		for _, l := range strings.Split(m[1], ",") {
			if l = strings.TrimSpace(l); l != "job" { // job is the scraper's
				names = append(names, l+`="`)
			}
		}
	}
	if len(names) < 5 {
		t.Fatalf("found only %q in %s", names, probeRules)
	}
	for _, n := range names {
		if strings.HasSuffix(n, `="`) && !strings.Contains(body, "{"+n) && !strings.Contains(body, ","+n) ||
			strings.HasSuffix(n, "{") && !strings.Contains(body, "\n"+n) {
			t.Errorf("%s queries %s, which the probe does not export", probeRules, strings.TrimSuffix(strings.TrimSuffix(n, `="`), "{"))
		}
	}
	test := exec.Command(pt, "test", "rules", strings.TrimSuffix(filepath.Base(probeRules), ".yml")+".test.yml")
	test.Dir = filepath.Dir(probeRules)
	if out, err := test.CombinedOutput(); err != nil || !strings.Contains(string(out), "SUCCESS") {
		t.Errorf("promtool test rules: %v\n%s", err, out)
	}
}
