package interop_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/gorilla/websocket"

	"github.com/lifeline-go/lifeline/dial"
)

// websocketRecipe is docs/dial.md's gorilla/websocket snippet (docs/dial.md,
// "### In real clients"; TestReadmeRecipesInSync keeps the two identical).
func websocketRecipe(ctx context.Context, d *dial.Dialer, url string) (*websocket.Conn, error) {
	// README recipe: gorilla/websocket
	ws := websocket.Dialer{
		NetDialContext:    d.DialContext,
		NetDialTLSContext: d.DialTLSContext, // d.TLSConfig must not offer h2
		HandshakeTimeout:  10 * time.Second, // zero means no limit
	}
	conn, _, err := ws.DialContext(ctx, url, nil)
	// README recipe end
	return conn, err
}

// echoServer is a websocket echo server on 127.0.0.1; with useTLS it
// serves TLS (certificate for example.com) and offers h2 as well.
func echoServer(t *testing.T, useTLS bool) *httptest.Server {
	t.Helper()
	upgrader := websocket.Upgrader{}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return // the Upgrader has answered with an error
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
	}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // "bogus greeting" from the h2 case
	if useTLS {
		srv.EnableHTTP2 = true
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

// TestRecipeWebSocket runs docs/dial.md's gorilla/websocket recipe against
// real echo servers on loopback, ws:// and wss:// (the wss server offers
// h2 too), through lifeline's race over a name only lifeline's Resolver
// knows; a message comes back unchanged.
func TestRecipeWebSocket(t *testing.T) {
	for _, tc := range []struct {
		name   string
		useTLS bool
		scheme string
		host   string
	}{
		{"ws", false, "ws", "echo.test"},
		{"wss to an h2 server", true, "wss", "example.com"}, // the certificate's name
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := echoServer(t, tc.useTLS)
			var tlsConfig *tls.Config
			if tc.useTLS {
				tlsConfig = trust(srv)
			}
			d := newDialer(tlsConfig)
			_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
			ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
			defer cancel()

			conn, err := websocketRecipe(ctx, d, tc.scheme+"://"+net.JoinHostPort(tc.host, port)+"/echo")
			if err != nil {
				t.Fatalf("dial: %v", err)
			}
			defer conn.Close()
			_ = conn.SetReadDeadline(time.Now().Add(10 * time.Second))
			if err := conn.WriteMessage(websocket.TextMessage, []byte("hello")); err != nil {
				t.Fatalf("write: %v", err)
			}
			typ, msg, err := conn.ReadMessage()
			if err != nil {
				t.Fatalf("read: %v", err)
			}
			if typ != websocket.TextMessage || string(msg) != "hello" {
				t.Fatalf("echo: type %d %q, want text %q", typ, msg, "hello")
			}
			checkRaced(t, d, portOf(t, srv.Listener.Addr().String()))
		})
	}
}

// TestRecipeWebSocketNoH2 shows why the recipe's Dialer must not offer h2:
// against a server that offers h2 too, the handshake lifeline completes
// picks h2, and gorilla's HTTP/1.1 upgrade on that conn fails.
func TestRecipeWebSocketNoH2(t *testing.T) {
	srv := echoServer(t, true)
	tlsConfig := trust(srv)
	tlsConfig.NextProtos = []string{"h2", "http/1.1"}
	d := newDialer(tlsConfig)
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	conn, err := websocketRecipe(ctx, d, "wss://"+net.JoinHostPort("example.com", port)+"/echo")
	if err == nil {
		conn.Close()
		t.Fatal("wss with h2 offered to an h2 server: dial succeeded, want a failed upgrade")
	}
	if de := (*dial.Error)(nil); errors.As(err, &de) {
		t.Fatalf("the dial failed (%v), want a dial that succeeds and an upgrade that fails", err)
	}
	t.Logf("upgrade over the h2 conn: %v", err)
}
