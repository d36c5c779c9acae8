package transport_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// The call-level promises of RoundTrip (issue 20): what it closes, what it
// returns when the caller gives up, and what an outer retry loop can learn
// from an answer the Transport already retried.

// pipeBody is a request body without GetBody, like a pipe or a file: its
// producer blocks until the body is read or closed.
func pipeBody(t *testing.T) (io.ReadCloser, <-chan error) {
	t.Helper()
	pr, pw := io.Pipe()
	produced := make(chan error, 1)
	go func() {
		_, err := pw.Write([]byte(strings.Repeat("x", 1<<16)))
		_ = pw.Close()
		produced <- err
	}()
	t.Cleanup(func() { _ = pw.Close() })
	return pr, produced
}

// TestBodyClosedOnEveryPath: RoundTrip closes the caller's body on every
// path, as http.RoundTripper requires, also when it sends nothing: a
// context that had already ended, an invalid Retry policy, a bad request.
// The body is a pipe without GetBody: its producer must not block forever.
func TestBodyClosedOnEveryPath(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	defer srv.Close()
	ended, cancel := context.WithCancel(context.Background())
	cancel()
	cases := []struct {
		name string
		tr   *transport.Transport
		ctx  context.Context
		url  string
	}{
		{"context already cancelled", &transport.Transport{}, ended, srv.URL},
		{"context already cancelled, hedged", &transport.Transport{HedgeDelay: time.Millisecond}, ended, srv.URL},
		{"invalid Retry policy", &transport.Transport{Retry: &retry.Policy{MaxAttempts: -1}}, context.Background(), srv.URL},
		{"bad request", &transport.Transport{}, context.Background(), "ftp://example.com/"},
		{"sent", &transport.Transport{}, context.Background(), srv.URL},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			defer tc.tr.CloseIdleConnections()
			body, produced := pipeBody(t)
			req, err := http.NewRequestWithContext(tc.ctx, http.MethodPut, tc.url, body)
			require.NoError(t, err)
			require.Nil(t, req.GetBody)
			resp, err := tc.tr.RoundTrip(req)
			if err == nil {
				resp.Body.Close()
			}
			select {
			case <-produced:
			case <-time.After(5 * time.Second):
				t.Fatal("the body was neither read nor closed: its producer is blocked")
			}
		})
	}
}

// answer503 answers 503 with Retry-After and a body it holds open until
// the client goes away, which it reports on gone: a held answer that is
// closed, not leaked, ends the handler.
func answer503(retryAfter string, gone chan<- struct{}, hits *atomic.Int32) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Header().Set("Retry-After", retryAfter)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = io.WriteString(w, "busy")
		http.NewResponseController(w).Flush()
		<-r.Context().Done()
		gone <- struct{}{}
	}
}

// TestCancelDuringRetryWaitEndsWithCancel: the caller cancels while
// RoundTrip waits out a 503's Retry-After: RoundTrip returns the cancel's
// error, not the stale 503 with a nil error, and the held answer is
// closed. A deadline that the wait would cross still returns the 503, as
// documented.
func TestCancelDuringRetryWaitEndsWithCancel(t *testing.T) {
	gone := make(chan struct{}, 4)
	var hits atomic.Int32
	srv := httptest.NewServer(answer503("10", gone, &hits))
	defer srv.Close()

	t.Run("cancel", func(t *testing.T) {
		tr := &transport.Transport{}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(200*time.Millisecond, cancel)
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		start := time.Now()
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		assert.Nil(t, resp, "no stale answer")
		require.ErrorIs(t, err, context.Canceled)
		assert.Less(t, time.Since(start), 5*time.Second, "the cancel, not the 10s wait")
		select {
		case <-gone:
		case <-time.After(5 * time.Second):
			t.Fatal("the held 503 was not closed")
		}
	})
	t.Run("deadline the wait would cross", func(t *testing.T) {
		tr := &transport.Transport{}
		defer tr.CloseIdleConnections()
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		b, err := io.ReadAll(io.LimitReader(resp.Body, 4))
		resp.Body.Close()
		require.NoError(t, err)
		assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
		assert.Equal(t, "busy", string(b))
		<-gone
	})
}

// TestNestedRetryOnAnswerDoesNotMultiply: the README's pattern, retry.Do
// around the Transport with retry.After on a 503, against a server that
// always answers 503, sends 3 requests, not 3 × 3: transport.Exhausted
// tells that the answer is the Transport's final word, and retry.Do does
// not retry it. A Transport with MaxAttempts 1 leaves the retrying to the
// loop around it.
func TestNestedRetryOnAnswerDoesNotMultiply(t *testing.T) {
	cases := []struct {
		name     string
		inner    int
		wantHits int32
	}{
		{"Transport retries", 3, 3},
		{"Transport with MaxAttempts 1", 1, 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var hits atomic.Int32
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				hits.Add(1)
				w.Header().Set("Retry-After", "0")
				w.WriteHeader(http.StatusServiceUnavailable)
			}))
			defer srv.Close()
			inner := fastRetry()
			inner.MaxAttempts = tc.inner
			client := transport.NewClient(&transport.Transport{Retry: inner})
			defer client.CloseIdleConnections()
			errUnavailable := errors.New("unavailable")
			_, err := retry.Do(t.Context(), fastRetry(), func(ctx context.Context) (string, error) {
				req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
				if err != nil {
					return "", retry.Permanent(err)
				}
				resp, err := client.Do(req)
				if err != nil {
					return "", err
				}
				defer resp.Body.Close()
				if resp.StatusCode == http.StatusServiceUnavailable {
					if err := transport.Exhausted(resp); err != nil {
						return "", err // the Transport retried already
					}
					return "", retry.After(time.Millisecond, errUnavailable)
				}
				b, err := io.ReadAll(resp.Body)
				return string(b), err
			})
			require.Error(t, err)
			assert.ErrorIs(t, err, retry.ErrExhausted)
			assert.Equal(t, tc.wantHits, hits.Load(), "requests sent")
		})
	}
}

// TestExhaustedOnlyOnFinalAnswers: Exhausted is nil for an answer the
// Transport did not give up on (a 200, a 503 it could not retry), and for
// a response that is not the Transport's.
func TestExhaustedOnlyOnFinalAnswers(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/busy" {
			w.WriteHeader(http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()
	tr := &transport.Transport{Retry: fastRetry()}
	defer tr.CloseIdleConnections()

	resp, err := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
	require.NoError(t, err)
	resp.Body.Close()
	assert.NoError(t, transport.Exhausted(resp), "a 200")

	resp, err = tr.RoundTrip(newReq(t, http.MethodPost, srv.URL+"/busy", "x"))
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusServiceUnavailable, resp.StatusCode)
	assert.NoError(t, transport.Exhausted(resp), "a POST's 503 is not retried")

	resp, err = tr.RoundTrip(newReq(t, http.MethodGet, srv.URL+"/busy", ""))
	require.NoError(t, err)
	resp.Body.Close()
	ex := transport.Exhausted(resp)
	var exErr *retry.ExhaustedError
	require.ErrorAs(t, ex, &exErr)
	assert.Equal(t, 3, exErr.Attempts)
	assert.Contains(t, ex.Error(), "503")

	assert.NoError(t, transport.Exhausted(nil))
	assert.NoError(t, transport.Exhausted(&http.Response{Body: http.NoBody}))
}

// TestPanickingRetryableLeaksNothing: a Retry.Retryable that panics is the
// caller's bug, and the panic reaches the caller; the answer RoundTrip
// held for a retry is closed on the way (its conn and its try end), not
// leaked.
func TestPanickingRetryableLeaksNothing(t *testing.T) {
	gone := make(chan struct{}, 1)
	var hits atomic.Int32
	srv := httptest.NewServer(answer503("0", gone, &hits))
	defer srv.Close()
	tr := &transport.Transport{Retry: &retry.Policy{Retryable: func(error) bool { panic("bug in Retryable") }}}
	defer tr.CloseIdleConnections()
	func() {
		defer func() {
			assert.Equal(t, "bug in Retryable", recover())
		}()
		resp, _ := tr.RoundTrip(newReq(t, http.MethodGet, srv.URL, ""))
		if resp != nil {
			resp.Body.Close()
		}
		t.Error("RoundTrip returned")
	}()
	select {
	case <-gone:
	case <-time.After(5 * time.Second):
		t.Fatal("the held 503 was leaked")
	}
	assert.EqualValues(t, 1, hits.Load())
}
