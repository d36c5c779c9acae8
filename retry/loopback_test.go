package retry_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"syscall"
	"testing"
	"testing/synctest"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/retry"
)

// TestRealCertificateErrorNotRetried: a real TLS handshake on loopback
// against a certificate the client does not trust fails once, not
// MaxAttempts times.
func TestRealCertificateErrorNotRetried(t *testing.T) {
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(http.ResponseWriter, *http.Request) {}))
	srv.Config.ErrorLog = log.New(io.Discard, "", 0) // the handshake failure is expected
	srv.StartTLS()
	defer srv.Close()
	tr := &http.Transport{TLSClientConfig: &tls.Config{}} // system roots: the test cert is unknown
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	calls := 0
	err := (&retry.Policy{MaxAttempts: 5}).Do(t.Context(), func(ctx context.Context) error {
		calls++
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, srv.URL, nil)
		if err != nil {
			return retry.Permanent(err)
		}
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		return resp.Body.Close()
	})
	assert.Equal(t, 1, calls)
	var certErr *tls.CertificateVerificationError
	require.ErrorAs(t, err, &certErr)
	assert.NotErrorIs(t, err, retry.ErrExhausted)
}

// TestRealRefusedIsRetried: a closed loopback port refuses; that is retried
// up to MaxAttempts and the last *net.OpError stays findable.
func TestRealRefusedIsRetried(t *testing.T) {
	addr := refusedAddr(t)
	synctest.Test(t, func(t *testing.T) {
		calls := 0
		var d net.Dialer
		err := (&retry.Policy{MaxAttempts: 4}).Do(t.Context(), func(ctx context.Context) error {
			calls++
			c, err := d.DialContext(ctx, "tcp", addr)
			if err == nil {
				_ = c.Close()
			}
			return err
		})
		if calls == 1 && err == nil {
			t.Skip("something else took the port")
		}
		assert.Equal(t, 4, calls)
		assert.ErrorIs(t, err, retry.ErrExhausted)
		assert.ErrorIs(t, err, syscall.ECONNREFUSED)
		var opErr *net.OpError
		require.ErrorAs(t, err, &opErr)
		assert.Equal(t, "dial", opErr.Op)
		assert.False(t, errors.Is(err, context.DeadlineExceeded))
	})
}
