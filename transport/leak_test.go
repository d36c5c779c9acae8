package transport_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/transport"
)

// socketFDs counts the process's open socket file descriptors.
func socketFDs(t *testing.T) int {
	t.Helper()
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("fd count unavailable: %v", err)
	}
	n := 0
	for _, e := range ents {
		if l, err := os.Readlink("/proc/self/fd/" + e.Name()); err == nil && strings.HasPrefix(l, "socket:") {
			n++
		}
	}
	return n
}

// TestNoLeakAcrossFaults: retries, hedges, stalls, first-byte timeouts and
// discarded answers leave no socket and no goroutine (goleak in TestMain)
// once the Transport's idle conns are closed.
func TestNoLeakAcrossFaults(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch n.Add(1) % 5 {
		case 0:
			w.WriteHeader(http.StatusServiceUnavailable) // retried, discarded
			_, _ = io.WriteString(w, strings.Repeat("x", 100<<10))
		case 1:
			<-r.Context().Done() // hedged or timed out
		case 2:
			stallHandler(w, r)
		default:
			_, _ = io.WriteString(w, "ok")
		}
	}))
	before := socketFDs(t)
	tr := &transport.Transport{HedgeDelay: 30 * time.Millisecond, FirstByteTimeout: 200 * time.Millisecond,
		StallTimeout: 100 * time.Millisecond, Retry: fastRetry()}
	client := transport.NewClient(tr)
	for range 40 {
		resp, err := client.Get(srv.URL)
		if err != nil {
			continue
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	tr.CloseIdleConnections()
	srv.Close()
	require.Eventually(t, func() bool { return socketFDs(t) <= before }, 5*time.Second, 20*time.Millisecond,
		"sockets before %d, now %d", before, socketFDs(t))
	assert.Positive(t, n.Load())
}
