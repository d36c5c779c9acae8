package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// op is what a lifeline_op handle names: one request or dial.
//
// Its handle exists before any I/O starts (LiveKit's lesson: an operation
// that cannot be named cannot be cancelled). A goroutine does the work,
// stores the result (finished), runs the host's callback, and then closes
// completed: a host that waited on an op knows its callback has returned.
type op struct {
	id     uint64
	c      *client
	isDial bool
	ctx    context.Context
	cancel context.CancelCauseFunc
	// stopTimer releases the deadline's timer (nil: no deadline).
	stopTimer context.CancelFunc
	// cb calls the host's callback; nil when it gave none.
	cb func(id uint64, status int32)
	// stream is a streamed request's body (stream.go); nil otherwise.
	stream *stream

	finished  chan struct{} // closed when the result is stored
	completed chan struct{} // closed after the callback returned
	// cbThread is the OS thread running the callback (0: none), so that
	// a wait from inside the callback does not wait for itself.
	cbThread atomic.Int64

	mu    sync.Mutex // guards the result
	err   *Error     // nil: success
	resp  *response
	fd    int // -1: none or taken
	taken bool
	freed bool
	// stored: finish stored the result. free decides by it, under mu,
	// whether the result is its to drop: the finished channel closes only
	// later, and a free in between would leave a descriptor to nobody.
	stored bool
}

// response is a complete HTTP response on its way to C memory.
type response struct {
	status       int
	major, minor int
	headers      [][2]string
	body         []byte
}

// request is a host's request, copied out of C memory and checked.
type request struct {
	method   string
	url      string
	headers  [][2]string
	body     []byte
	deadline time.Duration // 0: the client's; < 0: none
	opts     callOptions   // the call's own (lifeline_request_start_opts)
}

// start registers an operation and runs work on its own goroutine. The
// deadline (≤ 0: none) bounds the whole operation.
//
// With register, the op gets a handle; blocking calls pass false (nobody
// else can name their op, and a handle would only cost a table entry).
func (c *client) start(isDial bool, deadline time.Duration, cb func(uint64, int32), register bool,
	work func(ctx context.Context, b *built, o *op) *Error) (*op, *Error) {
	return c.startOp(isDial, deadline, cb, register, nil, work)
}

// startOp is start for an op with a stream (nil: none).
func (c *client) startOp(isDial bool, deadline time.Duration, cb func(uint64, int32), register bool, s *stream,
	work func(ctx context.Context, b *built, o *op) *Error) (*op, *Error) {
	c.mu.Lock()
	if c.closed {
		c.mu.Unlock()
		return nil, &Error{Status: statusClosed, Phase: "canceled", Type: "closed", Msg: "lifeline: client closed"}
	}
	b, e := c.freeze()
	if e != nil {
		c.mu.Unlock()
		return nil, e
	}
	o := &op{c: c, isDial: isDial, cb: cb, fd: -1, stream: s,
		finished: make(chan struct{}), completed: make(chan struct{})}
	o.ctx, o.cancel = context.WithCancelCause(c.ctx)
	if !isDial && deadline == 0 {
		deadline = b.reqTimeout
	}
	if deadline > 0 {
		o.ctx, o.stopTimer = context.WithTimeoutCause(o.ctx, deadline, errDeadline)
	}
	c.ops[o] = struct{}{}
	c.wg.Add(1)
	c.mu.Unlock()
	if register {
		o.id = handles.add(o)
	}
	if isDial {
		c.stats.dialsStarted.Add(1)
	} else {
		c.stats.requestsStarted.Add(1)
	}
	c.stats.inFlight.Add(1)
	go o.run(b, work)
	return o, nil
}

func (o *op) run(b *built, work func(ctx context.Context, b *built, o *op) *Error) {
	c := o.c
	defer c.wg.Done()
	var e *Error
	func() {
		defer func() {
			if r := recover(); r != nil {
				e = poison(r)
			}
		}()
		hookPanic("op")
		e = work(o.ctx, b, o)
		if e == nil {
			// Ended by its host before the result was stored: cancelled
			// (or closed), whatever the work made of it.
			e = endedByHost(o.ctx, nil)
		}
	}()
	o.finish(e)
	o.callback()
	close(o.completed)
}

// finish stores the result and wakes pollers. The result of a work
// function is final: a cancel that comes after it does not change it.
func (o *op) finish(e *Error) {
	c := o.c
	o.mu.Lock()
	o.err = e
	o.stored = true
	if e != nil || o.freed {
		// Failed, or freed while running: nobody will take what it made.
		o.resp = nil
		o.closeFDLocked()
	}
	o.mu.Unlock()
	o.cancel(errOpDone)
	if o.stopTimer != nil {
		o.stopTimer()
	}
	c.mu.Lock()
	delete(c.ops, o)
	c.mu.Unlock()
	c.stats.inFlight.Add(-1)
	switch {
	case e == nil && o.isDial:
		c.stats.dialsOK.Add(1)
	case e == nil:
		c.stats.requestsOK.Add(1)
	case o.isDial:
		c.stats.dialsFailed.Add(1)
		c.stats.failed(e)
	default:
		c.stats.requestsFailed.Add(1)
		c.stats.failed(e)
	}
	close(o.finished)
}

// callback runs the host's callback exactly once, on this goroutine's
// thread (locked, so that the thread id identifies the callback).
func (o *op) callback() {
	if o.cb == nil {
		return
	}
	status := statusOK
	if o.err != nil {
		status = o.err.Status
	}
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	o.cbThread.Store(threadID())
	defer o.cbThread.Store(0)
	defer func() {
		// The callback is C and cannot panic into Go; the Go side of the
		// call could only fail by a bug of ours.
		if r := recover(); r != nil {
			poison(r)
		}
	}()
	o.cb(o.id, status)
}

// wait waits until the op completed (callback returned), at most d
// (< 0: without limit). Inside the op's own callback it only needs the op
// finished, which it is.
func (o *op) wait(d time.Duration) bool {
	if t := o.cbThread.Load(); t != 0 && t == threadID() {
		return true
	}
	select {
	case <-o.completed:
		return true
	default:
	}
	if d == 0 {
		return false
	}
	if d < 0 {
		<-o.completed
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-o.completed:
		return true
	case <-t.C:
		return false
	}
}

func (o *op) done() bool {
	select {
	case <-o.finished:
		return true
	default:
		return false
	}
}

// takeResponse hands the response over once.
func (o *op) takeResponse() (*response, *Error) {
	if !o.done() {
		return nil, &Error{Status: statusPending, Msg: "lifeline: operation still running"}
	}
	if o.isDial {
		return nil, stateError("operation %d is a dial: take its descriptor with lifeline_op_fd", o.id)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.freed {
		// Freed by another thread between the handle's lookup and here:
		// the result is gone, as the handle is.
		return nil, handleError(o.id, kindOp, kindNone)
	}
	if o.err != nil {
		return nil, o.err
	}
	if o.taken {
		return nil, stateError("the response of operation %d was already taken", o.id)
	}
	o.taken = true
	r := o.resp
	o.resp = nil
	return r, nil
}

// takeFD hands the descriptor over once.
func (o *op) takeFD() (int, *Error) {
	if !o.done() {
		return -1, &Error{Status: statusPending, Msg: "lifeline: operation still running"}
	}
	if !o.isDial {
		return -1, stateError("operation %d is a request: take its response with lifeline_op_response", o.id)
	}
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.freed {
		return -1, handleError(o.id, kindOp, kindNone)
	}
	if o.err != nil {
		return -1, o.err
	}
	if o.taken {
		return -1, stateError("the descriptor of operation %d was already taken", o.id)
	}
	o.taken = true
	fd := o.fd
	o.fd = -1
	return fd, nil
}

// free releases the handle; a running op is cancelled, a result nobody
// took is dropped (a descriptor closed).
func (o *op) free() {
	o.mu.Lock()
	o.freed = true
	o.resp = nil
	if o.stored {
		o.closeFDLocked()
	}
	o.mu.Unlock()
	o.cancel(errOpFreed)
	if o.stream != nil {
		o.stream.abort(errOpFreed)
	}
}

// closeFDLocked closes a descriptor nobody took. Callers hold o.mu.
func (o *op) closeFDLocked() {
	if o.fd >= 0 {
		closeFD(o.fd)
		o.fd = -1
	}
}

// preGrowMax is the most doRequest allocates for a body before its bytes
// arrive.
const preGrowMax = 4 << 20

// doRequest performs an HTTP request and reads the whole body.
func doRequest(ctx context.Context, b *built, o *op, r *request) *Error {
	var body io.Reader
	if len(r.body) > 0 {
		body = bytes.NewReader(r.body)
	}
	req, err := http.NewRequestWithContext(r.opts.apply(ctx, b), r.method, r.url, body)
	if err != nil {
		return argError("request: %v", err)
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
		return classify(ctx, err)
	}
	defer resp.Body.Close()
	out := &response{status: resp.StatusCode, major: resp.ProtoMajor, minor: resp.ProtoMinor}
	for name, vals := range resp.Header {
		for _, v := range vals {
			out.headers = append(out.headers, [2]string{name, v})
		}
	}
	sortHeaders(out.headers)
	limit := b.maxBody
	var buf bytes.Buffer
	if n := resp.ContentLength; n > 0 && (limit < 0 || n <= limit) {
		// The server's Content-Length is a claim, not bytes: room is made
		// ahead for at most preGrowMax, the rest as bytes arrive. Taken at
		// its word, a header alone could make the library allocate a
		// terabyte (a fatal out-of-memory in the host) or more than can
		// be allocated (a panic that poisons the library).
		buf.Grow(int(min(n, preGrowMax)))
	}
	var src io.Reader = resp.Body
	if limit >= 0 {
		src = io.LimitReader(resp.Body, limit+1)
	}
	if _, err := buf.ReadFrom(src); err != nil {
		// The body's phase is "stall" (lifeline.h), also when the total
		// deadline ends it.
		return classifyIn(ctx, err, "stall")
	}
	if limit >= 0 && int64(buf.Len()) > limit {
		return &Error{Status: statusTooLarge, Phase: "response", Type: "too_large",
			Msg: "lifeline: response body exceeds max_response_bytes (" + itoa(limit) + ")"}
	}
	out.body = buf.Bytes()
	o.c.stats.responseBytes.Add(int64(len(out.body)))
	o.mu.Lock()
	o.resp = out
	o.mu.Unlock()
	return nil
}
