package transport_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// tokenCreds is a transport.Credentials whose token is "tok-N": Refresh
// moves to N+1 unless another call refreshed since rejected was sent.
type tokenCreds struct {
	mu                  sync.Mutex
	n                   int
	applyErr, refreshEr error
	applies, refreshes  int
	seen                []string // "METHOD URL X-Caller" of each Apply
}

func (c *tokenCreds) token() string { return "Bearer tok-" + strconv.Itoa(c.n) }

func (c *tokenCreds) Apply(req *http.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.applies++
	if _, ok := req.Context().Deadline(); !ok {
		return errors.New("Apply's request has no deadline")
	}
	c.seen = append(c.seen, req.Method+" "+req.URL.String()+" "+req.Header.Get("X-Caller"))
	if c.applyErr != nil {
		return c.applyErr
	}
	req.Header.Set("Authorization", c.token())
	return nil
}

func (c *tokenCreds) Refresh(ctx context.Context, rejected *http.Request) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.refreshes++
	if _, ok := ctx.Deadline(); !ok {
		return errors.New("Refresh's context has no deadline")
	}
	if c.refreshEr != nil {
		return c.refreshEr
	}
	if rejected.Header.Get("Authorization") == c.token() {
		c.n++
	}
	return nil
}

func (c *tokenCreds) counts() (applies, refreshes int) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.applies, c.refreshes
}

// wsAuthServer is a websocket server that takes one token, "Bearer
// tok-<valid>", and refuses the others with code. valid < 0 refuses all.
type wsAuthServer struct {
	srv        *faultnet.Server
	valid      atomic.Int64
	code       int
	handshakes atomic.Int64
	mu         sync.Mutex
	auths      [][]string // the Authorization values of each handshake
	callers    []string   // its X-Caller
}

func startAuth(t *testing.T, code int) *wsAuthServer {
	a := &wsAuthServer{code: code}
	a.srv = startWS(t, func(w http.ResponseWriter, r *http.Request) {
		a.handshakes.Add(1)
		a.mu.Lock()
		a.auths = append(a.auths, r.Header.Values("Authorization"))
		a.callers = append(a.callers, r.Header.Get("X-Caller"))
		a.mu.Unlock()
		v := a.valid.Load()
		if v < 0 || r.Header.Get("Authorization") != "Bearer tok-"+strconv.FormatInt(v, 10) {
			w.WriteHeader(a.code)
			return
		}
		listening(w, r)
	}, nil)
	return a
}

// rotate makes the next token the valid one and drops every connection
// (the server's sessions expired with the old token).
func (a *wsAuthServer) rotate() {
	a.valid.Add(1)
	a.srv.DropAll()
}

// TestWebSocketDialCredentials: Apply is called on a request for each
// handshake try (GET, the URL with scheme http, the caller's headers,
// a deadline) and its header is what the server gets; a 401 or 403
// refreshes once and tries once more, outside Retry's attempts; a second
// refusal is final; errors of Apply and Refresh end Dial unretried.
func TestWebSocketDialCredentials(t *testing.T) {
	applyErr, refreshErr := errors.New("token source down"), errors.New("token endpoint 500")
	for _, tc := range []struct {
		name             string
		code             int
		valid            int64
		applyErr, refErr error
		wantErr          error // nil: connected
		wantStatus       int   // of the answer returned on failure
		handshakes       int
		applies, refresh int
	}{
		{name: "valid token", code: 401, valid: 0, handshakes: 1, applies: 1},
		{name: "expired, 401", code: 401, valid: 1, handshakes: 2, applies: 2, refresh: 1},
		{name: "expired, 403", code: 403, valid: 1, handshakes: 2, applies: 2, refresh: 1},
		{name: "refused twice", code: 401, valid: -1, wantErr: errRefusal, wantStatus: 401, handshakes: 2, applies: 2, refresh: 1},
		{name: "Apply fails", code: 401, valid: 0, applyErr: applyErr, wantErr: applyErr, handshakes: 0, applies: 1},
		{name: "Refresh fails", code: 401, valid: 1, refErr: refreshErr, wantErr: refreshErr, wantStatus: 401, handshakes: 1, applies: 1, refresh: 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := startAuth(t, tc.code)
			a.valid.Store(tc.valid)
			creds := &tokenCreds{applyErr: tc.applyErr, refreshEr: tc.refErr}
			d := fastDialer(3) // refusals and credential errors are not retried
			d.Credentials = creds
			h := http.Header{"X-Caller": {"sdk"}}
			c, resp, err := d.Dial(t.Context(), wsURL("ws", a.srv, "/rooms?x=1"), h)
			if resp != nil && resp.Body != nil {
				resp.Body.Close()
			}
			switch {
			case tc.wantErr == nil && err != nil:
				t.Fatalf("Dial: %v", err)
			case tc.wantErr == nil:
				c.Close()
			case tc.wantErr == errRefusal:
				var he *transport.HandshakeError
				if !errors.As(err, &he) || he.StatusCode != tc.code {
					t.Fatalf("Dial: %v, want the %d refusal", err, tc.code)
				}
			case !errors.Is(err, tc.wantErr):
				t.Fatalf("Dial: %v, want %v", err, tc.wantErr)
			}
			if tc.wantStatus != 0 && (resp == nil || resp.StatusCode != tc.wantStatus) {
				t.Errorf("answer %v, want the %d", resp, tc.wantStatus)
			}
			if got := int(a.handshakes.Load()); got != tc.handshakes {
				t.Errorf("%d handshakes, want %d", got, tc.handshakes)
			}
			applies, refreshes := creds.counts()
			if applies != tc.applies || refreshes != tc.refresh {
				t.Errorf("Apply %d, Refresh %d times; want %d, %d", applies, refreshes, tc.applies, tc.refresh)
			}
			creds.mu.Lock()
			defer creds.mu.Unlock()
			want := "GET http://" + a.srv.Addr() + "/rooms?x=1 sdk"
			for _, s := range creds.seen {
				if s != want {
					t.Errorf("Apply saw %q, want %q", s, want)
				}
			}
			a.mu.Lock()
			defer a.mu.Unlock()
			for i, v := range a.auths {
				if len(v) != 1 || a.callers[i] != "sdk" {
					t.Errorf("handshake %d: Authorization %q, X-Caller %q; want one token and the caller's header", i+1, v, a.callers[i])
				}
			}
			if tc.name == "expired, 401" && (len(a.auths) != 2 || a.auths[0][0] != "Bearer tok-0" || a.auths[1][0] != "Bearer tok-1") {
				t.Errorf("tokens sent %q, want tok-0 then the refreshed tok-1", a.auths)
			}
		})
	}
}

// errRefusal marks a case whose error is the server's refusal.
var errRefusal = errors.New("the refusal")

// TestWebSocketSessionTokenExpires: the server's token expires and it
// drops its connections, three times. A session whose Dialer has
// Credentials redials with the old token, gets a 401, refreshes and goes
// on; a session with the token in its fixed Header (the way before issue
// 21) ends for good with the 401.
func TestWebSocketSessionTokenExpires(t *testing.T) {
	run := func(t *testing.T, withCreds bool) (*transport.WebSocketSession, *tokenCreds, *wsAuthServer, *atomic.Int64) {
		a := startAuth(t, http.StatusUnauthorized)
		d := sessionDialer()
		cfg := transport.WebSocketSessionConfig{URL: wsURL("ws", a.srv, "/"), Dialer: d}
		creds := &tokenCreds{}
		if withCreds {
			d.Credentials = creds
		} else {
			cfg.Header = http.Header{"Authorization": {"Bearer tok-0"}}
		}
		var connects atomic.Int64
		cfg.OnStateChange = func(st transport.WebSocketState) {
			if st == transport.WebSocketConnected {
				connects.Add(1)
			}
		}
		s := newSession(t, cfg)
		for i := 1; i <= 3; i++ {
			eventually(t, 5*time.Second, "connected", func() bool {
				return connects.Load() == int64(i) || s.State() == transport.WebSocketClosed
			})
			if s.State() == transport.WebSocketClosed {
				break
			}
			a.rotate()
		}
		return s, creds, a, &connects
	}
	t.Run("Credentials", func(t *testing.T) {
		s, creds, _, connects := run(t, true)
		eventually(t, 5*time.Second, "connected with the fourth token", func() bool {
			return connects.Load() == 4 && s.State() == transport.WebSocketConnected
		})
		if err := s.Err(); err != nil {
			t.Fatalf("session ended: %v", err)
		}
		if _, refreshes := creds.counts(); refreshes != 3 {
			t.Errorf("Refresh called %d times, want 3 (once per expiry)", refreshes)
		}
	})
	t.Run("fixed Header", func(t *testing.T) {
		s, _, _, _ := run(t, false)
		eventually(t, 5*time.Second, "ended", func() bool { return s.State() == transport.WebSocketClosed })
		var he *transport.HandshakeError
		if err := s.Err(); !errors.As(err, &he) || he.StatusCode != http.StatusUnauthorized {
			t.Fatalf("Err %v, want the 401 that ends a session without Credentials", err)
		}
	})
}

// TestWebSocketSessionHeaderFunc: HeaderFunc runs before every dial under
// a context with a deadline, its headers replace Header's of the same
// key and keep the others; an error is a failed dial (the session waits
// and asks again) and is logged without any header value.
func TestWebSocketSessionHeaderFunc(t *testing.T) {
	a := startAuth(t, http.StatusUnauthorized)
	var calls, fails atomic.Int64
	fails.Store(2)
	var logs bytes.Buffer
	var logMu sync.Mutex
	logger := slog.New(slog.NewTextHandler(&lockedWriter{w: &logs, mu: &logMu}, nil))
	d := sessionDialer()
	d.Retry = &retry.Policy{InitialInterval: 20 * time.Millisecond, MaxInterval: 50 * time.Millisecond}
	var connects atomic.Int64
	s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", a.srv, "/"), Dialer: d, Logger: logger,
		Header: http.Header{"Authorization": {"Bearer stale"}, "X-Caller": {"sdk"}},
		HeaderFunc: func(ctx context.Context) (http.Header, error) {
			calls.Add(1)
			if _, ok := ctx.Deadline(); !ok {
				return nil, errors.New("no deadline on HeaderFunc's context")
			}
			if fails.Add(-1) >= 0 {
				return nil, errors.New("token source unavailable")
			}
			return http.Header{"authorization": {"Bearer tok-" + strconv.FormatInt(a.valid.Load(), 10)}}, nil
		},
		OnStateChange: func(st transport.WebSocketState) {
			if st == transport.WebSocketConnected {
				connects.Add(1)
			}
		}})
	eventually(t, 5*time.Second, "connected after two failed HeaderFunc calls", func() bool { return connects.Load() == 1 })
	if n := calls.Load(); n != 3 || a.handshakes.Load() != 1 {
		t.Fatalf("HeaderFunc called %d times for %d handshakes; want 3 for 1 (failures dial nothing)", n, a.handshakes.Load())
	}
	fails.Store(1)
	a.rotate()
	eventually(t, 5*time.Second, "connected with the new token", func() bool { return connects.Load() == 2 })
	if s.Err() != nil || calls.Load() != 5 {
		t.Fatalf("Err %v, %d calls; want a session on the new token after 5 calls", s.Err(), calls.Load())
	}
	a.mu.Lock()
	for i, v := range a.auths {
		if len(v) != 1 || !strings.HasPrefix(v[0], "Bearer tok-") || a.callers[i] != "sdk" {
			t.Errorf("handshake %d: Authorization %q, X-Caller %q; want HeaderFunc's token only, and Header's X-Caller", i+1, v, a.callers[i])
		}
	}
	a.mu.Unlock()
	s.Close()
	logMu.Lock()
	defer logMu.Unlock()
	out := logs.String()
	if !strings.Contains(out, "HeaderFunc") || strings.Contains(out, "tok-") || strings.Contains(out, "stale") {
		t.Errorf("log %q: want the HeaderFunc failure, without any header value", out)
	}
}

type lockedWriter struct {
	w  *bytes.Buffer
	mu *sync.Mutex
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}
