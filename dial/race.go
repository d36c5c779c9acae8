package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"slices"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// attemptResult is how one raced address ended.
type attemptResult struct {
	index int
	peer  netip.AddrPort
	start time.Time
	conn  net.Conn // the established conn; nil when err != nil
	err   *Error   // nil on success; Phase is where the attempt was when it ended
	// latency is the establishment time of a successful attempt.
	latency time.Duration
}

func (r *attemptResult) lost() bool { return r.err != nil && r.err.Err == errLostRace }

// attempt connects to peer and, for TLS dials, completes the handshake. It
// records the attempt's own telemetry and Health events; a lost race is
// classified by the caller, which knows who won. On failure the conn is
// closed.
func (s *dialState) attempt(ctx context.Context, index int, peer netip.AddrPort) attemptResult {
	r := attemptResult{index: index, peer: peer, start: time.Now()}
	cctx, span := s.startChild(ctx, "dial.connect")
	if span.IsRecording() {
		span.SetAttributes(peerAttrs(peer, index)...)
	}
	connCtx, cancel := s.phaseCtx(cctx, s.d.connectTimeout(), errConnectTimeout)
	conn, err := s.connect(connCtx, peer)
	if err != nil {
		r.err = s.fail(connCtx, PhaseConnect, peer, err)
	}
	cancel()
	outcome := mOK
	if r.err != nil {
		outcome = outcomeOf(r.err)
	}
	if outcome != mLost {
		s.tel.recordDuration(ctx, mPhaseConnect, outcome, time.Since(r.start).Seconds())
	}
	endSpan(span, outcome, r.err)
	if r.err != nil {
		s.finishAttempt(ctx, &r)
		return r
	}

	if !s.useTLS {
		r.latency = time.Since(r.start)
		if fbt := s.d.FirstByteTimeout; fbt > 0 {
			r.conn = s.watchFirstByte(conn, peer, true)
		} else {
			r.conn = conn
		}
		s.finishAttempt(ctx, &r)
		return r
	}

	r.conn, r.err = s.handshake(ctx, index, peer, conn)
	if r.err == nil {
		r.latency = time.Since(r.start)
	}
	s.finishAttempt(ctx, &r)
	return r
}

// handshake runs the TLS client handshake over conn under
// TLSHandshakeTimeout. With FirstByteTimeout set, the watch wraps the raw
// conn but is armed only after the handshake, whose own reads and writes
// must not trigger it. On failure conn is closed.
func (s *dialState) handshake(ctx context.Context, index int, peer netip.AddrPort, conn net.Conn) (net.Conn, *Error) {
	start := time.Now()
	tctx, span := s.startChild(ctx, "dial.tls")
	if span.IsRecording() {
		span.SetAttributes(peerAttrs(peer, index)...)
	}
	hctx, cancel := s.phaseCtx(tctx, s.d.tlsHandshakeTimeout(), errTLSTimeout)
	var fb *firstByteConn
	raw := conn
	if s.d.FirstByteTimeout > 0 {
		fb = s.watchFirstByte(conn, peer, false)
		raw = fb
	}
	tc := tls.Client(raw, s.tlsCfg)
	// HandshakeContext closes raw when hctx is done (a phase limit, the
	// caller, or another address winning), which unblocks the handshake.
	err := tc.HandshakeContext(hctx)
	var e *Error
	if err != nil {
		e = s.fail(hctx, PhaseTLS, peer, err)
		conn.Close()
	}
	cancel()
	outcome := mOK
	if e != nil {
		outcome = outcomeOf(e)
	}
	if outcome != mLost {
		s.tel.recordDuration(ctx, mPhaseTLS, outcome, time.Since(start).Seconds())
	}
	if span.IsRecording() && err == nil {
		st := tc.ConnectionState()
		span.SetAttributes(tlsAttrs(st)...)
	}
	endSpan(span, outcome, e)
	if e != nil {
		return nil, e
	}
	if fb != nil {
		fb.arm()
	}
	return tc, nil
}

// finishAttempt records the attempt's outcome in the attempts metric and,
// for a failure the peer is to blame for, in Health. A lost race, the
// caller's cancel or deadline and the whole dial's Timeout are not the
// peer's fault.
func (s *dialState) finishAttempt(ctx context.Context, r *attemptResult) {
	if r.err == nil {
		s.tel.recordAttempt(ctx, mOK)
		s.d.Health.record(r.peer, EventSuccess, r.latency, time.Now())
		return
	}
	outcome := outcomeOf(r.err)
	if outcome == mLost {
		return // counted by the race, which knows whether it was a stall
	}
	s.tel.recordAttempt(ctx, outcome)
	if ev, ok := healthEvent(r.err); ok {
		s.d.Health.record(r.peer, ev, 0, time.Now())
	}
}

// healthEvent maps an attempt's error to the Health event it is, if the
// peer is to blame.
func healthEvent(e *Error) (Event, bool) {
	var te *timeoutError
	switch {
	case errors.Is(e.Err, errLostRace), errors.Is(e.Err, context.Canceled):
		return 0, false
	case errors.As(e.Err, &te):
		switch te.cause {
		case errConnectTimeout:
			return EventConnectTimeout, true
		case errTLSTimeout:
			return EventTLSStall, true
		}
		return 0, false // the whole dial's Timeout
	case errors.Is(e.Err, context.DeadlineExceeded):
		return 0, false // the caller's deadline
	case errors.Is(e.Err, syscall.ECONNREFUSED):
		return EventRefused, true
	case errors.Is(e.Err, syscall.ECONNRESET):
		return EventReset, true
	case e.Phase == PhaseTLS:
		return EventTLSFailure, true
	}
	return EventFailure, true
}

// race dials peers in order per RFC 8305 §5 and returns the first conn to
// complete. It returns only after every racer it started has ended; the
// conns of losers are closed.
func (s *dialState) race(ctx context.Context, peers []netip.AddrPort) (net.Conn, error) {
	if len(peers) == 1 {
		// Nothing to race: dial on the caller's goroutine.
		r := s.attempt(ctx, 0, peers[0])
		if r.err != nil {
			return nil, r.err
		}
		return r.conn, nil
	}
	// The racers share a heap copy of the state and of the peers, so that
	// the single-address path above allocates neither.
	shared := *s
	return shared.raceMany(ctx, slices.Clone(peers))
}

// raceMany races two or more peers; see race.
func (s *dialState) raceMany(ctx context.Context, peers []netip.AddrPort) (net.Conn, error) {
	// raceCtx is cancelled with errLostRace once a winner is known, which
	// aborts the connects and handshakes still running.
	raceCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(errLostRace)

	// Buffered for every racer, so a racer never blocks on sending and
	// always ends, whoever reads.
	results := make(chan attemptResult, len(peers))
	started, pending := 0, 0
	launch := func() {
		i := started
		started++
		pending++
		go func() { results <- s.attempt(raceCtx, i, peers[i]) }()
	}
	canStart := func() bool {
		return started < len(peers) && raceCtx.Err() == nil &&
			(s.deadline.IsZero() || time.Now().Before(s.deadline))
	}

	var timer *time.Timer
	var timerC <-chan time.Time
	if s.delay > 0 {
		timer = time.NewTimer(s.delay)
		defer timer.Stop()
		timerC = timer.C
	}
	launch()
	var winner *attemptResult
	var failed []attemptResult
	for pending > 0 && winner == nil {
		select {
		case r := <-results:
			pending--
			if r.err == nil {
				winner = &r
				break
			}
			failed = append(failed, r)
			// A failure starts the next address at once (RFC 8305 §5),
			// and the stagger restarts from it.
			if canStart() {
				launch()
				if timer != nil {
					timer.Reset(s.delay)
				}
			}
		case <-timerC:
			// The current attempt is slow: start the next one alongside.
			if canStart() {
				launch()
				if started < len(peers) {
					timer.Reset(s.delay)
				}
			}
		}
	}
	if winner == nil {
		return nil, s.allFailed(ctx, failed)
	}

	// Stop the others and wait for every one of them: no goroutine outlives
	// the dial, and a loser that completed anyway is closed here.
	cancel(errLostRace)
	var losers []attemptResult
	for ; pending > 0; pending-- {
		r := <-results
		if r.conn != nil {
			// It completed before it saw the cancel: a healthy peer (its
			// success is already recorded), just not the first.
			r.conn.Close()
			continue
		}
		if r.lost() {
			losers = append(losers, r)
		} else {
			failed = append(failed, r)
		}
	}
	s.settleLosers(ctx, winner, failed, losers)
	return winner.conn, nil
}

// settleLosers accounts for a race that was won: an address that failed, or
// that started before the winner and was still pending when it won (a
// stall: it was overtaken), is a failure the race masked. It is counted in
// the masked-failures metric, by phase and peer, and a stall is a Health
// event. A racer started after the winner that merely lost is neither.
func (s *dialState) settleLosers(ctx context.Context, winner *attemptResult, failed, losers []attemptResult) {
	for i := range failed {
		r := &failed[i]
		if healthBlames(r.err) {
			s.tel.recordMasked(ctx, r.err.Phase, r.peer, r.err.ErrorType())
		}
	}
	for i := range losers {
		r := &losers[i]
		stalled := r.start.Before(winner.start)
		if stalled {
			ev := EventConnectStall
			if r.err.Phase == PhaseTLS {
				ev = EventTLSStall
			}
			s.tel.recordAttempt(ctx, mLost)
			s.tel.recordMasked(ctx, r.err.Phase, r.peer, r.err.Phase.String()+"_stall")
			s.d.Health.record(r.peer, ev, 0, time.Now())
			continue
		}
		s.tel.recordAttempt(ctx, mLost)
	}
}

// healthBlames reports whether an attempt's failure was the peer's doing.
func healthBlames(e *Error) bool {
	_, ok := healthEvent(e)
	return ok
}

// allFailed builds the error of a race that no address won. With one
// failed attempt it is that attempt's *Error. Otherwise the top-level
// *Error takes the Phase and Peer of the attempt that got furthest and its
// Err holds every attempt. A caller's cancel is reported as such, whatever
// the attempts did.
func (s *dialState) allFailed(ctx context.Context, failed []attemptResult) *Error {
	if len(failed) == 1 && ctx.Err() == nil {
		return failed[0].err
	}
	attempts := make([]*Error, len(failed))
	var primary *Error
	for i := range failed {
		attempts[i] = failed[i].err
		if primary == nil || attempts[i].Phase > primary.Phase {
			primary = attempts[i]
		}
	}
	cause := primary.Err
	if ctx.Err() != nil {
		// The caller cancelled or their deadline passed: that, not any
		// address, is why the dial failed.
		cause = s.fail(ctx, primary.Phase, primary.Peer, ctx.Err()).Err
	}
	if len(attempts) == 1 && ctx.Err() != nil {
		return &Error{Phase: primary.Phase, Network: s.network, Addr: s.addr, Peer: primary.Peer, Err: cause}
	}
	return &Error{Phase: primary.Phase, Network: s.network, Addr: s.addr, Peer: primary.Peer,
		Err: newAttemptsError(cause, primary, attempts)}
}

// tlsAttrs are the negotiated TLS parameters recorded on the dial.tls span.
func tlsAttrs(st tls.ConnectionState) []attribute.KeyValue {
	attrs := []attribute.KeyValue{
		attribute.String("tls.protocol.version", tlsVersion(st.Version)),
		attribute.Bool("tls.resumed", st.DidResume),
	}
	if st.NegotiatedProtocol != "" {
		attrs = append(attrs, attribute.String("tls.next_protocol", st.NegotiatedProtocol))
	}
	return attrs
}

func tlsVersion(v uint16) string {
	switch v {
	case tls.VersionTLS10:
		return "1.0"
	case tls.VersionTLS11:
		return "1.1"
	case tls.VersionTLS12:
		return "1.2"
	case tls.VersionTLS13:
		return "1.3"
	}
	return "unknown"
}
