package transport_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/internal/upstream"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// adv29Logged returns a Logger for a Transport and a count of the times
// it took an upstream down (one log line per change of state).
func adv29Logged() (*slog.Logger, func() int) {
	var sink logSink
	return slog.New(slog.NewTextHandler(&sink, nil)), func() int {
		// The records of changes are written on the Transport's log
		// goroutine: give a late one time to land (a starved machine can
		// only hide one, not make one up).
		time.Sleep(100 * time.Millisecond)
		if os.Getenv("ADV29_LOG") != "" {
			fmt.Fprint(os.Stderr, sink.String())
		}
		return strings.Count(sink.String(), "upstream down")
	}
}

// TestAdv29PauseDoesNotTakeAnsweringServerDown: a 503 with Retry-After is
// an answer (the server is reachable and asks for a pause), and so are the
// answers that came before it. Ten requests hang while twenty others are
// answered — the upstream is reachable (TestFailFastPartlyHangingServerStaysUp)
// — and then the server answers one request 503 Retry-After: 10, which
// pauses the host. The ten first-byte limits end during the pause: the
// answers since their requests were written excuse them as they would
// without the pause; the host stays Paused (a call whose deadline ends
// before the pause gets the held 503 at once) and is never declared down.
// (While Paused, every first-byte failure counted: the ten took the gate
// Down — lifeline.upstream.down, an alert's page, calls failing "down" —
// for a server that had just answered 21 requests.) On HTTP/1.1 and HTTP/2.
func TestAdv29PauseDoesNotTakeAnsweringServerDown(t *testing.T) {
	adv29PauseRun(t, false)
}

// TestAdv29AnswersDuringPauseExcuse: the same, but the twenty answers
// come during the pause — to calls admitted before it, in flight when the
// 503 came. Such an answer does not end the server's advised wait, but it
// is an answer: it excuses a first-byte failure like any other. (It was
// not counted as one: the ten failures, excused by the 503 alone, took
// the host Down.)
func TestAdv29AnswersDuringPauseExcuse(t *testing.T) {
	adv29PauseRun(t, true)
}

// adv29PauseRun: ten requests hang, twenty are answered (before the
// pause, or during it when inFlight), one is answered 503 Retry-After: 10;
// the ten first-byte limits (3s) end during the pause; the host must be
// Paused, never Down. On HTTP/1.1 and HTTP/2. (Everything before the
// limits end — up to 31 dials and round trips — has 3s, room for a
// starved machine; the held requests' limit is theirs, 30s: they are the
// answers, not the failures.)
func adv29PauseRun(t *testing.T, inFlight bool) {
	for _, h2 := range []bool{false, true} {
		name := "h1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			s := newAdv28Server(t, h2)
			inner := s.srv.Config.Handler
			s.srv.Config.Handler = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path == "/busy" {
					w.Header().Set("Retry-After", "10")
					w.WriteHeader(http.StatusServiceUnavailable)
					return
				}
				inner.ServeHTTP(w, r)
			})
			logger, downs := adv29Logged()
			tr := s.transport(t, 0)
			tr.Logger = logger
			tr.FirstByteTimeout = 3 * time.Second
			if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
				t.Fatalf("warm-up: %v", err)
			}
			errs := make([]error, 10)
			held := make([]error, 20)
			var wg sync.WaitGroup
			if inFlight {
				for i := range held {
					ctx := transport.WithCallOptions(t.Context(), transport.CallOptions{FirstByteTimeout: 30 * time.Second})
					wg.Go(func() { held[i] = adv28Get(ctx, tr, s.srv.URL+"/hold") })
				}
				adv28WaitFor(t, "the held requests", func() bool { return s.held.Load() == int64(len(held)) })
			}
			for i := range errs {
				wg.Go(func() { errs[i] = adv28Get(t.Context(), tr, s.srv.URL+"/work") })
			}
			adv28WaitFor(t, "the hanging requests", func() bool { return s.hanging.Load() == int64(len(errs)) })
			if !inFlight {
				for range held {
					if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
						t.Fatalf("an answer meanwhile: %v", err)
					}
				}
			}
			req, _ := http.NewRequestWithContext(t.Context(), http.MethodGet, s.srv.URL+"/busy", nil)
			resp, err := tr.RoundTrip(req)
			if err != nil {
				t.Fatalf("/busy: %v", err)
			}
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("/busy: %d", resp.StatusCode)
			}
			if inFlight {
				close(s.hold)
			}
			wg.Wait()
			adv28FirstByte(t, errs)
			for _, err := range held {
				if err != nil {
					t.Fatalf("a held request: %v", err)
				}
			}
			if n := downs(); n != 0 {
				t.Errorf("the upstream went down %d times after a server answered 21 requests (one a 503 Retry-After) while 10 hung, want 0", n)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
			defer cancel()
			req, _ = http.NewRequestWithContext(ctx, http.MethodGet, s.srv.URL+"/tick", nil)
			resp, err = tr.RoundTrip(req)
			var ue *transport.UnavailableError
			switch {
			case errors.As(err, &ue):
				t.Fatalf("a call during the pause: %v (Reason %q), want the held 503 (the host is paused, not down)", err, ue.Reason)
			case err != nil:
				t.Fatalf("a call during the pause: %v, want the held 503", err)
			}
			_, _ = io.Copy(io.Discard, resp.Body)
			_ = resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable {
				t.Fatalf("a call during the pause: %d, want the held 503", resp.StatusCode)
			}
		})
	}
}

// adv29Case is a healthy server's behaviour and a client's use of it.
type adv29Case struct {
	name     string
	h2       bool
	callers  int
	fbt      time.Duration                                    // the Transport's FirstByteTimeout
	handler  func(w http.ResponseWriter, r *http.Request)     // the server
	set      func(tr *transport.Transport)                    // more Transport fields
	ctx      func(ctx context.Context, i int) context.Context // a call's context (CallOptions)
	duration time.Duration
}

// adv29Hang hangs the request until its client gives up.
func adv29Hang(w http.ResponseWriter, r *http.Request) {
	<-r.Context().Done()
}

// adv29Run drives c's callers against c's server for c.duration and
// returns how many calls were answered, how many failed, how many failed
// fast as down and how many times the upstream went down.
func adv29Run(t *testing.T, c adv29Case) (ok, failed, down, downs int) {
	var srv *httptest.Server
	tr := &transport.Transport{FirstByteTimeout: c.fbt, Retry: &retry.Policy{MaxAttempts: 1}, DisableLoadShedding: true}
	if c.h2 {
		var cfg *tls.Config
		srv, cfg = tlsServer(t, true, http.HandlerFunc(c.handler))
		tr.TLSClientConfig = cfg
	} else {
		srv = httptest.NewServer(http.HandlerFunc(c.handler))
		t.Cleanup(srv.Close)
	}
	logger, nDowns := adv29Logged()
	tr.Logger = logger
	if c.set != nil {
		c.set(tr)
	}
	t.Cleanup(tr.CloseIdleConnections)
	var nOK, nFailed, nDown atomic.Int64
	end := time.Now().Add(c.duration)
	var wg sync.WaitGroup
	for g := range c.callers {
		wg.Go(func() {
			for i := 0; time.Now().Before(end); i++ {
				ctx := t.Context()
				if c.ctx != nil {
					ctx = c.ctx(ctx, g*1_000_000+i)
				}
				err := adv28Get(ctx, tr, srv.URL+"/"+strconv.Itoa(i))
				var ue *transport.UnavailableError
				switch {
				case err == nil:
					nOK.Add(1)
				case errors.As(err, &ue) && ue.Reason == "down":
					nDown.Add(1)
					time.Sleep(10 * time.Millisecond)
				default:
					nFailed.Add(1)
				}
			}
		})
	}
	wg.Wait()
	return int(nOK.Load()), int(nFailed.Load()), int(nDown.Load()), nDowns()
}

// adv29Healthy are healthy servers: each answers most requests, some
// slowly, some with 5xx; some hang one request in eight.
func adv29Healthy() []adv29Case {
	const fbt = 200 * time.Millisecond
	oneIn8 := func(w http.ResponseWriter, r *http.Request) {
		if rand.IntN(8) == 0 {
			adv29Hang(w, r)
			return
		}
		_, _ = io.WriteString(w, "ok")
	}
	var cases []adv29Case
	for _, h2 := range []bool{false, true} {
		p := "h1/"
		if h2 {
			p = "h2/"
		}
		cases = append(cases,
			adv29Case{name: p + "slow 0.9x one caller", h2: h2, callers: 1, fbt: fbt, handler: func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(fbt * 9 / 10)
			}},
			adv29Case{name: p + "slow 0.9x many callers", h2: h2, callers: 32, fbt: fbt, handler: func(w http.ResponseWriter, r *http.Request) {
				time.Sleep(fbt * 9 / 10)
			}},
			adv29Case{name: p + "hang 1 in 8", h2: h2, callers: 32, fbt: fbt, handler: oneIn8},
			adv29Case{name: p + "hang 1 in 8, 5xx", h2: h2, callers: 32, fbt: fbt, handler: func(w http.ResponseWriter, r *http.Request) {
				switch rand.IntN(8) {
				case 0:
					adv29Hang(w, r)
				case 1, 2, 3:
					w.WriteHeader(http.StatusBadGateway)
				default:
					w.WriteHeader(http.StatusInternalServerError)
				}
			}},
			adv29Case{name: p + "hang 1 in 8, hedged, retried", h2: h2, callers: 32, fbt: fbt, handler: oneIn8,
				set: func(tr *transport.Transport) {
					tr.HedgeDelay = 20 * time.Millisecond
					tr.Retry = &retry.Policy{MaxAttempts: 3, Budget: retry.NewBudget(1, 1000)}
				}},
			adv29Case{name: p + "hang 1 in 8, short limit per call", h2: h2, callers: 32, fbt: fbt, handler: oneIn8,
				ctx: func(ctx context.Context, i int) context.Context {
					if i%2 == 0 {
						return transport.WithCallOptions(ctx, transport.CallOptions{FirstByteTimeout: 50 * time.Millisecond})
					}
					return ctx
				}},
			adv29Case{name: p + "hang 1 in 8, wait for ready", h2: h2, callers: 32, fbt: fbt, handler: oneIn8,
				ctx: func(ctx context.Context, i int) context.Context { return transport.WaitForReady(ctx) }},
			adv29Case{name: p + "hang 1 in 8, long bodies", h2: h2, callers: 16, fbt: fbt, handler: func(w http.ResponseWriter, r *http.Request) {
				if rand.IntN(8) == 0 {
					adv29Hang(w, r)
					return
				}
				chunk := strings.Repeat("x", 16<<10)
				for range 16 {
					_, _ = io.WriteString(w, chunk)
					w.(http.Flusher).Flush()
					time.Sleep(2 * time.Millisecond)
				}
			}},
		)
	}
	return cases
}

// TestAdv29HealthyServerNeverDown: a healthy server is never taken down
// under the load of many callers. A stress test, run when ADV29_STRESS is
// set (ADV29_DURATION sets each case's time, 1.5s by default): its
// server is in the test's process, so on a starved machine (copies of the
// test binary beside busy loops) the server too answers past the 200ms
// limit, and going down is then right; its rules are pinned by the
// gate's own tests (TestGateCreditAnyOrder). Measured: the
// h1 case with half the calls on a 50ms CallOptions limit went down in 3
// runs of 4 on an idle machine before each answer could excuse a failure
// of an earlier try that failed later; 0 of 6 since.
func TestAdv29HealthyServerNeverDown(t *testing.T) {
	if os.Getenv("ADV29_STRESS") == "" {
		t.Skip("a stress test: set ADV29_STRESS=1")
	}
	d := 1500 * time.Millisecond
	if v, err := time.ParseDuration(os.Getenv("ADV29_DURATION")); err == nil {
		d = v
	}
	for _, c := range adv29Healthy() {
		t.Run(c.name, func(t *testing.T) {
			c.duration = d
			ok, failed, down, downs := adv29Run(t, c)
			t.Logf("%d ok, %d failed, %d failed fast as down, %d downs", ok, failed, down, downs)
			if downs != 0 || down != 0 {
				t.Errorf("a healthy server went down %d times (%d calls failed fast as down; %d ok, %d failed)", downs, down, ok, failed)
			}
		})
	}
}

// TestAdv29DeadServerDownWithinFiveLimits: a server that completes TLS
// and answers, then goes silent (a wedged process behind a TLS
// terminator that still handshakes) is down within about
// FailureThreshold first-byte limits, for one caller and for eight, on
// HTTP/1.1 over TLS (every hung conn closed, every call a new dial and
// handshake, which forgive nothing) and HTTP/2 (one conn). Each caller
// stops at its first call failed fast as down; none may make more than
// FailureThreshold+2 calls that wait the limit.
func TestAdv29DeadServerDownWithinFiveLimits(t *testing.T) {
	const fbt = 200 * time.Millisecond
	for _, h2 := range []bool{false, true} {
		for _, callers := range []int{1, 8} {
			name := fmt.Sprintf("h1-tls/%d", callers)
			if h2 {
				name = fmt.Sprintf("h2/%d", callers)
			}
			t.Run(name, func(t *testing.T) {
				var silent atomic.Bool
				srv, cfg := tlsServer(t, h2, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					if silent.Load() {
						<-r.Context().Done()
						return
					}
					_, _ = io.WriteString(w, "ok")
				}))
				tr := &transport.Transport{TLSClientConfig: cfg, FirstByteTimeout: fbt,
					Retry: &retry.Policy{MaxAttempts: 1}, DisableLoadShedding: true}
				t.Cleanup(tr.CloseIdleConnections)
				if err := adv28Get(t.Context(), tr, srv.URL+"/"); err != nil {
					t.Fatalf("warm-up: %v", err)
				}
				silent.Store(true)
				start := time.Now()
				waited := make([]int, callers)
				var wg sync.WaitGroup
				for g := range callers {
					wg.Go(func() {
						for range 3 * upstream.FailureThreshold {
							err := adv28Get(t.Context(), tr, srv.URL+"/")
							var ue *transport.UnavailableError
							if errors.As(err, &ue) && ue.Reason == "down" {
								return
							}
							waited[g]++
						}
					})
				}
				wg.Wait()
				took := time.Since(start)
				t.Logf("down after %v; calls that waited the limit, per caller: %v", took, waited)
				for g, n := range waited {
					if n > upstream.FailureThreshold+2 {
						t.Fatalf("caller %d waited the first-byte limit %d times on a silent server (want down after about %d failures)", g, n, upstream.FailureThreshold)
					}
				}
			})
		}
	}
}
