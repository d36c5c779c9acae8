package transport_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// The first try of a hedged attempt runs on the caller's goroutine and the
// hedges on their own: these tests walk the ways an attempt can end
// besides the hedge overtaking a hung first try (TestHedgeFixed).

// hedgeServer answers its n-th request (from 1) as byHit says.
func hedgeServer(t *testing.T, byHit func(n int32, w http.ResponseWriter, r *http.Request)) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var hits atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		byHit(hits.Add(1), w, r)
	}))
	t.Cleanup(srv.Close)
	return srv, &hits
}

// TestHedgeFirstFailsWhileHedgeWaits: the first try fails after the hedge
// started; the attempt waits for the hedge, whose answer wins, and the
// first try's failure is counted as masked by the hedge.
func TestHedgeFirstFailsWhileHedgeWaits(t *testing.T) {
	srv, hits := hedgeServer(t, func(n int32, w http.ResponseWriter, r *http.Request) {
		if n == 1 {
			time.Sleep(150 * time.Millisecond)
			panic(http.ErrAbortHandler) // the conn drops: the first try fails
		}
		time.Sleep(200 * time.Millisecond)
		_, _ = io.WriteString(w, "hedge")
	})
	rg := newRig(t)
	tr := &transport.Transport{HedgeDelay: 50 * time.Millisecond, Retry: &retry.Policy{MaxAttempts: 1}, MeterProvider: rg.mp}
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err, "the hedge's answer, not the first try's failure")
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "hedge", string(b))
	assert.Less(t, time.Since(start), 2*time.Second)
	// Hedges at 50ms and 100ms; the first try fails at 150ms, the hedges
	// answer from 250ms.
	assert.EqualValues(t, 3, hits.Load())
	hedges := map[string]int64{}
	for _, p := range rg.sums(t, "lifeline.http.hedges") {
		hedges[val(p.Attributes, "lifeline.http.hedge")] += p.Value
	}
	assert.Equal(t, map[string]int64{"fired": 2, "won": 1}, hedges)
	failures := 0
	for _, p := range rg.sums(t, "lifeline.masked_failures") {
		assert.Equal(t, "hedge", val(p.Attributes, "lifeline.masked_by"))
		if val(p.Attributes, "error.type") != "first_byte_overtaken" {
			failures += int(p.Value)
		}
	}
	assert.Equal(t, 1, failures, "the first try's failure, masked by the hedge")
}

// TestHedgeEveryTryFails: when the first try and its hedges all fail, the
// attempt fails with the last failure once every try has ended, and no
// hedge is left running.
func TestHedgeEveryTryFails(t *testing.T) {
	srv, hits := hedgeServer(t, func(n int32, w http.ResponseWriter, r *http.Request) {
		time.Sleep(100 * time.Millisecond)
		panic(http.ErrAbortHandler)
	})
	tr := &transport.Transport{HedgeDelay: 60 * time.Millisecond, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.Error(t, err)
	assert.Nil(t, resp)
	assert.Less(t, time.Since(start), 2*time.Second)
	// The first try fails at about 100ms, the hedge (60ms) at about 160ms;
	// a second hedge may start at 120ms, while the first hedge is still
	// in flight.
	got := hits.Load()
	assert.GreaterOrEqual(t, got, int32(2))
	assert.LessOrEqual(t, got, int32(3))
	time.Sleep(200 * time.Millisecond)
	assert.Equal(t, got, hits.Load(), "no hedge after the attempt ended")
}

// TestHedgeTwoHedges: the first try and the first hedge hang; the second
// hedge, a delay later, answers and wins, and both hung tries are
// cancelled.
func TestHedgeTwoHedges(t *testing.T) {
	var hung sync.WaitGroup
	hung.Add(2)
	srv, hits := hedgeServer(t, func(n int32, w http.ResponseWriter, r *http.Request) {
		if n <= 2 {
			defer hung.Done()
			neverAnswer(w, r)
		}
		_, _ = io.WriteString(w, "third")
	})
	rg := newRig(t)
	tr := &transport.Transport{HedgeDelay: 50 * time.Millisecond, MeterProvider: rg.mp}
	defer tr.CloseIdleConnections()
	start := time.Now()
	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err)
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, "third", string(b))
	assert.Less(t, time.Since(start), 2*time.Second, "two hedge delays, not the hangs")
	assert.EqualValues(t, 3, hits.Load())
	done := make(chan struct{})
	go func() { hung.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the hung tries were not cancelled")
	}
	hedges := map[string]int64{}
	for _, p := range rg.sums(t, "lifeline.http.hedges") {
		hedges[val(p.Attributes, "lifeline.http.hedge")] += p.Value
	}
	assert.Equal(t, map[string]int64{"fired": 2, "won": 1}, hedges)
}
