package transport_test

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// adv33Sink is a slog.Handler over one log sink: Handle writes under the
// sink's lock and Enabled reads the level under it (a level changed at
// run time). When the sink stalls, Handle waits with the lock held, and
// so does every Enabled meanwhile. hook, when set, runs first in Handle,
// without the lock.
type adv33Sink struct {
	hook func(r slog.Record)

	mu      sync.Mutex
	stalled chan struct{}
	entered chan struct{}
	msgs    []string
	attrs   []map[string]string
}

func (s *adv33Sink) Enabled(context.Context, slog.Level) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return true
}
func (s *adv33Sink) WithAttrs([]slog.Attr) slog.Handler { return s }
func (s *adv33Sink) WithGroup(string) slog.Handler      { return s }
func (s *adv33Sink) Handle(_ context.Context, r slog.Record) error {
	if s.hook != nil {
		s.hook(r)
	}
	attrs := map[string]string{}
	r.Attrs(func(a slog.Attr) bool { attrs[a.Key] = a.Value.String(); return true })
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.stalled != nil {
		select {
		case <-s.entered:
		default:
			close(s.entered)
		}
		<-s.stalled
	}
	s.msgs = append(s.msgs, r.Message)
	s.attrs = append(s.attrs, attrs)
	return nil
}

// stall makes the sink stall from the next record on; release (safe to
// call twice) lets it go.
func (s *adv33Sink) stall() (entered <-chan struct{}, release func()) {
	s.mu.Lock()
	defer s.mu.Unlock()
	ch := make(chan struct{})
	s.stalled, s.entered = ch, make(chan struct{})
	var once sync.Once
	return s.entered, func() {
		once.Do(func() {
			close(ch)
			s.mu.Lock()
			s.stalled = nil
			s.mu.Unlock()
		})
	}
}

// waitFor waits (10s at most) for a record whose message holds msg and
// returns its attributes.
func (s *adv33Sink) waitFor(t *testing.T, msg string) map[string]string {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(time.Millisecond) {
		s.mu.Lock()
		for i, m := range s.msgs {
			if strings.Contains(m, msg) {
				a := s.attrs[i]
				s.mu.Unlock()
				return a
			}
		}
		s.mu.Unlock()
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	t.Fatalf("no record %q after 10s; records: %q", msg, s.msgs)
	return nil
}

// TestAdv33StalledSinkStallsNoCollection: the gauge lifeline.upstream.down
// is what first sees upstream A's connects hang, while the program's own
// records stall the Logger's sink. The change's record was queued — but
// the handler's Enabled, which waits on the sink's lock, was asked inside
// the collection: Collect waited for the sink. The Transport now runs
// none of the handler's code inside a collection.
func TestAdv33StalledSinkStallsNoCollection(t *testing.T) {
	r := newRig(t)
	const hostA = "127.0.0.23:80"
	sink := &adv33Sink{}
	logger := slog.New(sink)
	hangingHost(t, hostA, r.mp, logger)

	entered, release := sink.stall()
	defer release()
	go logger.Warn("app: a record of the program's own")
	<-entered
	collected := make(chan struct{})
	go func() {
		defer close(collected)
		var rm metricdata.ResourceMetrics
		_ = r.reader.Collect(context.Background(), &rm)
	}()
	select {
	case <-collected:
	case <-time.After(5 * time.Second):
		release()
		<-collected
		t.Fatal("metric collection waited for the Logger's stalled sink")
	}
	release()
	sink.waitFor(t, "upstream down")
}

// TestAdv33HandlerPanicsOnUpstreamDown: a handler that panics on the
// record of an upstream going down ran on the Transport's log goroutine,
// where nothing can recover it: the program died. Now that record is
// lost, one record says so, and the calls go on failing fast.
func TestAdv33HandlerPanicsOnUpstreamDown(t *testing.T) {
	addr := faultnet.RefusedAddr(t, "tcp4")
	sink := &adv33Sink{hook: func(r slog.Record) {
		if strings.Contains(r.Message, "upstream down") {
			panic(errors.New("sink: encoder broke on " + r.Message))
		}
	}}
	tr := &transport.Transport{Logger: slog.New(sink), Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	call := func() error {
		ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second)
		defer cancel()
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/", nil)
		resp, err := tr.RoundTrip(req)
		if err == nil {
			_ = resp.Body.Close()
		}
		return err
	}
	for i := 0; !errors.Is(call(), transport.ErrUnavailable); i++ {
		if i == 20 {
			t.Fatal("never failed fast")
		}
	}
	a := sink.waitFor(t, "handler panicked")
	if !strings.Contains(a["of"], "upstream down") || !strings.Contains(a["panic"], "encoder broke") {
		t.Fatalf("record of the panic: %v", a)
	}
	if err := call(); !errors.Is(err, transport.ErrUnavailable) {
		t.Fatalf("a call after the panic: %v", err)
	}
}

// TestAdv33SessionCloseWithABlockedHandler: a session whose dials are
// refused, and a Logger's handler that blocks on the first record (a log
// sink that stalls). The records were written on the session's goroutine,
// which Close waits for: Close waited for the sink for ever. Now they are
// written on a goroutine of their own; Close waits at most 50ms for them.
func TestAdv33SessionCloseWithABlockedHandler(t *testing.T) {
	release := make(chan struct{})
	blocked := make(chan struct{})
	var once sync.Once
	sink := &adv33Sink{hook: func(slog.Record) { once.Do(func() { close(blocked); <-release }) }}
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws://" + faultnet.RefusedAddr(t, "tcp4") + "/", Dialer: sessionDialer(), Logger: slog.New(sink)})
	if err != nil {
		t.Fatal(err)
	}
	select {
	case <-blocked:
	case <-time.After(10 * time.Second):
		t.Fatal("no record of the refused dial after 10s")
	}
	closed := make(chan struct{})
	go func() {
		defer close(closed)
		_ = s.Close()
	}()
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		close(release)
		<-closed
		t.Fatal("Close still waiting after 5s for a blocked Logger handler")
	}
	close(release)
	sink.waitFor(t, "websocket handshake failed")
}

// TestAdv33SessionHandlerClosesSession: a Logger's handler that closes the
// session on a failed dial's record (a program that gives up on the first
// failure it hears of). The handler ran on the session's goroutine, which
// Close waits for: the two waited on each other for ever.
func TestAdv33SessionHandlerClosesSession(t *testing.T) {
	var sp atomic.Pointer[transport.WebSocketSession]
	closed := make(chan struct{})
	var once sync.Once
	sink := &adv33Sink{hook: func(r slog.Record) {
		if strings.Contains(r.Message, "handshake failed") {
			once.Do(func() {
				for sp.Load() == nil {
					time.Sleep(time.Millisecond)
				}
				_ = sp.Load().Close()
				close(closed)
			})
		}
	}}
	s, err := transport.NewWebSocketSession(transport.WebSocketSessionConfig{
		URL: "ws://" + faultnet.RefusedAddr(t, "tcp4") + "/", Dialer: sessionDialer(), Logger: slog.New(sink)})
	if err != nil {
		t.Fatal(err)
	}
	sp.Store(s)
	select {
	case <-closed:
	case <-time.After(10 * time.Second):
		// The session's goroutine and the handler wait on each other: no
		// Close here, it would wait too.
		t.Fatal("the handler's Close still waiting after 10s")
	}
	select {
	case <-s.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("session not done 5s after Close")
	}
	_ = s.Close()
}

// TestHostsSharingALoggerEachLogTheirOutage: one Transport loses two
// upstreams at once. The Logger's limit is a record per kind per 10s; the
// kind of a change names its upstream, so each host's going down is a
// record of its own, not only the first host's of the outage.
func TestHostsSharingALoggerEachLogTheirOutage(t *testing.T) {
	var logs logSink
	tr := &transport.Transport{Logger: slog.New(slog.NewTextHandler(&logs, nil))}
	defer tr.CloseIdleConnections()
	c := transport.NewClient(tr)
	hosts := []string{faultnet.RefusedAddr(t, "tcp4"), faultnet.RefusedAddr(t, "tcp4")}
	for _, h := range hosts {
		for i := 0; ; i++ {
			resp, err := c.Get("http://" + h + "/")
			if err == nil {
				_ = resp.Body.Close()
			}
			if errors.Is(err, transport.ErrUnavailable) {
				break
			}
			if i > 10 {
				t.Fatalf("%s never failed fast: %v", h, err)
			}
		}
	}
	for _, h := range hosts {
		waitLog(t, &logs, "server.address="+h)
	}
	for deadline := time.Now().Add(10 * time.Second); strings.Count(logs.String(), "upstream down") < 2; {
		if time.Now().After(deadline) {
			t.Fatalf("want a 'down' record per host:\n%s", logs.String())
		}
		time.Sleep(time.Millisecond)
	}
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "upstream down") && !strings.Contains(l, "server.address=") {
			t.Fatalf("a 'down' record without its host: %s", l)
		}
	}
}
