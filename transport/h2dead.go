package transport

import "time"

// http2AbandonWait is how long an HTTP/2 conn may stay silent after a
// call gave up on a stream of it before lifeline closes the conn: net/http
// sends a PING with the RST_STREAM of such a call (unless one is in
// flight), which a live peer answers within a round trip, while a conn
// held by a middlebox or a vanished peer answers nothing and, left to
// net/http, takes new streams until 250 resets pile up or its own health
// ping gives up (http2PingAfter + http2PingTimeout). A variable for the
// tests.
var http2AbandonWait = time.Second

// abandoned is told that a try on c ended without its response headers,
// c having read readAt bytes when the try got it. When nothing came from
// the peer since then, c is watched: if nothing comes within
// http2AbandonWait either, it is closed, so that net/http drops it and
// the next calls dial afresh. One watch at a time per conn; a peer from
// which any byte arrives is alive. HTTP/1.1 needs none: net/http closes
// an HTTP/1.1 conn whose request was given up.
func (c *bornConn) abandoned(readAt uint64) {
	if c.proto.Load() != protoH2 {
		return
	}
	at := c.read.Load()
	if at != readAt || !c.watched.CompareAndSwap(false, true) {
		return
	}
	time.AfterFunc(http2AbandonWait, func() {
		if c.read.Load() == at {
			// The tries still waiting on c fail with what closing it
			// does to them: mapErr tells them why.
			c.silent.Store(true)
			_ = c.Close()
			return
		}
		c.watched.Store(false)
	})
}

// closedSilent reports whether the conn the try last got was closed by
// the abandoned watch: its peer was silent.
func (tr *try) closedSilent() bool {
	c := tr.conn.Load()
	return c != nil && c.silent.Load()
}
