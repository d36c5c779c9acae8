package transport_test

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// secretMark is in every secret value the secrets tests send: userinfo,
// query values, fragment, Authorization, Cookie, Proxy-Authorization and
// the proxy's password. It must never appear in a span, a metric, an
// error or a log line.
const secretMark = "s3cr3t"

// secretHeader returns request headers that carry secrets.
func secretHeader() http.Header {
	h := http.Header{}
	h.Set("Authorization", "Bearer s3cr3t-authz")
	h.Set("Cookie", "session=s3cr3t-cookie")
	h.Set("Proxy-Authorization", "Basic s3cr3t-proxyauth")
	return h
}

// withSecrets returns base ("https://host:port") with userinfo, a path, a
// query and a fragment that all carry secrets.
func withSecrets(base string) string {
	u, _ := url.Parse(base)
	u.User = url.UserPassword("s3cr3t-user", "s3cr3t-pass")
	u.Path = "/v1/items"
	u.RawQuery = "token=s3cr3t-query&sig=s3cr3t-q2&plain=1"
	u.Fragment = "s3cr3t-frag"
	return u.String()
}

// leakCheck collects everything the library showed to the outside world
// and reports where a secret appears.
type leakCheck struct {
	r      *rig
	errs   []string
	extra  []string // log lines and other text
	errCnt int
}

// addErr records err's text as every formatting verb and every error in
// its chain shows it.
func (l *leakCheck) addErr(err error) {
	if err == nil {
		return
	}
	l.errCnt++
	l.errs = append(l.errs, err.Error(), fmt.Sprintf("%v", err), fmt.Sprintf("%+v", err), fmt.Sprintf("%q", err))
	var walk func(error)
	walk = func(e error) {
		for e != nil {
			l.errs = append(l.errs, e.Error())
			switch u := e.(type) {
			case interface{ Unwrap() []error }:
				for _, x := range u.Unwrap() {
					walk(x)
				}
				return
			case interface{ Unwrap() error }:
				e = u.Unwrap()
			default:
				return
			}
		}
	}
	walk(err)
}

func spanText(s sdktrace.ReadOnlySpan) []string {
	out := []string{s.Name(), s.Status().Description}
	for _, a := range s.Attributes() {
		out = append(out, string(a.Key)+"="+a.Value.String())
	}
	for _, e := range s.Events() {
		out = append(out, e.Name)
		for _, a := range e.Attributes {
			out = append(out, string(a.Key)+"="+a.Value.String())
		}
	}
	for _, l := range s.Links() {
		for _, a := range l.Attributes {
			out = append(out, string(a.Key)+"="+a.Value.String())
		}
	}
	return out
}

// check fails the test for every place a secret appears, and returns the
// number of spans and metric data seen (so that a vacuous check fails).
func (l *leakCheck) check(t *testing.T) (spans int, metricText string) {
	t.Helper()
	for _, s := range l.r.spans.Ended() {
		spans++
		for _, txt := range spanText(s) {
			assert.NotContains(t, txt, secretMark, "span %s", s.Name())
		}
	}
	var rm metricdata.ResourceMetrics
	require.NoError(t, l.r.reader.Collect(context.Background(), &rm))
	metricText = fmt.Sprintf("%+v", rm)
	if i := strings.Index(metricText, secretMark); i >= 0 {
		t.Errorf("metrics hold a secret: …%s…", metricText[max(i-200, 0):min(i+50, len(metricText))])
	}
	for _, e := range l.errs {
		assert.NotContains(t, e, secretMark, "error text")
	}
	for _, e := range l.extra {
		assert.NotContains(t, e, secretMark, "log")
	}
	return spans, metricText
}

// TestSecretsNeverLeakHTTP sends requests whose URL and headers carry
// secrets through every outcome a Transport has — success on HTTP/1.1 and
// HTTP/2, retried 503s, a hedge, a first-byte timeout, a body stall, a
// refused connect, an untrusted certificate, a proxy with a password, a
// refused proxy — and checks that no secret reaches a span, a metric or an
// error. The server sees the secrets: they were sent.
func TestSecretsNeverLeakHTTP(t *testing.T) {
	var sawAuth atomic.Int32
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/items", func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") == "Bearer s3cr3t-authz" && r.URL.Query().Get("token") == "s3cr3t-query" {
			sawAuth.Add(1)
		}
		switch r.Header.Get("X-Mode") {
		case "503":
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
		case "hang":
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case "stall":
			w.WriteHeader(http.StatusOK)
			_, _ = io.WriteString(w, "partial")
			w.(http.Flusher).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		case "slow-once":
			if r.Header.Get("X-Slow") != "" && sawAuth.Load()%2 == 1 {
				time.Sleep(150 * time.Millisecond)
			}
			_, _ = io.WriteString(w, "ok")
		default:
			_, _ = io.WriteString(w, "ok")
		}
	})
	h1, cfg1 := tlsServer(t, false, mux)
	h2, cfg2 := tlsServer(t, true, mux)
	untrusted, _ := tlsServer(t, false, mux)
	refused := faultnet.RefusedAddr(t, "tcp")
	proxyAddr := startConnectProxy(t, false)

	r := newRig(t)
	lc := &leakCheck{r: r}
	var logBuf syncBuffer
	newTr := func(cfg *transportOpts) *transport.Transport {
		tr := &transport.Transport{
			TLSClientConfig:  cfg.tls,
			TracerProvider:   r.tp,
			MeterProvider:    r.mp,
			FirstByteTimeout: 200 * time.Millisecond,
			StallTimeout:     200 * time.Millisecond,
			HedgeDelay:       cfg.hedge,
			Proxy:            cfg.proxy,
			Retry:            &retry.Policy{MaxAttempts: 2, InitialInterval: time.Millisecond, MeterProvider: r.mp},
			Dialer:           &dial.Dialer{Timeout: 2 * time.Second, Health: &dial.Health{}},
			Logger:           newTestLogger(&logBuf),
		}
		t.Cleanup(tr.CloseIdleConnections)
		return tr
	}
	do := func(tr *transport.Transport, method, base, mode string) {
		req, err := http.NewRequestWithContext(t.Context(), method, withSecrets(base), nil)
		require.NoError(t, err)
		req.Header = secretHeader()
		if mode != "" {
			req.Header.Set("X-Mode", mode)
		}
		resp, err := tr.RoundTrip(req)
		lc.addErr(err)
		if resp != nil {
			_, err := io.ReadAll(resp.Body)
			lc.addErr(err)
			resp.Body.Close()
		}
	}
	direct := func(cfg *tls.Config) *transportOpts { return &transportOpts{tls: cfg, proxy: noProxy} }
	for _, srv := range []struct {
		url string
		cfg *tls.Config
	}{{h1.URL, cfg1}, {h2.URL, cfg2}} {
		tr := newTr(direct(srv.cfg))
		do(tr, http.MethodGet, srv.url, "")
		do(tr, http.MethodGet, srv.url, "503")
		do(tr, http.MethodPost, srv.url, "503")
		do(tr, http.MethodGet, srv.url, "hang")
		do(tr, http.MethodGet, srv.url, "stall")
		o := direct(srv.cfg)
		o.hedge = 20 * time.Millisecond
		do(newTr(o), http.MethodGet, srv.url, "hang")
	}
	do(newTr(direct(cfg1)), http.MethodGet, "https://"+refused, "")
	do(newTr(direct(cfg1)), http.MethodGet, untrusted.URL, "")
	proxied := func(addr string) *transportOpts {
		pu := &url.URL{Scheme: "http", User: url.UserPassword("puser", "s3cr3t-proxypass"), Host: addr}
		return &transportOpts{tls: cfg1, proxy: http.ProxyURL(pu)}
	}
	do(newTr(proxied(proxyAddr)), http.MethodGet, h1.URL, "")
	do(newTr(proxied(refused)), http.MethodGet, h1.URL, "")
	do(newTr(proxied(refused)), http.MethodGet, "http://"+strings.TrimPrefix(h1.URL, "https://"), "")

	// Bad requests name no secret either.
	bad, _ := http.NewRequest(http.MethodGet, "ftp://s3cr3t-user:s3cr3t-pass@host/?token=s3cr3t-query", nil)
	_, err := newTr(direct(cfg1)).RoundTrip(bad)
	require.Error(t, err)
	lc.addErr(err)

	lc.extra = logBuf.lines()
	spans, metrics := lc.check(t)
	assert.GreaterOrEqual(t, sawAuth.Load(), int32(10), "the server got the secrets")
	assert.GreaterOrEqual(t, lc.errCnt, 8, "errors checked")
	assert.Greater(t, spans, 20, "spans checked")
	assert.True(t, strings.Contains(metrics, "lifeline.http.attempts") && strings.Contains(metrics, "lifeline.dial.duration"),
		"metrics checked")
	assert.NotEmpty(t, lc.extra, "log lines checked")
	// The positive control: url.full is there, with the keys and without
	// the values.
	var full string
	for _, s := range r.spans.Ended() {
		for _, a := range s.Attributes() {
			if a.Key == "url.full" {
				full = a.Value.AsString()
			}
		}
	}
	assert.Contains(t, full, "token="+"REDACTED")
}

type transportOpts struct {
	tls   *tls.Config
	proxy func(*http.Request) (*url.URL, error)
	hedge time.Duration
}

// TestSecretsNeverLeakWebSocket is the same for websockets: dials that
// succeed, are refused (403), hang (HandshakeTimeout), meet a refused
// port, and a session that loses its server, with a token in the query
// and secrets in the headers.
func TestSecretsNeverLeakWebSocket(t *testing.T) {
	var sawAuth atomic.Int32
	refuse := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Cookie") == "session=s3cr3t-cookie" {
			sawAuth.Add(1)
		}
		w.WriteHeader(http.StatusForbidden)
		_, _ = io.WriteString(w, "no")
	}
	counting := func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Cookie") == "session=s3cr3t-cookie" {
			sawAuth.Add(1)
		}
		echo(w, r)
	}
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	ok := startWS(t, counting, srvTLS)
	forbidden := startWS(t, refuse, nil)
	silent := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	refused := faultnet.RefusedAddr(t, "tcp")

	r := newRig(t)
	lc := &leakCheck{r: r}
	var logBuf syncBuffer
	wd := &transport.WebSocketDialer{
		TLSClientConfig:  cliTLS,
		HandshakeTimeout: 200 * time.Millisecond,
		Retry:            &retry.Policy{MaxAttempts: 2, InitialInterval: time.Millisecond},
		Proxy:            noProxy,
		TracerProvider:   r.tp,
		MeterProvider:    r.mp,
		Logger:           newTestLogger(&logBuf),
	}
	q := "/ws?token=s3cr3t-query#s3cr3t-frag"
	for _, u := range []string{
		"wss://" + ok.Addr() + q,
		"ws://" + forbidden.Addr() + q,
		"ws://" + silent.Addr() + q,
		"ws://" + refused + q,
		"ws://s3cr3t-user:s3cr3t-pass@" + forbidden.Addr() + q,
		"ws://" + forbidden.Addr() + "/%zz?token=s3cr3t-query",
	} {
		c, resp, err := wd.Dial(t.Context(), u, secretHeader())
		lc.addErr(err)
		if resp != nil && resp.Body != nil {
			resp.Body.Close()
		}
		if c != nil {
			roundTrip(t, c, "x")
			c.Close()
		}
	}

	// A session whose server goes away: its causes and write errors.
	stream := startWS(t, counting, nil)
	var causes []error
	causeCh := make(chan error, 16)
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL:          "ws://" + stream.Addr() + q,
		Header:       secretHeader(),
		Dialer:       wd,
		OnDisconnect: func(err error) { causeCh <- err },
		Logger:       newTestLogger(&logBuf),
	})
	require.NoError(t, err)
	waitState(t, s, transport.WebSocketConnected)
	require.NoError(t, stream.Down())
	select {
	case c := <-causeCh:
		causes = append(causes, c)
	case <-time.After(5 * time.Second):
		t.Fatal("no disconnect")
	}
	lc.addErr(s.WriteMessage(t.Context(), 1, []byte("x")))
	require.NoError(t, s.Close())
	lc.addErr(s.WriteMessage(t.Context(), 1, []byte("x")))
	for _, c := range causes {
		lc.addErr(c)
	}
	_, err = transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: "http://s3cr3t-user:s3cr3t-pass@h/?token=s3cr3t-query"})
	require.Error(t, err)
	lc.addErr(err)

	lc.extra = logBuf.lines()
	spans, _ := lc.check(t)
	assert.GreaterOrEqual(t, sawAuth.Load(), int32(3), "the servers got the secrets")
	assert.GreaterOrEqual(t, lc.errCnt, 8)
	assert.Greater(t, spans, 6)
	assert.NotEmpty(t, lc.extra, "log lines checked")
}
