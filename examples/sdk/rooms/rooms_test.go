package rooms_test

import (
	"context"
	"errors"
	"net/http/httptest"
	"net/netip"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/examples/sdk/internal/fakerooms"
	"github.com/lifeline-go/lifeline/examples/sdk/rooms"
	"github.com/lifeline-go/lifeline/transport"
)

// resolver answers every name with its addresses, in order: a name behind
// several loopback IPs, some of them faulty.
type resolver []netip.Addr

func (r resolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) { return r, nil }

func newClient(t *testing.T, srv *fakerooms.Server, d *dial.Dialer) *rooms.Client {
	t.Helper()
	base := srv.URL()
	if d != nil && d.Resolver != nil {
		base = "http://rooms.test:" + strconv.Itoa(srv.Port())
	}
	c, err := rooms.New(rooms.Config{BaseURL: base, APIKey: srv.APIKey(), Dialer: d})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

// fast returns ctx with per-call limits short enough for a test: the
// SDK's calls take them from the context (transport.WithCallOptions).
func fast(ctx context.Context) context.Context {
	return transport.WithCallOptions(ctx, transport.CallOptions{FirstByteTimeout: 200 * time.Millisecond})
}

func TestAPI(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	c := newClient(t, srv, nil)
	ctx := t.Context()
	a, err := c.CreateRoom(ctx, "a")
	if err != nil {
		t.Fatal(err)
	}
	b, err := c.CreateRoom(ctx, "b")
	if err != nil {
		t.Fatal(err)
	}
	got, err := c.GetRoom(ctx, b.ID)
	if err != nil || got != b {
		t.Fatalf("GetRoom(%q) = %+v, %v; want %+v", b.ID, got, err, b)
	}
	list, err := c.ListRooms(ctx)
	if err != nil || len(list) != 2 || list[0] != a || list[1] != b {
		t.Fatalf("ListRooms = %+v, %v; want [%+v %+v]", list, err, a, b)
	}
	var e *rooms.Error
	if _, err := c.GetRoom(ctx, "nope"); !errors.As(err, &e) || e.StatusCode != 404 {
		t.Fatalf("GetRoom(nope) = %v; want a *rooms.Error 404", err)
	}
	if st := srv.Stats(); st.TokensIssued != 1 || st.Unauthorized != 0 {
		t.Fatalf("stats %+v: want one token, no 401", st)
	}
}

// TestBadAPIKey: a rejected API key fails the call at once (no loop of
// refreshes), and the key is in no error text.
func TestBadAPIKey(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{APIKey: "right-key"})
	c, err := rooms.New(rooms.Config{BaseURL: srv.URL() + "/", APIKey: "wrong-key"})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_, err = c.ListRooms(t.Context())
	var e *rooms.Error
	if !errors.As(err, &e) || e.StatusCode != 401 || strings.Contains(err.Error(), "wrong-key") {
		t.Fatalf("err = %v; want a *rooms.Error 401 that does not show the key", err)
	}
	if st := srv.Stats(); st.TokensIssued != 0 || st.Unauthorized > 2 {
		t.Fatalf("stats %+v: want no token and at most 2 rejected tries", st)
	}
	t.Log(err)
}

// TestCreateRoomAnswerLost: the server makes the room and its answer never
// comes; lifeline retries the POST (it has an Idempotency-Key) after the
// first-byte limit, and the server answers with the same room.
func TestCreateRoomAnswerLost(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	c := newClient(t, srv, nil)
	if _, err := c.ListRooms(t.Context()); err != nil { // fetch the token first
		t.Fatal(err)
	}
	srv.HoldNext(1)
	start := time.Now()
	room, err := c.CreateRoom(fast(t.Context()), "standup")
	if err != nil {
		t.Fatal(err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("CreateRoom took %v; the per-call first-byte limit is 200ms", d)
	}
	list, err := c.ListRooms(t.Context())
	if err != nil || len(list) != 1 || list[0] != room || srv.Stats().Creates != 1 {
		t.Fatalf("rooms %+v, %v, creates %d: want exactly %+v", list, err, srv.Stats().Creates, room)
	}
}

// TestHangAfterAccept: a load balancer that accepts and then says nothing
// (incident 01). Alone, it bounds the call with a first_byte error; beside
// a healthy address, every call succeeds.
func TestHangAfterAccept(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	srv.HangAfterAccept(t, "127.0.0.2")
	hang, good := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")

	t.Run("alone", func(t *testing.T) {
		c := newClient(t, srv, &dial.Dialer{Resolver: resolver{hang}})
		start := time.Now()
		_, err := c.ListRooms(fast(t.Context()))
		d := time.Since(start)
		var te *transport.TimeoutError
		if !errors.As(err, &te) || te.Phase != "first_byte" || !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("err = %v; want a *transport.TimeoutError of phase first_byte", err)
		}
		if d > 5*time.Second {
			t.Fatalf("took %v; 3 attempts of 200ms should end well within 5s (unbounded: forever)", d)
		}
		t.Logf("bounded in %v: %v", d, err)
	})
	t.Run("healed by a second address", func(t *testing.T) {
		c := newClient(t, srv, &dial.Dialer{Resolver: resolver{hang, good}, Health: &dial.Health{}})
		for i := range 5 {
			start := time.Now()
			if _, err := c.ListRooms(fast(t.Context())); err != nil {
				t.Fatalf("call %d: %v", i, err)
			}
			d := time.Since(start)
			if d > 5*time.Second {
				t.Errorf("call %d took %v; want well within 5s (first-byte limit 200ms)", i, d)
			}
			t.Logf("call %d: %v", i, d)
		}
		// Every call succeeded, and monitoring still sees the hang.
		if m := scrape(c); !strings.Contains(m, "lifeline_masked_failures_total{") || !strings.Contains(m, `lifeline_phase="first_byte"`) {
			t.Errorf("/metrics shows no masked first_byte failure:\n%s", m)
		}
	})
}

// TestHangConnect: an address where connect hangs (SYNs dropped). Alone,
// the call ends with a connect-phase *dial.Error; beside a healthy address,
// the race overtakes it.
func TestHangConnect(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	srv.HangConnect(t, "127.0.0.2")
	hang, good := netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")

	t.Run("alone", func(t *testing.T) {
		c := newClient(t, srv, &dial.Dialer{Resolver: resolver{hang}, ConnectTimeout: 200 * time.Millisecond})
		start := time.Now()
		_, err := c.ListRooms(t.Context())
		d := time.Since(start)
		var de *dial.Error
		if !errors.As(err, &de) || de.Phase != dial.PhaseConnect {
			t.Fatalf("err = %v; want a *dial.Error of phase connect", err)
		}
		if d > 5*time.Second {
			t.Fatalf("took %v; want well within 5s", d)
		}
		t.Logf("bounded in %v: %v", d, err)
	})
	t.Run("healed by a second address", func(t *testing.T) {
		c := newClient(t, srv, &dial.Dialer{Resolver: resolver{hang, good}})
		start := time.Now()
		if _, err := c.ListRooms(t.Context()); err != nil {
			t.Fatal(err)
		}
		if d := time.Since(start); d > 3*time.Second {
			t.Fatalf("took %v; the race should overtake the hang after ~250ms (ConnectTimeout is 5s)", d)
		}
	})
}

// Test503RetryAfter: a service shedding load answers 503 with Retry-After;
// lifeline waits what it asks (not its own 100ms backoff), and a caller
// whose deadline comes first gets the answer at once, with the wait.
func Test503RetryAfter(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	c := newClient(t, srv, nil)
	if _, err := c.ListRooms(t.Context()); err != nil {
		t.Fatal(err)
	}

	t.Run("honoured", func(t *testing.T) {
		srv.Fail(2, time.Second)
		failed := srv.Stats().Failed
		start := time.Now()
		room, err := c.CreateRoom(t.Context(), "after-503") // a POST: retried for its Idempotency-Key
		d := time.Since(start)
		if err != nil {
			t.Fatal(err)
		}
		if n := srv.Stats().Failed - failed; n != 2 {
			t.Fatalf("%d answers were 503; want 2", n)
		}
		if d < 1900*time.Millisecond {
			t.Fatalf("succeeded after %v; two Retry-After: 1 ask for 2s", d)
		}
		if list, _ := c.ListRooms(t.Context()); len(list) != 1 || list[0] != room {
			t.Fatalf("rooms %+v; want only %+v", list, room)
		}
	})
	t.Run("bounded by the deadline", func(t *testing.T) {
		srv.Fail(1, 5*time.Second)
		// 3s: a wait started past it would end there, far above what a
		// loaded machine adds to one answer.
		ctx, cancel := context.WithTimeout(t.Context(), 3*time.Second)
		defer cancel()
		start := time.Now()
		_, err := c.ListRooms(ctx)
		d := time.Since(start)
		var e *rooms.Error
		if !errors.As(err, &e) || e.StatusCode != 503 || e.RetryAfter != 5*time.Second {
			t.Fatalf("err = %v; want a *rooms.Error 503 with RetryAfter 5s", err)
		}
		if d > 2*time.Second {
			t.Fatalf("returned after %v; a wait past the deadline should not be started", d)
		}
	})
}

// TestTokenExpiry: tokens revoked server-side are refreshed once for many
// concurrent calls, which all succeed; tokens that expire by TTL are
// renewed as they go; a websocket redial after revocation gets a fresh one.
func TestTokenExpiry(t *testing.T) {
	t.Run("revoked", func(t *testing.T) {
		srv := fakerooms.Start(t, fakerooms.Config{})
		c := newClient(t, srv, nil)
		room, err := c.CreateRoom(t.Context(), "a")
		if err != nil {
			t.Fatal(err)
		}
		srv.ExpireTokens()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				if _, err := c.GetRoom(t.Context(), room.ID); err != nil {
					t.Error(err)
				}
			})
		}
		wg.Wait()
		if st := srv.Stats(); st.TokensIssued != 2 || st.Unauthorized == 0 {
			t.Fatalf("stats %+v: want 2 tokens (one refresh for all 8 calls) after some 401s", st)
		}
	})
	t.Run("ttl", func(t *testing.T) {
		srv := fakerooms.Start(t, fakerooms.Config{TokenTTL: 500 * time.Millisecond})
		c := newClient(t, srv, nil)
		for end := time.Now().Add(1600 * time.Millisecond); time.Now().Before(end); time.Sleep(50 * time.Millisecond) {
			if _, err := c.ListRooms(t.Context()); err != nil {
				t.Fatal(err)
			}
		}
		// Renewed before expiry (at half its life here), and cached: ~30
		// calls, 3 to 12 tokens.
		if st := srv.Stats(); st.TokensIssued < 3 || st.TokensIssued > 12 {
			t.Fatalf("stats %+v: want a token per 250-500ms (3 to 12 in 1.6s)", st)
		} else {
			t.Logf("stats %+v", st)
		}
	})
	t.Run("websocket redial", func(t *testing.T) {
		srv := fakerooms.Start(t, fakerooms.Config{})
		c := newClient(t, srv, nil)
		events := make(chan rooms.Event, 64)
		sig := openSignal(t, c, events)
		if err := sig.Subscribe(t.Context(), "r1"); err != nil {
			t.Fatal(err)
		}
		waitEvent(t, events, "subscribed")
		srv.ExpireTokens()
		srv.DropAll()
		waitEvent(t, events, "subscribed") // resubscribed on the redialled conn
		srv.Publish("r1", "hi")
		waitEvent(t, events, "message")
		if st := srv.Stats(); st.TokensIssued != 2 || st.SignalConns != 2 {
			t.Fatalf("stats %+v: want 2 tokens and 2 websocket conns", st)
		}
	})
}

// TestDropEvery2s: a server that cuts every websocket every 2s. The
// subscription survives each cut and events keep arriving; the share of
// publishes that found a subscribed conn is the connected time.
func TestDropEvery2s(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	c := newClient(t, srv, nil)
	var got atomic.Int64
	var mu sync.Mutex
	var arrivals []time.Time
	sig, err := c.Signal(func(ev rooms.Event) {
		if ev.Type == "message" {
			got.Add(1)
			mu.Lock()
			arrivals = append(arrivals, time.Now())
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sig.Close()
	if err := sig.Subscribe(t.Context(), "r1"); err != nil {
		t.Fatal(err)
	}
	srv.DropEvery(2 * time.Second)
	defer srv.DropEvery(0)
	start := time.Now()
	var published, reached int
	for time.Since(start) < 7*time.Second {
		published++
		reached += srv.Publish("r1", "tick")
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond) // the last events in flight
	st := srv.Stats()
	connected := float64(reached) / float64(published)
	t.Logf("drops %d, conns %d, published %d, reached a subscribed conn %d (connected %.1f%%), received %d",
		st.Dropped, st.SignalConns, published, reached, 100*connected, got.Load())
	if st.Dropped < 3 || st.SignalConns < 4 {
		t.Fatalf("stats %+v: want ≥3 drops and a conn after each", st)
	}
	if connected < 0.8 {
		t.Errorf("connected %.1f%% of the time; want ≥ 80%% with a drop every 2s", 100*connected)
	}
	if n := got.Load(); n < int64(reached)-int64(st.Dropped)*5 {
		t.Errorf("received %d of %d delivered events", n, reached)
	}
	mu.Lock()
	defer mu.Unlock()
	for w := time.Duration(0); w < 7*time.Second; w += time.Second { // events in every second
		n := 0
		for _, a := range arrivals {
			if s := a.Sub(start); s >= w && s < w+time.Second {
				n++
			}
		}
		if n == 0 {
			t.Errorf("no event between %v and %v", w, w+time.Second)
		}
	}
}

// TestSubscribeAcrossDrops: subscribes made from many goroutines while
// the server keeps cutting the websocket are none of them lost: once the
// cuts stop, every room gets its events.
func TestSubscribeAcrossDrops(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	c := newClient(t, srv, nil)
	var mu sync.Mutex
	got := map[string]bool{}
	sig, err := c.Signal(func(ev rooms.Event) {
		if ev.Type == "message" {
			mu.Lock()
			got[ev.Room] = true
			mu.Unlock()
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer sig.Close()
	srv.DropEvery(40 * time.Millisecond)
	ctx, cancel := context.WithTimeout(t.Context(), 15*time.Second)
	defer cancel()
	const n = 20
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			time.Sleep(time.Duration(i) * 15 * time.Millisecond)
			if err := sig.Subscribe(ctx, "r"+strconv.Itoa(i)); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	srv.DropEvery(0)
	for i := range n {
		room := "r" + strconv.Itoa(i)
		for srv.Publish(room, "x") == 0 { // until the resubscribe reached the server
			if ctx.Err() != nil {
				t.Fatalf("%s never subscribed on the server after the cuts (%+v)", room, srv.Stats())
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		mu.Lock()
		k := len(got)
		mu.Unlock()
		if k == n {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("events for %d of %d rooms", k, n)
		}
		time.Sleep(10 * time.Millisecond)
	}
	t.Logf("stats %+v", srv.Stats())
}

// TestMetrics: the client's /metrics shows lifeline's metrics by the
// semantic conventions, named "rooms".
func TestMetrics(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	c := newClient(t, srv, nil)
	if _, err := c.ListRooms(t.Context()); err != nil {
		t.Fatal(err)
	}
	srv.ExpireTokens() // a refresh: its metric too
	if _, err := c.ListRooms(t.Context()); err != nil {
		t.Fatal(err)
	}
	body := scrape(c)
	for _, want := range []string{"http_client_request_duration_seconds_count{", `lifeline_client_name="rooms"`} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, body)
		}
	}
	if strings.Contains(body, "tok-") {
		t.Error("/metrics holds a token")
	}
	// What Prometheus scrapes is valid and lint-clean.
	if promtool, err := exec.LookPath("promtool"); err == nil {
		cmd := exec.CommandContext(t.Context(), promtool, "check", "metrics")
		cmd.Stdin = strings.NewReader(body)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("promtool check metrics: %v\n%s", err, out)
		}
	} else {
		t.Log("promtool not installed: exposition not linted")
	}
	// Two SDKs in one process are told apart: every point of lifeline's
	// carries the client's name.
	for _, line := range strings.Split(body, "\n") {
		if (strings.HasPrefix(line, "lifeline_") || strings.HasPrefix(line, "http_client_")) &&
			!strings.Contains(line, `lifeline_client_name="rooms"`) {
			t.Errorf("not named: %s", line)
		}
	}
}

// TestClose: a closed Signal refuses subscribes; Client.Close after it
// leaves no goroutine (TestMain's goleak).
func TestClose(t *testing.T) {
	srv := fakerooms.Start(t, fakerooms.Config{})
	c := newClient(t, srv, nil)
	sig := openSignal(t, c, make(chan rooms.Event, 8))
	if err := sig.WaitConnected(t.Context()); err != nil {
		t.Fatal(err)
	}
	if err := sig.Close(); err != nil {
		t.Fatal(err)
	}
	if err := sig.Subscribe(t.Context(), "r1"); !errors.Is(err, transport.ErrSessionClosed) {
		t.Fatalf("Subscribe after Close = %v; want ErrSessionClosed", err)
	}
	if err := c.Close(); err != nil {
		t.Fatal(err)
	}
}

func openSignal(t *testing.T, c *rooms.Client, events chan rooms.Event) *rooms.Signal {
	t.Helper()
	sig, err := c.Signal(func(ev rooms.Event) {
		select {
		case events <- ev:
		default:
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = sig.Close() })
	return sig
}

func waitEvent(t *testing.T, events <-chan rooms.Event, typ string) rooms.Event {
	t.Helper()
	timeout := time.NewTimer(10 * time.Second)
	defer timeout.Stop()
	for {
		select {
		case ev := <-events:
			if ev.Type == typ {
				return ev
			}
		case <-timeout.C:
			t.Fatalf("no %q event within 10s", typ)
		}
	}
}

func scrape(c *rooms.Client) string {
	rec := httptest.NewRecorder()
	c.MetricsHandler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}
