package transport

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/retry"
)

// counts returns the slots alive, those with a try, and whether the loop
// is on.
func (w *watch) counts() (all, inUse int, running bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, p := range w.all {
		if s := p.Value(); s != nil {
			all++
			if s.tr.Load() != nil {
				inUse++
			}
		}
	}
	return all, inUse, w.running.Load()
}

// TestWatchSlots: a slot serves one try after another; a slot whose wait
// the watch cut is let go, never reused; a burst's slots are trimmed once
// the Transport is idle, and the watch's goroutine ends.
func TestWatchSlots(t *testing.T) {
	var hang sync.Map // paths that never answer
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if _, ok := hang.Load(r.URL.Path); ok {
			<-r.Context().Done()
			return
		}
		if r.URL.Path == "/slow" {
			time.Sleep(30 * time.Millisecond) // within FirstByteTimeout
		}
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	tr := &Transport{FirstByteTimeout: 500 * time.Millisecond, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	client := NewClient(tr)
	get := func(ctx context.Context, path string) error {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
		require.NoError(t, err)
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	w := tr.get().watch
	require.NotNil(t, w)

	for _, ctx := range []context.Context{context.Background(), t.Context()} {
		for range 50 {
			require.NoError(t, get(ctx, "/"))
		}
	}
	// 100 tries one at a time: a few slots serve them all (the race
	// detector makes sync.Pool drop a quarter of what it is given).
	all, inUse, _ := w.counts()
	assert.Less(t, all, 50, "slots serve one try after another")
	assert.Zero(t, inUse)

	// A cut: the slot (its wait cut, over HTTPS its context cancelled too)
	// is let go.
	hang.Store("/hang", true)
	err := get(context.Background(), "/hang")
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "first_byte", te.Phase)
	for range 4 {
		s, _ := w.free.Get().(*slot)
		if s != nil {
			assert.False(t, s.ctx != nil && s.ctx.Err() != nil, "no cancelled slot is kept")
			assert.NotEqual(t, int64(waitCut), s.wait.Load(), "no slot whose wait was cut is kept")
			defer w.free.Put(s)
		}
	}
	require.NoError(t, get(context.Background(), "/"))

	// A burst of 100 tries at once, then idle: the goroutine ends, and the
	// slots no try is in go with the GC.
	var wg sync.WaitGroup
	for range 100 {
		wg.Go(func() { assert.NoError(t, get(context.Background(), "/slow")) })
	}
	wg.Wait()
	all, _, _ = w.counts()
	assert.Greater(t, all, 50, "the burst had a slot per try")
	require.Eventually(t, func() bool {
		_, _, running := w.counts()
		return !running
	}, 5*time.Second, 10*time.Millisecond, "the watch's goroutine ends when idle")
	runtime.GC()
	runtime.GC()
	all, inUse, _ = w.counts()
	assert.LessOrEqual(t, all, 4, "free slots go with the GC")
	assert.Zero(t, inUse)
	require.NoError(t, get(context.Background(), "/"))
}

// TestTraceKeyFound: the key of httptrace's context value was learned, so
// that a caller's context that never ends costs no trace per request.
func TestTraceKeyFound(t *testing.T) {
	assert.NotNil(t, traceKey)
}

// TestCancelRequestProbe: net/http's CancelRequest still ends an HTTP/1.1
// request waiting for headers (else every try would take the slot's
// context), and the probe finds it well within its bound.
func TestCancelRequestProbe(t *testing.T) {
	start := time.Now()
	assert.True(t, probeCancelRequest(probeLimit))
	assert.Less(t, time.Since(start), probeLimit)
	assert.True(t, cancelRequestWorks())
}

// TestPlainProxy: http:// requests are known to go over HTTP/1.1 unless
// the environment's HTTP proxy speaks TLS or the proxy is the user's.
func TestPlainProxy(t *testing.T) {
	for env, want := range map[string]bool{
		"": true, "http://proxy.test:3128": true, "proxy.test:3128": true,
		"socks5://proxy.test:1080": true, "https://proxy.test": false, " HTTPS://proxy.test": false,
	} {
		t.Setenv("HTTP_PROXY", env)
		t.Setenv("http_proxy", "")
		assert.Equal(t, want, plainProxy(false), "HTTP_PROXY=%q", env)
	}
	t.Setenv("HTTP_PROXY", "")
	t.Setenv("http_proxy", "https://proxy.test")
	assert.False(t, plainProxy(false), "http_proxy")
	assert.False(t, plainProxy(true), "a Proxy function of the user's")
}

// TestCancelRequestFallback: where net/http's CancelRequest no longer
// works (a future Go may make it a no-op), an http:// try's wait is cut
// through the slot's context instead, as an HTTPS try's; and a probe that
// fails leaves nothing running.
func TestCancelRequestFallback(t *testing.T) {
	assert.False(t, probeCancelRequest(0), "a probe out of time says no")

	require.True(t, cancelRequestWorks())
	cancelProbe.result.Store(-1)
	defer cancelProbe.result.Store(1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done()
	}))
	defer srv.Close()
	tr := &Transport{FirstByteTimeout: 200 * time.Millisecond, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	start := time.Now()
	_, err = tr.RoundTrip(req)
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "first_byte", te.Phase)
	assert.Less(t, time.Since(start), 5*time.Second)
	// The cut went through a slot's own context.
	w := tr.get().watch
	w.mu.Lock()
	defer w.mu.Unlock()
	cancelled := 0
	for _, p := range w.all {
		if s := p.Value(); s != nil && s.ctx != nil && s.ctx.Err() != nil {
			cancelled++
		}
	}
	assert.Equal(t, 1, cancelled, "the slot's context was cancelled")
}

// TestStallNeverEarlyWhenWatchHeldUp: a Read that begins while the
// watch's goroutine is held up (here: waiting for its lock, its tick's
// clock already read) is stamped when the watch sees it, not with the
// clock it read before: the stall is not cut early. (Under a loaded CI the
// goroutine is held up by the scheduler instead.)
func TestStallNeverEarlyWhenWatchHeldUp(t *testing.T) {
	const limit = 200 * time.Millisecond
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "10")
		_, _ = io.WriteString(w, "12345")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
	}))
	defer srv.Close()
	tr := &Transport{StallTimeout: limit, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	req, err := http.NewRequestWithContext(context.Background(), http.MethodGet, srv.URL, nil)
	require.NoError(t, err)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	buf := make([]byte, 5)
	_, err = io.ReadFull(resp.Body, buf)
	require.NoError(t, err)

	w := tr.get().watch
	w.mu.Lock()
	time.Sleep(100 * time.Millisecond) // the loop has read its clock and waits for the lock
	start := time.Now()
	go func() {
		time.Sleep(50 * time.Millisecond)
		w.mu.Unlock()
	}()
	_, err = resp.Body.Read(buf) // stalls
	elapsed := time.Since(start)
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "stall", te.Phase)
	assert.GreaterOrEqual(t, elapsed, limit-10*time.Millisecond, "cut before the limit")
	assert.Less(t, elapsed, limit+2*time.Second)
}
