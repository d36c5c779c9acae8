package dial_test

import (
	"context"
	"io"
	"net"
	"net/netip"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
)

// hugeResolver answers n distinct IPv4 addresses and n copies of ::1 (with
// an invalid and an IPv4-mapped address among them).
type hugeResolver struct{ n int }

func (r hugeResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	out := make([]netip.Addr, 0, r.n+2)
	for i := range r.n {
		if network == "ip6" {
			out = append(out, netip.IPv6Loopback())
		} else {
			out = append(out, netip.AddrFrom4([4]byte{127, 1, byte(i >> 8), byte(i)}))
		}
	}
	return append(out, netip.Addr{}, netip.MustParseAddr("::ffff:127.1.0.0")), nil
}

// TestHugeDNSAnswerKeepsTimeout: a resolver that answers 60,000 addresses
// per family (a hostile or broken one) does not stretch the dial past its
// Timeout (de-duplication was quadratic: a 2s dial took 15s), and the
// error's text stays short while Unwrap reaches every attempt.
func TestHugeDNSAnswerKeepsTimeout(t *testing.T) {
	var calls atomic.Int64
	refuse := func(ctx context.Context, network, addr string) (net.Conn, error) {
		calls.Add(1) // the race runs one attempt at a time here: each fails at once
		time.Sleep(100 * time.Microsecond)
		return nil, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}
	d := &dial.Dialer{Resolver: hugeResolver{60000}, DialFunc: refuse, Timeout: 2 * time.Second}
	start := time.Now()
	_, err := d.DialContext(context.Background(), "tcp", "huge.test:1")
	elapsed := time.Since(start)
	require.Error(t, err)
	assert.Less(t, elapsed, 6*time.Second, "the dial outlived its Timeout")
	assert.Less(t, len(err.Error()), 2000, "error text of %d bytes", len(err.Error()))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.NotEmpty(t, de.Phase)
	n := 0
	if u, ok := de.Err.(interface{ Unwrap() []error }); ok {
		for _, x := range u.Unwrap() {
			if _, ok := x.(*dial.Error); ok {
				n++
			}
		}
	}
	// Every attempt that failed is in the chain (the last may have been cut
	// by the Timeout instead). How many ran depends on the machine: under
	// the race detector and CPU hogs, ordering 120,000 addresses can take
	// most of the Timeout.
	made := int(calls.Load())
	assert.GreaterOrEqual(t, n, made-1, "Unwrap reaches every attempt (%d of %d)", n, made)
	assert.LessOrEqual(t, n, made)
	t.Logf("%d attempts in %v; %s", made, elapsed, err)
}

// TestDialFuncConnWithErrorIsClosed: a DialFunc that returns a conn and an
// error (against its contract) does not leak the conn.
func TestDialFuncConnWithErrorIsClosed(t *testing.T) {
	client, server := net.Pipe()
	defer server.Close()
	d := &dial.Dialer{DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return client, &net.OpError{Op: "dial", Net: network, Err: syscall.ECONNREFUSED}
	}, Timeout: time.Second}
	_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:1")
	require.Error(t, err)
	_ = server.SetReadDeadline(time.Now().Add(2 * time.Second))
	_, err = server.Read(make([]byte, 1))
	require.ErrorIs(t, err, io.EOF, "the conn the DialFunc returned was left open")
}
