package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/lifeline-go/lifeline/transport"
)

// Streamed bodies (lifeline_request_start_stream, lifeline_body_read,
// lifeline_body_write, lifeline_body_close_write).
//
// A streamed request is an op that finishes when the response headers
// arrive; its body lives on in a stream, read by a pump goroutine into a
// bounded buffer that lifeline_body_read takes from with its own timeout.
// The pump calls the body's Read only while the buffer has room, so a host
// that reads slowly is not a stall (the Transport counts only time spent
// inside Read), and the memory a stream holds is bounded by streamBuffer
// plus one chunk. The request runs under the stream's own context, not the
// op's: the op's context ends when its result is stored, the body must
// outlive it. The op's cancel, free, deadline and the client's close reach
// the stream's context.
//
// An upload in pieces is an io.Reader (upload) that the Transport reads on
// its own goroutine, fed by lifeline_body_write from the host's threads
// through a buffer of uploadBuffer bytes.

const (
	// streamChunk is the most one Read of the response body asks for.
	streamChunk = 32 << 10
	// streamBuffer is how many body bytes the pump buffers ahead of the
	// host before it stops reading from the peer.
	streamBuffer = 64 << 10
	// uploadBuffer is how many bytes lifeline_body_write buffers ahead of
	// the Transport.
	uploadBuffer = 64 << 10
)

// errStreamDone ends a stream's context once its body was read to the end
// or failed (the result is stored first).
var errStreamDone = errors.New("lifeline: stream done")

// stream is the body side of a streamed request.
type stream struct {
	c      *client
	up     *upload // nil: the request body was given whole
	ctx    context.Context
	cancel context.CancelCauseFunc
	// release stops the deadline's timer (nil: none); set with ctx by
	// doStream, called by whoever ends the stream's goroutines.
	release context.CancelFunc

	mu      sync.Mutex // guards the fields below
	buf     []byte     // body bytes not yet taken: buf[off:]
	off     int
	eof     bool          // the body was read to its end
	end     *Error        // the body failed (or the host ended it); final
	changed chan struct{} // closed and replaced whenever the above change
	headers bool          // the response headers arrived (or the request failed)
	// The readiness descriptor (lifeline_body_fd): a pipe whose read end
	// holds one byte while a read would return at once. -1: none made.
	rfd, wfd int
	fdReady  bool // the pipe holds its byte
	fdClosed bool // closed at the op's free: never made or touched again
}

func newStream(c *client, withUpload bool) *stream {
	s := &stream{c: c, changed: make(chan struct{}), rfd: -1, wfd: -1}
	// The stream's context ends with the client (close) and with the
	// host's cancel or free; the deadline is added by doStream, which
	// knows the client's default.
	s.ctx, s.cancel = context.WithCancelCause(c.ctx)
	if withUpload {
		s.up = &upload{changed: make(chan struct{}), settled: make(chan struct{}), ctx: s.ctx}
	}
	return s
}

// broadcastLocked wakes everyone waiting on the stream. Callers hold s.mu.
func (s *stream) broadcastLocked() {
	close(s.changed)
	s.changed = make(chan struct{})
	s.signalLocked()
}

// readyLocked reports whether a read would return at once: the headers are
// there and so are bytes, the end, or a failure. Callers hold s.mu.
func (s *stream) readyLocked() bool {
	return s.headers && (len(s.buf)-s.off > 0 || s.eof || s.end != nil)
}

// signalLocked makes the readiness descriptor say readyLocked. Callers
// hold s.mu (which orders it with the descriptor's close).
func (s *stream) signalLocked() {
	if s.rfd < 0 || s.fdClosed {
		return
	}
	switch ready := s.readyLocked(); {
	case ready && !s.fdReady:
		if n, _ := unix.Write(s.wfd, []byte{1}); n == 1 {
			s.fdReady = true
		}
	case !ready && s.fdReady:
		var b [1]byte
		if n, _ := unix.Read(s.rfd, b[:]); n == 1 {
			s.fdReady = false
		}
	}
}

// readyFD returns the readiness descriptor, made at the first call.
func (s *stream) readyFD() (int, *Error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.fdClosed {
		return -1, stateError("the stream's descriptor was closed with its operation")
	}
	if s.rfd < 0 {
		var p [2]int
		if err := unix.Pipe2(p[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
			return -1, &Error{Status: statusNetwork, Type: "fd", Msg: "lifeline: making the stream's descriptor: " + err.Error()}
		}
		s.rfd, s.wfd = p[0], p[1]
		s.signalLocked()
	}
	return s.rfd, nil
}

// closeFD closes the readiness descriptor (the op's free).
func (s *stream) closeFD() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.rfd >= 0 && !s.fdClosed {
		unix.Close(s.rfd)
		unix.Close(s.wfd)
	}
	s.fdClosed = true
}

// abort ends the stream for its host (cancel, free): what was buffered is
// dropped and every read from now on fails with the host's error. A body
// that had already arrived whole is left as it is.
func (s *stream) abort(cause error) {
	s.mu.Lock()
	if !s.eof && s.end == nil {
		s.end = endedByHostCause(cause)
		s.buf, s.off = nil, 0
		s.broadcastLocked()
	}
	s.mu.Unlock()
	if cause == errOpFreed {
		s.closeFD()
	}
	if s.up != nil {
		// Before the cancel, which makes net/http close the body: a
		// writer must see why.
		s.up.abort(endedByHostCause(cause))
	}
	s.cancel(cause)
}

// endedByHostCause is the error a stream's reads and writes return after
// the host ended it with cause.
func endedByHostCause(cause error) *Error {
	ctx, cancel := context.WithCancelCause(context.Background())
	cancel(cause)
	if e := endedByHost(ctx, nil); e != nil {
		return e
	}
	return &Error{Status: statusCanceled, Phase: "canceled", Type: "canceled", Msg: "lifeline: canceled"}
}

// doStream is the work of a streamed request: it sends the request,
// stores the status and headers as the op's response once they arrive
// and hands the body to the pump.
func doStream(opCtx context.Context, b *built, o *op, r *request, co callOptions, s *stream) *Error {
	// The op's end before its result reaches the stream (cancel, free,
	// the deadline); its end after (errOpDone) does not.
	stop := context.AfterFunc(opCtx, func() {
		if cause := context.Cause(opCtx); cause != errOpDone {
			s.cancel(cause)
		}
	})
	defer stop()
	// Last, after a failure was stored: writers wait for it.
	defer s.settle()
	deadline := r.deadline
	if deadline == 0 {
		deadline = b.reqTimeout
	}
	ctx := s.ctx
	if deadline > 0 {
		// The total deadline bounds the body too; a host streaming for
		// longer passes deadline_ms < 0. Nothing reads s.ctx before the
		// pump starts but this goroutine; the upload reads its own copy.
		ctx, s.release = context.WithTimeoutCause(ctx, deadline, errDeadline)
		s.ctx = ctx
		if s.up != nil {
			s.up.setCtx(ctx)
		}
	}
	var body io.Reader
	switch {
	case s.up != nil && len(r.body) > 0:
		body = io.MultiReader(bytes.NewReader(r.body), s.up)
	case s.up != nil:
		body = s.up
	case len(r.body) > 0:
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(co.apply(ctx, b), r.method, r.url, body)
	if err != nil {
		e := argError("request: %v", err)
		s.fail(e)
		s.done(errStreamDone)
		return e
	}
	if s.up != nil {
		// Close it when the Transport does (it closes the request's body
		// when it is done with it, also on failure).
		req.Body = uploadCloser{Reader: body, up: s.up}
		req.ContentLength = -1
	}
	for _, h := range r.headers {
		if http.CanonicalHeaderKey(h[0]) == "Host" {
			req.Host = h[1]
			continue
		}
		req.Header.Add(h[0], h[1])
	}
	if req.Header.Get("User-Agent") == "" {
		req.Header.Set("User-Agent", b.userAgent)
	}
	resp, err := b.tr.RoundTrip(req)
	if err != nil {
		e := classify(ctx, err)
		s.fail(e)
		s.done(errStreamDone)
		return e
	}
	out := &response{status: resp.StatusCode, major: resp.ProtoMajor, minor: resp.ProtoMinor}
	for name, vals := range resp.Header {
		for _, v := range vals {
			out.headers = append(out.headers, [2]string{name, v})
		}
	}
	sortHeaders(out.headers)
	o.mu.Lock()
	freed := o.freed
	if !freed {
		o.resp = out
	}
	o.mu.Unlock()
	if freed {
		resp.Body.Close()
		e := endedByHostCause(errOpFreed)
		s.fail(e)
		s.done(errOpFreed)
		return e
	}
	s.mu.Lock()
	s.headers = true
	s.broadcastLocked()
	s.mu.Unlock()
	s.c.wg.Add(1)
	go s.pump(resp.Body)
	return nil
}

// settle tells a writer waiting for the outcome of the request that
// RoundTrip returned (its failure, if any, is stored).
func (s *stream) settle() {
	if s.up != nil {
		close(s.up.settled)
	}
}

// done ends the stream's context and its deadline's timer.
func (s *stream) done(cause error) {
	s.cancel(cause)
	if s.release != nil {
		s.release()
	}
}

// callOptions are a streamed request's own limits (lifeline_call_options);
// zero fields keep the client's.
type callOptions struct {
	firstByte, stall time.Duration // < 0: off
	maxAttempts      int
	waitForReady     bool // LIFELINE_CALL_WAIT_FOR_READY
}

// apply returns ctx carrying the options for the client's Transport.
func (co callOptions) apply(ctx context.Context, b *built) context.Context {
	if co == (callOptions{}) {
		return ctx
	}
	o := transport.CallOptions{FirstByteTimeout: co.firstByte, StallTimeout: co.stall, WaitForReady: co.waitForReady}
	if co.maxAttempts > 0 {
		p := *b.tr.Retry // the client's policy and budget, fewer or more attempts
		p.MaxAttempts = co.maxAttempts
		o.Retry = &p
	}
	return transport.WithCallOptions(ctx, o)
}

// uploadCloser is a streamed request's body as the Transport sees it.
type uploadCloser struct {
	io.Reader
	up *upload
}

func (u uploadCloser) Close() error {
	u.up.readerDone()
	return nil
}

// fail stores a final error unless the stream already ended.
func (s *stream) fail(e *Error) {
	s.mu.Lock()
	s.headers = true // a read returns at once: the failure
	if !s.eof && s.end == nil {
		s.end = e
	}
	s.broadcastLocked()
	s.mu.Unlock()
	if s.up != nil {
		s.up.abort(e)
	}
}

// pump reads the body into the buffer while it has room, until the end of
// the body, a failure, or the stream's context ends.
func (s *stream) pump(body io.ReadCloser) {
	defer s.c.wg.Done()
	defer s.done(errStreamDone)
	defer body.Close()
	chunk := make([]byte, streamChunk)
	for {
		s.mu.Lock()
		for len(s.buf)-s.off >= streamBuffer && s.end == nil {
			ch := s.changed
			s.mu.Unlock()
			select {
			case <-ch:
			case <-s.ctx.Done():
				s.fail(classifyIn(s.ctx, context.Cause(s.ctx), "stall"))
				return
			}
			s.mu.Lock()
		}
		ended := s.end != nil
		s.mu.Unlock()
		if ended {
			return
		}
		n, err := body.Read(chunk)
		s.mu.Lock()
		if n > 0 && s.end == nil {
			if s.off > 0 {
				s.buf = append(s.buf[:0], s.buf[s.off:]...)
				s.off = 0
			}
			s.buf = append(s.buf, chunk[:n]...)
			s.c.stats.responseBytes.Add(int64(n))
			s.broadcastLocked()
		}
		s.mu.Unlock()
		switch {
		case err == io.EOF:
			s.mu.Lock()
			if s.end == nil {
				s.eof = true
				s.broadcastLocked()
			}
			s.mu.Unlock()
			return
		case err != nil:
			// The body's phase is "stall", also when the total deadline
			// ends it (as for a buffered body).
			s.fail(classifyIn(s.ctx, err, "stall"))
			return
		}
	}
}

// errReadTimeout is what a read that got no byte within its own timeout
// returns: not a failure of the body, which stays readable.
func errReadTimeout(d time.Duration) *Error {
	return &Error{Status: statusTimeout, Phase: "read", Type: "read_timeout", Timeout: true,
		Msg: "lifeline: no byte of the body within timeout_ms (" + itoa(d.Milliseconds()) + " ms); the body stays readable"}
}

// read copies buffered body bytes into p, waiting for some at most d
// (< 0: until the body ends or fails). It returns 0, nil at the end of the
// body, every time after it too.
func (s *stream) read(p []byte, d time.Duration, t *timer) (int, *Error) {
	for {
		s.mu.Lock()
		if n := copy(p, s.buf[s.off:]); n > 0 {
			s.off += n
			if s.off == len(s.buf) {
				s.buf, s.off = s.buf[:0], 0
			}
			s.broadcastLocked() // room for the pump
			s.mu.Unlock()
			return n, nil
		}
		if s.end != nil {
			e := s.end
			s.mu.Unlock()
			return 0, e
		}
		if s.eof {
			s.mu.Unlock()
			return 0, nil
		}
		ch := s.changed
		s.mu.Unlock()
		if !t.wait(ch) {
			return 0, errReadTimeout(d)
		}
	}
}

// headersIn reports whether the response headers (or the request's
// failure) reached the stream: a read returns at once from then on.
func (s *stream) headersIn() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers
}

// available reports how many body bytes are buffered, and whether the body
// ended (read to its end, failed or ended by the host) after them.
func (s *stream) available() (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.buf) - s.off, s.eof || s.end != nil
}

// timer is one call's wait budget, shared by the waits it makes.
type timer struct {
	t *time.Timer // nil: no limit (or none left, with zero)
	d time.Duration
}

func newTimer(d time.Duration) *timer {
	if d <= 0 {
		return &timer{d: d}
	}
	return &timer{t: time.NewTimer(d), d: d}
}

func (t *timer) stop() {
	if t.t != nil {
		t.t.Stop()
	}
}

// wait waits for ch to close; false when the budget ran out first.
func (t *timer) wait(ch <-chan struct{}) bool {
	switch {
	case t.t != nil:
		select {
		case <-ch:
			return true
		case <-t.t.C:
			return false
		}
	case t.d < 0:
		<-ch
		return true
	}
	select {
	case <-ch:
		return true
	default:
		return false
	}
}

// upload is a request body the host writes in pieces.
type upload struct {
	mu      sync.Mutex
	ctx     context.Context // the stream's; ends a waiting Read
	buf     []byte          // written, not yet read by the Transport
	closed  bool            // the host closed it: EOF after buf
	done    bool            // the Transport closed it: writes are refused
	end     *Error          // the request failed or was ended: writes get it
	changed chan struct{}
	// settled is closed when RoundTrip returned: a body the Transport
	// closed was closed for a failure (end, set by then) or for a
	// response.
	settled chan struct{}
}

func (u *upload) broadcastLocked() {
	close(u.changed)
	u.changed = make(chan struct{})
}

func (u *upload) setCtx(ctx context.Context) {
	u.mu.Lock()
	u.ctx = ctx
	u.mu.Unlock()
}

// Read is the Transport's side: it waits for bytes, the host's close, or
// the end of the stream's context.
func (u *upload) Read(p []byte) (int, error) {
	for {
		u.mu.Lock()
		if u.end != nil {
			e := u.end
			u.mu.Unlock()
			return 0, e
		}
		if n := copy(p, u.buf); n > 0 {
			u.buf = u.buf[:copy(u.buf, u.buf[n:])]
			u.broadcastLocked()
			u.mu.Unlock()
			return n, nil
		}
		if u.closed {
			u.mu.Unlock()
			return 0, io.EOF
		}
		ch, ctx := u.changed, u.ctx
		u.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return 0, context.Cause(ctx)
		}
	}
}

// readerDone is the Transport's close: nobody reads what is written now.
func (u *upload) readerDone() {
	u.mu.Lock()
	u.done = true
	u.broadcastLocked()
	u.mu.Unlock()
}

func (u *upload) abort(e *Error) {
	u.mu.Lock()
	if u.end == nil {
		u.end = e
		u.broadcastLocked()
	}
	u.mu.Unlock()
}

// write copies data into the buffer as room frees, until all of it is
// taken or the timer runs out; it returns how much was taken either way.
func (u *upload) write(data []byte, t *timer) (int, *Error) {
	taken := 0
	for {
		u.mu.Lock()
		switch {
		case u.end != nil:
			e := u.end
			u.mu.Unlock()
			return taken, e
		case u.closed:
			u.mu.Unlock()
			return taken, stateError("the request body was already closed with lifeline_body_close_write")
		case u.done:
			u.mu.Unlock()
			// Closed by the Transport: for a failure, which is the
			// answer, or for a response that came first.
			if !t.wait(u.settled) {
				return taken, u.writeTimeout(taken, len(data), t)
			}
			u.mu.Lock()
			e := u.end
			u.mu.Unlock()
			if e != nil {
				return taken, e
			}
			return taken, stateError("the request body is no longer read (its response arrived first)")
		}
		if room := uploadBuffer - len(u.buf); room > 0 && taken < len(data) {
			n := min(room, len(data)-taken)
			u.buf = append(u.buf, data[taken:taken+n]...)
			taken += n
			u.broadcastLocked()
		}
		if taken == len(data) {
			u.mu.Unlock()
			return taken, nil
		}
		ch := u.changed
		u.mu.Unlock()
		if !t.wait(ch) {
			return taken, u.writeTimeout(taken, len(data), t)
		}
	}
}

func (u *upload) writeTimeout(taken, want int, t *timer) *Error {
	return &Error{Status: statusTimeout, Phase: "write", Type: "write_timeout", Timeout: true,
		Msg: "lifeline: the request body took " + itoa(int64(taken)) + " of " + itoa(int64(want)) +
			" bytes within timeout_ms (" + itoa(t.d.Milliseconds()) + " ms); the body stays writable"}
}

// closeWrite ends the upload: the Transport reads EOF after what was
// written.
func (u *upload) closeWrite() *Error {
	u.mu.Lock()
	defer u.mu.Unlock()
	if u.end != nil {
		return u.end
	}
	if u.closed {
		return stateError("the request body was already closed")
	}
	u.closed = true
	u.broadcastLocked()
	return nil
}

// streamOf is the stream of op o, or the error of a call that needs one.
func (o *op) streamOf() (*stream, *Error) {
	if o.stream == nil {
		return nil, stateError("operation %d is not a streamed request (lifeline_request_start_stream)", o.id)
	}
	return o.stream, nil
}

// cancelByHost is lifeline_op_cancel: the op if it runs, and its stream
// (a blocked read or write ends with LIFELINE_E_CANCELED).
func (o *op) cancelByHost() {
	o.cancel(errCanceledByHost)
	if o.stream != nil {
		o.stream.abort(errCanceledByHost)
	}
}

// waitHeaders waits for a streamed op's response headers within t. It
// returns nil once they arrived, the op's error if it failed, and a read
// timeout when t ran out.
func (o *op) waitHeaders(t *timer) *Error {
	// The stream knows first: its headers (or its failure) are there, and
	// its readiness descriptor says so, a moment before the op has stored
	// its result and finished. A read then returns at once, as the
	// descriptor promised (a read with timeout 0 right after a poll once
	// found the op not yet finished and timed out).
	if o.stream != nil && o.stream.headersIn() {
		return nil
	}
	if !t.wait(o.finished) {
		return errReadTimeout(t.d)
	}
	// Freed meanwhile by another thread: the request's own end says so
	// (canceled), or the stream's abort does at the read.
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.err
}
