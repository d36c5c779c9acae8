package transport_test

import (
	"context"
	"io"
	"net/http"
	"net/url"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestHTTP2HeldConnDroppedAfterAbandon: an HTTP/2 conn whose peer went
// silent in both directions (a middlebox holding it: faultnet's black
// hole, the soak's HoldResponse) is not reused for ever by calls that end
// at their own deadlines. net/http sends a PING with the RST_STREAM of
// such a call and keeps the conn until 250 of them pile up or its own
// health ping (15s + 10s) gives up; lifeline closes a conn from which
// nothing came within a second of a call it gave up on, so the next
// calls dial a fresh one.
func TestHTTP2HeldConnDroppedAfterAbandon(t *testing.T) {
	srv, cfg := tlsServer(t, true, http.HandlerFunc(hello))
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: u.Host})
	tr := &transport.Transport{TLSClientConfig: cfg, Retry: nil}
	defer tr.CloseIdleConnections()
	get := func(d time.Duration) error {
		ctx, cancel := context.WithTimeout(t.Context(), d)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.Addr()+"/", nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		require.Equal(t, 2, resp.ProtoMajor)
		return err
	}
	require.NoError(t, get(5*time.Second)) // the conn, warm

	require.NoError(t, p.SetBlackhole(true)) // the open conn goes silent both ways
	require.ErrorIs(t, get(300*time.Millisecond), context.DeadlineExceeded)
	require.NoError(t, p.SetBlackhole(false)) // new conns work; the held one stays held

	start := time.Now()
	for {
		err := get(300 * time.Millisecond)
		if err == nil {
			t.Logf("first success %v after the restore", time.Since(start).Round(time.Millisecond))
			return
		}
		require.Less(t, time.Since(start), 8*time.Second, "calls keep going to the held conn: %v", err)
	}
}

// TestHTTP2SilentConnClosedUnderATryNamesThePhase: a try still waiting on
// an HTTP/2 conn when lifeline closes it for its silent peer (above) —
// one with a longer FirstByteTimeout of its own — fails with a first_byte
// *TimeoutError that says nothing came, not with the bare "use of closed
// network connection" its read gets (seen as a flake of
// TestAdv28SilentServerDownForOneCaller/h2 under load), a second after
// the try before it gave up, long before its own limit.
func TestHTTP2SilentConnClosedUnderATryNamesThePhase(t *testing.T) {
	srv, cfg := tlsServer(t, true, http.HandlerFunc(hello))
	u, err := url.Parse(srv.URL)
	require.NoError(t, err)
	p := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: u.Host})
	tr := &transport.Transport{TLSClientConfig: cfg, Retry: &retry.Policy{MaxAttempts: 1},
		FirstByteTimeout: 300 * time.Millisecond, DisableFailFast: true}
	defer tr.CloseIdleConnections()
	get := func(ctx context.Context) error {
		ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+p.Addr()+"/", nil)
		require.NoError(t, err)
		resp, err := tr.RoundTrip(req)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		_, err = io.ReadAll(resp.Body)
		require.Equal(t, 2, resp.ProtoMajor)
		return err
	}
	require.NoError(t, get(t.Context())) // the conn, warm

	require.NoError(t, p.SetBlackhole(true)) // the open conn goes silent both ways
	var te *transport.TimeoutError
	err = get(t.Context())
	require.ErrorAs(t, err, &te)
	require.Equal(t, "first_byte", te.Phase)
	require.Equal(t, 300*time.Millisecond, te.Limit, "the try's own limit ends the first")

	start := time.Now()
	err = get(transport.WithCallOptions(t.Context(), transport.CallOptions{FirstByteTimeout: 8 * time.Second}))
	el := time.Since(start)
	require.ErrorAs(t, err, &te, "a try on the conn closed for its silent peer")
	require.Equal(t, "first_byte", te.Phase)
	require.Less(t, el, 6*time.Second, "ended by the conn's close about a second after the first try gave up, not by its own 8s limit")
	t.Logf("%v after %v", err, el.Round(time.Millisecond))
}
