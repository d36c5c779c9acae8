package pool_test

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// tlsEchoServer is a crypto/tls server on loopback that echoes until a
// client has sent nothing for idle, then closes the conn the way TLS
// servers do: tls.Conn.Close sends the close_notify alert, then the FIN.
// Each close is reported on the returned channel.
func tlsEchoServer(t *testing.T, idle time.Duration) (*faultnet.Server, *tls.Config, <-chan struct{}) {
	t.Helper()
	serverCfg, clientCfg := faultnet.SelfSigned(t)
	// A client with a session cache is sent TLS 1.3 session tickets, and
	// a server that asks for a client certificate sends them after the
	// client's Finished, not in its first flight: they reach the client
	// after its handshake and wait in the socket until its next Read.
	serverCfg.ClientAuth = tls.RequestClientCert
	clientCfg.ClientSessionCache = tls.NewLRUClientSessionCache(8)
	closed := make(chan struct{}, 64)
	srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg, Handler: func(c net.Conn) {
		buf := make([]byte, 512)
		for {
			_ = c.SetReadDeadline(time.Now().Add(idle))
			n, err := c.Read(buf)
			if err != nil {
				if errors.Is(err, os.ErrDeadlineExceeded) {
					_ = c.Close() // *tls.Conn: close_notify, then FIN
					closed <- struct{}{}
				}
				return
			}
			if _, err := c.Write(buf[:n]); err != nil {
				return
			}
		}
	}})
	return srv, clientCfg, closed
}

// tlsPool is a pool whose Dial returns *tls.Conn (handshake done).
func tlsPool(t *testing.T, srv *faultnet.Server, clientCfg *tls.Config, cfg pool.Config) *pool.Pool {
	t.Helper()
	d := tls.Dialer{Config: clientCfg}
	cfg.Dial = func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", srv.Addr()) }
	return newPool(t, cfg)
}

// A TLS server closed an idle conn: its close_notify alert sits in the
// socket ahead of the FIN, so a peek sees bytes, not EOF. The probe must
// still call the conn dead, and Acquire hand out a fresh, working one.
func TestProbeTLSConnClosedByServer(t *testing.T) {
	srv, clientCfg, closed := tlsEchoServer(t, 50*time.Millisecond)
	p := tlsPool(t, srv, clientCfg, pool.Config{CheckAfterIdle: time.Nanosecond, HealthCheckPeriod: -1})
	for round := range 3 {
		c, err := p.Acquire(t.Context())
		require.NoError(t, err, "round %d", round)
		_, isTLS := c.Conn.(*tls.Conn)
		require.True(t, isTLS)
		echoFull(t, c, "ping") // a dead conn handed out fails here with EOF
		c.Release()
		<-closed // the server closed it
		time.Sleep(finCrossesLoopback)
	}
	s := p.Stats()
	assert.Equal(t, int64(2), s.EvictedDead, "rounds 2 and 3 found the closed conn dead: %+v", s)
	assert.Zero(t, s.EvictedBroken, "no caller met a dead conn: %+v", s)
	assert.Equal(t, int64(3), srv.Stats().Accepted)
}

// The converse: bytes pending under TLS on a conn the server keeps open
// (TLS 1.3 session tickets, which the client reads only on its next Read)
// are not a death sign. The server must see one conn for many acquires.
func TestProbeTLSLiveConnKept(t *testing.T) {
	srv, clientCfg, _ := tlsEchoServer(t, time.Minute)
	p := tlsPool(t, srv, clientCfg, pool.Config{CheckAfterIdle: time.Nanosecond, HealthCheckPeriod: -1})
	c, err := p.Acquire(t.Context()) // dialed, handshake done, nothing read since
	require.NoError(t, err)
	c.Release()
	time.Sleep(finCrossesLoopback) // the session ticket arrives
	for range 3 {
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		echoFull(t, c, "ping")
		c.Release()
	}
	s := p.Stats()
	assert.Zero(t, s.Evicted(), "%+v", s)
	assert.Equal(t, int64(1), srv.Stats().Accepted)
}

// The probe judges the peer, not the conn's deadlines: a read deadline that
// passed, set on the embedded conn where Release cannot see it, does not
// make a healthy conn look dead.
func TestProbeIgnoresExpiredDeadline(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	p := tcpPool(t, srv, pool.Config{CheckAfterIdle: time.Nanosecond, HealthCheckPeriod: -1})
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	echoFull(t, c, "ping")
	require.NoError(t, c.Conn.SetReadDeadline(time.Now().Add(-time.Second))) // bypasses the wrapper
	c.Release()
	c2, err := p.Acquire(t.Context())
	require.NoError(t, err)
	assert.Same(t, c, c2, "the probe kept the healthy conn")
	require.NoError(t, c2.Conn.SetReadDeadline(time.Time{})) // the caller's to clear, as documented
	echoFull(t, c2, "pong")
	c2.Release()
	assert.Zero(t, p.Stats().EvictedDead)
	assert.Equal(t, int64(1), srv.Stats().Accepted)
}

// lateReadConn starts every Read late, as a goroutine preempted between
// setting a deadline and reading does on a CPU-starved machine (seen in
// make test: a healthy TLS conn evicted as dead).
type lateReadConn struct {
	net.Conn
	late time.Duration
}

func (c *lateReadConn) Read(p []byte) (int, error) {
	time.Sleep(c.late)
	return c.Conn.Read(p)
}

func (c *lateReadConn) NetConn() net.Conn { return c.Conn }

// TestProbeTLSSlowReaderKept: session tickets wait at the socket of a
// healthy conn, and the probe's read of them starts after its short
// deadline passed: the probe looks again with longer waits (the records
// are whole, so reading them never waits on the network) rather than
// evict a live conn for the scheduler's sake.
func TestProbeTLSSlowReaderKept(t *testing.T) {
	srv, clientCfg, _ := tlsEchoServer(t, time.Minute)
	p := newPool(t, pool.Config{CheckAfterIdle: time.Nanosecond, HealthCheckPeriod: -1,
		Dial: func(ctx context.Context) (net.Conn, error) {
			raw, err := (&net.Dialer{}).DialContext(ctx, "tcp", srv.Addr())
			if err != nil {
				return nil, err
			}
			tc := tls.Client(&lateReadConn{Conn: raw, late: 5 * time.Millisecond}, clientCfg)
			if err := tc.HandshakeContext(ctx); err != nil {
				raw.Close()
				return nil, err
			}
			return tc, nil
		}})
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	c.Release()
	time.Sleep(finCrossesLoopback) // the session ticket arrives
	for range 3 {
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		echoFull(t, c, "ping")
		c.Release()
	}
	s := p.Stats()
	assert.Zero(t, s.Evicted(), "%+v", s)
	assert.Equal(t, int64(1), srv.Stats().Accepted)
}
