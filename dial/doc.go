// Package dial is lifeline's dialer: TCP and TLS connections that cannot
// hang.
//
// A [Dialer] resolves the host under ResolveTimeout, orders the addresses by
// interleaving families (RFC 8305 §4) with peers that recently failed moved
// to the back by a [Health] scoreboard, and races them (RFC 8305 §5):
// the next address starts after AttemptDelay, or at once when the current
// one fails; each connect is bounded by ConnectTimeout, each TLS handshake
// by TLSHandshakeTimeout, and the whole dial by Timeout and the caller's
// context, whichever is earliest. [Dialer.DialTLSContext] races through the
// handshake, so an address that accepts TCP and then stalls TLS is
// overtaken after AttemptDelay. With FirstByteTimeout, a returned conn also
// bounds the wait for the first byte of the reply. Every conn gets TCP
// keep-alive and, on Linux, TCP_USER_TIMEOUT.
//
// Every failure is an [*Error] that names the phase (dns, connect, tls,
// first_byte), the address and the peer, and reads like *net.OpError:
//
//	dial tcp api.example.com:443 (203.0.113.7:443): tls: i/o timeout
//
// Timeouts match errors.Is(err, context.DeadlineExceeded); the caller's
// cancel matches context.Canceled and is never held against an address.
//
// Each dial is traced (spans dial, dial.dns, one dial.connect per raced
// address, dial.tls; a lost race is not an error) and measured
// (lifeline.dial.duration by phase and outcome, lifeline.dial.attempts by
// outcome, and lifeline.masked_failures: attempts that failed or
// stalled while the dial still succeeded, by phase and peer — the signal
// that shows a bad address while every call works).
//
// Every Dialer learns from its dials: a peer that failed or stalled is
// tried after the healthy ones in the next dial too, until its penalty
// decays (half-life 1m) or it succeeds again. A Dialer without a Health
// keeps one of its own for as long as it lives ([Dialer.Scoreboard]),
// bounded like the zero Health (1024 peers); set Health to share one among
// Dialers, or to read it and bound it yourself. Metrics label a peer by
// its IP only while the Health remembers it (network.peer.address; the
// rest are "other"), so a masked failure names the failing address with
// zero configuration, and the label's cardinality stays bounded.
//
// The zero Dialer is ready to use; every limit has a finite default.
package dial
