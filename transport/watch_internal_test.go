package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httptrace"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/retry"
)

// counts returns the tries in flight and whether the loop is on.
func (w *watch) counts() (inFlight int, running bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for tr := w.tries; tr != nil; tr = tr.next {
		inFlight++
	}
	if inFlight != w.n {
		panic("watch: list and count disagree")
	}
	return inFlight, w.running.Load()
}

// TestWatchTries: a try is in the watch's list from its start to its end
// (its body read or closed, or its failure); a cut try leaves it too; after
// a burst the list is empty and the watch's goroutine ends, and starts
// again for the next try.
func TestWatchTries(t *testing.T) {
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
		w := tr.get().watch
		n, _ := w.counts()
		assert.Positive(t, n, "a try with an open body is in flight")
		_, err = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return err
	}
	w := tr.get().watch
	require.NotNil(t, w)
	for _, ctx := range []context.Context{context.Background(), t.Context()} {
		for range 20 {
			require.NoError(t, get(ctx, "/"))
		}
	}
	n, _ := w.counts()
	assert.Zero(t, n)

	hang.Store("/hang", true)
	err := get(context.Background(), "/hang")
	var te *TimeoutError
	require.ErrorAs(t, err, &te)
	assert.Equal(t, "first_byte", te.Phase)
	n, _ = w.counts()
	assert.Zero(t, n, "a cut try leaves the list")

	// The burst: 50 at once, each answered after 30ms. On a loaded
	// machine (50 new conns under the race detector beside CPU hogs) some
	// wait past FirstByteTimeout and are cut: a cut try is an end too, and
	// leaves the list like the others.
	var wg sync.WaitGroup
	var cut atomic.Int32
	for range 50 {
		wg.Go(func() {
			err := get(context.Background(), "/slow")
			var te *TimeoutError
			if errors.As(err, &te) && te.Phase == "first_byte" {
				cut.Add(1)
				return
			}
			assert.NoError(t, err)
		})
	}
	wg.Wait()
	t.Logf("burst: %d of 50 cut by FirstByteTimeout", cut.Load())
	require.Eventually(t, func() bool {
		n, running := w.counts()
		return n == 0 && !running
	}, 5*time.Second, 10*time.Millisecond, "the watch's goroutine ends when idle")
	require.NoError(t, get(context.Background(), "/"))
}

// TestHookOrder: the phases of a try before its headers follow net/http's
// hooks, and a late hook of an earlier write (net/http's own retry on
// another conn) does not start the wait for headers: not while a new conn
// is being got, not while the body copy being sent is not sent yet.
func TestHookOrder(t *testing.T) {
	tt := &Transport{FirstByteTimeout: time.Hour}
	st := tt.get()
	req, err := http.NewRequest(http.MethodPut, "http://127.0.0.1:1/", strings.NewReader("body"))
	require.NoError(t, err)
	c := &call{st: st, req: req, ctx: req.Context(), idempotent: true, replayable: true}
	tr := c.newTry(false)
	defer tr.finish(nil, errors.New("done"))
	body := tr.up.body(tr, io.NopCloser(strings.NewReader("body")))

	assert.EqualValues(t, waitAcquiring, tr.wait.Load())
	tr.wroteRequest(httptrace.WroteRequestInfo{})
	assert.EqualValues(t, waitAcquiring, tr.wait.Load(), "no conn yet: a late hook")
	tr.getConn("127.0.0.1:1")
	tr.gotConn(httptrace.GotConnInfo{Conn: fakeConn{}})
	assert.EqualValues(t, waitHeld, tr.wait.Load())
	tr.wroteRequest(httptrace.WroteRequestInfo{})
	assert.EqualValues(t, waitHeld, tr.wait.Load(), "the body is not sent yet: a late hook")
	_, _ = io.ReadAll(body)
	tr.wroteRequest(httptrace.WroteRequestInfo{})
	assert.True(t, isBegun(tr.wait.Load()), "written: the wait for headers begins")

	// net/http sends it again on another conn, with a copy of the body.
	tr.getConn("127.0.0.1:1")
	assert.EqualValues(t, waitAcquiring, tr.wait.Load())
	again := tr.up.body(tr, io.NopCloser(strings.NewReader("body")))
	_ = body.Close()
	tr.wroteRequest(httptrace.WroteRequestInfo{}) // late, of the first write
	assert.EqualValues(t, waitAcquiring, tr.wait.Load())
	tr.gotConn(httptrace.GotConnInfo{Conn: fakeConn{}})
	tr.wroteRequest(httptrace.WroteRequestInfo{}) // late, of the first write
	assert.EqualValues(t, waitHeld, tr.wait.Load(), "the copy being sent is not sent yet")
	_, _ = io.ReadAll(again)
	tr.wroteRequest(httptrace.WroteRequestInfo{})
	assert.True(t, isBegun(tr.wait.Load()))
	assert.EqualValues(t, waitDone, tr.headers())
	tr.getConn("127.0.0.1:1")
	assert.EqualValues(t, waitDone, tr.wait.Load(), "done stays done")
}

type fakeConn struct{ net.Conn }

func (fakeConn) RemoteAddr() net.Addr { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1} }

// TestAddConnectionClose: the "close" option joins the caller's; on HTTP/2
// only a field net/http accepts is written.
func TestAddConnectionClose(t *testing.T) {
	for _, tc := range []struct {
		name string
		in   []string
		h2   bool
		want []string
	}{
		{"none", nil, false, []string{"close"}},
		{"upgrade", []string{"Upgrade"}, false, []string{"Upgrade, close"}},
		{"two fields", []string{"Upgrade", "foo"}, false, []string{"Upgrade, foo, close"}},
		{"has close", []string{"keep-alive, Close"}, false, []string{"keep-alive, Close"}},
		{"h2 none", nil, true, []string{"close"}},
		{"h2 keep-alive", []string{"keep-alive"}, true, []string{"close"}},
		{"h2 upgrade left for net/http", []string{"Upgrade"}, true, []string{"Upgrade"}},
	} {
		h := http.Header{}
		if tc.in != nil {
			h["Connection"] = tc.in
		}
		addConnectionClose(h, tc.h2)
		assert.Equal(t, tc.want, h["Connection"], tc.name)
	}
}

// TestLosingTrySpanSaysLost: a try a hedge overtook whose headers had
// come ends its span as lost, not ok.
func TestLosingTrySpanSaysLost(t *testing.T) {
	spans := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(spans))
	tt := &Transport{HedgeDelay: time.Hour, TracerProvider: tp}
	st := tt.get()
	req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:1/", nil)
	require.NoError(t, err)
	c := &call{st: st, req: req, ctx: req.Context(), idempotent: true, replayable: true, hedge: true}
	tr := c.newTry(false)
	tr.lose()
	tr.finish(&http.Response{StatusCode: http.StatusOK}, nil) // its answer, closed
	ended := spans.Ended()
	require.Len(t, ended, 1)
	var outcome string
	for _, a := range ended[0].Attributes() {
		if a.Key == otelx.KeyOutcome {
			outcome = a.Value.AsString()
		}
	}
	assert.Equal(t, otelx.OutcomeLost, outcome)
	assert.NotEqual(t, codes.Error, ended[0].Status().Code)
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
