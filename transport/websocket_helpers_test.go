package transport_test

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// hijackWriter lets gorilla's Upgrader answer on a raw net.Conn, so that
// faultnet's servers (which hand each healthy conn to a func(net.Conn))
// serve websockets: outages, restarts on the same port, network
// namespaces and address groups come with them.
type hijackWriter struct {
	nc     net.Conn
	br     *bufio.Reader
	h      http.Header
	status int
	wrote  bool
}

func (w *hijackWriter) Header() http.Header { return w.h }

func (w *hijackWriter) WriteHeader(code int) {
	if w.wrote {
		return
	}
	w.wrote, w.status = true, code
	var b strings.Builder
	fmt.Fprintf(&b, "HTTP/1.1 %d %s\r\n", code, http.StatusText(code))
	w.h.Set("Connection", "close")
	_ = w.h.Write(&b)
	b.WriteString("\r\n")
	_, _ = io.WriteString(w.nc, b.String())
}

func (w *hijackWriter) Write(p []byte) (int, error) {
	w.WriteHeader(http.StatusOK)
	return w.nc.Write(p)
}

func (w *hijackWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	return w.nc, bufio.NewReadWriter(w.br, bufio.NewWriter(w.nc)), nil
}

// wsHandler returns a faultnet Handler that reads one HTTP request and
// hands it to serve (which may refuse it or upgrade it with upgrade).
// The conn is closed by faultnet when the handler returns.
func wsHandler(serve func(w http.ResponseWriter, r *http.Request)) func(net.Conn) {
	return func(nc net.Conn) {
		br := bufio.NewReader(nc)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		w := &hijackWriter{nc: nc, br: br, h: http.Header{}}
		serve(w, req)
	}
}

var upgrader = websocket.Upgrader{CheckOrigin: func(*http.Request) bool { return true }}

// echo serves a websocket that echoes every message.
func echo(w http.ResponseWriter, r *http.Request) {
	c, err := upgrader.Upgrade(w, r, nil)
	if err != nil {
		return
	}
	defer c.Close()
	for {
		typ, msg, err := c.ReadMessage()
		if err != nil {
			return
		}
		if err := c.WriteMessage(typ, msg); err != nil {
			return
		}
	}
}

// startWS starts a faultnet server serving websockets with serve.
func startWS(t *testing.T, serve func(http.ResponseWriter, *http.Request), tlsCfg *tls.Config) *faultnet.Server {
	t.Helper()
	return faultnet.Start(t, faultnet.Config{Handler: wsHandler(serve), TLS: tlsCfg})
}

// fastDialer is a WebSocketDialer with test-sized limits and no retries
// unless attempts > 1.
func fastDialer(attempts int) *transport.WebSocketDialer {
	return &transport.WebSocketDialer{
		Dialer:           &dial.Dialer{AttemptDelay: 50 * time.Millisecond},
		HandshakeTimeout: 2 * time.Second,
		Retry:            &retry.Policy{MaxAttempts: attempts, InitialInterval: 10 * time.Millisecond, MaxInterval: 50 * time.Millisecond},
		Proxy:            noProxy,
	}
}

func noProxy(*http.Request) (*url.URL, error) { return nil, nil }

// wsResolver answers every lookup with its addresses.
type wsResolver []netip.Addr

func (r wsResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range r {
		if network == "ip" || (network == "ip4") == a.Is4() {
			out = append(out, a)
		}
	}
	return out, nil
}

// eventually polls cond every 5ms until it holds or d passes.
func eventually(t *testing.T, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("after %v: %s", d, what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

// wsURL is the URL of a faultnet server.
func wsURL(scheme string, s *faultnet.Server, path string) string {
	return scheme + "://" + s.Addr() + path
}
