package faultnet_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// recorder is a testing.TB that records failures instead of failing the
// test, to run the package doc's example against a client that must fail it.
type recorder struct {
	*testing.T
	mu     sync.Mutex
	failed []string
}

func (r *recorder) Errorf(format string, args ...any) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.failed = append(r.failed, fmt.Sprintf(format, args...))
}
func (r *recorder) Error(args ...any) { r.Errorf("%s", fmt.Sprint(args...)) }
func (r *recorder) Fatal(args ...any) { r.Error(args...); runtime.Goexit() }
func (r *recorder) Fatalf(format string, args ...any) {
	r.Errorf(format, args...)
	runtime.Goexit()
}
func (r *recorder) Failed() bool { r.mu.Lock(); defer r.mu.Unlock(); return len(r.failed) > 0 }

// docExample is the package doc's five-line use, verbatim but for the
// names: t is the test, get is "your SDK's call".
func docExample(t testing.TB, myHandler http.Handler, get func(ctx context.Context, url string) error) {
	srv := httptest.NewServer(myHandler) // your server, on loopback
	defer srv.Close()
	p := faultnet.Incident01.Start(t, srv.Listener.Addr().String()) // every 12th connection hangs after accept
	for i := range 24 {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second) // the test's patience, not the SDK's
		if err := get(ctx, "http://"+p.Addr()+"/"); err != nil {       // your SDK's call
			t.Errorf("request %d: %v", i, err)
		}
		cancel()
	}
	st := p.Stats()      // Faulted: connections hung; ClosedByPeer: the ones your SDK gave up on
	if st.Faulted == 0 { // a client that pools one connection never meets the 12th
		t.Fatal("no connection was hung: give each call a new connection")
	}
	t.Logf("hung %d, abandoned by the SDK %d", st.Faulted, st.ClosedByPeer)
}

// runDocExample runs docExample with client as the SDK and reports
// whether the example failed.
func runDocExample(t *testing.T, client *http.Client) (failed bool, why []string) {
	rec := &recorder{T: t}
	done := make(chan struct{})
	go func() {
		defer close(done)
		docExample(rec, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "ok") }),
			func(ctx context.Context, url string) error {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
				if err != nil {
					return err
				}
				resp, err := client.Do(req)
				if err != nil {
					return err
				}
				defer resp.Body.Close()
				_, err = io.ReadAll(resp.Body)
				return err
			})
	}()
	<-done
	return rec.Failed(), rec.failed
}

// TestDocExampleCatchesWrongClients: the package doc's example, run as
// written, fails for a client that never bounds a hung connection, whether
// it opens a new connection per call or pools one (a pooled client never
// meets the 12th connection: the example must not pass it blindly).
func TestDocExampleCatchesWrongClients(t *testing.T) {
	t.Run("new-conn-each", func(t *testing.T) {
		tr := &http.Transport{DisableKeepAlives: true}
		defer tr.CloseIdleConnections()
		if failed, _ := runDocExample(t, &http.Client{Transport: tr}); !failed {
			t.Error("a client with no bound on a hung connection passed the example")
		}
	})
	t.Run("pooled", func(t *testing.T) {
		tr := &http.Transport{}
		defer tr.CloseIdleConnections()
		if failed, _ := runDocExample(t, &http.Client{Transport: tr}); !failed {
			t.Error("a pooled client with no bound on a hung connection passed the example without meeting the fault")
		}
	})
}

// TestRuleHugeLatencyMax: the widest valid Delay range (Validate accepts
// it) must not panic the proxy when it draws a chunk's delay.
func TestRuleHugeLatencyMax(t *testing.T) {
	r := faultnet.Rule{Name: "wide", Fault: faultnet.Delay, LatencyMax: math.MaxInt64}
	if err := r.Validate(); err != nil {
		t.Skipf("rejected by Validate (fine): %v", err)
	}
	up := faultnet.Start(t, faultnet.Config{})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr(), Rules: []faultnet.Rule{r}})
	c := dial(t, p.Addr())
	if _, err := c.Write([]byte("x")); err != nil {
		t.Fatal(err)
	}
	// The chunk waits for its (huge) delay; the proxy must still be alive.
	eventually(t, 5*time.Second, "the connection accepted", func() bool { return p.Stats().Faulted == 1 })
	time.Sleep(50 * time.Millisecond)
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestIncident05Counts: Incident05 on the wire, counted per connection
// ordinal from the proxy's log, against what its Fault line says.
func TestIncident05Counts(t *testing.T) {
	up := faultnet.Start(t, faultnet.Config{})
	var mu sync.Mutex
	byRule := map[string][]int{}
	cfg := faultnet.Incident05.Config(up.Addr())
	cfg.Log = func(l faultnet.ConnLog) { mu.Lock(); byRule[l.Rule] = append(byRule[l.Rule], l.N); mu.Unlock() }
	p, err := faultnet.NewProxy(cfg)
	if err != nil {
		t.Fatal(err)
	}
	const n = 100
	for range n {
		c, err := net.DialTimeout("tcp", p.Addr(), 5*time.Second)
		if err != nil {
			continue // a reset can beat connect's return
		}
		_, _ = c.Write([]byte("x"))
		_, _ = readResult(c, 2*time.Second)
		c.Close()
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	resets, delayed := len(byRule["dropped"]), len(byRule["slow-packets"])
	t.Logf("Incident05 over %d connections: reset %v, delayed %v", n, byRule["dropped"], byRule["slow-packets"])
	if resets != n/10 {
		t.Errorf("%d reset, want every 10th: %d", resets, n/10)
	}
	// The Fault line's share of "the others", as a number.
	doc := faultnet.Incident05.Fault
	var pct float64
	if i := strings.Index(doc, "%"); i > 0 {
		j := strings.LastIndexFunc(doc[:i], func(r rune) bool { return (r < '0' || r > '9') && r != '.' }) + 1
		_, _ = fmt.Sscan(doc[j:i], &pct)
	}
	others := n - resets
	if want := pct / 100 * float64(others); math.Abs(float64(delayed)-want) > 1 {
		t.Errorf("Incident05 says %q: %v%% of the %d others is %.1f; %d were delayed", doc, pct, others, want, delayed)
	}
}

// openFDs counts this process's open sockets (the runtime opens pipes of
// its own lazily; they are not ours to count).
func openFDs(t *testing.T) int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd")
	}
	n := 0
	for _, e := range ents {
		if l, _ := os.Readlink("/proc/self/fd/" + e.Name()); strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestProxyCloseInEveryState: a TLS-terminating proxy with connections
// held silent, mid-handshake, held in reply, stalled mid-body, delayed,
// lingering after a flap and black-holed, while clients keep connecting;
// Close, twice at once, ends every goroutine (TestMain's goleak) and gives
// back every file descriptor.
func TestProxyCloseInEveryState(t *testing.T) {
	upSrv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, strings.Repeat("body ", 1000))
	}))
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	before := openFDs(t)
	p, err := faultnet.NewProxy(faultnet.ProxyConfig{
		Upstream:       upSrv.Listener.Addr().String(),
		TLS:            srvTLS,
		UpstreamLinger: time.Minute,
		Rules: []faultnet.Rule{
			{Name: "silent", Fault: faultnet.ProxySilence, Select: faultnet.EveryNth(5)},
			{Name: "hold", Fault: faultnet.HoldResponse, Select: faultnet.EveryNth(4)},
			{Name: "stall", Fault: faultnet.StallBody, StallAfter: 100, Select: faultnet.EveryNth(3)},
			{Name: "slow", Fault: faultnet.Delay, Latency: time.Millisecond, LatencyMax: 5 * time.Millisecond, Select: faultnet.EveryNth(2)},
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var clients sync.WaitGroup
	// Clients that open a TCP connection and never start the handshake.
	for range 3 {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
	}
	for range 4 {
		clients.Add(1)
		go func() {
			defer clients.Done()
			for ctx.Err() == nil {
				d := tls.Dialer{Config: cliTLS.Clone(), NetDialer: &net.Dialer{Timeout: time.Second}}
				cctx, ccancel := context.WithTimeout(ctx, 300*time.Millisecond)
				c, err := d.DialContext(cctx, "tcp", p.Addr())
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(300 * time.Millisecond))
					_, _ = io.WriteString(c, "GET / HTTP/1.1\r\nHost: x\r\n\r\n")
					_, _ = io.Copy(io.Discard, c)
					c.Close()
				}
				ccancel()
			}
		}()
	}
	eventually(t, 10*time.Second, "connections in every state", func() bool { return p.Stats().Accepted > 30 })
	p.DropAll()
	if p.Stats().Lingering == 0 {
		t.Log("no lingering upstream after the drop")
	}
	if err := p.SetBlackhole(true); err != nil {
		t.Fatal(err)
	}
	var closers sync.WaitGroup
	for range 2 {
		closers.Add(1)
		go func() { defer closers.Done(); _ = p.Close() }()
	}
	closers.Wait()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if st := p.Stats(); st.Active != 0 || st.Lingering != 0 {
		t.Errorf("after Close: %+v", st)
	}
	cancel()
	clients.Wait()
	upSrv.Close()
	// Client-side sockets of this test are closed by now too.
	eventually(t, 5*time.Second, fmt.Sprintf("sockets back to %d", before+3), func() bool { return openFDs(t) <= before+3 })
}

// TestLBCloseDuringBackendConnect: Forward "returns once the client's
// conn is closed", so Server.Close does not wait on it — also while its
// connect to the backend hangs (a black-holed backend, incident 04 behind
// an incident 01 balancer), where the connect alone waits 5s.
func TestLBCloseDuringBackendConnect(t *testing.T) {
	bh := faultnet.NewBlackhole(t, "")
	lb, err := faultnet.NewLB(faultnet.LBConfig{Backend: bh.Addr()})
	if err != nil {
		t.Fatal(err)
	}
	c := dial(t, lb.Addr())
	_, _ = c.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	eventually(t, 5*time.Second, "the connection accepted", func() bool { return lb.Stats().Active == 1 })
	time.Sleep(100 * time.Millisecond) // in Forward's connect
	t0 := time.Now()
	if err := lb.Close(); err != nil {
		t.Fatal(err)
	}
	if d := time.Since(t0); d > 2500*time.Millisecond {
		t.Fatalf("Close took %v while Forward's connect hung (want well under the 5s connect bound)", d)
	}
}

// TestServerCloseInEveryState: servers holding connections silent,
// mid-ClientHello, dripping, mid-TLS-handshake, idle-watched and half
// closed, with Down/Up and DropAll racing traffic; Close twice at once
// ends every goroutine (goleak in TestMain) and frees every descriptor.
func TestServerCloseInEveryState(t *testing.T) {
	srvTLS, _ := faultnet.SelfSigned(t)
	before := openFDs(t)
	var servers []*faultnet.Server
	for _, cfg := range []faultnet.Config{
		{Fault: faultnet.Silence, Select: faultnet.EveryNth(2)},
		{Fault: faultnet.StallTLS},
		{Fault: faultnet.SlowDrip, DripInterval: time.Hour, TLS: srvTLS},
		{TLS: srvTLS, IdleClose: time.Hour},
		{Fault: faultnet.CloseNow},
	} {
		s, err := faultnet.Listen(cfg)
		if err != nil {
			t.Fatal(err)
		}
		servers = append(servers, s)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	for _, s := range servers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				c, err := net.DialTimeout("tcp", s.Addr(), 200*time.Millisecond)
				if err != nil {
					time.Sleep(5 * time.Millisecond)
					continue
				}
				_, _ = c.Write([]byte{0x16, 0x03, 0x01, 0x00, 0x02, 0x01}) // half a ClientHello
				_ = c.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
				_, _ = c.Read(make([]byte, 1))
				defer c.Close() // kept open until the client loop ends
			}
		}()
	}
	eventually(t, 10*time.Second, "connections on every server", func() bool {
		for _, s := range servers {
			if s.Stats().Active < 2 {
				return false
			}
		}
		return true
	})
	_ = servers[0].Down()
	servers[1].DropAll()
	go func() { _ = servers[0].Up() }()
	var closers sync.WaitGroup
	for _, s := range servers {
		for range 2 {
			closers.Add(1)
			go func() { defer closers.Done(); _ = s.Close() }()
		}
	}
	closers.Wait()
	for _, s := range servers {
		if st := s.Stats(); st.Active != 0 {
			t.Errorf("after Close: %+v", st)
		}
		if err := s.Up(); err == nil {
			t.Error("Up after Close: no error")
		}
	}
	cancel()
	wg.Wait()
	eventually(t, 5*time.Second, fmt.Sprintf("sockets back to %d", before), func() bool { return openFDs(t) <= before })
}

// TestBadConfigNeverPanics: bad values to every exported constructor and
// setter are errors (or tb failures) naming the problem, never a panic.
func TestBadConfigNeverPanics(t *testing.T) {
	try := func(name string, f func() error) {
		t.Helper()
		defer func() {
			if r := recover(); r != nil {
				t.Errorf("%s: panic %v", name, r)
			}
		}()
		if err := f(); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	closeOK := func(c interface{ Close() error }, err error) error {
		if err == nil {
			c.Close()
		}
		return err
	}
	for name, cfg := range map[string]faultnet.Config{
		"fault 99":           {Fault: 99},
		"fault -1":           {Fault: -1},
		"drip negative":      {DripInterval: -1},
		"addr port 70000":    {Addr: "127.0.0.1:70000"},
		"addr no port":       {Addr: "127.0.0.1"},
		"addr name":          {Addr: "example.com:0"},
		"addr 10.x":          {Addr: "10.0.0.1:0"},
		"addr mapped 10.x":   {Addr: "[::ffff:10.0.0.1]:0"},
		"addr localhost.":    {Addr: "localhost.:0"},
		"addr 127.1":         {Addr: "127.1:0"},
		"addr decimal":       {Addr: "2130706433:0"},
		"addr any6":          {Addr: "[::]:0"},
		"addr zone non-loop": {Addr: "[fe80::1%lo]:0"},
	} {
		try("Listen "+name, func() error { s, err := faultnet.Listen(cfg); return closeOK(s, err) })
	}
	for name, cfg := range map[string]faultnet.ProxyConfig{
		"no upstream":         {},
		"upstream 10.x":       {Upstream: "10.0.0.1:80"},
		"upstream mapped":     {Upstream: "[::ffff:10.0.0.1]:80"},
		"upstream localhost.": {Upstream: "localhost.:80"},
		"upstream name":       {Upstream: "db.internal:5432"},
		"upstream port 0":     {Upstream: "127.0.0.1:0"},
		"upstream unspec":     {Upstream: "0.0.0.0:80"},
		"fault 99":            {Upstream: "127.0.0.1:9", Fault: 99},
		"stall negative":      {Upstream: "127.0.0.1:9", Fault: faultnet.StallBody, StallAfter: -1},
		"latency max < min":   {Upstream: "127.0.0.1:9", Fault: faultnet.Delay, Latency: 2, LatencyMax: 1},
		"rule latency < 0":    {Upstream: "127.0.0.1:9", Rules: []faultnet.Rule{{Fault: faultnet.Delay, Latency: -1}}},
		"flap negative":       {Upstream: "127.0.0.1:9", FlapPeriod: -1},
		"flap 1ns (a spin)":   {Upstream: "127.0.0.1:9", FlapPeriod: 1},
		"linger negative":     {Upstream: "127.0.0.1:9", UpstreamLinger: -1},
		"blackhole negative":  {Upstream: "127.0.0.1:9", BlackholeFor: -1},
		"addr non-loopback":   {Upstream: "127.0.0.1:9", Addr: "0.0.0.0:0"},
	} {
		try("NewProxy "+name, func() error { p, err := faultnet.NewProxy(cfg); return closeOK(p, err) })
	}
	for name, cfg := range map[string]faultnet.LBConfig{
		"no backend":   {},
		"backend name": {Backend: "example.com:80"},
		"fault reset":  {Backend: "127.0.0.1:9", Fault: faultnet.Reset},
		"fault 99":     {Backend: "127.0.0.1:9", Fault: 99},
		"addr 10.x":    {Backend: "127.0.0.1:9", Addr: "10.0.0.1:0"},
	} {
		try("NewLB "+name, func() error { s, err := faultnet.NewLB(cfg); return closeOK(s, err) })
	}
	for _, hosts := range [][]string{nil, {""}, {"a b"}, {"\x00"}, {strings.Repeat("a", 300)}} {
		try(fmt.Sprintf("NewSelfSigned %q", hosts), func() error { _, _, err := faultnet.NewSelfSigned(hosts...); return err })
	}
	try("Preset zero New without upstream", func() error { p, err := (faultnet.Preset{}).New(""); return closeOK(p, err) })
	try("ParseProxyFault empty", func() error { _, err := faultnet.ParseProxyFault(""); return err })
	try("ParseProxyFault Proxy", func() error { _, err := faultnet.ParseProxyFault("Proxy"); return err })
	up := faultnet.Start(t, faultnet.Config{})
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: up.Addr()})
	try("SetFault 99", func() error { return p.SetFault(99, nil) })
	try("SetRules bad", func() error { return p.SetRules(faultnet.Rule{Fault: faultnet.StallBody, StallAfter: -5}) })
	try("SetFlap negative", func() error { return p.SetFlap(-time.Second) })
	try("SetFlap 1µs (a spin)", func() error { return p.SetFlap(time.Microsecond) })
	try("SetUpstreamLinger negative", func() error { return p.SetUpstreamLinger(-time.Second) })
	try("Server SetFault 99", func() error { return up.SetFault(99, nil) })
	for _, f := range []faultnet.Selector{faultnet.EveryNth(0), faultnet.EveryNth(-3), faultnet.Fraction(math.NaN()), faultnet.Fraction(math.Inf(-1)), faultnet.FirstN(-1)} {
		for _, n := range []int{-1, 0, 1, math.MaxInt} {
			func() {
				defer func() {
					if r := recover(); r != nil {
						t.Errorf("selector(%d): panic %v", n, r)
					}
				}()
				if f(n) {
					t.Errorf("an empty selector hit %d", n)
				}
			}()
		}
	}
	if faultnet.Fraction(math.Inf(1))(math.MaxInt) != true || faultnet.EveryNth(math.MaxInt)(math.MaxInt) != true {
		t.Error("Fraction(+Inf) or EveryNth(MaxInt) at MaxInt")
	}
	rec := &recorder{T: t}
	for name, f := range map[string]func(){
		"RefusedAddr udp":      func() { faultnet.RefusedAddr(rec, "udp") },
		"ReservePort udp":      func() { faultnet.ReservePort(rec, "udp") },
		"NewBlackhole 10.x":    func() { faultnet.NewBlackhole(rec, "10.0.0.1:0") },
		"NewBlackhole name":    func() { faultnet.NewBlackhole(rec, "example.com:0") },
		"StartGroup none":      func() { faultnet.StartGroup(rec) },
		"StartGroup same host": func() { faultnet.StartGroup(rec, faultnet.Config{}, faultnet.Config{}) },
		"StartGroup two ports": func() {
			faultnet.StartGroup(rec, faultnet.Config{Addr: "127.0.0.2:1"}, faultnet.Config{Addr: "127.0.0.3:2"})
		},
		"StartGroup non-loopback": func() { faultnet.StartGroup(rec, faultnet.Config{Addr: "10.0.0.1:0"}) },
		"Start bad":               func() { faultnet.Start(rec, faultnet.Config{Fault: 42}) },
		"StartProxy bad":          func() { faultnet.StartProxy(rec, faultnet.ProxyConfig{}) },
		"StartLB bad":             func() { faultnet.StartLB(rec, faultnet.LBConfig{}) },
		"Preset Start bad":        func() { faultnet.Incident01.Start(rec, "10.0.0.1:80") },
	} {
		rec.failed = nil
		done := make(chan any)
		go func() {
			defer func() { done <- recover() }()
			f()
		}()
		if r := <-done; r != nil {
			t.Errorf("%s: panic %v", name, r)
		} else if !rec.Failed() {
			t.Errorf("%s: no failure", name)
		} else {
			t.Logf("%s: %s", name, rec.failed[0])
		}
	}
}

// TestProxyUpstreamIsItself: a proxy whose Upstream is its own address
// would forward every connection to itself, without end (a connection
// storm until the file descriptors run out). It is a config error.
func TestProxyUpstreamIsItself(t *testing.T) {
	// The address must be known before NewLB and NewProxy listen on it, so
	// its port is one freed by closing a listener: another test may take it
	// in between. Then they fail with EADDRINUSE, not for the reason under
	// test, and the round is tried again on another port.
	for round := 1; !proxyUpstreamIsItself(t); round++ {
		if round == 10 {
			t.Fatal("the port was taken before NewLB or NewProxy bound it, 10 times")
		}
	}
}

// proxyUpstreamIsItself is one round of TestProxyUpstreamIsItself; false
// when the port was taken meanwhile.
func proxyUpstreamIsItself(t *testing.T) bool {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(addr)
	for _, up := range []string{addr, "localhost:" + port, "[::ffff:127.0.0.1]:" + port} {
		lb, err := faultnet.NewLB(faultnet.LBConfig{Addr: addr, Backend: up})
		if err == nil {
			lb.Close()
			t.Errorf("NewLB with Backend %s, its own address: no error", up)
		} else if errors.Is(err, syscall.EADDRINUSE) {
			t.Logf("port taken meanwhile: %v", err)
			return false
		}
		p, err := faultnet.NewProxy(faultnet.ProxyConfig{Addr: addr, Upstream: up})
		if errors.Is(err, syscall.EADDRINUSE) {
			t.Logf("port taken meanwhile: %v", err)
			return false
		}
		if err != nil {
			t.Logf("Upstream %s: %v", up, err)
			continue
		}
		c, err := net.DialTimeout("tcp", p.Addr(), time.Second)
		if err == nil {
			time.Sleep(100 * time.Millisecond)
			c.Close()
		}
		st := p.Stats()
		p.Close()
		t.Fatalf("Upstream %s, the proxy's own address: accepted (%d connections from one client)", up, st.Accepted)
	}
	return true
}

// TestProxyDropDuringUpstreamConnect: DropAll resets a connection whose
// upstream connect still hangs (a black-holed upstream); the proxy is done
// with it at once: Stats.Active drops and its Log line comes, instead of
// waiting out the 5s connect.
func TestProxyDropDuringUpstreamConnect(t *testing.T) {
	bh := faultnet.NewBlackhole(t, "")
	logged := make(chan faultnet.ConnLog, 1)
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: bh.Addr(), Log: func(l faultnet.ConnLog) { logged <- l }})
	c := dial(t, p.Addr())
	eventually(t, 5*time.Second, "the connection accepted", func() bool { return p.Stats().Active == 1 })
	time.Sleep(100 * time.Millisecond) // in the upstream connect
	t0 := time.Now()
	if n := p.DropAll(); n != 1 {
		t.Fatalf("DropAll dropped %d, want 1", n)
	}
	if _, err := readResult(c, 2*time.Second); kind(err) != "reset" {
		t.Errorf("the client saw %s, want reset", kind(err))
	}
	select {
	case l := <-logged:
		t.Logf("%v", l)
	case <-time.After(2500 * time.Millisecond):
		t.Fatalf("no end of the dropped connection %v after DropAll (Active %d): the proxy still waits on its connect", time.Since(t0).Round(time.Millisecond), p.Stats().Active)
	}
	if st := p.Stats(); st.Active != 0 {
		t.Fatalf("after the drop: %+v", st)
	}
}

// TestIncident03OnTheWire: the preset's flap resets the client within a
// second, and the server's side of that connection stays open and silent
// (no FIN, no RST: the dead session it keeps), counted in Lingering, until
// the proxy is closed.
func TestIncident03OnTheWire(t *testing.T) {
	ended := make(chan error, 1)
	got := make(chan struct{}, 1)
	up := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
		buf := make([]byte, 16)
		if _, err := c.Read(buf); err == nil {
			got <- struct{}{}
		}
		_, err := c.Read(buf) // blocks while the session lingers
		ended <- err
	}})
	p, err := faultnet.Incident03.New(up.Addr())
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	c := dial(t, p.Addr())
	t0 := time.Now()
	_, _ = c.Write([]byte("x"))
	<-got
	_, err = readResult(c, 3*time.Second)
	if kind(err) != "reset" || time.Since(t0) > 2*time.Second {
		t.Fatalf("client: %s after %v, want a reset within the 1s flap", kind(err), time.Since(t0))
	}
	select {
	case err := <-ended:
		t.Fatalf("the server's side ended (%v) %v after the reset; the preset keeps it 20s", err, time.Since(t0))
	case <-time.After(time.Second):
	}
	if st := p.Stats(); st.Lingering != 1 || st.Dropped != 1 {
		t.Fatalf("stats %+v, want 1 dropped and 1 lingering", st)
	}
	p.Close()
	select {
	case <-ended:
	case <-time.After(5 * time.Second):
		t.Fatal("Close did not end the lingering session")
	}
}
