package dial_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"os"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
)

// hangLB is incident 01's load balancer on loopback: a TLS backend behind
// a balancer that stalls the handshakes of the connections sel picks.
func hangLB(t *testing.T, sel faultnet.Selector) (string, *tls.Config) {
	t.Helper()
	serverCfg, clientCfg, _ := testCert(t, testHost)
	backend := faultnet.Start(t, faultnet.Config{TLS: serverCfg, Handler: func(c net.Conn) { _, _ = io.Copy(io.Discard, c) }})
	lb := faultnet.StartLB(t, faultnet.LBConfig{Backend: backend.Addr(), Fault: faultnet.StallTLS, Select: sel})
	clientCfg.ServerName = testHost
	return lb.Addr(), clientCfg
}

// dialWithRetry is a 5s-deadline client: a TLS dial wrapped in the
// default retry policy.
func dialWithRetry(t *testing.T, d *dial.Dialer, addr string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
	defer cancel()
	start := time.Now()
	c, err := retry.Do(ctx, &retry.Policy{}, func(ctx context.Context) (net.Conn, error) {
		return d.DialTLSContext(ctx, "tcp", addr)
	})
	if err == nil {
		c.Close()
	}
	return time.Since(start), err
}

// TestHangBalancerFiveSecondDeadline: break 15 on loopback. The balancer
// hangs both connections of three dials (ordinals 5 and 6, 15 and 16, 25
// and 26: each dial's first attempt and the one that races it after
// AttemptDelay). A client with a 5s deadline and the default retry policy
// never fails: each such dial gives up at about half the deadline and the
// retry completes (before, each of them failed at 5s).
func TestHangBalancerFiveSecondDeadline(t *testing.T) {
	if testing.Short() {
		t.Skip("about 8s")
	}
	checkFDs(t)
	hung := []int{5, 6, 15, 16, 25, 26}
	addr, clientCfg := hangLB(t, func(n int) bool { return slices.Contains(hung, n) })
	d := &dial.Dialer{TLSConfig: clientCfg, FirstByteTimeout: -1}
	var worst time.Duration
	for i := range 30 {
		took, err := dialWithRetry(t, d, addr)
		require.NoError(t, err, "dial %d", i)
		worst = max(worst, took)
	}
	assert.Less(t, worst, 4*time.Second, "the slowest call")
}

// TestHangBalancerMeasure prints how a 5s-deadline client fares against a
// balancer that hangs a pseudo-random 8% of handshakes (the hangdemo load):
// LIFELINE_MEASURE=N runs N calls.
func TestHangBalancerMeasure(t *testing.T) {
	n, _ := strconv.Atoi(os.Getenv("LIFELINE_MEASURE"))
	if n <= 0 {
		t.Skip("set LIFELINE_MEASURE=N to measure N calls")
	}
	addr, clientCfg := hangLB(t, func(k int) bool {
		// splitmix64: ordinals hung independently, 8% of them.
		z := uint64(k) + 0x9e3779b97f4a7c15
		z = (z ^ z>>30) * 0xbf58476d1ce4e5b9
		z = (z ^ z>>27) * 0x94d049bb133111eb
		return (z^z>>31)%100 < 8
	})
	d := &dial.Dialer{TLSConfig: clientCfg, FirstByteTimeout: -1}
	var lat []time.Duration
	fails := 0
	for range n {
		took, err := dialWithRetry(t, d, addr)
		if err != nil {
			fails++
			t.Logf("failed after %v: %v", took, err)
			continue
		}
		lat = append(lat, took)
	}
	slices.Sort(lat)
	q := func(p float64) time.Duration { return lat[int(p*float64(len(lat)-1))] }
	t.Logf("%d calls, %d failed; p50 %v p99 %v p99.9 %v max %v", n, fails, q(0.5), q(0.99), q(0.999), lat[len(lat)-1])
}
