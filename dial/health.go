package dial

import (
	"cmp"
	"math"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"time"
)

// Event is one observation about a peer that a [Health] scoreboard records.
type Event uint8

// The events a Dialer records. Each failure adds a penalty to the peer's
// score (shown in brackets), up to 8 (a peer is back among the healthy
// at most four half-lives after its last failure); a success halves the
// score.
const (
	// EventSuccess: the peer completed the establishment the dial promised.
	EventSuccess Event = iota
	// EventRefused: connect was refused (ECONNREFUSED) [1].
	EventRefused
	// EventReset: the connection was reset during connect or handshake,
	// or (recorded by the transport) before a response's headers [1].
	EventReset
	// EventConnectTimeout: connect did not complete within ConnectTimeout [2].
	EventConnectTimeout
	// EventConnectStall: connect was still pending when an address started
	// later won the race [1].
	EventConnectStall
	// EventTLSStall: the handshake timed out, or was still pending when an
	// address started later won the race [2].
	EventTLSStall
	// EventTLSFailure: the handshake failed (certificate, alert, EOF) [1].
	EventTLSFailure
	// EventFirstByteStall: no reply byte within FirstByteTimeout [2].
	EventFirstByteStall
	// EventFailure: any other failure of the peer [1].
	EventFailure
)

var eventNames = [...]string{"success", "refused", "reset", "connect_timeout", "connect_stall",
	"tls_stall", "tls_failure", "first_byte_stall", "failure"}

// String returns the event's snake_case name, e.g. "connect_timeout".
func (e Event) String() string {
	if int(e) < len(eventNames) {
		return eventNames[e]
	}
	return "event(" + strconv.Itoa(int(e)) + ")"
}

// penalty is the score an event adds.
func (e Event) penalty() float64 {
	switch e {
	case EventSuccess:
		return 0
	case EventConnectTimeout, EventTLSStall, EventFirstByteStall:
		return 2
	}
	return 1
}

// Health defaults.
const (
	defaultHalfLife = time.Minute
	defaultMaxPeers = 1024
	// demoteScore is the score at or above which a peer is moved behind the
	// healthy ones: one refusal demotes a peer for one half-life, one
	// timeout or stall for two.
	demoteScore = 0.5
	// maxScore caps a peer's penalty: however many times it failed, it
	// is back among the healthy log2(maxScore/demoteScore) = 4 half-lives
	// after its last failure (a peer that failed for an hour is not kept
	// behind the others for ten minutes after it came back).
	maxScore = 8
	// ewmaWeight is the weight of a new latency sample in LatencyEWMA.
	ewmaWeight = 0.2
)

// Health is a scoreboard of peers (IP and port) that Dialers record in: it
// counts each peer's successes, refusals, resets, connect timeouts, TLS and
// first-byte stalls and latency, and keeps an exponentially decayed penalty
// score. Every Dialer orders the addresses of each dial by its Health so
// that peers with a penalty go behind the healthy ones (least penalised
// first); as the penalty decays the peer earns its place back, and a
// success halves it. A Dialer whose Health field is nil keeps one of its
// own ([Dialer.Scoreboard]); set the field to share one among Dialers.
//
// The zero value is ready to use. A Health is safe for concurrent use by any
// number of Dialers and readers; set HalfLife and MaxPeers before first use
// and do not change them afterwards. Memory is bounded by MaxPeers: when a
// new peer would exceed it, the peer seen least recently is forgotten.
type Health struct {
	// HalfLife is the time in which a peer's penalty halves. Zero means 1m.
	HalfLife time.Duration
	// MaxPeers caps the number of peers remembered. Zero means 1024.
	MaxPeers int

	mu    sync.Mutex // guards peers and every *peerEntry in it
	peers map[netip.AddrPort]*peerEntry
}

// PeerStats is what a [Health] knows about one peer, as returned by
// [Health.Snapshot] and [Health.Stats].
type PeerStats struct {
	Peer netip.AddrPort
	// Counts of each Event since the peer was first seen (or since it was
	// evicted and seen again).
	Successes       uint64
	Refusals        uint64
	Resets          uint64
	ConnectTimeouts uint64
	ConnectStalls   uint64 // connects overtaken by a later address
	TLSStalls       uint64 // handshakes timed out or overtaken
	TLSFailures     uint64 // certificates, alerts, EOF during the handshake
	FirstByteStalls uint64
	OtherFailures   uint64
	// LastLatency is the establishment time of the last success and
	// LatencyEWMA its exponentially weighted moving average (weight 0.2).
	LastLatency time.Duration
	LatencyEWMA time.Duration
	// Score is the decayed penalty at the time of the snapshot; a peer with
	// Score >= 0.5 is Demoted.
	Score   float64
	Demoted bool
	// LastSuccess and LastFailure are the times of the last events of
	// each kind (zero: never); LastEvent is the last event recorded.
	LastSuccess time.Time
	LastFailure time.Time
	LastEvent   Event
}

type peerEntry struct {
	stats    PeerStats
	score    float64   // penalty at scoreAt
	scoreAt  time.Time // when score was last brought up to date
	lastSeen time.Time
}

func (h *Health) halfLife() time.Duration {
	if h.HalfLife > 0 {
		return h.HalfLife
	}
	return defaultHalfLife
}

func (h *Health) maxPeers() int {
	if h.MaxPeers > 0 {
		return h.MaxPeers
	}
	return defaultMaxPeers
}

// decayed returns the entry's penalty decayed to now. Caller holds h.mu.
func (h *Health) decayed(e *peerEntry, now time.Time) float64 {
	if e.score == 0 {
		return 0
	}
	dt := now.Sub(e.scoreAt)
	if dt <= 0 {
		return e.score
	}
	s := e.score * math.Exp2(-float64(dt)/float64(h.halfLife()))
	if s < 1e-6 {
		return 0
	}
	return s
}

// Record adds an observation about peer at the current time. latency is the
// establishment time for EventSuccess and ignored otherwise. A nil *Health
// ignores it.
func (h *Health) Record(peer netip.AddrPort, ev Event, latency time.Duration) {
	h.record(peer, ev, latency, time.Now())
}

func (h *Health) record(peer netip.AddrPort, ev Event, latency time.Duration, now time.Time) {
	if h == nil || !peer.IsValid() {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	e := h.entryLocked(peer, now)
	e.lastSeen = now
	e.score = h.decayed(e, now)
	e.scoreAt = now
	st := &e.stats
	st.LastEvent = ev
	switch ev {
	case EventSuccess:
		st.Successes++
		st.LastSuccess = now
		st.LastLatency = latency
		if st.LatencyEWMA == 0 {
			st.LatencyEWMA = latency
		} else {
			st.LatencyEWMA = time.Duration(float64(st.LatencyEWMA)*(1-ewmaWeight) + float64(latency)*ewmaWeight)
		}
		// A success earns back half of the penalty at once: a peer that
		// works again climbs back faster than decay alone would allow.
		e.score /= 2
		if e.score < 1e-6 {
			e.score = 0
		}
		return
	case EventRefused:
		st.Refusals++
	case EventReset:
		st.Resets++
	case EventConnectTimeout:
		st.ConnectTimeouts++
	case EventConnectStall:
		st.ConnectStalls++
	case EventTLSStall:
		st.TLSStalls++
	case EventTLSFailure:
		st.TLSFailures++
	case EventFirstByteStall:
		st.FirstByteStalls++
	default:
		st.OtherFailures++
	}
	st.LastFailure = now
	e.score = min(e.score+ev.penalty(), maxScore)
}

// entryLocked returns peer's entry, creating it (and evicting the peer seen
// least recently when at the cap). Caller holds h.mu.
func (h *Health) entryLocked(peer netip.AddrPort, now time.Time) *peerEntry {
	if e, ok := h.peers[peer]; ok {
		return e
	}
	if h.peers == nil {
		h.peers = make(map[netip.AddrPort]*peerEntry)
	}
	if len(h.peers) >= h.maxPeers() {
		// O(n) scan: runs only when a new peer arrives at the cap, and n is
		// bounded by MaxPeers; it keeps the entries free of list pointers.
		var oldest netip.AddrPort
		var oldestAt time.Time
		first := true
		for p, e := range h.peers {
			if first || e.lastSeen.Before(oldestAt) {
				oldest, oldestAt, first = p, e.lastSeen, false
			}
		}
		delete(h.peers, oldest)
	}
	e := &peerEntry{stats: PeerStats{Peer: peer}, scoreAt: now, lastSeen: now}
	h.peers[peer] = e
	return e
}

// knows reports whether h remembers peer. A nil *Health knows no peer.
func (h *Health) knows(peer netip.AddrPort) bool {
	if h == nil {
		return false
	}
	h.mu.Lock()
	_, ok := h.peers[peer]
	h.mu.Unlock()
	return ok
}

// PeerLabel returns the value lifeline's metrics give peer in
// network.peer.address: its IP when h remembers it, "other" when it does
// not (or h is nil), so that a label's cardinality is bounded by MaxPeers.
// Layers above dial (transport) label their own masked failures with it,
// through their Dialer's [Dialer.Scoreboard].
func (h *Health) PeerLabel(peer netip.AddrPort) string { return peerLabel(h, peer) }

// Score returns peer's penalty now (0 for a peer never penalised or not
// remembered). A nil *Health returns 0.
func (h *Health) Score(peer netip.AddrPort) float64 {
	return h.score(peer, time.Now())
}

func (h *Health) score(peer netip.AddrPort, now time.Time) float64 {
	if h == nil {
		return 0
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if e, ok := h.peers[peer]; ok {
		return h.decayed(e, now)
	}
	return 0
}

// Stats returns what h knows about peer, and false when it knows nothing.
func (h *Health) Stats(peer netip.AddrPort) (PeerStats, bool) {
	if h == nil {
		return PeerStats{}, false
	}
	now := time.Now()
	h.mu.Lock()
	defer h.mu.Unlock()
	e, ok := h.peers[peer]
	if !ok {
		return PeerStats{}, false
	}
	return h.statsLocked(e, now), true
}

func (h *Health) statsLocked(e *peerEntry, now time.Time) PeerStats {
	st := e.stats
	st.Score = h.decayed(e, now)
	st.Demoted = st.Score >= demoteScore
	return st
}

// Snapshot returns the stats of every remembered peer, sorted by peer, for
// probes and dashboards. The slice is a copy that the caller owns. A nil
// *Health returns nil.
func (h *Health) Snapshot() []PeerStats {
	if h == nil {
		return nil
	}
	now := time.Now()
	h.mu.Lock()
	out := make([]PeerStats, 0, len(h.peers))
	for _, e := range h.peers {
		out = append(out, h.statsLocked(e, now))
	}
	h.mu.Unlock()
	slices.SortFunc(out, func(a, b PeerStats) int { return a.Peer.Compare(b.Peer) })
	return out
}

// Reset forgets every peer.
func (h *Health) Reset() {
	if h == nil {
		return
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	clear(h.peers)
}

// order returns peers with the demoted ones moved behind the healthy ones,
// least penalised first; both groups keep the order they had (the caller
// interleaves families afterwards). It reuses peers' backing array. A nil
// *Health returns peers unchanged.
func (h *Health) order(peers []netip.AddrPort, now time.Time) (ordered []netip.AddrPort, healthy int) {
	if h == nil || len(peers) < 2 {
		return peers, len(peers)
	}
	type scored struct {
		p netip.AddrPort
		s float64
	}
	var demoted []scored
	h.mu.Lock()
	if len(h.peers) == 0 {
		h.mu.Unlock()
		return peers, len(peers)
	}
	n := 0
	for _, p := range peers {
		var s float64
		if e, ok := h.peers[p]; ok {
			s = h.decayed(e, now)
		}
		if s >= demoteScore {
			demoted = append(demoted, scored{p, s})
			continue
		}
		peers[n] = p
		n++
	}
	h.mu.Unlock()
	slices.SortStableFunc(demoted, func(a, b scored) int { return cmp.Compare(a.s, b.s) })
	for i, d := range demoted {
		peers[n+i] = d.p
	}
	return peers, n
}
