package dial_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"io"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
)

// secretLog is a server's KeyLogWriter that keeps its application traffic
// secret.
type secretLog struct {
	mu     sync.Mutex
	secret []byte
}

func (l *secretLog) Write(p []byte) (int, error) {
	if rest, ok := strings.CutPrefix(string(p), dial.ServerTrafficLabel); ok {
		f := strings.Fields(rest)
		if s, err := hex.DecodeString(f[1]); err == nil {
			l.mu.Lock()
			l.secret = s
			l.mu.Unlock()
		}
	}
	return len(p), nil
}

// Post-handshake TLS 1.3 messages a server may send (RFC 8446 §4.6).
func ticketMsg(lifetime uint32, ticketLen int) []byte {
	body := binary.BigEndian.AppendUint32(nil, lifetime)
	body = binary.BigEndian.AppendUint32(body, 7) // age_add
	body = append(body, 1, 0)                     // nonce
	body = binary.BigEndian.AppendUint16(body, uint16(ticketLen))
	body = append(body, bytes.Repeat([]byte{0xab}, ticketLen)...)
	body = append(body, 0, 0) // no extensions
	return append([]byte{4, 0, byte(len(body) >> 8), byte(len(body))}, body...)
}

func keyUpdateMsg(requested bool) []byte {
	m := []byte{24, 0, 0, 1, 0}
	if requested {
		m[4] = 1
	}
	return m
}

// injectingServer is a TLS 1.3 server that completes the handshake with
// crypto/tls (sending no session ticket), reads the request, and then
// writes the records script makes, sealed by hand: the post-handshake
// records crypto/tls never sends on its own. It returns the address.
func injectingServer(t *testing.T, script func(s *dial.TLS13Sealer) [][]byte, then func(c net.Conn, s *dial.TLS13Sealer)) (string, *tls.Config) {
	t.Helper()
	serverCfg, clientCfg, _ := testCert(t, testHost)
	serverCfg.MinVersion = tls.VersionTLS13
	serverCfg.SessionTicketsDisabled = true
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	done := make(chan struct{})
	t.Cleanup(func() {
		close(done)
		ln.Close()
		wg.Wait()
	})
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
				log := &secretLog{}
				cfg := serverCfg.Clone()
				cfg.KeyLogWriter = log
				tc := tls.Server(raw, cfg)
				_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
				if tc.Handshake() != nil {
					return
				}
				if _, err := bufio.NewReader(tc).ReadString('\n'); err != nil {
					return
				}
				_ = tc.SetDeadline(time.Time{})
				log.mu.Lock()
				sealer, err := dial.NewTLS13Sealer(tc.ConnectionState().CipherSuite, log.secret)
				log.mu.Unlock()
				if err != nil {
					t.Errorf("server: %v", err)
					return
				}
				for _, rec := range script(sealer) {
					if _, err := raw.Write(rec); err != nil {
						return
					}
					time.Sleep(20 * time.Millisecond) // one record per segment, mostly
				}
				if then != nil {
					then(raw, sealer)
				}
				go func() { _, _ = io.Copy(io.Discard, raw) }()
				<-done
			}()
		}
	}()
	return ln.Addr().String(), clientCfg
}

// readBounded runs one Read on conn and fails the test when it has not
// returned within limit: the hang this file is about.
func readBounded(t *testing.T, conn net.Conn, limit time.Duration) (string, time.Duration, error) {
	t.Helper()
	type result struct {
		s   string
		err error
	}
	ch := make(chan result, 1)
	start := time.Now()
	go func() {
		buf := make([]byte, 64)
		n, err := conn.Read(buf)
		ch <- result{string(buf[:n]), err}
	}()
	select {
	case r := <-ch:
		return r.s, time.Since(start), r.err
	case <-time.After(limit):
		conn.Close() // unblock it, so that the goroutine ends
		<-ch
		t.Fatalf("Read still blocked after %v: the first-byte bound was lost", limit)
	}
	return "", 0, nil
}

func requireFirstByteTimeout(t *testing.T, err error) {
	t.Helper()
	var de *dial.Error
	require.ErrorAs(t, err, &de, "want a first-byte timeout")
	assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
}

// TestFirstByteTLS13PostHandshakeRecords: every kind of record a TLS 1.3
// server may send after the handshake, followed by silence, ends in the
// first-byte timeout, never in a Read without a bound (break 22: a
// KeyUpdate, or a ticket with lifetime 0, ended the watch and the Read
// waited forever); followed by a reply, ends in the reply, and the watch is
// then off (a later quiet spell longer than the limit is no error).
func TestFirstByteTLS13PostHandshakeRecords(t *testing.T) {
	const hs, data = 22, 23
	cases := []struct {
		name   string
		script func(s *dial.TLS13Sealer) [][]byte
	}{
		{"ticket with lifetime 0", func(s *dial.TLS13Sealer) [][]byte {
			return [][]byte{s.Seal(hs, ticketMsg(0, 32))}
		}},
		{"ticket with a lifetime", func(s *dial.TLS13Sealer) [][]byte {
			return [][]byte{s.Seal(hs, ticketMsg(3600, 32))}
		}},
		{"two tickets in one record", func(s *dial.TLS13Sealer) [][]byte {
			return [][]byte{s.Seal(hs, append(ticketMsg(3600, 32), ticketMsg(0, 16)...))}
		}},
		{"ticket split across two records", func(s *dial.TLS13Sealer) [][]byte {
			m := ticketMsg(3600, 64)
			return [][]byte{s.Seal(hs, m[:10]), s.Seal(hs, m[10:])}
		}},
		{"zero-length application data", func(s *dial.TLS13Sealer) [][]byte {
			return [][]byte{s.Seal(data, nil), s.Seal(data, nil)}
		}},
		{"KeyUpdate not requested", func(s *dial.TLS13Sealer) [][]byte {
			r := s.Seal(hs, keyUpdateMsg(false))
			require.NoError(t, s.Update())
			return [][]byte{r}
		}},
		{"KeyUpdate requested", func(s *dial.TLS13Sealer) [][]byte {
			r := s.Seal(hs, keyUpdateMsg(true))
			require.NoError(t, s.Update())
			return [][]byte{r}
		}},
		{"KeyUpdate, ticket, empty record, KeyUpdate", func(s *dial.TLS13Sealer) [][]byte {
			a := s.Seal(hs, keyUpdateMsg(true))
			require.NoError(t, s.Update())
			b := s.Seal(hs, ticketMsg(0, 8))
			c := s.Seal(data, nil)
			d := s.Seal(hs, keyUpdateMsg(false))
			require.NoError(t, s.Update())
			return [][]byte{a, b, c, d}
		}},
	}
	const limit = 400 * time.Millisecond
	for _, tc := range cases {
		for _, reply := range []bool{false, true} {
			name := tc.name + ", then silence"
			if reply {
				name = tc.name + ", then the reply"
			}
			t.Run(name, func(t *testing.T) {
				checkFDs(t)
				var then func(c net.Conn, s *dial.TLS13Sealer)
				if reply {
					then = func(c net.Conn, s *dial.TLS13Sealer) {
						_, _ = c.Write(s.Seal(data, []byte("hello")))
						time.Sleep(2 * limit) // quiet for longer than the limit
						_, _ = c.Write(s.Seal(data, []byte("again")))
					}
				}
				addr, clientCfg := injectingServer(t, tc.script, then)
				clientCfg.MinVersion = tls.VersionTLS13
				d := dial.Dialer{Resolver: resolverFor(addr), TLSConfig: clientCfg, FirstByteTimeout: limit}
				_, port, _ := net.SplitHostPort(addr)
				conn, err := d.DialTLSContext(t.Context(), "tcp", net.JoinHostPort(testHost, port))
				require.NoError(t, err)
				defer conn.Close()
				_, err = conn.Write([]byte("GET\n"))
				require.NoError(t, err)
				got, elapsed, err := readBounded(t, conn, 5*time.Second)
				if !reply {
					requireFirstByteTimeout(t, err)
					assert.Less(t, elapsed, 3*time.Second)
					return
				}
				require.NoError(t, err)
				assert.Equal(t, "hello", got)
				got, _, err = readBounded(t, conn, 5*time.Second)
				require.NoError(t, err, "after the reply the watch is off: a quiet spell is no first-byte timeout")
				assert.Equal(t, "again", got)
			})
		}
	}
}

// opensslServer runs `openssl s_server` with args on a loopback port the
// kernel picks and returns its address and its stdin (commands and data
// for the conn).
func opensslServer(t *testing.T, args ...string) (string, io.Writer, *tls.Config) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed (.ci/run installs Debian's openssl)")
	}
	serverCfg, clientCfg, _ := testCert(t, testHost)
	dir := t.TempDir()
	certFile, keyFile := writePEM(t, dir, serverCfg.Certificates[0])
	ctx, cancel := context.WithCancel(context.Background())
	all := append([]string{"s_server", "-accept", "127.0.0.1:0", "-cert", certFile, "-key", keyFile, "-naccept", "1"}, args...)
	cmd := exec.CommandContext(ctx, bin, all...)
	stdin, err := cmd.StdinPipe()
	require.NoError(t, err)
	var out syncBuffer
	cmd.Stdout, cmd.Stderr = &out, &out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		cancel()
		_ = stdin.Close()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("openssl s_server output:\n%s", out.String())
		}
	})
	addr := "127.0.0.1:" + itoa(sServerPort(t, &out))
	return addr, stdin, clientCfg
}

// sServerAccept is the line in which openssl s_server, started with
// -accept 127.0.0.1:0 and without -quiet, reports the port it listens on.
var sServerAccept = regexp.MustCompile(`(?m)^ACCEPT 127\.0\.0\.1:([0-9]+)\r?$`)

// sServerPort waits for s_server to report the port it listens on, in out.
// It picks it by binding port 0: a port picked by listening and closing
// first could be taken by another test before s_server binds it.
func sServerPort(t *testing.T, out *syncBuffer) int {
	t.Helper()
	require.Eventually(t, func() bool { return sServerAccept.MatchString(out.String()) }, 10*time.Second, 10*time.Millisecond,
		"openssl s_server did not start")
	port, err := strconv.Atoi(sServerAccept.FindStringSubmatch(out.String())[1])
	require.NoError(t, err)
	return port
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// TestFirstByteOpenSSLPostHandshake: a real OpenSSL server (tickets on
// every conn) that, after the request, sends a KeyUpdate (k: not
// requested, K: requested) or asks to renegotiate (TLS 1.2: r, R), and
// then either stays silent or answers. Each case ends in the reply or in
// the first-byte timeout, never in a hang (break 22: k or K, then silence,
// left the Read blocked forever).
func TestFirstByteOpenSSLPostHandshake(t *testing.T) {
	cases := []struct {
		name   string
		args   []string
		cmds   string
		reneg  tls.RenegotiationSupport
		answer bool
		// ticketsOff sets SessionTicketsDisabled on the client: OpenSSL
		// sends its tickets anyway and crypto/tls drops them unseen
		// (break 23).
		ticketsOff bool
	}{
		{"TLS 1.3 tickets, client SessionTicketsDisabled, silence", []string{"-tls1_3"}, "", 0, false, true},
		{"TLS 1.3 tickets, client SessionTicketsDisabled, the reply", []string{"-tls1_3"}, "hello\n", 0, true, true},
		{"TLS 1.3 KeyUpdate k", []string{"-tls1_3"}, "k\n", 0, false, false},
		{"TLS 1.3 KeyUpdate K", []string{"-tls1_3"}, "K\n", 0, false, false},
		{"TLS 1.3 KeyUpdate k then the reply", []string{"-tls1_3"}, "k\nhello\n", 0, true, false},
		{"TLS 1.3 KeyUpdate K then the reply", []string{"-tls1_3"}, "K\nhello\n", 0, true, false},
		{"TLS 1.3 ChaCha20-Poly1305, silence", []string{"-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"}, "", 0, false, false},
		{"TLS 1.3 ChaCha20-Poly1305, K then the reply", []string{"-tls1_3", "-ciphersuites", "TLS_CHACHA20_POLY1305_SHA256"}, "K\nhello\n", 0, true, false},
		{"TLS 1.3 AES-256-GCM, the reply", []string{"-tls1_3", "-ciphersuites", "TLS_AES_256_GCM_SHA384"}, "hello\n", 0, true, false},
		{"TLS 1.2 renegotiation r, refused", []string{"-tls1_2"}, "r\n", tls.RenegotiateNever, false, false},
		{"TLS 1.2 renegotiation R, accepted", []string{"-tls1_2"}, "R\n", tls.RenegotiateOnceAsClient, false, false},
		{"TLS 1.2 renegotiation r, accepted, then the reply", []string{"-tls1_2"}, "r\nhello\n", tls.RenegotiateOnceAsClient, true, false},
		{"TLS 1.2 the reply", []string{"-tls1_2"}, "hello\n", 0, true, false},
	}
	const limit = 500 * time.Millisecond
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, stdin, clientCfg := opensslServer(t, tc.args...)
			clientCfg.Renegotiation = tc.reneg
			clientCfg.SessionTicketsDisabled = tc.ticketsOff
			d := dial.Dialer{Resolver: resolverFor(addr), TLSConfig: clientCfg, FirstByteTimeout: limit}
			_, port, _ := net.SplitHostPort(addr)
			conn, err := d.DialTLSContext(t.Context(), "tcp", net.JoinHostPort(testHost, port))
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("GET\n"))
			require.NoError(t, err)
			// Read all along, as a client waiting for its reply does: a
			// renegotiation or KeyUpdate is handled inside that Read.
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
						return // a first-byte timeout, or an end of its own
					}
				}
			}()
			time.Sleep(100 * time.Millisecond) // the request first
			for _, line := range strings.SplitAfter(tc.cmds, "\n") {
				_, _ = io.WriteString(stdin, line)
				time.Sleep(150 * time.Millisecond)
			}
			var got strings.Builder
			hang := time.NewTimer(5 * time.Second)
			defer hang.Stop()
			for {
				select {
				case r, ok := <-results:
					if !ok {
						assert.False(t, tc.answer, "the reply never came (got %q)", got.String())
						return
					}
					got.WriteString(r.s)
					if tc.answer {
						require.NoError(t, r.err)
						if strings.Contains(got.String(), "hello") {
							conn.Close()
							for range results {
							}
							return
						}
						continue
					}
					// No reply was sent: the Read ends in the first-byte
					// timeout, or in an error of its own that ends the conn
					// (a refused renegotiation: tls.Conn fails every later
					// Read at once).
					require.Error(t, r.err, "no reply was sent: got %q", got.String())
					var de *dial.Error
					if errors.As(r.err, &de) {
						requireFirstByteTimeout(t, r.err)
					} else {
						assert.True(t, tc.reneg == tls.RenegotiateNever, "only a refused renegotiation ends otherwise: %v", r.err)
						_, err := conn.Read(make([]byte, 1))
						assert.Error(t, err, "and every later Read fails at once")
					}
				case <-hang.C:
					conn.Close()
					for range results {
					}
					t.Fatalf("no reply and no end within 5s (got %q): a Read without its bound", got.String())
				}
			}
		})
	}
}
