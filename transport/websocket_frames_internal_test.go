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
