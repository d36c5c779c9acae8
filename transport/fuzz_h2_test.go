package transport_test

import (
	"context"
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
	"github.com/lifeline-go/lifeline/transport"
)

// h2Frame is one HTTP/2 frame (RFC 9113 §4.1) with a 24-bit length.
func h2Frame(typ, flags byte, stream uint32, payload string) string {
	n := len(payload)
	return string([]byte{byte(n >> 16), byte(n >> 8), byte(n), typ, flags,
		byte(stream >> 24), byte(stream >> 16), byte(stream >> 8), byte(stream)}) + payload
}

// h2Dialer is a dial.Dialer whose conns are in-memory pipes to a TLS
// server that picks h2, reads everything the client sends, and writes an
// empty SETTINGS frame and then the fuzzed bytes (the frames a hostile
// or broken HTTP/2 server sends) on every conn.
func (ps *pipeServer) h2Dialer(tb testing.TB) (*dial.Dialer, *tls.Config) {
	serverTLS, clientTLS := faultnet.SelfSigned(tb)
	serverTLS.NextProtos = []string{"h2"}
	return &dial.Dialer{Timeout: time.Second, DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
		return ps.pipe(func(server net.Conn, reply []byte) {
			tc := tls.Server(server, serverTLS)
			if tc.Handshake() != nil {
				return
			}
			// net.Pipe is synchronous: the client's preface, SETTINGS and
			// request block until read, so reading goes on alongside.
			read := make(chan struct{})
			go func() {
				defer close(read)
				_, _ = io.Copy(io.Discard, tc)
			}()
			if _, err := io.WriteString(tc, h2Frame(0x4, 0, 0, "")+string(reply)); err == nil {
				<-read // until the client closes
			}
			server.Close()
			<-read
		}), nil
	}}, clientTLS
}

// FuzzServerReplyHTTP2 is FuzzServerReply for HTTP/2: arbitrary frames
// after the server's SETTINGS (HEADERS with any header block, DATA,
// RST_STREAM, GOAWAY, WINDOW_UPDATE, PING, CONTINUATION floods, garbage)
// reach the Transport over TLS with ALPN h2. RoundTrip and the body read
// end, with a response or an error, within their limits: no panic, no
// hang, and (goleak at TestMain) no goroutine left behind.
func FuzzServerReplyHTTP2(f *testing.F) {
	const s1 = 1               // the client's first stream
	status200 := "\x88"        // HPACK: indexed :status 200
	status503 := "\x48\x03503" // HPACK: :status 503, literal
	for _, s := range []string{
		h2Frame(0x1, 0x5, s1, status200),                                                                       // HEADERS, END_HEADERS|END_STREAM
		h2Frame(0x1, 0x4, s1, status200) + h2Frame(0x0, 0x1, s1, "hello"),                                      // + DATA, END_STREAM
		h2Frame(0x1, 0x4, s1, status200) + h2Frame(0x0, 0x0, s1, "hel"),                                        // a body that stalls
		h2Frame(0x1, 0x5, s1, status503+"\x40\x0bretry-after\x011"),                                            // 503, Retry-After: 1
		h2Frame(0x1, 0x0, s1, status200),                                                                       // no END_HEADERS, no CONTINUATION
		h2Frame(0x1, 0x0, s1, status200) + h2Frame(0x9, 0x0, s1, "\x40\x01a\x01b") + h2Frame(0x9, 0x0, s1, ""), // CONTINUATIONs
		h2Frame(0x3, 0x0, s1, "\x00\x00\x00\x02"),                                                              // RST_STREAM INTERNAL_ERROR
		h2Frame(0x7, 0x0, 0, "\x00\x00\x00\x00\x00\x00\x00\x02"),                                               // GOAWAY
		h2Frame(0x8, 0x0, 0, "\x7f\xff\xff\xff") + h2Frame(0x8, 0x0, 0, "\x7f\xff\xff\xff"),                    // window overflow
		h2Frame(0x6, 0x0, 0, "12345678"),                                                                       // PING
		h2Frame(0x0, 0x1, s1, "body before headers"),                                                           // DATA first
		h2Frame(0x1, 0x5, 2, status200),                                                                        // HEADERS on an even stream
		h2Frame(0x1, 0x5, s1, "\xff\xff\xff\xff"),                                                              // bad HPACK
		h2Frame(0x1, 0xd, s1, "\x10"+status200),                                                                // PADDED, pad longer than frame
		h2Frame(0x4, 0x0, 0, "\x00\x05\x00\x00\x00\x00"),                                                       // SETTINGS MAX_FRAME_SIZE 0
		h2Frame(0x1, 0x5, s1, "\x40\x04x-ok\x01v"),                                                             // no :status
		"\x00\xff\xff\x00\x00\x00\x00\x00\x01" + "short",                                                       // length past the data
		"",
	} {
		f.Add([]byte(s))
	}
	ps := newPipeServer(f)
	d, tlsCfg := ps.h2Dialer(f)
	tr := &transport.Transport{
		Dialer:           d,
		TLSClientConfig:  tlsCfg,
		Proxy:            noProxy,
		FirstByteTimeout: 50 * time.Millisecond, // short: most mutations end in silence
		StallTimeout:     50 * time.Millisecond,
		Retry:            &retry.Policy{MaxAttempts: 2, InitialInterval: time.Millisecond, MaxRetryAfter: 10 * time.Millisecond},
	}
	f.Cleanup(tr.CloseIdleConnections)
	f.Fuzz(func(t *testing.T, reply []byte) {
		ps.set(reply)
		// (The h2 ping timeout ends a silent conn too.)
		getBounded(t, tr, "https://127.0.0.1:1/x", 2)
	})
}
