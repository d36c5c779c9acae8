package faultnet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// TestProxyConnFaults: each connection-level fault, on the wire, and the
// upstream never sees the faulted connections.
func TestProxyConnFaults(t *testing.T) {
	for _, tc := range []struct {
		fault faultnet.ProxyFault
		want  string // kind of the first read's result
	}{
		{faultnet.ProxySilence, "timeout"},
		{faultnet.ProxyStallTLS, "timeout"},
		{faultnet.ProxyReset, "reset"},
		{faultnet.ProxyClose, "EOF"},
	} {
		t.Run(tc.fault.String(), func(t *testing.T) {
			up := faultnet.Start(t, faultnet.Config{})
			p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), Fault: tc.fault})
			c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
			if err != nil {
				if tc.fault == faultnet.ProxyReset && kind(err) == "reset" {
					return
				}
				t.Fatal(err)
			}
			defer c.Close()
			// A whole TLS record header + body so StallTLS reads "a ClientHello".
			_, werr := c.Write([]byte{22, 3, 1, 0, 2, 1, 2})
			_, err = readResult(c, 300*time.Millisecond)
			if tc.want == "reset" && kind(werr) == "reset" {
				// The RST came before the write: the write took the
				// reset (ECONNRESET), and the read after it sees EOF.
				err = werr
			}
			if got := kind(err); got != tc.want {
				t.Fatalf("read: %s (%v), want %s", got, err, tc.want)
			}
			if st := up.Stats(); st.Accepted != 0 {
				t.Fatalf("upstream accepted %d, want 0", st.Accepted)
			}
			c.Close()
			if tc.fault == faultnet.ProxySilence || tc.fault == faultnet.ProxyStallTLS {
				eventually(t, 5*time.Second, "ClosedByPeer=1", func() bool { return p.Stats().ClosedByPeer == 1 })
			}
			if st := p.Stats(); st.Faulted != 1 {
				t.Fatalf("stats %+v, want Faulted 1", st)
			}
		})
	}
}

// TestProxyRulesFirstMatch: the first rule whose selector picks the
// ordinal applies; SetRules swaps at run time and restarts the ordinal;
// the Log line names the rule.
func TestProxyRulesFirstMatch(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{})
	var mu sync.Mutex
	var logs []faultnet.ConnLog
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{
		Upstream: up.Addr(),
		Rules: []faultnet.Rule{
			{Name: "close-2nd", Fault: faultnet.ProxyClose, Select: faultnet.EveryNth(2)},
			{Name: "reset-3rd", Fault: faultnet.ProxyReset, Select: faultnet.EveryNth(3)},
		},
		Log: func(l faultnet.ConnLog) { mu.Lock(); logs = append(logs, l); mu.Unlock() },
	})
	want := []string{"ok", "EOF", "reset", "EOF", "ok", "EOF"}
	for i, w := range want {
		if got := echoVia(t, p.Addr()); got != w {
			t.Fatalf("conn %d: %s, want %s", i+1, got, w)
		}
	}
	if err := p.SetRules(faultnet.Rule{Name: "all-reset", Fault: faultnet.ProxyReset}); err != nil {
		t.Fatal(err)
	}
	if got := echoVia(t, p.Addr()); got != "reset" {
		t.Fatalf("after SetRules: %s, want reset", got)
	}
	if err := p.SetRules(); err != nil {
		t.Fatal(err)
	}
	if got := echoVia(t, p.Addr()); got != "ok" {
		t.Fatalf("after SetRules(): %s, want ok", got)
	}
	eventually(t, 5*time.Second, "8 log lines", func() bool { mu.Lock(); defer mu.Unlock(); return len(logs) == 8 })
	mu.Lock()
	defer mu.Unlock()
	seen := map[string]int{}
	for _, l := range logs {
		seen[l.Rule]++
		if l.Rule == "" && (l.Up != 4 || l.Down != 4) {
			t.Errorf("passed conn log %v: want 4 B each way", l)
		}
	}
	if seen["close-2nd"] != 3 || seen["reset-3rd"] != 1 || seen["all-reset"] != 1 || seen[""] != 3 {
		t.Fatalf("rules in the log: %v\n%v", seen, logs)
	}
	if err := p.SetRules(faultnet.Rule{Name: "bad", Latency: -1}); err == nil || !strings.Contains(err.Error(), `"bad"`) {
		t.Fatalf("bad rule: %v, want an error naming it", err)
	}
}

// echoVia dials, sends "ping" and classifies the answer.
func echoVia(t *testing.T, addr string) string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		return kind(err)
	}
	defer c.Close()
	if _, err := c.Write([]byte("ping")); err != nil {
		return kind(err)
	}
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		return kind(err)
	}
	return "ok"
}

// TestProxyDropAllLinger: DropAll resets the clients; the upstream sides
// stay open for UpstreamLinger (the server does not notice), then close.
func TestProxyDropAllLinger(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), UpstreamLinger: 2 * time.Second})
	var cs []net.Conn
	for range 3 {
		c := dial(t, p.Addr())
		_, _ = c.Write([]byte("ping"))
		if s, err := readResult(c, 5*time.Second); err != nil || s != "ping" {
			t.Fatalf("echo: %q %v", s, err)
		}
		cs = append(cs, c)
	}
	eventually(t, 5*time.Second, "upstream has 3", func() bool { return up.Stats().Active == 3 })
	if n := p.DropAll(); n != 3 {
		t.Fatalf("DropAll dropped %d, want 3", n)
	}
	for _, c := range cs {
		if _, err := readResult(c, 5*time.Second); kind(err) != "reset" {
			t.Fatalf("client after DropAll: %v, want reset", err)
		}
	}
	st := p.Stats()
	if st.Dropped != 3 || st.Lingering != 3 {
		t.Fatalf("stats %+v, want Dropped 3, Lingering 3", st)
	}
	if a := up.Stats().Active; a != 3 {
		t.Fatalf("upstream active %d right after the drop, want 3 (lingering)", a)
	}
	eventually(t, 15*time.Second, "linger over", func() bool { return p.Stats().Lingering == 0 && up.Stats().Active == 0 })
}

// TestProxyFlap: with FlapPeriod the proxy drops open connections by
// itself; SetFlap(0) stops it.
func TestProxyFlap(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), FlapPeriod: 100 * time.Millisecond})
	c := dial(t, p.Addr())
	if _, err := readResult(c, 5*time.Second); kind(err) != "reset" {
		t.Fatalf("idle conn through a flapping proxy: %v, want reset", err)
	}
	if err := p.SetFlap(0); err != nil {
		t.Fatal(err)
	}
	c2 := dial(t, p.Addr())
	if _, err := readResult(c2, 400*time.Millisecond); kind(err) != "timeout" {
		t.Fatalf("after SetFlap(0): %v, want the idle conn kept", err)
	}
	if err := p.SetFlap(-time.Second); err == nil {
		t.Fatal("SetFlap(-1s): no error")
	}
}

// TestProxyBlackhole: black-holed, a connect hangs and an open
// connection goes silent; restored, the same port serves again.
func TestProxyBlackhole(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr()})
	open := dial(t, p.Addr())
	// An echo through it first: the proxy has accepted the conn (one still
	// in the old listener's accept queue would be closed with it).
	if _, err := open.Write([]byte("hi")); err != nil {
		t.Fatal(err)
	}
	_ = open.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.ReadFull(open, make([]byte, 2)); err != nil {
		t.Fatalf("echo before the black hole: %v", err)
	}
	_ = open.SetReadDeadline(time.Time{})
	if err := p.SetBlackhole(true); err != nil {
		t.Fatal(err)
	}
	if !p.Blackholed() {
		t.Fatal("Blackholed() false after SetBlackhole(true)")
	}
	d := net.Dialer{Timeout: 300 * time.Millisecond}
	if c, err := d.Dial("tcp", p.Addr()); kind(err) != "timeout" {
		if c != nil {
			c.Close()
		}
		t.Fatalf("connect while black-holed: %v, want a timeout", err)
	}
	_, _ = open.Write([]byte("ping"))
	if _, err := readResult(open, 300*time.Millisecond); kind(err) != "timeout" {
		t.Fatalf("open conn while black-holed: %v, want silence", err)
	}
	if err := p.SetBlackhole(false); err != nil {
		t.Fatal(err)
	}
	if got := echoVia(t, p.Addr()); got != "ok" {
		t.Fatalf("after the restore: %s", got)
	}
}

// TestProxyBlackholeFor starts black-holed and restores by itself.
func TestProxyBlackholeFor(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), BlackholeFor: 500 * time.Millisecond})
	start := time.Now()
	var d net.Dialer
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	for {
		c, err := d.DialContext(ctx, "tcp", p.Addr())
		if err == nil {
			c.Close()
			break
		}
		if ctx.Err() != nil {
			t.Fatalf("never restored: %v", err)
		}
	}
	if el := time.Since(start); el < 400*time.Millisecond {
		t.Fatalf("connected after %v, before BlackholeFor", el)
	}
	eventually(t, 5*time.Second, "restored", func() bool { return !p.Blackholed() })
}

// TestProxyTLSTerminate: the client does TLS with the proxy, the upstream
// gets plaintext.
func TestProxyTLSTerminate(t *testing.T) {
	up, _ := httpUpstream(t)
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up, TLS: srvTLS})
	tr := &http.Transport{TLSClientConfig: cliTLS, DisableKeepAlives: true}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://"+p.Addr()+"/", nil)
	resp, err := (&http.Client{Transport: tr, Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if string(b) != "hello" || resp.TLS == nil {
		t.Fatalf("%q tls=%v", b, resp.TLS != nil)
	}
	// A plaintext client fails the handshake and is not forwarded.
	c := dial(t, p.Addr())
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	if s, _ := readResult(c, 5*time.Second); strings.Contains(s, "hello") {
		t.Fatal("plaintext got through a terminating proxy")
	}
	_ = tls.VersionTLS13
}

func TestProxyConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  faultnet.ProxyConfig
		want string
	}{
		{"flap", faultnet.ProxyConfig{FlapPeriod: -1}, "FlapPeriod"},
		{"linger", faultnet.ProxyConfig{UpstreamLinger: -1}, "UpstreamLinger"},
		{"blackhole", faultnet.ProxyConfig{BlackholeFor: -1}, "BlackholeFor"},
		{"rule", faultnet.ProxyConfig{Rules: []faultnet.Rule{{Fault: 99}}}, "Rules[0]"},
		{"addr", faultnet.ProxyConfig{Addr: "192.0.2.1:0"}, "not a loopback"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.cfg.Upstream = "127.0.0.1:9"
			_, err := faultnet.NewProxy(tc.cfg)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err %v, want one naming %s", err, tc.want)
			}
		})
	}
}

func TestParseProxyFaultAndPresets(t *testing.T) {
	for s, want := range map[string]faultnet.ProxyFault{"silence": faultnet.ProxySilence, "HoldResponse": faultnet.HoldResponse, "pass": faultnet.ProxyPass, "ProxyReset": faultnet.ProxyReset} {
		if got, err := faultnet.ParseProxyFault(s); err != nil || got != want {
			t.Errorf("ParseProxyFault(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := faultnet.ParseProxyFault("explode"); err == nil {
		t.Error("ParseProxyFault(explode): no error")
	}
	if len(faultnet.Presets()) != 5 {
		t.Fatal("want 5 presets")
	}
	for _, name := range []string{"incident03", "03", "3"} {
		if p, ok := faultnet.LookupPreset(name); !ok || p.Name != "incident03" {
			t.Errorf("LookupPreset(%q) = %v, %v", name, p, ok)
		}
	}
	if _, ok := faultnet.LookupPreset("incident06"); ok {
		t.Error("LookupPreset(incident06) found")
	}
	// A Preset's config is a copy: changing it does not change the preset.
	cfg := faultnet.Incident01.Config("127.0.0.1:1")
	cfg.Rules[0].Fault = faultnet.ProxyPass
	if faultnet.Incident01.Config("127.0.0.1:1").Rules[0].Fault != faultnet.ProxySilence {
		t.Fatal("Config shares the preset's rules")
	}
	_ = errors.New
}
