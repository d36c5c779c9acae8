package transport_test

import (
	"errors"
	"fmt"
	"io"
	"net"
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

// TestAdvCallOptionsShareAConn: calls with different options multiplexed
// on one HTTP/2 conn (and sharing an HTTP/1.1 pool) keep their own limits:
// a long poll is not cut by the Transport's FirstByteTimeout, a plain
// call as slow as it is, at the same time, is; a no-hedge call is not
// hedged while a hedged one beside it is. The options ride on one ctx
// reused for many calls.
func TestAdvCallOptionsShareAConn(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(protoName(h2), func(t *testing.T) {
			var conns atomic.Int32
			var hits sync.Map // path → *atomic.Int32
			srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				n, _ := hits.LoadOrStore(r.URL.Path, new(atomic.Int32))
				n.(*atomic.Int32).Add(1)
				if r.URL.Path != "/fast" {
					if !sleepCtx(r.Context(), 500*time.Millisecond) {
						return
					}
				}
				fmt.Fprint(w, "ok")
			}))
			srv.EnableHTTP2 = h2
			srv.Config.ErrorLog = quietLog()
			srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
				if s == http.StateNew {
					conns.Add(1)
				}
			}
			srv.StartTLS()
			defer srv.Close()
			tr := &transport.Transport{TLSClientConfig: trustTLS(srv), FirstByteTimeout: 150 * time.Millisecond,
				Retry: &retry.Policy{MaxAttempts: 1}}
			defer tr.CloseIdleConnections()
			_, err := callWith(t, tr, nil, srv.URL+"/fast") // one conn, warm
			require.NoError(t, err)

			poll := &transport.CallOptions{FirstByteTimeout: -1, HedgeDelay: -1}
			hedged := &transport.CallOptions{FirstByteTimeout: -1, HedgeDelay: 50 * time.Millisecond}
			var wg sync.WaitGroup
			errs := make([]error, 12)
			for i := range errs {
				wg.Go(func() {
					switch i % 3 {
					case 0:
						_, errs[i] = callWith(t, tr, poll, srv.URL+"/poll")
					case 1:
						_, errs[i] = callWith(t, tr, nil, srv.URL+"/slow")
					case 2:
						_, errs[i] = callWith(t, tr, hedged, srv.URL+"/hedged")
					}
				})
			}
			wg.Wait()
			for i, err := range errs {
				switch i % 3 {
				case 0, 2:
					assert.NoError(t, err, "call %d: its options lift the limit", i)
				case 1:
					var te *transport.TimeoutError
					if assert.True(t, errors.As(err, &te), "call %d: %v", i, err) {
						assert.Equal(t, "first_byte", te.Phase)
					}
				}
			}
			count := func(p string) int32 {
				n, ok := hits.Load(p)
				if !ok {
					return 0
				}
				return n.(*atomic.Int32).Load()
			}
			assert.EqualValues(t, 4, count("/poll"), "never hedged")
			assert.EqualValues(t, 4, count("/slow"), "no retry, no hedge")
			assert.Greater(t, count("/hedged"), int32(4), "hedged")
			if h2 {
				assert.EqualValues(t, 1, conns.Load(), "one conn for all")
			}
		})
	}
}

// TestAdvCallOptionsOddValues: values that make little sense do what they
// say, without a panic or a leak: a 1ns hedge delay (every try at once,
// capped), NoCredentials with a 401 (no Refresh, the 401 is the answer),
// nested options that turn hedging off again.
func TestAdvCallOptionsOddValues(t *testing.T) {
	var hits atomic.Int32
	srv := startServer(t, true, func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		if r.URL.Path == "/401" {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		sleepCtx(r.Context(), 20*time.Millisecond)
		fmt.Fprint(w, "ok")
	})
	creds := &countingCreds{}
	tr := &transport.Transport{TLSClientConfig: trustTLS(srv), Credentials: creds}
	defer tr.CloseIdleConnections()

	for range 20 {
		code, err := callWith(t, tr, &transport.CallOptions{HedgeDelay: time.Nanosecond}, srv.URL+"/x")
		require.NoError(t, err)
		assert.Equal(t, http.StatusOK, code)
	}
	assert.LessOrEqual(t, hits.Load(), int32(60), "at most two hedges per attempt")

	hits.Store(0)
	ctx := transport.WithCallOptions(t.Context(), transport.CallOptions{HedgeDelay: time.Nanosecond})
	ctx = transport.WithCallOptions(ctx, transport.CallOptions{HedgeDelay: -1})
	assert.Equal(t, -time.Duration(1), transport.CallOptionsFrom(ctx).HedgeDelay)
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+"/x", nil)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	_, _ = io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	assert.EqualValues(t, 1, hits.Load(), "the inner -1 turned the hedge off")

	applied := creds.applied.Load()
	code, err := callWith(t, tr, &transport.CallOptions{NoCredentials: true}, srv.URL+"/401")
	require.NoError(t, err)
	assert.Equal(t, http.StatusUnauthorized, code)
	assert.Zero(t, creds.refreshed.Load(), "no Refresh without credentials")
	assert.Equal(t, applied, creds.applied.Load(), "no Apply")

}
