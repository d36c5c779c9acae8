package pool_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// staleReply is what the server sends nobody asked for after each reply:
// a second answer, as to a request whose caller gave up.
const staleReply = "stale-reply"

// staleServer answers each 4-byte request with the request itself, and then
// with staleReply: in the same write as the answer (one TLS record) when
// together is set, in a write of its own otherwise. Each stale write is
// reported on the returned channel.
func staleServer(t *testing.T, tlsCfg *tls.Config, together bool) (*faultnet.Server, <-chan struct{}) {
	t.Helper()
	sent := make(chan struct{}, 16)
	srv := faultnet.Start(t, faultnet.Config{TLS: tlsCfg, Handler: func(c net.Conn) {
		buf := make([]byte, 4)
		for {
			if _, err := io.ReadFull(c, buf); err != nil {
				return
			}
			var err error
			if together {
				_, err = c.Write(append(append([]byte{}, buf...), staleReply...))
			} else if _, err = c.Write(buf); err == nil {
				_, err = c.Write([]byte(staleReply))
			}
			if err != nil {
				return
			}
			sent <- struct{}{}
		}
	}})
	return srv, sent
}

// Break 27 of issue 20: a pooled conn with bytes nobody asked for must not be
// handed out, whatever wraps it. The conns come from the real dial.Dialer,
// whose first-byte watch (on by default) wraps every conn it returns; under
// TLS the unasked bytes may sit at the socket, in the *tls.Conn's buffer of
// undecrypted records, or already decrypted in the *tls.Conn. Each holder
// reads exactly its own 4-byte answer: the next holder must read its own, not
// the stale one, and the pool must have found the first conn dead.
func TestProbeStaleReplyThroughDialer(t *testing.T) {
	serverTLS, clientTLS := faultnet.SelfSigned(t)
	for _, tc := range []struct {
		name     string
		tls      bool
		together bool
	}{
		{"tcp", false, false},
		{"tls separate record", true, false},
		{"tls same record", true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var srvCfg *tls.Config
			d := &dial.Dialer{} // FirstByteTimeout: its default, on
			dialFn := d.DialContext
			if tc.tls {
				srvCfg = serverTLS
				d.TLSConfig = clientTLS
				dialFn = d.DialTLSContext
			}
			srv, sent := staleServer(t, srvCfg, tc.together)
			p := newPool(t, pool.Config{
				Dial:           func(ctx context.Context) (net.Conn, error) { return dialFn(ctx, "tcp", srv.Addr()) },
				CheckAfterIdle: time.Nanosecond, HealthCheckPeriod: -1,
			})
			ask := func(req string) string {
				t.Helper()
				c, err := p.Acquire(t.Context())
				require.NoError(t, err)
				defer c.Release()
				require.NoError(t, c.SetDeadline(time.Now().Add(5*time.Second)))
				_, err = c.Write([]byte(req))
				require.NoError(t, err)
				buf := make([]byte, len(req))
				_, err = io.ReadFull(c, buf)
				require.NoError(t, err)
				return string(buf)
			}
			require.Equal(t, "req1", ask("req1"))
			<-sent
			time.Sleep(finCrossesLoopback)
			got := ask("req2")
			assert.Equal(t, "req2", got, "the next holder read another request's reply")
			s := p.Stats()
			assert.Equal(t, int64(1), s.EvictedDead, "%+v", s)
			// The pool's count, not the server's: under load the Dialer may
			// race a second connect to the address and close the loser.
			assert.Equal(t, int64(2), s.Dialed, "%+v", s)
		})
	}
}

// The converse through the Dialer: a conn that got exactly what it asked
// for, and TLS session tickets that arrived after the handshake, keep the
// conn in the pool.
func TestProbeCleanConnKeptThroughDialer(t *testing.T) {
	srv, clientCfg, _ := tlsEchoServer(t, time.Minute)
	for _, useTLS := range []bool{false, true} {
		d := &dial.Dialer{}
		dialFn := d.DialContext
		addr := srv.Addr()
		if useTLS {
			d.TLSConfig = clientCfg
			dialFn = d.DialTLSContext
		} else {
			plain := faultnet.Start(t, faultnet.Config{})
			addr = plain.Addr()
		}
		p := newPool(t, pool.Config{
			Dial:           func(ctx context.Context) (net.Conn, error) { return dialFn(ctx, "tcp", addr) },
			CheckAfterIdle: time.Nanosecond, HealthCheckPeriod: -1,
		})
		c, err := p.Acquire(t.Context()) // dialed; under TLS nothing read since the handshake
		require.NoError(t, err)
		c.Release()
		time.Sleep(finCrossesLoopback) // session tickets arrive
		for range 3 {
			c, err := p.Acquire(t.Context())
			require.NoError(t, err)
			echoFull(t, c, "ping")
			c.Release()
		}
		s := p.Stats()
		assert.Zero(t, s.Evicted(), "tls=%v: %+v", useTLS, s)
		assert.Equal(t, int64(1), s.Dialed, "tls=%v", useTLS)
	}
}

// A *tls.Conn whose handshake has not run yet (tls.Client without
// Handshake: it runs on the first I/O) is left to its holder: the probe's
// reads must not start the handshake under a deadline in the past, whose
// failure tls.Conn would keep for ever.
func TestProbeLeavesUnstartedHandshake(t *testing.T) {
	srv, clientCfg, _ := tlsEchoServer(t, time.Minute)
	var nd net.Dialer
	p := newPool(t, pool.Config{
		Dial: func(ctx context.Context) (net.Conn, error) {
			c, err := nd.DialContext(ctx, "tcp", srv.Addr())
			if err != nil {
				return nil, err
			}
			return tls.Client(c, clientCfg), nil
		},
		CheckAfterIdle: time.Nanosecond, HealthCheckPeriod: -1,
	})
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	c.Release()
	for range 2 {
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		echoFull(t, c, "ping")
		c.Release()
	}
	s := p.Stats()
	assert.Zero(t, s.Evicted(), "%+v", s)
	assert.Equal(t, int64(1), s.Dialed)
}
