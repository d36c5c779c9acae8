// Package faultnet injects the network faults of lifeline's fault catalogue
// (DESIGN.md) into real sockets, for lifeline's tests, examples and
// benchmarks. Only loopback addresses (127.0.0.0/8, ::1) and network
// namespaces the test created itself are ever targets.
//
// # Which tool for which fault
//
//	fault (as seen in the incidents)         how to make it here
//	SYN dropped, connect hangs               NewBlackhole (no root), or Netns.DropSYN
//	TCP accepted, then silence               Server with Fault Silence
//	TLS handshake stalls                     Server with Fault StallTLS
//	response never starts                    Proxy with HoldResponse
//	body stalls mid-way                      Proxy with StallBody (and StallAfter)
//	reset after accept                       Server with Fault Reset
//	refused                                  RefusedAddr, Server.Down, or Netns.RejectReset
//	closed at once                           Server with Fault CloseNow
//	slow server                              Server with Fault SlowDrip (DripInterval)
//	slow network (e.g. 5-15 ms)              Proxy with Delay (Latency, LatencyMax)
//	lossy network                            Netns.Loss
//	peer vanishes (no FIN/RST)               Netns.Vanish
//	idle conn closed by server or middlebox  Config.IdleClose
//	flap: every open conn reset              Server.DropAll
//	total outage, then recovery              Server.Down, then Server.Up (same port)
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
// time.
//
//	s := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence, Select: faultnet.EveryNth(12)})
//	// ... point the client at s.Addr(), run 24 calls ...
//	if st := s.Stats(); st.Faulted != 2 || st.ClosedByPeer != 2 { ... }
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
// ECONNREFUSED). [NewBlackhole] gives one where connect hangs until the
// client's own timeout: a listener with backlog 0 that never accepts and
// whose accept queue is full, so the kernel drops SYNs. Neither needs root.
//
// # Proxy
//
// A [Proxy] forwards TCP to an upstream and faults the reply direction:
// HoldResponse forwards the request but never a byte of the reply;
// StallBody forwards StallAfter reply bytes, then holds; Delay adds a
// latency to every chunk in both directions.
//
// # Kernel-level faults
//
// [NewNetns] creates a network namespace for the test (root, `ip` and `nft`
// needed; otherwise the test is skipped with the reason). Servers made with
// [Netns.Start] and clients dialled with [Netns.DialContext] (which fits
// dial.Dialer.DialFunc and pool.Config.Dial) talk over its loopback, where
// nftables rules drop SYNs ([Netns.DropSYN]), answer with RST
// ([Netns.RejectReset]), lose packets at random ([Netns.Loss]) or make an
// established peer vanish without FIN or RST ([Netns.Vanish]);
// [Netns.Flush] is the recovery.
//
// # Ownership
//
// All types are safe for concurrent use. Every value owns its listeners,
// connections and goroutines; Close is idempotent and waits for the
// goroutines, so tests stay clean under goleak. Start, StartGroup,
// StartProxy, NewBlackhole, RefusedAddr and NewNetns register their cleanup
// with the testing.TB; Listen and NewProxy leave Close to the caller.
package faultnet
