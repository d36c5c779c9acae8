package transport

import (
	"errors"
	"fmt"
	"testing"
)

// TestIsHeaderLimit: net/http's two texts for headers over the limit are
// recognised however they are wrapped, and nothing else is.
func TestIsHeaderLimit(t *testing.T) {
	h1 := errors.New("net/http: server response headers exceeded 1048576 bytes; aborted")
	h2 := errors.New("stream error: stream ID 3; PROTOCOL_ERROR; http2: response header list larger than advertised limit")
	for _, tc := range []struct {
		name string
		err  error
		want bool
	}{
		{"h1", h1, true},
		{"h1 wrapped", fmt.Errorf("attempt: %w", h1), true},
		{"h2 stream error", h2, true},
		{"h2 joined", errors.Join(errors.New("x"), h2), true},
		{"other", errors.New("connection error: PROTOCOL_ERROR"), false},
		{"nil", nil, false},
	} {
		if got := isHeaderLimit(tc.err); got != tc.want {
			t.Errorf("%s: isHeaderLimit = %v, want %v", tc.name, got, tc.want)
		}
	}
}
