//go:build linux

package dial_test

import (
	"context"
	"errors"
	"io"
	"os"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// Kernel-level faults inside a network namespace the test creates (root,
// ip and nft needed; NewNetns skips with the reason otherwise).

func TestNetnsDropSYN(t *testing.T) {
	checkFDs(t)
	ns := faultnet.NewNetns(t)
	srv := ns.Start(t, faultnet.Config{})
	require.NoError(t, ns.DropSYN(srv.Port()))
	d := dial.Dialer{DialFunc: ns.DialContext, ConnectTimeout: 500 * time.Millisecond}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseConnect, de.Phase)
	assert.Equal(t, "connect_timeout", de.ErrorType())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, elapsed, 490*time.Millisecond)
	assert.Less(t, elapsed, 3*time.Second, "SYN dropped: bounded by ConnectTimeout 500ms")

	// Recovery: the same Dialer connects once the rule is gone.
	require.NoError(t, ns.Flush())
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	conn.Close()
}

func TestNetnsRejectReset(t *testing.T) {
	checkFDs(t)
	ns := faultnet.NewNetns(t)
	srv := ns.Start(t, faultnet.Config{})
	require.NoError(t, ns.RejectReset(srv.Port()))
	d := dial.Dialer{DialFunc: ns.DialContext}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Less(t, time.Since(start), time.Second, "a RST fails the connect at once")
	assert.Equal(t, dial.PhaseConnect, de.Phase)
	assert.True(t, errors.Is(err, syscall.ECONNREFUSED) || errors.Is(err, syscall.ECONNRESET), "%v", err)
	assert.True(t, de.Retryable())
	assert.False(t, de.Timeout())
}

func TestNetnsVanishedPeerUserTimeout(t *testing.T) {
	checkFDs(t)
	ns := faultnet.NewNetns(t)
	srv := ns.Start(t, faultnet.Config{})
	// With TCP_USER_TIMEOUT 1s, unacknowledged data to a vanished peer
	// fails the conn in about a second; with the OS default it would keep
	// retransmitting for ~15 minutes.
	withUT := dial.Dialer{DialFunc: ns.DialContext, UserTimeout: time.Second}
	control := dial.Dialer{DialFunc: ns.DialContext, UserTimeout: -1, KeepAlive: netKeepAliveOff}
	a, err := withUT.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer a.Close()
	b, err := control.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer b.Close()
	for _, c := range []interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
	}{a, b} {
		_, err := c.Write([]byte("x"))
		require.NoError(t, err)
		_, err = io.ReadFull(c, make([]byte, 1))
		require.NoError(t, err, "echo works before the fault")
	}

	require.NoError(t, ns.Vanish(srv.Port()))
	type result struct {
		err     error
		elapsed time.Duration
	}
	probe := func(c interface {
		Write([]byte) (int, error)
		Read([]byte) (int, error)
		SetReadDeadline(time.Time) error
	}, out chan<- result) {
		start := time.Now()
		_ = c.SetReadDeadline(start.Add(4 * time.Second))
		_, err := c.Write([]byte("y"))
		if err == nil {
			_, err = c.Read(make([]byte, 1))
		}
		out <- result{err, time.Since(start)}
	}
	ra, rb := make(chan result, 1), make(chan result, 1)
	go probe(a, ra)
	go probe(b, rb)
	resA, resB := <-ra, <-rb
	require.Error(t, resA.err)
	assert.ErrorIs(t, resA.err, syscall.ETIMEDOUT, "the kernel gave up on the vanished peer: %v", resA.err)
	assert.Less(t, resA.elapsed, 3500*time.Millisecond, "UserTimeout 1s: the write errors in seconds")
	assert.ErrorIs(t, resB.err, os.ErrDeadlineExceeded, "without TCP_USER_TIMEOUT the conn is still hanging: %v", resB.err)
}
