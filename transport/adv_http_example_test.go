package transport_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/lifeline-go/lifeline/transport"
)

// An identity provider slower than the calls' deadlines: with
// FetchTimeout the fetch goes on after the first call gave up, and a
// later call gets its token instead of starting a fetch of its own.
func ExampleBearerCredentials_fetchTimeout() {
	fetched := make(chan struct{})
	creds := transport.NewBearerCredentials(func(ctx context.Context) (string, time.Time, error) {
		defer close(fetched)
		select {
		case <-time.After(200 * time.Millisecond): // the identity provider's latency
			return "token-1", time.Now().Add(time.Hour), nil
		case <-ctx.Done():
			return "", time.Time{}, ctx.Err()
		}
	})
	creds.FetchTimeout = 10 * time.Second

	call := func(timeout time.Duration) {
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "https://api.example/", nil)
		if err := creds.Apply(req); err != nil {
			fmt.Println("no token yet:", errors.Is(err, context.DeadlineExceeded))
			return
		}
		fmt.Println(req.Header.Get("Authorization"))
	}
	call(50 * time.Millisecond) // gives up; the fetch goes on
	<-fetched
	call(50 * time.Millisecond) // the token is cached
	// Output:
	// no token yet: true
	// Bearer token-1
}
