package pool_test

import (
	"context"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/internal/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// tcpPool is a pool of plain TCP conns to srv.
func tcpPool(t *testing.T, srv *faultnet.Server, cfg pool.Config) *pool.Pool {
	t.Helper()
	var nd net.Dialer
	cfg.Dial = func(ctx context.Context) (net.Conn, error) { return nd.DialContext(ctx, "tcp", srv.Addr()) }
	return newPool(t, cfg)
}

// echoFull writes msg and reads it back whole; it sets no deadline, so a
// deadline left over on the conn fails it.
func echoFull(t *testing.T, c net.Conn, msg string) {
	t.Helper()
	_, err := c.Write([]byte(msg))
	require.NoError(t, err)
	buf := make([]byte, len(msg))
	_, err = io.ReadFull(c, buf)
	require.NoError(t, err)
	require.Equal(t, msg, string(buf))
}

// A holder's deadlines end with its hold. Each holder sets a short deadline
// and keeps the conn past it; the next holder still gets the same healthy
// conn: the liveness probe does not take the expired deadline for a dead
// peer (it would re-dial every time), and I/O without a deadline of its own
// does not time out.
func TestReleaseClearsDeadlines(t *testing.T) {
	for _, tc := range []struct {
		name           string
		checkAfterIdle time.Duration
	}{
		{"probe on every acquire", time.Nanosecond},
		{"no probe", -1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := faultnet.Start(t, faultnet.Config{})
			p := tcpPool(t, srv, pool.Config{CheckAfterIdle: tc.checkAfterIdle, HealthCheckPeriod: -1})
			for i := range 3 {
				c, err := p.Acquire(t.Context())
				require.NoError(t, err, "holder %d", i)
				echoFull(t, c, "ping")
				require.NoError(t, c.SetReadDeadline(time.Now().Add(10*time.Millisecond)))
				require.NoError(t, c.SetWriteDeadline(time.Now().Add(10*time.Millisecond)))
				time.Sleep(30 * time.Millisecond) // both deadlines pass while held
				c.Release()
			}
			s := p.Stats()
			assert.Equal(t, int64(1), srv.Stats().Accepted, "the server saw one conn for sequential holders: %+v", s)
			assert.Equal(t, int64(1), s.Dialed)
			assert.Zero(t, s.Evicted(), "%+v", s)
		})
	}

	// Released straight to a waiter (no idle stack, no probe) is no
	// different.
	t.Run("handed to a waiter", func(t *testing.T) {
		srv := faultnet.Start(t, faultnet.Config{})
		p := tcpPool(t, srv, pool.Config{MaxConns: 1, HealthCheckPeriod: -1})
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		require.NoError(t, c.SetDeadline(time.Now().Add(10*time.Millisecond)))
		got := make(chan *pool.Conn, 1)
		go func() {
			c, err := p.Acquire(t.Context())
			assert.NoError(t, err)
			got <- c
		}()
		for p.Stats().Waiting == 0 {
			time.Sleep(time.Millisecond)
		}
		time.Sleep(30 * time.Millisecond) // the deadline passes while held
		c.Release()
		c2 := <-got
		require.NotNil(t, c2)
		echoFull(t, c2, "ping")
		c2.Release()
		assert.Equal(t, int64(1), srv.Stats().Accepted)
		assert.Zero(t, p.Stats().Evicted())
	})
}
