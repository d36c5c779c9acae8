package dial_test

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"

	"github.com/lifeline-go/lifeline/dial"
)

func aps(s string) []netip.AddrPort {
	var out []netip.AddrPort
	for _, f := range strings.Fields(s) {
		out = append(out, netip.MustParseAddrPort(f))
	}
	return out
}

func TestInterleave(t *testing.T) {
	cases := []struct{ name, in, want string }{
		{"empty", "", ""},
		{"one", "1.1.1.1:1", "1.1.1.1:1"},
		{"v4 only", "1.1.1.1:1 2.2.2.2:1", "1.1.1.1:1 2.2.2.2:1"},
		{"v6 first", "[::a]:1 [::b]:1 1.1.1.1:1 2.2.2.2:1", "[::a]:1 1.1.1.1:1 [::b]:1 2.2.2.2:1"},
		{"v4 first", "1.1.1.1:1 2.2.2.2:1 [::a]:1", "1.1.1.1:1 [::a]:1 2.2.2.2:1"},
		{"uneven", "[::a]:1 1.1.1.1:1 2.2.2.2:1 3.3.3.3:1", "[::a]:1 1.1.1.1:1 2.2.2.2:1 3.3.3.3:1"},
		{"already", "[::a]:1 1.1.1.1:1 [::b]:1", "[::a]:1 1.1.1.1:1 [::b]:1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			in := aps(tc.in)
			orig := append([]netip.AddrPort(nil), in...)
			assert.Equal(t, aps(tc.want), dial.Interleave(in))
			assert.Equal(t, orig, in, "input not modified")
		})
	}
}

func TestOrderWithHealth(t *testing.T) {
	now := time.Unix(1_700_000_000, 0)
	peers := aps("[::a]:1 [::b]:1 1.1.1.1:1 2.2.2.2:1")
	h := &dial.Health{}
	assert.Equal(t, aps("[::a]:1 1.1.1.1:1 [::b]:1 2.2.2.2:1"), dial.OrderPeers(h, peers, now), "no history: RFC 8305 order")

	// ::a stalled, 1.1.1.1 refused twice: both demoted; the healthy ones
	// keep alternating, then the demoted, least penalised first.
	h.RecordAt(netip.MustParseAddrPort("[::a]:1"), dial.EventTLSStall, now)
	h.RecordAt(netip.MustParseAddrPort("1.1.1.1:1"), dial.EventRefused, now)
	h.RecordAt(netip.MustParseAddrPort("1.1.1.1:1"), dial.EventRefused, now)
	h.RecordAt(netip.MustParseAddrPort("1.1.1.1:1"), dial.EventRefused, now)
	assert.Equal(t, aps("[::b]:1 2.2.2.2:1 [::a]:1 1.1.1.1:1"), dial.OrderPeers(h, peers, now.Add(time.Second)))

	// After three half-lives ::a (2 → 0.25) is back; 1.1.1.1 (3 → 0.375) too.
	assert.Equal(t, aps("[::a]:1 1.1.1.1:1 [::b]:1 2.2.2.2:1"), dial.OrderPeers(h, peers, now.Add(3*time.Minute)))
	// After one half-life both are still demoted (::a 1.0, 1.1.1.1 1.5):
	// least penalised first.
	assert.Equal(t, aps("[::b]:1 2.2.2.2:1 [::a]:1 1.1.1.1:1"), dial.OrderPeers(h, peers, now.Add(time.Minute)))
	// A nil Health keeps the RFC order.
	assert.Equal(t, aps("[::a]:1 1.1.1.1:1 [::b]:1 2.2.2.2:1"), dial.OrderPeers(nil, peers, now))
}
