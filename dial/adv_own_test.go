package dial_test

import (
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// Adversarial tests of a Dialer's own Health (issue 23, item 4) from
// outside, with real sockets on loopback, under -race.

// A zero-config Dialer that dials many hosts (1300 distinct loopback
// addresses, each refused) from 8 goroutines while others read its
// Scoreboard: the scoreboard stays one Health, bounded by its MaxPeers
// (1024), and every read is consistent.
func TestAdvOwnScoreboardBoundedManyHosts(t *testing.T) {
	port := refusedPort(t)
	d := &dial.Dialer{}
	sb := d.Scoreboard()
	const hosts = 1300
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			for {
				i := next.Add(1) - 1
				if i >= hosts {
					return
				}
				addr := fmt.Sprintf("127.0.%d.%d:%d", i/250, i%250+1, port)
				_, err := d.DialContext(t.Context(), "tcp", addr)
				var de *dial.Error
				if !errors.As(err, &de) {
					t.Errorf("%s: %v", addr, err)
					return
				}
			}
		})
	}
	stop := make(chan struct{})
	var readers sync.WaitGroup
	for range 2 {
		readers.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				require.Same(t, sb, d.Scoreboard())
				snap := sb.Snapshot()
				assert.LessOrEqual(t, len(snap), 1024)
				for _, st := range snap[:min(len(snap), 3)] {
					_ = sb.PeerLabel(st.Peer)
				}
			}
		})
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	snap := sb.Snapshot()
	assert.Len(t, snap, 1024, "the scoreboard keeps MaxPeers peers, the most recent")
	last := netip.MustParseAddrPort(fmt.Sprintf("127.0.%d.%d:%d", (hosts-1)/250, (hosts-1)%250+1, port))
	st, ok := sb.Stats(last)
	require.True(t, ok, "a peer just seen is remembered")
	assert.True(t, st.Demoted)
}

// refusedPort is a loopback port nothing listens on, reserved on
// 127.0.0.1 until the test ends.
func refusedPort(t *testing.T) int {
	t.Helper()
	return int(netip.MustParseAddrPort(faultnet.RefusedAddr(t, "tcp")).Port())
}

// A host that flips between refusing and accepting, dialed by 4
// goroutines at once through one zero-config Dialer: the scoreboard counts
// every dial exactly once by its outcome, and after a good phase the peer
// is no longer demoted (successes earn its place back).
func TestAdvOwnFlappingHost(t *testing.T) {
	checkFDs(t)
	port := faultnet.ReservePort(t, "tcp")
	addr := port.Addr()
	d := &dial.Dialer{}
	var ok, refused atomic.Int64
	round := func() {
		var wg sync.WaitGroup
		for range 4 {
			wg.Go(func() {
				for range 5 {
					c, err := d.DialContext(t.Context(), "tcp", addr)
					if err == nil {
						ok.Add(1)
						c.Close()
						continue
					}
					var de *dial.Error
					if errors.As(err, &de) && de.Phase == dial.PhaseConnect {
						refused.Add(1)
						continue
					}
					t.Errorf("dial: %v", err)
				}
			})
		}
		wg.Wait()
	}
	peer := netip.MustParseAddrPort(addr)
	for i := range 6 {
		round() // refused
		ln, err := port.Listen()
		require.NoError(t, err, "round %d", i)
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		st, _ := d.Scoreboard().Stats(peer)
		assert.True(t, st.Demoted, "round %d: demoted after its refusals", i)
		round() // accepted
		st, _ = d.Scoreboard().Stats(peer)
		assert.False(t, st.Demoted, "round %d: 20 successes after 20 refusals earn its place back (score %v)", i, st.Score)
		ln.Close()
		<-done
	}
	st, found := d.Scoreboard().Stats(peer)
	require.True(t, found)
	t.Logf("%d ok, %d refused; %+v", ok.Load(), refused.Load(), st)
	assert.EqualValues(t, ok.Load(), st.Successes, "every success recorded once")
	assert.EqualValues(t, refused.Load(), st.Refusals, "every refusal recorded once")
}
