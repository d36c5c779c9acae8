package transport

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/netip"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.opentelemetry.io/otel/trace"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/internal/retryx"
	"github.com/lifeline-go/lifeline/internal/upstream"
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
	reauthed   bool           // a 401 was answered with a Refresh: no second one
	lim        *callLimits    // the Transport's limits with the call's options over them; read-only
	tries      int            // tries started; the next one's resend count
	final      *http.Response // the answer RoundTrip returns
	held       *http.Response // the last answer with a retryable status
	attemptEnd time.Time      // the current attempt's AttemptTimeout; zero: none
	unmasked   []tryResult    // failed tries whose failure no retry or hedge counted yet
	cctx       callCtx        // ctx: the caller's, holding the call for the dial hooks
	dialMu     sync.Mutex     // guards dials, appended to from net/http's dial goroutines
	dials      []*dialing     // the dials made for the call's tries (dialphase.go)
	up         *upState       // the upstream's state; nil: fail fast and shedding both off
	probe      upstream.Pass  // the call's admission as a probe, if it is one
	scope      *scope         // the call's scope when it met one paused (upstream.go)
	scopeProbe upstream.Pass  // the call's admission as its scope's probe, if it is one
	queued     atomic.Bool    // the attempt was counted as overload when admitted (upstream.go)
	attempts   int            // attempts begun
	lastErr    error          // the last failed attempt's error
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
	c.lim = st.limits(req.Context())
	if c.lim.creds != nil && req.Response != nil && leftOrigin(req) {
		// An http.Client following a redirect off the origin the call
		// began at: the credentials are not the new origin's to see.
		l := *c.lim
		l.creds = nil
		c.lim = &l
	}
	c.hedge = c.lim.hedgeOn && c.idempotent && c.replayable
	// The request body and a held answer are closed on every path, a
	// panic of the caller's code (Retry.Retryable) included.
	defer c.end()
	if c.lim.retryErr != nil {
		return nil, c.lim.retryErr
	}
	if !st.t.DisableFailFast || !st.t.DisableLoadShedding {
		// The upstream known down, paused or drowning: the call may end
		// here, or wait (WaitForReady, a pause).
		c.up = st.ups.upstreamOf(req.URL, st.roughNow())
		if resp, err := c.admit(true); err != nil || resp != nil {
			return resp, err
		}
	}

	err := retryx.DoPrepared(c.lim.retry, c.ctx, callAttempt, c)
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
	if c.up != nil {
		c.endProbe()
	}
}

// callAttempt is one turn of RoundTrip's retry loop for the call arg. The
// loop gives the attempts no number in their contexts: nothing under
// RoundTrip reads it, and it would cost an allocation per request
// (BenchmarkKeepAliveGET).
func callAttempt(ctx context.Context, arg any) error {
	c := arg.(*call)
	err := c.attemptOnce(ctx)
	if err != nil {
		c.lastErr = err
	}
	return err
}

func (c *call) attemptOnce(ctx context.Context) error {
	c.attempts++
	if c.attempts > 1 && c.up != nil {
		// A retry: the upstream may have gone down or begun shedding
		// since the first attempt.
		// A refusal ends the retries as a refused budget does: the
		// loop's final word, the last attempt's failure inside. (An
		// answer held before stays the call's: RoundTrip returns it.)
		if _, err := c.admit(false); err != nil {
			var ue *UnavailableError
			if errors.As(err, &ue) {
				return &retry.ExhaustedError{Attempts: c.attempts - 1, Last: c.lastErr, Cause: ue}
			}
			return err
		}
	}
	if c.held != nil {
		discard(c.held)
		c.held = nil
	}
	resp, tr, err := c.attempt(ctx)
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusUnauthorized && c.lim.creds != nil && !c.reauthed {
		c.reauthed = true
		if resp, tr, err = c.reauth(ctx, resp, tr); err != nil {
			return err
		}
	}
	if c.idempotent && c.replayable && retryableStatus(resp.StatusCode) {
		c.held = resp
		se := &statusError{resp: resp, try: tr}
		if d, ok := RetryAfter(resp); ok {
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
	if c.lim.attemptTO > 0 {
		c.attemptEnd = time.Now().Add(c.lim.attemptTO)
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

// try is one HTTP exchange: one request, on one conn or (when net/http
// retries by itself on another conn) a few.
//
// A try is never reused: its context, its trace and what the watch and
// net/http's hooks touch are its own, made for it, so that a hook net/http
// calls late (for a write it began before it retried the request on
// another conn) reaches this try and no other. Its context is its own
// cancellable one, which the watch, a hedge that overtakes it or the
// policy's AttemptTimeout end; its trace hooks are set only when something
// reads them (the watch, a non-idempotent request, a recording span, a
// Health, a conn that may have outlived MaxConnLifetime).
type try struct {
	c      *call
	resend int // tries of the call before this one
	// credit is the upstream's answers less the failures they excused
	// (its gate's Credit) when the try's wait for headers began — its
	// request written, from net/http's goroutine (wroteRequest); when it
	// started until then: its first-byte failure is excused only by an
	// answer since (FailureSince). Not when the try started: a try that
	// waited for a conn would take the answers that freed one, from
	// before its request was sent.
	credit atomic.Uint64
	// downs is its gate's Downs read with credit (FailureSinceDowns).
	downs  atomic.Uint64
	req    *http.Request
	ctx    context.Context
	cancel context.CancelCauseFunc
	span   trace.Span
	start  time.Time // zero when nothing reads it (see newTry)
	w      *watch    // nil: no watch

	// prev and next link the try into w's list while it is in flight;
	// listed says it is. Guarded by w.mu.
	prev, next *try
	listed     bool

	// (The flags side by side, so that the try, in its call, stays in a
	// smaller size class: BenchmarkKeepAliveGET's bytes per request.)
	wrote    atomic.Bool // the request's headers were written: it may have been acted on
	finished atomic.Bool // finish or finishSpan ran
	hedge    bool        // started by the hedge timer
	// ownHeader: tr.req's header map is the try's own clone, made when a
	// conn may be past MaxConnLifetime.
	ownHeader bool
	traced    bool // net/http's WroteHeaders and GotConn hooks are set: wrote and peer are known
	timed     bool // FirstByteTimeout bounds the wait for headers

	// wait is the try's phase before its response headers (see the
	// states at waitAcquiring); writes counts the WroteRequest calls that
	// began a wait, for their begin marks.
	wait   atomic.Int64
	writes atomic.Uint32
	// conn is the conn net/http last gave the try (GotConn), when lifeline
	// dialed it: its byte counts are the watch's measure of progress.
	conn atomic.Pointer[bornConn]
	up   upload // the request body's progress

	mu       sync.Mutex // guards the fields below, set from net/http's hooks
	peer     netip.AddrPort
	attTimer *time.Timer // the policy's AttemptTimeout, from the start

	body  body                  // the response body's wrapper (see newBody)
	trace httptrace.ClientTrace // the try's own hooks (nil: none)

	reqCopy http.Request // tr.req when it is not a Clone

	acqAt int64 // the watch's: when it first saw the try wait for a conn (0: not waiting)

	readAt uint64 // conn's bytes read when the try got it (see abandoned); guarded by mu

	queued atomic.Bool // counted in its upstream's queued (waiting for a conn)
}

// unqueue takes the try out of its upstream's count of tries waiting for
// a conn, once.
func (tr *try) unqueue() {
	if tr.queued.CompareAndSwap(true, false) {
		tr.c.up.queued.Add(-1)
	}
}

// upload is the progress of a try's request body, for the watch: which
// copy of the body (GetBody) is the one net/http sends now, whether it was
// read to its end, and the Reads of it so far.
type upload struct {
	gen     atomic.Uint32 // the copy being sent: 1 for the first, +1 per GetBody of net/http's
	ended   atomic.Uint32 // the last copy read to EOF or closed
	started atomic.Bool   // net/http began reading the copy: an upload is under way
	reading atomic.Int32  // Reads of the caller's body in progress: the caller's time
	reads   atomic.Uint32 // Reads of the caller's body that returned

	// The watch's own, under its lock: what it saw at its last stamp.
	at        int64
	conn      *bornConn
	written   uint64
	seenReads uint32
}

func (c *call) newTry(hedge bool) *try {
	tr := &c.first
	if c.tries > 0 {
		tr = new(try)
	}
	tr.c, tr.resend, tr.hedge = c, c.tries, hedge
	c.tries++
	st := c.st
	if u := c.up; u != nil && !st.t.DisableFailFast {
		tr.credit.Store(u.gate.Credit())
		tr.downs.Store(u.gate.Downs())
	}
	if c.lim == nil {
		// A call made by hand (the package's own tests), not by
		// RoundTrip: the Transport's limits. Set before the first try,
		// on the call's goroutine, before any hedge can read it.
		c.lim = &st.lim
	}
	if c.hedge || st.hedge.quantile > 0 || st.tel.timesTries(c.ctx) {
		// Hedging compares the tries' starts, adaptive hedging learns
		// their times to headers, the duration metric records them: else
		// the try reads no clock.
		tr.start = time.Now()
	}
	// The try's context outlives RoundTrip: it ends when the body is read
	// to EOF or closed (a winner's body must not be cut), or when the
	// watch, a hedge that overtakes it or AttemptTimeout ends it.
	ctx, cancel := context.WithCancelCause(c.ctx)
	tr.cancel = cancel
	ctx, tr.span = st.tel.startSpan(ctx, c.req, tr.resend)
	tr.ownHeader = st.conns.mayHaveExpired(st.roughNow())
	// The hooks tell whether a non-idempotent request was written, give a
	// recording span its peer, let MaxConnLifetime mark an old conn, and
	// name the peer of a failure a hedge or a retry masked or Health is
	// told of.
	tr.traced = !c.idempotent || tr.span.IsRecording() || tr.ownHeader || c.hedge || st.dialer.Health != nil
	if c.lim.firstByte > 0 || c.lim.stall > 0 {
		tr.w = st.watch
	}
	tr.timed = tr.w != nil && c.lim.firstByte > 0
	if tr.w != nil || tr.traced {
		ctx = tr.hook(ctx)
	}
	tr.ctx = ctx
	if tr.ownHeader {
		// gotConn may add "Connection: close": the try's own header map.
		tr.req = c.req.Clone(ctx)
	} else {
		// The copy lives in the try: net/http's WithContext, inlined
		// here, makes its own on the stack (one allocation less per
		// request, BenchmarkKeepAliveGET).
		tr.reqCopy = *c.req.WithContext(ctx)
		tr.req = &tr.reqCopy
		if c.lim.creds != nil {
			// Credentials.Apply sets the credential in the try's own
			// header map, or signs the try's own URL (an API key in
			// the query): neither is the caller's, nor another try's.
			tr.req.Header = c.req.Header.Clone()
			u := *c.req.URL // its Userinfo is immutable: shared
			tr.req.URL = &u
		}
	}
	if c.req.Body != nil && c.req.Body != http.NoBody {
		tr.req.Body = nil // set in run, where a GetBody error can be returned
	}
	if c.lim.attemptTO > 0 {
		// The attempt's end, for each of its tries (call.attempt).
		tr.attTimer = time.AfterFunc(time.Until(c.attemptEnd), func() { tr.cancel(errAttempt) })
	}
	// The watch takes the try in run, once its credential is applied: a
	// token fetch is bounded by the call's context and AttemptTimeout,
	// and is not a wait for a conn.
	return tr
}

// hook sets the try's own trace hooks on ctx: those the watch reads when
// there is a watch, those that tell whether the request was written and
// who the peer is when traced. A trace of the caller's is called too.
func (tr *try) hook(ctx context.Context) context.Context {
	t := &tr.trace
	t.GotConn = tr.gotConn
	if tr.w != nil {
		t.GetConn = tr.getConn
		t.WroteRequest = tr.wroteRequest
	}
	if tr.traced || tr.w != nil && tr.c.lim.stall > 0 {
		// Also the watch's: the headers' upload ends there.
		t.WroteHeaders = tr.wroteHeaders
	}
	return httptrace.WithClientTrace(ctx, t)
}

// getConn notes that net/http is getting the try a conn: at the start, or
// to send the request again on another conn. Whatever the try wrote
// before does not count.
func (tr *try) getConn(string) {
	if u := tr.c.up; u != nil && tr.queued.CompareAndSwap(false, true) {
		u.queued.Add(1)
		if tr.finished.Load() {
			// A late hook (net/http retrying on another conn after the
			// try ended): finish has unqueued already, or will see the
			// flag; one of the two takes it out, never neither.
			tr.unqueue()
		}
	}
	for {
		old := tr.wait.Load()
		if old == waitCut || old == waitUpCut || old == waitConnCut || old == waitDone || tr.wait.CompareAndSwap(old, waitAcquiring) {
			return
		}
	}
}

// wroteRequest notes that net/http wrote the request: the wait for
// headers starts (again, if it wrote it once more), unless this is the
// late hook of an earlier write (see waitAcquiring); the loop's next look
// stamps it.
func (tr *try) wroteRequest(httptrace.WroteRequestInfo) {
	if tr.up.gen.Load() != tr.up.ended.Load() {
		// The body net/http sends now is not sent yet.
		return
	}
	if u := tr.c.up; u != nil && !tr.c.st.t.DisableFailFast {
		// Before the mark: a cut of this wait reads the count of its own.
		tr.credit.Store(u.gate.Credit())
		tr.downs.Store(u.gate.Downs())
	}
	mark := beganMark(tr.writes.Add(1))
	for {
		old := tr.wait.Load()
		if old == waitAcquiring || old == waitCut || old == waitUpCut || old == waitConnCut || old == waitDone ||
			tr.wait.CompareAndSwap(old, mark) {
			return
		}
	}
}

func (tr *try) wroteHeaders() { tr.wrote.Store(true) }

// headers ends the wait for headers and returns the state it ended in:
// waitCut, waitUpCut or waitConnCut when the watch cut it first. A cut
// stays marked.
func (tr *try) headers() int64 {
	for {
		old := tr.wait.Load()
		if old == waitCut || old == waitUpCut || old == waitConnCut {
			return old
		}
		if tr.wait.CompareAndSwap(old, waitDone) {
			return waitDone
		}
	}
}

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
	if creds := c.lim.creds; creds != nil {
		// On the try's own copy, every try (attempts, hedges, the resend
		// after a Refresh): each carries the credential current now.
		err := creds.Apply(tr.req)
		if err == nil {
			err = checkApplied(tr.req.Header)
		}
		if err != nil {
			err = credentialsErr("apply", err, c.req.Header, tr.req.Header)
			tr.finish(nil, err)
			return nil, retry.Permanent(err)
		}
	}
	if tr.w != nil {
		tr.w.add(tr)
	}
	if c.req.Body != nil && c.req.Body != http.NoBody {
		rc := c.req.Body
		if c.req.GetBody != nil {
			// Every try sends a copy of its own; RoundTrip closes the
			// caller's.
			b, err := c.req.GetBody()
			if err != nil {
				// The caller's body cannot be sent again: no retry or
				// hedge would do better.
				tr.finish(nil, err)
				return nil, retry.Permanent(err)
			}
			rc = b
		}
		tr.setBody(rc)
	}
	resp, err := c.st.ht.RoundTrip(tr.req)
	tr.stopAttemptTimer()
	if cut := tr.headers(); cut != waitDone {
		// The watch cut the wait for headers or the upload (an answer
		// that raced the cut is dropped: its context is cancelled).
		if resp != nil {
			_ = resp.Body.Close()
		}
		switch cut {
		case waitCut:
			err = tr.timeoutError("first_byte", c.lim.firstByte)
			tr.blame(true)
			c.failed(tr, err, true)
		case waitUpCut:
			err = tr.timeoutError("upload_stall", c.lim.stall)
			tr.blame(false)
		default:
			// No peer to blame: the wait was for the pool, or its
			// upstream went down (cutWaiting).
			err = tr.timeoutError("conn", c.st.watch.connWait)
			if context.Cause(tr.ctx) == errUpstreamDown {
				err = c.downError()
			}
		}
		tr.finish(nil, err)
		return nil, err
	}
	if err != nil {
		err = tr.mapErr(err)
		var de *dial.Error
		if errors.Is(err, syscall.ECONNRESET) && !errors.As(err, &de) {
			// A reset before the response headers is the peer's, as
			// the Dialer's is during establishment: a conn reset just
			// after its dial succeeded (incident 05) is seen here. A
			// dial's reset (net/http's own retry of a reused conn dials
			// anew) is the Dialer's to record, for the peer it dialed,
			// not the conn the try got before.
			tr.record(dial.EventReset)
		}
		c.failed(tr, err, isFirstByte(err))
		tr.finish(nil, err)
		return nil, err
	}
	// The upstream's state learns from the try's request (its scope is
	// the Authorization the try sent); the caller gets its own request,
	// not the try's copy.
	c.answered(resp)
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

// setBody gives the try's request the body rc, watched when the watch
// bounds uploads: net/http's own copies (GetBody, for a retry of its own
// on another conn) too.
func (tr *try) setBody(rc io.ReadCloser) {
	if tr.w == nil || tr.c.lim.stall <= 0 {
		tr.req.Body = rc
		return
	}
	tr.req.Body = tr.up.body(tr, rc)
	if tr.req.GetBody != nil {
		getBody := tr.c.req.GetBody
		tr.req.GetBody = func() (io.ReadCloser, error) {
			rc, err := getBody()
			if err != nil {
				return nil, err
			}
			return tr.up.body(tr, rc), nil
		}
	}
}

// body makes rc the copy of the request body being sent.
func (u *upload) body(tr *try, rc io.ReadCloser) io.ReadCloser {
	u.started.Store(false)
	return &reqBody{rc: rc, tr: tr, gen: u.gen.Add(1)}
}

// reqBody is one copy of a request body as net/http sends it: it tells the
// try's upload when net/http reads it, and when it was read to its end.
// Only the copy being sent counts: net/http may still read one it gave up.
type reqBody struct {
	rc  io.ReadCloser
	tr  *try
	gen uint32
}

func (b *reqBody) Read(p []byte) (int, error) {
	u := &b.tr.up
	if u.gen.Load() != b.gen {
		return b.rc.Read(p)
	}
	u.started.Store(true)
	u.reading.Add(1)
	n, err := b.rc.Read(p)
	u.reads.Add(1)
	u.reading.Add(-1)
	if err == io.EOF {
		u.end(b.gen)
	}
	return n, err
}

func (b *reqBody) Close() error {
	err := b.rc.Close()
	b.tr.up.end(b.gen)
	return err
}

// end notes that copy gen of the body was read to its end (or closed),
// if it is the one being sent.
func (u *upload) end(gen uint32) {
	for {
		e := u.ended.Load()
		if e >= gen || u.gen.Load() != gen || u.ended.CompareAndSwap(e, gen) {
			return
		}
	}
}

// gotConn notes the conn and its peer, and applies MaxConnLifetime: a conn
// past its lifetime carries the "close" connection option on this request
// (the header map is the try's own clone), so that HTTP/1.1 closes it
// after this response and HTTP/2 takes no new stream on it and closes it
// once its streams are done; no request fails.
func (tr *try) gotConn(info httptrace.GotConnInfo) {
	var peer netip.AddrPort
	if a, ok := info.Conn.RemoteAddr().(*net.TCPAddr); ok {
		peer = a.AddrPort()
		peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	}
	b := bornOf(info.Conn)
	if b != nil && b.proto.Load() == protoUnknown {
		p := uint32(protoH1)
		if isH2(info.Conn) {
			p = protoH2
		}
		b.proto.Store(p)
	}
	tr.conn.Store(b)
	tr.unqueue()
	tr.wait.CompareAndSwap(waitAcquiring, waitHeld)
	if b != nil && tr.ownHeader && tr.req.Header != nil && b.expired(time.Now()) {
		addConnectionClose(tr.req.Header, isH2(info.Conn))
	}
	tr.mu.Lock()
	tr.peer = peer
	if b != nil {
		tr.readAt = b.read.Load()
	}
	tr.mu.Unlock()
	tr.c.st.tel.gotConn(tr.span, peer, info.Reused)
}

// isH2 reports whether c speaks HTTP/2 (ALPN).
func isH2(c net.Conn) bool {
	tc, ok := c.(*tls.Conn)
	return ok && tc.ConnectionState().NegotiatedProtocol == "h2"
}

// addConnectionClose adds the "close" connection option to h (RFC 9110
// §7.6.1), keeping the options already there: an upgrade request's
// "Upgrade" stays. They are joined into one field value, which net/http
// reads (only the first value counts for it). On HTTP/2 the Connection
// field is never sent, and net/http refuses a request whose field is other
// than "close" or "keep-alive": there "keep-alive" (meaningless on HTTP/2)
// becomes "close", and any other option is left for net/http to refuse as
// it would without lifeline.
func addConnectionClose(h http.Header, h2 bool) {
	vs := h["Connection"]
	var opts []string
	for _, v := range vs {
		for o := range strings.SplitSeq(v, ",") {
			o = strings.TrimSpace(o)
			switch {
			case o == "":
			case strings.EqualFold(o, "close"):
				return
			default:
				opts = append(opts, o)
			}
		}
	}
	if h2 {
		if len(opts) == 0 || len(opts) == 1 && strings.EqualFold(opts[0], "keep-alive") {
			h["Connection"] = []string{"close"}
		}
		return
	}
	h["Connection"] = []string{strings.Join(append(opts, "close"), ", ")}
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
	return tr.c.st.dialer.Scoreboard().PeerLabel(peer)
}

// blame holds a stall the watch cut against the try's peer in the
// Dialer's Health, as the Dialer's own first-byte watch does: a wait for
// headers (firstByte) as a first-byte stall, an upload or a body read
// that made no progress as a failure of the peer's.
func (tr *try) blame(firstByte bool) {
	ev := dial.EventFailure
	if firstByte {
		ev = dial.EventFirstByteStall
	}
	tr.record(ev)
}

// record records ev for the try's peer in the Dialer's Health, when it
// has one.
func (tr *try) record(ev dial.Event) {
	h := tr.c.st.dialer.Scoreboard()
	if h == nil {
		return
	}
	tr.mu.Lock()
	peer := tr.peer
	tr.mu.Unlock()
	h.Record(peer, ev, 0) // nothing when the peer is unknown
}

// mapErr turns the end of a try by one of the Transport's limits into a
// *TimeoutError, and a header block over the limit into a
// *HeaderLimitError; other errors are returned as they are.
// (FirstByteTimeout and the upload's stall are run's: wait tells.)
func (tr *try) mapErr(err error) error {
	st := tr.c.st
	var phase string
	var limit time.Duration
	switch {
	case tr.ctx.Err() != nil && (errors.Is(err, context.Cause(tr.ctx)) || errors.Is(err, context.Canceled)):
		// Ended by a hedge or AttemptTimeout (through the try's cancel),
		// or by the caller. (net/http returns the cancel's cause, HTTP/2
		// context.Canceled; any other error is the try's own, which a
		// cancel only followed.)
		switch context.Cause(tr.ctx) {
		case errHedgeLost:
			return errHedgeLost
		case errAttempt:
			phase, limit = "attempt", tr.c.lim.attemptTO
		case errFirstByte:
			// The watch's cuts are mapped where the wait for headers
			// ends; any other path that sees one (a Read, net/http's
			// own retry of the request) says the same, never the bare
			// cause (seen under load: error.type *errors.errorString).
			phase, limit = "first_byte", tr.c.lim.firstByte
		case errUploadStall:
			phase, limit = "upload_stall", tr.c.lim.stall
		case errConnWait:
			phase, limit = "conn", st.watch.connWait
		default:
			return err
		}
	case tr.ctx.Err() == nil && isTryCause(err):
		// One of the causes with which lifeline ends a try, though this
		// try was not ended: net/http reports a request on a conn that
		// another request's cancel closed with that request's cause (an
		// answer without a body puts the conn back to idle before its
		// request's cancel lands; persistConn.canceled). Seen under load
		// as a first-byte "timeout" of a request that never waited.
		return errClosedUnder
	case isHeaderLimit(err):
		return &HeaderLimitError{Method: methodOf(tr.c.req), Host: tr.c.req.URL.Host,
			Limit: st.headerLimit(), err: err, peer: tr.peerLabel()}
	case tr.wrote.Load() && tr.body.resp == nil && tr.closedSilent():
		// Waiting for its headers (a body read's try had them), its
		// HTTP/2 conn was closed under it because the peer sent
		// nothing, not even a PING's answer, for http2AbandonWait after
		// another try gave up on it (abandoned): no headers came, and
		// none would — the try's own FirstByteTimeout would have said so
		// later, not a bare "use of closed network connection".
		phase, limit = "first_byte", http2AbandonWait
	default:
		return err
	}
	return tr.timeoutError(phase, limit)
}

func (tr *try) timeoutError(phase string, limit time.Duration) *TimeoutError {
	return &TimeoutError{Phase: phase, Method: methodOf(tr.c.req), Host: tr.c.req.URL.Host,
		Limit: limit, peer: tr.peerLabel()}
}

// finish ends the try: its context, its span and its duration, once, and
// takes it out of the watch.
func (tr *try) finish(resp *http.Response, err error) {
	if !tr.finished.CompareAndSwap(false, true) {
		return
	}
	tr.stopAttemptTimer()
	err = tr.outcome(err)
	cause := err
	if cause == nil {
		cause = errBodyClosed
	}
	tr.cancel(cause)
	tr.c.st.tel.ended(tr.ctx, tr.span, tr.c.req, resp, err, tr.elapsed())
	if tr.w != nil {
		tr.w.remove(tr)
	}
	tr.unqueue()
	if resp == nil {
		if b := tr.conn.Load(); b != nil {
			tr.mu.Lock()
			at := tr.readAt
			tr.mu.Unlock()
			b.abandoned(at)
		}
	}
}

// outcome is the error a try ended with for its span and metrics: a try a
// hedge overtook lost, even when its headers had come (its answer is
// discarded).
func (tr *try) outcome(err error) error {
	if err == nil && context.Cause(tr.ctx) == errHedgeLost {
		return errHedgeLost
	}
	return err
}

// lose ends a try that a hedge overtook.
func (tr *try) lose() { tr.cancel(errHedgeLost) }

// finishSpan ends the span and records the try but leaves its context
// alive (a 101 response's conn lives on it).
func (tr *try) finishSpan(resp *http.Response, err error) {
	if !tr.finished.CompareAndSwap(false, true) {
		return
	}
	tr.c.st.tel.ended(tr.ctx, tr.span, tr.c.req, resp, tr.outcome(err), tr.elapsed())
	if tr.w != nil {
		tr.w.remove(tr)
	}
}

func methodOf(req *http.Request) string {
	if req.Method == "" {
		return http.MethodGet
	}
	return req.Method
}
