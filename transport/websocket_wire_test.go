package transport_test

import (
	"bufio"
	"bytes"
	"compress/flate"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/gorilla/websocket"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/transport"
)

// wireServer is a websocket server written by hand (not gorilla): it reads
// every frame the client writes and checks it against RFC 6455 §5 (masked,
// reserved bits, opcodes, control frames whole, short and never inside a
// fragmented message's frames, continuation only inside a message, nothing
// after a close frame) and, with deflate, RFC 7692. It answers pings with
// pongs and records the data messages, decompressed.
type wireServer struct {
	t       *testing.T
	ln      net.Listener
	deflate bool        // answer the upgrade with permessage-deflate
	tls     *tls.Config // serve wss
	wg      sync.WaitGroup

	mu      sync.Mutex
	msgs    []wireMsg
	pings   int // the conn's own (empty payload)
	pongs   int // answers to the server's pings
	between int // control frames between the fragments of a message
	appCtl  int // the application's control frames (with a payload)
	closes  int
	errs    []string
	conns   []net.Conn
	done    chan struct{} // closed when a conn's reader ends
}

type wireMsg struct {
	op   byte
	data []byte
}

func startWire(t *testing.T, deflate bool, tlsCfg *tls.Config) *wireServer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &wireServer{t: t, ln: ln, deflate: deflate, tls: tlsCfg, done: make(chan struct{}, 16)}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			if tlsCfg != nil {
				c = tls.Server(c, tlsCfg)
			}
			s.mu.Lock()
			s.conns = append(s.conns, c)
			s.mu.Unlock()
			s.wg.Add(1)
			go func() {
				defer s.wg.Done()
				defer c.Close()
				s.serve(c)
				s.done <- struct{}{}
			}()
		}
	}()
	t.Cleanup(s.close)
	return s
}

func (s *wireServer) close() {
	s.ln.Close()
	s.mu.Lock()
	for _, c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
}

func (s *wireServer) url() string {
	if s.tls != nil {
		return "wss://" + s.ln.Addr().String() + "/"
	}
	return "ws://" + s.ln.Addr().String() + "/"
}

func (s *wireServer) fail(format string, args ...any) {
	s.mu.Lock()
	s.errs = append(s.errs, fmt.Sprintf(format, args...))
	s.mu.Unlock()
}

// serve upgrades and then reads and checks frames until the conn ends.
func (s *wireServer) serve(c net.Conn) {
	br := bufio.NewReader(c)
	req, err := http.ReadRequest(br)
	if err != nil {
		return
	}
	ext := ""
	if s.deflate {
		// Sent whether or not the client offered it: gorilla's client
		// takes it either way.
		ext = "Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover; client_no_context_takeover\r\n"
	}
	fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
		"Sec-WebSocket-Accept: %s\r\n%s\r\n", acceptKey(req.Header.Get("Sec-WebSocket-Key")), ext)
	var wmu sync.Mutex // the answers' writes
	stopPings := make(chan struct{})
	defer close(stopPings)
	go func() {
		// The server pings too: the client's pongs go out between its
		// frames like its pings.
		t := time.NewTicker(time.Millisecond)
		defer t.Stop()
		for i := 0; ; i++ {
			select {
			case <-stopPings:
				return
			case <-t.C:
			}
			p := fmt.Sprintf("srv%d", i)
			wmu.Lock()
			_, err := c.Write(append([]byte{0x89, byte(len(p))}, p...))
			wmu.Unlock()
			if err != nil {
				return
			}
		}
	}()
	var (
		inMsg      bool // a fragmented message is under way
		msgOp      byte
		compressed bool
		msg        []byte
		closed     bool
	)
	for {
		var h [2]byte
		if _, err := io.ReadFull(br, h[:]); err != nil {
			return
		}
		fin, rsv, op := h[0]&0x80 != 0, h[0]&0x70, h[0]&0x0f
		masked := h[1]&0x80 != 0
		n := uint64(h[1] & 0x7f)
		switch n {
		case 126:
			var b [2]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				s.fail("frame cut in its 16-bit length")
				return
			}
			n = uint64(binary.BigEndian.Uint16(b[:]))
			if n < 126 {
				s.fail("16-bit length %d not minimal", n)
			}
		case 127:
			var b [8]byte
			if _, err := io.ReadFull(br, b[:]); err != nil {
				s.fail("frame cut in its 64-bit length")
				return
			}
			n = binary.BigEndian.Uint64(b[:])
			if n < 1<<16 || n>>63 != 0 {
				s.fail("64-bit length %d not minimal or too big", n)
				return
			}
		}
		if !masked {
			s.fail("unmasked client frame (op %d)", op)
			return
		}
		var key [4]byte
		if _, err := io.ReadFull(br, key[:]); err != nil {
			s.fail("frame cut in its masking key")
			return
		}
		if n > 64<<20 {
			s.fail("frame of %d bytes", n)
			return
		}
		p := make([]byte, n)
		if _, err := io.ReadFull(br, p); err != nil {
			if !closed {
				s.fail("frame (op %d) cut after its header: %v", op, err)
			}
			return
		}
		for i := range p {
			p[i] ^= key[i%4]
		}
		if closed {
			s.fail("frame (op %d) after the close frame", op)
			return
		}
		if rsv&0x30 != 0 {
			s.fail("RSV2/RSV3 set (op %d)", op)
			return
		}
		control := op >= 8
		if control {
			if !fin || n > 125 || rsv != 0 {
				s.fail("bad control frame op %d fin %v len %d rsv %x", op, fin, n, rsv)
				return
			}
			s.mu.Lock()
			if inMsg {
				s.between++
			}
			if n > 0 && op != websocket.CloseMessage && !bytes.HasPrefix(p, []byte("srv")) {
				s.appCtl++
			}
			s.mu.Unlock()
			switch op {
			case websocket.PingMessage:
				s.mu.Lock()
				if n == 0 {
					s.pings++
				}
				s.mu.Unlock()
				f := append([]byte{0x8a, byte(len(p))}, p...)
				wmu.Lock()
				_, _ = c.Write(f)
				wmu.Unlock()
			case websocket.PongMessage:
				s.mu.Lock()
				if bytes.HasPrefix(p, []byte("srv")) {
					s.pongs++
				}
				s.mu.Unlock()
			case websocket.CloseMessage:
				s.mu.Lock()
				s.closes++
				s.mu.Unlock()
				closed = true
				wmu.Lock()
				_, _ = c.Write([]byte{0x88, 2, 0x03, 0xe8})
				wmu.Unlock()
			default:
				s.fail("reserved control opcode %d", op)
				return
			}
			continue
		}
		switch op {
		case websocket.TextMessage, websocket.BinaryMessage:
			if inMsg {
				s.fail("data frame (op %d) inside a fragmented message", op)
				return
			}
			if rsv == 0x40 && !s.deflate {
				s.fail("RSV1 without deflate")
				return
			}
			inMsg, msgOp, compressed, msg = true, op, rsv == 0x40, append([]byte(nil), p...)
		case 0:
			if !inMsg {
				s.fail("continuation frame outside a message")
				return
			}
			if rsv != 0 {
				s.fail("RSV1 on a continuation frame")
				return
			}
			msg = append(msg, p...)
		default:
			s.fail("reserved data opcode %d", op)
			return
		}
		if !fin {
			continue
		}
		inMsg = false
		if compressed {
			r := flate.NewReader(io.MultiReader(bytes.NewReader(msg),
				strings.NewReader("\x00\x00\xff\xff\x01\x00\x00\xff\xff")))
			d, err := io.ReadAll(r)
			if err != nil {
				s.fail("inflate: %v", err)
				return
			}
			msg = d
		}
		s.mu.Lock()
		s.msgs = append(s.msgs, wireMsg{op: msgOp, data: msg})
		s.mu.Unlock()
	}
}

// check fails t with the protocol errors seen, and with any difference
// between the messages received and want.
func (s *wireServer) check(t *testing.T, want []wireMsg) {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, e := range s.errs {
		t.Error("on the wire: " + e)
	}
	if len(s.msgs) != len(want) {
		t.Fatalf("server got %d messages, want %d", len(s.msgs), len(want))
	}
	for i := range want {
		if s.msgs[i].op != want[i].op || !bytes.Equal(s.msgs[i].data, want[i].data) {
			t.Fatalf("message %d: got op %d, %d bytes; want op %d, %d bytes", i,
				s.msgs[i].op, len(s.msgs[i].data), want[i].op, len(want[i].data))
		}
	}
}

// payload is n bytes that compress poorly, different for each seed.
func payload(n, seed int) []byte {
	b := make([]byte, n)
	x := uint32(seed*2654435761 + 1)
	for i := range b {
		x ^= x << 13
		x ^= x >> 17
		x ^= x << 5
		b[i] = byte(x)
	}
	return b
}

// TestWebSocketWireFramesWithPings: pings every millisecond, injected
// between the frames of every kind of client write (single messages of
// the sizes where the length encoding changes, fragmented messages built
// from many small NextWriter writes, messages split across frames by
// gorilla's write buffer, prepared messages, compression forced by the
// server, the application's own concurrent WriteControl, a close frame):
// every frame on the wire is whole and masked, no control frame sits
// inside another frame, nothing follows the close frame, and every
// message arrives intact and in order.
func TestWebSocketWireFramesWithPings(t *testing.T) {
	srvTLS, cliTLS := faultnet.SelfSigned(t)
	for _, tc := range []struct {
		name    string
		deflate bool
		tls     bool
		wbuf    int
	}{
		{"small frames", false, false, 512}, // many frames per message
		{"deflate", true, false, 512},
		{"large frames over TLS", false, true, 1 << 20}, // 64-bit lengths
		{"deflate, large frames", true, false, 1 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var sc *tls.Config
			if tc.tls {
				sc = srvTLS
			}
			s := startWire(t, tc.deflate, sc)
			d := fastDialer(1)
			d.TLSClientConfig = cliTLS
			d.PingInterval, d.PongTimeout = time.Millisecond, 5*time.Second
			d.WriteBufferSize = tc.wbuf
			c, _, err := d.Dial(t.Context(), s.url(), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			readErr := make(chan error, 1)
			go func() {
				for {
					if _, _, err := c.ReadMessage(); err != nil {
						readErr <- err
						return
					}
				}
			}()
			// The application's own control frames, concurrently.
			stopCtl := make(chan struct{})
			ctlDone := make(chan struct{})
			go func() {
				defer close(ctlDone)
				for i := 0; ; i++ {
					select {
					case <-stopCtl:
						return
					default:
					}
					op := websocket.PingMessage
					if i%2 == 1 {
						op = websocket.PongMessage
					}
					// A long deadline: a control frame that times out on a
					// loaded machine breaks the conn (gorilla's rule).
					_ = c.WriteControl(op, payload(1+i%125, i), time.Now().Add(10*time.Second))
				}
			}()
			var want []wireMsg
			send := func(op int, data []byte) {
				t.Helper()
				if err := c.WriteMessage(op, data); err != nil {
					t.Fatal(err)
				}
				want = append(want, wireMsg{op: byte(op), data: data})
			}
			// Rounds for at least 300ms (hundreds of the conn's pings on a
			// quiet machine), and on until the server has seen at least
			// 10 of each kind of interleaved control frame: a loaded
			// machine schedules fewer of them per unit of time, and the
			// counts below are about interleaving, not speed. A conn that
			// never interleaves ends the rounds at the cap and fails.
			enough := func() bool {
				s.mu.Lock()
				defer s.mu.Unlock()
				return s.pings >= 10 && s.pongs >= 10 && s.appCtl >= 10 && (s.between >= 10 || tc.wbuf >= 4096)
			}
			for start := time.Now(); time.Since(start) < 300*time.Millisecond ||
				(!enough() && time.Since(start) < 20*time.Second); {
				for i, n := range []int{0, 1, 125, 126, 127, 511, 512, 513, 65535, 65536, 65537, 200000} {
					send(websocket.BinaryMessage, payload(n, i))
				}
				for i := range 200 {
					send(websocket.TextMessage, []byte(strings.Repeat("x", i)))
				}
				// Fragmented messages built from many small writes.
				for i := range 20 {
					w, err := c.NextWriter(websocket.BinaryMessage)
					if err != nil {
						t.Fatal(err)
					}
					var all []byte
					for j := range 300 {
						p := payload(j%37, i*1000+j)
						all = append(all, p...)
						if _, err := w.Write(p); err != nil {
							t.Fatal(err)
						}
					}
					if err := w.Close(); err != nil {
						t.Fatal(err)
					}
					want = append(want, wireMsg{op: websocket.BinaryMessage, data: all})
				}
				// Prepared messages.
				for i, n := range []int{10, 126, 5000, 70000} {
					data := payload(n, 7000+i)
					pm, err := websocket.NewPreparedMessage(websocket.BinaryMessage, data)
					if err != nil {
						t.Fatal(err)
					}
					if err := c.WritePreparedMessage(pm); err != nil {
						t.Fatal(err)
					}
					want = append(want, wireMsg{op: websocket.BinaryMessage, data: data})
				}
			}
			close(stopCtl)
			<-ctlDone
			if err := c.WriteControl(websocket.CloseMessage,
				websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""), time.Now().Add(time.Second)); err != nil {
				t.Fatal(err)
			}
			// Pings wanted after the close frame must not follow it.
			time.Sleep(20 * time.Millisecond)
			<-readErr
			c.Close()
			select {
			case <-s.done:
			case <-time.After(5 * time.Second):
				t.Fatal("server still reading 5s after the client closed")
			}
			s.check(t, want)
			s.mu.Lock()
			defer s.mu.Unlock()
			if s.closes != 1 {
				t.Errorf("%d close frames, want 1", s.closes)
			}
			t.Logf("%d messages; the conn's pings %d, pongs %d; the application's control frames %d; control frames between fragments %d",
				len(want), s.pings, s.pongs, s.appCtl, s.between)
			// Enough of each to show the interleaving happened; how many
			// depends on the machine's speed (a loaded one wrote the
			// messages with 8 pongs between them).
			if s.pings < 5 || s.pongs < 3 || s.appCtl < 10 || (s.between < 3 && tc.wbuf < 4096) {
				t.Errorf("too few control frames: the test did not interleave")
			}
		})
	}
}

var _ = transport.DefaultPingInterval

// pingingServer upgrades, sends one message, then pings the client every
// 20ms and counts the pongs it gets back (it reads all the while, so its
// pong handler runs).
func pingingServer(pongs *atomic.Int64) func(http.ResponseWriter, *http.Request) {
	return func(w http.ResponseWriter, r *http.Request) {
		c, err := upgrader.Upgrade(w, r, nil)
		if err != nil {
			return
		}
		defer c.Close()
		c.SetPongHandler(func(string) error { pongs.Add(1); return nil })
		if err := c.WriteMessage(websocket.TextMessage, []byte("first")); err != nil {
			return
		}
		done := make(chan struct{})
		go func() {
			defer close(done)
			for {
				if _, _, err := c.ReadMessage(); err != nil {
					return
				}
			}
		}()
		t := time.NewTicker(20 * time.Millisecond)
		defer t.Stop()
		for {
			select {
			case <-done:
				return
			case <-t.C:
			}
			if err := c.WriteControl(websocket.PingMessage, []byte("srv"), time.Now().Add(time.Second)); err != nil {
				return
			}
		}
	}
}

// TestWebSocketSessionAnswersPingsWhileOnMessageBlocks: the session's doc
// says the conn still answers pings while OnMessage runs. A server that
// pings its clients (and drops those that do not answer) must get its
// pongs while the application spends a second on one message.
func TestWebSocketSessionAnswersPingsWhileOnMessageBlocks(t *testing.T) {
	var pongs atomic.Int64
	srv := startWS(t, pingingServer(&pongs), nil)
	release := make(chan struct{})
	got := make(chan struct{}, 1)
	s := newSession(t, transport.WebSocketSessionConfig{
		URL: wsURL("ws", srv, "/"),
		OnMessage: func(int, []byte) {
			select {
			case got <- struct{}{}:
			default:
			}
			<-release
		},
	})
	select {
	case <-got:
	case <-time.After(5 * time.Second):
		t.Fatal("no message")
	}
	before := pongs.Load()
	time.Sleep(time.Second)
	during := pongs.Load() - before
	close(release)
	s.Close()
	if during < 5 {
		t.Fatalf("%d pongs in 1s of pings every 20ms while OnMessage ran", during)
	}
	t.Logf("%d pongs in 1s of pings every 20ms while OnMessage ran", during)
}

// TestWebSocketPeerPingsAnsweredOnce: a hand-written server sends its 101
// with bare "\n" line endings (Go reads them) and a ping in the same
// write, then a ping every 5ms, each with its own payload. The client
// reads all the while, so both the pump and gorilla's handler see every
// ping: each is answered once (a pong's payload is never repeated), the
// ping that came with the 101 included, and none is lost while the
// application does not read.
func TestWebSocketPeerPingsAnsweredOnce(t *testing.T) {
	for _, reading := range []bool{true, false} {
		t.Run(fmt.Sprintf("reading=%v", reading), func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			defer ln.Close()
			const n = 40
			pongs := make(chan []string, 1)
			go func() {
				var got []string
				defer func() { pongs <- got }()
				c, err := ln.Accept()
				if err != nil {
					return
				}
				defer c.Close()
				br := bufio.NewReader(c)
				req, err := http.ReadRequest(br)
				if err != nil {
					return
				}
				ping := func(i int) []byte { p := fmt.Sprintf("p%d", i); return append([]byte{0x89, byte(len(p))}, p...) }
				head := "HTTP/1.1 101 Switching Protocols\nUpgrade: websocket\nConnection: Upgrade\n" +
					"Sec-WebSocket-Accept: " + acceptKey(req.Header.Get("Sec-WebSocket-Key")) + "\n\n"
				if _, err := c.Write(append([]byte(head), ping(0)...)); err != nil {
					return
				}
				go func() {
					for i := 1; i < n; i++ {
						time.Sleep(5 * time.Millisecond)
						if _, err := c.Write(ping(i)); err != nil {
							return
						}
					}
				}()
				_ = c.SetReadDeadline(time.Now().Add(n*5*time.Millisecond + time.Second))
				for {
					var h [6]byte
					if _, err := io.ReadFull(br, h[:]); err != nil {
						return
					}
					p := make([]byte, h[1]&0x7f)
					if _, err := io.ReadFull(br, p); err != nil {
						return
					}
					for i := range p {
						p[i] ^= h[2+i%4]
					}
					if h[0]&0x0f == websocket.PongMessage {
						got = append(got, string(p))
					}
				}
			}()
			d := fastDialer(1)
			d.PingInterval, d.PongTimeout = time.Hour, time.Hour // the conn's own pings out of the way
			c, _, err := d.Dial(t.Context(), "ws://"+ln.Addr().String()+"/", nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if reading {
				go func() {
					for {
						if _, _, err := c.ReadMessage(); err != nil {
							return
						}
					}
				}()
			}
			got := <-pongs
			seen := map[string]bool{}
			for _, p := range got {
				if seen[p] {
					t.Fatalf("pong %q sent twice: %q", p, got)
				}
				seen[p] = true
			}
			if !seen["p0"] || len(got) < n/2 {
				t.Fatalf("%d pongs for %d pings (the first with the 101): %q", len(got), n, got)
			}
			t.Logf("%d pongs for %d pings", len(got), n)
		})
	}
}

// TestWebSocketSlowReaderIsAlive: the peer reads slowly (16 KiB every
// 10ms) and sends nothing but its pongs; the application uploads 6 MiB.
// The kernel's send queue holds megabytes, so each ping waits there behind
// the upload long after its write returned: the peer answers it as soon as
// it reads it. A peer that reads all the while is alive.
func TestWebSocketSlowReaderIsAlive(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	srvDone := make(chan struct{})
	go func() {
		defer close(srvDone)
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		br := bufio.NewReaderSize(&slowReader{r: c}, 16<<10)
		req, err := http.ReadRequest(br)
		if err != nil {
			return
		}
		fmt.Fprintf(c, "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"+
			"Sec-WebSocket-Accept: %s\r\n\r\n", acceptKey(req.Header.Get("Sec-WebSocket-Key")))
		for {
			var h [2]byte
			if _, err := io.ReadFull(br, h[:]); err != nil {
				return
			}
			n := uint64(h[1] & 0x7f)
			switch n {
			case 126:
				var b [2]byte
				_, _ = io.ReadFull(br, b[:])
				n = uint64(binary.BigEndian.Uint16(b[:]))
			case 127:
				var b [8]byte
				_, _ = io.ReadFull(br, b[:])
				n = binary.BigEndian.Uint64(b[:])
			}
			var key [4]byte
			if _, err := io.ReadFull(br, key[:]); err != nil {
				return
			}
			p := make([]byte, n)
			if _, err := io.ReadFull(br, p); err != nil {
				return
			}
			switch h[0] & 0x0f {
			case websocket.PingMessage:
				for i := range p {
					p[i] ^= key[i%4]
				}
				if _, err := c.Write(append([]byte{0x8a, byte(n)}, p...)); err != nil {
					return
				}
			case websocket.CloseMessage:
				return
			}
		}
	}()
	d := fastDialer(1)
	// Each ping waits seconds behind the upload (megabytes at 1.6 MB/s).
	d.PingInterval, d.PongTimeout = 100*time.Millisecond, time.Second
	c, _, err := d.Dial(t.Context(), "ws://"+ln.Addr().String()+"/", nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	readErr := make(chan error, 1)
	go func() {
		_, _, err := c.ReadMessage()
		readErr <- err
	}()
	msg := make([]byte, 32<<10)
	start := time.Now()
	for i := range 6 << 20 / len(msg) {
		_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
			t.Fatalf("write %d after %v (%d KiB sent): %v", i, time.Since(start), i*len(msg)>>10, err)
		}
	}
	t.Logf("6 MiB to a slow reader in %v", time.Since(start))
	select {
	case err := <-readErr:
		t.Fatalf("conn failed: %v", err)
	default:
	}
	c.Close()
	<-srvDone
}

// slowReader reads at most 16 KiB every 10ms.
type slowReader struct{ r io.Reader }

func (s *slowReader) Read(p []byte) (int, error) {
	time.Sleep(10 * time.Millisecond)
	return s.r.Read(p[:min(len(p), 16<<10)])
}

// TestWebSocketDeadPeerDuringUpload: the peer vanishes (nftables drop in
// the test's own network namespace), or stops reading (a hung peer whose
// kernel still answers), while the application uploads as fast as the
// socket takes it, so that pings wait behind megabytes in the send queue
// or cannot be written at all: the peer's TCP acknowledges nothing any
// more, and the conn notices within PingInterval + PongTimeout (plus
// slack), long before the write deadline or TCP_USER_TIMEOUT. Before
// that, the live upload is never taken for death.
func TestWebSocketDeadPeerDuringUpload(t *testing.T) {
	for _, tc := range []string{"vanished", "stops reading"} {
		t.Run(tc, func(t *testing.T) {
			reader := sdkmetric.NewManualReader()
			d := liveDialer(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
			// The live peer runs in this process: a PongTimeout that a
			// loaded machine's pauses cannot reach.
			const ping, pong = 100 * time.Millisecond, 500 * time.Millisecond
			d.PingInterval, d.PongTimeout = ping, pong
			stop, release := make(chan struct{}), make(chan struct{})
			defer close(release)
			var url string
			var ns *faultnet.Netns
			var port int
			if tc == "vanished" {
				ns = faultnet.NewNetns(t)
				s := ns.Start(t, faultnet.Config{Handler: wsHandler(listening)})
				d.Dialer = &dial.Dialer{DialFunc: ns.DialContext}
				url, port = wsURL("ws", s, "/"), s.Port()
			} else {
				s := startWS(t, func(w http.ResponseWriter, r *http.Request) {
					c, err := upgrader.Upgrade(w, r, nil)
					if err != nil {
						return
					}
					defer c.Close()
					for {
						select {
						case <-stop:
							<-release // hung: reads no more, its kernel still acknowledges
							return
						default:
						}
						if _, _, err := c.ReadMessage(); err != nil {
							return
						}
					}
				}, nil)
				url = wsURL("ws", s, "/")
			}
			c, _, err := d.Dial(t.Context(), url, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			writeErr := make(chan error, 1)
			go func() {
				msg := make([]byte, 32<<10)
				for {
					_ = c.SetWriteDeadline(time.Now().Add(20 * time.Second))
					if err := c.WriteMessage(websocket.BinaryMessage, msg); err != nil {
						writeErr <- err
						return
					}
				}
			}()
			time.Sleep(3 * (ping + pong)) // a live upload
			if n := pingTimeouts(t, reader); n != 0 {
				t.Fatalf("%d ping timeouts during a live upload", n)
			}
			if tc == "vanished" {
				if err := ns.Vanish(port); err != nil {
					t.Fatal(err)
				}
			} else {
				close(stop)
			}
			start := time.Now()
			_, _, err = c.ReadMessage()
			took := time.Since(start)
			checkPongTimeout(t, err)
			if took > ping+pong+slack {
				t.Fatalf("dead peer detected after %v, want within %v plus slack", took, ping+pong)
			}
			c.Close()
			<-writeErr
			t.Logf("%s peer detected after %v during an upload (PingInterval %v + PongTimeout %v)", tc, took, ping, pong)
		})
	}
}

// TestWebSocketBadUpgradeAnswers: answers to the upgrade that are not a
// websocket's fail the dial promptly (long before HandshakeTimeout) with a
// *HandshakeError, retried only when another attempt may succeed, and
// leave nothing behind.
func TestWebSocketBadUpgradeAnswers(t *testing.T) {
	for _, tc := range []struct {
		name      string
		answer    func(key string) string
		attempts  int // attempts Dial makes with MaxAttempts 3
		status    int
		closeConn bool
	}{
		{"garbage", func(string) string { return "\x00\x01\x02garbage\r\n\r\n" }, 3, 0, true},
		{"101 without Sec-WebSocket-Accept", func(string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
		}, 1, 101, false},
		{"101 with a wrong accept", func(string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey("x") + "\r\n\r\n"
		}, 1, 101, false},
		{"101 with bad deflate parameters", func(k string) string {
			return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acceptKey(k) +
				"\r\nSec-WebSocket-Extensions: permessage-deflate\r\n\r\n"
		}, 1, 101, false},
		{"headers cut by EOF", func(string) string { return "HTTP/1.1 101 Switching Protocols\r\nUpgrade: webso" }, 3, 0, true},
		{"200 with a body", func(string) string { return "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello" }, 1, 200, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			var accepts atomic.Int64
			var wg sync.WaitGroup
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					c, err := ln.Accept()
					if err != nil {
						return
					}
					accepts.Add(1)
					wg.Add(1)
					go func() {
						defer wg.Done()
						defer c.Close()
						br := bufio.NewReader(c)
						req, err := http.ReadRequest(br)
						if err != nil {
							return
						}
						_, _ = io.WriteString(c, tc.answer(req.Header.Get("Sec-WebSocket-Key")))
						if !tc.closeConn {
							_, _ = io.Copy(io.Discard, c) // hold it open until the client goes
						}
					}()
				}
			}()
			defer func() { ln.Close(); wg.Wait() }()
			d := fastDialer(3)
			d.HandshakeTimeout = 5 * time.Second
			start := time.Now()
			c, resp, err := d.Dial(t.Context(), "ws://"+ln.Addr().String()+"/", nil)
			took := time.Since(start)
			if err == nil {
				c.Close()
				t.Fatal("Dial succeeded")
			}
			var he *transport.HandshakeError
			if !errors.As(err, &he) || he.StatusCode != tc.status {
				t.Fatalf("err %v (%T), want a *HandshakeError with status %d", err, err, tc.status)
			}
			if tc.status != 0 && (resp == nil || resp.StatusCode != tc.status) {
				t.Fatalf("resp %v, want the answer", resp)
			}
			if n := accepts.Load(); n != int64(tc.attempts) {
				t.Fatalf("%d attempts, want %d", n, tc.attempts)
			}
			if took > 2*time.Second {
				t.Fatalf("failed after %v", took)
			}
			t.Logf("%v after %v", err, took)
		})
	}
}

// TestWebSocketConcurrentCloses: Close from several goroutines at once,
// while writes run, on a session and on a conn whose peer just went mute
// (its pong timeout firing meanwhile): every Close returns promptly, and
// writes after it fail.
func TestWebSocketConcurrentCloses(t *testing.T) {
	t.Run("session", func(t *testing.T) {
		srv := startWS(t, listening, nil)
		s := newSession(t, transport.WebSocketSessionConfig{URL: wsURL("ws", srv, "/")})
		waitState(t, s, transport.WebSocketConnected)
		var wg sync.WaitGroup
		stop := make(chan struct{})
		for range 4 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for {
					select {
					case <-stop:
						return
					default:
					}
					_ = s.WriteMessage(t.Context(), websocket.BinaryMessage, make([]byte, 4096))
				}
			}()
		}
		time.Sleep(50 * time.Millisecond)
		start := time.Now()
		var cw sync.WaitGroup
		for range 4 {
			cw.Add(1)
			go func() { defer cw.Done(); s.Close() }()
		}
		cw.Wait()
		took := time.Since(start)
		close(stop)
		wg.Wait()
		if took > time.Second {
			t.Fatalf("concurrent Closes took %v", took)
		}
		if err := s.WriteMessage(t.Context(), websocket.TextMessage, []byte("x")); !errors.Is(err, transport.ErrSessionClosed) {
			t.Fatalf("write after Close: %v", err)
		}
	})
	t.Run("conn", func(t *testing.T) {
		srv := startWS(t, mute, nil)
		d := fastDialer(1)
		d.PingInterval, d.PongTimeout = 10*time.Millisecond, 20*time.Millisecond
		for i := range 10 {
			c, _, err := d.Dial(t.Context(), wsURL("ws", srv, "/"), nil)
			if err != nil {
				t.Fatal(err)
			}
			wrote := make(chan struct{})
			go func() {
				defer close(wrote)
				for c.WriteMessage(websocket.BinaryMessage, make([]byte, 1024)) == nil {
				}
			}()
			time.Sleep(time.Duration(i) * 2 * time.Millisecond) // around the pong timeout
			var cw sync.WaitGroup
			start := time.Now()
			for range 4 {
				cw.Add(1)
				go func() { defer cw.Done(); c.Close() }()
			}
			cw.Wait()
			if took := time.Since(start); took > time.Second {
				t.Fatalf("concurrent Closes took %v", took)
			}
			<-wrote // one writer at a time (gorilla's rule)
			if err := c.WriteMessage(websocket.TextMessage, []byte("x")); err == nil {
				t.Fatal("write after Close succeeded")
			}
		}
	})
}
