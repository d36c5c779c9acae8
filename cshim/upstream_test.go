package main

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/internal/upstream"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// Fail fast and load shedding through the shim (pure Go, under -race).

// TestClassifyNotAttempted: a call the Transport did not attempt is
// LIFELINE_E_UNAVAILABLE, phase "upstream", error_type "unavailable" or
// "shed"; a retry refused because the upstream sheds load is the failure
// of the attempts made.
func TestClassifyNotAttempted(t *testing.T) {
	refused := &dial.Error{Phase: dial.PhaseConnect, Network: "tcp", Addr: "x:80", Err: errors.New("connection refused")}
	down := &transport.UnavailableError{Upstream: "x:80", Reason: upstream.ReasonDown, Last: refused}
	shed := &transport.UnavailableError{Upstream: "x:80", Reason: upstream.ReasonShed}
	cases := []struct {
		name       string
		err        error
		status     int32
		phase, typ string
	}{
		{"down", down, statusUnavailable, "upstream", "unavailable"},
		{"shed", shed, statusUnavailable, "upstream", "shed"},
		{"retry refused while shedding", &retry.ExhaustedError{Attempts: 1, Last: refused, Cause: shed}, statusNetwork, "connect", "connect"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e := classify(context.Background(), tc.err)
			if e.Status != tc.status || e.Phase != tc.phase || e.Type != tc.typ || e.Timeout {
				t.Errorf("got status %d phase %q type %q timeout %v; want %d %q %q false",
					e.Status, e.Phase, e.Type, e.Timeout, tc.status, tc.phase, tc.typ)
			}
		})
	}
}

// configured returns a client configured by doc, closed at the end.
func configured(t *testing.T, doc map[string]any) *client {
	t.Helper()
	data, _ := json.Marshal(doc)
	c := newClient()
	t.Cleanup(func() { closeAndWait(c) })
	if e := c.configure(func(cfg *config) *Error {
		next, e := cfg.configureJSON(data)
		if e == nil {
			*cfg = next
		}
		return e
	}); e != nil {
		t.Fatalf("configure: %s", e.Msg)
	}
	return c
}

// startRequestOp starts r on c as lifeline_request_start_opts does.
func startRequestOp(t *testing.T, c *client, r *request) *op {
	t.Helper()
	o, e := c.start(false, 10*time.Second, nil, true, func(ctx context.Context, b *built, o *op) *Error {
		return doRequest(ctx, b, o, r)
	})
	if e != nil {
		t.Fatalf("start: %s", e.Msg)
	}
	t.Cleanup(func() { o.free(); handles.remove(o.id) })
	return o
}

func doOne(t *testing.T, c *client, r *request) (*response, *Error) {
	t.Helper()
	o := startRequestOp(t, c, r)
	o.wait(-1)
	return o.takeResponse()
}

// TestUnavailableThroughShim: a refusing port is known down after 5
// refusals; then requests fail at once with LIFELINE_E_UNAVAILABLE
// ("unavailable", the refusal in the message); a request with
// wait_for_ready waits and is served when a server comes up on the port;
// transport.disable_fail_fast keeps every request dialing.
func TestUnavailableThroughShim(t *testing.T) {
	port := faultnet.ReservePort(t, "tcp") // refused until the server comes up on it
	url := "http://" + port.Addr() + "/"
	c := configured(t, map[string]any{"retry.max_attempts": 1})
	var refusals int
	var e *Error
	for refusals = 0; refusals < 10; refusals++ {
		if _, e = doOne(t, c, &request{method: "GET", url: url}); e.Status != statusNetwork {
			break
		}
	}
	if e.Status != statusUnavailable || refusals != 5 {
		t.Fatalf("after %d refusals: status %d (%s), want %d after 5", refusals, e.Status, e.Msg, statusUnavailable)
	}
	if e.Phase != "upstream" || e.Type != "unavailable" || e.Timeout || !strings.Contains(e.Msg, "refused") {
		t.Errorf("fail fast: phase %q type %q timeout %v msg %q", e.Phase, e.Type, e.Timeout, e.Msg)
	}
	start := time.Now()
	for range 50 {
		if _, e := doOne(t, c, &request{method: "GET", url: url}); e.Status != statusUnavailable {
			t.Fatalf("status %d (%s), want fail fast", e.Status, e.Msg)
		}
	}
	t.Logf("50 fail fast in %v", time.Since(start))

	// Wait for ready, with retries enough to outlast a probe or two.
	o := startRequestOp(t, c, &request{method: "GET", url: url, opts: callOptions{waitForReady: true, maxAttempts: 10}})
	if o.wait(300 * time.Millisecond) {
		_, e := o.takeResponse()
		t.Fatalf("a request that waits for ready ended at once: %v", e)
	}
	ln, err := port.Listen()
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "back") })}
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()
	if !o.wait(10 * time.Second) {
		t.Fatal("the request that waits for ready did not end after the upstream came back")
	}
	resp, e := o.takeResponse()
	if e != nil || resp.status != 200 {
		t.Fatalf("wait for ready: %v %v", resp, e)
	}
	if _, e := doOne(t, c, &request{method: "GET", url: url}); e != nil {
		t.Fatalf("open again for everyone: %s", e.Msg)
	}

	// Fail fast off: every request dials and is refused.
	off := configured(t, map[string]any{"retry.max_attempts": 1, "transport.disable_fail_fast": true})
	url2 := "http://" + faultnet.RefusedAddr(t, "tcp") + "/"
	for i := range 10 {
		if _, e := doOne(t, off, &request{method: "GET", url: url2}); e.Status != statusNetwork || e.Type != "connect_refused" {
			t.Fatalf("request %d with fail fast off: status %d type %q", i, e.Status, e.Type)
		}
	}
}
