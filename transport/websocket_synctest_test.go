package transport_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// pipeNet is a dial.Dialer DialFunc for synctest bubbles: each dial gets
// one end of a net.Pipe, and the other end goes to the handler that plan
// names for the dial's number (1-based). A nil handler makes the dial
// hang until its context ends. Handlers may block on quit, which close
// closes before closing the server ends and waiting for the handlers.
type pipeNet struct {
	plan func(n int) func(net.Conn)
	quit chan struct{}
	wg   sync.WaitGroup

	mu   sync.Mutex
	n    int
	ends []net.Conn
	wrap func(net.Conn) net.Conn // optional: wraps the client's end
}

func newPipeNet(plan func(n int) func(net.Conn)) *pipeNet {
	return &pipeNet{plan: plan, quit: make(chan struct{})}
}

func (p *pipeNet) dial(ctx context.Context, _, _ string) (net.Conn, error) {
	p.mu.Lock()
	p.n++
	h := p.plan(p.n)
	p.mu.Unlock()
	if h == nil {
		<-ctx.Done()
		return nil, ctx.Err()
	}
	c, s := net.Pipe()
	p.mu.Lock()
	p.ends = append(p.ends, s)
	wrap := p.wrap
	p.mu.Unlock()
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer s.Close()
		h(s)
	}()
	if wrap != nil {
		return wrap(c), nil
	}
	return c, nil
}

func (p *pipeNet) dials() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.n
}

// close ends every handler.
func (p *pipeNet) close() {
	close(p.quit)
	p.mu.Lock()
	for _, s := range p.ends {
		s.Close()
	}
	p.mu.Unlock()
	p.wg.Wait()
}

// pipeURL is the URL every pipe dialer dials: an IP literal, so no DNS.
const pipeURL = "ws://127.0.0.1:80/"

// pipeDialer is a WebSocketDialer on p with pings off and no retries.
func pipeDialer(p *pipeNet) *transport.WebSocketDialer {
	return &transport.WebSocketDialer{
		Dialer:           &dial.Dialer{DialFunc: p.dial},
		Proxy:            noProxy,
		HandshakeTimeout: 8 * time.Second,
		PingInterval:     -1,
		Retry:            &retry.Policy{MaxAttempts: 1, InitialInterval: 100 * time.Millisecond, MaxInterval: time.Second, Jitter: -1},
	}
}

// hangUpgrade reads the upgrade request and never answers.
func hangUpgrade(c net.Conn) { _, _ = io.Copy(io.Discard, c) }

// upgradeAndDrop upgrades and closes the conn at once.
func upgradeAndDrop(c net.Conn) {
	wsHandler(func(w http.ResponseWriter, r *http.Request) {
		if ws, err := upgrader.Upgrade(w, r, nil); err == nil {
			ws.NetConn().Close()
		}
	})(c)
}

// upgradeAndIgnore upgrades and then reads nothing until quit: a peer
// whose socket never drains.
func upgradeAndIgnore(quit <-chan struct{}) func(net.Conn) {
	return wsHandler(func(w http.ResponseWriter, r *http.Request) {
		if _, err := upgrader.Upgrade(w, r, nil); err == nil {
			<-quit
		}
	})
}

// TestWebSocketSessionCloseEveryState: Close returns within 100ms in
// every state of a session, the limits of the handshake (8s) and of the
// backoff (10s) notwithstanding, and leaves no goroutine behind. Time is
// synctest's: a Close that waits for any limit shows its full length.
func TestWebSocketSessionCloseEveryState(t *testing.T) {
	type setup struct {
		plan     func(p *pipeNet) func(n int) func(net.Conn)
		tune     func(d *transport.WebSocketDialer, cfg *transport.WebSocketSessionConfig)
		before   func(t *testing.T, s *transport.WebSocketSession) // brings the session into the state
		state    transport.WebSocketState
		stuckOut bool // a WriteMessage is in flight, stuck on a peer that does not read
	}
	noTune := func(*transport.WebSocketDialer, *transport.WebSocketSessionConfig) {}
	settle := func(d time.Duration) func(*testing.T, *transport.WebSocketSession) {
		return func(*testing.T, *transport.WebSocketSession) {
			time.Sleep(d)
			synctest.Wait()
		}
	}
	always := func(h func(net.Conn)) func(*pipeNet) func(int) func(net.Conn) {
		return func(*pipeNet) func(int) func(net.Conn) { return func(int) func(net.Conn) { return h } }
	}
	firstThen := func(first, then func(net.Conn)) func(*pipeNet) func(int) func(net.Conn) {
		return func(*pipeNet) func(int) func(net.Conn) {
			return func(n int) func(net.Conn) {
				if n == 1 {
					return first
				}
				return then
			}
		}
	}
	for name, tc := range map[string]setup{
		"connecting, first dial hangs":         {plan: always(nil), tune: noTune, before: settle(time.Second), state: transport.WebSocketConnecting},
		"connecting, first upgrade unanswered": {plan: always(hangUpgrade), tune: noTune, before: settle(time.Second), state: transport.WebSocketConnecting},
		"connected":                            {plan: always(wsHandler(listening)), tune: noTune, before: settle(time.Second), state: transport.WebSocketConnected},
		"connected, a write stuck": {
			plan: func(p *pipeNet) func(int) func(net.Conn) {
				return func(int) func(net.Conn) { return upgradeAndIgnore(p.quit) }
			},
			tune: func(_ *transport.WebSocketDialer, cfg *transport.WebSocketSessionConfig) {
				cfg.WriteTimeout = time.Minute
			},
			before: settle(time.Second), state: transport.WebSocketConnected, stuckOut: true,
		},
		"reconnect backoff wait": {plan: firstThen(upgradeAndDrop, wsHandler(listening)),
			tune: func(d *transport.WebSocketDialer, _ *transport.WebSocketSessionConfig) {
				d.Retry.InitialInterval, d.Retry.MaxInterval = 10*time.Second, 10*time.Second
			},
			before: settle(time.Second), state: transport.WebSocketDisconnected},
		"reconnect handshake hangs": {plan: firstThen(upgradeAndDrop, hangUpgrade), tune: noTune,
			before: settle(time.Second), state: transport.WebSocketConnecting},
		"reconnect dial hangs": {plan: firstThen(upgradeAndDrop, nil), tune: noTune,
			before: settle(time.Second), state: transport.WebSocketConnecting},
		"OnConnect running": {plan: always(wsHandler(listening)),
			tune: func(_ *transport.WebSocketDialer, cfg *transport.WebSocketSessionConfig) {
				cfg.OnConnect = func(ctx context.Context, _ *websocket.Conn) error {
					<-ctx.Done()
					return ctx.Err()
				}
			},
			before: settle(time.Second), state: transport.WebSocketConnecting},
		"closed by a refusal": {plan: always(wsHandler(func(w http.ResponseWriter, _ *http.Request) {
			w.WriteHeader(http.StatusForbidden)
		})), tune: noTune, before: settle(time.Second), state: transport.WebSocketClosed},
		"closed by Close": {plan: always(wsHandler(listening)), tune: noTune,
			before: func(t *testing.T, s *transport.WebSocketSession) {
				settle(time.Second)(t, s)
				s.Close()
			},
			state: transport.WebSocketClosed},
	} {
		t.Run(name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				p := newPipeNet(nil)
				p.plan = tc.plan(p)
				defer p.close()
				d := pipeDialer(p)
				cfg := transport.WebSocketSessionConfig{URL: pipeURL, Dialer: d}
				tc.tune(d, &cfg)
				s, err := transport.NewWebSocketSession(cfg)
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				tc.before(t, s)
				var writeErr chan error
				if tc.stuckOut {
					writeErr = make(chan error, 1)
					go func() {
						writeErr <- s.WriteMessage(context.Background(), websocket.BinaryMessage, make([]byte, 1<<20))
					}()
					time.Sleep(time.Second)
					synctest.Wait()
				}
				if got := s.State(); got != tc.state {
					t.Fatalf("state %v before Close, want %v", got, tc.state)
				}
				start := time.Now()
				s.Close()
				if took := time.Since(start); took > 100*time.Millisecond {
					t.Errorf("Close took %v in state %v, want ≤ 100ms", took, tc.state)
				}
				if s.State() != transport.WebSocketClosed {
					t.Errorf("state %v after Close", s.State())
				}
				if writeErr != nil {
					if err := <-writeErr; err == nil {
						t.Error("the stuck write succeeded")
					}
				}
				start = time.Now()
				s.Close()
				if took := time.Since(start); took != 0 {
					t.Errorf("second Close took %v", took)
				}
			})
		})
	}
}

// TestWebSocketSessionBusyServerRetried: a 429 or 408 answer to the
// upgrade does not end the session (a server shedding load, DESIGN.md's
// storms): it redials no sooner than Retry-After, capped at the policy's
// MaxRetryAfter, and connects once the server takes it. A 403 still ends
// it.
func TestWebSocketSessionBusyServerRetried(t *testing.T) {
	busy := func(code int, retryAfter string) func(net.Conn) {
		return wsHandler(func(w http.ResponseWriter, _ *http.Request) {
			if retryAfter != "" {
				w.Header().Set("Retry-After", retryAfter)
			}
			w.WriteHeader(code)
		})
	}
	for _, tc := range []struct {
		name     string
		code     int
		ra       string
		maxRA    time.Duration
		wantWait time.Duration // before the second dial
	}{
		{"429 Retry-After 3", http.StatusTooManyRequests, "3", 0, 3 * time.Second},
		{"429 Retry-After over the cap", http.StatusTooManyRequests, "3600", 5 * time.Second, 5 * time.Second},
		{"408 no Retry-After", http.StatusRequestTimeout, "", 0, 100 * time.Millisecond},
		{"503 Retry-After 2", http.StatusServiceUnavailable, "2", 0, 2 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var dialedAt []time.Time
				var mu sync.Mutex
				p := newPipeNet(func(n int) func(net.Conn) {
					mu.Lock()
					dialedAt = append(dialedAt, time.Now())
					mu.Unlock()
					if n == 1 {
						return busy(tc.code, tc.ra)
					}
					return wsHandler(listening)
				})
				defer p.close()
				d := pipeDialer(p)
				d.Retry.MaxRetryAfter = tc.maxRA
				s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: d})
				if err != nil {
					t.Fatal(err)
				}
				defer s.Close()
				time.Sleep(tc.wantWait - time.Millisecond)
				synctest.Wait()
				if p.dials() != 1 {
					t.Fatalf("%d dials before the wait (%v) ended", p.dials(), tc.wantWait)
				}
				time.Sleep(2 * time.Millisecond)
				synctest.Wait()
				if s.State() != transport.WebSocketConnected || s.Err() != nil {
					t.Fatalf("state %v, err %v after the server's wait; want connected", s.State(), s.Err())
				}
				mu.Lock()
				defer mu.Unlock()
				if got := dialedAt[1].Sub(dialedAt[0]); got != tc.wantWait {
					t.Fatalf("redialled after %v, want %v", got, tc.wantWait)
				}
			})
		})
	}
}

// TestWebSocketDialBusyServerRetried: Dial retries a 429 after its
// Retry-After, like the Transport; a 403 is still final.
func TestWebSocketDialBusyServerRetried(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := newPipeNet(func(n int) func(net.Conn) {
			if n == 1 {
				return wsHandler(func(w http.ResponseWriter, _ *http.Request) {
					w.Header().Set("Retry-After", "2")
					w.WriteHeader(http.StatusTooManyRequests)
				})
			}
			return wsHandler(echo)
		})
		defer p.close()
		d := pipeDialer(p)
		d.Retry.MaxAttempts = 3
		start := time.Now()
		c, _, err := d.Dial(t.Context(), pipeURL, nil)
		if err != nil {
			t.Fatalf("Dial after a 429: %v", err)
		}
		c.Close()
		if took := time.Since(start); took != 2*time.Second {
			t.Fatalf("Dial took %v, want the 2s of Retry-After", took)
		}

		p2 := newPipeNet(func(int) func(net.Conn) {
			return wsHandler(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusForbidden) })
		})
		defer p2.close()
		d2 := pipeDialer(p2)
		d2.Retry.MaxAttempts = 3
		_, resp, err := d2.Dial(t.Context(), pipeURL, nil)
		var he *transport.HandshakeError
		if !errors.As(err, &he) || he.StatusCode != http.StatusForbidden || p2.dials() != 1 {
			t.Fatalf("403: err %v after %d dials; want the 403 after 1", err, p2.dials())
		}
		if resp != nil {
			resp.Body.Close()
		}
	})
}

// upgradeAndHold upgrades, holds the connection for d (reading, so pings
// are answered) and then drops it.
func upgradeAndHold(d time.Duration) func(net.Conn) {
	return wsHandler(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		go func() {
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		time.Sleep(d)
		c.NetConn().Close()
	})
}

// TestWebSocketSessionBackoffStableAfter walks the reconnect backoff
// (InitialInterval 100ms, doubling, MaxInterval 800ms, no jitter,
// StableAfter 1s) exactly: connections lost at once continue the backoff
// (100, 200, 400, 800, 800ms); a connection that lasted StableAfter
// starts it again from InitialInterval; one lost a moment before
// StableAfter continues it. Failed dials in between count like short
// connections.
func TestWebSocketSessionBackoffStableAfter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var mu sync.Mutex
		var dialedAt []time.Time
		plan := []func(net.Conn){
			upgradeAndDrop, upgradeAndDrop, upgradeAndDrop, upgradeAndDrop, upgradeAndDrop, // 1–5
			upgradeAndHold(time.Second),                    // 6: stable
			upgradeAndDrop,                                 // 7
			upgradeAndHold(time.Second - time.Millisecond), // 8: not quite stable
			wsHandler(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusBadGateway) }), // 9: a failed dial
			wsHandler(listening), // 10
		}
		p := newPipeNet(func(n int) func(net.Conn) {
			mu.Lock()
			dialedAt = append(dialedAt, time.Now())
			mu.Unlock()
			return plan[min(n, len(plan))-1]
		})
		defer p.close()
		d := pipeDialer(p)
		d.Retry = &retry.Policy{InitialInterval: 100 * time.Millisecond, MaxInterval: 800 * time.Millisecond, Jitter: -1}
		var states []transport.WebSocketState
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: d,
			StableAfter: time.Second,
			OnStateChange: func(st transport.WebSocketState) {
				mu.Lock()
				states = append(states, st)
				mu.Unlock()
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		time.Sleep(10 * time.Second)
		synctest.Wait()
		if s.State() != transport.WebSocketConnected {
			t.Fatalf("state %v after the plan, want connected", s.State())
		}
		mu.Lock()
		defer mu.Unlock()
		ms := time.Millisecond
		want := []time.Duration{100 * ms, 200 * ms, 400 * ms, 800 * ms, // after dials 1–4, lost at once
			800 * ms,         // dial 5: capped
			1000*ms + 100*ms, // dial 6 lasted 1s: from InitialInterval again
			200 * ms,         // dial 7 lost at once: continues
			999*ms + 400*ms,  // dial 8 lasted 999ms: continues
			800 * ms}         // dial 9 failed (502): continues, capped
		if len(dialedAt) != len(want)+1 {
			t.Fatalf("%d dials, want %d", len(dialedAt), len(want)+1)
		}
		for i, w := range want {
			if got := dialedAt[i+1].Sub(dialedAt[i]); got != w {
				t.Errorf("dial %d came %v after dial %d, want %v", i+2, got, i+1, w)
			}
		}
		connected := 0
		for _, st := range states {
			if st == transport.WebSocketConnected {
				connected++
			}
		}
		if connected != 9 { // every dial but the 502
			t.Errorf("states %v: %d connections, want 9", states, connected)
		}
	})
}

// late101 reads the upgrade request, answers the 101 after d, and drops
// the conn at once (so that a session dials again).
func late101(d time.Duration) func(net.Conn) {
	return wsHandler(func(w http.ResponseWriter, r *http.Request) {
		time.Sleep(d)
		if c, err := upgrader.Upgrade(w, r, nil); err == nil {
			c.NetConn().Close()
		}
	})
}

// TestWebSocketSessionLate101IsNotRefusal: the 101 arrives exactly as
// HandshakeTimeout runs out, so that the timeout and the answer race, dial
// after dial. A 101 that lost the race is a timeout, never a refusal: the
// session keeps redialing and connects once the server answers in time.
// (The soak's one websocket non-recovery, issue 13: before 3eb40db a 101
// cut by the timeout kept its status, and a session ended for good on any
// status below 500; the state was closed, goroutines clean, as seen.)
func TestWebSocketSessionLate101IsNotRefusal(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		const late = 40
		p := newPipeNet(func(n int) func(net.Conn) {
			if n <= late {
				return late101(400 * time.Millisecond)
			}
			return wsHandler(listening)
		})
		defer p.close()
		d := pipeDialer(p)
		d.HandshakeTimeout = 400 * time.Millisecond
		d.Retry.InitialInterval, d.Retry.MaxInterval = 10*time.Millisecond, 10*time.Millisecond
		var mu sync.Mutex
		connected := 0
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: d,
			OnStateChange: func(st transport.WebSocketState) {
				if st == transport.WebSocketConnected {
					mu.Lock()
					connected++
					mu.Unlock()
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		for p.dials() <= late && s.State() != transport.WebSocketClosed {
			time.Sleep(100 * time.Millisecond)
			synctest.Wait()
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if s.State() == transport.WebSocketClosed {
			t.Fatalf("session ended after %d dials whose 101 raced the timeout: %v", p.dials(), s.Err())
		}
		if s.State() != transport.WebSocketConnected {
			t.Fatalf("state %v after the server answered in time", s.State())
		}
		mu.Lock()
		t.Logf("%d dials, %d of them connected although the 101 came at the timeout", p.dials(), connected)
		mu.Unlock()
	})
}
