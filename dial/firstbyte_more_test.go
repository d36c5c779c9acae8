package dial_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// TestFirstByteMetricNeverNegative: break 26. The ordinary
// write/read/write/read pattern over TLS (each reply one record) records
// one first-byte duration, and it is not negative (it was -0.5s: the next
// Write moved the clock before the watch settled).
func TestFirstByteMetricNeverNegative(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg, Handler: func(c net.Conn) {
		r := bufio.NewReader(c)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			if _, err := c.Write([]byte(line)); err != nil {
				return
			}
		}
	}})
	tel := newTelemetry(t)
	d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, FirstByteTimeout: 5 * time.Second,
		MeterProvider: tel.mp}
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	require.NoError(t, err)
	defer conn.Close()
	r := bufio.NewReader(conn)
	for range 2 {
		_, err = conn.Write([]byte("ping\n"))
		require.NoError(t, err)
		_, err = r.ReadString('\n')
		require.NoError(t, err)
		time.Sleep(300 * time.Millisecond)
	}
	var n uint64
	for _, p := range tel.histPoints(t, "lifeline.dial.duration") {
		if setValue(p.Attributes, "lifeline.phase") != "first_byte" {
			continue
		}
		n += p.Count
		assert.GreaterOrEqual(t, p.Sum, 0.0, "first-byte duration sum")
		assert.Less(t, p.Sum, 0.3, "the reply came at once")
	}
	assert.EqualValues(t, 1, n, "one first byte per conn")
}

// TestFirstByteGreeting: break 28. A Read before any Write (a
// server-first protocol: the greeting is the reply) is bounded from
// establishment; a greeting that comes is read; GreetingTimeout < 0 leaves
// such a Read to the caller's own deadline.
func TestFirstByteGreeting(t *testing.T) {
	t.Run("silent server", func(t *testing.T) {
		checkFDs(t)
		srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
		h := &dial.Health{}
		d := dial.Dialer{FirstByteTimeout: 300 * time.Millisecond, Health: h}
		conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
		require.NoError(t, err)
		defer conn.Close()
		_, elapsed, err := readBounded(t, conn, 5*time.Second)
		requireFirstByteTimeout(t, err)
		assert.Less(t, elapsed, 3*time.Second)
		var de *dial.Error
		require.ErrorAs(t, err, &de)
		st, _ := h.Stats(de.Peer)
		assert.EqualValues(t, 1, st.FirstByteStalls)
	})
	t.Run("silent TLS server", func(t *testing.T) {
		checkFDs(t)
		serverCfg, clientCfg, _ := testCert(t, testHost)
		srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg, Handler: func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }})
		d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, FirstByteTimeout: 300 * time.Millisecond}
		conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
		require.NoError(t, err)
		defer conn.Close()
		_, elapsed, err := readBounded(t, conn, 5*time.Second)
		requireFirstByteTimeout(t, err)
		assert.Less(t, elapsed, 3*time.Second)
	})
	t.Run("greeting arrives", func(t *testing.T) {
		checkFDs(t)
		srv := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
			time.Sleep(100 * time.Millisecond)
			_, _ = c.Write([]byte("220 ready\r\n"))
			_, _ = io.Copy(io.Discard, c)
		}})
		d := dial.Dialer{FirstByteTimeout: 2 * time.Second}
		conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
		require.NoError(t, err)
		defer conn.Close()
		got, _, err := readBounded(t, conn, 5*time.Second)
		require.NoError(t, err)
		assert.Equal(t, "220 ready\r\n", got)
	})
	t.Run("GreetingTimeout off", func(t *testing.T) {
		checkFDs(t)
		srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
		d := dial.Dialer{FirstByteTimeout: 200 * time.Millisecond, GreetingTimeout: -1}
		conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
		require.NoError(t, err)
		defer conn.Close()
		require.NoError(t, conn.SetReadDeadline(time.Now().Add(700*time.Millisecond)))
		_, elapsed, err := readBounded(t, conn, 5*time.Second)
		assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
		var de *dial.Error
		assert.False(t, errors.As(err, &de), "the caller's deadline, not a first-byte timeout: %v", err)
		assert.GreaterOrEqual(t, elapsed, 600*time.Millisecond)
	})
}

// TestFirstByteZeroLengthWritesDoNotRestart: a Write of no bytes sends
// nothing and is no request: Write(nil) every 100ms does not keep a
// silent peer's Read alive past FirstByteTimeout.
func TestFirstByteZeroLengthWritesDoNotRestart(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	d := dial.Dialer{FirstByteTimeout: 400 * time.Millisecond}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("x"))
	require.NoError(t, err)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(100 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-stop:
				return
			case <-tick.C:
				_, _ = conn.Write(nil)
			}
		}
	}()
	_, elapsed, err := readBounded(t, conn, 5*time.Second)
	close(stop)
	<-done
	requireFirstByteTimeout(t, err)
	assert.Less(t, elapsed, 2*time.Second, "bounded from the last Write with bytes, 400ms")
}

// TestFirstByteTimeoutRacingWriteKeepsPhase: a first-byte timeout that
// fires as a concurrent Write restarts the clock is either no timeout
// (the bound moved: the Read goes on) or a first-byte *Error — never a
// bare i/o timeout without the phase. The writer restarts the clock at
// about the limit, so that the two meet often.
func TestFirstByteTimeoutRacingWriteKeepsPhase(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	const limit = 5 * time.Millisecond
	var bare, ours atomic.Int32
	for range 20 {
		d := dial.Dialer{FirstByteTimeout: limit}
		conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
		require.NoError(t, err)
		stop := make(chan struct{})
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				_, _ = conn.Write([]byte("x"))
				time.Sleep(limit - time.Duration(i%5)*100*time.Microsecond)
			}
		}()
		ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
		for ctx.Err() == nil {
			_ = conn.SetReadDeadline(time.Now().Add(time.Second))
			_, err := conn.Read(make([]byte, 1))
			var de *dial.Error
			switch {
			case errors.As(err, &de):
				ours.Add(1)
			case err != nil:
				bare.Add(1)
				t.Logf("bare error: %v", err)
			}
			if err != nil {
				break
			}
		}
		cancel()
		close(stop)
		<-done
		conn.Close()
	}
	assert.Zero(t, bare.Load(), "timeouts without the first_byte phase (%d with it)", ours.Load())
}

// TestFirstByteKeyUpdateAnswersDoNotRestart: a server that asks for a
// KeyUpdate every 200ms and never answers: tls.Conn's answers are its own
// writes, not the caller's request, and do not push the bound out
// (FirstByteTimeout 500ms: the Read ends near 500ms, not after the last
// KeyUpdate).
func TestFirstByteKeyUpdateAnswersDoNotRestart(t *testing.T) {
	checkFDs(t)
	const limit = 500 * time.Millisecond
	addr, clientCfg := injectingServer(t, func(*dial.TLS13Sealer) [][]byte { return nil },
		func(c net.Conn, s *dial.TLS13Sealer) {
			for range 10 {
				if _, err := c.Write(s.Seal(22, keyUpdateMsg(true))); err != nil {
					return
				}
				if s.Update() != nil {
					return
				}
				time.Sleep(200 * time.Millisecond)
			}
		})
	d := dial.Dialer{Resolver: resolverFor(addr), TLSConfig: clientCfg, FirstByteTimeout: limit}
	_, port, _ := net.SplitHostPort(addr)
	conn, err := d.DialTLSContext(t.Context(), "tcp", net.JoinHostPort(testHost, port))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET\n"))
	require.NoError(t, err)
	_, elapsed, err := readBounded(t, conn, 5*time.Second)
	requireFirstByteTimeout(t, err)
	assert.Less(t, elapsed, 1500*time.Millisecond, "the answers (every 200ms for 2s) did not restart the clock")
}

// TestFirstByteKeepsCallersKeyLogWriter: the watch chains its KeyLogWriter
// with the caller's, which still gets every line of the handshake.
func TestFirstByteKeepsCallersKeyLogWriter(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg})
	var lines syncBuffer
	clientCfg.KeyLogWriter = &lines
	d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, FirstByteTimeout: time.Second}
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	require.NoError(t, err)
	conn.Close()
	for _, label := range []string{"CLIENT_HANDSHAKE_TRAFFIC_SECRET ", "SERVER_HANDSHAKE_TRAFFIC_SECRET ",
		"CLIENT_TRAFFIC_SECRET_0 ", dial.ServerTrafficLabel} {
		assert.Contains(t, lines.String(), label)
	}
	assert.Same(t, &lines, clientCfg.KeyLogWriter, "the caller's config is not modified")
}
