package dial

import (
	"context"
	"net/netip"
	"sync"
	"time"

	"github.com/lifeline-go/lifeline/internal/otelx"
)

// ProbeResult is how one address fared in a [Dialer.Probe].
type ProbeResult struct {
	// Peer is the address probed.
	Peer netip.AddrPort
	// Latency is the time the establishment took (TCP, or TCP and TLS),
	// or how long the attempt ran before it failed.
	Latency time.Duration
	// Err is nil when the peer completed the establishment, and otherwise
	// an *Error whose Phase says where it broke.
	Err error
}

// Probe resolves address and establishes a connection to every one of its
// addresses on its own — all at once, none racing another — through the
// whole establishment a dial promises: TCP, and with useTLS also the TLS
// handshake. Each is bounded by the Dialer's phase limits, its Timeout and
// ctx; every connection made is closed before Probe returns, and every
// outcome is recorded in the Dialer's Health.
//
// A race hides a bad address from callers, which is its job; a probe names
// it. Run one per address of a service on a schedule — the synthetic,
// per-address check that would have found the load balancers that accepted
// and then went silent, while every SDK's retries kept the dashboards
// green (see the incidents this library is built against).
//
// The results are in dial order (RFC 8305 §4, after Health). The error is
// non-nil only when the address could not be resolved or is malformed; a
// failed peer is reported in its ProbeResult. Probe is safe for concurrent
// use; it records the dial.connect and dial.tls spans under a "dial.probe"
// span, and the attempts metric, but no masked failures: nothing is masked.
func (d *Dialer) Probe(ctx context.Context, network, address string, useTLS bool) ([]ProbeResult, error) {
	if d == nil {
		d = &zeroDialer
	}
	if ctx == nil {
		return nil, &Error{Phase: PhaseDNS, Network: network, Addr: address, Err: &inputError{"nil context"}}
	}
	start := time.Now()
	s := &dialState{d: d, tel: d.telemetry(), health: d.Scoreboard(), network: network, addr: address, useTLS: useTLS}
	if t := d.timeout(); t > 0 {
		s.deadline = start.Add(t)
	}
	ctx, span := s.tel.tracer.Start(ctx, "dial.probe", spanClient...)
	s.ctx = ctx
	s.traced = span.IsRecording()
	defer span.End()
	peers, err := s.resolveAll(ctx, span)
	if err != nil {
		otelx.RecordError(span, err)
		return nil, err
	}
	results := make([]ProbeResult, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		// One goroutine per address, each writing only its own result;
		// Probe waits for all of them, and each ends within the phase
		// limits (attempt closes what it opened on failure).
		go func() {
			defer wg.Done()
			actx, stop := s.attemptCtx(ctx)
			r := s.attempt(actx, i, peer, false)
			stop()
			res := ProbeResult{Peer: peer, Latency: time.Since(r.start)}
			if r.err != nil {
				res.Err = r.err
			} else {
				res.Latency = r.latency
				_ = r.conn.Close()
			}
			results[i] = res
		}()
	}
	wg.Wait()
	return results, nil
}
