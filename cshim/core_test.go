package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"reflect"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// Pure-Go tests of the shim's core (no C compiler needed), under -race.

// distinct is a value for each key, different from its default, that
// the test can recognise in the built objects.
var distinct = map[string]any{
	"request_timeout_ms": 1001, "max_response_bytes": 1002, "user_agent": "ua-test", "name": "sdk-test",
	"transport.first_byte_timeout_ms": 1003, "transport.stall_timeout_ms": 1004,
	"transport.hedge_delay_ms": 1005, "transport.hedge_quantile": 0.9,
	"transport.idle_conn_timeout_ms": 1006, "transport.max_conn_lifetime_ms": 1007,
	"transport.max_conns_per_host": 7, "transport.max_idle_conns_per_host": 8,
	"transport.max_response_header_bytes": 4096,
	"transport.proxy":                     "none",
	"transport.disable_fail_fast":         true, "transport.disable_load_shedding": true,
	"dial.resolve_timeout_ms": 1008, "dial.connect_timeout_ms": 1009, "dial.attempt_delay_ms": 1010,
	"dial.tls_handshake_timeout_ms": 1011, "dial.first_byte_timeout_ms": 1012, "dial.timeout_ms": 1013,
	"dial.user_timeout_ms": 1014, "dial.max_attempts_per_address": 3, "dial.greeting_timeout_ms": 1022,
	"dial.keepalive.enable": true, "dial.keepalive.idle_ms": 1015, "dial.keepalive.interval_ms": 1016,
	"dial.keepalive.count": 4, "dial.hosts": map[string]any{"svc.test": []any{"127.0.0.1", "::1"}},
	"health.half_life_ms": 1017, "health.max_peers": 9,
	"retry.max_attempts": 5, "retry.initial_interval_ms": 1018, "retry.max_interval_ms": 1019,
	"retry.multiplier": 1.5, "retry.jitter": 0.25, "retry.attempt_timeout_ms": 1020,
	"retry.max_retry_after_ms": 1021, "retry.budget.ratio": 0.3, "retry.budget.min_per_second": 3.0,
	"tls.ca_file": "", "tls.ca_pem": "", "tls.cert_file": "", "tls.key_file": "", "tls.cert_pem": "",
	"tls.key_pem": "", "tls.server_name": "sni.test", "tls.insecure_skip_verify": true,
	"tls.min_version": "1.3", "tls.alpn": "x-proto,y-proto",
}

func TestEveryKeyHasATestValue(t *testing.T) {
	for k := range keys {
		if _, ok := distinct[k]; !ok {
			t.Errorf("key %q has no value in the test table", k)
		}
	}
	for k := range distinct {
		if _, ok := keys[k]; !ok {
			t.Errorf("test table has %q, which is not a key", k)
		}
	}
}

func frozenWith(t *testing.T, doc map[string]any) *built {
	t.Helper()
	data, _ := json.Marshal(doc)
	c := newClient()
	t.Cleanup(func() { closeAndWait(c) })
	if e := c.configure(func(cfg *config) *Error {
		next, e := cfg.configureJSON(data)
		if e == nil {
			*cfg = next
		}
		return e
	}); e != nil {
		t.Fatalf("configure: %s", e.Msg)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	b, e := c.freeze()
	if e != nil {
		t.Fatalf("freeze: %s", e.Msg)
	}
	return b
}

func closeAndWait(c *client) {
	handles.remove(c.id)
	c.close()
	c.wg.Wait()
}

// TestEveryKnobReachable sets every key and checks, by reflection, that
// every field of transport.Transport, dial.Dialer and retry.Policy was set
// from the configuration — or is one the C ABI cannot carry (Go funcs and
// interfaces) and says so here. A field added to those structs fails this
// test until cshim maps it.
func TestEveryKnobReachable(t *testing.T) {
	b := frozenWith(t, distinct)
	notReachable := map[string]string{
		"Transport.Dialer":          "built from the dial.* keys (checked below)",
		"Transport.Retry":           "built from the retry.* keys (checked below)",
		"Transport.TLSClientConfig": "built from the tls.* keys (checked below)",
		"Transport.Proxy":           "a func: transport.proxy picks env, none or a URL (checked below)",
		"Transport.TracerProvider":  "spans do not cross the C ABI: a no-op provider",
		"Transport.MeterProvider":   "the client's own, read by lifeline_client_metrics_json",
		"Transport.Logger":          "a *slog.Logger: records do not cross the C ABI (yet); the snapshot counts failures",
		"Transport.Credentials":     "a Go interface: a C host sets Authorization on each request; a refresh hook is not in the C ABI yet",
		"Dialer.Logger":             "a *slog.Logger: likewise",
		"Dialer.Resolver":           "an interface: dial.hosts adds static names (checked below)",
		"Dialer.TLSConfig":          "built from the tls.* keys",
		"Dialer.Health":             "the client's own, configured by health.*, in the snapshot",
		"Dialer.DialFunc":           "a Go func: a test seam",
		"Dialer.TracerProvider":     "spans do not cross the C ABI",
		"Dialer.MeterProvider":      "the client's own",
		"Policy.Budget":             "built from retry.budget.* (checked below)",
		"Policy.Retryable":          "a Go func: the default classification",
		"Policy.TracerProvider":     "spans do not cross the C ABI",
		"Policy.MeterProvider":      "the client's own",
	}
	check := func(prefix string, v reflect.Value) {
		typ := v.Type()
		for i := 0; i < typ.NumField(); i++ {
			f := typ.Field(i)
			if !f.IsExported() {
				continue
			}
			name := prefix + "." + f.Name
			if _, ok := notReachable[name]; ok {
				continue
			}
			if v.Field(i).IsZero() {
				t.Errorf("%s is not set by any configuration key", name)
			}
		}
	}
	check("Transport", reflect.ValueOf(b.tr).Elem())
	check("Dialer", reflect.ValueOf(b.tr.Dialer).Elem())
	check("Policy", reflect.ValueOf(b.tr.Retry).Elem())

	ms := func(n int) time.Duration { return time.Duration(n) * time.Millisecond }
	tr, d, p := b.tr, b.tr.Dialer, b.tr.Retry
	got := map[string][2]any{
		"transport.first_byte_timeout_ms":     {tr.FirstByteTimeout, ms(1003)},
		"transport.stall_timeout_ms":          {tr.StallTimeout, ms(1004)},
		"transport.hedge_delay_ms":            {tr.HedgeDelay, ms(1005)},
		"transport.hedge_quantile":            {tr.HedgeQuantile, 0.9},
		"transport.idle_conn_timeout_ms":      {tr.IdleConnTimeout, ms(1006)},
		"transport.max_conn_lifetime_ms":      {tr.MaxConnLifetime, ms(1007)},
		"transport.max_conns_per_host":        {tr.MaxConnsPerHost, 7},
		"transport.max_idle_conns_per_host":   {tr.MaxIdleConnsPerHost, 8},
		"transport.max_response_header_bytes": {tr.MaxResponseHeaderBytes, int64(4096)},
		"transport.disable_fail_fast":         {tr.DisableFailFast, true},
		"transport.disable_load_shedding":     {tr.DisableLoadShedding, true},
		"dial.resolve_timeout_ms":             {d.ResolveTimeout, ms(1008)},
		"dial.connect_timeout_ms":             {d.ConnectTimeout, ms(1009)},
		"dial.attempt_delay_ms":               {d.AttemptDelay, ms(1010)},
		"dial.tls_handshake_timeout_ms":       {d.TLSHandshakeTimeout, ms(1011)},
		"dial.first_byte_timeout_ms":          {d.FirstByteTimeout, ms(1012)},
		"dial.timeout_ms":                     {d.Timeout, ms(1013)},
		"dial.greeting_timeout_ms":            {d.GreetingTimeout, ms(1022)},
		"dial.user_timeout_ms":                {d.UserTimeout, ms(1014)},
		"dial.max_attempts_per_address":       {d.MaxAttemptsPerAddress, 3},
		"dial.keepalive.enable":               {d.KeepAlive.Enable, true},
		"dial.keepalive.idle_ms":              {d.KeepAlive.Idle, ms(1015)},
		"dial.keepalive.interval_ms":          {d.KeepAlive.Interval, ms(1016)},
		"dial.keepalive.count":                {d.KeepAlive.Count, 4},
		"health.half_life_ms":                 {d.Health.HalfLife, ms(1017)},
		"health.max_peers":                    {d.Health.MaxPeers, 9},
		"retry.max_attempts":                  {p.MaxAttempts, 5},
		"retry.initial_interval_ms":           {p.InitialInterval, ms(1018)},
		"retry.max_interval_ms":               {p.MaxInterval, ms(1019)},
		"retry.multiplier":                    {p.Multiplier, 1.5},
		"retry.jitter":                        {p.Jitter, 0.25},
		"retry.attempt_timeout_ms":            {p.AttemptTimeout, ms(1020)},
		"retry.max_retry_after_ms":            {p.MaxRetryAfter, ms(1021)},
		"tls.server_name":                     {tr.TLSClientConfig.ServerName, "sni.test"},
		"tls.insecure_skip_verify":            {tr.TLSClientConfig.InsecureSkipVerify, true},
		"tls.min_version":                     {tr.TLSClientConfig.MinVersion, uint16(0x0304)},
		"tls.alpn":                            {strings.Join(b.tlsDialer.TLSConfig.NextProtos, ","), "x-proto,y-proto"},
		"request_timeout_ms":                  {b.reqTimeout, ms(1001)},
		"max_response_bytes":                  {b.maxBody, int64(1002)},
		"user_agent":                          {b.userAgent, "ua-test"},
		"name":                                {tr.Name, "sdk-test"},
		"name (dial)":                         {tr.Dialer.Name, "sdk-test"},
	}
	for k, v := range got {
		if !reflect.DeepEqual(v[0], v[1]) {
			t.Errorf("%s: built %v (%T), want %v (%T)", k, v[0], v[0], v[1], v[1])
		}
	}
	if p.Budget == nil {
		t.Error("retry.budget.*: no budget built")
	}
	if u, err := tr.Proxy(&http.Request{URL: mustURL("http://example.test/")}); u != nil || err != nil {
		t.Errorf("transport.proxy none: proxy %v, %v", u, err)
	}
	addrs, err := d.Resolver.LookupNetIP(t.Context(), "ip4", "SVC.test.")
	if err != nil || len(addrs) != 1 || addrs[0].String() != "127.0.0.1" {
		t.Errorf("dial.hosts: ip4 lookup = %v, %v", addrs, err)
	}
	// The raw TCP dialer hands the socket over: no first-byte watch.
	if b.tcpDialer.FirstByteTimeout >= 0 {
		t.Errorf("tcp dialer FirstByteTimeout = %v, want off", b.tcpDialer.FirstByteTimeout)
	}
}

func mustURL(s string) *url.URL {
	u, err := url.Parse(s)
	if err != nil {
		panic(err)
	}
	return u
}

// TestSettersAndJSONAgree sets every key through the typed path and
// through JSON (dotted and nested) and compares the effective configs.
func TestSettersAndJSONAgree(t *testing.T) {
	var viaSet config
	for k, v := range distinct {
		var val value
		switch x := v.(type) {
		case int:
			val = value{kind: kInt, i: int64(x)}
			if keys[k].kind == kDuration {
				val.kind = kDuration
			}
		case float64:
			val = value{kind: kFloat, f: x}
		case bool:
			val = value{kind: kBool, b: x}
		case string:
			val = value{kind: kString, s: x}
		case map[string]any:
			data, _ := json.Marshal(x)
			val = value{kind: kString, s: string(data)}
		}
		if e := viaSet.setKey(k, val); e != nil {
			t.Fatalf("set %s: %s", k, e.Msg)
		}
	}
	data, _ := json.Marshal(distinct)
	viaJSON, e := config{}.configureJSON(data)
	if e != nil {
		t.Fatalf("json: %s", e.Msg)
	}
	nested := map[string]any{}
	for k, v := range distinct {
		m := nested
		parts := strings.Split(k, ".")
		if k == "dial.hosts" {
			parts = []string{"dial", "hosts"}
		}
		for _, p := range parts[:len(parts)-1] {
			if m[p] == nil {
				m[p] = map[string]any{}
			}
			m = m[p].(map[string]any)
		}
		m[parts[len(parts)-1]] = v
	}
	data, _ = json.Marshal(nested)
	viaNested, e := config{}.configureJSON(data)
	if e != nil {
		t.Fatalf("nested json: %s", e.Msg)
	}
	a, _ := json.Marshal(viaSet.effective())
	b, _ := json.Marshal(viaJSON.effective())
	c, _ := json.Marshal(viaNested.effective())
	if string(a) != string(b) || string(b) != string(c) {
		t.Errorf("setters, dotted JSON and nested JSON disagree:\n%s\n%s\n%s", a, b, c)
	}
}

func TestConfigRejections(t *testing.T) {
	cases := []struct {
		name, doc string
		status    int32
		mention   string
	}{
		{"unknown", `{"dial.conect_timeout_ms": 1}`, statusUnknownKey, "dial.conect_timeout_ms"},
		{"unknown nested", `{"retry": {"budget": {"ratoi": 1}}}`, statusUnknownKey, "retry.budget.ratoi"},
		{"negative attempts", `{"retry.max_attempts": -1}`, statusBadValue, "retry.max_attempts"},
		{"fraction for int", `{"dial.timeout_ms": 1.5}`, statusBadValue, "dial.timeout_ms"},
		{"string for int", `{"dial.timeout_ms": "5s"}`, statusBadValue, "dial.timeout_ms"},
		{"bool for string", `{"user_agent": true}`, statusBadValue, "user_agent"},
		{"overflow", `{"dial.timeout_ms": 9223372036854775807}`, statusBadValue, "dial.timeout_ms"},
		{"quantile", `{"transport.hedge_quantile": 1}`, statusBadValue, "transport.hedge_quantile"},
		{"multiplier", `{"retry.multiplier": 0.5}`, statusBadValue, "retry.multiplier"},
		{"jitter", `{"retry.jitter": 2}`, statusBadValue, "retry.jitter"},
		{"budget", `{"retry.budget.ratio": -1}`, statusBadValue, "retry.budget.ratio"},
		{"proxy", `{"transport.proxy": "gopher://x"}`, statusBadValue, "transport.proxy"},
		{"min version", `{"tls.min_version": "1.0"}`, statusBadValue, "tls.min_version"},
		{"ca pem", `{"tls.ca_pem": "junk"}`, statusBadValue, "tls.ca_pem"},
		{"hosts ip", `{"dial.hosts": {"a": ["1.2.3"]}}`, statusBadValue, "dial.hosts"},
		{"hosts shape", `{"dial.hosts": {"a": "127.0.0.1"}}`, statusBadValue, "dial.hosts"},
		{"user agent CRLF", `{"user_agent": "a\r\nb"}`, statusBadValue, "user_agent"},
		{"name too long", `{"name": "` + strings.Repeat("n", 65) + `"}`, statusBadValue, "at most 64"},
		{"name with a tab", `{"name": "a\tb"}`, statusBadValue, "control"},
		{"null", `{"retry.max_attempts": null}`, statusBadValue, "retry.max_attempts"},
		{"twice", `{"retry.max_attempts": 1, "retry": {"max_attempts": 2}}`, statusBadValue, "retry.max_attempts"},
		{"not an object", `[1]`, statusInvalidArgument, "json"},
		{"malformed", `{"a":`, statusInvalidArgument, "json"},
		{"trailing", `{} {}`, statusInvalidArgument, "json"},
		// Issue 20, break 8: a stray closing brace or bracket, and a key given
		// twice (the last used to win), were accepted.
		{"trailing brace", `{"retry.max_attempts": 5}}`, statusInvalidArgument, "trailing data after the object at byte 25"},
		{"trailing bracket", `{"retry.max_attempts": 5}]`, statusInvalidArgument, "trailing data after the object at byte 25"},
		{"trailing word", `{"retry.max_attempts": 5} x`, statusInvalidArgument, "trailing data"},
		{"duplicate key", `{"retry.max_attempts": 5, "retry.max_attempts": 1}`, statusInvalidArgument, `key "retry.max_attempts" given twice`},
		{"duplicate nested", `{"retry": {"max_attempts": 5, "max_attempts": 1}}`, statusInvalidArgument, `key "retry.max_attempts" given twice`},
		{"duplicate level", `{"retry": {"jitter": 0.1}, "retry": {"max_attempts": 5}}`, statusInvalidArgument, `key "retry" given twice`},
		{"duplicate host", `{"dial.hosts": {"a": ["127.0.0.1"], "a": ["127.0.0.2"]}}`, statusInvalidArgument, `key "dial.hosts.a" given twice`},
		{"bad utf-8", "{\"user_agent\": \"\xff\"}", statusInvalidArgument, "UTF-8"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			before := config{maxAttempts: 2}
			after, e := before.configureJSON([]byte(tc.doc))
			if e == nil {
				t.Fatalf("accepted %s", tc.doc)
			}
			if e.Status != tc.status || !strings.Contains(e.Msg, tc.mention) {
				t.Errorf("status %d msg %q; want status %d mentioning %q", e.Status, e.Msg, tc.status, tc.mention)
			}
			if after.maxAttempts != 2 {
				t.Errorf("a rejected document changed the config")
			}
		})
	}
}

func TestClassify(t *testing.T) {
	canceled, cancel := context.WithCancelCause(context.Background())
	cancel(errCanceledByHost)
	closed, cancel2 := context.WithCancelCause(context.Background())
	cancel2(errClientClosed)
	deadline, cancel3 := context.WithTimeoutCause(context.Background(), -time.Second, errDeadline)
	defer cancel3()
	live := context.Background()
	dialTimeout := &dial.Error{Phase: dial.PhaseTLS, Network: "tcp", Addr: "x:443", Err: context.DeadlineExceeded}
	refused := &dial.Error{Phase: dial.PhaseConnect, Network: "tcp", Addr: "x:80", Err: errors.New("connection refused")}
	cases := []struct {
		name       string
		ctx        context.Context
		err        error
		status     int32
		phase, typ string
		timeout    bool
	}{
		{"host cancel wins over the error", canceled, dialTimeout, statusCanceled, "canceled", "canceled", false},
		{"client closed", closed, errors.New("x"), statusClosed, "canceled", "closed", false},
		{"total deadline", deadline, context.DeadlineExceeded, statusTimeout, "deadline", "deadline", true},
		// Issue 20, break 10: the total deadline says where it broke when
		// the error chain knows the phase (the type says it was the deadline).
		{"total deadline in tls", deadline, fmt.Errorf("retry: stopped after 1 attempt: %w", dialTimeout), statusTimeout, "tls", "deadline", true},
		{"total deadline after a refusal", deadline, &retry.ExhaustedError{Attempts: 1, Last: refused}, statusTimeout, "deadline", "deadline", true},
		{"total deadline in first byte", deadline, &retry.ExhaustedError{Attempts: 1, Last: &transport.TimeoutError{Phase: "first_byte"}}, statusTimeout, "first_byte", "deadline", true},
		{"first byte", live, &transport.TimeoutError{Phase: "first_byte"}, statusTimeout, "first_byte", "first_byte_timeout", true},
		{"stall after retries", live, &retry.ExhaustedError{Attempts: 3, Last: &transport.TimeoutError{Phase: "stall"}}, statusTimeout, "stall", "stall_timeout", true},
		{"tls timeout", live, fmt.Errorf("wrapped: %w", dialTimeout), statusTimeout, "tls", "timeout", true},
		{"refused", live, refused, statusNetwork, "connect", "connect", false},
		{"bad request", live, transport.ErrBadRequest, statusInvalidArgument, "argument", "invalid_argument", false},
		{"reset while reading", live, io.ErrUnexpectedEOF, statusNetwork, "response", "response", false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := classify(tc.ctx, tc.err)
			if e.Status != tc.status || e.Phase != tc.phase || e.Type != tc.typ || e.Timeout != tc.timeout {
				t.Errorf("got status %d phase %q type %q timeout %v; want %d %q %q %v",
					e.Status, e.Phase, e.Type, e.Timeout, tc.status, tc.phase, tc.typ, tc.timeout)
			}
			if !strings.HasPrefix(e.Msg, "lifeline: ") {
				t.Errorf("message %q", e.Msg)
			}
		})
	}
}

func TestHandles(t *testing.T) {
	c := newClient()
	defer closeAndWait(c)
	if got, e := lookupClient(c.id); e != nil || got != c {
		t.Fatalf("lookup: %v", e)
	}
	if c.id == 0 || c.id >= 1<<53 {
		t.Errorf("handle %d outside (0, 2^53)", c.id)
	}
	for _, h := range []uint64{0, 1, c.id ^ 1, c.id + 1<<handleRandBits, ^uint64(0)} {
		if _, e := lookupClient(h); e == nil || e.Status != statusInvalidHandle {
			t.Errorf("handle %d accepted", h)
		}
	}
	if _, e := lookupOp(c.id); e == nil || !strings.Contains(e.Msg, "is a client") {
		t.Errorf("client as op: %v", e)
	}
	// Handles are not reused.
	seen := map[uint64]bool{}
	for range 1000 {
		h := handles.add(struct{}{})
		if seen[h] {
			t.Fatalf("handle %d issued twice", h)
		}
		seen[h] = true
		handles.remove(h)
	}
	if _, e := lookupClient(c.id + 0); e != nil {
		t.Fatal(e)
	}
}

// TestOperationsUnderRace runs requests, cancels, frees and a close from
// many goroutines in-process, so that the race detector sees the op
// lifecycle (the C tests run the library without it).
func TestOperationsUnderRace(t *testing.T) {
	block := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/block" {
			select {
			case <-block:
			case <-r.Context().Done():
			}
		}
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	defer close(block)
	c := newClient()
	var calls sync.Map
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 30 {
				path := "/ok"
				if i%3 == 0 {
					path = "/block"
				}
				id := fmt.Sprint(g, "-", i)
				o, e := c.start(false, 5*time.Second, func(uint64, int32) {
					n, _ := calls.LoadOrStore(id, new(int))
					*n.(*int)++
				}, true, func(ctx context.Context, b *built, o *op) *Error {
					return doRequest(ctx, b, o, &request{method: "GET", url: srv.URL + path})
				})
				if e != nil {
					if e.Status == statusClosed {
						return
					}
					t.Errorf("start: %s", e.Msg)
					return
				}
				switch i % 3 {
				case 0:
					o.cancel(errCanceledByHost)
				case 1:
					o.free()
					handles.remove(o.id)
					continue
				}
				o.wait(-1)
				if _, e := o.takeResponse(); e != nil && e.Status != statusCanceled && e.Status != statusClosed {
					t.Errorf("op %s: %s", id, e.Msg)
				}
				o.free()
				handles.remove(o.id)
			}
		}()
	}
	time.Sleep(20 * time.Millisecond)
	snap, e := c.snapshot()
	if e != nil || !json.Valid(snap) {
		t.Errorf("snapshot during the run: %v", e)
	}
	wg.Wait()
	closeAndWait(c)
	calls.Range(func(k, v any) bool {
		if *v.(*int) != 1 {
			t.Errorf("callback of %v ran %d times", k, *v.(*int))
		}
		return true
	})
}

// dial.hosts given as a string (lifeline_client_set_string) is held to the
// same JSON rules as lifeline_client_configure (issue 20, break 8).
func TestHostsStringStrict(t *testing.T) {
	for _, doc := range []string{
		`{"a": ["127.0.0.1"]}]`,
		`{"a": ["127.0.0.1"]}}`,
		`{"a": ["127.0.0.1"], "a": ["127.0.0.2"]}`,
	} {
		var cfg config
		e := cfg.setKey("dial.hosts", value{kind: kString, s: doc})
		if e == nil || !strings.Contains(e.Msg, "dial.hosts") ||
			!(strings.Contains(e.Msg, "trailing data") || strings.Contains(e.Msg, `"a" given twice`)) {
			t.Errorf("%s: %v", doc, e)
		}
		if cfg.hosts != nil {
			t.Errorf("%s: applied", doc)
		}
	}
	var cfg config
	if e := cfg.setKey("dial.hosts", value{kind: kString, s: ` {"a": ["127.0.0.1"]} `}); e != nil {
		t.Fatal(e)
	}
}

// TestClassifyRedacts: whatever error text reaches the host goes through
// the same redaction as spans and logs: a URL's query, fragment and
// userinfo never reach a host's logs, on any path (live, deadline, cancel).
func TestClassifyRedacts(t *testing.T) {
	secret := &url.Error{Op: "Get", URL: "https://user:PASSWORD@api.example/v1?token=SECRET#FRAG", Err: errors.New("boom")}
	canceled, cancel := context.WithCancelCause(context.Background())
	cancel(errCanceledByHost)
	deadline, cancel2 := context.WithTimeoutCause(context.Background(), -time.Second, errDeadline)
	defer cancel2()
	for name, ctx := range map[string]context.Context{"live": context.Background(), "canceled": canceled, "deadline": deadline} {
		e := classify(ctx, secret)
		for _, s := range []string{"PASSWORD", "SECRET", "FRAG"} {
			if strings.Contains(e.Msg, s) {
				t.Errorf("%s: %q reaches the host: %s", name, s, e.Msg)
			}
		}
	}
}

// A thread that looked an op up may take from it after another thread
// freed it: the take answers E_INVALID_HANDLE, never an empty success
// (a nil response reached the C side and panicked; CI, stress program).
func TestTakeAfterConcurrentFree(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ok")
	}))
	defer srv.Close()
	c := newClient()
	defer closeAndWait(c)
	for _, isDial := range []bool{false, true} {
		o, e := c.start(isDial, 5*time.Second, nil, true, func(ctx context.Context, b *built, o *op) *Error {
			if isDial {
				fds, err := syscall.Socketpair(syscall.AF_UNIX, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
				if err != nil {
					return argError("socketpair: %v", err)
				}
				syscall.Close(fds[1])
				return o.setFD(fds[0]) // the free closes it
			}
			return doRequest(ctx, b, o, &request{method: "GET", url: srv.URL})
		})
		if e != nil {
			t.Fatalf("start: %s", e.Msg)
		}
		o.wait(-1)
		looked, e := lookupOp(o.id) // the taker's lookup, before the free
		if e != nil {
			t.Fatalf("lookup: %s", e.Msg)
		}
		handles.remove(o.id)
		o.free()
		if isDial {
			if fd, e := looked.takeFD(); e == nil || e.Status != statusInvalidHandle {
				t.Errorf("takeFD after free: fd %d, err %+v; want E_INVALID_HANDLE", fd, e)
			}
			continue
		}
		if r, e := looked.takeResponse(); e == nil || e.Status != statusInvalidHandle {
			t.Errorf("takeResponse after free: resp %v, err %+v; want E_INVALID_HANDLE", r, e)
		}
	}
}
