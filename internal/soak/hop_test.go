package soak_test

import (
	"context"
	"crypto/tls"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// TestDeadlineReturnUnderRunQueue measures, without faults or a namespace,
// how late a RoundTrip that waits for headers from a server that never
// answers returns after its context's deadline while the run queue is
// long (spinning goroutines, as on a machine short of CPU): lifeline's
// Transport beside a plain http.Transport, the two calls started together
// with the same deadline. A client that needs more goroutine hand-offs
// than net/http between the deadline and the return (each waits its turn
// in the queue) returns later by a turn per hand-off; the median may exceed
// the control's by controlSlack at most. SOAK_HOP=1 runs it (SOAK_HOP_SPIN
// spinning goroutines, default 8; SOAK_HOP_HEDGE_MS, a hedge delay;
// SOAK_HOP_ROUNDS).
func TestDeadlineReturnUnderRunQueue(t *testing.T) {
	if os.Getenv("SOAK_HOP") != "1" {
		t.Skip("SOAK_HOP=1 runs it")
	}
	serverTLS, clientTLS := faultnet.SelfSigned(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", serverTLS)
	if err != nil {
		t.Fatal(err)
	}
	var conns sync.WaitGroup
	var cmu sync.Mutex
	var open []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			cmu.Lock()
			open = append(open, c)
			cmu.Unlock()
			conns.Add(1)
			go func() { // handshake, then silence
				defer conns.Done()
				_ = c.(*tls.Conn).Handshake()
			}()
		}
	}()
	defer func() {
		ln.Close()
		cmu.Lock()
		for _, c := range open {
			c.Close()
		}
		cmu.Unlock()
		conns.Wait()
	}()
	target := "https://" + ln.Addr().String() + "/"
	noProxy := func(*http.Request) (*url.URL, error) { return nil, nil }
	lt := &transport.Transport{Dialer: &dial.Dialer{}, TLSClientConfig: clientTLS.Clone(), Proxy: noProxy,
		FirstByteTimeout: 10 * time.Second, HedgeDelay: time.Duration(envInt("SOAK_HOP_HEDGE_MS", 0)) * time.Millisecond}
	ct := &http.Transport{TLSClientConfig: clientTLS.Clone(), ResponseHeaderTimeout: 10 * time.Second, ForceAttemptHTTP2: true}
	defer lt.CloseIdleConnections()
	defer ct.CloseIdleConnections()

	spin := envInt("SOAK_HOP_SPIN", 8)
	stop := make(chan struct{})
	var sw sync.WaitGroup
	rounds := envInt("SOAK_HOP_ROUNDS", 40)
	var lOver, cOver []time.Duration
	call := func(rt http.RoundTripper, d time.Duration, out *time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), d)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
		start := time.Now()
		resp, err := rt.RoundTrip(req)
		*out = time.Since(start) - d
		if err == nil {
			resp.Body.Close()
		}
	}
	for i := range rounds {
		if i == 2 { // after two warm-up rounds (conns dialed)
			for range spin {
				sw.Add(1)
				go func() {
					defer sw.Done()
					x := 0
					for {
						select {
						case <-stop:
							return
						default:
						}
						for range 100000 {
							x++
						}
					}
				}()
			}
		}
		var l, c time.Duration
		var wg sync.WaitGroup
		wg.Add(2)
		d := 100 * time.Millisecond
		go func() { defer wg.Done(); call(lt, d, &l) }()
		go func() { defer wg.Done(); call(ct, d, &c) }()
		wg.Wait()
		if i >= 2 {
			lOver, cOver = append(lOver, l), append(cOver, c)
		}
	}
	close(stop)
	sw.Wait()
	slices.Sort(lOver)
	slices.Sort(cOver)
	q := func(s []time.Duration, f float64) time.Duration {
		return s[min(len(s)-1, int(f*float64(len(s))))].Round(time.Millisecond)
	}
	t.Logf("GOMAXPROCS %d, %d spinning goroutines, %d calls each, deadline 100ms, a server that never answers:", runtime.GOMAXPROCS(0), spin, len(lOver))
	t.Logf("  lifeline overrun p50 %v p90 %v max %v", q(lOver, .5), q(lOver, .9), q(lOver, 1))
	t.Logf("  control  overrun p50 %v p90 %v max %v", q(cOver, .5), q(cOver, .9), q(cOver, 1))
	if l, c := q(lOver, .5), q(cOver, .5); l > c+controlSlack {
		t.Errorf("lifeline's median overrun %v > the control's %v + %v", l, c, controlSlack)
	}
}
