package dial_test

import (
	"context"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
	"weak"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// connectCounter is a DialFunc (a net.Dialer) that counts the connects to
// each address.
type connectCounter struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *connectCounter) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[addr]++
	c.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (c *connectCounter) get(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[addr]
}

// TestZeroConfigDialerDemotesDeadAddress: a Dialer without a Health (issue
// 23, item 4) dials a name whose first address is dead (refused) and whose
// second is live. The dead address is tried in the first dial only: the
// refusal demotes it for the next dials (before: every dial tried it
// first). The race's masked failure names the dead peer, not "other".
func TestZeroConfigDialerDemotesDeadAddress(t *testing.T) {
	checkFDs(t)
	live := faultnet.Start(t, faultnet.Config{Addr: "127.0.0.1:0"})
	dead := net.JoinHostPort("127.0.0.2", itoa(live.Port())) // nothing listens there: refused
	var cc connectCounter
	tel := newTelemetry(t)
	d := &dial.Dialer{
		Resolver:      resolverFor("127.0.0.2", "127.0.0.1"),
		DialFunc:      cc.dial,
		MeterProvider: tel.mp,
	}
	const dials = 12
	for range dials {
		conn, err := d.DialContext(t.Context(), "tcp", hostPort(live.Port()))
		require.NoError(t, err)
		assert.Equal(t, live.Addr(), conn.RemoteAddr().String())
		conn.Close()
	}
	assert.Equal(t, dials, cc.get(live.Addr()), "every dial connected to the live address")
	assert.LessOrEqual(t, cc.get(dead), 2, "the dead address is demoted after its first refusal (without memory: %d of %d)", dials, dials)

	st, ok := d.Scoreboard().Stats(netip.MustParseAddrPort(dead))
	require.True(t, ok, "the Dialer's own Health remembers the dead peer")
	assert.True(t, st.Demoted)
	assert.EqualValues(t, cc.get(dead), st.Refusals)
	assert.Same(t, d.Scoreboard(), d.Scoreboard(), "one Health for the Dialer's life")
	assert.Nil(t, d.Health, "the field is never written")

	masked := tel.sumPoints(t, "lifeline.masked_failures")
	require.Len(t, masked, 1)
	assert.EqualValues(t, cc.get(dead), masked[0].Value)
	assert.Equal(t, "127.0.0.2", setValue(masked[0].Attributes, "network.peer.address"),
		"a zero-config Dialer's masked failure names the failing address")
}

// TestZeroConfigErrorLabelsPeer: the MetricLabels of a failed dial's error
// name the peer with a zero-config Dialer (retry's masked count reads them).
func TestZeroConfigErrorLabelsPeer(t *testing.T) {
	addr := faultnet.RefusedAddr(t, "tcp")
	var d dial.Dialer
	_, err := d.DialContext(t.Context(), "tcp", addr)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	phase, peer := de.MetricLabels()
	assert.Equal(t, "connect", phase)
	assert.Equal(t, "127.0.0.1", peer)
}

// TestScoreboardIdentity: the Health a Dialer keeps is its own: a copy is
// another Dialer, an explicit Health wins, nil Dialers share the zero
// Dialer's, and owners of two types at one address are told apart.
func TestScoreboardIdentity(t *testing.T) {
	d := &dial.Dialer{}
	h := d.Scoreboard()
	require.NotNil(t, h)
	assert.Same(t, h, d.Scoreboard())
	assert.Same(t, h, dial.HealthFor(d))
	c := *d
	assert.NotSame(t, h, c.Scoreboard(), "a copy keeps a Health of its own")

	shared := &dial.Health{}
	e := &dial.Dialer{Health: shared}
	assert.Same(t, shared, e.Scoreboard())

	var nilD *dial.Dialer
	assert.Same(t, nilD.Scoreboard(), nilD.Scoreboard())
	assert.Nil(t, dial.HealthFor[dial.Dialer](nil))

	type holder struct {
		d    dial.Dialer
		name string
	}
	o := &holder{name: "client"}
	assert.NotSame(t, dial.HealthFor(o), o.d.Scoreboard(), "a struct and its first field are two owners")
	assert.Same(t, dial.HealthFor(o), dial.HealthFor(o), "owner %s", o.name)
}

// TestScoreboardConcurrentFirstUse: dials racing to make a Dialer's Health
// all get the same one.
func TestScoreboardConcurrentFirstUse(t *testing.T) {
	for range 20 {
		d := &dial.Dialer{}
		var wg sync.WaitGroup
		got := make([]*dial.Health, 8)
		for i := range got {
			wg.Go(func() { got[i] = d.Scoreboard() })
		}
		wg.Wait()
		for _, h := range got {
			require.Same(t, got[0], h)
		}
	}
}

// TestDialerPerCallDoesNotGrow: a Dialer built for each call (each keeps a
// Health of its own) leaves nothing behind: the kept Healths go with their
// Dialers, and the Dialers themselves are collected.
func TestDialerPerCallDoesNotGrow(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	settle := func(limit int) int {
		n := dial.OwnedHealths()
		for deadline := time.Now().Add(10 * time.Second); n > limit && time.Now().Before(deadline); n = dial.OwnedHealths() {
			runtime.GC()
			time.Sleep(5 * time.Millisecond)
		}
		return n
	}
	for range 3 {
		runtime.GC()
	}
	time.Sleep(10 * time.Millisecond) // the cleanups of earlier tests' Dialers
	before := dial.OwnedHealths()
	const calls = 2000
	var sample weak.Pointer[dial.Dialer]
	var peak atomic.Int64
	for i := range calls {
		d := &dial.Dialer{}
		if i == calls/2 {
			sample = weak.Make(d)
		}
		conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
		require.NoError(t, err)
		conn.Close()
		if n := int64(dial.OwnedHealths()); n > peak.Load() {
			peak.Store(n)
		}
	}
	after := settle(before + 10)
	t.Logf("kept Healths: %d before, peak %d during %d calls, %d after", before, peak.Load(), calls, after)
	assert.LessOrEqual(t, after, before+10, "every per-call Dialer's Health was forgotten")
	assert.Nil(t, sample.Value(), "the map does not keep a Dialer alive")
}

// TestZeroConfigDeadAddressProbedAsPenaltyDecays: a Dialer without a
// Health dials a name of two addresses, the first refusing, once a second
// for five minutes (synctest time). The dead address is tried again only
// when its penalty has decayed below the demotion mark (a refusal: one
// half-life, 1m; each further refusal adds to what is left), and demoted
// again at once: a handful of connects in 300 dials, where a Dialer
// without memory made 300.
func TestZeroConfigDeadAddressProbedAsPenaltyDecays(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{plan: map[string]fakeStep{"10.0.0.1": {kind: "refuse"}, "10.0.0.2": {kind: "ok"}}}
		defer fn.close()
		d := &dial.Dialer{Resolver: resolverFor("10.0.0.1", "10.0.0.2"), DialFunc: fn.dial}
		const dials = 300
		var deadAt []time.Duration
		start := time.Now()
		for range dials {
			before := countCalls(fn, "10.0.0.1")
			conn, err := d.DialContext(t.Context(), "tcp", hostPort(443))
			require.NoError(t, err)
			conn.Close()
			if countCalls(fn, "10.0.0.1") > before {
				deadAt = append(deadAt, time.Since(start).Round(time.Second))
			}
			time.Sleep(time.Second)
		}
		t.Logf("connects to the dead address in %d dials: at %v", dials, deadAt)
		require.GreaterOrEqual(t, len(deadAt), 2, "tried again once its penalty decayed")
		assert.LessOrEqual(t, len(deadAt), 5)
		assert.Equal(t, time.Duration(0), deadAt[0], "the first dial meets it")
		assert.GreaterOrEqual(t, deadAt[1], time.Minute, "not before one half-life")
	})
}

func countCalls(f *fakeNet, host string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	n := 0
	for _, h := range f.calls {
		if h == host {
			n++
		}
	}
	return n
}
