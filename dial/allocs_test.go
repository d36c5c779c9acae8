package dial_test

import (
	"context"
	"math"
	"net"
	"runtime/debug"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
)

// The allocations of one DialContext+Close of a loopback IP literal,
// measured without the listener's accept (see allocListener).
const (
	// maxDialAllocs bounds the zero Dialer's (issue 20: at most 35). Of
	// its 34, 25 are net.Dialer{Timeout: 5s}'s own dial, 3 the span that
	// the otel global tracer makes while no provider is set, and 6
	// lifeline's (maxOwnAllocs).
	maxDialAllocs = 34
	// maxOwnAllocs bounds what a Dialer with noop providers makes beyond
	// net.Dialer{Timeout: 5s} (whose deadline context lifeline's
	// attempt context replaces, one for one): the dial's state and race
	// (one struct), the race's results channel, the attempt goroutine's
	// closure, the stagger timer (three: a lone address races itself
	// after AttemptDelay) and the first-byte watch; less the address
	// partition net.Dialer makes for a dual-stack race, which lifeline's
	// FallbackDelay -1 skips. (TCP_USER_TIMEOUT's RawConn and closure
	// stay on the stack: see setUserTimeout.)
	maxOwnAllocs = 6
)

// raceBuild reports whether the test binary was built with -race, which
// changes allocation counts.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// allocListener is a loopback listener that never accepts: the kernel
// completes each handshake into its backlog (4096 on Linux by default;
// one round dials 101 conns), so the allocations counted are the
// dialer's alone, not an accept loop's running at the same time.
func allocListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	return ln.Addr().String()
}

// dialAllocs is testing.AllocsPerRun of a dial of a fresh listener's
// address and the Close of its conn: the least of three rounds, so that
// a goroutine another test left finishing in the background cannot add
// its allocations to the dial's.
func dialAllocs(t *testing.T, dialFn func(ctx context.Context, network, address string) (net.Conn, error)) float64 {
	least := math.Inf(1)
	for range 3 {
		addr := allocListener(t)
		ctx := context.Background()
		least = min(least, testing.AllocsPerRun(100, func() {
			c, err := dialFn(ctx, "tcp", addr)
			if err != nil {
				t.Fatal(err)
			}
			c.Close()
		}))
	}
	return least
}

// TestDialContextAllocs pins the allocations of a DialContext+Close of a
// loopback listener's IP with the zero Dialer: the lone address still
// raced against itself (its stagger timer armed), the first-byte watch
// on, TCP_USER_TIMEOUT set. It also pins lifeline's own share, beyond
// net.Dialer{Timeout: 5s}, with noop providers, which no change of net's
// own allocations in a Go release moves.
func TestDialContextAllocs(t *testing.T) {
	if raceBuild() {
		t.Skip("the race detector changes allocations")
	}
	nd := net.Dialer{Timeout: 5 * time.Second}
	netAllocs := dialAllocs(t, nd.DialContext)
	var zero dial.Dialer
	zeroAllocs := dialAllocs(t, zero.DialContext)
	noopAllocs := dialAllocs(t, benchDialer().DialContext)
	t.Logf("allocations per DialContext+Close of a loopback IP: zero Dialer %.0f, noop providers %.0f, net.Dialer{Timeout: 5s} %.0f",
		zeroAllocs, noopAllocs, netAllocs)
	if zeroAllocs > maxDialAllocs {
		t.Errorf("the zero Dialer made %.0f allocations, want ≤ %d", zeroAllocs, maxDialAllocs)
	}
	if own := noopAllocs - netAllocs; own > maxOwnAllocs {
		t.Errorf("with noop providers the dial made %.0f allocations beyond net.Dialer{Timeout: 5s}'s %.0f, want ≤ %d",
			own, netAllocs, maxOwnAllocs)
	}
}
