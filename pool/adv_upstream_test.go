package pool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// Adversarial tests of the pool's gate (issue 23) from outside, with real
// sockets on loopback.

// dialLog records when each Config.Dial call began.
type dialLog struct {
	mu    sync.Mutex
	times []time.Time
}

func (l *dialLog) add() {
	l.mu.Lock()
	l.times = append(l.times, time.Now())
	l.mu.Unlock()
}

func (l *dialLog) between(from, to time.Time) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, t := range l.times {
		if !t.Before(from) && t.Before(to) {
			n++
		}
	}
	return n
}

// The rate limit of new dials and the gate together: a burst of Acquires
// queues dials behind DialRate while the upstream still looks Ready; the
// first five are refused and the gate goes Down. The dials still waiting
// for their token must not go to the upstream known down (only probes, about
// one a second), and the Acquires they were for fail fast instead of each
// waiting its turn at DialRate to learn what the pool already knows.
func TestAdvFailFastDialsQueuedAtRateLimit(t *testing.T) {
	addr := refusingAddr(t)
	var log dialLog
	dd := &dial.Dialer{}
	p := newPool(t, pool.Config{Name: "db", MaxConns: 30, DialRate: 4,
		Dial: func(ctx context.Context) (net.Conn, error) {
			log.add()
			return dd.DialContext(ctx, "tcp", addr)
		}})

	start := time.Now()
	var wg sync.WaitGroup
	var downAt atomic.Int64 // the first fail fast, ns since start
	var fast, refused, other atomic.Int64
	var lastEnd atomic.Int64
	for range 30 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			_, err := p.Acquire(ctx)
			now := int64(time.Since(start))
			for {
				l := lastEnd.Load()
				if now <= l || lastEnd.CompareAndSwap(l, now) {
					break
				}
			}
			var de *dial.Error
			switch {
			case errors.Is(err, pool.ErrUnavailable):
				fast.Add(1)
				downAt.CompareAndSwap(0, now)
			case errors.As(err, &de):
				refused.Add(1)
			default:
				other.Add(1)
				t.Errorf("unexpected: %v", err)
			}
		})
	}
	wg.Wait()
	end := time.Duration(lastEnd.Load())
	t.Logf("fail fast %d, refused %d, other %d; last Acquire ended %v after the burst; first fail fast at %v",
		fast.Load(), refused.Load(), other.Load(), end, time.Duration(downAt.Load()))
	// At 4 dials/s, five refusals take ~1s; without the gate's say over
	// queued dials, the 30th Acquire waits ~7s for its own refusal.
	assert.Less(t, end, 4*time.Second, "Acquires whose dial had not started fail fast once the upstream is known down")
	require.NotZero(t, downAt.Load(), "the upstream was found down")

	// Dials once the upstream is known down: probes only (~1/s), not
	// DialRate.
	down := start.Add(time.Duration(downAt.Load()))
	n := log.between(down, start.Add(end+time.Second))
	t.Logf("%d dials after the upstream was known down", n)
	assert.LessOrEqual(t, n, 3, "only probes go to an upstream known down")
}

// Close while the upstream is down, a probe dial hangs in a black hole
// (its SYNs dropped) and Acquires that wait for ready are parked at the
// gate or queued behind the probe: Close returns promptly, every Acquire
// ends with ErrClosed at once, and nothing is left running (goleak in
// TestMain).
func TestAdvCloseWhileProbeHangs(t *testing.T) {
	refused := refusingAddr(t)
	hole := faultnet.NewBlackhole(t, "")
	var target atomic.Pointer[string]
	target.Store(&refused)
	var dials atomic.Int64
	dd := &dial.Dialer{}
	p, err := pool.New(pool.Config{Name: "db", MaxConns: 4, DialRate: -1,
		Dial: func(ctx context.Context) (net.Conn, error) {
			dials.Add(1)
			return dd.DialContext(ctx, "tcp", *target.Load())
		}})
	require.NoError(t, err)
	for range 5 {
		_, err := p.Acquire(t.Context())
		require.Error(t, err)
	}
	_, err = p.Acquire(t.Context())
	require.ErrorIs(t, err, pool.ErrUnavailable, "down after 5 refusals")

	hole2 := hole.Addr()
	target.Store(&hole2) // the probes hang from now
	errs := make(chan error, 4)
	for range 4 {
		go func() {
			_, err := p.Acquire(pool.WaitForReady(context.Background())) // AcquireTimeout: 30s
			errs <- err
		}()
	}
	eventually(t, 5*time.Second, "a probe dial hangs", func() bool { return dials.Load() >= 6 && p.Stats().Dialing >= 1 })
	time.Sleep(200 * time.Millisecond)

	start := time.Now()
	require.NoError(t, p.Close())
	took := time.Since(start)
	for range 4 {
		select {
		case err := <-errs:
			require.ErrorIs(t, err, pool.ErrClosed)
		case <-time.After(2 * time.Second):
			t.Fatal("an Acquire that waits for ready outlived Close")
		}
	}
	t.Logf("Close took %v with %d dials made; %+v", took, dials.Load(), p.Stats())
	assert.Less(t, took, time.Second, "Close cancels the hanging probe dial")
}

// Acquires that wait for ready, more of them than MaxConns, some with
// deadlines shorter than the outage: those end at their own deadline with
// its error (not earlier with an *UnavailableError, not later); when the
// upstream comes back on the same port, the others are woken, the first
// MaxConns are served by dials and the rest by the conns released to
// them, all within their deadlines.
func TestAdvWaitForReadyDeadlinesAndRecovery(t *testing.T) {
	port := faultnet.ReservePort(t, "tcp")
	addr := port.Addr()
	dd := &dial.Dialer{}
	p := newPool(t, pool.Config{Name: "db", MaxConns: 2,
		Dial: func(ctx context.Context) (net.Conn, error) { return dd.DialContext(ctx, "tcp", addr) }})
	for range 5 {
		_, err := p.Acquire(t.Context())
		require.Error(t, err)
	}
	_, err := p.Acquire(t.Context())
	require.ErrorIs(t, err, pool.ErrUnavailable, "down after 5 refusals")

	type res struct {
		short bool
		took  time.Duration
		err   error
	}
	out := make(chan res, 10)
	start := time.Now()
	for i := range 10 {
		short := i%3 == 0 // 4 of them
		go func() {
			d := 8 * time.Second
			if short {
				d = 500 * time.Millisecond
			}
			ctx, cancel := context.WithTimeout(pool.WaitForReady(context.Background()), d)
			defer cancel()
			c, err := p.Acquire(ctx)
			if err == nil {
				time.Sleep(100 * time.Millisecond)
				c.Release()
			}
			out <- res{short, time.Since(start), err}
		}()
	}
	time.Sleep(1500 * time.Millisecond)
	ln, err := port.Listen()
	require.NoError(t, err)
	defer ln.Close()
	var sconns []net.Conn
	var smu sync.Mutex
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			smu.Lock()
			sconns = append(sconns, c)
			smu.Unlock()
		}
	}()
	defer func() {
		smu.Lock()
		defer smu.Unlock()
		for _, c := range sconns {
			_ = c.Close()
		}
	}()
	back := time.Since(start)
	var lastOK time.Duration
	for range 10 {
		r := <-out
		if r.short {
			assert.ErrorIs(t, r.err, context.DeadlineExceeded, "a short wait ends at its deadline")
			assert.NotErrorIs(t, r.err, pool.ErrUnavailable)
			assert.GreaterOrEqual(t, r.took, 450*time.Millisecond, "not before its deadline")
			assert.Less(t, r.took, 1400*time.Millisecond, "at its deadline")
			continue
		}
		if assert.NoError(t, r.err, "a long wait is served after the recovery") {
			lastOK = max(lastOK, r.took)
		}
	}
	t.Logf("back at %v, last long wait served at %v; %+v", back, lastOK, p.Stats())
	assert.Less(t, lastOK-back, 4*time.Second, "served within a few probe intervals of the recovery")
}

// A database-like server slower than its callers: it accepts at once but
// sends its greeting 400ms later, and the Dial reads that greeting. Callers
// with 50ms deadlines (and others that cancel) give up long before: their
// Acquires fail with their own context's error, but the dials they
// triggered are the pool's and go on, so the upstream is never taken down
// by the callers' impatience, and the next caller is served by an idle
// conn those dials left.
func TestAdvCallersDeadlinesDoNotTakeUpstreamDown(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var conns sync.WaitGroup
	stopSrv := make(chan struct{})
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Go(func() {
				defer c.Close()
				select {
				case <-time.After(400 * time.Millisecond):
					_, _ = c.Write([]byte("ready\n"))
				case <-stopSrv:
					return
				}
				<-stopSrv
			})
		}
	}()
	defer func() { ln.Close(); close(stopSrv); conns.Wait() }()
	dd := &dial.Dialer{}
	p := newPool(t, pool.Config{Name: "db", MaxConns: 8,
		Dial: func(ctx context.Context) (net.Conn, error) {
			c, err := dd.DialContext(ctx, "tcp", ln.Addr().String())
			if err != nil {
				return nil, err
			}
			if dl, ok := ctx.Deadline(); ok {
				_ = c.SetReadDeadline(dl)
			}
			stop := context.AfterFunc(ctx, func() { _ = c.SetReadDeadline(time.Unix(1, 0)) })
			defer stop()
			buf := make([]byte, 6)
			if _, err := io.ReadFull(c, buf); err != nil {
				c.Close()
				return nil, err
			}
			_ = c.SetReadDeadline(time.Time{})
			return c, nil
		}})
	var wg sync.WaitGroup
	for i := range 24 {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
			if i%3 == 0 {
				time.AfterFunc(10*time.Millisecond, cancel)
			}
			defer cancel()
			c, err := p.Acquire(ctx)
			if err == nil { // a conn a caller before left
				c.Release()
				return
			}
			assert.True(t, errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled), "own ctx: %v", err)
			assert.NotErrorIs(t, err, pool.ErrUnavailable)
		})
		time.Sleep(20 * time.Millisecond)
	}
	wg.Wait()
	eventually(t, 5*time.Second, "the dials the callers triggered end", func() bool { return p.Stats().Dialing == 0 })
	st := p.Stats()
	t.Logf("%+v", st)
	assert.Zero(t, st.DialFailures, "no dial failed")
	assert.Zero(t, st.Unavailable)
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	c, err := p.Acquire(ctx)
	require.NoError(t, err, "served: the upstream is not down")
	c.Release()
}

// A black hole on loopback (the listener's queue full: SYNs dropped) under
// a light load: an open loop of 10 Acquires a second, each with a 300ms
// deadline, so that callers give up long before their dials, which stay
// pending (up to MaxConns) for ConnectTimeout and are taken over by the
// next callers. Three dials pending beyond the cold suspect time (3s) show
// the upstream down: from then, Acquires must fail fast, not wait out
// their deadlines on dials known to hang. Last is then the pool's own hang
// error (a net.Error whose Timeout is true), and the real *dial.Error
// (phase connect) once a hanging dial ends at its connect timeout.
func TestAdvBlackholeLightLoad(t *testing.T) {
	hole := faultnet.NewBlackhole(t, "")
	dd := &dial.Dialer{ConnectTimeout: 5 * time.Second}
	p := newPool(t, pool.Config{Name: "db", MaxConns: 8, DialRate: -1,
		Dial: func(ctx context.Context) (net.Conn, error) { return dd.DialContext(ctx, "tcp", hole.Addr()) }})
	start := time.Now()
	var mu sync.Mutex
	var fast, slow int
	var firstFast time.Duration
	var hang, real *pool.UnavailableError
	var wg sync.WaitGroup
	for time.Since(start) < 7*time.Second {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			t0 := time.Since(start)
			_, err := p.Acquire(ctx)
			mu.Lock()
			defer mu.Unlock()
			var ue *pool.UnavailableError
			switch {
			case err == nil:
				t.Errorf("served from a black hole")
			case errors.As(err, &ue):
				fast++
				if firstFast == 0 {
					firstFast = t0
				}
				var de *dial.Error
				if errors.As(err, &de) {
					real = ue
				} else if hang == nil {
					hang = ue
				}
			case t0 > 4*time.Second:
				slow++
				assert.ErrorIs(t, err, context.DeadlineExceeded)
			}
		})
		time.Sleep(100 * time.Millisecond)
	}
	wg.Wait()
	t.Logf("%d fail fast; from 4s, %d waited their deadline; first fail fast at %v; %+v", fast, slow, firstFast, p.Stats())
	require.NotZero(t, fast, "no Acquire failed fast in a black hole")
	// The slow ones from 4s are the probes' callers: a probe is an Acquire
	// (about 1/s) that waits for its dial.
	assert.LessOrEqual(t, slow, 5, "from 4s, Acquires fail fast but for the probes")
	assert.GreaterOrEqual(t, fast, 20)
	if assert.NotNil(t, hang, "down for hanging dials before any failed") {
		var ne net.Error
		require.ErrorAs(t, hang.Last, &ne, "the hang error")
		assert.True(t, ne.Timeout())
		assert.Contains(t, hang.Error(), "upstream db down")
		assert.NotContains(t, hang.Error(), hole.Addr(), "the pool's text names the pool, not the address")
	}
	if assert.NotNil(t, real, "the real *dial.Error once a hanging dial ended") {
		var de *dial.Error
		require.ErrorAs(t, real, &de)
		assert.Equal(t, dial.PhaseConnect, de.Phase)
		assert.True(t, de.Timeout())
	}
}

// A flapping upstream under concurrent callers (under -race): the port
// flips every 300ms between refusing (its conns reset) and accepting
// (echo), while 16 goroutines acquire (100ms deadlines, every fourth
// waiting for ready), echo a byte and release. Every Acquire ends within
// its deadline (plus slack), the cap holds, and once the upstream stays up
// the pool serves again within a few probe intervals; Close ends it all
// (goleak).
func TestAdvFlappingUpstreamConcurrent(t *testing.T) {
	port := faultnet.ReservePort(t, "tcp")
	addr := port.Addr()
	dd := &dial.Dialer{}
	p, err := pool.New(pool.Config{Name: "db", MaxConns: 4, DialRate: 50,
		Dial: func(ctx context.Context) (net.Conn, error) { return dd.DialContext(ctx, "tcp", addr) }})
	require.NoError(t, err)

	var lnMu sync.Mutex
	var ln net.Listener
	var conns []net.Conn
	var srv sync.WaitGroup
	up := func() {
		l, err := port.Listen()
		require.NoError(t, err)
		lnMu.Lock()
		ln = l
		lnMu.Unlock()
		srv.Go(func() {
			for {
				c, err := l.Accept()
				if err != nil {
					return
				}
				lnMu.Lock()
				conns = append(conns, c)
				lnMu.Unlock()
				srv.Go(func() { _, _ = io.Copy(c, c); c.Close() })
			}
		})
	}
	down := func() {
		lnMu.Lock()
		defer lnMu.Unlock()
		if ln != nil {
			ln.Close()
			ln = nil
		}
		for _, c := range conns {
			_ = c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
		conns = nil
	}
	stop := make(chan struct{})
	var callers sync.WaitGroup
	var ok, failed, unavailable, late atomic.Int64
	for i := range 16 {
		callers.Go(func() {
			buf := make([]byte, 1)
			for {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
				if i%4 == 0 {
					ctx = pool.WaitForReady(ctx)
				}
				t0 := time.Now()
				c, err := p.Acquire(ctx)
				if time.Since(t0) > 600*time.Millisecond {
					late.Add(1)
				}
				cancel()
				if err != nil {
					failed.Add(1)
					if errors.Is(err, pool.ErrUnavailable) {
						unavailable.Add(1)
					}
					time.Sleep(5 * time.Millisecond)
					continue
				}
				if st := p.Stats(); st.Open > 4 {
					t.Errorf("cap broken: %+v", st)
				}
				_ = c.SetDeadline(time.Now().Add(100 * time.Millisecond))
				if _, err := c.Write([]byte{'x'}); err == nil {
					if _, err := io.ReadFull(c, buf); err == nil {
						ok.Add(1)
					}
				}
				c.Release() // destroyed after an I/O error
			}
		})
	}
	for i := range 10 {
		if i%2 == 0 {
			up()
		} else {
			down()
		}
		time.Sleep(300 * time.Millisecond)
	}
	up() // stays up
	back := time.Now()
	eventually(t, 5*time.Second, "served again once the upstream stays up", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
		defer cancel()
		c, err := p.Acquire(ctx)
		if err != nil {
			return false
		}
		c.Release()
		return true
	})
	t.Logf("served again %v after; %d ok, %d failed (%d unavailable), %d late; %+v", time.Since(back),
		ok.Load(), failed.Load(), unavailable.Load(), late.Load(), p.Stats())
	close(stop)
	callers.Wait()
	assert.Zero(t, late.Load(), "every Acquire ended within its deadline")
	assert.NotZero(t, unavailable.Load(), "the refusing phases took it down")
	start := time.Now()
	require.NoError(t, p.Close())
	assert.Less(t, time.Since(start), time.Second)
	st := p.Stats()
	assert.Zero(t, st.Open, "%+v", st)
	down()
	srv.Wait()
}
