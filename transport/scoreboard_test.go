package transport_test

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// TestTransportLearnsIntoDialerScoreboard: a Transport copies its Dialer,
// and what its dials find (a refused port, a served one) is in the
// caller's Dialer.Scoreboard(), not in a Health of the copy's own.
func TestTransportLearnsIntoDialerScoreboard(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	defer srv.Close()
	refused := faultnet.RefusedAddr(t, "tcp")

	d := &dial.Dialer{}
	tr := &transport.Transport{Dialer: d, Retry: &retry.Policy{MaxAttempts: 1}}
	defer tr.CloseIdleConnections()
	c := &http.Client{Transport: tr}
	if _, err := c.Get("http://" + refused + "/"); err == nil {
		t.Fatal("a closed port answered")
	}
	resp, err := c.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()

	st, ok := d.Scoreboard().Stats(netip.MustParseAddrPort(refused))
	if !ok || st.Refusals != 1 {
		t.Errorf("refused port in the Dialer's scoreboard: %+v (found %v), want 1 refusal", st, ok)
	}
	st, ok = d.Scoreboard().Stats(netip.MustParseAddrPort(srv.Listener.Addr().String()))
	if !ok || st.Successes != 1 {
		t.Errorf("served port in the Dialer's scoreboard: %+v (found %v), want 1 success", st, ok)
	}
}
