package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"time"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// A Transport plugs into http.Client. The server below answers its first
// request with 503 and Retry-After; the GET is retried after the wait and
// succeeds, and the caller never sees the 503.
func ExampleNewClient() {
	var calls atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if calls.Add(1) == 1 {
			w.Header().Set("Retry-After", "0")
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		fmt.Fprint(w, "hello")
	}))
	defer srv.Close()

	tr := &transport.Transport{Retry: &retry.Policy{InitialInterval: time.Millisecond}}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)
	resp, err := client.Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body), "after", calls.Load(), "requests")
	// Output: 200 hello after 2 requests
}

// A response whose headers do not come within FirstByteTimeout fails with
// a *transport.TimeoutError that matches context.DeadlineExceeded, on
// HTTP/1.1 and HTTP/2 alike. A POST that was written is never resent.
func ExampleTimeoutError() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-r.Context().Done() // accepted, read, never answered
	}))
	defer srv.Close()

	tr := &transport.Transport{FirstByteTimeout: 100 * time.Millisecond}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, nil)
	_, err := tr.RoundTrip(req)
	var te *transport.TimeoutError
	fmt.Println(errors.As(err, &te), te.Phase, errors.Is(err, context.DeadlineExceeded))
	// Output: true first_byte true
}

// Credentials give every try of a call its token. The API below accepts
// only the latest token its identity provider issued; when it rotates,
// the call that meets the 401 refreshes once and is sent once more, and
// the caller sees only the 200.
func ExampleNewBearerCredentials() {
	var issued atomic.Int32
	var valid atomic.Value
	fetch := func(ctx context.Context) (string, time.Time, error) {
		tok := fmt.Sprintf("token-%d", issued.Add(1)) // an OAuth token endpoint, say
		valid.Store("Bearer " + tok)
		return tok, time.Now().Add(time.Hour), nil
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != valid.Load() {
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		fmt.Fprint(w, "rooms: 3")
	}))
	defer srv.Close()

	tr := &transport.Transport{Credentials: transport.NewBearerCredentials(fetch)}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)
	for i := range 2 {
		if i == 1 {
			valid.Store("revoked") // the server rotated its keys
		}
		resp, err := client.Get(srv.URL)
		if err != nil {
			fmt.Println(err)
			return
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		fmt.Println(resp.StatusCode, string(body), "tokens fetched:", issued.Load())
	}
	// Output:
	// 200 rooms: 3 tokens fetched: 1
	// 200 rooms: 3 tokens fetched: 2
}

// Per-call options: one Transport (one pool) serves ordinary calls, held
// to its FirstByteTimeout, and a long poll that must wait longer.
func ExampleWithCallOptions() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/events" {
			time.Sleep(300 * time.Millisecond) // a long poll: answers when there is news
		}
		fmt.Fprint(w, "news")
	}))
	defer srv.Close()

	tr := &transport.Transport{FirstByteTimeout: 100 * time.Millisecond}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)

	longPoll := transport.WithCallOptions(context.Background(), transport.CallOptions{
		FirstByteTimeout: -1,                            // no first-byte limit for this call
		Retry:            &retry.Policy{MaxAttempts: 1}, // and no retry
	})
	req, _ := http.NewRequestWithContext(longPoll, http.MethodGet, srv.URL+"/events", nil)
	resp, err := client.Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 news
}

// RetryAfter reads the wait a 429 or 503 asks for, for an SDK that
// returns the answer to its caller (here after the Transport gave up
// retrying it: the wait is beyond the policy's MaxRetryAfter).
func ExampleRetryAfter() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "120")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()

	tr := &transport.Transport{Retry: &retry.Policy{MaxRetryAfter: time.Minute}}
	defer tr.CloseIdleConnections()
	resp, err := transport.NewClient(tr).Get(srv.URL)
	if err != nil {
		fmt.Println(err)
		return
	}
	resp.Body.Close()
	wait, ok := transport.RetryAfter(resp)
	fmt.Println(resp.StatusCode, wait, ok)
	// Output: 429 2m0s true
}
