package interop_test

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/pool"
)

// newRedisPool is a lifeline pool of raw connections to s, dialed through a
// lifeline Dialer.
func newRedisPool(t *testing.T, s *redisServer, cfg pool.Config) *pool.Pool {
	t.Helper()
	d := &dial.Dialer{}
	cfg.Dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", s.Addr) }
	p, err := pool.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = p.Close() })
	return p
}

// ping acquires a connection, sends PING and releases it (the pool
// destroys it instead when the exchange failed).
func ping(ctx context.Context, p *pool.Pool) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	reply, err := do(c, "PING")
	if err == nil && reply != "PONG" {
		c.MarkBroken()
		return errors.New("redis: reply " + reply + " to PING")
	}
	return err
}

// warm checks out n connections at once, PINGs on each and releases them
// all, so the pool holds n idle connections.
func warm(t *testing.T, p *pool.Pool, n int) {
	t.Helper()
	conns := make([]*pool.Conn, n)
	for i := range conns {
		c, err := p.Acquire(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if _, err := do(c, "PING"); err != nil {
			t.Fatal(err)
		}
		conns[i] = c
	}
	for _, c := range conns {
		c.Release()
	}
}

// TestRedisIdleTimeout: redis-server closes client connections idle for
// more than `timeout` seconds — the server-side or middlebox idle close of
// the fault catalogue. After it did, no Acquire may hand out one of those
// dead connections: the liveness probe on checkout finds each one closed.
// The control case turns the probe off and shows the fault is real: the
// stale connection is handed out and the first command on it fails.
func TestRedisIdleTimeout(t *testing.T) {
	s := startRedis(t, "--timeout", "1")
	for _, tc := range []struct {
		name       string
		probeAfter time.Duration
		wantStale  bool
	}{
		{"probe on checkout", 100 * time.Millisecond, false},
		{"control: no probe", -1, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			const n = 4
			p := newRedisPool(t, s, pool.Config{MaxConns: n, CheckAfterIdle: tc.probeAfter, HealthCheckPeriod: -1})
			warm(t, p, n)
			// redis checks idle clients in its cron; wait until it closed ours
			// (only the asking connection is left).
			waitFor(t, 15*time.Second, "redis closes the idle connections", func() bool {
				c, err := s.connectedClients()
				return err == nil && c == 1
			})
			var failed int
			for range n {
				if err := ping(t.Context(), p); err != nil {
					failed++
				}
			}
			st := p.Stats()
			if tc.wantStale {
				if failed == 0 {
					t.Fatalf("control: every PING on a server-closed conn succeeded; the fault was not injected (stats %+v)", st)
				}
				return
			}
			if failed != 0 {
				t.Fatalf("%d of %d PINGs failed: the pool handed out connections redis had closed (stats %+v)", failed, n, st)
			}
			if st.EvictedDead != n {
				t.Fatalf("EvictedDead = %d, want %d (every idle conn was closed by redis)", st.EvictedDead, n)
			}
		})
	}
}

// TestRedisFlapNeverExceedsCap replays incident 03 against a real server:
// redis allows maxclients 12, the pool MaxConns 8; while 16 workers hammer
// the pool, every client connection is killed server-side again and again
// (CLIENT KILL TYPE normal, as interfaces restarting in a loop would). The
// server's own count of connections must never exceed the pool's cap (plus
// the one connection the monitor itself uses), no command may be refused
// for max clients, the pool's dial rate must hold, and once the flapping
// stops every worker is served again within a second.
func TestRedisFlapNeverExceedsCap(t *testing.T) {
	const (
		maxConns = 8
		dialRate = 40.0
		flaps    = 8
	)
	s := startRedis(t, "--maxclients", "12")
	p := newRedisPool(t, s, pool.Config{MaxConns: maxConns, DialRate: dialRate, CheckAfterIdle: 50 * time.Millisecond})
	warm(t, p, maxConns)
	dialedBefore := p.Stats().Dialed

	ctx, stop := context.WithCancel(t.Context())
	var (
		wg        sync.WaitGroup
		ok, fails atomic.Int64
		refused   atomic.Int64
		lastOK    atomic.Int64 // unix nanos of the latest successful PING
	)
	for range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for ctx.Err() == nil {
				actx, cancel := context.WithTimeout(ctx, 2*time.Second)
				err := ping(actx, p)
				cancel()
				var re errRedis
				switch {
				case err == nil:
					ok.Add(1)
					lastOK.Store(time.Now().UnixNano())
				case errors.As(err, &re):
					refused.Add(1)
				default:
					fails.Add(1)
				}
			}
		}()
	}

	// The monitor: kill every client now and then, and sample the server's
	// connection count between kills.
	start := time.Now()
	maxSeen := 0
	for range flaps {
		if _, err := s.command("CLIENT", "KILL", "TYPE", "normal"); err != nil {
			t.Fatalf("CLIENT KILL: %v", err)
		}
		until := time.Now().Add(250 * time.Millisecond)
		for time.Now().Before(until) {
			c, err := s.connectedClients()
			if err != nil {
				t.Fatalf("INFO clients: %v", err)
			}
			maxSeen = max(maxSeen, c)
			time.Sleep(10 * time.Millisecond)
		}
	}
	flapEnd := time.Now()
	// Recovery: the first successful PING after the last flap.
	waitFor(t, time.Second, "served again after the flaps", func() bool {
		return lastOK.Load() > flapEnd.UnixNano()
	})
	stop()
	wg.Wait()
	elapsed := time.Since(start)
	st := p.Stats()
	t.Logf("flaps %d in %v: PINGs ok %d, failed %d; server max clients %d; stats %+v",
		flaps, elapsed.Round(time.Millisecond), ok.Load(), fails.Load(), maxSeen, st)

	if maxSeen > maxConns+1 {
		t.Errorf("redis saw %d clients at once; the pool's cap is %d (+1 monitor)", maxSeen, maxConns)
	}
	if refused.Load() != 0 {
		t.Errorf("%d commands got an error reply (max clients reached?)", refused.Load())
	}
	if fails.Load() == 0 {
		t.Errorf("no PING failed: the flaps did not hit the pool's connections")
	}
	// Dials after warm-up: at most the rate over the elapsed time plus the
	// burst (DialRate/10) and one token of slack.
	if dialed, bound := st.Dialed-dialedBefore, int64(dialRate*elapsed.Seconds())+int64(dialRate/10)+1; dialed > bound {
		t.Errorf("dialed %d connections in %v; the rate allows %d", dialed, elapsed, bound)
	}
	if st.Open > maxConns {
		t.Errorf("Open = %d > MaxConns %d", st.Open, maxConns)
	}
}
