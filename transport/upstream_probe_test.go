package transport_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// TestFailFastBlackholeNoCallerProbes: an upstream whose packets are all
// dropped for 6s under 20 calls/s with 10s deadlines. The Transport probes
// the upstream itself: from 2s after the fault no caller's call waits (none
// is a probe), the connects to the dead address are the probes' (about one
// a second, one connect each); the calls that were waiting for a conn when
// the upstream went down end then, not at their dial's 5s; and the calls
// that wait for ready, started during the outage (some before it was
// detected), succeed right after it.
func TestFailFastBlackholeNoCallerProbes(t *testing.T) {
	ns := faultnet.NewNetns(t)
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	})}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	port := ln.Addr().(*net.TCPAddr).Port
	url := "http://" + ln.Addr().String() + "/"

	var connects atomic.Int64
	var mu sync.Mutex
	var connectAt []time.Time
	tr := &transport.Transport{DisableFailFast: failFastOff,
		Dialer: &dial.Dialer{DialFunc: countingDial(&connects, &connectAt, &mu, ns.DialContext)}}
	t.Cleanup(tr.CloseIdleConnections)
	c := transport.NewClient(tr)
	var l openLoop
	ctx := t.Context()

	l.run(ctx, c, url, 20, time.Second, 10*time.Second)
	if err := ns.Vanish(port); err != nil {
		t.Fatal(err)
	}
	faultAt := time.Now()
	// Calls that wait for ready: one before the outage is detected (its
	// dial hangs), the others when it is known.
	wfrDone := make(chan struct{})
	go func() {
		defer close(wfrDone)
		time.Sleep(200 * time.Millisecond)
		l.call(ctx, c, url, 10*time.Second, true)
		time.Sleep(2800 * time.Millisecond)
		for range 5 {
			l.call(ctx, c, url, 10*time.Second, true)
		}
	}()
	l.run(ctx, c, url, 20, 6*time.Second, 10*time.Second)
	if err := ns.Flush(); err != nil {
		t.Fatal(err)
	}
	endAt := time.Now()
	l.run(ctx, c, url, 20, 3*time.Second, 10*time.Second)
	<-wfrDone
	l.wg.Wait()

	// From 2s after the fault: every call failed at once.
	var took []time.Duration
	for _, o := range l.between(faultAt.Add(2*time.Second), endAt) {
		if o.wfr {
			continue
		}
		took = append(took, o.end.Sub(o.start))
		var ue *transport.UnavailableError
		if !errors.As(o.err, &ue) {
			t.Errorf("call during the outage: status %d, %v; want an *UnavailableError (no caller probes)", o.status, o.err)
		}
	}
	slices.Sort(took)
	if len(took) < 50 {
		t.Fatalf("%d calls from 2s after the fault", len(took))
	}
	t.Logf("outage from 2s: %d calls, p50 %v p99 %v max %v", len(took), took[len(took)/2], took[len(took)*99/100], took[len(took)-1])
	if took[len(took)-1] > 500*time.Millisecond {
		t.Errorf("a call waited %v during the outage, want none to wait (a probe's dial is 5s)", took[len(took)-1])
	}
	// The connects to the dead address: the probes'.
	mu.Lock()
	n := countIn(connectAt, faultAt.Add(2*time.Second), endAt)
	mu.Unlock()
	rate := float64(n) / endAt.Sub(faultAt.Add(2*time.Second)).Seconds()
	t.Logf("connects to the dead address from 2s after the fault: %d (%.1f/s)", n, rate)
	if rate > 1.5 {
		t.Errorf("%.1f connects/s to the dead address, want the probes' ~1/s", rate)
	}
	// The calls started before the outage was known: those that waited
	// for a conn end when the gate goes down (~1s after the fault), not at
	// their dial's limit (5s); those on a kept-alive conn wait for their
	// answer (a few).
	other := 0
	for _, o := range l.between(faultAt, faultAt.Add(2*time.Second)) {
		if o.wfr {
			continue
		}
		var ue *transport.UnavailableError
		if !errors.As(o.err, &ue) {
			other++
			t.Logf("call started %v after the fault: %v after, %v", o.start.Sub(faultAt), o.end.Sub(faultAt), o.err)
			continue
		}
		if ue.Reason != "down" || ue.Last == nil {
			t.Errorf("call ended down: reason %q, last %v", ue.Reason, ue.Last)
		}
		if end := o.end.Sub(faultAt); end > 2500*time.Millisecond {
			t.Errorf("call started %v after the fault ended %v after it: %v; want at the gate's fall (~1s)", o.start.Sub(faultAt), end, o.err)
		}
	}
	if other > 3 {
		t.Errorf("%d calls started before detection did not end at the gate's fall, want only those on kept-alive conns", other)
	}
	// Waiting for ready: all succeed, right after the outage.
	wfr := 0
	for _, o := range l.between(faultAt, endAt) {
		if !o.wfr {
			continue
		}
		wfr++
		if o.err != nil || o.status != 200 {
			t.Errorf("WaitForReady call started %v after the fault: %v, status %d", o.start.Sub(faultAt), o.err, o.status)
			continue
		}
		t.Logf("WaitForReady call started %v after the fault: ok %v after the outage", o.start.Sub(faultAt), o.end.Sub(endAt))
		if late := o.end.Sub(endAt); late > 2*time.Second {
			t.Errorf("WaitForReady call ok %v after the outage, want within a probe interval", late)
		}
	}
	if wfr != 6 {
		t.Errorf("%d WaitForReady calls, want 6", wfr)
	}
	after := l.between(endAt.Add(1500*time.Millisecond), endAt.Add(time.Hour))
	ok := 0
	for _, o := range after {
		if o.err == nil && o.status == 200 {
			ok++
		}
	}
	if ok*100 < len(after)*99 {
		t.Errorf("%d of %d calls ok from 1.5s after the fault ended, want ≥ 99%%", ok, len(after))
	}
}

// TestProbeEndsWithCloseIdleConnections: a background probe under way to a
// black hole ends with the Transport's CloseIdleConnections (no goroutine
// left), and the upstream stays down.
func TestProbeEndsWithCloseIdleConnections(t *testing.T) {
	ns := faultnet.NewNetns(t)
	ln, err := ns.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	_ = ln.Close()
	if err := ns.Vanish(port); err != nil {
		t.Fatal(err)
	}
	url := "http://" + ln.Addr().String() + "/"
	var connects atomic.Int64
	var mu sync.Mutex
	var connectAt []time.Time
	before := goleak.IgnoreCurrent()
	tr := &transport.Transport{Dialer: &dial.Dialer{DialFunc: countingDial(&connects, &connectAt, &mu, ns.DialContext)}}
	c := transport.NewClient(tr)
	get := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		resp, err := c.Do(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	// Calls until the upstream is known down (three hanging dials).
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() { _ = get(t.Context()) })
		time.Sleep(100 * time.Millisecond)
	}
	deadline := time.Now().Add(5 * time.Second)
	for !errors.Is(get(t.Context()), transport.ErrUnavailable) {
		if time.Now().After(deadline) {
			t.Fatal("the upstream was not found down")
		}
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	// The probe goes about a second after the fall.
	n := connects.Load()
	for connects.Load() == n {
		if time.Now().After(deadline.Add(5 * time.Second)) {
			t.Fatal("no probe")
		}
		time.Sleep(20 * time.Millisecond)
	}
	start := time.Now()
	tr.CloseIdleConnections()
	goleak.VerifyNone(t, before)
	t.Logf("no goroutine left %v after CloseIdleConnections", time.Since(start))
	if err := get(t.Context()); !errors.Is(err, transport.ErrUnavailable) {
		t.Errorf("after the probe was ended: %v, want the upstream still down", err)
	}
	tr.CloseIdleConnections()
}

// TestProbeHTTPSAndProxy: over https the Transport's probe makes the TLS
// handshake the calls would (one connect each) and re-opens the upstream
// when it is back; through a proxy no probe of the Transport's goes (it
// would reach only the proxy): a call is the probe, as without SetProber.
func TestProbeHTTPSAndProxy(t *testing.T) {
	live := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	var handshakes atomic.Int64
	live.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			handshakes.Add(1)
		}
	}
	live.StartTLS()
	t.Cleanup(live.Close)
	refused := faultnet.RefusedAddr(t, "tcp4")
	var back atomic.Bool
	var connects atomic.Int64
	var nd net.Dialer
	dialf := func(ctx context.Context, network, addr string) (net.Conn, error) {
		connects.Add(1)
		if back.Load() {
			return nd.DialContext(ctx, network, live.Listener.Addr().String())
		}
		return nd.DialContext(ctx, network, refused)
	}
	roots := live.Client().Transport.(*http.Transport).TLSClientConfig.RootCAs

	t.Run("https", func(t *testing.T) {
		back.Store(false)
		tr := &transport.Transport{TLSClientConfig: &tls.Config{RootCAs: roots}, Dialer: &dial.Dialer{DialFunc: dialf}}
		defer tr.CloseIdleConnections()
		c := transport.NewClient(tr)
		get := func() error {
			resp, err := c.Get("https://" + refused + "/")
			if err == nil {
				_ = resp.Body.Close()
			}
			return err
		}
		for i := 0; !errors.Is(get(), transport.ErrUnavailable); i++ {
			if i > 10 {
				t.Fatal("never failed fast")
			}
		}
		n := connects.Load()
		time.Sleep(1300 * time.Millisecond)
		if d := connects.Load() - n; d != 1 {
			t.Errorf("%d connects in a probe interval after the fall, want the probe's 1", d)
		}
		back.Store(true)
		deadline := time.Now().Add(3 * time.Second)
		for errors.Is(get(), transport.ErrUnavailable) {
			if time.Now().After(deadline) {
				t.Fatal("the upstream was not re-opened by a probe")
			}
			time.Sleep(50 * time.Millisecond)
		}
		if handshakes.Load() < 2 {
			t.Errorf("%d conns to the live server, want the probe's and the call's", handshakes.Load())
		}
	})

	t.Run("proxy", func(t *testing.T) {
		back.Store(false)
		// The proxy is the refusing address: the dials go there.
		proxy := &url.URL{Scheme: "http", Host: refused}
		tr := &transport.Transport{Proxy: http.ProxyURL(proxy), Dialer: &dial.Dialer{DialFunc: dialf}}
		defer tr.CloseIdleConnections()
		c := transport.NewClient(tr)
		get := func() error {
			resp, err := c.Get("http://upstream.test/")
			if err == nil {
				_ = resp.Body.Close()
			}
			return err
		}
		for i := 0; !errors.Is(get(), transport.ErrUnavailable); i++ {
			if i > 10 {
				t.Fatal("never failed fast")
			}
		}
		n := connects.Load()
		time.Sleep(2500 * time.Millisecond)
		if d := connects.Load() - n; d != 0 {
			t.Errorf("%d connects with no call through a proxy, want none (no probe of the Transport's)", d)
		}
		if err := get(); errors.Is(err, transport.ErrUnavailable) && connects.Load() == n {
			t.Errorf("the first call after a probe interval was not the probe: %v", err)
		}
		if connects.Load() == n {
			t.Error("no connect by the call that probes")
		}
	})
}
