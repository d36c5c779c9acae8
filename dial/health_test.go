package dial_test

import (
	"fmt"
	"math"
	"net/netip"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
)

func TestHealthDecayAndRecovery(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h dial.Health // zero value: HalfLife 1m
		p := netip.MustParseAddrPort("192.0.2.1:443")
		h.Record(p, dial.EventRefused, 0)
		assert.InDelta(t, 1.0, h.Score(p), 1e-9)
		st, _ := h.Stats(p)
		assert.True(t, st.Demoted)
		assert.EqualValues(t, 1, st.Refusals)

		time.Sleep(59 * time.Second)
		st, _ = h.Stats(p)
		assert.True(t, st.Demoted, "still demoted just before one half-life")
		time.Sleep(2 * time.Second)
		st, _ = h.Stats(p)
		assert.False(t, st.Demoted, "a refusal fades after one half-life: the peer earns its place back")
		assert.InDelta(t, 0.5*math.Exp2(-1.0/60), st.Score, 1e-6)

		// A timeout weighs twice as much: demoted for two half-lives.
		h.Record(p, dial.EventConnectTimeout, 0)
		time.Sleep(90 * time.Second)
		st, _ = h.Stats(p)
		assert.True(t, st.Demoted)
		// A success halves the penalty at once.
		h.Record(p, dial.EventSuccess, 3*time.Millisecond)
		st, _ = h.Stats(p)
		assert.False(t, st.Demoted)
		assert.EqualValues(t, 1, st.Successes)
		assert.Equal(t, 3*time.Millisecond, st.LastLatency)
		assert.Equal(t, 3*time.Millisecond, st.LatencyEWMA)
		h.Record(p, dial.EventSuccess, 13*time.Millisecond)
		st, _ = h.Stats(p)
		assert.Equal(t, 5*time.Millisecond, st.LatencyEWMA, "EWMA with weight 0.2")
		assert.Equal(t, time.Now(), st.LastSuccess)
		assert.Equal(t, dial.EventSuccess, st.LastEvent)
	})
}

// TestHealthPenaltyCapped: a peer that failed 300 times is back among the
// healthy 4 half-lives after its last failure, as one that failed 16
// times is (the score is capped at 8), not log2(600) ≈ 9.2.
func TestHealthPenaltyCapped(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		var h dial.Health
		p := netip.MustParseAddrPort("192.0.2.1:443")
		for range 300 {
			h.Record(p, dial.EventRefused, 0)
		}
		assert.InDelta(t, 8.0, h.Score(p), 1e-9)
		time.Sleep(4*time.Minute - time.Second)
		st, _ := h.Stats(p)
		assert.True(t, st.Demoted, "still demoted just before four half-lives")
		time.Sleep(2 * time.Second)
		st, _ = h.Stats(p)
		assert.False(t, st.Demoted, "back among the healthy four half-lives after its last failure")
	})
}

func TestHealthCustomHalfLife(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := dial.Health{HalfLife: 10 * time.Second}
		p := netip.MustParseAddrPort("192.0.2.1:443")
		h.Record(p, dial.EventFirstByteStall, 0)
		time.Sleep(10 * time.Second)
		assert.InDelta(t, 1.0, h.Score(p), 1e-9)
	})
}

func TestHealthBoundedMemory(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		h := dial.Health{MaxPeers: 4}
		for i := range 10 {
			h.Record(netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte(i)}), 443), dial.EventRefused, 0)
			time.Sleep(time.Second)
		}
		snap := h.Snapshot()
		require.Len(t, snap, 4)
		for i, st := range snap {
			assert.Equal(t, fmt.Sprintf("192.0.2.%d:443", 6+i), st.Peer.String(), "the most recently seen peers are kept, sorted")
		}
		h.Reset()
		assert.Empty(t, h.Snapshot())
	})
}

func TestHealthEventCounters(t *testing.T) {
	var h dial.Health
	p := netip.MustParseAddrPort("[2001:db8::1]:443")
	for _, ev := range []dial.Event{dial.EventSuccess, dial.EventRefused, dial.EventReset, dial.EventConnectTimeout,
		dial.EventConnectStall, dial.EventTLSStall, dial.EventTLSFailure, dial.EventFirstByteStall, dial.EventFailure} {
		h.Record(p, ev, time.Millisecond)
	}
	st, ok := h.Stats(p)
	require.True(t, ok)
	assert.Equal(t, dial.PeerStats{
		Peer: p, Successes: 1, Refusals: 1, Resets: 1, ConnectTimeouts: 1, ConnectStalls: 1, TLSStalls: 1,
		TLSFailures: 1, FirstByteStalls: 1, OtherFailures: 1,
		LastLatency: time.Millisecond, LatencyEWMA: time.Millisecond,
		Score: st.Score, Demoted: true, LastSuccess: st.LastSuccess, LastFailure: st.LastFailure,
		LastEvent: dial.EventFailure,
	}, st)
	assert.InDelta(t, 8.0, st.Score, 0.01, "1+1+2+1+2+1+2+1 = 11, capped at 8")
	assert.Equal(t, "connect_timeout", dial.EventConnectTimeout.String())
	_, ok = h.Stats(netip.MustParseAddrPort("192.0.2.9:1"))
	assert.False(t, ok)

	var nilH *dial.Health
	nilH.Record(p, dial.EventRefused, 0) // no-op, no panic
	assert.Zero(t, nilH.Score(p))
	assert.Nil(t, nilH.Snapshot())
}

func TestHealthConcurrentUse(t *testing.T) {
	h := &dial.Health{MaxPeers: 16}
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 500 {
				p := netip.AddrPortFrom(netip.AddrFrom4([4]byte{192, 0, 2, byte((g*7 + i) % 40)}), 443)
				h.Record(p, dial.Event(i%9), time.Millisecond)
				if i%50 == 0 {
					_ = h.Snapshot()
					_ = h.Score(p)
				}
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, len(h.Snapshot()), 16)
}
