package transport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// adv28Server is a server that answers /tick at once, holds /hold until
// hold is closed (then answers), and hangs every other request until
// its client gives up.
type adv28Server struct {
	srv     *httptest.Server
	hanging atomic.Int64 // requests hanging now
	held    atomic.Int64 // /hold requests waiting now
	hold    chan struct{}
	release chan struct{}
	h2      bool
}

func newAdv28Server(t *testing.T, h2 bool) *adv28Server {
	s := &adv28Server{hold: make(chan struct{}), release: make(chan struct{}), h2: h2}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/tick":
		case "/limited":
			// A tenant over its quota (its token in Authorization).
			w.WriteHeader(http.StatusTooManyRequests)
			return
		case "/hold":
			s.held.Add(1)
			defer s.held.Add(-1)
			select {
			case <-s.hold:
			case <-r.Context().Done():
				return
			}
		default:
			s.hanging.Add(1)
			defer s.hanging.Add(-1)
			select {
			case <-r.Context().Done():
			case <-s.release:
			}
			return
		}
		_, _ = io.WriteString(w, "ok")
	}))
	if h2 {
		s.srv.EnableHTTP2 = true
		s.srv.StartTLS()
	} else {
		s.srv.Start()
	}
	t.Cleanup(s.srv.Close)
	t.Cleanup(func() { close(s.release) })
	return s
}

// transport returns a Transport of its own (its own upstream state) for
// the server: FirstByteTimeout 300ms, no retry, no load shedding (the
// gate's decisions alone).
func (s *adv28Server) transport(t *testing.T, maxConns int) *transport.Transport {
	tr := &transport.Transport{FirstByteTimeout: 300 * time.Millisecond, MaxConnsPerHost: maxConns,
		Retry: &retry.Policy{MaxAttempts: 1}, DisableLoadShedding: true}
	if s.h2 {
		roots := x509.NewCertPool()
		roots.AddCert(s.srv.Certificate())
		tr.TLSClientConfig = &tls.Config{RootCAs: roots}
	}
	t.Cleanup(tr.CloseIdleConnections)
	return tr
}

// adv28Roomy gives tr's tries a first-byte limit of 2s, for the cases
// whose claim is that answers excuse failures: the answers (a few dozen
// round trips on loopback, a dial on HTTP/1.1) must land before the
// failures, and on a starved machine (make stress: -race beside CPU hogs)
// they may take longer than 300ms. The cases where the upstream must go
// down keep 300ms: a slow machine only delays the answers that would
// have excused the failures.
func adv28Roomy(tr *transport.Transport) { tr.FirstByteTimeout = 2 * time.Second }

func adv28Get(ctx context.Context, tr *transport.Transport, url string) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	resp, err := tr.RoundTrip(req)
	if err != nil {
		return err
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	return resp.Body.Close()
}

func adv28WaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

func adv28FirstByte(t *testing.T, errs []error) {
	t.Helper()
	for _, err := range errs {
		var te *transport.TimeoutError
		if !errors.As(err, &te) || te.Phase != "first_byte" {
			t.Fatalf("a hanging request ended with %v, want a first_byte *TimeoutError", err)
		}
	}
}

// TestAdv28TrickleKeepsDeadServerUp: a server that hangs every request
// but an occasional quick one (a long poll's return, a health check, a
// tenant's cheap call) stopped answering for its callers. Ten requests
// hang; two answers come while they wait; then their first-byte limits
// end. Two answers excuse two failures, not ten: the upstream goes down
// and the next call fails fast. (The rule of 7059971 excused all ten:
// one answer per FirstByteTimeout kept such an upstream Ready for ever,
// each caller waiting its whole FirstByteTimeout, 15s by default.) The
// control, a server that answers more requests than it hangs (twenty
// answers meanwhile), stays up. On HTTP/1.1 and HTTP/2.
func TestAdv28TrickleKeepsDeadServerUp(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "h1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			for _, c := range []struct {
				answers int
				down    bool
			}{{2, true}, {20, false}} {
				s := newAdv28Server(t, h2)
				tr := s.transport(t, 0)
				if !c.down {
					adv28Roomy(tr)
				}
				if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
					t.Fatalf("warm-up: %v", err)
				}
				errs := make([]error, 10)
				var wg sync.WaitGroup
				for i := range errs {
					wg.Go(func() { errs[i] = adv28Get(t.Context(), tr, s.srv.URL+"/work") })
				}
				adv28WaitFor(t, "the hanging requests", func() bool { return s.hanging.Load() == int64(len(errs)) })
				for range c.answers {
					if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
						t.Fatalf("an answer meanwhile: %v", err)
					}
				}
				wg.Wait()
				adv28FirstByte(t, errs)
				err := adv28Get(t.Context(), tr, s.srv.URL+"/tick")
				var ue *transport.UnavailableError
				switch {
				case c.down && (!errors.As(err, &ue) || ue.Reason != "down"):
					t.Fatalf("%d answers for 10 hanging requests: the next call got %v, want an *UnavailableError of Reason down (the server stopped answering but for a trickle)", c.answers, err)
				case !c.down && err != nil:
					t.Fatalf("%d answers for 10 hanging requests: the next call got %v, want an answer (the server answers most requests)", c.answers, err)
				}
			}
		})
	}
}

// adv28SlowCreds are Credentials whose Apply for /work waits for open
// (a token fetch that takes a while): the try has started, its request
// is not written.
type adv28SlowCreds struct {
	open    chan struct{}
	waiting atomic.Int64
}

func (c *adv28SlowCreds) Apply(req *http.Request) error {
	if req.URL.Path == "/work" {
		c.waiting.Add(1)
		<-c.open
	}
	req.Header.Set("Authorization", "Bearer adv28")
	return nil
}

func (*adv28SlowCreds) Refresh(context.Context, *http.Request) error { return nil }

// TestAdv28SlowCredentialTakesNoEarlierAnswers: a try's first-byte limit
// runs from when its request was written, and so must the answers that
// excuse its failure. Five calls start and wait for their credential (a
// token fetch); meanwhile five other calls are answered; then the five
// are written, and the server, which hangs them, answers nothing more.
// No answer came after any of them was written: their failures count
// and the upstream goes down. (Read when the try started, before its
// credential, the five earlier answers excused all five: the upstream
// stayed Ready.) The control: answers after they were written excuse
// them. On HTTP/1.1 and HTTP/2.
func TestAdv28SlowCredentialTakesNoEarlierAnswers(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "h1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			for _, after := range []bool{false, true} {
				s := newAdv28Server(t, h2)
				tr := s.transport(t, 0)
				if after {
					adv28Roomy(tr)
				}
				creds := &adv28SlowCreds{open: make(chan struct{})}
				tr.Credentials = creds
				if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
					t.Fatalf("warm-up: %v", err)
				}
				errs := make([]error, 5)
				var wg sync.WaitGroup
				for i := range errs {
					wg.Go(func() { errs[i] = adv28Get(t.Context(), tr, s.srv.URL+"/work") })
				}
				adv28WaitFor(t, "the calls waiting for their credential", func() bool { return creds.waiting.Load() == int64(len(errs)) })
				if !after {
					for range len(errs) {
						if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
							t.Fatalf("an answer meanwhile: %v", err)
						}
					}
				}
				close(creds.open)
				if after {
					adv28WaitFor(t, "the hanging requests", func() bool { return s.hanging.Load() == int64(len(errs)) })
					for range len(errs) {
						if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
							t.Fatalf("an answer meanwhile: %v", err)
						}
					}
				}
				wg.Wait()
				adv28FirstByte(t, errs)
				err := adv28Get(t.Context(), tr, s.srv.URL+"/tick")
				var ue *transport.UnavailableError
				switch {
				case !after && (!errors.As(err, &ue) || ue.Reason != "down"):
					t.Fatalf("the call after 5 first-byte failures with no answer since their requests were written: %v, want an *UnavailableError of Reason down", err)
				case after && err != nil:
					t.Fatalf("the call after 5 first-byte failures each with an answer since its request was written: %v, want an answer", err)
				}
			}
		})
	}
}

// TestAdv28ScopedTooManyRequestsIsAnAnswer: a 429 is an answer (the
// package documentation: any response headers show the upstream
// reachable). Ten requests hang; meanwhile twenty other tenants are each
// answered 429 on their own path's quota (scopes, not the host: one
// path); then the ten first-byte limits end. The server answered twenty
// requests while ten hung: it is reachable, as when the twenty are
// answered 200 (TestFailFastPartlyHangingServerStaysUp) — the next call
// goes and is answered. (A 429 that paused only its scope told the host's
// gate nothing: the ten failures took the upstream down for every tenant.)
func TestAdv28ScopedTooManyRequestsIsAnAnswer(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "h1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			s := newAdv28Server(t, h2)
			tr := s.transport(t, 0)
			adv28Roomy(tr)
			if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
				t.Fatalf("warm-up: %v", err)
			}
			errs := make([]error, 10)
			var wg sync.WaitGroup
			for i := range errs {
				wg.Go(func() { errs[i] = adv28Get(t.Context(), tr, s.srv.URL+"/work") })
			}
			adv28WaitFor(t, "the hanging requests", func() bool { return s.hanging.Load() == int64(len(errs)) })
			for i := range 20 {
				ctx, cancel := context.WithTimeout(t.Context(), 5*time.Second)
				req, _ := http.NewRequestWithContext(ctx, http.MethodGet, s.srv.URL+"/limited", nil)
				req.Header.Set("Authorization", "Bearer tenant-"+strconv.Itoa(i))
				resp, err := tr.RoundTrip(req)
				if err != nil {
					cancel()
					t.Fatalf("tenant %d: %v", i, err)
				}
				_ = resp.Body.Close()
				cancel()
				if resp.StatusCode != http.StatusTooManyRequests {
					t.Fatalf("tenant %d: %d, want 429", i, resp.StatusCode)
				}
			}
			wg.Wait()
			adv28FirstByte(t, errs)
			if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
				t.Fatalf("the call after 10 first-byte failures while 20 requests were answered 429: %v, want an answer (the server is reachable)", err)
			}
		})
	}
}

// TestAdv28SilentServerDownForOneCaller: a server that accepts and goes
// silent (a wedged process whose kernel still accepts, a proxy whose
// backend is gone) stopped answering: one caller's calls, one after
// another, each end at the first-byte limit, and after FailureThreshold
// (5) of them the upstream is down and the next call fails fast. On
// HTTP/1.1 each hung request's conn is closed and the next call dials a
// new one, which establishes: such a dial is no answer, and must not
// forgive the first-byte failures (it did: the count went back to zero at
// each call, and the upstream never went down for fewer than 5
// concurrent callers — on HTTP/2, one conn, it went down).
func TestAdv28SilentServerDownForOneCaller(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		name := "h1"
		if h2 {
			name = "h2"
		}
		t.Run(name, func(t *testing.T) {
			s := newAdv28Server(t, h2)
			tr := s.transport(t, 0)
			if err := adv28Get(t.Context(), tr, s.srv.URL+"/tick"); err != nil {
				t.Fatalf("warm-up: %v", err)
			}
			for i := range 8 {
				err := adv28Get(t.Context(), tr, s.srv.URL+"/work")
				var ue *transport.UnavailableError
				if errors.As(err, &ue) && ue.Reason == "down" {
					if i < 5 {
						t.Fatalf("down after %d first-byte failures, want %d", i, 5)
					}
					return
				}
				adv28FirstByte(t, []error{err})
			}
			t.Fatal("8 calls in a row ended at their first-byte limit on a silent server, and the upstream is still not down (want down after 5)")
		})
	}
}
