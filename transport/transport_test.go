package transport_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/transport"
)

// tlsServer starts an httptest TLS server (h2 when h2 is true) and returns
// it with a client TLS config that trusts it.
func tlsServer(t *testing.T, h2 bool, h http.Handler) (*httptest.Server, *tls.Config) {
	t.Helper()
	srv := httptest.NewUnstartedServer(h)
	srv.EnableHTTP2 = h2
	srv.StartTLS()
	t.Cleanup(srv.Close)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	return srv, &tls.Config{RootCAs: pool}
}

func hello(w http.ResponseWriter, r *http.Request) {
	_, _ = io.WriteString(w, "hello "+r.Proto)
}

func TestGetHTTP1AndHTTP2(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		srv, cfg := tlsServer(t, h2, http.HandlerFunc(hello))
		tr := &transport.Transport{TLSClientConfig: cfg}
		client := transport.NewClient(tr)
		resp, err := client.Get(srv.URL + "/x?token=SECRET")
		require.NoError(t, err)
		b, err := io.ReadAll(resp.Body)
		require.NoError(t, err)
		require.NoError(t, resp.Body.Close())
		want := 1
		if h2 {
			want = 2
		}
		assert.Equal(t, want, resp.ProtoMajor, "h2=%v", h2)
		assert.True(t, strings.HasPrefix(string(b), "hello HTTP/"))
		tr.CloseIdleConnections()
	}
}

func TestRetry503ThenOK(t *testing.T) {
	var n atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if n.Add(1) == 1 {
			w.WriteHeader(http.StatusServiceUnavailable)
			return
		}
		hello(w, r)
	}))
	defer srv.Close()
	tr := &transport.Transport{Dialer: &dial.Dialer{}}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
	resp, err := tr.RoundTrip(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	assert.Equal(t, 200, resp.StatusCode)
	assert.EqualValues(t, 2, n.Load())
}
