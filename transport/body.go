package transport

import (
	"io"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// body is a response body that ends its try when it is read to EOF or
// closed, and fails a Read that gets no byte for StallTimeout. Only time
// spent inside Read counts: a consumer that pauses between reads is not a
// stall.
type body struct {
	rc   io.ReadCloser
	tr   *try
	resp *http.Response

	mu      sync.Mutex // guards done: Close may run concurrently with Read
	stall   *time.Timer
	stalled atomic.Bool // the stall timer fired and closed the body under a Read
	done    bool
}

// newBody wraps resp's body; it lives in the try (one allocation less per
// request, BenchmarkKeepAliveGET).
func newBody(tr *try, resp *http.Response) *body {
	b := &tr.body
	*b = body{rc: resp.Body, tr: tr, resp: resp}
	if d := tr.c.st.stall; d > 0 {
		// Closing net/http's body from another goroutine ends a Read
		// blocked in it, on HTTP/1.1 (the conn is closed) and HTTP/2 (the
		// stream is reset).
		b.stall = time.AfterFunc(d, b.onStall)
		b.stall.Stop()
	}
	return b
}

func (b *body) onStall() {
	b.stalled.Store(true)
	_ = b.rc.Close()
}

func (b *body) Read(p []byte) (int, error) {
	if b.stall != nil {
		b.stall.Reset(b.tr.c.st.stall)
	}
	n, err := b.rc.Read(p)
	if b.stall != nil {
		b.stall.Stop()
	}
	switch {
	case err == io.EOF:
		b.end(nil)
	case err != nil:
		if b.stalled.Load() {
			tr := b.tr
			err = &TimeoutError{Phase: "stall", Method: methodOf(tr.c.req), Host: tr.c.req.URL.Host,
				Limit: tr.c.st.stall, peer: tr.peerLabel()}
			tr.c.st.tel.stalled(tr.ctx)
		} else {
			err = b.tr.mapErr(err)
		}
		b.end(err)
	}
	return n, err
}

// Close closes the body and ends the try. Closing before EOF is not an
// error.
func (b *body) Close() error {
	err := b.rc.Close()
	b.end(nil)
	return err
}

func (b *body) end(err error) {
	b.mu.Lock()
	if b.done {
		b.mu.Unlock()
		return
	}
	b.done = true
	b.mu.Unlock()
	if b.stall != nil {
		b.stall.Stop()
	}
	b.tr.finish(b.resp, err)
}

// drain reads what is left of a discarded response, up to drainLimit bytes
// and drainTimeout, then closes it: a small body is read through so that
// its conn is reused, a large or stalled one costs the conn instead.
func (b *body) drain() {
	t := time.AfterFunc(drainTimeout, func() { _ = b.rc.Close() })
	_, _ = io.CopyN(io.Discard, b.rc, drainLimit)
	t.Stop()
	_ = b.Close()
}
