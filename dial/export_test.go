package dial

import (
	"net/netip"
	"time"
)

// Interleave exposes interleave to the tests.
var Interleave = interleave

// OrderPeers runs a Dialer's ordering (Health, then family interleaving) at now.
func OrderPeers(h *Health, peers []netip.AddrPort, now time.Time) []netip.AddrPort {
	s := &dialState{d: &Dialer{Health: h}}
	return s.order(append([]netip.AddrPort(nil), peers...), now)
}

// RecordAt records an event at a given time.
func (h *Health) RecordAt(peer netip.AddrPort, ev Event, now time.Time) { h.record(peer, ev, 0, now) }
