package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// call is what one call saw.
type call struct {
	start, end time.Time
	err        error
	attempts   int64 // connects made for it
	capped     bool  // the harness's cap ended it
	id         string
}

func (c call) dur() time.Duration { return c.end.Sub(c.start) }

// request is one call of a request stream: every contender gets the same
// sequence of them.
type request struct {
	method string
	id     string // a POST's body
	close  bool   // on a new connection, closed after the answer
	want   int    // the answer's length; 0: "ok"
	tag    bool   // send id in the X-Compare-Call header (the upstream of (i) and (j) records it)
}

// do sends req to url, reads the whole answer and checks it. capAt bounds
// the call (a client that would wait forever fails there, marked capped).
func do(ctx context.Context, client *http.Client, url string, req request, capAt time.Duration) call {
	var n atomic.Int64
	ctx, cancel := context.WithTimeoutCause(withAttempts(ctx, &n), capAt, errCapped)
	defer cancel()
	c := call{start: time.Now(), id: req.id}
	c.err = roundTrip(ctx, client, url, req)
	c.end = time.Now()
	c.attempts = n.Load()
	c.capped = c.err != nil && errors.Is(context.Cause(ctx), errCapped)
	return c
}

var errCapped = errors.New("capped by the harness")

// callHeader carries a tagged request's id to the upstream.
const callHeader = "X-Compare-Call"

func roundTrip(ctx context.Context, client *http.Client, url string, req request) error {
	var body io.Reader
	if req.method == http.MethodPost {
		body = strings.NewReader(req.id)
	}
	r, err := http.NewRequestWithContext(ctx, req.method, url, body)
	if err != nil {
		return err
	}
	r.Close = req.close
	if req.tag {
		r.Header.Set(callHeader, req.id)
	}
	resp, err := client.Do(r)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	switch {
	case err != nil:
		return err
	case resp.StatusCode != http.StatusOK:
		return fmt.Errorf("status %d", resp.StatusCode)
	case req.want == 0 && string(b) != "ok", req.want > 0 && len(b) != req.want:
		return fmt.Errorf("answer of %d bytes", len(b))
	}
	return nil
}

// stats summarises calls: every call's latency counts, failed ones too (a
// capped call at the cap).
type stats struct {
	n, ok         int
	p50, p99, max time.Duration
	attempts      float64 // connects (or requests, where stated) per call
	capped        int
	okLat, allLat []time.Duration // sorted
	firstErr      error
	calls         []call
}

func summarise(calls []call) stats {
	var s stats
	s.n, s.calls = len(calls), calls
	var att int64
	for _, c := range calls {
		d := c.dur()
		s.allLat = append(s.allLat, d)
		att += c.attempts
		if c.err == nil {
			s.ok++
			s.okLat = append(s.okLat, d)
		} else if s.firstErr == nil {
			s.firstErr = c.err
		}
		if c.capped {
			s.capped++
		}
	}
	slices.Sort(s.allLat)
	slices.Sort(s.okLat)
	s.p50, s.p99, s.max = quantile(s.allLat, 0.5), quantile(s.allLat, 0.99), quantile(s.allLat, 1)
	if s.n > 0 {
		s.attempts = float64(att) / float64(s.n)
	}
	return s
}

// quantile is the nearest-rank quantile of sorted.
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// streams runs every contender's workers at once: worker w of contender c
// sends reqs(w) one after another to urls[c][w]. All contenders run side
// by side, so what the machine does meanwhile hits them alike.
func streams(ctx context.Context, clients []*http.Client, urls [][]string, reqs func(w int) []request, capAt time.Duration) [][]call {
	out := make([][]call, len(clients))
	var mu sync.Mutex
	var wg sync.WaitGroup
	for c, client := range clients {
		for w, url := range urls[c] {
			wg.Go(func() {
				var got []call
				for _, r := range reqs(w) {
					got = append(got, do(ctx, client, url, r, capAt))
				}
				mu.Lock()
				out[c] = append(out[c], got...)
				mu.Unlock()
			})
		}
	}
	wg.Wait()
	return out
}

// stream is n requests of one method, ids prefixed by worker.
func stream(method string, n int, closeConn bool, want int) func(w int) []request {
	return func(w int) []request {
		rs := make([]request, n)
		for i := range rs {
			rs[i] = request{method: method, id: fmt.Sprintf("w%d-r%d", w, i), close: closeConn, want: want}
		}
		return rs
	}
}

// backend is a real HTTP server on loopback that answers "ok" (or size
// bytes) and counts the requests it served.
type backend struct {
	srv      *http.Server
	ln       net.Listener
	requests atomic.Int64
}

// startBackend serves on ln (TLS with cfg when non-nil; HTTP/1.1 only, one
// request per connection when the client asks for it, as in incident 01).
func startBackend(ln net.Listener, cfg *tls.Config, size int) *backend {
	b := &backend{ln: ln}
	body := []byte("ok")
	if size > 0 {
		body = []byte(strings.Repeat("lifeline ", size/9+1)[:size])
	}
	b.srv = &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b.requests.Add(1)
			if r.Method == http.MethodPost {
				if _, err := io.ReadAll(r.Body); err != nil {
					return
				}
			}
			w.Header().Set("Content-Length", fmt.Sprint(len(body)))
			_, _ = w.Write(body)
		}),
		// Racers and hedges that lost are closed mid-handshake: noise.
		ErrorLog:          log.New(io.Discard, "", 0),
		TLSNextProto:      map[string]func(*http.Server, *tls.Conn, http.Handler){},
		ReadHeaderTimeout: time.Minute,
	}
	if cfg != nil {
		ln = tls.NewListener(ln, cfg)
	}
	go func() { _ = b.srv.Serve(ln) }()
	return b
}

func listenBackend(cfg *tls.Config, size int) (*backend, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	return startBackend(ln, cfg, size), nil
}

func (b *backend) addr() string { return b.ln.Addr().String() }

func (b *backend) close() { _ = b.srv.Close() }

// cleanups runs functions in reverse order of registration.
type cleanups []func()

func (c *cleanups) add(f func()) { *c = append(*c, f) }

func (c *cleanups) run() {
	for i := len(*c) - 1; i >= 0; i-- {
		(*c)[i]()
	}
	*c = nil
}
