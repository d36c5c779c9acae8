//go:build linux

package dial_test

import (
	"context"
	"io"
	"net"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
)

// TestNetnsLossyNetwork replays incident 05: a network that drops a share
// of packets (15% each way, nftables numgen inside a namespace the test
// made) under a host with three addresses. A dial whose SYN or SYN-ACK is
// lost is overtaken by the next address after AttemptDelay instead of
// waiting for the kernel's 1s SYN retransmit, retries cover the rare call
// whose every address or whose exchange was lost, every call succeeds, and
// the failures the race absorbed are still counted by the masked-failure
// metric, so monitoring sees the lossy network although no call failed.
func TestNetnsLossyNetwork(t *testing.T) {
	checkFDs(t)
	ns := faultnet.NewNetns(t)
	first := ns.Start(t, faultnet.Config{Addr: "127.0.0.1:0"})
	port := strconv.Itoa(first.Port())
	ns.Start(t, faultnet.Config{Addr: "127.0.0.2:" + port})
	ns.Start(t, faultnet.Config{Addr: "127.0.0.3:" + port})
	require.NoError(t, ns.Loss(first.Port(), 15))

	rig := newTelemetry(t)
	d := &dial.Dialer{
		Resolver:       resolverFor("127.0.0.1", "127.0.0.2", "127.0.0.3"),
		DialFunc:       ns.DialContext,
		AttemptDelay:   100 * time.Millisecond,
		ConnectTimeout: 2500 * time.Millisecond, // room for one SYN retransmit (1s)
		MeterProvider:  rig.mp,
		TracerProvider: rig.tp,
	}
	policy := &retry.Policy{MaxAttempts: 4, InitialInterval: 10 * time.Millisecond, MeterProvider: rig.mp}
	addr := net.JoinHostPort(testHost, port)

	// Each call's handshake (SYN and SYN-ACK) is lost with probability
	// 1-0.85² ≈ 28%, so 20 calls mask ≈5 failures on average, yet all 20
	// handshakes get through about once in 700 runs. The test therefore goes
	// on past 20 calls until the race has masked a failure, up to 200 calls
	// (all 200 clean: ≈1e-28).
	const minCalls, maxCalls = 20, 200
	masked := func() int64 {
		var n int64
		for _, p := range rig.sumPoints(t, "lifeline.masked_failures") {
			n += p.Value
			assert.Equal(t, "connect", setValue(p.Attributes, "lifeline.phase"))
		}
		return n
	}
	start := time.Now()
	calls := 0
	for calls < minCalls || (calls < maxCalls && masked() == 0) {
		ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
		err := policy.Do(ctx, func(ctx context.Context) error {
			c, err := d.DialContext(ctx, "tcp", addr)
			if err != nil {
				return err
			}
			defer c.Close()
			_ = c.SetDeadline(time.Now().Add(3 * time.Second))
			if _, err := io.WriteString(c, "ping"); err != nil {
				return err
			}
			_, err = io.ReadFull(c, make([]byte, 4))
			return err
		})
		cancel()
		require.NoError(t, err, "call %d through a 15%% lossy network", calls)
		calls++
	}
	elapsed := time.Since(start)
	assert.Less(t, elapsed, time.Duration(calls)*3*time.Second, "bounded: each call well inside its 15s context")

	n := masked()
	t.Logf("%d calls through 15%% loss in %v; masked failures %d", calls, elapsed.Round(time.Millisecond), n)
	assert.Positive(t, n, "lost SYNs were overtaken by the race and counted as masked failures")
}
