package pool_test

import (
	"context"
	"errors"
	"net"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// countingDialer dials real TCP and watches what the client side holds: how
// many of its conns are open at once (independently of the pool's own
// accounting) and when every dial attempt started.
type countingDialer struct {
	dial func(ctx context.Context, network, addr string) (net.Conn, error)
	addr string

	open, maxOpen atomic.Int64
	mu            sync.Mutex
	starts        []time.Time
}

func (d *countingDialer) Dial(ctx context.Context) (net.Conn, error) {
	d.mu.Lock()
	d.starts = append(d.starts, time.Now())
	d.mu.Unlock()
	dial := d.dial
	if dial == nil {
		var nd net.Dialer
		dial = nd.DialContext
	}
	c, err := dial(ctx, "tcp", d.addr)
	if err != nil {
		return nil, err
	}
	n := d.open.Add(1)
	for m := d.maxOpen.Load(); n > m && !d.maxOpen.CompareAndSwap(m, n); m = d.maxOpen.Load() {
	}
	return &countedConn{Conn: c, d: d}, nil
}

// maxPerWindow is the most dial attempts that started within any window.
func (d *countingDialer) maxPerWindow(w time.Duration) int {
	d.mu.Lock()
	defer d.mu.Unlock()
	best, j := 0, 0
	for i := range d.starts {
		for d.starts[i].Sub(d.starts[j]) >= w {
			j++
		}
		best = max(best, i-j+1)
	}
	return best
}

func (d *countingDialer) attempts() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.starts)
}

type countedConn struct {
	net.Conn
	d    *countingDialer
	once sync.Once
}

func (c *countedConn) Close() error {
	c.once.Do(func() { c.d.open.Add(-1) })
	return c.Conn.Close()
}

// SyscallConn keeps the liveness probe working through the wrapper.
func (c *countedConn) SyscallConn() (syscall.RawConn, error) {
	return c.Conn.(syscall.Conn).SyscallConn()
}

// roundTrip acquires a conn and echoes one message through it; a failure
// marks the conn broken (by the wrapper's Read/Write) before Release.
func roundTrip(ctx context.Context, p *pool.Pool, timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	defer c.Release()
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		return err
	}
	buf := make([]byte, 4)
	n := 0
	for n < 4 {
		k, err := c.Read(buf[n:])
		if err != nil {
			return err
		}
		n += k
	}
	if string(buf) != "ping" {
		c.MarkBroken()
		return errors.New("garbled echo")
	}
	return nil // Release clears the deadline
}

// A server that closes idle connections (or a middlebox idle timeout):
// Acquire never returns one of them; the probe catches each. With the probe
// off, the stale conn is handed out — which shows the probe is what saves us.
func TestServerClosesIdleConns(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{IdleClose: 150 * time.Millisecond})
	var dialedBefore int64 // by the pools of earlier iterations
	for _, probe := range []bool{true, false} {
		d := &countingDialer{addr: srv.Addr()}
		cfg := pool.Config{Dial: d.Dial, MaxConns: 4, CheckAfterIdle: 20 * time.Millisecond, HealthCheckPeriod: -1, DialRate: -1}
		if !probe {
			cfg.CheckAfterIdle = -1
		}
		p := newPool(t, cfg)
		ctx := t.Context()
		// Warm 4 conns.
		conns := make([]*pool.Conn, 4)
		for i := range conns {
			c, err := p.Acquire(ctx)
			require.NoError(t, err)
			conns[i] = c
		}
		for _, c := range conns {
			c.Release()
		}
		for round := range 3 {
			// The server has accepted every conn we dialed and closed it.
			eventually(t, 10*time.Second, "the server closes the idle conns", func() bool {
				st := srv.Stats()
				return st.Accepted >= dialedBefore+int64(d.attempts()) && st.Active == 0
			})
			time.Sleep(finCrossesLoopback)
			failures := 0
			for range 4 {
				c, err := p.Acquire(ctx)
				require.NoError(t, err)
				conns = append(conns[:0], c)
				_ = c.SetDeadline(time.Now().Add(time.Second))
				if _, err := c.Write([]byte("x")); err != nil {
					failures++
				} else if _, err := c.Read(make([]byte, 1)); err != nil {
					failures++
				}
				c.Release()
			}
			if probe {
				assert.Zero(t, failures, "round %d: a stale conn was handed out", round)
			} else if round == 0 {
				assert.NotZero(t, failures, "without the probe the stale conn is handed out")
			}
		}
		s := p.Stats()
		if probe {
			assert.GreaterOrEqual(t, s.EvictedDead, int64(3), "dead conns caught on checkout")
			t.Logf("probe on: %+v", s)
		}
		require.NoError(t, p.Close())
		dialedBefore += int64(d.attempts())
	}
}

// An idle conn with bytes nobody asked for (the server's goodbye) is dead.
func TestProbeUnexpectedBytes(t *testing.T) {
	saidBye := make(chan struct{})
	srv := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
		buf := make([]byte, 4)
		if _, err := c.Read(buf); err != nil {
			return
		}
		_, _ = c.Write(buf)
		_, _ = c.Write([]byte("bye: server shutting down"))
		close(saidBye)
		_, _ = c.Read(buf) // hold until the client closes
	}})
	d := &countingDialer{addr: srv.Addr()}
	p := newPool(t, pool.Config{Dial: d.Dial, CheckAfterIdle: time.Millisecond})
	require.NoError(t, roundTrip(t.Context(), p, time.Second))
	<-saidBye
	time.Sleep(finCrossesLoopback)
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	c.Release()
	s := p.Stats()
	assert.Equal(t, int64(1), s.EvictedDead)
	assert.Equal(t, int64(2), s.Dialed)
}

// Fault driver for the flap tests: workers round-trip through the pool
// while a sampler checks the cap on both sides.
type load struct {
	ok, fail atomic.Int64
	lastOK   atomic.Int64 // unix nanos of the start of the latest successful round trip
	maxOpen  atomic.Int64 // the pool's Stats().Open high-water mark
	stop     context.CancelFunc
	wg       sync.WaitGroup
}

func startLoad(t *testing.T, p *pool.Pool, workers int) *load {
	ctx, cancel := context.WithCancel(t.Context())
	l := &load{stop: cancel}
	for range workers {
		l.wg.Add(1)
		go func() {
			defer l.wg.Done()
			for ctx.Err() == nil {
				began := time.Now().UnixNano()
				if err := roundTrip(ctx, p, 300*time.Millisecond); err != nil {
					l.fail.Add(1)
					time.Sleep(5 * time.Millisecond)
					continue
				}
				l.ok.Add(1)
				for last := l.lastOK.Load(); began > last && !l.lastOK.CompareAndSwap(last, began); last = l.lastOK.Load() {
				}
			}
		}()
	}
	l.wg.Add(1)
	go func() {
		defer l.wg.Done()
		tk := time.NewTicker(time.Millisecond)
		defer tk.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tk.C:
				if o := int64(p.Stats().Open); o > l.maxOpen.Load() {
					l.maxOpen.Store(o)
				}
			}
		}
	}()
	return l
}

func (l *load) end() { l.stop(); l.wg.Wait() }

// waitServing waits for a round trip that started after since and
// succeeded; it returns how long after since it was seen (5ms resolution).
func (l *load) waitServing(t *testing.T, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) {
		if last := l.lastOK.Load(); last > since.UnixNano() {
			return time.Since(since)
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("not serving %v after recovery", limit)
	return 0
}

// A flap: every connection is reset, again and again. The pool never holds
// more than MaxConns (pool accounting, client sockets, server count), opens
// new conns at no more than DialRate, and serves again at once.
func TestFlapResetStaysWithinCapAndRate(t *testing.T) {
	const maxConns, rate, burst = 6, 20, 2 // burst = ceil(20/10)
	srv := faultnet.Start(t, faultnet.Config{})
	d := &countingDialer{addr: srv.Addr()}
	start := time.Now()
	p := newPool(t, pool.Config{Dial: d.Dial, MaxConns: maxConns, DialRate: rate, CheckAfterIdle: 5 * time.Millisecond})
	l := startLoad(t, p, 4*maxConns)
	time.Sleep(200 * time.Millisecond)
	for range 6 {
		srv.DropAll()
		time.Sleep(200 * time.Millisecond)
	}
	last := time.Now()
	srv.DropAll()
	took := l.waitServing(t, last, 10*time.Second)
	l.end()
	attempts, elapsed := d.attempts(), time.Since(start)

	st := srv.Stats()
	t.Logf("ok=%d fail=%d dials=%d accepted=%d serverMaxActive=%d clientMaxOpen=%d poolMaxOpen=%d recovered in %v; %+v",
		l.ok.Load(), l.fail.Load(), d.attempts(), st.Accepted, st.MaxActive, d.maxOpen.Load(), l.maxOpen.Load(), took, p.Stats())
	assert.LessOrEqual(t, l.maxOpen.Load(), int64(maxConns), "pool Open over the cap")
	assert.LessOrEqual(t, d.maxOpen.Load(), int64(maxConns), "client sockets over the cap")
	assert.LessOrEqual(t, st.MaxActive, int64(maxConns), "server saw more than the cap")
	assert.LessOrEqual(t, float64(attempts), rate*elapsed.Seconds()+burst, "dial rate over the whole run")
	// A dial is recorded a moment after the limiter let it go, so a window
	// may catch one more than the bucket allowed in it.
	assert.LessOrEqual(t, d.maxPerWindow(time.Second), rate+burst+1, "dial rate in some 1s window")
	assert.Greater(t, d.attempts(), 3*maxConns, "the flaps forced re-dials")
	// Typically a few ms; the bound only tells recovery from a hang, which
	// would last the 30s of DialTimeout and AcquireTimeout.
	assert.Less(t, took, 5*time.Second, "serving again soon after the last flap")
	assert.Positive(t, p.Stats().EvictedBroken+p.Stats().EvictedDead)
}

// A total outage (connects refused, open conns reset) and then recovery:
// callers fail fast instead of hanging, dials stay at the rate, and the pool
// serves within a second of the server coming back.
func TestOutageThenRecovery(t *testing.T) {
	const maxConns, rate, burst = 4, 20, 2
	srv := faultnet.Start(t, faultnet.Config{})
	d := &countingDialer{addr: srv.Addr()}
	p := newPool(t, pool.Config{Dial: d.Dial, MaxConns: maxConns, DialRate: rate})
	l := startLoad(t, p, 12)
	time.Sleep(200 * time.Millisecond)
	before := d.attempts()
	require.NoError(t, srv.Down())
	downAt := time.Now()
	time.Sleep(time.Second)
	failsDuringOutage := l.fail.Load()
	duringOutage := d.attempts() - before
	outage := time.Since(downAt) // measured, not assumed: the sleep may overrun
	require.NoError(t, srv.Up())
	upAt := time.Now()
	took := l.waitServing(t, upAt, 10*time.Second)
	l.end()
	t.Logf("outage: %d dial attempts in %v, %d failed round trips; recovered in %v; %+v",
		duringOutage, outage, failsDuringOutage, took, p.Stats())
	// The bucket may be full when the outage starts (burst), and a dial let
	// go just before it may be recorded just after (+1).
	assert.LessOrEqual(t, float64(duringOutage), rate*outage.Seconds()+burst+1, "dials during the outage")
	assert.Positive(t, p.Stats().DialFailures)
	// Typically a few ms; the bound only tells recovery from a hang (30s).
	assert.Less(t, took, 5*time.Second, "serving soon after Up")
	assert.LessOrEqual(t, l.maxOpen.Load(), int64(maxConns))
	assert.LessOrEqual(t, srv.Stats().MaxActive, int64(maxConns))
}

// A silent vanish (every packet dropped, no FIN, no RST) in a network
// namespace: callers' deadlines break their conns, dials hang until
// DialTimeout, and the pool still never holds more than MaxConns; after the
// network returns it serves again within a second.
func TestVanishStaysWithinCap(t *testing.T) {
	ns := faultnet.NewNetns(t)
	srv := ns.Start(t, faultnet.Config{})
	const maxConns = 4
	d := &countingDialer{addr: srv.Addr(), dial: ns.DialContext}
	p := newPool(t, pool.Config{Dial: d.Dial, MaxConns: maxConns, DialRate: 20, DialTimeout: 400 * time.Millisecond, CheckAfterIdle: 5 * time.Millisecond})
	l := startLoad(t, p, 12)
	time.Sleep(200 * time.Millisecond)
	require.NoError(t, ns.Vanish(srv.Port()))
	time.Sleep(1500 * time.Millisecond)
	okBefore := l.ok.Load()
	time.Sleep(300 * time.Millisecond)
	assert.Equal(t, okBefore, l.ok.Load(), "nothing succeeds while the peer has vanished")
	serverPeak := srv.Stats().MaxActive
	require.NoError(t, ns.Flush())
	back := time.Now()
	took := l.waitServing(t, back, 10*time.Second)
	l.end()
	t.Logf("vanish: serverMaxActive before recovery=%d after=%d clientMaxOpen=%d poolMaxOpen=%d recovered in %v; %+v",
		serverPeak, srv.Stats().MaxActive, d.maxOpen.Load(), l.maxOpen.Load(), took, p.Stats())
	assert.LessOrEqual(t, l.maxOpen.Load(), int64(maxConns), "pool Open over the cap")
	assert.LessOrEqual(t, d.maxOpen.Load(), int64(maxConns), "client sockets over the cap")
	assert.LessOrEqual(t, serverPeak, int64(maxConns), "server count during the vanish")
	// Dials in flight during the vanish end at DialTimeout (400ms); the
	// bound only tells recovery from a hang.
	assert.Less(t, took, 5*time.Second, "serving soon after the network's return")
	assert.Positive(t, p.Stats().DialFailures, "dials during the vanish timed out")
}

// Close while many goroutines hammer Acquire/Release: everything ends, no
// goroutine (goleak in TestMain) and no file descriptor is left behind.
func TestCloseUnderLoadLeaksNothing(t *testing.T) {
	if runtime.GOOS != "linux" {
		t.Skip("fd count via /proc/self/fd")
	}
	srv := faultnet.Start(t, faultnet.Config{})
	// Sockets only: io.Copy between TCP conns (the echo server) splices
	// through pipes that net keeps in a pool, which are not ours to count.
	fds := func() int {
		e, _ := os.ReadDir("/proc/self/fd")
		n := 0
		for _, f := range e {
			if l, _ := os.Readlink("/proc/self/fd/" + f.Name()); strings.HasPrefix(l, "socket:") {
				n++
			}
		}
		return n
	}
	base := fds()
	d := &countingDialer{addr: srv.Addr()}
	p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 8, DialRate: -1})
	require.NoError(t, err)
	var wg sync.WaitGroup
	var closedErrs atomic.Int64
	for range 32 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				err := roundTrip(context.Background(), p, 2*time.Second)
				if errors.Is(err, pool.ErrClosed) {
					closedErrs.Add(1)
					return
				}
			}
		}()
	}
	time.Sleep(300 * time.Millisecond)
	require.Positive(t, p.Stats().AcquireCount)
	require.NoError(t, p.Close())
	wg.Wait()
	assert.Equal(t, int64(32), closedErrs.Load(), "every worker saw ErrClosed")
	s := p.Stats()
	assert.Zero(t, s.Open)
	assert.Zero(t, d.open.Load(), "every client socket closed")
	// The server's side closes asynchronously.
	eventually(t, 10*time.Second, "socket descriptors back to the baseline", func() bool { return fds() <= base })
	assert.Zero(t, srv.Stats().Active, "the server saw every conn closed")
}

// Idle conns reset by a flap (RST while idle) are caught by the probe: the
// next Acquires get fresh, working conns.
func TestProbeAfterResetWhileIdle(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	d := &countingDialer{addr: srv.Addr()}
	p := newPool(t, pool.Config{Dial: d.Dial, MaxConns: 3, CheckAfterIdle: 10 * time.Millisecond, DialRate: -1})
	conns := make([]*pool.Conn, 3)
	for i := range conns {
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		echo(t, c, "warm") // the server has accepted it: DropAll will see it
		conns[i] = c
	}
	for _, c := range conns {
		c.Release()
	}
	srv.DropAll() // RST on each, sent by the time DropAll returns
	time.Sleep(finCrossesLoopback)
	for range 3 {
		require.NoError(t, roundTrip(t.Context(), p, time.Second), "a stale conn was handed out")
	}
	s := p.Stats()
	assert.Equal(t, int64(3), s.EvictedDead, "%+v", s)
	assert.Zero(t, s.EvictedBroken, "no caller hit a dead conn")
}

// The background sweep probes idle conns too: after the server closes them,
// they are replaced (MinIdleConns) before any Acquire meets them.
func TestSweepReplacesDeadIdleConns(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{IdleClose: 100 * time.Millisecond})
	d := &countingDialer{addr: srv.Addr()}
	p := newPool(t, pool.Config{Dial: d.Dial, MaxConns: 4, MinIdleConns: 2, DialRate: -1,
		HealthCheckPeriod: 50 * time.Millisecond, CheckAfterIdle: 20 * time.Millisecond})
	eventually(t, 10*time.Second, "two generations found dead and replaced", func() bool {
		s := p.Stats()
		return s.EvictedDead >= 4 && s.Dialed >= 6 // a replacement may still be dialing when the 4th is found
	})
	s := p.Stats()
	assert.GreaterOrEqual(t, s.EvictedDead, int64(4), "two generations of idle conns found dead by the sweep: %+v", s)
	assert.Zero(t, s.AcquireCount, "no Acquire involved")
	assert.LessOrEqual(t, s.Open, 4)
	assert.GreaterOrEqual(t, s.Dialed, int64(6), "replacements dialed")
}
