package pool_test

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/internal/upstream"
	"github.com/lifeline-go/lifeline/pool"
	"github.com/lifeline-go/lifeline/transport"
)

// failFastOff turns the feature off in these tests, to see them fail
// without it: LIFELINE_TEST_NO_FAILFAST=1 go test -run TestFailFast ./pool
var failFastOff = os.Getenv("LIFELINE_TEST_NO_FAILFAST") != ""

// The gate's state machine, on a fake clock: 5 dial failures in a row take
// the upstream down; then an Acquire that needs a dial fails at once with
// an *UnavailableError that carries the last dial error, while an idle conn
// is still served; a probe goes when due; an Acquire that waits for ready
// becomes the next probe and gets the conn of the dial that succeeds, which
// re-opens the pool for everyone.
func TestFailFastStateMachine(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 3, DialRate: -1, Name: "db", DisableFailFast: failFastOff})
		require.NoError(t, err)
		defer p.Close()

		held, err := p.Acquire(t.Context())
		require.NoError(t, err)
		d.setFail(errBoom)
		for i := range 5 {
			_, err := p.Acquire(t.Context())
			require.ErrorIs(t, err, errBoom, "failure %d: the dial's own error", i+1)
			require.NotErrorIs(t, err, pool.ErrUnavailable)
		}
		require.Equal(t, int64(6), d.dials.Load())

		_, err = p.Acquire(t.Context())
		var ue *pool.UnavailableError
		require.ErrorAs(t, err, &ue, "the sixth Acquire fails fast")
		assert.Equal(t, "db", ue.Upstream)
		assert.Equal(t, "down", ue.Reason)
		assert.ErrorIs(t, err, pool.ErrUnavailable)
		assert.ErrorIs(t, err, errBoom, "Last is the last dial error")
		var tue *transport.UnavailableError
		assert.ErrorAs(t, err, &tue, "one type under both names")
		assert.Equal(t, int64(6), d.dials.Load(), "no dial for a fail fast")
		assert.Contains(t, err.Error(), "upstream db down")

		held.Release() // an idle conn is still served while down
		c, err := p.Acquire(t.Context())
		require.NoError(t, err, "an idle conn is served while the upstream is down")
		assert.Same(t, held, c)

		// A probe when due (about 1s ± 20%), then fail fast again.
		time.Sleep(1300 * time.Millisecond)
		_, err = p.Acquire(t.Context())
		require.ErrorIs(t, err, errBoom, "the probe dialed")
		require.NotErrorIs(t, err, pool.ErrUnavailable)
		assert.Equal(t, int64(7), d.dials.Load())
		_, err = p.Acquire(t.Context())
		require.ErrorIs(t, err, pool.ErrUnavailable)
		assert.Equal(t, int64(7), d.dials.Load())

		// An Acquire that waits for ready, while the upstream comes back.
		ctx, cancel := context.WithTimeout(pool.WaitForReady(t.Context()), 10*time.Second)
		defer cancel()
		type res struct {
			c   *pool.Conn
			err error
			at  time.Time
		}
		got := make(chan res, 1)
		start := time.Now()
		go func() {
			c, err := p.Acquire(ctx)
			got <- res{c, err, time.Now()}
		}()
		synctest.Wait()
		assert.Len(t, got, 0, "waits for ready")
		assert.Equal(t, int64(7), d.dials.Load(), "and does not dial before its probe is due")
		d.setFail(nil)
		r := <-got
		require.NoError(t, r.err)
		assert.Less(t, r.at.Sub(start), 2*time.Second, "served by the next probe")
		assert.Equal(t, int64(8), d.dials.Load())
		r.c.Release()

		// Ready again: a new dial for everyone.
		c2, err := p.Acquire(t.Context())
		require.NoError(t, err)
		assert.Equal(t, int64(8), d.dials.Load(), "the idle conn first")
		c3, err := p.Acquire(t.Context())
		require.NoError(t, err, "the pool is open again")
		assert.Equal(t, int64(9), d.dials.Load(), "dialed")
		c2.Release()
		c3.Release()
		c.Release()
		s := p.Stats()
		assert.Equal(t, int64(2), s.Unavailable, "%+v", s)
	})
}

// Reset (a network change, a failover) forgets that the upstream was down.
func TestFailFastReset(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		d.setFail(errBoom)
		p, err := pool.New(pool.Config{Dial: d.Dial, DialRate: -1})
		require.NoError(t, err)
		defer p.Close()
		for range 5 {
			_, _ = p.Acquire(t.Context())
		}
		_, err = p.Acquire(t.Context())
		require.ErrorIs(t, err, pool.ErrUnavailable)
		p.Reset()
		d.setFail(nil)
		c, err := p.Acquire(t.Context())
		require.NoError(t, err, "dials again after Reset")
		c.Release()
		assert.Equal(t, int64(6), d.dials.Load())
	})
}

// A caller that waits for ready stays queued while it waits at the gate: a
// conn released meanwhile is handed to it at once, before any probe.
func TestFailFastWaitForReadyGetsReleasedConn(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 2, DialRate: -1})
		require.NoError(t, err)
		defer p.Close()
		held, err := p.Acquire(t.Context())
		require.NoError(t, err)
		d.setFail(errBoom)
		for range 5 {
			_, _ = p.Acquire(t.Context())
		}
		got := make(chan *pool.Conn, 2)
		for range 2 {
			go func() {
				c, err := p.Acquire(pool.WaitForReady(t.Context()))
				assert.NoError(t, err)
				got <- c
			}()
		}
		synctest.Wait()
		require.Len(t, got, 0, "both wait for ready")
		assert.Equal(t, 2, p.Stats().Waiting, "queued while they wait at the gate")
		start := time.Now()
		held.Release()
		synctest.Wait()
		require.Len(t, got, 1, "the released conn went to a waiter at once")
		c := <-got
		assert.Same(t, held, c)
		assert.Zero(t, time.Since(start))
		assert.Equal(t, int64(6), d.dials.Load(), "no dial for it")
		// The other one: served by the probe that finds the upstream back.
		d.setFail(nil)
		c2 := <-got
		assert.Less(t, time.Since(start), 2*time.Second)
		c.Release()
		c2.Release()
	})
}

// A caller that waits for ready gives up at its own deadline, and at Close.
func TestFailFastWaitForReadyEnds(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		d.setFail(errBoom)
		p, err := pool.New(pool.Config{Dial: d.Dial, DialRate: -1, AcquireTimeout: 5 * time.Second})
		require.NoError(t, err)
		for range 5 {
			_, err := p.Acquire(t.Context())
			require.ErrorIs(t, err, errBoom)
		}
		_, err = p.Acquire(t.Context())
		require.ErrorIs(t, err, pool.ErrUnavailable)

		// Its deadline: the probes fail meanwhile.
		ctx, cancel := context.WithTimeout(pool.WaitForReady(t.Context()), 3*time.Second)
		start := time.Now()
		_, err = p.Acquire(ctx)
		cancel()
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Equal(t, 3*time.Second, time.Since(start))

		// AcquireTimeout, when the context has no deadline.
		start = time.Now()
		_, err = p.Acquire(pool.WaitForReady(t.Context()))
		require.ErrorIs(t, err, context.DeadlineExceeded)
		assert.Contains(t, err.Error(), "AcquireTimeout")
		assert.Equal(t, 5*time.Second, time.Since(start))

		// Close.
		errc := make(chan error, 1)
		go func() {
			_, err := p.Acquire(pool.WaitForReady(t.Context()))
			errc <- err
		}()
		synctest.Wait()
		require.NoError(t, p.Close())
		require.ErrorIs(t, <-errc, pool.ErrClosed)
	})
}

// DisableFailFast keeps today's behaviour: every Acquire dials.
func TestFailFastDisabled(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		d.setFail(errBoom)
		p, err := pool.New(pool.Config{Dial: d.Dial, DialRate: -1, DisableFailFast: true})
		require.NoError(t, err)
		defer p.Close()
		for range 20 {
			_, err := p.Acquire(t.Context())
			require.ErrorIs(t, err, errBoom)
			require.NotErrorIs(t, err, pool.ErrUnavailable)
		}
		assert.Equal(t, int64(20), d.dials.Load())
	})
}

// Dials that hang (a black hole) on a fake clock: once 3 have been pending
// for over the suspect time (upstream.ColdSuspectAfter, 3s, for an
// upstream never reached yet), the upstream is down; the waiters no dial is for (at
// the cap) and new Acquires fail at once, with the hang as Last; the
// waiters the hung dials are for wait for their dials (DialTimeout).
func TestFailFastHangingDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		d := pipeDialer{gate: make(chan struct{})}
		p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 3, DialRate: -1, DialTimeout: 5 * time.Second})
		require.NoError(t, err)
		defer p.Close()
		errs := make(chan error, 6)
		for range 6 {
			go func() {
				_, err := p.Acquire(t.Context())
				errs <- err
			}()
		}
		synctest.Wait()
		require.Equal(t, int64(3), d.dials.Load(), "a dial per place")
		time.Sleep(3500 * time.Millisecond)
		assert.Len(t, errs, 0, "all wait")

		start := time.Now()
		_, err = p.Acquire(t.Context())
		var ue *pool.UnavailableError
		require.ErrorAs(t, err, &ue, "a new Acquire fails fast")
		assert.Zero(t, time.Since(start))
		var te interface{ Timeout() bool }
		require.ErrorAs(t, ue.Last, &te)
		assert.True(t, te.Timeout(), "Last is the hang: %v", ue.Last)
		synctest.Wait()
		require.Len(t, errs, 3, "the waiters at the cap failed fast with it")
		for range 3 {
			require.ErrorIs(t, <-errs, pool.ErrUnavailable)
		}
		assert.Equal(t, 3, p.Stats().Waiting, "the waiters of the hung dials wait for them")
		time.Sleep(2 * time.Second) // DialTimeout
		synctest.Wait()
		require.Len(t, errs, 3)
		for range 3 {
			err := <-errs
			require.ErrorIs(t, err, context.DeadlineExceeded)
			require.NotErrorIs(t, err, pool.ErrUnavailable)
		}
		assert.Equal(t, int64(3), d.dials.Load(), "no other dial")
	})
}

// The waiters that were there when the upstream went down keep the dials
// in flight for them, even when everything happens in one tick of the
// clock (CI, stop 27: the Acquire whose own dial took the upstream down
// was failed fast instead of given its dial's error; a synctest bubble
// makes the tie certain). Dials fail one at a time here: the fifth
// failure takes the upstream down while the other waiter's dial is still
// out.
func TestFailFastWaitersOfTheOutageKeepTheirDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		release := make(chan struct{})
		var dials atomic.Int64
		dial := func(ctx context.Context) (net.Conn, error) {
			if dials.Add(1) > upstream.FailureThreshold-1 {
				select {
				case <-release:
				case <-ctx.Done():
					return nil, ctx.Err()
				}
			}
			return nil, errBoom
		}
		p, err := pool.New(pool.Config{Dial: dial, DialRate: -1, MaxConns: 4})
		require.NoError(t, err)
		defer p.Close()
		for range upstream.FailureThreshold - 1 {
			_, err := p.Acquire(t.Context())
			require.ErrorIs(t, err, errBoom)
		}
		errs := make([]chan error, 2)
		for i := range errs {
			errs[i] = make(chan error, 1)
			go func() {
				_, err := p.Acquire(t.Context())
				errs[i] <- err
			}()
			synctest.Wait() // queued in this order, each with its dial out
		}
		release <- struct{}{} // the fifth failure: down
		synctest.Wait()
		require.Len(t, errs[1], 0, "the second waiter still has a dial out for it")
		err = <-errs[0]
		require.ErrorIs(t, err, errBoom)
		require.NotErrorIs(t, err, pool.ErrUnavailable, "the oldest waiter gets the failure")
		release <- struct{}{}
		err = <-errs[1]
		require.ErrorIs(t, err, errBoom)
		require.NotErrorIs(t, err, pool.ErrUnavailable, "its dial's error, not a fail fast")
		assert.Equal(t, int64(0), p.Stats().Unavailable)
		_, err = p.Acquire(t.Context())
		require.ErrorIs(t, err, pool.ErrUnavailable, "a later Acquire fails fast")
		assert.Equal(t, int64(upstream.FailureThreshold+1), dials.Load())
	})
}

// lifeline.throttled, lifeline.upstream.down and lifeline.upstream.probes,
// with the pool's name as the bounded server.address; the span of a fail
// fast says why nothing was tried.
func TestFailFastTelemetry(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		reader := sdkmetric.NewManualReader()
		mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
		rec := tracetest.NewSpanRecorder()
		tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
		var d pipeDialer
		d.setFail(errBoom)
		p, err := pool.New(pool.Config{Dial: d.Dial, DialRate: -1, Name: "cache", MeterProvider: mp, TracerProvider: tp})
		require.NoError(t, err)
		defer p.Close()
		// A second pool on the same provider: one callback observes both.
		p2, err := pool.New(pool.Config{Dial: d.Dial, MeterProvider: mp})
		require.NoError(t, err)
		defer p2.Close()

		for range 7 {
			_, _ = p.Acquire(t.Context())
		}
		m := collect(t, reader)
		assert.Equal(t, map[string]int64{"cache": 1, "pool": 0}, gauge(m, "lifeline.upstream.down"))
		assert.Equal(t, int64(2), sumWith(m, "lifeline.throttled", "lifeline.reason", "unavailable", "server.address", "cache"))

		time.Sleep(1300 * time.Millisecond)
		d.setFail(nil)
		c, err := p.Acquire(t.Context()) // the probe
		require.NoError(t, err)
		c.Release()
		m = collect(t, reader)
		assert.Equal(t, map[string]int64{"cache": 0, "pool": 0}, gauge(m, "lifeline.upstream.down"))
		assert.Equal(t, int64(1), sumWith(m, "lifeline.upstream.probes", "lifeline.outcome", "ok"))

		var notAttempted int
		for _, s := range rec.Ended() {
			if v, ok := attr(s.Attributes(), "lifeline.not_attempted"); ok {
				assert.Equal(t, "unavailable", v.AsString())
				et, _ := attr(s.Attributes(), "error.type")
				assert.Equal(t, "unavailable", et.AsString())
				notAttempted++
			}
		}
		assert.Equal(t, 2, notAttempted)

		require.NoError(t, p.Close())
		m = collect(t, reader)
		assert.Equal(t, map[string]int64{"pool": 0}, gauge(m, "lifeline.upstream.down"), "a closed pool is no longer observed")
	})
}

func collect(t *testing.T, r *sdkmetric.ManualReader) metricdata.ResourceMetrics {
	t.Helper()
	var rm metricdata.ResourceMetrics
	require.NoError(t, r.Collect(context.Background(), &rm))
	return rm
}

func gauge(rm metricdata.ResourceMetrics, name string) map[string]int64 {
	out := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if g, ok := m.Data.(metricdata.Gauge[int64]); ok && m.Name == name {
				for _, dp := range g.DataPoints {
					v, _ := dp.Attributes.Value("server.address")
					out[v.AsString()] = dp.Value
				}
			}
		}
	}
	return out
}

// sumWith is the counter's value at the points with the attributes kv
// (key, value, key, value...).
func sumWith(rm metricdata.ResourceMetrics, name string, kv ...string) int64 {
	var n int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			s, ok := m.Data.(metricdata.Sum[int64])
			if !ok || m.Name != name {
				continue
			}
		points:
			for _, dp := range s.DataPoints {
				for i := 0; i+1 < len(kv); i += 2 {
					if v, _ := dp.Attributes.Value(attribute.Key(kv[i])); v.AsString() != kv[i+1] {
						continue points
					}
				}
				n += dp.Value
			}
		}
	}
	return n
}

// refusingAddr is a loopback address nothing listens on: connects are
// refused at once. Its port stays reserved until the test ends, so no
// other test can take it; a test whose server comes back on the port uses
// faultnet.ReservePort.
func refusingAddr(t *testing.T) string {
	t.Helper()
	return faultnet.RefusedAddr(t, "tcp")
}

// A refusing loopback port: down after 5 refused dials, then Acquires fail
// in microseconds with an *UnavailableError whose Last is the *dial.Error
// of the refusal; probes go about once a second; when a listener comes
// back on the port, the next probe re-opens the pool.
func TestFailFastRefusingPort(t *testing.T) {
	port := faultnet.ReservePort(t, "tcp")
	addr := port.Addr()
	var dials atomic.Int64
	dd := &dial.Dialer{}
	p := newPool(t, pool.Config{Name: "svc", DisableFailFast: failFastOff,
		Dial: func(ctx context.Context) (net.Conn, error) {
			dials.Add(1)
			return dd.DialContext(ctx, "tcp", addr)
		}})
	for range 5 {
		_, err := p.Acquire(t.Context())
		var de *dial.Error
		require.ErrorAs(t, err, &de, "a refused dial")
	}
	// For 3s, an Acquire every 10ms: fail fast but for the probes.
	var fast []time.Duration
	until := time.Now().Add(3 * time.Second)
	for time.Now().Before(until) {
		start := time.Now()
		_, err := p.Acquire(t.Context())
		took := time.Since(start)
		require.Error(t, err)
		var ue *pool.UnavailableError
		if errors.As(err, &ue) {
			fast = append(fast, took)
			var de *dial.Error
			require.ErrorAs(t, err, &de, "the refusal inside")
			assert.Equal(t, dial.PhaseConnect, de.Phase)
		}
		time.Sleep(10 * time.Millisecond)
	}
	probes := dials.Load() - 5
	require.NotEmpty(t, fast, "no Acquire failed fast")
	slices.Sort(fast)
	t.Logf("%d fail fast, p50 %v p99 %v max %v; %d probes in 3s", len(fast),
		fast[len(fast)/2], fast[len(fast)*99/100], fast[len(fast)-1], probes)
	assert.Greater(t, len(fast), 100, "nearly every Acquire failed fast")
	assert.Less(t, fast[len(fast)*99/100], 50*time.Millisecond, "fail fast takes microseconds; the bound is for a loaded machine")
	assert.LessOrEqual(t, probes, int64(4), "probes paced about 1/s (±20%)")
	assert.GreaterOrEqual(t, probes, int64(2), "probes go")

	// The upstream comes back on the same port.
	ln, err := port.Listen()
	require.NoError(t, err)
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	back := time.Now()
	var c *pool.Conn
	for c == nil {
		require.Less(t, time.Since(back), 5*time.Second, "re-opened by the next probe")
		c, _ = p.Acquire(t.Context()) // fails fast until the probe
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("re-opened %v after the listener came back", time.Since(back))
	c2, err := p.Acquire(t.Context())
	require.NoError(t, err, "open for everyone")
	c.Release()
	c2.Release()
}

// A black hole (every packet to the upstream dropped, in the test's own
// network namespace) under an open loop of 20 Acquire+echo a second with
// 10s deadlines: from about 2s after the fault, Acquires fail fast; an
// Acquire that waits for ready, started in the outage, succeeds after it;
// after the fault the pool serves again.
func TestFailFastBlackhole(t *testing.T) {
	ns := faultnet.NewNetns(t)
	srv := ns.Start(t, faultnet.Config{})
	dd := &dial.Dialer{DialFunc: ns.DialContext}
	p := newPool(t, pool.Config{DisableFailFast: failFastOff, MaxConns: 8,
		Dial: func(ctx context.Context) (net.Conn, error) { return dd.DialContext(ctx, "tcp", srv.Addr()) }})

	type outcome struct {
		start, end time.Time
		wfr        bool
		err        error
	}
	var mu sync.Mutex
	var outs []outcome
	var wg sync.WaitGroup
	call := func(wfr bool) {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()
			if wfr {
				ctx = pool.WaitForReady(ctx)
			}
			o := outcome{start: time.Now(), wfr: wfr}
			o.err = acquireEcho(ctx, p, time.Second)
			o.end = time.Now()
			mu.Lock()
			outs = append(outs, o)
			mu.Unlock()
		})
	}
	run := func(d time.Duration) {
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
			call(false)
		}
	}
	run(time.Second)
	require.NoError(t, ns.Vanish(srv.Port()))
	faultAt := time.Now()
	wfrStarted := make(chan struct{})
	go func() {
		defer close(wfrStarted)
		time.Sleep(3 * time.Second)
		for range 3 {
			call(true)
		}
	}()
	run(6 * time.Second)
	require.NoError(t, ns.Flush())
	endAt := time.Now()
	run(4 * time.Second)
	<-wfrStarted
	wg.Wait()

	var fast []time.Duration
	var outage, slow, wfrOK, wfr, after, afterOK int
	for _, o := range outs {
		took := o.end.Sub(o.start)
		switch {
		case o.wfr:
			wfr++
			if o.err == nil {
				wfrOK++
			} else {
				t.Logf("wait-for-ready call: %v", o.err)
			}
		case !o.start.Before(faultAt.Add(2*time.Second)) && o.start.Before(endAt):
			outage++
			if errors.Is(o.err, pool.ErrUnavailable) {
				fast = append(fast, took)
			} else if took > 100*time.Millisecond {
				slow++
			}
		case !o.start.Before(endAt.Add(1500 * time.Millisecond)):
			after++
			if o.err == nil {
				afterOK++
			}
		}
	}
	slices.Sort(fast)
	require.NotEmpty(t, fast, "no Acquire failed fast in the outage")
	t.Logf("outage from 2s: %d calls, %d failed fast (p50 %v, p99 %v), %d slow; after: %d/%d ok; wait for ready %d/%d ok; %+v",
		outage, len(fast), fast[len(fast)/2], fast[len(fast)*99/100], slow, afterOK, after, wfrOK, wfr, p.Stats())
	assert.GreaterOrEqual(t, len(fast), outage*8/10, "nearly every Acquire fails fast from 2s after the fault")
	assert.Less(t, fast[len(fast)*99/100], 100*time.Millisecond, "fail fast in milliseconds; the bound is for a loaded machine")
	assert.Equal(t, wfr, wfrOK, "the calls that wait for ready succeed after the outage")
	assert.GreaterOrEqual(t, afterOK*100, after*99, "from 1.5s after the fault ends, the calls succeed")
}

// acquireEcho acquires a conn within ctx and echoes one message through it
// within ioTimeout; a conn that fails is destroyed.
func acquireEcho(ctx context.Context, p *pool.Pool, ioTimeout time.Duration) error {
	c, err := p.Acquire(ctx)
	if err != nil {
		return err
	}
	_ = c.SetDeadline(time.Now().Add(ioTimeout))
	buf := make([]byte, 4)
	if _, err = c.Write([]byte("ping")); err == nil {
		_, err = io.ReadFull(c, buf)
	}
	if err != nil {
		_ = c.Close()
		return err
	}
	c.Release()
	return nil
}

// Fail fast under churn (run with -race): the upstream flaps while callers
// acquire — half of them waiting for ready, with short deadlines — release,
// destroy, and the pool is Reset; the cap holds, every Acquire ends, the
// queue is empty at the end and Close leaves nothing behind (goleak).
func TestFailFastChurn(t *testing.T) {
	var d pipeDialer
	const maxConns = 4
	p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: maxConns, DialRate: -1})
	require.NoError(t, err)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	var ok, fast, other atomic.Int64
	for g := range 16 {
		wg.Go(func() {
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				ctx, cancel := context.WithTimeout(t.Context(), time.Duration(1+i%20)*time.Millisecond)
				if g%2 == 0 {
					ctx = pool.WaitForReady(ctx)
				}
				c, err := p.Acquire(ctx)
				cancel()
				switch {
				case err == nil:
					ok.Add(1)
					if i%3 == 0 {
						_ = c.Close()
					} else {
						c.Release()
					}
				case errors.Is(err, pool.ErrUnavailable):
					fast.Add(1)
				default:
					other.Add(1)
				}
				if s := p.Stats(); s.Open > maxConns {
					t.Errorf("Open %d over the cap", s.Open)
				}
			}
		})
	}
	wg.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if i%10 < 6 {
				d.setFail(errBoom)
			} else {
				d.setFail(nil)
			}
			if i%7 == 0 {
				p.Reset()
			}
		}
	})
	time.Sleep(2 * time.Second)
	close(stop)
	wg.Wait()
	s := p.Stats()
	t.Logf("ok %d, failed fast %d, other %d; %+v", ok.Load(), fast.Load(), other.Load(), s)
	assert.Zero(t, s.Waiting)
	assert.Positive(t, ok.Load())
	assert.Positive(t, fast.Load())
	require.NoError(t, p.Close())
	assert.Zero(t, p.Stats().Open)
}
