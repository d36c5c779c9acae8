package transport_test

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/base64"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"

	"github.com/lifeline-go/lifeline/internal/logx"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/transport"
)

// rawUpgradeServer serves each connection with answer(n, conn, request)
// (n counts from 1) on 127.0.0.1; its goroutines end with the test.
func rawUpgradeServer(t *testing.T, answer func(n int64, c net.Conn, r *http.Request)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var n atomic.Int64
	var mu sync.Mutex
	conns := map[net.Conn]struct{}{}
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns[c] = struct{}{}
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				r, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil {
					return
				}
				answer(n.Add(1), c, r)
			}()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		for c := range conns {
			c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return "ws://" + ln.Addr().String() + "/ws?token=QUERY-SECRET"
}

// upgrade answers a valid 101 and holds the connection until the peer
// goes.
func upgrade(c net.Conn, r *http.Request) {
	h := sha1.Sum([]byte(r.Header.Get("Sec-WebSocket-Key") + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"))
	_, _ = io.WriteString(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: "+base64.StdEncoding.EncodeToString(h[:])+"\r\n\r\n")
	_, _ = io.Copy(io.Discard, c)
}

// goTypeName reports whether an error class is a Go type's name, what
// otelx falls back to for an error it cannot classify.
func goTypeName(t string) bool {
	return t == "" || strings.HasPrefix(t, "*") || strings.Contains(t, ".")
}

// TestAdvSessionDialFailedClasses: a server that answers the upgrade with
// garbage of every kind before a good 101, and an OnConnect that fails
// once with an error of the host's. Each failed dial reaches
// OnDialFailed with a class (ErrorType) that is no Go type name, and the
// dials the 101 recovered are counted on lifeline.masked_failures with
// such classes too; no class and no error text carries the URL's query.
func TestAdvSessionDialFailedClasses(t *testing.T) {
	answers := []string{
		"xyz\r\n\r\n",                      // not HTTP at all
		"HTTP/1.1 101 Switching Protocols", // cut in the status line
		"HTTP/1.1 abc Nope\r\n\r\n",        // a status that is no number
		"",                                 // closed before any answer
		"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: d3Jvbmc=\r\n\r\n",
	}
	url := rawUpgradeServer(t, func(n int64, c net.Conn, r *http.Request) {
		if int(n) > len(answers) {
			upgrade(c, r)
			return
		}
		_, _ = io.WriteString(c, answers[n-1])
	})
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	t.Cleanup(func() { _ = mp.Shutdown(context.Background()) })
	d := sessionDialer()
	d.MeterProvider = mp
	var mu sync.Mutex
	var classes, texts []string
	var steps atomic.Int64
	s := newSession(t, transport.WebSocketSessionConfig{
		URL:    url,
		Dialer: d,
		OnConnect: func(context.Context, *websocket.Conn) error {
			if steps.Add(1) == 1 {
				return errors.New("denied") // the host's own error, of no class
			}
			return nil
		},
		OnDialFailed: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			classes = append(classes, otelx.ErrorTypeOf(err))
			texts = append(texts, err.Error())
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	answers = append(answers, "(a good 101, then OnConnect failed)")
	if len(classes) != len(answers) {
		t.Fatalf("OnDialFailed saw %d failures (%v), want %d", len(classes), classes, len(answers))
	}
	for i, c := range classes {
		t.Logf("%q: class %q: %s", answers[i], c, texts[i])
		if goTypeName(c) {
			t.Errorf("answer %q: OnDialFailed's class is %q, a Go type name", answers[i], c)
		}
		if strings.Contains(texts[i], "SECRET") {
			t.Errorf("answer %q: error text carries the query: %s", answers[i], texts[i])
		}
	}
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	var masked int64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "lifeline.masked_failures" {
				continue
			}
			for _, p := range m.Data.(metricdata.Sum[int64]).DataPoints {
				et, _ := p.Attributes.Value("error.type")
				masked += p.Value
				if goTypeName(et.AsString()) {
					t.Errorf("masked_failures point with error.type %q: %v", et.AsString(), p.Attributes.ToSlice())
				}
			}
		}
	}
	if masked != int64(len(answers)) {
		t.Errorf("masked_failures counted %d, want %d", masked, len(answers))
	}
}

// TestAdvSessionPanickingHooks: OnDialFailed, OnDisconnect and
// OnStateChange that panic at every call. They run on the session's own
// goroutine, where the host cannot recover: the session must not take the
// process down, and goes on (a failed dial redialed, a lost connection
// redialed), with the panics logged.
func TestAdvSessionPanickingHooks(t *testing.T) {
	var conns atomic.Int64
	url := rawUpgradeServer(t, func(n int64, c net.Conn, r *http.Request) {
		switch n {
		case 1:
			_, _ = io.WriteString(c, "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
		case 2:
			conns.Add(1)
			go func() { time.Sleep(100 * time.Millisecond); c.Close() }()
			upgrade(c, r)
		default:
			conns.Add(1)
			upgrade(c, r)
		}
	})
	var logs syncBuffer
	var calls atomic.Int64
	s := newSession(t, transport.WebSocketSessionConfig{
		URL:    url,
		Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
		OnDialFailed: func(error) {
			calls.Add(1)
			panic("host bug in OnDialFailed")
		},
		OnDisconnect: func(error) {
			calls.Add(1)
			panic("host bug in OnDisconnect")
		},
		OnStateChange: func(transport.WebSocketState) {
			calls.Add(1)
			panic("host bug in OnStateChange")
		},
	})
	eventually(t, 10*time.Second, "redialed after the loss", func() bool { return conns.Load() >= 2 })
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	if calls.Load() < 4 {
		t.Fatalf("%d hook calls", calls.Load())
	}
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close hung after panicking hooks")
	}
	for _, h := range []string{"OnDialFailed", "OnDisconnect", "OnStateChange"} {
		if !strings.Contains(logs.String(), h) {
			t.Errorf("no log of %s's panic: %s", h, logs.String())
		}
	}
}

// TestAdvSessionHostileAnswerText: a server whose upgrade answers carry 64 KiB
// of text and terminal escapes (in a 503's reason phrase, in a
// status line that is no HTTP). The error a host gets (OnDialFailed, and
// from it every cause, log and event text) stays short and carries no
// control character.
func TestAdvSessionHostileAnswerText(t *testing.T) {
	junk := "\x1b[2J\x1b]0;owned\x07" + strings.Repeat("A", 64<<10)
	answers := []string{
		"HTTP/1.1 503 " + junk + "\r\nContent-Length: 0\r\n\r\n",
		junk + "\r\n\r\n",
	}
	url := rawUpgradeServer(t, func(n int64, c net.Conn, r *http.Request) {
		if int(n) > len(answers) {
			upgrade(c, r)
			return
		}
		_, _ = io.WriteString(c, answers[n-1])
	})
	var mu sync.Mutex
	var texts []string
	s := newSession(t, transport.WebSocketSessionConfig{
		URL: url,
		OnDialFailed: func(err error) {
			mu.Lock()
			defer mu.Unlock()
			texts = append(texts, err.Error())
		},
	})
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	if err := s.WaitConnected(ctx); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(texts) != len(answers) {
		t.Fatalf("%d failed dials, want %d", len(texts), len(answers))
	}
	for i, txt := range texts {
		t.Logf("answer %d: %d bytes: %q", i+1, len(txt), logx.Cut(txt, 200))
		if len(txt) > 1024 || strings.ContainsAny(txt, "\x1b\x07") {
			t.Errorf("answer %d: the error text is %d bytes (%q...)", i+1, len(txt), logx.Cut(txt, 160))
		}
	}
}

// TestAdvSessionCloseDuringBlockedOnDialFailed: OnDialFailed blocks. Close
// from another goroutine wakes WaitConnected at once (it does not wait for
// the hook) and itself returns as soon as the hook does; no redial happens
// after Close.
func TestAdvSessionCloseDuringBlockedOnDialFailed(t *testing.T) {
	var dials atomic.Int64
	url := rawUpgradeServer(t, func(n int64, c net.Conn, r *http.Request) {
		dials.Add(1)
		_, _ = io.WriteString(c, "HTTP/1.1 503 Busy\r\nContent-Length: 0\r\n\r\n")
	})
	in := make(chan struct{}, 1)
	release := make(chan struct{})
	s := newSession(t, transport.WebSocketSessionConfig{
		URL: url,
		OnDialFailed: func(error) {
			select {
			case in <- struct{}{}:
			default:
			}
			<-release
		},
	})
	waited := make(chan error, 1)
	go func() { waited <- s.WaitConnected(context.Background()) }()
	select {
	case <-in:
	case <-time.After(10 * time.Second):
		t.Fatal("OnDialFailed never called")
	}
	closed := make(chan struct{})
	go func() { s.Close(); close(closed) }()
	select {
	case err := <-waited:
		if !errors.Is(err, transport.ErrSessionClosed) {
			t.Fatalf("WaitConnected: %v, want ErrSessionClosed", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("WaitConnected still waiting 5s after Close, behind a blocked hook")
	}
	select {
	case <-closed:
		t.Fatal("Close returned while OnDialFailed still ran")
	case <-time.After(100 * time.Millisecond):
	}
	n := dials.Load()
	close(release)
	select {
	case <-closed:
	case <-time.After(5 * time.Second):
		t.Fatal("Close still waiting 5s after the hook returned")
	}
	time.Sleep(200 * time.Millisecond)
	if got := dials.Load(); got != n {
		t.Fatalf("%d dials after Close", got-n)
	}
}
