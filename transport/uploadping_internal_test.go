package transport

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/retry"
)

// endless is a request body that never ends.
type endless struct{}

func (endless) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

// TestHTTP2UploadStallNotKeptAliveByPings: an HTTP/2 upload to a handler
// that never reads (the stream's flow-control window stays shut) and never
// answers is cut as "upload_stall", though the conn's health pings, which
// the server answers, keep writing bytes to the conn: a ping is not the
// peer taking the upload. (With the defaults — pings after 15s of silence,
// StallTimeout 30s — such an upload was never cut.)
func TestHTTP2UploadStallNotKeptAliveByPings(t *testing.T) {
	old := http2PingAfter
	http2PingAfter = 100 * time.Millisecond
	defer func() { http2PingAfter = old }()

	release := make(chan struct{})
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		<-release // never reads, never answers
	}))
	srv.EnableHTTP2 = true
	srv.StartTLS()
	defer srv.Close()
	defer close(release)
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())

	tr := &Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool},
		StallTimeout:    time.Second,
		Retry:           &retry.Policy{MaxAttempts: 1},
	}
	defer tr.CloseIdleConnections()
	req, _ := http.NewRequest(http.MethodPost, srv.URL, io.NopCloser(endless{}))
	done := make(chan error, 1)
	go func() {
		resp, err := tr.RoundTrip(req)
		if resp != nil {
			resp.Body.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		var te *TimeoutError
		if !errors.As(err, &te) || te.Phase != "upload_stall" {
			t.Fatalf("err = %v, want an upload_stall *TimeoutError", err)
		}
	case <-time.After(8 * time.Second):
		t.Fatal("an HTTP/2 upload the peer does not take was kept alive by the conn's pings")
	}
}
