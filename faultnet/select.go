package faultnet

import "math"

// Selector decides which accepted connections a fault hits. It is called with
// n, the 1-based ordinal of the connection counted since the listener started
// or since the last SetFault. A nil Selector in a config means [All].
//
// Selectors returned by this package are pure functions of n: the same n
// always gives the same answer, so a test that opens connections one after
// another knows exactly which ones are faulted. They are safe for concurrent
// use.
type Selector func(n int) bool

// All returns a Selector that hits every connection.
func All() Selector { return func(int) bool { return true } }

// EveryNth returns a Selector that hits connections n, 2n, 3n, ...
// (EveryNth(12) hits 12, 24, 36: a deterministic "every 12th").
// n <= 0 hits no connection.
func EveryNth(n int) Selector {
	return func(i int) bool { return n > 0 && i > 0 && i%n == 0 }
}

// Fraction returns a deterministic Selector that hits about the fraction f of
// connections, spread evenly: ordinal n is hit when floor(n*f) > floor((n-1)*f).
// Fraction(0.25) hits 4, 8, 12, ...; Fraction(0.5) hits 2, 4, 6, ....
// f is clamped to [0, 1]; NaN hits nothing.
func Fraction(f float64) Selector {
	switch {
	case math.IsNaN(f) || f <= 0:
		return func(int) bool { return false }
	case f >= 1:
		return All()
	}
	return func(n int) bool {
		return n > 0 && math.Floor(float64(n)*f) > math.Floor(float64(n-1)*f)
	}
}

// FirstN returns a Selector that hits connections 1..k and none after.
// k <= 0 hits nothing.
func FirstN(k int) Selector { return func(n int) bool { return n > 0 && n <= k } }

// Stats is a snapshot of what a [Server] or [Proxy] saw. Every accepted
// connection ends up in exactly one of Faulted or Served, except a proxy
// connection whose upstream dial (or, terminating TLS, whose handshake)
// failed, which is in neither.
type Stats struct {
	Accepted     int64 // connections accepted
	Faulted      int64 // connections the fault was applied to ("hung" for silence/stall faults)
	Served       int64 // connections handed to the healthy Handler (a proxy: passed through unchanged)
	ClosedByPeer int64 // faulted connections that the client closed while we held them
	Active       int64 // open right now (faulted + served)
	MaxActive    int64 // high-water mark of Active
	Dropped      int64 // connections reset by DropAll (or a Proxy's flap)
	Lingering    int64 // a Proxy's upstream sides of dropped connections still held open (ProxyConfig.UpstreamLinger)
}
