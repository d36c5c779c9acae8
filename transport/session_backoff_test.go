package transport_test

import (
	"context"
	"fmt"
	"net"
	"sync"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// backoffScenario is a server's behaviour over time: for the dial made at
// elapsed time at, the handler to serve it, or nil to refuse the connect.
type backoffScenario struct {
	name  string
	serve func(at time.Duration) func(net.Conn)
}

// backoffResult is what a session made of a scenario.
type backoffResult struct {
	connected   time.Duration // total time in WebSocketConnected
	dials       int
	recoveredIn time.Duration // from recoverAt to the next connected state (-1: none)
}

// runBackoff runs a session with the default Retry policy against sc for
// span of synctest time, with StableAfter stable (0: the default), and
// measures it. recoverAt, when not 0, is when the scenario's outage ends.
func runBackoff(t *testing.T, sc backoffScenario, stable, span, recoverAt time.Duration) backoffResult {
	var res backoffResult
	synctest.Test(t, func(t *testing.T) {
		start := time.Now()
		p := newPipeNet(func(int) func(net.Conn) { return sc.serve(time.Since(start)) })
		defer p.close()
		var mu sync.Mutex
		dials := 0
		d := &transport.WebSocketDialer{
			Dialer: &dial.Dialer{DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
				mu.Lock()
				dials++
				mu.Unlock()
				if sc.serve(time.Since(start)) == nil {
					return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
				}
				return p.dial(ctx, network, addr)
			}},
			Proxy:            noProxy,
			HandshakeTimeout: 8 * time.Second,
			PingInterval:     -1,
			Retry:            &retry.Policy{}, // the defaults: 100ms doubling to 5s, jitter 0.5
		}
		var upAt time.Time
		res.recoveredIn = -1
		s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{URL: pipeURL, Dialer: d,
			StableAfter: stable,
			OnStateChange: func(st transport.WebSocketState) {
				mu.Lock()
				defer mu.Unlock()
				now := time.Now()
				if st == transport.WebSocketConnected {
					upAt = now
					if recoverAt > 0 && res.recoveredIn < 0 && now.Sub(start) >= recoverAt {
						res.recoveredIn = now.Sub(start) - recoverAt
					}
				} else if !upAt.IsZero() {
					res.connected += now.Sub(upAt)
					upAt = time.Time{}
				}
			}})
		if err != nil {
			t.Fatal(err)
		}
		time.Sleep(span)
		mu.Lock()
		if !upAt.IsZero() {
			res.connected += time.Since(upAt)
			upAt = time.Time{}
		}
		res.dials = dials
		mu.Unlock()
		s.Close()
	})
	return res
}

// TestWebSocketSessionBackoffRule measures the reconnect rule (StableAfter)
// with the default Retry policy over 10 minutes of each scenario: the
// share of time connected, the dials per minute, and how soon a session
// is back after an outage. It compares the default before issue 21
// (StableAfter 10s) with the default now (1s), and holds the new default
// to what it promises: a server that drops every 2s keeps a session
// connected > 90% of the time, a server that accepts and drops at once (or
// refuses) is dialled no more often than under the old rule (the backoff
// still grows to MaxInterval), and a recovery is found within MaxInterval
// (5s, ±50% jitter).
func TestWebSocketSessionBackoffRule(t *testing.T) {
	const span = 10 * time.Minute
	held := func(d time.Duration) func(time.Duration) func(net.Conn) {
		h := upgradeAndHold(d)
		return func(time.Duration) func(net.Conn) { return h }
	}
	outage := func(from, to time.Duration, after func(time.Duration) func(net.Conn)) func(time.Duration) func(net.Conn) {
		return func(at time.Duration) func(net.Conn) {
			switch {
			case at < from:
				return upgradeAndHold(from - at) // the outage drops it
			case at < to:
				return nil
			}
			return after(at)
		}
	}
	drop2s := held(2 * time.Second)
	scenarios := []struct {
		sc        backoffScenario
		recoverAt time.Duration
	}{
		{backoffScenario{"(a) drops every 2s", drop2s}, 0},
		{backoffScenario{"(b1) accepts, drops at once", func(time.Duration) func(net.Conn) { return upgradeAndDrop }}, 0},
		{backoffScenario{"(b2) refuses", func(time.Duration) func(net.Conn) { return nil }}, 0},
		{backoffScenario{"(c) 2min outage at 1min", outage(time.Minute, 3*time.Minute,
			func(time.Duration) func(net.Conn) { return wsHandler(listening) })}, 3 * time.Minute},
		{backoffScenario{"(c') 2min outage, then drops every 2s", outage(time.Minute, 3*time.Minute, drop2s)}, 3 * time.Minute},
		{backoffScenario{"(d) drops every 500ms", held(500 * time.Millisecond)}, 0},
		{backoffScenario{"(e) drops every 5s", held(5 * time.Second)}, 0},
	}
	rules := []struct {
		name   string
		stable time.Duration
	}{{"StableAfter 10s (before)", 10 * time.Second}, {"StableAfter 1s (default now)", 0}}
	var table string
	for _, sc := range scenarios {
		var got [2]backoffResult
		for i, r := range rules {
			t.Run(sc.sc.name+"/"+r.name, func(t *testing.T) {
				got[i] = runBackoff(t, sc.sc, r.stable, span, sc.recoverAt)
			})
		}
		row := sc.sc.name
		for _, g := range got {
			row += fmt.Sprintf(" | %5.1f%% connected, %5.1f dials/min", 100*g.connected.Seconds()/span.Seconds(),
				float64(g.dials)/span.Minutes())
			if sc.recoverAt > 0 {
				row += fmt.Sprintf(", back %v after recovery", g.recoveredIn.Round(time.Millisecond))
			}
		}
		table += row + "\n"
		before, now := got[0], got[1]
		frac := now.connected.Seconds() / span.Seconds()
		switch sc.sc.name[:3] {
		case "(a)":
			if frac < 0.90 {
				t.Errorf("%s: connected %.1f%% of the time under the default rule, want > 90%%", sc.sc.name, 100*frac)
			}
		case "(b1", "(b2":
			if now.dials > before.dials*11/10+5 {
				t.Errorf("%s: %d dials under the default rule, %d before: the flapping server is hammered", sc.sc.name, now.dials, before.dials)
			}
		case "(c)", "(c'":
			if now.recoveredIn < 0 || now.recoveredIn > 7500*time.Millisecond {
				t.Errorf("%s: back %v after the recovery, want within MaxInterval (5s ±50%%)", sc.sc.name, now.recoveredIn)
			}
		}
		if sc.sc.name[:4] == "(c')" && frac < 0.70 {
			t.Errorf("%s: connected %.1f%% of the time, want the drop-every-2s pace back after the outage", sc.sc.name, 100*frac)
		}
	}
	t.Logf("over %v each; before: %s | now: %s\n%s", span, rules[0].name, rules[1].name, table)
}
