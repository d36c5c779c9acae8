package transport_test

import (
	"context"
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

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/transport"
)

// TestUnusedConnIdlesWithoutGreetingBound: HTTP is client-first, and
// net/http's HTTP/1 readLoop waits in Read on a fresh conn before any
// request is written on it. A conn dialled for a request that another conn
// served then idles in the pool that way: the Dialer's bound on a Read
// before any Write (GreetingTimeout) must not cut it, nor count it as a
// stall in Health.
func TestUnusedConnIdlesWithoutGreetingBound(t *testing.T) {
	var closed, served atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if served.Add(1) == 1 {
			time.Sleep(60 * time.Millisecond) // the second request starts meanwhile
		}
		_, _ = io.WriteString(w, "ok")
	}))
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateClosed {
			closed.Add(1)
		}
	}
	srv.Start()
	defer srv.Close()

	var dials atomic.Int32
	health := new(dial.Health)
	d := &dial.Dialer{
		FirstByteTimeout: 200 * time.Millisecond,
		Health:           health,
		DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if dials.Add(1) == 2 {
				// The second request's conn arrives after the first
				// conn has served it: it goes to the pool unused.
				time.Sleep(150 * time.Millisecond)
			}
			var nd net.Dialer
			return nd.DialContext(ctx, network, addr)
		},
	}
	tr := &transport.Transport{Dialer: d, FirstByteTimeout: 100 * time.Millisecond}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)

	get := func() {
		resp, err := client.Get(srv.URL)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// The first request's conn is dialled at once; the second request
	// starts while the first is answered and dials a second, slow conn,
	// but takes the first one back from the pool before that arrives.
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); get() }()
	go func() { defer wg.Done(); time.Sleep(20 * time.Millisecond); get() }()
	wg.Wait()
	time.Sleep(800 * time.Millisecond) // 4 greeting bounds past the unused conn's birth
	require.Equal(t, int32(2), dials.Load(), "the scenario needs a second conn")
	assert.Equal(t, int32(0), closed.Load(), "an idle conn was cut")
	for _, ps := range health.Snapshot() {
		assert.Zero(t, ps.FirstByteStalls, "an idle conn counted as a stall: %+v", ps)
	}
}
