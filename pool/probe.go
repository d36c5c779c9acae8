package pool

import (
	"crypto/tls"
	"errors"
	"net"
	"os"
	"syscall"
	"time"
)

// errUnexpectedData: an idle request/response connection has bytes waiting
// that nobody asked for — the server's goodbye (an error message before it
// closes), or the reply to a request whose caller gave up. Handed out, the
// next holder would read it as the answer to its own request.
var errUnexpectedData = errors.New("pool: unexpected data on an idle connection")

// aLongTimeAgo is a deadline in the past: I/O with it returns at once.
var aLongTimeAgo = time.Unix(1, 0)

// probe tells whether an idle connection is still usable, without blocking;
// nil means alive. An idle request/response connection is usable only when
// nothing at all is waiting to be read on it: no end-of-file, no reset, and
// no byte — a byte nobody asked for is another request's answer or the
// server's goodbye.
//
// The verdict rests on what the conn is made of, not on recognising wrapper
// types: probe walks c down its chain of NetConn methods to the conn at the
// bottom, which must be a socket (a syscall.Conn; conns without one, such
// as net.Pipe, are not probed).
//
//   - No *tls.Conn in the chain: the bytes on the wire are the protocol's
//     own, so one pending byte at the socket (a non-blocking MSG_PEEK)
//     means dead, whatever wrappers sit above it.
//   - A *tls.Conn in the chain: it may hold decrypted bytes or whole
//     records it has read already, and the records at the socket may be
//     TLS's own (session tickets, key updates) or the protocol's. Only the
//     tls.Conn can tell them apart, so probe reads through the outermost
//     *tls.Conn (probeTLS): a byte of data or end-of-file (close_notify,
//     FIN) means dead, a read that times out having found no data alive.
//
// Wrappers that buffer reads themselves (a bufio.Reader inside a net.Conn)
// cannot be seen into: Config.Dial should not return them.
func probe(c net.Conn) error {
	var top *tls.Conn
	for {
		if tc, ok := c.(*tls.Conn); ok && top == nil {
			top = tc
		}
		u, ok := c.(interface{ NetConn() net.Conn })
		if !ok {
			break
		}
		c = u.NetConn()
	}
	sc, ok := c.(syscall.Conn)
	if !ok {
		return nil
	}
	if top != nil {
		return probeTLS(top, sc)
	}
	return peekSocket(sc)
}

// tlsRecordWait bounds probeTLS's read of records waiting at the socket.
// Go's poller reads nothing once a deadline has passed, so that read needs
// a deadline still ahead; the records are there already, whole (probeTLS
// reads only then), and tls.Conn waits this long only after it has
// processed them all and found no data (a session ticket) — once per
// ticket, so about once per conn.
const tlsRecordWait = time.Millisecond

// tlsRecordWaitMax is the longest of probeTLS's doubling waits for records
// that are still waiting after a read (1, 2, 4, 8 and 16ms: 31ms at most,
// and only when the reads kept starting late).
const tlsRecordWaitMax = 16 * time.Millisecond

// tlsWriteWait bounds the writes tls.Conn makes for itself while probeTLS
// reads (the answer to a KeyUpdate that requests ours; the alert that
// refuses a renegotiation). A write that failed stays failed in the
// tls.Conn for ever, so it must not fail for the probe's sake: this is
// ample for a few dozen bytes into an idle conn's empty send buffer, and a
// full one means a peer that stopped reading.
const tlsWriteWait = 50 * time.Millisecond

// errRecordsPending: whole TLS records wait at the socket, and only the
// tls.Conn can tell whether they are its own or data.
var errRecordsPending = errors.New("pool: tls records pending")

// probeTLS is probe's verdict on a conn with TLS in its chain; sc is the
// socket at the bottom. First a read with the deadline in the past, which
// returns at once: tls.Conn hands up data it has decrypted or can decrypt
// from whole records it holds, and never touches the socket. Then, only
// when the socket has whole records waiting (peekRecords; part of a record
// is something in flight to us, which TLS's own few small messages never
// are in practice: dead), a read bounded by tlsRecordWait lets tls.Conn
// process them, after which nothing may be left at the socket. Last, a
// zero-length Write asks tls.Conn whether a write it
// made for itself meanwhile failed: such a conn can never be written again.
// The deadlines are cleared after (an idle conn has none; Release clears
// those set through the wrapper anyway).
func probeTLS(tc *tls.Conn, sc syscall.Conn) error {
	if !tc.ConnectionState().HandshakeComplete {
		// Never used (tls.Client runs the handshake on the first I/O): a
		// read would start it under a deadline in the past, and tls.Conn
		// keeps a handshake's failure for ever. Before its ClientHello a
		// server sends nothing, so the socket speaks for it.
		return peekSocket(sc)
	}
	if err := tc.SetReadDeadline(aLongTimeAgo); err != nil {
		return err
	}
	if err := tc.SetWriteDeadline(time.Now().Add(tlsWriteWait)); err != nil {
		return err
	}
	err := readTLS(tc)
	if err == nil {
		err = peekRecords(sc)
		// Whole records wait: tls.Conn reads them under a short deadline.
		// Whole records still waiting after such a read mean its read
		// began after the deadline (a preemption: seen on a CPU-starved
		// machine) or more came meanwhile; reading whole records never
		// waits on the network, so look again with a longer wait rather
		// than evict a live conn. Part of a record, or a byte tls.Conn
		// let through, is something nobody vetted: dead.
		for wait := tlsRecordWait; err == errRecordsPending; wait *= 2 {
			if wait > tlsRecordWaitMax {
				err = errUnexpectedData
				break
			}
			if err = tc.SetReadDeadline(time.Now().Add(wait)); err == nil {
				err = readTLS(tc)
			}
			if err == nil {
				err = peekRecords(sc)
			}
		}
	}
	if derr := tc.SetDeadline(time.Time{}); err == nil {
		err = derr
	}
	if err == nil {
		// Touches no socket: tls.Conn returns the error of a failed
		// write it keeps, or nothing.
		_, err = tc.Write(nil)
	}
	return err
}

// readTLS reads one byte through tc, whose read deadline is set: data is
// unexpected, a timeout means none, any other error is the conn's end.
func readTLS(tc *tls.Conn) error {
	var b [1]byte
	n, err := tc.Read(b[:])
	switch {
	case n > 0:
		return errUnexpectedData
	case err == nil || errors.Is(err, os.ErrDeadlineExceeded):
		return nil
	}
	return err
}

// tlsPeekMax is the most bytes peekRecords looks at: two records of the
// largest size. TLS's own post-handshake messages (tickets, a KeyUpdate)
// take a few hundred bytes, a few KB for a ticket that carries a
// certificate chain; more than this waiting at the socket is data.
const tlsPeekMax = 2 * (5 + 1<<14 + 256)

// wholeRecords reports whether b is a sequence of whole TLS records (the
// 5-byte header's last two bytes are the length of the body). full says b
// filled the peek buffer, so that more may wait behind it: not whole.
func wholeRecords(b []byte, full bool) bool {
	for len(b) > 0 {
		if len(b) < 5 {
			return false
		}
		n := 5 + (int(b[3])<<8 | int(b[4]))
		if len(b) < n {
			return false
		}
		b = b[n:]
	}
	return !full
}
