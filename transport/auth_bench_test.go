package transport_test

import (
	"context"
	"io"
	"net/http"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// BenchmarkKeepAliveGETCredentials: what a bearer token (cached) and
// per-call options cost a keep-alive GET, beside BenchmarkKeepAliveGET's
// impl=lifeline.
func BenchmarkKeepAliveGETCredentials(b *testing.B) {
	url := okServer(b)
	b.Run("impl=lifeline-bearer", func(b *testing.B) {
		tr := noopTransport()
		tr.Credentials = transport.NewBearerCredentials(func(context.Context) (string, time.Time, error) {
			return "a-token-of-some-length-0123456789", time.Time{}, nil
		})
		b.Cleanup(tr.CloseIdleConnections)
		benchGET(b, transport.NewClient(tr), url)
	})
	b.Run("impl=lifeline-calloptions", func(b *testing.B) {
		// Options on every call: the noRetry policy is prepared per call.
		tr := noopTransport()
		b.Cleanup(tr.CloseIdleConnections)
		ctx := transport.WithCallOptions(context.Background(), transport.CallOptions{
			Retry: &retry.Policy{MaxAttempts: 1}, FirstByteTimeout: -1})
		benchGETCtx(b, transport.NewClient(tr), url, ctx)
	})
}

// benchGETCtx runs parallel GETs made with ctx.
func benchGETCtx(b *testing.B, client *http.Client, url string, ctx context.Context) {
	get := func() {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			b.Error(err)
			return
		}
		resp, err := client.Do(req)
		if err != nil {
			b.Error(err)
			return
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		_ = resp.Body.Close()
	}
	for range 4 {
		get()
	}
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			get()
		}
	})
}
