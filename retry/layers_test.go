package retry_test

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
	"github.com/lifeline-go/lifeline/retry"
)

// refusedAddr returns a loopback address that refuses connections: a port
// nothing listens on, reserved until the test ends (a port freed by closing
// a listener may be taken by another test's listener meanwhile).
func refusedAddr(t *testing.T) string {
	t.Helper()
	return faultnet.RefusedAddr(t, "tcp")
}

// quietDialer is a dial.Dialer that records no telemetry of its own.
func quietDialer() *dial.Dialer {
	return &dial.Dialer{TracerProvider: tracenoop.NewTracerProvider(), MeterProvider: metricnoop.NewMeterProvider()}
}

// TestNestedDoDoesNotMultiply: a Do inside a Do, both with the default
// policy, against a refused loopback port makes 3 attempts, not 3 × 3: the
// inner Do's *ExhaustedError is final for the outer one.
func TestNestedDoDoesNotMultiply(t *testing.T) {
	addr := refusedAddr(t)
	cases := []struct {
		name string
		dial func(ctx context.Context) (net.Conn, error)
	}{
		{"net.Dialer", func(ctx context.Context) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "tcp", addr)
		}},
		{"dial.Dialer", func(ctx context.Context) (net.Conn, error) {
			return quietDialer().DialContext(ctx, "tcp", addr)
		}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			synctest.Test(t, func(t *testing.T) {
				var dials, outer atomic.Int64
				err := (*retry.Policy)(nil).Do(t.Context(), func(ctx context.Context) error {
					outer.Add(1)
					conn, err := retry.Do(ctx, nil, func(ctx context.Context) (net.Conn, error) {
						dials.Add(1)
						return tc.dial(ctx)
					})
					if err == nil {
						_ = conn.Close()
					}
					return err
				})
				if err == nil {
					t.Skip("something else took the port")
				}
				assert.EqualValues(t, 3, dials.Load(), "dials: the inner Do's three, no more")
				assert.EqualValues(t, 1, outer.Load(), "the outer Do stops at the inner one's exhaustion")
				assert.ErrorIs(t, err, syscall.ECONNREFUSED)
				var ex *retry.ExhaustedError
				require.ErrorAs(t, err, &ex)
				assert.Equal(t, 3, ex.Attempts, "the inner Do's error, as it returned it")
			})
		})
	}
	t.Run("inner MaxAttempts 1 leaves the retries to the outer Do", func(t *testing.T) {
		synctest.Test(t, func(t *testing.T) {
			var dials atomic.Int64
			err := (*retry.Policy)(nil).Do(t.Context(), func(ctx context.Context) error {
				return (&retry.Policy{MaxAttempts: 1}).Do(ctx, func(ctx context.Context) error {
					dials.Add(1)
					var d net.Dialer
					conn, err := d.DialContext(ctx, "tcp", addr)
					if err == nil {
						_ = conn.Close()
					}
					return err
				})
			})
			if err == nil {
				t.Skip("something else took the port")
			}
			assert.EqualValues(t, 3, dials.Load())
			var ex *retry.ExhaustedError
			require.ErrorAs(t, err, &ex)
			assert.Equal(t, 3, ex.Attempts, "the outer Do's exhaustion")
		})
	})
}

// TestClosedPoolNotRetried: Acquire on a closed *pool.Pool fails with
// pool.ErrClosed, whose Retryable() is false: one attempt, the error as is.
func TestClosedPoolNotRetried(t *testing.T) {
	addr := refusedAddr(t)
	p, err := pool.New(pool.Config{
		Dial:           func(ctx context.Context) (net.Conn, error) { return quietDialer().DialContext(ctx, "tcp", addr) },
		TracerProvider: tracenoop.NewTracerProvider(),
		MeterProvider:  metricnoop.NewMeterProvider(),
	})
	require.NoError(t, err)
	require.NoError(t, p.Close())
	attempts := 0
	conn, err := retry.Do(t.Context(), nil, func(ctx context.Context) (*pool.Conn, error) {
		attempts++
		return p.Acquire(ctx)
	})
	assert.Nil(t, conn)
	assert.Equal(t, 1, attempts)
	assert.ErrorIs(t, err, pool.ErrClosed)
	assert.NotErrorIs(t, err, retry.ErrExhausted)
}

// TestClosedConnNotRetried: reading a loopback conn that this program
// closed fails with net.ErrClosed, which is a shutdown, not a fault: one
// attempt.
func TestClosedConnNotRetried(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	defer ln.Close()
	var d net.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", ln.Addr().String())
	require.NoError(t, err)
	peer, err := ln.Accept()
	require.NoError(t, err)
	defer peer.Close()
	require.NoError(t, conn.Close())
	attempts := 0
	err = (*retry.Policy)(nil).Do(t.Context(), func(context.Context) error {
		attempts++
		_, err := conn.Read(make([]byte, 1))
		return err
	})
	assert.Equal(t, 1, attempts)
	assert.ErrorIs(t, err, net.ErrClosed)
	assert.False(t, errors.Is(err, retry.ErrExhausted))
}
