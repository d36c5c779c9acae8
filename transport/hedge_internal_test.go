package transport

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// TestHedgeFirstTryHoldsSlot: a hedged attempt's first try runs in its
// slot's reusable context, which a winning hedge cancels through the slot
// (lose). A first try that has ended (a failed dial, say) while a hedge
// is answering keeps its slot until hedged notes its return (endHold):
// released at the try's end, the slot could already serve another
// request, which the late lose would then cancel. A slot cancelled by a
// lose is never reused.
func TestHedgeFirstTryHoldsSlot(t *testing.T) {
	tt := &Transport{HedgeDelay: time.Hour}
	defer tt.CloseIdleConnections()
	st := tt.get()
	require.NotNil(t, st.watch)
	newCall := func() *call {
		req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
		require.NoError(t, err)
		return &call{st: st, req: req, ctx: req.Context(), idempotent: true, replayable: true, hedge: true}
	}

	first := newCall().newTry(false)
	require.True(t, first.holdSlot, "the first try of a hedged attempt uses its slot's context")
	require.Nil(t, first.cancel, "no context of its own")
	s := first.slot
	first.finish(nil, errors.New("connect: connection refused"))
	require.Same(t, first, s.tr.Load(), "the ended try still holds its slot")

	// A hedge answered before hedged saw the first try return.
	first.lose()
	select {
	case <-first.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lose did not end the try's context")
	}
	require.ErrorIs(t, first.mapErr(first.ctx.Err()), errHedgeLost)
	first.endHold()
	assert.Nil(t, s.tr.Load(), "released once hedged let go")
	for range 20 {
		other := newCall().newTry(false)
		assert.NotSame(t, s, other.slot, "a slot a lose cancelled serves no other try")
		assert.NoError(t, other.ctx.Err())
		other.finish(nil, errors.New("done"))
		other.endHold()
	}

	// The usual end: the first try answered before any hedge; its slot is
	// released with it and serves the next try.
	first = newCall().newTry(false)
	s = first.slot
	first.endHold()
	first.finish(nil, nil)
	assert.Nil(t, s.tr.Load())
	require.Eventually(t, func() bool {
		_, _, running := st.watch.counts()
		return !running
	}, 5*time.Second, 10*time.Millisecond, "the watch's goroutine ends when idle")
}

// TestHedgeLostKeepsOwnFailure: a try that failed by itself (its conn
// dropped) just before a winning hedge cancelled it keeps its own error,
// so that it is counted as a failure the hedge masked, by its own type,
// not as a wait the hedge overtook; the cancel's own error is errHedgeLost.
// The same holds for AttemptTimeout: a failure of the try's own that the
// timer only followed is not made an attempt timeout (which is retried).
func TestHedgeLostKeepsOwnFailure(t *testing.T) {
	tt := &Transport{HedgeDelay: time.Hour}
	defer tt.CloseIdleConnections()
	st := tt.get()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
	require.NoError(t, err)
	c := &call{st: st, req: req, ctx: req.Context(), idempotent: true, replayable: true, hedge: true}
	for _, cause := range []error{errHedgeLost, errAttempt} {
		tr := c.newTry(true)
		tr.cancel(cause)
		own := errors.New("read tcp: connection reset by peer")
		assert.Same(t, own, tr.mapErr(own), "cause %v", cause)
		for _, e := range []error{cause, context.Canceled} {
			got := tr.mapErr(e)
			if cause == errHedgeLost {
				assert.Equal(t, errHedgeLost, got)
			} else {
				var te *TimeoutError
				assert.ErrorAs(t, got, &te)
			}
		}
		tr.finish(nil, errors.New("done"))
	}
}
