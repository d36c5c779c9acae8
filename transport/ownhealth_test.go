package transport_test

import (
	"context"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/transport"
)

// connectCount is a raw connect (a net.Dialer) that counts the connects to
// each address.
type connectCount struct {
	mu sync.Mutex
	n  map[string]int
}

func (c *connectCount) dial(ctx context.Context, network, addr string) (net.Conn, error) {
	c.mu.Lock()
	if c.n == nil {
		c.n = map[string]int{}
	}
	c.n[addr]++
	c.mu.Unlock()
	var nd net.Dialer
	return nd.DialContext(ctx, network, addr)
}

func (c *connectCount) get(addr string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.n[addr]
}

// TestZeroConfigTransportDemotesDeadAddress (issue 23, item 4): a
// Transport whose Dialer has no Health dials a name whose first address is
// dead (refused) and whose second is live, a new conn per request. The
// Transport's copy of the Dialer keeps one Health for the Transport's
// life: the dead address is tried by the first dial only (before: by
// every dial), and the race's masked failure names it, not "other".
func TestZeroConfigTransportDemotesDeadAddress(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, "ok")
	}))
	defer srv.Close()
	port := srv.Listener.Addr().(*net.TCPAddr).Port
	dead := net.JoinHostPort("127.0.0.2", strconv.Itoa(port)) // nothing listens there: refused
	var cc connectCount
	rg := newRig(t)
	tr := &transport.Transport{
		Dialer: &dial.Dialer{
			Resolver: twoAddrResolver{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")},
			DialFunc: cc.dial,
		},
		MeterProvider: rg.mp,
	}
	defer tr.CloseIdleConnections()
	const calls = 10
	for range calls {
		req, err := http.NewRequestWithContext(t.Context(), http.MethodGet, "http://service.test:"+strconv.Itoa(port)+"/", nil)
		require.NoError(t, err)
		req.Close = true // a new conn, so a new dial, per call
		resp, err := tr.RoundTrip(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		require.NoError(t, resp.Body.Close())
	}
	assert.Equal(t, calls, cc.get(srv.Listener.Addr().String()))
	assert.LessOrEqual(t, cc.get(dead), 2, "the dead address is demoted after its first refusal (without memory: %d of %d)", calls, calls)

	var raceMasked int64
	for _, p := range rg.sums(t, "lifeline.masked_failures") {
		if val(p.Attributes, "lifeline.masked_by") != "race" {
			continue
		}
		raceMasked += p.Value
		assert.Equal(t, "127.0.0.2", val(p.Attributes, "network.peer.address"), "the masked failure names the dead address")
	}
	assert.EqualValues(t, cc.get(dead), raceMasked)
}

// TestZeroConfigWebSocketDialerKeepsHealth: a WebSocketDialer copies its
// Dialer for each dial; a Dialer without a Health dials with the one kept
// for the WebSocketDialer, so the dead address is demoted for the next
// dials too.
func TestZeroConfigWebSocketDialerKeepsHealth(t *testing.T) {
	srv := startWS(t, echo, nil)
	dead := net.JoinHostPort("127.0.0.2", strconv.Itoa(srv.Port()))
	var cc connectCount
	wd := fastDialer(1)
	wd.Dialer.Resolver = wsResolver{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}
	wd.Dialer.DialFunc = cc.dial
	const dials = 6
	for range dials {
		c, resp, err := wd.Dial(t.Context(), "ws://service.test:"+strconv.Itoa(srv.Port())+"/", nil)
		require.NoError(t, err)
		_ = resp.Body.Close()
		require.NoError(t, c.Close())
	}
	assert.Equal(t, dials, cc.get(srv.Addr()))
	assert.LessOrEqual(t, cc.get(dead), 2, "the dead address is demoted after its first refusal (without memory: %d of %d)", dials, dials)
	assert.Nil(t, wd.Dialer.Health, "the caller's Dialer is not written")
}
