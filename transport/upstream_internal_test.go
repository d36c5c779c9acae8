package transport

import (
	"errors"
	"maps"
	"net/url"
	"strconv"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/internal/upstream"
)

// TestUpstreamsBounded: a Transport that calls many hosts keeps the state
// of at most maxUpstreams, forgetting the least recently used healthy one,
// never one that is down; only the first maxUpstreamLabels hosts are their
// own server.address label, the rest "other".
func TestUpstreamsBounded(t *testing.T) {
	st := (&Transport{}).get()
	now := time.Now().UnixNano()
	u := func(i int) *url.URL {
		return &url.URL{Scheme: "http", Host: "h" + strconv.Itoa(i) + ".example:8080"}
	}
	// Host 0 is down; then 400 more hosts are called, in order.
	down := st.ups.upstreamOf(u(0), now)
	for range upstream.FailureThreshold {
		down.gate.Failure(errors.New("refused"))
	}
	for i := 1; i <= 400; i++ {
		s := st.ups.upstreamOf(u(i), now+int64(i)*int64(2*time.Second))
		if want := "h" + strconv.Itoa(i) + ".example"; i < maxUpstreamLabels && s.label != want || i >= maxUpstreamLabels && s.label != otelx.PeerOther {
			t.Fatalf("host %d: label %q", i, s.label)
		}
		if s.name != "h"+strconv.Itoa(i)+".example:8080" {
			t.Fatalf("host %d: name %q", i, s.name)
		}
	}
	// The settled table and the upstreams met since (upstreams.young).
	m := maps.Clone(*st.ups.m.Load())
	if y := st.ups.young.Load(); y != nil {
		maps.Copy(m, *y)
	}
	if len(m) < maxUpstreams || len(m) >= maxUpstreams+maxYoung {
		t.Fatalf("%d upstreams tracked, want %d (and fewer than %d met since the last settling)", len(m), maxUpstreams, maxYoung)
	}
	if m[upKey{false, "h0.example:8080"}] != down {
		t.Fatal("the upstream that is down was forgotten")
	}
	if m[upKey{false, "h400.example:8080"}] == nil || m[upKey{false, "h1.example:8080"}] != nil {
		t.Fatal("not the least recently used forgotten")
	}
	// The same host by another scheme is another upstream.
	if st.ups.upstreamOf(&url.URL{Scheme: "https", Host: "h400.example:8080"}, now) == m[upKey{false, "h400.example:8080"}] {
		t.Fatal("http and https share a state")
	}
}

// TestUpstreamHappyPathAllocs: finding a known upstream and passing its
// gate and throttle costs no allocation.
func TestUpstreamHappyPathAllocs(t *testing.T) {
	tr := &Transport{}
	st := tr.get()
	u := &url.URL{Scheme: "https", Host: "api.example"}
	now := time.Now().UnixNano()
	st.ups.upstreamOf(u, now)
	c := &call{st: st, lim: &st.lim}
	c.cctx.Context = t.Context()
	c.ctx = &c.cctx
	n := testing.AllocsPerRun(1000, func() {
		c.up = st.ups.upstreamOf(u, now)
		if resp, err := c.admit(true); resp != nil || err != nil {
			t.Fatal(resp, err)
		}
		c.endProbe()
	})
	if n != 0 {
		t.Fatalf("%v allocations per call on the happy path", n)
	}
}
