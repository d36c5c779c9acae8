package dial

import (
	"context"
	"crypto/tls"
	"errors"
	"net"
	"net/netip"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/attribute"
)

// attemptResult is how one raced attempt ended.
type attemptResult struct {
	index  int
	peer   netip.AddrPort
	repeat bool // not the first attempt to peer in this dial
	start  time.Time
	conn   net.Conn // the established conn; nil when err != nil
	err    *Error   // nil on success; Phase is where the attempt was when it ended
	// latency is the establishment time of a successful attempt.
	latency time.Duration
}

func (r *attemptResult) lost() bool { return r.err != nil && r.err.Err == errLostRace }

// attempt connects to peer and, for TLS dials, completes the handshake,
// under ctx, the attempt's own (attemptCtx: for a TCP dial it bounds the
// connect). It records the attempt's own telemetry and Health events; a
// lost race is classified by the caller, which knows who won. On failure
// the conn is closed.
func (s *dialState) attempt(ctx context.Context, index int, peer netip.AddrPort, repeat bool) attemptResult {
	r := attemptResult{index: index, peer: peer, repeat: repeat, start: time.Now()}
	cctx, span := s.startChild(ctx, "dial.connect")
	if span.IsRecording() {
		span.SetAttributes(peerAttrs(peer, index, repeat)...)
	}
	connCtx, cancel := cctx, noCancel
	if s.useTLS {
		connCtx, cancel = s.phaseCtx(cctx, s.establishLimit(s.d.connectTimeout()), errConnectTimeout)
	}
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
		if s.fbt > 0 {
			r.conn = s.watchFirstByte(conn, peer, nil)
		} else {
			r.conn = conn
		}
		s.finishAttempt(ctx, &r)
		return r
	}

	r.conn, r.err = s.handshake(ctx, index, peer, repeat, conn)
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
func (s *dialState) handshake(ctx context.Context, index int, peer netip.AddrPort, repeat bool, conn net.Conn) (net.Conn, *Error) {
	start := time.Now()
	tctx, span := s.startChild(ctx, "dial.tls")
	if span.IsRecording() {
		span.SetAttributes(peerAttrs(peer, index, repeat)...)
	}
	hctx, cancel := s.phaseCtx(tctx, s.establishLimit(s.d.tlsHandshakeTimeout()), errTLSTimeout)
	var fb *firstByteConn
	raw, cfg := conn, s.tlsCfg
	if s.fbt > 0 {
		// Each attempt has its own config: the watch learns the server's
		// traffic secret through the config's KeyLogWriter.
		cfg = cfg.Clone()
		fb = s.watchFirstByte(conn, peer, cfg)
		raw = fb
	}
	tc := tls.Client(raw, cfg)
	// HandshakeContext closes raw when hctx is done (a phase limit, the
	// caller, or another attempt winning), which unblocks the handshake.
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
		span.SetAttributes(tlsAttrs(tc.ConnectionState())...)
	}
	endSpan(span, outcome, e)
	if e != nil {
		return nil, e
	}
	if fb != nil {
		fb.arm(tc)
	}
	return tc, nil
}

// finishAttempt records the attempt's outcome in the attempts metric and,
// for a failure the peer is to blame for, in Health. A lost race, the
// caller's cancel or deadline and the whole dial's Timeout are not the
// peer's fault.
func (s *dialState) finishAttempt(ctx context.Context, r *attemptResult) {
	if r.err == nil {
		s.tel.recordAttempt(ctx, mOK, r.repeat)
		s.health.record(r.peer, EventSuccess, r.latency, time.Now())
		return
	}
	outcome := outcomeOf(r.err)
	if outcome == mLost {
		return // counted by the race, which knows whether it was a stall
	}
	s.tel.recordAttempt(ctx, outcome, r.repeat)
	if ev, ok := healthEvent(r.err); ok {
		s.health.record(r.peer, ev, 0, time.Now())
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

// healthBlames reports whether an attempt's failure was the peer's doing.
func healthBlames(e *Error) bool {
	_, ok := healthEvent(e)
	return ok
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
