package pool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/faultnet"
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

// closeWriter and closeReader are the optional interfaces of *net.TCPConn
// and *tls.Conn that a wrapper must not hide.
type (
	closeWriter interface{ CloseWrite() error }
	closeReader interface{ CloseRead() error }
)

// CloseWrite on a pooled TCP conn half-closes it: the server reads EOF and
// can still answer. A half-closed conn is not reused.
func TestConnCloseWrite(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
		n, err := io.Copy(io.Discard, c) // until the client's FIN
		if err == nil {
			_, _ = fmt.Fprintf(c, "got %d bytes and EOF", n)
		}
	}})
	p := tcpPool(t, srv, pool.Config{})
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	_, err = c.Write([]byte("hello"))
	require.NoError(t, err)
	cw, ok := any(c).(closeWriter)
	require.True(t, ok, "*pool.Conn hides CloseWrite")
	require.NoError(t, cw.CloseWrite())
	require.NoError(t, c.SetReadDeadline(time.Now().Add(5*time.Second)))
	reply, err := io.ReadAll(c)
	require.NoError(t, err)
	assert.Equal(t, "got 5 bytes and EOF", string(reply))
	c.Release()
	assert.Equal(t, int64(1), p.Stats().EvictedBroken, "a half-closed conn is not reused")
	assert.Zero(t, p.Stats().Open)
}

// CloseRead is passed through too, and retires the conn.
func TestConnCloseRead(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	p := tcpPool(t, srv, pool.Config{})
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	cr, ok := any(c).(closeReader)
	require.True(t, ok, "*pool.Conn hides CloseRead")
	require.NoError(t, cr.CloseRead())
	n, err := c.Conn.Read(make([]byte, 1)) // past the wrapper: CloseRead alone marks it
	assert.Zero(t, n)
	assert.ErrorIs(t, err, io.EOF)
	c.Release()
	assert.Equal(t, int64(1), p.Stats().EvictedBroken)
}

// Where the conn has no such method (net.Pipe), the wrapper says so with
// errors.ErrUnsupported and leaves the conn as it was.
func TestConnOptionalInterfacesUnsupported(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var d pipeDialer
		p, err := pool.New(pool.Config{Dial: d.Dial})
		require.NoError(t, err)
		defer p.Close()
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		err = any(c).(closeWriter).CloseWrite()
		assert.ErrorIs(t, err, errors.ErrUnsupported)
		assert.ErrorContains(t, err, "pool: CloseWrite")
		assert.ErrorIs(t, any(c).(closeReader).CloseRead(), errors.ErrUnsupported)
		_, err = any(c).(syscall.Conn).SyscallConn()
		assert.ErrorIs(t, err, errors.ErrUnsupported)
		assert.ErrorContains(t, err, "pool: SyscallConn")
		echo(t, c, "still fine")
		c.Release()
		assert.Zero(t, p.Stats().Evicted())
		assert.Equal(t, 1, p.Stats().Idle)
	})
}

// NetConn returns the conn Config.Dial returned, like tls.Conn's.
func TestConnNetConn(t *testing.T) {
	srv, clientCfg, _ := tlsEchoServer(t, time.Minute)
	p := tlsPool(t, srv, clientCfg, pool.Config{})
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	defer c.Release()
	u, ok := any(c).(interface{ NetConn() net.Conn })
	require.True(t, ok)
	assert.Same(t, c.Conn, u.NetConn())
}
