package transport_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.uber.org/goleak"

	"github.com/lifeline-go/lifeline/transport"
)

// TestStallWatchManyBodies: many bodies open at once on HTTP/1.1 and
// HTTP/2, every other one stalling half-way and the rest dripping slower
// than the consumer pauses but never silent for StallTimeout: each stalled
// read fails within StallTimeout plus a tick and slack, no steady body
// fails, and once every body is closed the Transport's stall watch has
// ended (no goroutine of the Transport's is left) — and starts again for
// the next body.
func TestStallWatchManyBodies(t *testing.T) {
	const limit = time.Second // far above the 80ms gaps of a steady body, on a loaded machine too
	for _, h2 := range []bool{false, true} {
		srv, cfg := tlsServer(t, h2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.URL.Query().Get("stall") != "" {
				stallHandler(w, r)
				return
			}
			w.Header().Set("Content-Length", "50")
			for range 5 { // 400ms in all, never 1s without a byte
				_, _ = io.WriteString(w, strings.Repeat("x", 10))
				http.NewResponseController(w).Flush()
				time.Sleep(80 * time.Millisecond)
			}
		}))
		before := goleak.IgnoreCurrent()
		tr := &transport.Transport{TLSClientConfig: cfg, StallTimeout: limit, MaxConnsPerHost: -1}
		var wg sync.WaitGroup
		for i := range 40 {
			stall := i%2 == 0
			wg.Add(1)
			go func() {
				defer wg.Done()
				u := srv.URL + "/"
				if stall {
					u += "?stall=1"
				}
				resp, err := tr.RoundTrip(newReq(t, http.MethodGet, u, ""))
				if !assert.NoError(t, err) {
					return
				}
				defer resp.Body.Close()
				start := time.Now()
				b, err := io.ReadAll(resp.Body)
				elapsed := time.Since(start)
				if !stall {
					assert.NoError(t, err, "h2=%v: a steady body failed", h2)
					assert.Len(t, b, 50)
					return
				}
				var te *transport.TimeoutError
				if assert.ErrorAs(t, err, &te, "h2=%v", h2) {
					assert.Equal(t, "stall", te.Phase)
				}
				assert.ErrorIs(t, err, context.DeadlineExceeded)
				assert.GreaterOrEqual(t, elapsed, limit-20*time.Millisecond)
				assert.Less(t, elapsed, limit+limit/8+2*time.Second, "h2=%v", h2)
			}()
		}
		wg.Wait()
		tr.CloseIdleConnections()
		require.NoError(t, goleak.Find(before), "h2=%v: the stall watch outlived the bodies", h2)

		// The watch starts again for the next body.
		resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL+"/?stall=1", ""))
		require.NoError(t, err)
		_, err = io.ReadAll(resp.Body)
		resp.Body.Close()
		var te *transport.TimeoutError
		require.ErrorAs(t, err, &te, "h2=%v: a stall after the watch had ended", h2)
		assert.Equal(t, "stall", te.Phase)
		tr.CloseIdleConnections()
		srv.CloseClientConnections()
		srv.Close()
	}
}
