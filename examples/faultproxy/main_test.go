package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// syncBuf is the proxy's stdout, read while it runs.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// harness is a running faultproxy in front of an "ok" upstream.
type harness struct {
	t     *testing.T
	out   *syncBuf
	proxy string // host:port
	api   string // http://host:port
	app   *app
}

func upstream(t *testing.T) string {
	up := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	up.Config.ErrorLog = log.New(io.Discard, "", 0)
	up.Start()
	t.Cleanup(up.Close)
	return up.Listener.Addr().String()
}

var (
	reProxy = regexp.MustCompile(`faultproxy: proxy (\S+) -> upstream`)
	reAPI   = regexp.MustCompile(`faultproxy: api (\S+)`)
)

func run(t *testing.T, args ...string) *harness {
	t.Helper()
	out := &syncBuf{}
	a, err := start(args, out)
	if err != nil {
		t.Fatalf("start %q: %v", args, err)
	}
	t.Cleanup(a.Close)
	h := &harness{t: t, out: out, app: a}
	if m := reProxy.FindStringSubmatch(out.String()); m != nil {
		h.proxy = m[1]
	}
	if m := reAPI.FindStringSubmatch(out.String()); m != nil {
		h.api = m[1]
	}
	if h.proxy == "" || h.api == "" {
		t.Fatalf("no addresses in the output:\n%s", out)
	}
	return h
}

// get sends a GET on a new connection, capped at capAt.
func (h *harness) get(capAt time.Duration) error {
	tr := &http.Transport{DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(context.Background(), capAt)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+h.proxy+"/", nil)
	resp, err := (&http.Client{Transport: tr}).Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err == nil && string(b) != "ok" {
		err = errors.New("body " + string(b))
	}
	return err
}

// call calls the API and decodes the JSON answer into a map.
func (h *harness) call(method, path, body string, hdr ...string) (int, map[string]any) {
	h.t.Helper()
	req, err := http.NewRequest(method, h.api+path, strings.NewReader(body))
	if err != nil {
		h.t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(hdr); i += 2 {
		if hdr[i] == "Host" {
			req.Host = hdr[i+1]
		} else {
			req.Header.Set(hdr[i], hdr[i+1])
		}
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		h.t.Fatal(err)
	}
	defer resp.Body.Close()
	var m map[string]any
	b, _ := io.ReadAll(resp.Body)
	if len(b) > 0 {
		if err := json.Unmarshal(b, &m); err != nil {
			h.t.Fatalf("%s %s: not JSON: %q", method, path, b)
		}
	}
	return resp.StatusCode, m
}

func (h *harness) stat(name string) float64 {
	h.t.Helper()
	code, m := h.call(http.MethodGet, "/stats", "")
	if code != http.StatusOK {
		h.t.Fatalf("GET /stats: %d %v", code, m)
	}
	v, _ := m[name].(float64)
	return v
}

// TestPresetIncident01: through the proxy with -preset incident01, every
// 12th request hangs until the client's cap, the others succeed, the
// stats say so and the output has a line per connection.
func TestPresetIncident01(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-preset", "incident01")
	failed := 0
	for i := 1; i <= 24; i++ {
		err := h.get(500 * time.Millisecond)
		if err != nil {
			failed++
			if i%12 != 0 || !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("request %d: %v", i, err)
			}
		}
	}
	if failed != 2 {
		t.Fatalf("%d failed, want 2 (the 12th and 24th)", failed)
	}
	if f := h.stat("faulted"); f != 2 {
		t.Fatalf("faulted %v, want 2", f)
	}
	waitFor(t, func() bool { return strings.Count(h.out.String(), "faultproxy: conn #") == 24 })
	if !strings.Contains(h.out.String(), "ProxySilence (lb-hang-after-accept): held until the client closed") {
		t.Fatalf("no line for a hung connection:\n%s", h.out)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10s")
		}
	}
}

// TestRulesAtRunTime: faults added, listed and removed over the API change
// what the next connections get.
func TestRulesAtRunTime(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("no faults: %v", err)
	}
	code, m := h.call(http.MethodPost, "/rules", `{"name":"rst","fault":"reset"}`)
	if code != http.StatusCreated || m["fault"] != "ProxyReset" {
		t.Fatalf("POST /rules: %d %v", code, m)
	}
	err := h.get(5 * time.Second)
	if !errors.Is(err, syscall.ECONNRESET) && !strings.Contains(errString(err), "EOF") {
		t.Fatalf("with a reset rule: %v, want a reset", err)
	}
	code, m = h.call(http.MethodGet, "/rules", "")
	if rules, _ := m["rules"].([]any); code != http.StatusOK || len(rules) != 1 {
		t.Fatalf("GET /rules: %d %v", code, m)
	}
	if code, _ := h.call(http.MethodDelete, "/rules/rst", ""); code != http.StatusNoContent {
		t.Fatalf("DELETE /rules/rst: %d", code)
	}
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("after removing the rule: %v", err)
	}
	// A hold rule on every 2nd connection; a flap; a preset swap.
	h.call(http.MethodPost, "/rules", `{"name":"hold","fault":"holdresponse","every":2}`)
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("1st with every 2: %v", err)
	}
	if err := h.get(300 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("2nd with every 2: %v, want the reply held", err)
	}
	if code, m := h.call(http.MethodPost, "/preset", `{"name":"incident03"}`); code != http.StatusOK {
		t.Fatalf("POST /preset: %d %v", code, m)
	}
	if h.stat("flap_ms") != 1000 || h.stat("linger_ms") != 20000 || h.stat("rules") != 0 {
		t.Fatalf("after preset incident03: %v", h.app.stats())
	}
	if code, m := h.call(http.MethodPost, "/drop", ""); code != http.StatusOK || m["dropped"] == nil {
		t.Fatalf("POST /drop: %d %v", code, m)
	}
	before := h.stat("accepted")
	if code, m := h.call(http.MethodPut, "/blackhole", `{"on":true}`); code != http.StatusOK || m["blackholed"] != true {
		t.Fatalf("PUT /blackhole on: %d %v", code, m)
	}
	if err := h.get(400 * time.Millisecond); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("while black-holed: %v, want the connect to hang", err)
	}
	if h.stat("accepted") != before {
		t.Fatal("a connection was accepted while black-holed")
	}
	if code, m := h.call(http.MethodPut, "/blackhole", `{"on":false}`); code != http.StatusOK || m["blackholed"] != false {
		t.Fatalf("PUT /blackhole off: %d %v", code, m)
	}
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("after the restore: %v", err)
	}
	// Black-holed for 300ms, then restored by the proxy itself.
	if code, m := h.call(http.MethodPut, "/blackhole", `{"on":true,"for_ms":300}`); code != http.StatusOK || m["blackholed"] != true {
		t.Fatalf("PUT /blackhole for 300ms: %d %v", code, m)
	}
	waitFor(t, func() bool { _, m := h.call(http.MethodGet, "/stats", ""); return m["blackholed"] == false })
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("after the timed restore: %v", err)
	}
	// A pending restore when the proxy closes: Close stops it and waits.
	h.call(http.MethodPut, "/blackhole", `{"on":true,"for_ms":60000}`)
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}

// TestAPIHostileInput: every bad request gets a 4xx with a JSON error,
// and changes nothing.
func TestAPIHostileInput(t *testing.T) {
	h := run(t, "-upstream", upstream(t), "-quiet")
	for _, tc := range []struct {
		name, method, path, body string
		hdr                      []string
		want                     int
		msg                      string
	}{
		{"bad json", "POST", "/rules", `{"name":`, nil, 400, "bad JSON"},
		{"unknown field", "POST", "/rules", `{"name":"x","fault":"reset","evry":2}`, nil, 400, "unknown field"},
		{"two values", "POST", "/rules", `{"name":"x","fault":"reset"}{}`, nil, 400, "more than one"},
		{"no name", "POST", "/rules", `{"fault":"reset"}`, nil, 400, "name is required"},
		{"slash in name", "POST", "/rules", `{"name":"a/b","fault":"reset"}`, nil, 400, "name must be"},
		{"unknown fault", "POST", "/rules", `{"name":"x","fault":"explode"}`, nil, 400, "unknown proxy fault"},
		{"negative every", "POST", "/rules", `{"name":"x","fault":"reset","every":-3}`, nil, 400, "every -3"},
		{"fraction above 1", "POST", "/rules", `{"name":"x","fault":"reset","fraction":1.5}`, nil, 400, "fraction"},
		{"two selectors", "POST", "/rules", `{"name":"x","fault":"reset","every":2,"first":1}`, nil, 400, "at most one"},
		{"negative latency", "POST", "/rules", `{"name":"x","fault":"delay","latency_ms":-5}`, nil, 400, "latency_ms"},
		{"huge latency", "POST", "/rules", `{"name":"x","fault":"delay","latency_ms":1e300}`, nil, 400, "latency_ms"},
		{"latency max below min", "POST", "/rules", `{"name":"x","fault":"delay","latency_ms":10,"latency_max_ms":5}`, nil, 400, "LatencyMax"},
		{"negative stall", "POST", "/rules", `{"name":"x","fault":"stallbody","stall_after":-1}`, nil, 400, "StallAfter"},
		{"wrong type", "POST", "/rules", `{"name":5,"fault":"reset"}`, nil, 400, "bad JSON"},
		{"text/plain", "POST", "/rules", `{"name":"x","fault":"reset"}`, []string{"Content-Type", "text/plain"}, 415, "application/json"},
		{"foreign host", "GET", "/stats", "", []string{"Host", "evil.example:80"}, 403, "not a loopback"},
		{"huge body", "POST", "/rules", `{"name":"` + strings.Repeat("a", 70<<10) + `"}`, nil, 413, "larger than"},
		{"unknown preset", "POST", "/preset", `{"name":"incident99"}`, nil, 400, "unknown preset"},
		{"delete unknown rule", "DELETE", "/rules/nope", "", nil, 404, "no rule"},
		{"unknown path", "GET", "/toxics", "", nil, 404, "no such endpoint"},
		{"wrong method", "PATCH", "/stats", "", nil, 405, "not allowed"},
		{"flap missing", "PUT", "/flap", `{}`, nil, 400, "period_ms is required"},
		{"flap negative", "PUT", "/flap", `{"period_ms":-1}`, nil, 400, "period_ms"},
		{"blackhole for without on", "PUT", "/blackhole", `{"on":false,"for_ms":10}`, nil, 400, "for_ms needs on"},
		{"linger NaN-ish", "PUT", "/linger", `{"ms":"x"}`, nil, 400, "bad JSON"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, m := h.call(tc.method, tc.path, tc.body, tc.hdr...)
			msg, _ := m["error"].(string)
			if code != tc.want || !strings.Contains(msg, tc.msg) {
				t.Fatalf("%s %s: %d %q, want %d with %q", tc.method, tc.path, code, msg, tc.want, tc.msg)
			}
		})
	}
	if code, _ := h.call("POST", "/rules", `{"name":"dup","fault":"pass"}`); code != 201 {
		t.Fatalf("first dup: %d", code)
	}
	if code, m := h.call("POST", "/rules", `{"name":"dup","fault":"reset"}`); code != 409 {
		t.Fatalf("second dup: %d %v, want 409", code, m)
	}
	if st := h.app.stats(); st.Rules != 1 || st.Blackholed || st.FlapMS != 0 {
		t.Fatalf("hostile input changed the state: %+v", st)
	}
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("the proxy after the hostile input: %v", err)
	}
}

// TestTLSTerminate: the proxy writes a CA file; a client trusting it gets
// through to a plaintext upstream.
func TestTLSTerminate(t *testing.T) {
	dir := t.TempDir()
	h := run(t, "-upstream", upstream(t), "-tls", "terminate", "-tls-dir", dir, "-quiet")
	ca := filepath.Join(dir, "ca.pem")
	if !strings.Contains(h.out.String(), "faultproxy: ca "+ca) {
		t.Fatalf("CA path not printed:\n%s", h.out)
	}
	pemBytes, err := os.ReadFile(ca)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatal("ca.pem has no certificate")
	}
	tr := &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Get("https://" + h.proxy + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "ok" {
		t.Fatalf("body %q", b)
	}
}

// TestFlags: bad flags are errors; the API stays on loopback; a
// non-loopback -listen is allowed only when named, with a warning (tested
// on the decision, so the test never listens beyond loopback).
func TestFlags(t *testing.T) {
	up := upstream(t)
	for _, args := range [][]string{
		{},
		{"-upstream", up, "-preset", "incident9"},
		{"-upstream", up, "-fault", "explode"},
		{"-upstream", up, "-every", "3"},
		{"-upstream", up, "-fault", "reset", "-every", "2", "-first", "1"},
		{"-upstream", up, "-flap", "-1s"},
		{"-upstream", up, "-tls", "mitm"},
		{"-upstream", up, "-api", "0.0.0.0:0"},
		{"-upstream", "192.0.2.1:80"},
		{"-upstream", up, "extra"},
	} {
		if a, err := start(args, io.Discard); err == nil {
			a.Close()
			t.Errorf("start %q: no error", args)
		}
	}
	h := run(t, "-upstream", up, "-fault", "close", "-first", "1", "-quiet")
	if !strings.HasPrefix(h.proxy, "127.0.0.1:") || strings.Contains(h.out.String(), "WARNING") {
		t.Fatalf("default listen %s:\n%s", h.proxy, h.out)
	}
	if err := h.get(5 * time.Second); err == nil {
		t.Fatal("-fault close -first 1: the first request succeeded")
	}
	if err := h.get(5 * time.Second); err != nil {
		t.Fatalf("second request: %v", err)
	}
	h6 := run(t, "-upstream", up, "-listen", "[::1]:0", "-quiet")
	if strings.Contains(h6.out.String(), "WARNING") {
		t.Fatal("a warning for ::1")
	}
	for host, loop := range map[string]bool{"127.0.0.1": true, "127.9.9.9": true, "::1": true, "localhost": true, "0.0.0.0": false, "::": false, "192.0.2.1": false, "example.com": false} {
		if isLoopbackHost(host) != loop {
			t.Errorf("isLoopbackHost(%q) = %v", host, !loop)
		}
	}
	var out bytes.Buffer
	if _, err := start([]string{"-list"}, &out); !errors.Is(err, errListed) || strings.Count(out.String(), "incident0") != 5 {
		t.Fatalf("-list: %v\n%s", err, out.String())
	}
	_ = net.IPv4len
}
