package dial_test

import (
	"bufio"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha1"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
)

// tls12Server is a TLS 1.2 server of one cipher suite (TLS 1.3 when suite
// is 0) that answers each line with reply and then keeps the conn open and
// idle.
func tls12Server(t *testing.T, suite uint16, reply string) (string, *tls.Config) {
	t.Helper()
	serverCfg, clientCfg, _ := testCert(t, testHost)
	if suite != 0 { // else TLS 1.3
		serverCfg.MaxVersion = tls.VersionTLS12
		serverCfg.CipherSuites = []uint16{suite}
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			raw, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer raw.Close()
				tc := tls.Server(raw, serverCfg)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				br := bufio.NewReader(tc)
				for {
					if _, err := br.ReadString('\n'); err != nil {
						return
					}
					if _, err := tc.Write([]byte(reply)); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), clientCfg
}

// TestFirstByteTLS12ShortReplyEndsWatch: a short reply under a TLS 1.2 CBC
// suite (a record no longer than an empty one could be) is the reply: the
// watch ends, and a later idle Read is bounded by the caller's deadline,
// not cut as a first-byte stall (nor the peer demoted).
func TestFirstByteTLS12ShortReplyEndsWatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		suite uint16
	}{
		{"CBC_SHA", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA},
		{"CBC_SHA256", tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256},
		{"GCM", tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256},
	} {
		for _, reply := range []string{"+OK\r\n", "0123456789012345678901234567\n", "1"} {
			t.Run(tc.name, func(t *testing.T) {
				addr, cfg := tls12Server(t, tc.suite, reply)
				cfg.ServerName = testHost
				cfg.CipherSuites = []uint16{tc.suite}
				h := &dial.Health{}
				d := &dial.Dialer{TLSConfig: cfg, FirstByteTimeout: 150 * time.Millisecond, Health: h}
				conn, err := d.DialTLSContext(context.Background(), "tcp", addr)
				require.NoError(t, err)
				defer conn.Close()
				_, err = conn.Write([]byte("PING\n"))
				require.NoError(t, err)
				got := make([]byte, len(reply))
				_, err = conn.Read(got)
				require.NoError(t, err)
				require.Equal(t, reply, string(got))
				// Idle: the caller's own deadline, well past the bound.
				require.NoError(t, conn.SetReadDeadline(time.Now().Add(400*time.Millisecond)))
				_, err = conn.Read(got)
				var de *dial.Error
				require.False(t, errors.As(err, &de), "idle read after the reply cut as %v", err)
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
			})
		}
	}
}

// cbcSealer seals the server's TLS 1.2 records of
// TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA by hand (RFC 5246 §6.2.3.2), so a
// test can send the empty records crypto/tls never sends.
type cbcSealer struct {
	macKey []byte
	block  cipher.Block
	seq    uint64
}

func (s *cbcSealer) seal(content []byte) []byte {
	h := hmac.New(sha1.New, s.macKey)
	var hdr [13]byte
	binary.BigEndian.PutUint64(hdr[:], s.seq)
	hdr[8], hdr[9], hdr[10] = 23, 3, 3
	binary.BigEndian.PutUint16(hdr[11:], uint16(len(content)))
	h.Write(hdr[:])
	h.Write(content)
	s.seq++
	plain := h.Sum(append([]byte(nil), content...))
	pad := 15 - len(plain)%16
	for range pad + 1 {
		plain = append(plain, byte(pad))
	}
	out := make([]byte, 16+len(plain))
	_, _ = rand.Read(out[:16])
	cipher.NewCBCEncrypter(s.block, out[:16]).CryptBlocks(out[16:], plain)
	return append([]byte{23, 3, 3, byte(len(out) >> 8), byte(len(out))}, out...)
}

type masterLog struct {
	mu           sync.Mutex
	clientRandom []byte
	master       []byte
}

func (l *masterLog) Write(p []byte) (int, error) {
	if rest, ok := strings.CutPrefix(string(p), "CLIENT_RANDOM "); ok {
		f := strings.Fields(rest)
		l.mu.Lock()
		l.clientRandom, _ = hex.DecodeString(f[0])
		l.master, _ = hex.DecodeString(f[1])
		l.mu.Unlock()
	}
	return len(p), nil
}

type firstWrite struct {
	net.Conn
	mu    sync.Mutex
	first []byte
}

func (c *firstWrite) Write(p []byte) (int, error) {
	c.mu.Lock()
	if c.first == nil {
		c.first = append([]byte(nil), p...)
	}
	c.mu.Unlock()
	return c.Conn.Write(p)
}

// TestFirstByteTLS12EmptyCBCRecordIsNoReply: empty application data
// records under a CBC suite (as OpenSSL sends against BEAST) followed by
// silence end in the first-byte timeout; followed by a reply, in the reply.
func TestFirstByteTLS12EmptyCBCRecordIsNoReply(t *testing.T) {
	const suite = tls.TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA
	for _, reply := range []string{"", "+OK\r\n"} {
		t.Run("reply="+strings.TrimSpace(reply), func(t *testing.T) {
			serverCfg, clientCfg, _ := testCert(t, testHost)
			serverCfg.MaxVersion = tls.VersionTLS12
			serverCfg.CipherSuites = []uint16{suite}
			klog := &masterLog{}
			serverCfg.KeyLogWriter = klog
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			require.NoError(t, err)
			done := make(chan struct{})
			var wg sync.WaitGroup
			t.Cleanup(func() { close(done); ln.Close(); wg.Wait() })
			wg.Add(1)
			go func() {
				defer wg.Done()
				raw, err := ln.Accept()
				if err != nil {
					return
				}
				defer raw.Close()
				fw := &firstWrite{Conn: raw}
				tc := tls.Server(fw, serverCfg)
				if _, err := bufio.NewReader(tc).ReadString('\n'); err != nil {
					return
				}
				klog.mu.Lock()
				kb := dial.PRF12(klog.master, append(append([]byte("key expansion"), fw.first[11:43]...), klog.clientRandom...), 2*20+2*16)
				klog.mu.Unlock()
				block, _ := aes.NewCipher(kb[56:72])
				s := &cbcSealer{macKey: kb[20:40], block: block, seq: 1}
				for range 3 {
					_, _ = raw.Write(s.seal(nil))
					time.Sleep(10 * time.Millisecond)
				}
				if reply != "" {
					_, _ = raw.Write(s.seal([]byte(reply)))
				}
				go func() { _, _ = io.Copy(io.Discard, raw) }()
				<-done
			}()
			clientCfg.ServerName = testHost
			clientCfg.CipherSuites = []uint16{suite}
			d := &dial.Dialer{TLSConfig: clientCfg, FirstByteTimeout: 300 * time.Millisecond}
			conn, err := d.DialTLSContext(context.Background(), "tcp", ln.Addr().String())
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("PING\n"))
			require.NoError(t, err)
			got, _, err := readBounded(t, conn, 5*time.Second)
			if reply == "" {
				requireFirstByteTimeout(t, err)
				return
			}
			require.NoError(t, err)
			require.Equal(t, reply, got)
		})
	}
}

// TestFirstByteTLS13ForgedRecordFailsRead: a record whose tag does not
// verify (forged on the path, or by a hostile server) — carrying a reply,
// a ticket or a KeyUpdate — ends the Read at once with tls.Conn's error,
// whatever the watch makes of it: the watch needs no tag check of its own.
func TestFirstByteTLS13ForgedRecordFailsRead(t *testing.T) {
	forge := func(r []byte) []byte { r[len(r)-1] ^= 1; return r }
	for name, script := range map[string]func(s *dial.TLS13Sealer) [][]byte{
		"reply":     func(s *dial.TLS13Sealer) [][]byte { return [][]byte{forge(s.Seal(23, []byte("hello")))} },
		"ticket":    func(s *dial.TLS13Sealer) [][]byte { return [][]byte{forge(s.Seal(22, ticketMsg(0, 8)))} },
		"keyupdate": func(s *dial.TLS13Sealer) [][]byte { return [][]byte{forge(s.Seal(22, keyUpdateMsg(true)))} },
	} {
		t.Run(name, func(t *testing.T) {
			addr, clientCfg := injectingServer(t, script, nil)
			clientCfg.MinVersion = tls.VersionTLS13
			const limit = 3 * time.Second
			d := dial.Dialer{Resolver: resolverFor(addr), TLSConfig: clientCfg, FirstByteTimeout: limit}
			_, port, _ := net.SplitHostPort(addr)
			conn, err := d.DialTLSContext(t.Context(), "tcp", net.JoinHostPort(testHost, port))
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("GET\n"))
			require.NoError(t, err)
			_, elapsed, err := readBounded(t, conn, 2*limit)
			require.Error(t, err)
			require.ErrorContains(t, err, "bad record MAC")
			require.Less(t, elapsed, limit)
		})
	}
}

// TestFirstByteRenegotiationThenWritesRestartClock: after a TLS 1.2
// renegotiation (OpenSSL's r) the caller's own Writes restart the clock
// again: a request still being written (an upload) is not cut as a
// first-byte stall because the server renegotiated before the reply.
func TestFirstByteRenegotiationThenWritesRestartClock(t *testing.T) {
	addr, stdin, clientCfg := opensslServer(t, "-tls1_2")
	clientCfg.Renegotiation = tls.RenegotiateOnceAsClient
	const limit = 500 * time.Millisecond
	d := dial.Dialer{Resolver: resolverFor(addr), TLSConfig: clientCfg, FirstByteTimeout: limit}
	_, port, _ := net.SplitHostPort(addr)
	conn, err := d.DialTLSContext(t.Context(), "tcp", net.JoinHostPort(testHost, port))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("POST\n"))
	require.NoError(t, err)
	type result struct {
		s   string
		err error
	}
	results := make(chan result, 16)
	go func() {
		defer close(results)
		buf := make([]byte, 64)
		for {
			n, err := conn.Read(buf)
			results <- result{string(buf[:n]), err}
			if err != nil {
				return
			}
		}
	}()
	time.Sleep(50 * time.Millisecond)
	_, _ = io.WriteString(stdin, "r\n") // renegotiate before the reply
	// The upload goes on: a piece every 200ms for 1.2s, well past the
	// limit from the first Write, never past it from the latest.
	for range 6 {
		time.Sleep(200 * time.Millisecond)
		_, err := conn.Write([]byte("body\n"))
		require.NoError(t, err)
	}
	time.Sleep(100 * time.Millisecond)
	_, _ = io.WriteString(stdin, "hello\n")
	var got strings.Builder
	hang := time.NewTimer(5 * time.Second)
	defer hang.Stop()
	for {
		select {
		case r, ok := <-results:
			require.True(t, ok, "the reply never came (got %q)", got.String())
			require.NoError(t, r.err, "got %q", got.String())
			got.WriteString(r.s)
			if strings.Contains(got.String(), "hello") {
				conn.Close()
				for range results {
				}
				return
			}
		case <-hang.C:
			conn.Close()
			for range results {
			}
			t.Fatalf("no reply within 5s (got %q)", got.String())
		}
	}
}

// TestFirstByteResumedSessionReplyEndsWatch: on a resumed session (the
// caller's ClientSessionCache and KeyLogWriter set) the reply still ends
// the watch: an idle Read after it is bounded by the caller's deadline.
func TestFirstByteResumedSessionReplyEndsWatch(t *testing.T) {
	for _, tc := range []struct {
		name  string
		max   uint16
		suite uint16
	}{{"TLS 1.3", tls.VersionTLS13, 0}, {"TLS 1.2 GCM", tls.VersionTLS12, tls.TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256}} {
		t.Run(tc.name, func(t *testing.T) {
			addr, cfg := tls12Server(t, tc.suite, "+OK\r\n")
			cfg.ServerName = testHost
			cfg.MaxVersion = tc.max
			cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
			var keys syncBuffer
			cfg.KeyLogWriter = &keys
			d := &dial.Dialer{TLSConfig: cfg, FirstByteTimeout: 150 * time.Millisecond}
			for i := range 2 {
				conn, err := d.DialTLSContext(context.Background(), "tcp", addr)
				require.NoError(t, err)
				_, err = conn.Write([]byte("PING\n"))
				require.NoError(t, err)
				got := make([]byte, 5)
				_, err = io.ReadFull(conn, got)
				require.NoError(t, err)
				st := conn.(*tls.Conn).ConnectionState()
				require.Equal(t, i == 1, st.DidResume)
				require.Equal(t, tc.max, st.Version)
				require.NoError(t, conn.SetReadDeadline(time.Now().Add(400*time.Millisecond)))
				_, err = conn.Read(got)
				var de *dial.Error
				require.False(t, errors.As(err, &de), "dial %d: idle read after the reply cut as %v", i, err)
				require.ErrorIs(t, err, os.ErrDeadlineExceeded)
				conn.Close()
			}
			require.NotEmpty(t, keys.String(), "the caller's KeyLogWriter got its lines")
		})
	}
}
