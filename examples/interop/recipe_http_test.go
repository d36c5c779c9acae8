package interop_test

import (
	"errors"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"

	"github.com/lifeline-go/lifeline/dial"
)

// httpRecipe is docs/dial.md's net/http snippet (docs/dial.md, "### In real
// clients"; TestReadmeRecipesInSync keeps the two identical). d.TLSConfig
// must not be nil.
func httpRecipe(d *dial.Dialer) *http.Client {
	// README recipe: net/http
	d.TLSConfig.NextProtos = []string{"h2", "http/1.1"} // offered in the handshake lifeline races
	client := &http.Client{Transport: &http.Transport{
		DialContext:       d.DialContext,
		DialTLSContext:    d.DialTLSContext,
		ForceAttemptHTTP2: true, // else a server that picked h2 gets HTTP/1.1: EOF
	}}
	// README recipe end
	return client
}

// protoServer is a TLS server on 127.0.0.1 (certificate for example.com)
// that answers with the protocol the request came in and counts requests.
func protoServer(t *testing.T, h2 bool) (*httptest.Server, *atomic.Int32) {
	t.Helper()
	var served atomic.Int32
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		served.Add(1)
		fmt.Fprintf(w, "HTTP/%d", r.ProtoMajor)
	}))
	srv.EnableHTTP2 = h2
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // "bogus greeting" from the test without ForceAttemptHTTP2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return srv, &served
}

// get GETs https://example.com:<port>/ (resolved by the Dialer's Resolver
// only) and returns the response's protocol and body.
func get(t *testing.T, client *http.Client, srv *httptest.Server) (int, string, error) {
	t.Helper()
	_, port, _ := net.SplitHostPort(srv.Listener.Addr().String())
	req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "https://example.com:"+port+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := client.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.ProtoMajor, string(body), err
}

// TestRecipeNetHTTP runs docs/dial.md's net/http recipe against real TLS
// servers: HTTP/2 with a server that offers h2, HTTP/1.1 with one that does
// not, both through lifeline's race (the certificate is trusted only in the
// Dialer's TLSConfig and example.com resolves only through its Resolver).
func TestRecipeNetHTTP(t *testing.T) {
	for _, tc := range []struct {
		name      string
		serverH2  bool
		wantProto int
	}{
		{"h2 server", true, 2},
		{"HTTP/1.1-only server", false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, served := protoServer(t, tc.serverH2)
			d := newDialer(trust(srv))
			client := httpRecipe(d)
			defer client.CloseIdleConnections()

			for i := range 3 { // later requests reuse the conn
				proto, body, err := get(t, client, srv)
				if err != nil {
					t.Fatalf("request %d: %v", i+1, err)
				}
				if want := fmt.Sprintf("HTTP/%d", tc.wantProto); proto != tc.wantProto || body != want {
					t.Fatalf("request %d: response HTTP/%d, server saw %q; want %s", i+1, proto, body, want)
				}
			}
			if n := served.Load(); n != 3 {
				t.Errorf("server served %d requests, want 3", n)
			}
			checkRaced(t, d, portOf(t, srv.Listener.Addr().String()))
		})
	}
}

// TestRecipeNetHTTPNeedsForceAttemptHTTP2 shows why the recipe sets
// ForceAttemptHTTP2: with DialTLSContext set and h2 offered, a transport
// without it speaks HTTP/1.1 on the conn where the server picked h2, and
// every request fails (EOF, or a "malformed HTTP response" when the
// client reads the server's SETTINGS frame first) before the server ever
// serves one.
func TestRecipeNetHTTPNeedsForceAttemptHTTP2(t *testing.T) {
	srv, served := protoServer(t, true)
	d := newDialer(trust(srv))
	d.TLSConfig.NextProtos = []string{"h2", "http/1.1"}
	client := &http.Client{Transport: &http.Transport{
		DialContext:    d.DialContext,
		DialTLSContext: d.DialTLSContext,
	}}
	defer client.CloseIdleConnections()

	for i := range 3 {
		proto, body, err := get(t, client, srv)
		if err == nil {
			t.Fatalf("request %d without ForceAttemptHTTP2: HTTP/%d %q, want a failure", i+1, proto, body)
		}
		if de := (*dial.Error)(nil); errors.As(err, &de) {
			t.Fatalf("request %d: the dial failed (%v), want a dial that succeeds and a request that fails", i+1, err)
		}
	}
	if n := served.Load(); n != 0 {
		t.Errorf("server served %d requests, want 0", n)
	}
}
