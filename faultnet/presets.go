package faultnet

import (
	"testing"
	"time"
)

// Preset is a named [Proxy] configuration that replays one of the incidents
// lifeline is built against (the postmortems DESIGN.md cites) in front of
// any upstream: "replay incident 01 against my client" is
//
//	p := faultnet.Incident01.Start(t, upstream) // then point the client at p.Addr()
//
// The presets are Incident01 … Incident05; [Presets] lists them and
// [LookupPreset] finds one by Name (the faultproxy command's -preset). A
// Preset is a value: its configuration is unexported and copied into every
// proxy it makes, so the package-level presets cannot be changed. The zero
// Preset has no faults: its proxy passes every connection.
type Preset struct {
	// Name is the preset's lookup name, e.g. "incident01".
	Name string
	// Incident is what happened, in one line.
	Incident string
	// Fault is what the proxy does, in one line.
	Fault string
	// Client is what a correct client does about it, in one line.
	Client string

	cfg ProxyConfig
}

// Config returns the preset's ProxyConfig for upstream, to adjust before
// NewProxy (e.g. Addr, Log, TLS).
func (p Preset) Config(upstream string) ProxyConfig {
	cfg := p.cfg
	cfg.Upstream = upstream
	cfg.Rules = append([]Rule(nil), p.cfg.Rules...)
	return cfg
}

// New starts a Proxy replaying the preset in front of upstream. The
// caller must Close it.
func (p Preset) New(upstream string) (*Proxy, error) { return NewProxy(p.Config(upstream)) }

// Start is New that registers Close with tb.Cleanup and calls tb.Fatal on
// error.
func (p Preset) Start(tb testing.TB, upstream string) *Proxy {
	tb.Helper()
	return StartProxy(tb, p.Config(upstream))
}

// String returns the Name.
func (p Preset) String() string { return p.Name }

// The incident presets. Each one's doc says what it replays, what a correct
// client must do, and what lifeline's transport.Transport reaches on it in
// examples/interop's TestFaultnetPresets (net/http's default client beside
// it), on a loopback upstream.
var (
	// Incident01 replays incidents 01/02 (the LiveKit outage), seen at
	// the TCP layer: two load balancers hung about 8% of new HTTPS
	// connections after accept, before they reached a backend. The proxy
	// accepts every connection and leaves every 12th one (12, 24, ...)
	// silent: no byte is forwarded or answered, and it is held until the
	// client closes it (Stats.Faulted counts them, ClosedByPeer the ones
	// the client gave up on). Other connections pass.
	//
	// A correct client bounds the wait for the first byte (or the TLS
	// handshake) on each connection, retries or hedges on a new
	// connection, and counts the hung attempts per address so monitoring
	// sees what the retries hid. net/http's default client waits on a hung
	// connection forever: of 24 requests (a new connection each), 22
	// succeed and the 2 on hung connections are still waiting when the
	// test gives up. lifeline (HedgeDelay 250ms): 24 of 24 succeed, the
	// slowest in 256ms, on 26 connections; the 2 hung ones are closed by
	// the client (ClosedByPeer 2).
	Incident01 = Preset{
		Name:     "incident01",
		Incident: "load balancers hang ~8% of new connections after accept (LiveKit, 2026-02-14)",
		Fault:    "every 12th connection is accepted and then left silent until the client closes it",
		Client:   "bound connect and first byte per attempt; retry or hedge on a new connection; count the hung attempts",
		cfg: ProxyConfig{Rules: []Rule{
			{Name: "lb-hang-after-accept", Fault: ProxySilence, Select: EveryNth(12)},
		}},
	}

	// Incident02 is the same outage as the status page reported it:
	// room.connect() hanging, i.e. the HTTPS (WebSocket) connect stuck in
	// its TLS handshake. The proxy passes TLS through and, on every 12th
	// connection, reads the ClientHello and never answers. Point a TLS
	// client at it with the upstream's certificate.
	//
	// A correct client bounds the TLS handshake separately from connect
	// and retries or hedges on a new connection, counting the failed
	// handshakes. net/http's default client has a 10s TLSHandshakeTimeout
	// and no retry of its own: of 12 requests, the 12th fails after 10.0s
	// ("TLS handshake timeout"). lifeline (HedgeDelay 250ms, its TLS
	// handshake bound 5s): 12 of 12 succeed, the slowest in 292ms.
	Incident02 = Preset{
		Name:     "incident02",
		Incident: "room.connect() hangs: ~8% of HTTPS connects stuck in the TLS handshake (LiveKit status page)",
		Fault:    "TLS passes through; every 12th connection gets its ClientHello read and then silence",
		Client:   "bound the TLS handshake per attempt; retry or hedge on a new connection; count the failed handshakes",
		cfg: ProxyConfig{Rules: []Rule{
			{Name: "lb-hang-in-tls", Fault: ProxyStallTLS, Select: EveryNth(12)},
		}},
	}

	// Incident03 replays incident 03: a script restarted network
	// interfaces in a loop, every open connection died, and the server
	// kept each dead session until its own 20-minute timeout, so
	// replacements piled up until max_connections ran out. The proxy
	// resets (RST) every open client connection once a second (Stats.
	// Dropped) and keeps the upstream side of each open, silent, for 20s
	// (Stats.Lingering: the dead sessions the server still holds).
	//
	// A correct client evicts a reset connection at once, retries an
	// idempotent request that failed on it, never holds more connections
	// than its cap, and opens new ones no faster than it needs: Lingering
	// stays near (cap × flaps in 20s). Against idle keep-alive
	// connections both clients do this: 4 workers, a GET every 50ms each
	// for 3.5s (3 flaps), every request succeeds; lifeline used 15
	// connections for 272 requests (11 dropped, 11 lingering), net/http's
	// default client 28 for 268 (6 dropped, 6 lingering).
	Incident03 = Preset{
		Name:     "incident03",
		Incident: "interfaces restarted in a loop: connections dropped, dead sessions linger server-side until the pool limit (2026-02-11)",
		Fault:    "every open connection is reset once a second; its upstream side stays open and silent for 20s",
		Client:   "evict reset connections at once; retry idempotent requests; cap connections and the rate of new ones",
		cfg:      ProxyConfig{FlapPeriod: time.Second, UpstreamLinger: 20 * time.Second},
	}

	// Incident04 replays incident 04: a provider's maintenance
	// black-holed one network path and traffic kept going to it for over
	// an hour. The proxy starts black-holed for 4s: connects to it hang
	// (SYNs dropped: the kernel's accept queue is full) and open
	// connections go silent; then the route returns on the same port.
	// It needs no root; a kernel-exact version (packets of established
	// connections dropped too) is [Netns.DropSYN] with [Netns.Vanish].
	//
	// A correct client bounds each connect attempt (so one dead path does
	// not eat the budget), fails over to other addresses and remembers
	// the bad one, and retries after a backoff. On one address both
	// clients recover soon after the route returns: net/http's default
	// client rides the kernel's SYN retransmits (Linux 6.5+ resends the
	// first four once a second, tcp_syn_linear_timeouts; older kernels
	// back off 1s, 2s, 4s, so recovery can lag by seconds) under its 30s
	// connect timeout, and one request started in the outage succeeded
	// after 4.09s; lifeline (ConnectTimeout 500ms, 10 attempts with
	// backoff up to 400ms, and transport.WaitForReady: without it the
	// call fails fast with ErrUnavailable once five connects in a row
	// failed) bounds every attempt and succeeded after 4.24s. With more
	// than one address, lifeline's dialer races the next one after
	// AttemptDelay instead of waiting.
	Incident04 = Preset{
		Name:     "incident04",
		Incident: "a network path black-holed by maintenance; traffic kept going to it (2025-10-01)",
		Fault:    "for the first 4s connects hang (SYNs dropped) and open connections go silent; then the route returns",
		Client:   "bound each connect attempt; fail over to other addresses; retry with backoff; remember the bad path",
		cfg:      ProxyConfig{BlackholeFor: 4 * time.Second},
	}

	// Incident05 replays incident 05: 10-20% of packets delayed 5-15ms and
	// some dropped, and connection counts on the proxies exploded as
	// clients reconnected. The proxy resets every 10th connection at once
	// (a dropped connection) and delays every chunk of 1 in 9 of the
	// others (11%) by 5-15ms: the rule "slow-packets" is Fraction(0.15)
	// by accept ordinal (7, 14, 20, 27, 34, 40, ...), and the ordinals
	// that are multiples of 10 are reset first, so of every 20
	// connections 2 are reset and 2 (7 and 14) delayed.
	//
	// A correct client retries the reset requests with jittered backoff
	// under a retry budget, so that a storm of failures does not become a
	// storm of connections: Stats.Accepted stays near the number of
	// requests (plus one per reset) and Stats.MaxActive near the client's
	// concurrency. net/http's default client returns the reset as an
	// error (it retries only on reused connections): of 40 requests (a
	// new connection each) 36 succeed and 4 fail with "connection reset
	// by peer". lifeline (its default 3 attempts): 40 of 40 succeed, on
	// 44 connections (1.10 per request).
	Incident05 = Preset{
		Name:     "incident05",
		Incident: "lossy network: 10-20% of packets 5-15ms late, some dropped; connection storm on the proxies (cache provider)",
		Fault:    "every 10th connection is reset at once; 1 in 9 of the others (11%) has each chunk delayed 5-15ms",
		Client:   "retry with jittered backoff under a budget; keep connection count and rate bounded",
		cfg: ProxyConfig{Rules: []Rule{
			{Name: "dropped", Fault: ProxyReset, Select: EveryNth(10)},
			{Name: "slow-packets", Fault: Delay, Select: Fraction(0.15), Latency: 5 * time.Millisecond, LatencyMax: 15 * time.Millisecond},
		}},
	}
)

// Presets returns the incident presets in order.
func Presets() []Preset {
	return []Preset{Incident01, Incident02, Incident03, Incident04, Incident05}
}

// LookupPreset returns the preset named name ("incident01" … "incident05";
// "01" … "05" and "1" … "5" work too).
func LookupPreset(name string) (Preset, bool) {
	for _, p := range Presets() {
		if name == p.Name || "incident"+name == p.Name || "incident0"+name == p.Name {
			return p, true
		}
	}
	return Preset{}, false
}
