package pool_test

import (
	"context"
	"math"
	"net"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/pool"
)

// failDial is a valid Config.Dial for tests that never get a conn.
func failDial(context.Context) (net.Conn, error) { return nil, errBoom }

func TestNewValidates(t *testing.T) {
	cases := []struct {
		name string
		cfg  pool.Config
		want string // substring naming the field; "" = valid
	}{
		{"zero with dial", pool.Config{Dial: failDial}, ""},
		{"dial missing", pool.Config{}, "Config.Dial is required"},
		{"negative max conns", pool.Config{Dial: failDial, MaxConns: -1}, "Config.MaxConns must not be negative"},
		{"negative max idle", pool.Config{Dial: failDial, MaxIdleConns: -1}, "Config.MaxIdleConns must not be negative"},
		{"max idle over cap", pool.Config{Dial: failDial, MaxConns: 2, MaxIdleConns: 3}, "Config.MaxIdleConns (3) must not exceed MaxConns (2)"},
		{"max idle over default cap", pool.Config{Dial: failDial, MaxIdleConns: 17}, "must not exceed MaxConns (16)"},
		{"negative min idle", pool.Config{Dial: failDial, MinIdleConns: -2}, "Config.MinIdleConns must not be negative"},
		{"min idle over cap", pool.Config{Dial: failDial, MaxConns: 2, MinIdleConns: 3}, "Config.MinIdleConns (3) must not exceed MaxConns (2)"},
		{"min idle over max idle", pool.Config{Dial: failDial, MaxConns: 4, MaxIdleConns: 1, MinIdleConns: 2}, "Config.MinIdleConns (2) must not exceed MaxIdleConns (1)"},
		{"jitter not below lifetime", pool.Config{Dial: failDial, MaxLifetime: time.Minute, MaxLifetimeJitter: time.Minute}, "Config.MaxLifetimeJitter"},
		{"jitter with lifetime off", pool.Config{Dial: failDial, MaxLifetime: -1, MaxLifetimeJitter: time.Hour}, ""},
		{"negative dial timeout", pool.Config{Dial: failDial, DialTimeout: -time.Second}, "Config.DialTimeout must not be negative"},
		{"NaN dial rate", pool.Config{Dial: failDial, DialRate: math.NaN()}, "Config.DialRate"},
		{"unlimited dial rate", pool.Config{Dial: failDial, DialRate: -1}, ""},
		{"negatives that opt out", pool.Config{Dial: failDial, MaxIdleTime: -1, HealthCheckPeriod: -1, CheckAfterIdle: -1, AcquireTimeout: -1}, ""},
		{"two errors", pool.Config{MaxConns: -1}, "Config.Dial is required\npool: Config.MaxConns"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := pool.New(tc.cfg)
			if tc.want == "" {
				require.NoError(t, err)
				require.NoError(t, p.Close())
				return
			}
			require.Error(t, err)
			assert.Nil(t, p)
			assert.Contains(t, err.Error(), tc.want)
			assert.True(t, strings.HasPrefix(err.Error(), "pool: "), err.Error())
		})
	}
}

func TestNewDoesNotWriteDefaultsBack(t *testing.T) {
	cfg := pool.Config{Dial: failDial}
	before := cfg
	newPool(t, cfg)
	assert.Zero(t, cfg.MaxConns)
	assert.Zero(t, cfg.DialRate)
	assert.Equal(t, before.MaxIdleTime, cfg.MaxIdleTime)
}

func TestAcquireReusesReleasedConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 2})
		require.NoError(t, err)
		defer p.Close()

		c1, err := p.Acquire(t.Context())
		require.NoError(t, err)
		echo(t, c1, "a")
		c1.Release()
		c2, err := p.Acquire(t.Context())
		require.NoError(t, err)
		assert.Same(t, c1, c2, "the released conn is reused")
		echo(t, c2, "b")
		c2.Release()
		s := p.Stats()
		assert.Equal(t, int64(1), d.dials.Load())
		assert.Equal(t, 1, s.Open)
		assert.Equal(t, 1, s.Idle)
		assert.Equal(t, int64(2), s.AcquireCount)
		assert.Equal(t, int64(1), s.AcquireWaitCount, "only the first acquire waited (for its dial)")
	})
}

func echo(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = c.Read(buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

// The cap holds and waiters are served in the order they came.
func TestWaitersFIFO(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 2})
		require.NoError(t, err)
		defer p.Close()

		held := make([]*pool.Conn, 2)
		for i := range held {
			held[i], err = p.Acquire(t.Context())
			require.NoError(t, err)
		}
		const n = 5
		type grant struct {
			i int
			c *pool.Conn
		}
		served := make(chan grant, n)
		for i := range n {
			go func() {
				c, err := p.Acquire(t.Context())
				if assert.NoError(t, err) {
					served <- grant{i, c}
				}
			}()
			synctest.Wait() // waiter i is queued before i+1 starts
		}
		assert.Equal(t, n, p.Stats().Waiting)
		assert.Equal(t, 2, p.Stats().Open, "no dial beyond the cap")
		// Each release goes to the oldest waiter.
		var order []int
		next := held[0]
		for range n {
			next.Release()
			synctest.Wait()
			require.Len(t, served, 1, "exactly one waiter served per release")
			g := <-served
			order = append(order, g.i)
			next = g.c
		}
		next.Release()
		held[1].Release()
		assert.Equal(t, []int{0, 1, 2, 3, 4}, order)
		assert.Equal(t, int64(2), d.dials.Load(), "waiters reused the two conns")
	})
}

func TestAcquireDeadlines(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 1, AcquireTimeout: 5 * time.Second})
		require.NoError(t, err)
		defer p.Close()
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		defer c.Release()

		// The caller's deadline wins.
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		start := time.Now()
		_, err = p.Acquire(ctx)
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 2*time.Second, time.Since(start))

		// No deadline: AcquireTimeout.
		start = time.Now()
		_, err = p.Acquire(t.Context())
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "AcquireTimeout")
		assert.Equal(t, 5*time.Second, time.Since(start))

		// Cancellation.
		ctx, cancel = context.WithCancel(t.Context())
		go func() { time.Sleep(time.Second); cancel() }()
		_, err = p.Acquire(ctx)
		assert.ErrorIs(t, err, context.Canceled)

		s := p.Stats()
		assert.Equal(t, 0, s.Waiting, "abandoned waiters left the queue")
		assert.Equal(t, int64(3), s.AcquireFailures)
		assert.Equal(t, 8*time.Second, s.AcquireWaitTime)
	})
}

// A failed dial fails the oldest waiter at once; the others keep waiting and
// get a conn from the next dial.
func TestFailedDialWakesOneWaiter(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := pipeDialer{gate: make(chan struct{})}
		d.setFail(errBoom)
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 1, DialRate: -1})
		require.NoError(t, err)
		defer p.Close()

		type res struct {
			i   int
			c   *pool.Conn
			err error
		}
		results := make(chan res, 3)
		for i := range 3 {
			go func() {
				c, err := p.Acquire(t.Context())
				results <- res{i, c, err}
			}()
			synctest.Wait()
		}
		assert.Equal(t, int64(1), d.dials.Load(), "one dial for a cap of one")
		d.gate <- struct{}{} // the first dial fails
		synctest.Wait()
		r := <-results
		assert.Equal(t, 0, r.i, "the oldest waiter gets the error")
		assert.ErrorIs(t, r.err, errBoom)
		assert.Contains(t, r.err.Error(), "pool: dial:")
		assert.Len(t, results, 0, "the others keep waiting")
		assert.Equal(t, 2, p.Stats().Waiting)
		assert.Equal(t, int64(2), d.dials.Load(), "a new dial started for them")

		d.setFail(nil)
		d.gate <- struct{}{}
		synctest.Wait()
		r = <-results
		require.NoError(t, r.err)
		assert.Equal(t, 1, r.i)
		r.c.Release()
		synctest.Wait()
		r = <-results
		require.NoError(t, r.err)
		assert.Equal(t, 2, r.i)
		r.c.Release()
		s := p.Stats()
		assert.Equal(t, int64(1), s.DialFailures)
		assert.Equal(t, int64(1), s.Dialed)
	})
}

// A dial is detached from the caller who triggered it: the conn arrives in
// the pool even though the caller gave up, and the dial has its own deadline.
func TestDialOutlivesCallerButHasDeadline(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := pipeDialer{gate: make(chan struct{})}
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 2, DialTimeout: 10 * time.Second})
		require.NoError(t, err)
		defer p.Close()

		ctx, cancel := context.WithTimeout(t.Context(), time.Second)
		_, err = p.Acquire(ctx)
		cancel()
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 1, p.Stats().Dialing, "the dial goes on without its caller")
		d.gate <- struct{}{}
		synctest.Wait()
		s := p.Stats()
		assert.Equal(t, 1, s.Idle, "the late conn feeds the pool")
		assert.Equal(t, int64(1), s.Dialed)

		// A dial that never completes ends at DialTimeout.
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		defer c.Release()
		start := time.Now()
		_, err = p.Acquire(t.Context()) // dials; the gate never opens
		assert.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "dial timeout")
		assert.Equal(t, 10*time.Second, time.Since(start))
	})
}

func TestBrokenConnDestroyedOnRelease(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 2})
		require.NoError(t, err)
		defer p.Close()
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		d.killServers()
		_, err = c.Read(make([]byte, 1))
		require.Error(t, err)
		c.Release()
		s := p.Stats()
		assert.Equal(t, int64(1), s.EvictedBroken)
		assert.Equal(t, 0, s.Open)

		// A deadline timeout marks it broken too.
		c, err = p.Acquire(t.Context())
		require.NoError(t, err)
		require.NoError(t, c.SetReadDeadline(time.Now().Add(time.Second)))
		_, err = c.Read(make([]byte, 1))
		require.ErrorIs(t, err, os.ErrDeadlineExceeded)
		c.Release()
		assert.Equal(t, int64(2), p.Stats().EvictedBroken)

		c, err = p.Acquire(t.Context())
		require.NoError(t, err)
		c.MarkBroken()
		c.Release()
		assert.Equal(t, int64(3), p.Stats().EvictedBroken)
		assert.Equal(t, int64(3), d.dials.Load())
	})
}

func TestReleaseAndCloseAreIdempotent(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 2})
		require.NoError(t, err)
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		c.Release()
		c.Release()
		assert.NoError(t, c.Close(), "Close after Release is a no-op")
		s := p.Stats()
		assert.Equal(t, 1, s.Idle)
		assert.Equal(t, 0, s.InUse)
		assert.Equal(t, 1, s.Open)

		c, err = p.Acquire(t.Context())
		require.NoError(t, err)
		require.NoError(t, c.Close())
		c.Release()
		assert.NoError(t, c.Close())
		s = p.Stats()
		assert.Equal(t, 0, s.Open)
		assert.Zero(t, s.Evicted(), "a caller's Close is not an eviction")

		c, err = p.Acquire(t.Context())
		require.NoError(t, err)
		require.NoError(t, p.Close())
		require.NoError(t, p.Close())
		c.Release()
		assert.NoError(t, c.Close())
		_, err = c.Write([]byte("x"))
		assert.Error(t, err, "Close closed the conn in use")
		assert.Equal(t, 0, p.Stats().Open)
		_, err = p.Acquire(t.Context())
		assert.ErrorIs(t, err, pool.ErrClosed)
		p.Reset() // no-op after Close
	})
}

func TestCloseWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 1})
		require.NoError(t, err)
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		errs := make(chan error, 3)
		for range 3 {
			go func() { _, err := p.Acquire(t.Context()); errs <- err }()
		}
		synctest.Wait()
		assert.Equal(t, 3, p.Stats().Waiting)
		require.NoError(t, p.Close())
		for range 3 {
			assert.ErrorIs(t, <-errs, pool.ErrClosed)
		}
		c.Release()
	})
}

// A dial in flight when Close is called is canceled, and Close waits for it.
func TestCloseCancelsDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := pipeDialer{gate: make(chan struct{})}
		p, err := pool.New(pool.Config{Dial: d.Dial})
		require.NoError(t, err)
		errc := make(chan error, 1)
		go func() { _, err := p.Acquire(t.Context()); errc <- err }()
		synctest.Wait()
		assert.Equal(t, 1, p.Stats().Dialing)
		start := time.Now()
		require.NoError(t, p.Close())
		assert.Zero(t, time.Since(start), "Close did not wait for the dial timeout")
		assert.ErrorIs(t, <-errc, pool.ErrClosed)
		assert.Equal(t, 0, p.Stats().Dialing)
		assert.Zero(t, p.Stats().DialFailures, "a dial canceled by Close is not a failure")
	})
}

func TestIdleEviction(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxIdleTime: 30 * time.Second, HealthCheckPeriod: 10 * time.Second, CheckAfterIdle: -1})
		require.NoError(t, err)
		defer p.Close()
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		c.Release()
		time.Sleep(29 * time.Second)
		synctest.Wait()
		assert.Equal(t, 1, p.Stats().Idle)
		time.Sleep(11 * time.Second) // the sweep at 40s sees 40s idle
		synctest.Wait()
		s := p.Stats()
		assert.Equal(t, 0, s.Open)
		assert.Equal(t, int64(1), s.EvictedIdle)

		// Without the sweep, Acquire skips the stale one itself.
		p2, err := pool.New(pool.Config{Dial: d.Dial, MaxIdleTime: 30 * time.Second, HealthCheckPeriod: -1, CheckAfterIdle: -1})
		require.NoError(t, err)
		defer p2.Close()
		c, err = p2.Acquire(t.Context())
		require.NoError(t, err)
		c.Release()
		time.Sleep(31 * time.Second)
		c2, err := p2.Acquire(t.Context())
		require.NoError(t, err)
		assert.NotSame(t, c, c2)
		c2.Release()
		assert.Equal(t, int64(1), p2.Stats().EvictedIdle)
	})
}

// MaxLifetime is checked on release and on acquire, so a busy pool also
// recycles.
func TestLifetimeBusyPool(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 1, MaxLifetime: time.Minute, MaxLifetimeJitter: -1, HealthCheckPeriod: -1, CheckAfterIdle: -1})
		require.NoError(t, err)
		defer p.Close()
		// In use across its expiry: retired on release.
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		time.Sleep(61 * time.Second)
		c.Release()
		s := p.Stats()
		assert.Equal(t, int64(1), s.EvictedLifetime)
		assert.Equal(t, 0, s.Open)
		// Idle across its expiry, no sweep: skipped on acquire.
		c, err = p.Acquire(t.Context())
		require.NoError(t, err)
		time.Sleep(59 * time.Second)
		c.Release()
		time.Sleep(2 * time.Second)
		c2, err := p.Acquire(t.Context())
		require.NoError(t, err)
		assert.NotSame(t, c, c2)
		c2.Release()
		assert.Equal(t, int64(2), p.Stats().EvictedLifetime)
	})
}

// Connections dialed at the same instant expire spread over
// MaxLifetime ± MaxLifetimeJitter, not all at once.
func TestLifetimeJitterSpreadsExpiries(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		const n = 64
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: n, MaxLifetime: 10 * time.Minute,
			MaxLifetimeJitter: time.Minute, MaxIdleTime: -1, HealthCheckPeriod: time.Second, DialRate: -1})
		require.NoError(t, err)
		defer p.Close()
		conns := make([]*pool.Conn, n)
		for i := range conns {
			conns[i], err = p.Acquire(t.Context())
			require.NoError(t, err)
		}
		for _, c := range conns {
			c.Release()
		}
		born := time.Now()
		var (
			first, last time.Duration
			steps       int // seconds in which at least one conn expired
			prev        int64
		)
		for time.Since(born) < 12*time.Minute {
			time.Sleep(time.Second)
			synctest.Wait()
			e := p.Stats().EvictedLifetime
			if e > prev {
				if prev == 0 {
					first = time.Since(born)
				}
				last = time.Since(born)
				steps++
				prev = e
			}
		}
		assert.Equal(t, int64(n), prev, "all expired")
		assert.GreaterOrEqual(t, first, 9*time.Minute, "none before MaxLifetime-jitter")
		assert.LessOrEqual(t, last, 11*time.Minute+time.Second, "none after MaxLifetime+jitter (+1 sweep)")
		assert.Greater(t, last-first, time.Minute, "spread over the jitter window")
		assert.Greater(t, steps, n/3, "expiries spread over many sweeps, not a few")
	})
}

func TestReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := pipeDialer{}
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 3, DialRate: -1})
		require.NoError(t, err)
		defer p.Close()
		a, err := p.Acquire(t.Context())
		require.NoError(t, err)
		b, err := p.Acquire(t.Context())
		require.NoError(t, err)
		// A dial in flight across the Reset is discarded when it lands.
		d.gate = make(chan struct{})
		ctx, cancel := context.WithTimeout(t.Context(), time.Millisecond)
		_, err = p.Acquire(ctx)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		b.Release()
		synctest.Wait()
		require.Equal(t, 1, p.Stats().Dialing)

		p.Reset()
		s := p.Stats()
		assert.Equal(t, int64(1), s.EvictedReset, "idle closed now")
		assert.Equal(t, 0, s.Idle)
		assert.Equal(t, 1, s.InUse)
		d.gate <- struct{}{}
		synctest.Wait()
		assert.Equal(t, int64(2), p.Stats().EvictedReset, "the dial started before Reset is discarded")
		d.gate = nil
		a.Release()
		s = p.Stats()
		assert.Equal(t, int64(3), s.EvictedReset, "in use retired on release")
		assert.Equal(t, 0, s.Open)
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		c.Release()
		assert.Equal(t, 1, p.Stats().Idle, "conns dialed after Reset are kept")
	})
}

func TestMaxIdleConns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 3, MaxIdleConns: 1, DialRate: -1})
		require.NoError(t, err)
		defer p.Close()
		a, _ := p.Acquire(t.Context())
		b, _ := p.Acquire(t.Context())
		a.Release()
		b.Release()
		s := p.Stats()
		assert.Equal(t, 1, s.Idle)
		assert.Equal(t, int64(1), s.EvictedExcess)
	})
}

func TestMinIdleConns(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 4, MinIdleConns: 3, DialRate: 1})
		require.NoError(t, err)
		defer p.Close()
		synctest.Wait()
		assert.Equal(t, 1, p.Stats().Idle, "burst of 1 at DialRate 1")
		assert.Equal(t, 3, p.Stats().Open, "the other two wait for the rate")
		time.Sleep(2 * time.Second)
		synctest.Wait()
		assert.Equal(t, 3, p.Stats().Idle)
		p.Reset()
		time.Sleep(3 * time.Second)
		synctest.Wait()
		s := p.Stats()
		assert.Equal(t, 3, s.Idle, "refilled after Reset")
		assert.Equal(t, int64(6), s.Dialed)
	})
}

// DialRate bounds new connections per second whatever the demand.
func TestDialRate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		d.setFail(errBoom)
		// Fail fast off: with it, the failing upstream is soon known down
		// and the callers' Acquires fail without a dial (TestFailFast*).
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 50, DialRate: 10, DisableFailFast: true})
		require.NoError(t, err)
		defer p.Close()
		// 50 callers retrying as fast as they can against a failing server.
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		var wg sync.WaitGroup
		for range 50 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for ctx.Err() == nil {
					_, err := p.Acquire(ctx)
					assert.Error(t, err)
				}
			}()
		}
		wg.Wait()
		n := d.dials.Load()
		// burst 1 + 10/s over 3s
		assert.LessOrEqual(t, n, int64(1+10*3))
		assert.GreaterOrEqual(t, n, int64(25), "the rate is used, not starved")
		assert.LessOrEqual(t, p.Stats().Open, 50)
	})
}

// A conn handed to a waiter at the very moment its deadline fires is not
// lost: it goes back to the pool.
func TestHandoffRacingDeadlineLosesNothing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 1, CheckAfterIdle: -1})
		require.NoError(t, err)
		defer p.Close()
		got := 0
		for range 200 {
			c, err := p.Acquire(t.Context())
			require.NoError(t, err)
			go func() { time.Sleep(time.Second); c.Release() }()
			ctx, cancel := context.WithTimeout(t.Context(), time.Second)
			c2, err := p.Acquire(ctx)
			cancel()
			if err == nil {
				got++
				c2.Release()
			}
			synctest.Wait()
			s := p.Stats()
			require.Equal(t, 1, s.Idle, "the conn came back")
			require.Equal(t, 0, s.InUse)
			require.Equal(t, 0, s.Waiting)
		}
		assert.Equal(t, int64(1), d.dials.Load(), "never lost, never re-dialed")
		t.Logf("handoff won %d of 200 races", got)
	})
}

// Many goroutines acquiring, breaking, releasing and destroying conns while
// Reset runs: the cap holds throughout and the books balance at the end.
func TestConcurrentInvariants(t *testing.T) {
	var d pipeDialer
	const maxConns = 4
	p := newPool(t, pool.Config{Dial: d.Dial, MaxConns: maxConns, MaxIdleConns: 3, DialRate: -1, CheckAfterIdle: -1})
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	var (
		wg               sync.WaitGroup
		ok, fail, closes atomic.Int64
	)
	for g := range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				actx, acancel := context.WithTimeout(ctx, 50*time.Millisecond)
				c, err := p.Acquire(actx)
				acancel()
				if err != nil {
					fail.Add(1)
					continue
				}
				ok.Add(1)
				if s := p.Stats(); s.Open > maxConns {
					t.Errorf("Open %d > MaxConns", s.Open)
				}
				switch (g + i) % 6 {
				case 0:
					c.MarkBroken()
					c.Release()
				case 1:
					closes.Add(1)
					_ = c.Close()
				default:
					c.Release()
				}
			}
		}()
	}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for ctx.Err() == nil {
			time.Sleep(10 * time.Millisecond)
			p.Reset()
		}
	}()
	wg.Wait()
	// Dials started for waiters that gave up still land.
	eventually(t, 10*time.Second, "dials in flight land", func() bool { return p.Stats().Dialing == 0 })
	s := p.Stats()
	t.Logf("ok=%d fail=%d closes=%d %+v", ok.Load(), fail.Load(), closes.Load(), s)
	assert.Positive(t, ok.Load())
	assert.Equal(t, ok.Load(), s.AcquireCount)
	assert.Equal(t, 0, s.InUse)
	assert.Equal(t, 0, s.Waiting)
	assert.Equal(t, s.Open, s.Idle+s.Dialing)
	assert.LessOrEqual(t, s.Idle, 3)
	assert.Equal(t, s.Dialed, int64(s.Idle)+s.Evicted()+closes.Load(), "every dialed conn is idle, evicted or closed by a caller")
}

// Under light load the pool keeps reusing its most recently used conn and
// lets the others age out, instead of keeping every conn warm in turn.
func TestLightLoadLetsExtraConnsAge(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 16, DialRate: -1,
			MaxIdleTime: 30 * time.Second, HealthCheckPeriod: 5 * time.Second, CheckAfterIdle: -1})
		require.NoError(t, err)
		defer p.Close()
		burst := make([]*pool.Conn, 16)
		for i := range burst {
			burst[i], err = p.Acquire(t.Context())
			require.NoError(t, err)
		}
		for _, c := range burst {
			c.Release()
		}
		// One request every 99ms for a minute: never at the instant of a
		// sweep (every 5s), which holds a shard's lock while it looks, so
		// that an Acquire then spills to the next shard's conn and keeps a
		// second conn warm (gate run 72; by design, see popIdle).
		for range 600 {
			time.Sleep(99 * time.Millisecond)
			c, err := p.Acquire(t.Context())
			require.NoError(t, err)
			c.Release()
		}
		synctest.Wait()
		s := p.Stats()
		assert.Equal(t, 1, s.Open, "only the conn in use stays: %+v", s)
		assert.Equal(t, int64(15), s.EvictedIdle)
		assert.Equal(t, int64(16), d.dials.Load())
	})
}

// TestBadInputNeverPanics: a nil context, a nil *Pool, a zero Pool and nil
// or zero *Conns give clear errors or do nothing; none of them panics.
func TestBadInputNeverPanics(t *testing.T) {
	var d pipeDialer
	p := newPool(t, pool.Config{Dial: d.Dial})
	var nilCtx context.Context // the bad input under test
	_, err := p.Acquire(nilCtx)
	require.ErrorContains(t, err, "pool: Acquire with a nil Context")

	var nilPool *pool.Pool
	_, err = nilPool.Acquire(t.Context())
	require.ErrorContains(t, err, "create pools with pool.New")
	assert.Equal(t, pool.Stats{}, nilPool.Stats())
	nilPool.Reset()
	assert.NoError(t, nilPool.Close())

	var zero pool.Pool
	_, err = zero.Acquire(t.Context())
	require.ErrorContains(t, err, "create pools with pool.New")
	assert.Equal(t, pool.Stats{}, zero.Stats())
	zero.Reset()
	assert.NoError(t, zero.Close())

	var nilConn *pool.Conn
	nilConn.Release()
	assert.NoError(t, nilConn.Close())
	(&pool.Conn{}).Release()
	assert.NoError(t, (&pool.Conn{}).Close())
}
