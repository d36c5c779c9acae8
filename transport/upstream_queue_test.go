package transport_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/transport"
)

// TestShedSlowRefusalsQueue: an upstream that refuses beyond its capacity
// slowly (each 503 after 400ms) holds the Transport's conns (MaxConnsPerHost
// 8), and the calls behind them queue for a conn until their deadline —
// scenario (i2) of the comparison, where the queue was still draining long
// after the overload ended. The queue itself is the signal: calls that
// arrive while half the conns' worth of tries wait are counted as
// overload, so the throttle sheds at once and the queue stays short.
// Side by side with DisableLoadShedding (today's queue) in the same run:
// far fewer calls end at their deadline, and calls started after the
// overload succeed once the throttle's 5s window has passed.
func TestShedSlowRefusalsQueue(t *testing.T) {
	const capacity = 20 // a second
	var mu sync.Mutex
	var window time.Time
	served := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		now := time.Now()
		mu.Lock()
		if now.Sub(window) >= 100*time.Millisecond {
			window, served = now, 0
		}
		ok := served < capacity/10
		if ok {
			served++
		}
		mu.Unlock()
		if !ok {
			select {
			case <-time.After(400 * time.Millisecond):
			case <-r.Context().Done():
			}
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	timedOut := map[bool]int{}
	lateOK := map[bool]float64{}
	for _, disabled := range []bool{true, false} {
		tr := &transport.Transport{MaxConnsPerHost: 8, DisableLoadShedding: disabled || failFastOff}
		c := transport.NewClient(tr)
		var l openLoop
		start := time.Now()
		l.run(t.Context(), c, srv.URL, 4*capacity, 3*time.Second, 2*time.Second)
		calm := time.Now()
		var l2 openLoop
		if !disabled {
			// The calm after the overload: the calls go again once the
			// throttle's window has forgotten it (5s after the last
			// overload answers, 2s after the overload; judged over the
			// last 3s, with a second's room for a loaded machine).
			l2.run(t.Context(), c, srv.URL, capacity/4, 11*time.Second, 2*time.Second)
		}
		l.wg.Wait()
		l2.wg.Wait()
		tr.CloseIdleConnections()
		for _, o := range l.between(start, calm) {
			if errors.Is(o.err, context.DeadlineExceeded) {
				timedOut[disabled]++
			}
		}
		late := l2.between(calm.Add(8*time.Second), time.Now())
		ok := 0
		for _, o := range late {
			if o.err == nil && o.status == http.StatusOK {
				ok++
			} else {
				t.Logf("after the overload: %v, status %d", o.err, o.status)
			}
		}
		lateOK[disabled] = float64(ok) / float64(max(len(late), 1))
		t.Logf("DisableLoadShedding=%v: %d of %d overload calls ended at their deadline in the queue",
			disabled, timedOut[disabled], len(l.between(start, calm)))
		if !disabled {
			t.Logf("%.0f%% of %d calls ok from 8s after the overload", 100*lateOK[disabled], len(late))
		}
	}
	if timedOut[true] < 20 {
		t.Skipf("the control queued only %d calls to their deadline: no queue formed on this machine", timedOut[true])
	}
	// At most a quarter of the control's: on a quiet machine shedding
	// leaves 1–9 against the control's ~170; beside other packages' tests
	// (make unit, gate run 91) 22 against 171, and under make stress 26
	// against 177 — the client's own rate sags under load, and the queue
	// it builds with it. A quarter still shows the queue kept short; the
	// rule's weight for a standing queue, which an eighth told apart on a
	// quiet machine (counted once: 23–30), is pinned by
	// TestShedArrivalBehindQueueWeight, which no load can blur.
	if timedOut[false] > timedOut[true]/4 {
		t.Errorf("shedding: %d calls waited in the queue to their deadline, the control %d: want at most a quarter", timedOut[false], timedOut[true])
	}
	if lateOK[false] < 0.9 {
		t.Errorf("shedding: %.0f%% of the calls from 8s after the overload ok, want ≥ 90%%", 100*lateOK[false])
	}
}
