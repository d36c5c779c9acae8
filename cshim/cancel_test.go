package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"
)

// Issue 20, break 6 (the C ABI's side): a request whose host cancels it
// (or closes its client) while the Transport waits to retry a 503 with
// Retry-After used to complete LIFELINE_OK with the held 503. lifeline.h
// promises LIFELINE_E_CANCELED (LIFELINE_E_CLOSED after a close): the op
// knows it was ended by its host, whatever the Transport returned.
func TestCancelDuringRetryWait(t *testing.T) {
	var hits atomic.Int64
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", "5")
		w.WriteHeader(http.StatusServiceUnavailable)
	}))
	defer srv.Close()
	for _, tc := range []struct {
		name string
		end  func(c *client, o *op)
		want int32
	}{
		{"cancel", func(_ *client, o *op) { o.cancel(errCanceledByHost) }, statusCanceled},
		{"free", func(_ *client, o *op) { o.free() }, statusCanceled},
		{"close", func(c *client, _ *op) { c.close() }, statusClosed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			hits.Store(0)
			c := newClient()
			defer closeAndWait(c)
			o, e := c.start(false, 20*time.Second, nil, false, func(ctx context.Context, b *built, o *op) *Error {
				return doRequest(ctx, b, o, &request{method: "GET", url: srv.URL + "/"})
			})
			if e != nil {
				t.Fatal(e.Msg)
			}
			for hits.Load() == 0 {
				time.Sleep(time.Millisecond)
			}
			time.Sleep(100 * time.Millisecond) // the Transport waits out Retry-After now
			ended := time.Now()
			tc.end(c, o)
			if !o.wait(5 * time.Second) {
				t.Fatal("the op did not end within 5s of its end")
			}
			took := time.Since(ended)
			o.mu.Lock()
			got := o.err
			o.mu.Unlock()
			if got == nil || got.Status != tc.want || got.Phase != "canceled" {
				t.Fatalf("result %+v, want status %d phase canceled (the held 503 must not come back as a success)", got, tc.want)
			}
			if n := hits.Load(); n != 1 {
				t.Errorf("%d requests reached the server, want 1", n)
			}
			if took > time.Second {
				t.Errorf("the op ended %v after the host ended it, want well under a second (lifeline.h: 100ms)", took)
			}
		})
	}
}
