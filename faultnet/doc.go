// Package faultnet makes the network faults that real outages are made of
// happen on real sockets, so that a test can prove a client survives them:
// servers that accept and go silent, stall the TLS handshake, reset, close
// or drip; proxies that hold the reply, stall a body half-way, add latency,
// reset every open connection at once or black-hole their address; and, in
// a network namespace the test creates, kernel-level SYN drops, packet
// loss and peers that vanish. Only loopback addresses (127.0.0.0/8, ::1)
// and namespaces the test created itself are ever targets.
//
// It is the fault kit lifeline's own tests use, and the five incidents
// lifeline is built against are presets ([Incident01] … [Incident05]), so
// "replay incident 01 against my SDK" is one line:
//
//	func TestMySDKSurvivesIncident01(t *testing.T) {
//		srv := httptest.NewServer(myHandler) // your server, on loopback
//		defer srv.Close()
//		p := faultnet.Incident01.Start(t, srv.Listener.Addr().String()) // every 12th connection hangs after accept
//		for i := range 24 {
//			ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second) // the test's patience, not the SDK's
//			if err := mysdk.Get(ctx, "http://"+p.Addr()+"/"); err != nil { // your SDK's call
//				t.Errorf("request %d: %v", i, err)
//			}
//			cancel()
//		}
//		st := p.Stats() // Faulted: connections hung; ClosedByPeer: the ones your SDK gave up on
//		if st.Faulted == 0 { // a client that pools one connection never meets the 12th
//			t.Fatal("no connection was hung: give each call a new connection")
//		}
//		t.Logf("hung %d, abandoned by the SDK %d", st.Faulted, st.ClosedByPeer)
//	}
//
// A client in any other language gets the same faults through the
// faultproxy command (examples/faultproxy in lifeline's repository): a
// loopback proxy driven by flags and a small JSON API.
//
// # Which tool for which fault
//
//	fault (as seen in the incidents)         how to make it here
//	SYN dropped, connect hangs               NewBlackhole (no root), Proxy.SetBlackhole, or Netns.DropSYN
//	TCP accepted, then silence               Server with Fault Silence, or a Proxy rule ProxySilence
//	TLS handshake stalls                     Server with Fault StallTLS, or a Proxy rule ProxyStallTLS
//	response never starts                    Proxy with HoldResponse
//	body stalls mid-way                      Proxy with StallBody (and StallAfter)
//	reset after accept                       Server with Fault Reset, or ProxyReset
//	refused                                  RefusedAddr, ReservePort, Server.Down, or Netns.RejectReset
//	closed at once                           Server with Fault CloseNow, or ProxyClose
//	slow server                              Server with Fault SlowDrip (DripInterval)
//	slow network (e.g. 5-15 ms)              Proxy with Delay (Latency, LatencyMax)
//	lossy network                            Netns.Loss
//	peer vanishes (no FIN/RST)               Netns.Vanish
//	idle conn closed by server or middlebox  Config.IdleClose
//	flap: every open conn reset              Server.DropAll, Proxy.DropAll, ProxyConfig.FlapPeriod
//	dead sessions linger server-side         ProxyConfig.UpstreamLinger (with DropAll or a flap)
//	total outage, then recovery              Server.Down, then Server.Up (same port), or ReservePort and Listen
//	several IPs behind one name              StartGroup (one port on 127.0.0.2, 127.0.0.3, ::1, ...)
//
// # Servers
//
// A [Server] accepts on loopback and, for each connection, asks its
// [Selector] whether the [Fault] applies (by 1-based accept ordinal, so
// [EveryNth] (12) faults exactly connections 12, 24, ...); the others are
// served by Config.Handler ([Echo] by default), over TLS when Config.TLS is
// set ([SelfSigned] makes a matching pair of configs). What the clients did
// shows in [Server.Stats]: Faulted counts hung or broken connections,
// ClosedByPeer counts the held ones the client gave up on, MaxActive shows
// how many were open at once. [Server.SetFault] changes the fault at run
// time. [NewLB] puts such a server in front of a real backend, as a load
// balancer that hangs some connections.
//
// The faults: Silence accepts and never reads nor writes, holding the
// connection until the client closes it (seen through the kernel's TCP state,
// so its send buffer and our receive window fill as with a hung load
// balancer); a FIN queued behind data the server never read cannot reach it,
// so such a close is not counted in ClosedByPeer. StallTLS reads exactly one
// TLS record (the ClientHello) and then holds the same way. Reset closes with
// SO_LINGER 0: the client gets ECONNRESET on its first read or write, or
// already from connect when the RST beats connect's return. CloseNow sends
// FIN at once (the client reads io.EOF) and discards input until the client
// closes. SlowDrip serves with the Handler but writes one byte per
// DripInterval.
//
// # Addresses that fail at connect
//
// [RefusedAddr] gives a loopback port where nothing listens (connect gets
// ECONNREFUSED). [ReservePort] gives one that a test's own server listens
// on later ([RefusedPort.Listen]: down, then up) and that is refused again
// once that listener closes. Both keep the port reserved by a bound socket
// meanwhile: a test that closes a listener to make its address refused,
// and listens there again later, leaves the port free in between for any
// other test (or client socket) to take. [NewBlackhole] gives a port where
// connect hangs until the client's own timeout: a listener with backlog 0
// that never accepts and whose accept queue is full, so the kernel drops
// SYNs. None needs root.
//
// # Proxy
//
// A [Proxy] forwards TCP to an upstream (your server) and applies an
// ordered list of [Rule]s: each new connection gets the first rule whose
// Selector picks it. Rules act on the forwarded bytes (HoldResponse,
// StallBody, Delay) or on the connection itself before the upstream sees
// it (ProxySilence, ProxyStallTLS, ProxyReset, ProxyClose), and change at
// run time ([Proxy.SetRules]). [Proxy.DropAll] resets every open
// connection (periodically with ProxyConfig.FlapPeriod), optionally
// leaving the upstream sides open (UpstreamLinger); [Proxy.SetBlackhole]
// makes connects hang. TLS passes through untouched unless ProxyConfig.TLS
// makes the proxy terminate it. ProxyConfig.Log reports what was done to
// each connection ([ConnLog]).
//
// # Kernel-level faults
//
// [NewNetns] creates a network namespace for the test (root, `ip` and `nft`
// needed; otherwise the test is skipped with the reason). Servers made with
// [Netns.Start] and clients dialled with [Netns.DialContext] talk over its
// loopback, where nftables rules drop SYNs ([Netns.DropSYN]), answer with
// RST ([Netns.RejectReset]), lose packets at random ([Netns.Loss]) or make
// an established peer vanish without FIN or RST ([Netns.Vanish]);
// [Netns.Flush] is the recovery.
//
// # Ownership
//
// All types are safe for concurrent use. Every value owns its listeners,
// connections and goroutines; Close is idempotent and waits for the
// goroutines, so tests stay clean under goleak. Start, StartGroup,
// StartProxy, StartLB, Preset.Start, NewBlackhole, RefusedAddr,
// ReservePort and NewNetns register their cleanup with the testing.TB;
// Listen, NewLB, NewProxy, NewRefusedPort and Preset.New leave Close to the
// caller, as RefusedPort.Listen leaves its listener. Bad configuration is
// an error naming the field, never a panic.
package faultnet
