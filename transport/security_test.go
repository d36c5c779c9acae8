package transport_test

import (
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// helloRecorder records the SNI of every ClientHello a TLS server sees and
// can hold a handshake back for a while (a slow address in a race).
type helloRecorder struct {
	mu    sync.Mutex
	names []string
	stop  chan struct{} // closed at the test's end: releases held handshakes
	once  sync.Once
}

func (r *helloRecorder) release() {
	r.mu.Lock()
	if r.stop == nil {
		r.stop = make(chan struct{})
	}
	r.mu.Unlock()
	r.once.Do(func() { close(r.stop) })
}

func (r *helloRecorder) stopped() <-chan struct{} {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.stop == nil {
		r.stop = make(chan struct{})
	}
	return r.stop
}

func (r *helloRecorder) add(name string) {
	r.mu.Lock()
	r.names = append(r.names, name)
	r.mu.Unlock()
}

func (r *helloRecorder) seen() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.names...)
}

// recordingTLS returns base with a hook that records each ClientHello's
// ServerName and, when hold > 0, keeps the handshake waiting that long.
func recordingTLS(t *testing.T, base *tls.Config, rec *helloRecorder, hold time.Duration) *tls.Config {
	t.Cleanup(rec.release)
	cfg := base.Clone()
	cfg.GetConfigForClient = func(hi *tls.ClientHelloInfo) (*tls.Config, error) {
		rec.add(hi.ServerName)
		if hold > 0 {
			select {
			case <-time.After(hold):
			case <-hi.Context().Done():
			case <-rec.stopped():
			}
		}
		return nil, nil
	}
	return cfg
}

// httpGroup serves h over TLS (h2 and http/1.1) on one port of each of
// hosts, so one name resolved to all of them reaches each; cfgs[i] is the
// TLS config of hosts[i].
func httpGroup(t *testing.T, h http.Handler, hosts []string, cfgs []*tls.Config) int {
	t.Helper()
	for range 8 {
		var lns []net.Listener
		port := "0"
		ok := true
		for _, host := range hosts {
			ln, err := net.Listen("tcp", net.JoinHostPort(host, port))
			if err != nil {
				ok = false
				break
			}
			lns = append(lns, ln)
			port = strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
		}
		if !ok {
			for _, ln := range lns {
				ln.Close()
			}
			continue
		}
		for i, ln := range lns {
			cfg := cfgs[i].Clone()
			cfg.NextProtos = []string{"h2", "http/1.1"}
			srv := &http.Server{Handler: h, TLSConfig: cfg, ErrorLog: quietLog()}
			go func() { _ = srv.ServeTLS(ln, "", "") }()
			t.Cleanup(func() { _ = srv.Close() })
		}
		p, _ := strconv.Atoi(port)
		return p
	}
	t.Fatal("no port free on every host")
	return 0
}

// TestSecurityCertificateVerifiedByDefault: a server whose certificate
// nothing vouches for is refused by a zero Transport and a zero
// WebSocketDialer, with a TLS-phase *dial.Error typed tls_certificate,
// and not retried (a certificate does not heal).
func TestSecurityCertificateVerifiedByDefault(t *testing.T) {
	srvCfg, _ := faultnet.SelfSigned(t)
	var rec helloRecorder
	port := httpGroup(t, http.HandlerFunc(hello), []string{"127.0.0.1"},
		[]*tls.Config{recordingTLS(t, srvCfg, &rec, 0)})
	url := "https://127.0.0.1:" + strconv.Itoa(port) + "/"

	tr := &transport.Transport{Proxy: noProxy}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, url, nil)
	require.NoError(t, err)
	start := time.Now()
	resp, err := tr.RoundTrip(req)
	require.Error(t, err)
	require.Nil(t, resp)
	assert.Less(t, time.Since(start), 2*time.Second)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseTLS, de.Phase)
	assert.Equal(t, "tls_certificate", de.ErrorType())
	assert.False(t, de.Retryable())
	var ee *retry.ExhaustedError
	assert.False(t, errors.As(err, &ee), "a certificate error is not retried: %v", err)
	// One try; a lone address may race itself once (MaxAttemptsPerAddress).
	assert.LessOrEqual(t, len(rec.seen()), 2, "handshakes: %v", rec.seen())

	// The websocket half: the same refusal.
	wsSrv := startWS(t, echo, srvCfg)
	_, _, err = (&transport.WebSocketDialer{Proxy: noProxy}).Dial(t.Context(), wsURL("wss", wsSrv, "/"), nil)
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "tls_certificate", de.ErrorType())
}

// TestSecurityHostNameVerified: a certificate trusted by the client but
// issued for another name is refused, whether the URL names the host or
// an IP the certificate does not hold; the right name passes.
func TestSecurityHostNameVerified(t *testing.T) {
	srvCfg, cliCfg, err := faultnet.NewSelfSigned("lifeline.test")
	require.NoError(t, err)
	cliCfg.ServerName = "" // ServerName comes from the URL
	var rec helloRecorder
	port := httpGroup(t, http.HandlerFunc(hello), []string{"127.0.0.1"},
		[]*tls.Config{recordingTLS(t, srvCfg, &rec, 0)})
	res := wsResolver{netip.MustParseAddr("127.0.0.1")}
	tr := &transport.Transport{Proxy: noProxy, TLSClientConfig: cliCfg, Dialer: &dial.Dialer{Resolver: res},
		Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	get := func(host string) (*http.Response, error) {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
			"https://"+net.JoinHostPort(host, strconv.Itoa(port))+"/", nil)
		require.NoError(t, err)
		return tr.RoundTrip(req)
	}
	for _, host := range []string{"127.0.0.1", "other.test"} {
		_, err := get(host)
		var de *dial.Error
		require.ErrorAs(t, err, &de, host)
		assert.Equal(t, dial.PhaseTLS, de.Phase, host)
		assert.Equal(t, "tls_certificate", de.ErrorType(), "%s: %v", host, err)
	}
	resp, err := get("lifeline.test")
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()

	// websocket: the same name check.
	wsSrv := startWS(t, echo, srvCfg)
	wd := &transport.WebSocketDialer{Proxy: noProxy, TLSClientConfig: cliCfg, Dialer: &dial.Dialer{Resolver: res},
		Retry: &retry.Policy{MaxAttempts: 1}}
	_, _, err = wd.Dial(t.Context(), "wss://other.test:"+strconv.Itoa(wsSrv.Port())+"/", nil)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "tls_certificate", de.ErrorType())
	c, _, err := wd.Dial(t.Context(), "wss://lifeline.test:"+strconv.Itoa(wsSrv.Port())+"/", nil)
	require.NoError(t, err)
	c.Close()
}

// TestSecuritySNIWhenRacingIPs: a name resolved to two IPs, the first
// slow in its handshake, is raced over both; every ClientHello, the
// loser's too, carries the name (never an IP), and the certificate is
// checked against the name. With an IP literal URL no SNI is sent (RFC
// 6066 §3) and the certificate must hold the IP.
func TestSecuritySNIWhenRacingIPs(t *testing.T) {
	srvCfg, cliCfg, err := faultnet.NewSelfSigned("lifeline.test", "127.0.0.2", "127.0.0.3")
	require.NoError(t, err)
	cliCfg.ServerName = ""
	var slow, fast helloRecorder
	hosts := []string{"127.0.0.2", "127.0.0.3"}
	port := httpGroup(t, http.HandlerFunc(hello), hosts,
		[]*tls.Config{recordingTLS(t, srvCfg, &slow, 2*time.Second), recordingTLS(t, srvCfg, &fast, 0)})
	res := wsResolver{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	for _, proto := range []string{"h2", "http/1.1"} {
		cfg := cliCfg.Clone()
		cfg.NextProtos = []string{proto}
		tr := &transport.Transport{Proxy: noProxy, TLSClientConfig: cfg,
			Dialer: &dial.Dialer{Resolver: res, AttemptDelay: 50 * time.Millisecond}}
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet,
			"https://lifeline.test:"+strconv.Itoa(port)+"/", nil)
		require.NoError(t, err)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err, proto)
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		assert.Less(t, time.Since(start), 1500*time.Millisecond, "the slow address was overtaken")
		assert.Contains(t, string(b), "hello HTTP/")
		tr.CloseIdleConnections()
	}
	require.NotEmpty(t, slow.seen(), "the race reached the slow address")
	require.NotEmpty(t, fast.seen())
	for _, n := range append(slow.seen(), fast.seen()...) {
		assert.Equal(t, "lifeline.test", n, "SNI of a raced handshake")
	}

	// IP literal: no SNI, the certificate's IP SAN verified.
	var ipRec helloRecorder
	ipPort := httpGroup(t, http.HandlerFunc(hello), []string{"127.0.0.2"},
		[]*tls.Config{recordingTLS(t, srvCfg, &ipRec, 0)})
	tr := &transport.Transport{Proxy: noProxy, TLSClientConfig: cliCfg}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://127.0.0.2:"+strconv.Itoa(ipPort)+"/", nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, []string{""}, ipRec.seen())

	// websocket over the same race.
	var wsSlow, wsFast helloRecorder
	wsPort := httpGroup(t, http.HandlerFunc(echo), hosts,
		[]*tls.Config{recordingTLS(t, srvCfg, &wsSlow, 2*time.Second), recordingTLS(t, srvCfg, &wsFast, 0)})
	wd := &transport.WebSocketDialer{Proxy: noProxy, TLSClientConfig: cliCfg,
		Dialer: &dial.Dialer{Resolver: res, AttemptDelay: 50 * time.Millisecond}}
	c, _, err := wd.Dial(t.Context(), "wss://lifeline.test:"+strconv.Itoa(wsPort)+"/", nil)
	require.NoError(t, err)
	roundTrip(t, c, "sni")
	c.Close()
	for _, n := range append(wsSlow.seen(), wsFast.seen()...) {
		assert.Equal(t, "lifeline.test", n)
	}
	require.NotEmpty(t, wsSlow.seen())
}

// TestSecurityTLS12Minimum: a server that speaks at most TLS 1.1 is
// refused in the TLS phase, by the Transport and the websocket dialer,
// also when the caller's TLS config leaves MinVersion at zero.
func TestSecurityTLS12Minimum(t *testing.T) {
	srvCfg, cliCfg := faultnet.SelfSigned(t)
	old := srvCfg.Clone()
	old.MinVersion, old.MaxVersion = tls.VersionTLS10, tls.VersionTLS11
	require.Zero(t, cliCfg.MinVersion)
	var rec helloRecorder
	port := httpGroup(t, http.HandlerFunc(hello), []string{"127.0.0.1"}, []*tls.Config{recordingTLS(t, old, &rec, 0)})
	tr := &transport.Transport{Proxy: noProxy, TLSClientConfig: cliCfg}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://127.0.0.1:"+strconv.Itoa(port)+"/", nil)
	require.NoError(t, err)
	_, err = tr.RoundTrip(req)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseTLS, de.Phase)
	assert.ErrorContains(t, err, "protocol version")
	require.NotEmpty(t, rec.seen(), "the handshake reached the server")

	wsSrv := startWS(t, echo, old)
	_, _, err = (&transport.WebSocketDialer{Proxy: noProxy, TLSClientConfig: cliCfg,
		Retry: &retry.Policy{MaxAttempts: 1}}).Dial(t.Context(), wsURL("wss", wsSrv, "/"), nil)
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseTLS, de.Phase)

	// The Dialer alone, with its zero TLSConfig.
	d := &dial.Dialer{TLSConfig: cliCfg}
	_, err = d.DialTLSContext(t.Context(), "tcp", "127.0.0.1:"+strconv.Itoa(port))
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseTLS, de.Phase)
}

// quietLog discards net/http's server log (handshake errors are the point
// of these tests).
func quietLog() *log.Logger { return log.New(io.Discard, "", 0) }
