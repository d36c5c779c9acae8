package transport_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// An upstream that refuses every connect is known down after 5 failed
// dials: the next calls fail at once with an *UnavailableError that still
// carries the dial's failure (its phase and address), until a probe,
// about a second later, finds it back.
func ExampleUnavailableError() {
	// A loopback port where nothing listens (connects are refused), kept
	// reserved so that nothing else can start listening there meanwhile.
	port, _ := faultnet.NewRefusedPort("tcp")
	defer port.Close()
	addr := port.Addr()

	tr := &transport.Transport{Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)
	for i := 1; i <= 6; i++ {
		_, err := client.Get("http://" + addr + "/")
		var ue *transport.UnavailableError
		var de *dial.Error
		switch {
		case errors.As(err, &ue):
			fmt.Printf("call %d: not attempted, upstream %s; last failure in phase %s\n",
				i, ue.Reason, func() dial.Phase { errors.As(err, &de); return de.Phase }())
		case errors.As(err, &de):
			fmt.Printf("call %d: dial failed in phase %s\n", i, de.Phase)
		}
	}
	// Output:
	// call 1: dial failed in phase connect
	// call 2: dial failed in phase connect
	// call 3: dial failed in phase connect
	// call 4: dial failed in phase connect
	// call 5: dial failed in phase connect
	// call 6: not attempted, upstream down; last failure in phase connect
}

// A call that must not fail while its upstream is down (a startup path, a
// long job) waits for it within its own deadline.
func ExampleWaitForReady() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "ready")
	}))
	defer srv.Close()

	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	ctx := transport.WaitForReady(context.Background())
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := transport.NewClient(tr).Do(req)
	if err != nil {
		fmt.Println(err)
		return
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	fmt.Println(resp.StatusCode, string(body))
	// Output: 200 ready
}

// A server that answers 429 with Retry-After pauses the calls to that path
// (with the same Authorization; other paths go at once): a call
// whose deadline ends before the advised time gets the server's answer at
// once, not attempted again (Exhausted reports 0 attempts), and the
// others wait for the pause's end.
func Example_retryAfterAcrossCalls() {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Retry-After", "30")
		w.WriteHeader(http.StatusTooManyRequests)
	}))
	defer srv.Close()

	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	client := transport.NewClient(tr)
	for i := 1; i <= 2; i++ {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		resp, err := client.Do(req)
		if err != nil {
			fmt.Println(err)
			return
		}
		resp.Body.Close()
		var ex *retry.ExhaustedError
		errors.As(transport.Exhausted(resp), &ex)
		fmt.Printf("call %d: %d, attempts %d, not attempted: %v\n",
			i, resp.StatusCode, ex.Attempts, errors.Is(ex, transport.ErrUnavailable))
	}
	// Output:
	// call 1: 429, attempts 1, not attempted: false
	// call 2: 429, attempts 0, not attempted: true
}
