package transport

import (
	"context"
	"errors"
	"net/http"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// TestHedgeLoseTouchesOnlyItsTry: a hedge that answers cancels the first
// try through the try's own context (lose). A first try that has ended (a
// failed dial, say) while a hedge is answering is lost late: that cancels
// nothing but that try, which nothing reuses.
func TestHedgeLoseTouchesOnlyItsTry(t *testing.T) {
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
	first.finish(nil, errors.New("connect: connection refused"))
	others := make([]*try, 20)
	for i := range others {
		others[i] = newCall().newTry(false)
	}
	// A hedge answered before hedged saw the first try return.
	first.lose()
	for _, other := range others {
		assert.NotSame(t, first, other)
		assert.NoError(t, other.ctx.Err(), "a late lose cancels no other try")
		other.finish(nil, errors.New("done"))
	}

	// A first try still waiting is cancelled as lost.
	first = newCall().newTry(false)
	first.lose()
	select {
	case <-first.ctx.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("lose did not end the try's context")
	}
	require.ErrorIs(t, first.mapErr(first.ctx.Err()), errHedgeLost)
	first.finish(nil, first.mapErr(first.ctx.Err()))
	require.Eventually(t, func() bool {
		n, running := st.watch.counts()
		return n == 0 && !running
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

// TestTryCauseOfAnotherTry: net/http may fail a request with the cause of
// another request's cancel (persistConn.canceled, on a conn put back to
// idle just before the cancel landed). A try that was not itself ended
// reports the conn closed under it, never the other try's first-byte
// timeout; a try the watch did end reports its TimeoutError whichever
// path saw it (issue 20's gate: error.type *errors.errorString under load).
func TestTryCauseOfAnotherTry(t *testing.T) {
	tt := &Transport{FirstByteTimeout: time.Hour}
	defer tt.CloseIdleConnections()
	st := tt.get()
	newTry := func() *try {
		req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
		require.NoError(t, err)
		return (&call{st: st, req: req, ctx: req.Context(), idempotent: true, replayable: true}).newTry(false)
	}
	for _, cause := range []error{errFirstByte, errUploadStall, errHedgeLost, errAttempt} {
		tr := newTry()
		err := tr.mapErr(cause)
		assert.Equal(t, "conn_closed", otelx.ErrorTypeOf(err), "%v", cause)
		assert.NotErrorIs(t, err, cause)
		tr.finish(nil, err)
	}
	tr := newTry()
	tr.cancel(errFirstByte)
	var te *TimeoutError
	require.ErrorAs(t, tr.mapErr(errFirstByte), &te)
	assert.Equal(t, "first_byte", te.Phase)
	tr.finish(nil, te)
}
