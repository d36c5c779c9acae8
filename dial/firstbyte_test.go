package dial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

func TestFirstByteTimeoutSilence(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	h := &dial.Health{}
	d := dial.Dialer{FirstByteTimeout: 300 * time.Millisecond, Health: h}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err, "TCP accept succeeds; the silence shows only after the request")
	defer conn.Close()
	_, err = conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	require.NoError(t, err)
	start := time.Now()
	_, err = conn.Read(make([]byte, 16))
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	assert.True(t, de.Timeout())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "first_byte_timeout", de.ErrorType())
	assert.Equal(t, srv.Addr(), de.Peer.String())
	assert.Equal(t, "dial tcp "+srv.Addr()+": first_byte: i/o timeout", err.Error())
	assert.Less(t, elapsed, 3*time.Second, "FirstByteTimeout 300ms")
	assert.GreaterOrEqual(t, elapsed, 250*time.Millisecond)
	st, ok := h.Stats(de.Peer)
	require.True(t, ok)
	assert.EqualValues(t, 1, st.FirstByteStalls)

	// The conn stays failed for reads: the reply never started.
	_, err = conn.Read(make([]byte, 16))
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	st, _ = h.Stats(de.Peer)
	assert.EqualValues(t, 1, st.FirstByteStalls, "counted once per conn")
}

func TestFirstByteTimeoutTLS(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	// Handshake completes, then the server reads the request and never
	// answers: the handshake's own reads must not trip the watch, the
	// request's reply must.
	srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg, Handler: func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }})
	d := dial.Dialer{
		Resolver:         resolverFor(srv.Addr()),
		TLSConfig:        clientCfg,
		FirstByteTimeout: 300 * time.Millisecond,
	}
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	require.NoError(t, err)
	defer conn.Close()
	tc, ok := conn.(*tls.Conn)
	require.True(t, ok, "still a *tls.Conn with FirstByteTimeout, got %T", conn)
	assert.True(t, tc.ConnectionState().HandshakeComplete)
	_, err = conn.Write([]byte("request"))
	require.NoError(t, err)
	start := time.Now()
	_, err = conn.Read(make([]byte, 16))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	assert.True(t, de.Timeout())
	assert.Less(t, time.Since(start), 3*time.Second)
}

func TestFirstByteNoCostAfterReply(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{}) // echo
	d := dial.Dialer{FirstByteTimeout: 200 * time.Millisecond}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("a"))
	require.NoError(t, err)
	_, err = io.ReadFull(conn, make([]byte, 1))
	require.NoError(t, err)
	// After the first byte the watch is gone: a read on the quiet conn
	// waits for the caller's own deadline (600ms), not 200ms, and fails
	// with the plain deadline error.
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(600*time.Millisecond)))
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	elapsed := time.Since(start)
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var de *dial.Error
	assert.False(t, errors.As(err, &de), "not a first-byte error after the first byte")
	assert.GreaterOrEqual(t, elapsed, 550*time.Millisecond)
	// Later writes and reads keep working.
	require.NoError(t, conn.SetReadDeadline(time.Time{}))
	_, err = conn.Write([]byte("b"))
	require.NoError(t, err)
	_, err = io.ReadFull(conn, make([]byte, 1))
	require.NoError(t, err)
}

func TestFirstByteCallerDeadlineEarlier(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	d := dial.Dialer{FirstByteTimeout: 5 * time.Second}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	require.NoError(t, conn.SetReadDeadline(time.Now().Add(150*time.Millisecond)))
	_, err = conn.Write([]byte("x"))
	require.NoError(t, err)
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	assert.Less(t, time.Since(start), 2*time.Second, "the caller's 150ms deadline, not the 5s first-byte limit")
	assert.ErrorIs(t, err, os.ErrDeadlineExceeded)
	var de *dial.Error
	assert.False(t, errors.As(err, &de), "the caller's own deadline is reported as theirs: %v", err)
}

func TestFirstByteCallerDeadlineLater(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	d := dial.Dialer{FirstByteTimeout: 200 * time.Millisecond}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("x"))
	require.NoError(t, err)
	// Set after the Write: the first-byte limit must survive it.
	require.NoError(t, conn.SetDeadline(time.Now().Add(10*time.Second)))
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	assert.Less(t, time.Since(start), 2*time.Second)
}

func TestFirstByteConcurrentReader(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	d := dial.Dialer{FirstByteTimeout: 200 * time.Millisecond}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	// A reader blocked before the first Write is covered once it happens.
	errc := make(chan error, 1)
	go func() {
		_, err := conn.Read(make([]byte, 1))
		errc <- err
	}()
	time.Sleep(50 * time.Millisecond)
	_, err = conn.Write([]byte("x"))
	require.NoError(t, err)
	select {
	case err := <-errc:
		var de *dial.Error
		require.ErrorAs(t, err, &de)
		assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	case <-time.After(3 * time.Second):
		t.Fatal("the pending Read was not bounded by FirstByteTimeout")
	}
}
