package transport

import (
	"errors"
	"io"
	"net/http"
	"sync"
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

	mu    sync.Mutex // guards done: Close may run concurrently with Read
	stall *time.Timer
	done  bool
}

func newBody(tr *try, resp *http.Response) *body {
	b := &body{rc: resp.Body, tr: tr, resp: resp}
	if d := tr.c.st.stall; d > 0 {
		b.stall = time.AfterFunc(d, func() { tr.cancel(errStall) })
		b.stall.Stop()
	}
	return b
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
		err = b.tr.mapErr(err)
		var te *TimeoutError
		if errors.As(err, &te) && te.Phase == "stall" {
			b.tr.c.st.tel.stalled(b.tr.ctx)
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
	t := time.AfterFunc(drainTimeout, func() { b.tr.cancel(errDrained) })
	_, _ = io.CopyN(io.Discard, b.rc, drainLimit)
	t.Stop()
	_ = b.Close()
}
