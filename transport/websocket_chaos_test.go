package transport_test

import (
	"context"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"runtime"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestWebSocketChaosRecovery replays the soak's faults on a session alone
// (the soak's settings, its faults on the websocket front only), in
// cycles: 3s of faults under load, then the faults off and a write must
// succeed within 5s; on a failure it logs the session's last events and
// writes every goroutine's stack to /tmp/chaos/stacks.txt. A diagnostic
// for the soak's unexplained non-recovery (issue 20): it runs only with
// WS_CHAOS_CYCLES=N, and needs root, ip and nft.
func TestWebSocketChaosRecovery(t *testing.T) {
	cycles, _ := strconv.Atoi(os.Getenv("WS_CHAOS_CYCLES"))
	if cycles == 0 {
		t.Skip("WS_CHAOS_CYCLES not set")
	}
	ns := faultnet.NewNetns(t)
	up := websocket.Upgrader{}
	backend := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		c, err := up.Upgrade(w, req, nil)
		if err != nil {
			return
		}
		defer c.Close()
		for {
			typ, data, err := c.ReadMessage()
			if err != nil {
				return
			}
			_ = c.SetWriteDeadline(time.Now().Add(time.Second))
			if c.WriteMessage(typ, data) != nil {
				return
			}
		}
	}))
	t.Cleanup(backend.Close)
	front := ns.Start(t, faultnet.Config{Handler: faultnet.Forward(backend.Listener.Addr().String())})
	t.Cleanup(backend.Close)
	nd := &dial.Dialer{DialFunc: ns.DialContext, ConnectTimeout: 300 * time.Millisecond,
		TLSHandshakeTimeout: 300 * time.Millisecond, AttemptDelay: 100 * time.Millisecond,
		KeepAlive:   net.KeepAliveConfig{Enable: true, Idle: time.Second, Interval: time.Second, Count: 2},
		UserTimeout: 2 * time.Second, Health: &dial.Health{}}
	var mu sync.Mutex
	var events []string
	note := func(s string) {
		mu.Lock()
		events = append(events, time.Now().Format("15:04:05.000")+" "+s)
		if len(events) > 60 {
			events = events[len(events)-60:]
		}
		mu.Unlock()
	}
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws://" + front.Addr() + "/",
		Dialer: &transport.WebSocketDialer{Dialer: nd, HandshakeTimeout: 400 * time.Millisecond,
			PingInterval: 300 * time.Millisecond, PongTimeout: time.Second,
			Proxy: func(*http.Request) (*url.URL, error) { return nil, nil },
			Retry: &retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 200 * time.Millisecond}},
		StableAfter:   time.Second,
		OnStateChange: func(st transport.WebSocketState) { note("state " + st.String()) },
		OnDisconnect:  func(err error) { note("lost: " + err.Error()) },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	rnd := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 1))
	for cycle := range cycles {
		ctx, stop := context.WithTimeout(context.Background(), 3*time.Second)
		var wg sync.WaitGroup
		for w := range 6 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				r := rand.New(rand.NewPCG(uint64(w), uint64(cycle)))
				for ctx.Err() == nil {
					d := time.Duration(20+r.IntN(800)) * time.Millisecond
					cctx, cancel := context.WithTimeout(context.Background(), d)
					_ = s.WriteMessage(cctx, websocket.BinaryMessage, make([]byte, 16+r.IntN(4096)))
					cancel()
					time.Sleep(time.Duration(r.IntN(20)) * time.Millisecond)
				}
			}()
		}
		tk := time.NewTimer(0)
		for ctx.Err() == nil {
			select {
			case <-ctx.Done():
			case <-tk.C:
			}
			tk.Reset(time.Duration(100+rnd.IntN(400)) * time.Millisecond)
			frac := faultnet.Fraction(0.05 + 0.4*rnd.Float64())
			var name string
			switch rnd.IntN(6) {
			case 0:
				_ = ns.Flush()
				front.SetFault(faultnet.None, nil)
				_ = front.Up()
				name = "none"
			case 1:
				f := []faultnet.Fault{faultnet.Silence, faultnet.StallTLS, faultnet.Reset, faultnet.CloseNow, faultnet.SlowDrip}[rnd.IntN(5)]
				front.SetFault(f, frac)
				name = f.String()
			case 2, 3:
				_ = ns.Flush()
				switch rnd.IntN(4) {
				case 0:
					_ = ns.DropSYN(front.Port())
					name = "DropSYN"
				case 1:
					_ = ns.RejectReset(front.Port())
					name = "RejectReset"
				case 2:
					_ = ns.Loss(front.Port(), 5+rnd.IntN(20))
					name = "Loss"
				case 3:
					_ = ns.Vanish(front.Port())
					name = "Vanish"
				}
			case 4:
				_ = front.Down()
				name = "Down"
			case 5:
				front.DropAll()
				name = "DropAll"
			}
			note("fault " + name)
		}
		tk.Stop()
		stop()
		wg.Wait()
		_ = ns.Flush()
		front.SetFault(faultnet.None, nil)
		if err := front.Up(); err != nil {
			t.Fatal(err)
		}
		note("healed")
		healed := time.Now()
		ok := false
		for time.Since(healed) < 5*time.Second {
			cctx, cancel := context.WithTimeout(context.Background(), 500*time.Millisecond)
			err := s.WriteMessage(cctx, websocket.BinaryMessage, []byte("probe"))
			cancel()
			if err == nil {
				ok = true
				break
			}
			time.Sleep(time.Millisecond)
		}
		if !ok {
			buf := make([]byte, 1<<20)
			n := runtime.Stack(buf, true)
			_ = os.MkdirAll("/tmp/chaos", 0o755)
			_ = os.WriteFile("/tmp/chaos/stacks.txt", buf[:n], 0o644)
			mu.Lock()
			for _, e := range events {
				t.Log(e)
			}
			mu.Unlock()
			t.Fatalf("cycle %d: no recovery in 5s: state %v err %v", cycle, s.State(), s.Err())
		}
		t.Logf("cycle %d: recovered in %v", cycle, time.Since(healed).Round(time.Millisecond))
	}
}
