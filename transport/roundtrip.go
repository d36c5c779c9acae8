package transport

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/internal/retryx"
	"github.com/lifeline-go/lifeline/retry"
)

// call is one RoundTrip: the caller's request and what its tries share.
type call struct {
	st         *state
	req        *http.Request // the caller's; never modified
	ctx        context.Context
	idempotent bool
	replayable bool
	hedge      bool           // the request may be hedged
	tries      int            // tries started; the next one's resend count
	final      *http.Response // the answer RoundTrip returns
	held       *http.Response // the last answer with a retryable status
	attemptEnd time.Time      // the current attempt's AttemptTimeout; zero: none
	unmasked   []tryResult    // failed tries whose failure no retry or hedge counted yet
	cctx       callCtx        // ctx: the caller's, holding the call for the dial hooks
	dialMu     sync.Mutex     // guards dials, appended to from net/http's dial goroutines
	dials      []*dialing     // the dials made for the call's tries (dialphase.go)
	first      try            // the first try, in the same allocation as the call
}

// RoundTrip sends req and returns the first good response: see Transport
// for the limits, retries and hedges it applies. The response (or error)
// is that of the last attempt; responses discarded along the way were
// drained and closed. The caller closes the response body; the attempt's
// context and span live until then. Errors: a *dial.Error for a failed
// dial, a *TimeoutError for the Transport's own limits, ErrBadRequest for a
// request that cannot be sent, and net/http's errors otherwise; after
// retries, *retry.ExhaustedError wraps the last. An answer with a
// retryable status (429, 502, 503, 504) that RoundTrip stopped retrying is
// returned with a nil error while the caller's context is alive; see
// [Exhausted]. Once the caller's context has ended, RoundTrip returns its
// error and closes such an answer.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	if err := checkRequest(req); err != nil {
		return nil, err
	}
	st := t.get()
	c := &call{st: st, req: req, idempotent: idempotent(req), replayable: replayable(req)}
	c.cctx = callCtx{Context: req.Context(), c: c}
	c.ctx = &c.cctx
	c.hedge = st.hedge.on && c.idempotent && c.replayable
	// The request body and a held answer are closed on every path, a
	// panic of the caller's code (Retry.Retryable) included.
	defer c.end()
	if st.retryErr != nil {
		return nil, st.retryErr
	}

	err := retryx.DoPrepared(st.retry, c.ctx, callAttempt, c)
	switch {
	case err == nil:
		// The retry loop counted the failure of each failed attempt; a
		// hedged attempt's other failed tries are counted here.
		st.tel.countMasked(c.ctx, otelx.MaskedByRetry, c.unmasked)
		return c.final, nil
	case c.held != nil && c.ctx.Err() == nil:
		// Out of attempts or budget, a deadline that the next wait would
		// cross, or a wait beyond MaxRetryAfter: the last answer is the
		// caller's. (Once the caller's context has ended, the answer's
		// body is unreadable and the context's error is the truth: end
		// closes it.)
		resp := c.held
		c.held = nil
		var ex *retry.ExhaustedError
		if errors.As(err, &ex) {
			markExhausted(resp, ex)
		}
		return resp, nil
	}
	return nil, err
}

// end closes what RoundTrip was given or held and does not return: the
// caller's body, unless a try handed it to net/http (which closes it) —
// a body with GetBody is never handed over, each try sends a copy — and
// an answer held for a retry.
func (c *call) end() {
	if b := c.req.Body; b != nil && b != http.NoBody && (c.req.GetBody != nil || c.tries == 0) {
		_ = b.Close()
	}
	if c.held != nil {
		discard(c.held)
		c.held = nil
	}
}

// callAttempt is one turn of RoundTrip's retry loop for the call arg. The
// loop gives the attempts no number in their contexts: nothing under
// RoundTrip reads it, and it would cost an allocation per request
// (BenchmarkKeepAliveGET).
func callAttempt(ctx context.Context, arg any) error {
	c := arg.(*call)
	if c.held != nil {
		discard(c.held)
		c.held = nil
	}
	resp, tr, err := c.attempt(ctx)
	if err != nil {
		return err
	}
	if c.idempotent && c.replayable && retryableStatus(resp.StatusCode) {
		c.held = resp
		se := &statusError{resp: resp, try: tr}
		if d, ok := retryAfter(resp.Header, time.Now()); ok {
			return retry.After(d, se)
		}
		return se
	}
	c.final = resp
	return nil
}

// attempt makes one attempt of the retry loop: one try, or with hedging a
// try and, if it has no response headers after the hedge delay, a second.
// The policy's AttemptTimeout bounds the attempt, hedges included: every
// try of it ends at the same instant (newTry arms each try's timer for
// attemptEnd).
func (c *call) attempt(ctx context.Context) (*http.Response, *try, error) {
	if c.st.attemptTO > 0 {
		c.attemptEnd = time.Now().Add(c.st.attemptTO)
	}
	if !c.hedge {
		tr := c.newTry(false)
		resp, err := tr.run()
		if err != nil {
			return nil, tr, c.canRetry(err, tr.mayHaveWritten(err))
		}
		return resp, tr, nil
	}
	return c.hedged(ctx)
}

// attemptOver reports whether the current attempt's AttemptTimeout has
// passed at now.
func (c *call) attemptOver(now time.Time) bool {
	return !c.attemptEnd.IsZero() && !now.Before(c.attemptEnd)
}

// try is one HTTP exchange: one request on one conn.
//
// A healthy GET pays for as little as it can: the try's own cancellable
// context exists only when something may have to cancel it (a hedge, the
// policy's AttemptTimeout, the watch when the slot cannot lend its own),
// net/http's trace hooks only when something reads them
// (the watch, a non-idempotent request, a recording span, a conn that may
// have outlived MaxConnLifetime), and the request's headers are copied only
// when a conn may be past its lifetime. The try's slot in the watch lends
// its reusable trace and, over HTTPS, its reusable context (tryCtx), so
// that FirstByteTimeout costs no allocation: the request's copy lives in
// the try; over HTTPS two more for an AfterFunc when the caller's context
// can end (BenchmarkKeepAliveGET, BenchmarkKeepAliveGETDeadline).
type try struct {
	c      *call
	resend int // tries of the call before this one
	req    *http.Request
	ctx    context.Context
	cancel context.CancelCauseFunc // nil: nothing cancels this try but its caller
	span   trace.Span
	start  time.Time // zero when nothing reads it (see newTry)
	slot   *slot     // the try's place in the watch; nil: no watch
	tctx   tryCtx    // the try's context when it is a tryCtx

	// (The flags side by side, so that the try, in its call, stays in a
	// smaller size class: BenchmarkKeepAliveGET's bytes per request.)
	wrote    atomic.Bool // the request's headers were written: it may have been acted on
	finished atomic.Bool // finish or finishSpan ran
	hedge    bool        // started by the hedge timer
	// ownHeader: tr.req's header map is the try's own clone, made when a
	// conn may be past MaxConnLifetime.
	ownHeader bool
	traced    bool // net/http's trace hooks are set: wrote and peer are known
	timed     bool // the slot's WroteRequest hook went to net/http: the watch bounds the wait for headers
	// holdSlot: a hedged attempt's first try in the slot's reusable
	// context, which a winning hedge cancels through the slot; the slot is
	// released only after hedged's endHold.
	holdSlot bool

	mu       sync.Mutex // guards the fields below, set from net/http's hooks
	peer     netip.AddrPort
	attTimer *time.Timer // the policy's AttemptTimeout, from the start

	body body // the response body's wrapper (see newBody)

	reqCopy http.Request // tr.req when it is a copy with another context
}

func (c *call) newTry(hedge bool) *try {
	tr := &c.first
	if c.tries > 0 {
		tr = new(try)
	}
	tr.c, tr.resend, tr.hedge = c, c.tries, hedge
	c.tries++
	st := c.st
	ctx := c.ctx
	if c.hedge || st.hedge.quantile > 0 || st.tel.timesTries(ctx) {
		// Hedging compares the tries' starts, adaptive hedging learns
		// their times to headers, the duration metric records them: else
		// the try reads no clock.
		tr.start = time.Now()
	}
	var s *slot
	if st.watch != nil {
		s = st.watch.acquire(tr)
		tr.slot = s
	}
	// The watch bounds the wait for headers from net/http's WroteRequest.
	tr.timed = s != nil && st.firstByte > 0
	// The slot's reusable trace (tryCtx) can serve the try.
	inSlot := tr.timed && traceKey != nil && httptrace.ContextClientTrace(ctx) == nil
	// A hedged attempt's first try, which runs on the caller's goroutine,
	// can use the slot's reusable context too: a hedge that wins cancels it
	// through the slot (lose), and hedged keeps the slot until the try can
	// no longer be cancelled (holdSlot), so that no other try is.
	firstOfHedged := c.hedge && !hedge
	if hedge || (firstOfHedged && !inSlot) || st.attemptTO > 0 {
		// The try's context outlives RoundTrip: it ends when the body is
		// read to EOF or closed (a winner's body must not be cut), or when
		// a hedge overtakes it or a limit ends it.
		ctx, tr.cancel = context.WithCancelCause(ctx)
	}
	tr.holdSlot = firstOfHedged && inSlot && tr.cancel == nil
	ctx, tr.span = st.tel.startSpan(ctx, c.req, tr.resend)
	copyHeader := st.born.mayHaveExpired(st.roughNow())
	tr.ownHeader = copyHeader
	// The hooks tell whether a non-idempotent request was written, give a
	// recording span its peer, let MaxConnLifetime mark an old conn, and
	// name the peer of a failure a hedge or a retry masked (a label only
	// when the Dialer has a Health to bound it).
	traced := !c.idempotent || tr.span.IsRecording() || copyHeader || c.hedge || st.dialer.Health != nil
	switch {
	case inSlot:
		// The slot's reusable trace serves the try (tryCtx). The watch
		// cuts the wait through the try's own cancel when it has one, or
		// over HTTP/1.1 through net/http's CancelRequest (h1cut.go): the
		// rest is the try's context. Else nothing of the Transport's but
		// the watch ends this try before its body, and the slot's
		// reusable context does.
		own := true
		switch {
		case tr.cancel != nil:
			s.cut = tr.cancel
		case !tr.holdSlot && st.plainH1 && c.req.URL.Scheme == "http" && cancelRequestWorks():
			s.cut = s.cancelReq
		default:
			own = false
			s.reusableCtx()
			if ctx.Done() != nil {
				s.follow(ctx)
			}
			s.cut = s.cancel
		}
		s.trace.WroteRequest = s.wroteRequest
		s.trace.GotConn, s.trace.WroteHeaders = nil, nil
		if traced {
			s.trace.GotConn, s.trace.WroteHeaders = s.gotConn, s.wroteHeaders
		}
		tr.traced = traced
		tr.tctx = tryCtx{Context: ctx, s: s, own: own}
		ctx = &tr.tctx
	case tr.timed || traced:
		trace := &httptrace.ClientTrace{}
		if tr.timed {
			if tr.cancel == nil {
				ctx, tr.cancel = context.WithCancelCause(ctx)
			}
			s.cut = tr.cancel
			trace.WroteRequest = s.wroteRequest
		}
		if traced {
			tr.traced = true
			if tr.timed {
				// The slot's hooks: made once per slot, not per request.
				trace.GotConn, trace.WroteHeaders = s.gotConn, s.wroteHeaders
			} else {
				trace.GotConn, trace.WroteHeaders = tr.gotConn, tr.wroteHeaders
			}
		}
		ctx = httptrace.WithClientTrace(ctx, trace)
	}
	tr.ctx = ctx
	fromGetBody := c.req.GetBody != nil && c.req.Body != nil && c.req.Body != http.NoBody
	switch {
	case copyHeader:
		// gotConn may add "Connection: close": the try's own header map.
		tr.req = c.req.Clone(ctx)
	case fromGetBody || ctx != c.req.Context():
		// The copy lives in the try: net/http's WithContext, inlined
		// here, makes its own on the stack (one allocation less per
		// request, BenchmarkKeepAliveGET).
		tr.reqCopy = *c.req.WithContext(ctx)
		tr.req = &tr.reqCopy
	default:
		// Nothing of the try's differs from the caller's request, which
		// net/http does not modify either.
		tr.req = c.req
	}
	if fromGetBody {
		tr.req.Body = nil // set in run, where a GetBody error can be returned
	}
	if st.attemptTO > 0 {
		// The attempt's end, for each of its tries (call.attempt).
		tr.attTimer = time.AfterFunc(time.Until(c.attemptEnd), func() { tr.cancel(errAttempt) })
	}
	return tr
}

func (tr *try) wroteHeaders() { tr.wrote.Store(true) }

// elapsed is the try's duration so far, -1 when its start was not read.
func (tr *try) elapsed() time.Duration {
	if tr.start.IsZero() {
		return -1
	}
	return time.Since(tr.start)
}

// mayHaveWritten reports whether the request may have reached the server:
// known from the trace hooks when they are set; otherwise only a dial
// error proves it did not.
func (tr *try) mayHaveWritten(err error) bool {
	if tr.traced {
		return tr.wrote.Load()
	}
	var de *dial.Error
	return !errors.As(err, &de) || de.Phase == dial.PhaseFirstByte
}

// run sends the request and returns the response, its body wrapped so that
// the try ends when the body does.
func (tr *try) run() (*http.Response, error) {
	c := tr.c
	if c.req.GetBody != nil && c.req.Body != nil && c.req.Body != http.NoBody {
		b, err := c.req.GetBody()
		if err != nil {
			tr.finish(nil, err)
			return nil, err
		}
		tr.req.Body = b
	}
	resp, err := c.st.ht.RoundTrip(tr.req)
	tr.stopAttemptTimer()
	if tr.timed && tr.slot.headers() {
		// The watch cut the wait for headers (an answer that raced the
		// cut is dropped: its context is cancelled).
		if resp != nil {
			_ = resp.Body.Close()
		}
		err = tr.timeoutError("first_byte", c.st.firstByte)
		tr.finish(nil, err)
		return nil, err
	}
	if err != nil {
		err = tr.mapErr(err)
		tr.finish(nil, err)
		return nil, err
	}
	// The caller's request, not the try's copy, whose context may be a
	// slot's that serves other tries later.
	resp.Request = c.req
	if c.st.hedge.quantile > 0 {
		// Only adaptive hedging reads the window.
		c.st.latency.add(c.req.URL.Host, time.Since(tr.start))
	}
	tr.c.st.tel.responded(tr.span, resp)
	switch {
	case resp.StatusCode == http.StatusSwitchingProtocols:
		// The body is the connection itself (io.ReadWriteCloser): hand it
		// over as it is; the try's context must stay alive with it.
		tr.finishSpan(resp, nil)
		return resp, nil
	case resp.Body == nil || resp.Body == http.NoBody:
		tr.finish(resp, nil)
		return resp, nil
	}
	resp.Body = newBody(tr, resp)
	return resp, nil
}

// gotConn notes the peer and applies MaxConnLifetime: a conn past its
// lifetime carries "Connection: close" on this request (the header map is
// the try's own clone), so that HTTP/1.1 closes it after this response and
// HTTP/2 takes no new stream on it and closes it once its streams are done;
// no request fails.
func (tr *try) gotConn(info httptrace.GotConnInfo) {
	var peer netip.AddrPort
	if a, ok := info.Conn.RemoteAddr().(*net.TCPAddr); ok {
		peer = a.AddrPort()
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	}
	if b := bornOf(info.Conn); b != nil && tr.ownHeader && tr.req.Header != nil && b.expired(time.Now()) {
		// The header map is the try's own (newTry cloned it when a conn
		// could be this old).
		tr.req.Header.Set("Connection", "close")
	}
	tr.mu.Lock()
	tr.peer = peer
	tr.mu.Unlock()
	tr.c.st.tel.gotConn(tr.span, peer, info.Reused)
}

// stopAttemptTimer stops the AttemptTimeout clock, which runs until the
// response headers.
func (tr *try) stopAttemptTimer() {
	if tr.attTimer != nil {
		tr.attTimer.Stop()
	}
}

// hasPeer reports whether the try got a conn with a TCP peer.
func (tr *try) hasPeer() bool {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	return tr.peer.IsValid()
}

// peerLabel is the peer's metric label: its IP when the Dialer's Health
// remembers it, "other" otherwise (or when no conn was had).
func (tr *try) peerLabel() string {
	tr.mu.Lock()
	peer := tr.peer
	tr.mu.Unlock()
	if !peer.IsValid() {
		return otelx.PeerOther
	}
	return tr.c.st.dialer.Health.PeerLabel(peer)
}

// mapErr turns the end of a try by one of the Transport's limits into a
// *TimeoutError, and a header block over the limit into a
// *HeaderLimitError; other errors are returned as they are.
// (FirstByteTimeout is run's: the slot tells.)
func (tr *try) mapErr(err error) error {
	st := tr.c.st
	var phase string
	var limit time.Duration
	switch {
	case tr.ctx.Err() != nil && (errors.Is(err, context.Cause(tr.ctx)) || errors.Is(err, context.Canceled)):
		// Ended by a hedge or AttemptTimeout (through the try's cancel,
		// or a first try's slot), or by the caller. (net/http returns the
		// cancel's cause, HTTP/2 context.Canceled; any other error is
		// the try's own, which a cancel only followed.)
		switch context.Cause(tr.ctx) {
		case errHedgeLost:
			return errHedgeLost
		case errAttempt:
			phase, limit = "attempt", st.attemptTO
		default:
			return err
		}
	case isHeaderLimit(err):
		return &HeaderLimitError{Method: methodOf(tr.c.req), Host: tr.c.req.URL.Host,
			Limit: st.headerLimit(), err: err, peer: tr.peerLabel()}
	default:
		return err
	}
	return tr.timeoutError(phase, limit)
}

func (tr *try) timeoutError(phase string, limit time.Duration) *TimeoutError {
	return &TimeoutError{Phase: phase, Method: methodOf(tr.c.req), Host: tr.c.req.URL.Host,
		Limit: limit, peer: tr.peerLabel()}
}

// finish ends the try: its context, its span and its duration, once.
func (tr *try) finish(resp *http.Response, err error) {
	if !tr.finished.CompareAndSwap(false, true) {
		return
	}
	tr.stopAttemptTimer()
	if tr.cancel != nil {
		cause := err
		if cause == nil {
			cause = errBodyClosed
		}
		tr.cancel(cause)
	}
	tr.c.st.tel.ended(tr.ctx, tr.span, tr.c.req, resp, err, tr.elapsed())
	tr.releaseSlot()
}

// releaseSlot gives the try's slot back to the watch, last: the slot may
// serve another try at once. A try that holds its slot keeps it: hedged
// lets go of it (endHold).
func (tr *try) releaseSlot() {
	if tr.slot != nil && !tr.holdSlot {
		tr.slot.release(tr.timed)
	}
}

// endHold ends holdSlot, once nothing will cancel the try through its
// slot, and gives the slot back now if the try has ended.
func (tr *try) endHold() {
	if tr.holdSlot {
		tr.holdSlot = false
		if tr.finished.Load() {
			tr.releaseSlot()
		}
	}
}

// lose ends a try that a hedge overtook.
func (tr *try) lose() {
	if tr.cancel != nil {
		tr.cancel(errHedgeLost)
		return
	}
	tr.slot.cancel(errHedgeLost) // a first try that holds its slot
}

// finishSpan ends the span and records the try but leaves its context
// alive (a 101 response's conn lives on it).
func (tr *try) finishSpan(resp *http.Response, err error) {
	if !tr.finished.CompareAndSwap(false, true) {
		return
	}
	tr.c.st.tel.ended(tr.ctx, tr.span, tr.c.req, resp, err, tr.elapsed())
	// The slot goes back too: net/http has already let go of the
	// request's context (a 101 has no body to read).
	tr.releaseSlot()
}

func methodOf(req *http.Request) string {
	if req.Method == "" {
		return http.MethodGet
	}
	return req.Method
}
