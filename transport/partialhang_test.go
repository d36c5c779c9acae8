package transport_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestFailFastPartlyHangingServerStaysUp: a server that hangs some requests
// and answers the others is reachable. Ten hanging requests start together,
// answers to other requests come while they wait, and then their first-byte
// limits end in one batch with no answer between them — what a starved
// client's late timers do to a server that hangs one request in eight (gate
// run 60: TestHedgeStress under make stress, 142 of 200 calls ok, the
// upstream taken down for a second). The upstream stays up: the next calls
// are answered, none fails fast. The control, in the same test: when the
// server stops answering everything, the same batch takes it down and the
// next call fails fast with an *UnavailableError. (Each with its own
// Transport: its own upstream state.)
func TestFailFastPartlyHangingServerStaysUp(t *testing.T) {
	var hangAll atomic.Bool
	var hanging atomic.Int64
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hang" || hangAll.Load() {
			hanging.Add(1)
			defer hanging.Add(-1)
			select {
			case <-r.Context().Done():
			case <-release:
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	t.Cleanup(srv.Close)
	t.Cleanup(func() { close(release) })

	run := func(t *testing.T, answerMeanwhile bool) error {
		// The control's error must be the gate's, not the throttle's
		// (ten overloads against one accept). The answers meanwhile
		// (25 round trips and 125ms of sleeps) must all land before the
		// hanging requests' limits: 1s, room for a starved machine
		// (make stress); the control's 300ms (a slow machine cannot
		// keep a silent server up).
		limit := 300 * time.Millisecond
		if answerMeanwhile {
			limit = time.Second
		}
		tr := &transport.Transport{FirstByteTimeout: limit,
			Retry: &retry.Policy{MaxAttempts: 1}, DisableLoadShedding: !answerMeanwhile}
		t.Cleanup(tr.CloseIdleConnections)
		get := func(path string) error {
			ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
			defer cancel()
			req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL+path, nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				return err
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			return resp.Body.Close()
		}
		if err := get("/"); err != nil {
			t.Fatalf("warm-up: %v", err)
		}
		path := "/hang"
		if !answerMeanwhile {
			hangAll.Store(true)
			defer hangAll.Store(false)
			path = "/"
		}
		var wg sync.WaitGroup
		errs := make([]error, 10)
		for i := range errs {
			wg.Go(func() { errs[i] = get(path) })
		}
		if answerMeanwhile {
			// Every hanging request reached the server (its try began
			// before the answers, on a starved machine too).
			for hanging.Load() < int64(len(errs)) {
				time.Sleep(time.Millisecond)
			}
			// Answers while the hanging requests wait (more than them:
			// the throttle, on, has nothing to shed); none after ~150ms
			// on a quiet machine.
			for range 25 {
				if err := get("/"); err != nil {
					t.Fatalf("a call answered meanwhile: %v", err)
				}
				time.Sleep(5 * time.Millisecond)
			}
		}
		wg.Wait()
		for _, err := range errs {
			var te *transport.TimeoutError
			if !errors.As(err, &te) || te.Phase != "first_byte" {
				t.Fatalf("a hanging request ended with %v, want a first_byte *TimeoutError", err)
			}
		}
		hangAll.Store(false)
		return get("/")
	}

	t.Run("partly hanging", func(t *testing.T) {
		for i := range 3 {
			if err := run(t, true); err != nil {
				t.Fatalf("round %d: the call after the batch of first-byte timeouts failed: %v (the upstream answers every other request)", i, err)
			}
		}
	})
	t.Run("control: silent", func(t *testing.T) {
		err := run(t, false)
		var ue *transport.UnavailableError
		if !errors.As(err, &ue) || ue.Reason != "down" {
			t.Fatalf("the call after a batch of first-byte timeouts with no answer since: %v, want an *UnavailableError of Reason down (fail fast)", err)
		}
	})
}
