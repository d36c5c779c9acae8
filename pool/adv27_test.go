package pool_test

import (
	"context"
	"io"
	"net"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/pool"
)

// TestAdv27ProbeOfOneWaiterServesAnother: an Acquire waits for ready at the
// gate of an upstream known down (MaxConns 3: room for more). Another
// Acquire (a plain one, 10s deadline) comes when the next probe is due: its
// dial is the probe. The upstream is back, and the probe's conn goes to the
// oldest waiter, the one waiting for ready. The upstream is Ready: the
// later Acquire must get a dial of its own at once, not wait to its
// deadline for a probe that served someone else. (Which of the two the
// scheduler runs first at the probe's instant is its own: rounds. When
// the one waiting for ready takes the probe first, the later Acquire has
// no dial for it and fails fast, as it may.)
func TestAdv27ProbeOfOneWaiterServesAnother(t *testing.T) {
	for round := range 16 {
		synctest.Test(t, func(t *testing.T) {
			var d pipeDialer
			d.setFail(errBoom)
			p, err := pool.New(pool.Config{Dial: d.Dial, MaxConns: 3, DialRate: -1})
			require.NoError(t, err)
			defer p.Close()
			for range 5 {
				_, _ = p.Acquire(t.Context())
			}
			_, err = p.Acquire(t.Context())
			var ue *pool.UnavailableError
			require.ErrorAs(t, err, &ue)
			type res struct {
				c   *pool.Conn
				err error
				at  time.Duration
			}
			got := make(chan res, 2)
			start := time.Now()
			acquire := func(ctx context.Context) {
				ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
				defer cancel()
				c, err := p.Acquire(ctx)
				got <- res{c, err, time.Since(start)}
			}
			go func() {
				time.Sleep(time.Until(ue.Retry)) // the probe's due time
				acquire(t.Context())
			}()
			synctest.Wait()
			go acquire(pool.WaitForReady(t.Context()))
			synctest.Wait() // at the gate
			d.setFail(nil)
			// Neither conn is released before both came: a release would
			// hand the conn to the one left.
			var conns []*pool.Conn
			for i := range 2 {
				r := <-got
				require.Less(t, r.at, 3*time.Second, "round %d, acquire %d: %v (%d dials); want served (or failed fast) once the upstream was back", round, i, r.err, d.dials.Load())
				if r.err != nil {
					// The plain Acquire, when the probe was the other's
					// when it came: no dial for it, it fails fast.
					require.ErrorIs(t, r.err, pool.ErrUnavailable, "round %d", round)
					continue
				}
				conns = append(conns, r.c)
			}
			for _, c := range conns {
				c.Release()
			}
		})
	}
}

// TestAdv27ProbeFailureToOlderWaiterLeavesNoneAdmitted: an upstream known
// down. Acquire V comes when a probe is due: its dial is the probe, and it
// hangs (a black hole: to its DialTimeout, 30s). W waits for ready (10s):
// no dial is for it, it waits at the gate and is let through as the next
// probe; that probe fails at once, and its error goes to the oldest
// waiter, V. The upstream is back just then. W must go on probing (it
// waits for ready: a probe about every second), not sit in the queue as
// the probe it no longer has, waiting for V's dial to end (30s) or for its
// own deadline.
func TestAdv27ProbeFailureToOlderWaiterLeavesNoneAdmitted(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var n atomic.Int64
		dial := func(ctx context.Context) (net.Conn, error) {
			switch k := n.Add(1); {
			case k <= 5, k == 7:
				return nil, errBoom
			case k == 6: // V's probe: a black hole
				<-ctx.Done()
				return nil, ctx.Err()
			}
			c, s := net.Pipe()
			go func() { defer s.Close(); _, _ = io.Copy(s, s) }()
			return c, nil
		}
		p, err := pool.New(pool.Config{Dial: dial, MaxConns: 4, DialRate: -1, DialTimeout: 30 * time.Second})
		require.NoError(t, err)
		defer p.Close()
		for range 5 {
			_, _ = p.Acquire(t.Context())
		}
		_, err = p.Acquire(t.Context())
		var ue *pool.UnavailableError
		require.ErrorAs(t, err, &ue)
		time.Sleep(time.Until(ue.Retry))

		vErr := make(chan error, 1)
		go func() {
			ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
			defer cancel()
			_, err := p.Acquire(ctx)
			vErr <- err
		}()
		synctest.Wait()
		require.Equal(t, int64(6), n.Load(), "V's Acquire is the probe")

		type res struct {
			c   *pool.Conn
			err error
			at  time.Duration
		}
		wRes := make(chan res, 1)
		start := time.Now()
		go func() {
			ctx, cancel := context.WithTimeout(pool.WaitForReady(t.Context()), 10*time.Second)
			defer cancel()
			c, err := p.Acquire(ctx)
			wRes <- res{c, err, time.Since(start)}
		}()
		err = <-vErr
		require.ErrorIs(t, err, errBoom, "the oldest waiter gets the failed probe's error")
		require.Equal(t, int64(7), n.Load(), "W's probe failed")
		r := <-wRes
		require.NoError(t, r.err, "W, waiting for ready, after %v (%d dials)", r.at, n.Load())
		require.Less(t, r.at, 5*time.Second, "W probes on once its probe is gone")
		r.c.Release()
	})
}
