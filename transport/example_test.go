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
