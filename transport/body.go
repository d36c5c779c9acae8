package transport

import (
	"io"
	"net/http"
	"sync/atomic"
	"time"
)

// body is a response body that ends its try when it is read to EOF or
// closed, and fails a Read during which no byte came from the peer for
// StallTimeout (through the Transport's watch, which finds it in its try).
// Only time spent inside Read counts: a consumer that pauses between reads
// is not a stall. A stall is time without a byte from the peer, not a Read
// that lasted long: on HTTP/1.1 net/http's chunked reader keeps reading
// inside one Read while bytes trickle in, so every byte the conn reads
// (bornConn.read) is progress; on HTTP/2 a Read returns as soon as its
// stream has a byte.
type body struct {
	rc   io.ReadCloser
	tr   *try
	resp *http.Response
	w    *watch    // nil: no StallTimeout
	conn *bornConn // HTTP/1.1: the try's conn, whose reads are this body's; nil: HTTP/2 or unknown

	// reading is the Read in progress: its begin mark (beganMark) until
	// the watch has seen it, then the watch's clock when it did (or when
	// it last saw a byte arrive on conn); 0 between reads, -1 once the
	// watch has failed that Read (and closed rc under it).
	reading atomic.Int64
	reads   uint32 // the Reads so far: their begin marks (Read's own)
	seen    uint64 // conn's read count when the watch last stamped reading; the watch's

	done atomic.Bool // the try was ended (Close may run concurrently with Read)
}

// newBody wraps resp's body; it lives in the try (one allocation less per
// request, BenchmarkKeepAliveGET).
func newBody(tr *try, resp *http.Response) *body {
	b := &tr.body
	b.rc, b.tr, b.resp = resp.Body, tr, resp
	if w := tr.w; w != nil && tr.c.lim.stall > 0 {
		b.w = w
		if resp.ProtoMajor == 1 {
			// HTTP/1.1: the conn carries this body alone until it ends.
			b.conn = tr.conn.Load()
		}
	}
	return b
}

func (b *body) Read(p []byte) (int, error) {
	if b.w == nil {
		n, err := b.rc.Read(p)
		return n, b.after(err, false)
	}
	b.reads++
	if !b.reading.CompareAndSwap(0, beganMark(b.reads)) {
		// The watch failed an earlier Read (one that still returned
		// bytes); rc is closed.
		return 0, b.after(errStalled, true)
	}
	n, err := b.rc.Read(p)
	stalled := b.reading.Swap(0) == -1
	if stalled {
		b.reading.Store(-1) // every later Read fails the same way
	}
	return n, b.after(err, stalled)
}

// after ends the try when a Read ends the body: at EOF, or on an error,
// made a *TimeoutError when it was a limit of the Transport's.
func (b *body) after(err error, stalled bool) error {
	if err == nil {
		return nil
	}
	ended := error(nil) // the try's end: nil at EOF
	switch {
	case err == io.EOF:
	case stalled:
		err = b.stallError()
		b.tr.blame(false)
		ended = err
	default:
		err = b.tr.mapErr(err)
		ended = err
	}
	// The try's own context ends with it; HTTP/2's Close waits for the
	// stream's cleanup only while the request's context is alive, so close
	// first: a Transport's idle conns are then truly idle
	// (TestStallWatchManyBodies).
	_ = b.rc.Close()
	b.end(ended)
	return err
}

func (b *body) stallError() error {
	tr := b.tr
	return &TimeoutError{Phase: "stall", Method: methodOf(tr.c.req), Host: tr.c.req.URL.Host,
		Limit: tr.c.lim.stall, peer: tr.peerLabel()}
}

// Close closes the body and ends the try. Closing before EOF is not an
// error.
func (b *body) Close() error {
	err := b.rc.Close()
	b.end(nil)
	return err
}

func (b *body) end(err error) {
	if b.done.CompareAndSwap(false, true) {
		b.tr.finish(b.resp, err)
	}
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
