package transport

import (
	"bytes"
	"testing"

	"github.com/gorilla/websocket"
)

// TestFrameTracker: the tracker finds every frame boundary of a client
// stream (short, 16-bit and 64-bit lengths, control frames, empty
// payloads), however the stream is split into writes, and no boundary
// inside a frame.
func TestFrameTracker(t *testing.T) {
	var stream bytes.Buffer
	var bounds []int // offsets where a frame ends
	add := func(b []byte) {
		stream.Write(b)
		bounds = append(bounds, stream.Len())
	}
	for _, n := range []int{0, 1, 125, 126, 127, 65535, 65536, 70000} {
		add(clientFrame(0x82, make([]byte, n)))
	}
	add(wsControlFrame(websocket.PingMessage, nil))
	add(wsControlFrame(websocket.PongMessage, []byte("hello")))
	add(clientFrame(0x88, websocket.FormatCloseMessage(1000, "bye")))
	data := stream.Bytes()
	isBound := map[int]bool{0: true}
	for _, b := range bounds {
		isBound[b] = true
	}
	for _, step := range []int{1, 2, 3, 7, 14, 4096, len(data)} {
		var ft frameTracker
		for off := 0; off < len(data); {
			end := min(off+step, len(data))
			ft.advance(data[off:end], nil)
			off = end
			if got := ft.atBoundary(); got != isBound[off] {
				t.Fatalf("writes of %d bytes: at offset %d atBoundary %v, want %v", step, off, got, isBound[off])
			}
			// The close frame is the last; its header (2 bytes and the
			// key) tells the tracker.
			if want := off >= bounds[len(bounds)-2]+6; ft.closed != want {
				t.Fatalf("writes of %d bytes: at offset %d closed %v, want %v", step, off, ft.closed, want)
			}
		}
	}
}

// clientFrame builds a masked client frame (RFC 6455 §5.2).
func clientFrame(b0 byte, payload []byte) []byte {
	out := []byte{b0}
	switch n := len(payload); {
	case n < 126:
		out = append(out, 0x80|byte(n))
	case n < 1<<16:
		out = append(out, 0x80|126, byte(n>>8), byte(n))
	default:
		out = append(out, 0x80|127, 0, 0, 0, 0, byte(n>>24), byte(n>>16), byte(n>>8), byte(n))
	}
	out = append(out, 1, 2, 3, 4) // the key; the payload's masking does not matter here
	return append(out, payload...)
}

// TestPingJudgeTCP walks the judge of a TCP conn through the cases that
// decide it: ms are milliseconds since the ping was due, PongTimeout 200.
func TestPingJudgeTCP(t *testing.T) {
	const ms = int64(1e6)
	pong := 200 * ms
	type look struct {
		at    int64  // ms
		acked uint64 // the peer's acknowledged bytes then
		want  pingVerdict
	}
	for _, tc := range []struct {
		name  string
		limit uint64 // everything before the ping acknowledged at (noLimit: not written)
		looks []look
	}{
		{"vanished: nothing acknowledged", 1000, []look{{50, 1000, verdictAlive}, {199, 1000, verdictAlive}, {200, 1000, verdictDead}}},
		{"hung and idle: the ping's own ack is no sign", 1000, []look{{50, 1006, verdictAlive}, {150, 1006, verdictAlive}, {200, 1006, verdictDead}}},
		{"slow reader: the upload before the ping moves", 1 << 30, []look{{50, 2000, verdictAlive}, {200, 3000, verdictAlive}, {390, 3000, verdictAlive}, {400, 3000, verdictDead}}},
		{"ping not written: the upload moves, then stops", noLimit, []look{{100, 5000, verdictAlive}, {250, 5000, verdictAlive}, {300, 5000, verdictDead}}},
		{"upload reaches the ping: later acks are no sign", 3000, []look{{100, 3000, verdictAlive}, {200, 9000, verdictAlive}, {300, 20000, verdictDead}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			j := pingJudge{pong: pong}
			j.sent(sentPing{tcp: true, acked: 1000, limit: noLimit})
			if tc.limit != noLimit {
				j.written(tc.limit)
			}
			for _, l := range tc.looks {
				acked := func() (uint64, bool) { return l.acked, true }
				if got := j.check(l.at*ms, -1, acked); got != l.want {
					t.Fatalf("at %dms (acked %d): verdict %v, want %v", l.at, l.acked, got, l.want)
				}
			}
			// Any byte from the peer after the ping was due answers it.
			if j.check(tc.looks[0].at*ms, 0, func() (uint64, bool) { return 0, true }) != verdictAlive || j.hasOld {
				t.Fatal("a byte from the peer did not answer the ping")
			}
		})
	}
}
