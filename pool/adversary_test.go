package pool_test

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// splitConn is a server's socket whose next Write, once split is armed,
// sends only its first head bytes and holds the rest until hold is closed:
// a TLS record whose first TCP segment has arrived and whose rest is in
// flight.
type splitConn struct {
	net.Conn
	mu   sync.Mutex
	head int           // > 0: split the next Write after head bytes
	hold chan struct{} // closed to send the rest
}

func (c *splitConn) Write(b []byte) (int, error) {
	c.mu.Lock()
	head, hold := c.head, c.hold
	c.head = 0
	c.mu.Unlock()
	if head <= 0 || head >= len(b) {
		return c.Conn.Write(b)
	}
	n, err := c.Conn.Write(b[:head])
	if err != nil {
		return n, err
	}
	<-hold
	m, err := c.Conn.Write(b[head:])
	return n + m, err
}

func (c *splitConn) split(head int) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.head, c.hold = head, make(chan struct{})
	return c.hold
}

// splitTLSServer accepts TLS conns on loopback and echoes on them; the
// server side of each conn is sent on the returned channel with its
// splitConn, so the test can write unasked bytes and split them.
type serverSide struct {
	tc *tls.Conn
	sc *splitConn
}

func splitTLSServer(t *testing.T, cfg *tls.Config) (addr string, conns <-chan serverSide) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	ch := make(chan serverSide, 8)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			sc := &splitConn{Conn: nc}
			tc := tls.Server(sc, cfg)
			mu.Lock()
			open = append(open, nc)
			mu.Unlock()
			ch <- serverSide{tc, sc}
			wg.Add(1)
			go func() {
				defer wg.Done()
				buf := make([]byte, 512)
				for {
					n, err := tc.Read(buf)
					if err != nil {
						return
					}
					if _, err := tc.Write(buf[:n]); err != nil {
						return
					}
				}
			}()
		}
	}()
	t.Cleanup(func() {
		_ = ln.Close()
		mu.Lock()
		for _, c := range open {
			_ = c.Close()
		}
		mu.Unlock()
		wg.Wait()
	})
	return ln.Addr().String(), ch
}

// The unasked reply is a TLS record of which only the first segment has
// arrived when the pool probes the idle conn (a late reply, split by TCP):
// the bytes are data, and the next holder must not read them as its answer.
// TLS 1.2 and 1.3.
func TestProbeTLSPartialRecordIsDead(t *testing.T) {
	for _, v := range []uint16{tls.VersionTLS12, tls.VersionTLS13} {
		t.Run(tls.VersionName(v), func(t *testing.T) {
			serverCfg, clientCfg := faultnet.SelfSigned(t)
			serverCfg.MaxVersion = v
			addr, conns := splitTLSServer(t, serverCfg)
			d := tls.Dialer{Config: clientCfg}
			p := newPool(t, pool.Config{
				Dial:              func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
				CheckAfterIdle:    time.Nanosecond,
				HealthCheckPeriod: -1,
			})
			c, err := p.Acquire(t.Context())
			require.NoError(t, err)
			echoFull(t, c, "ping")
			c.Release()
			srv := <-conns

			hold := srv.sc.split(8) // header and 3 bytes of the record
			wrote := make(chan error, 1)
			go func() { _, err := srv.tc.Write([]byte("stale-reply")); wrote <- err }()
			time.Sleep(finCrossesLoopback)

			c2, err := p.Acquire(t.Context())
			close(hold) // the rest of the record arrives (or meets the evicted conn's reset)
			<-wrote
			require.NoError(t, err)
			_, err = c2.Write([]byte("pong"))
			require.NoError(t, err)
			buf := make([]byte, 4)
			_ = c2.SetReadDeadline(time.Now().Add(5 * time.Second))
			_, err = io.ReadFull(c2, buf)
			require.NoError(t, err)
			assert.Equal(t, "pong", string(buf), "the next holder read another request's reply")
			c2.Release()
			assert.Equal(t, int64(1), p.Stats().EvictedDead)
		})
	}
}

// openSSLServer starts Debian's openssl s_server (TLS 1.3) on loopback with
// the certificate of serverCfg. Lines written to the returned stdin are
// commands or data for the one client ("K\n": a KeyUpdate that requests
// the client's; "k\n": one that does not); what the client sends goes to
// out.
func openSSLServer(t *testing.T, serverCfg *tls.Config) (addr string, stdin io.Writer, out *syncBuffer) {
	t.Helper()
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed")
	}
	dir := t.TempDir()
	cert := serverCfg.Certificates[0]
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	certFile, keyFile := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	// stdbuf: s_server reports a KeyUpdate with printf, which a pipe
	// would buffer until exit. Port 0: the kernel picks a free port and
	// s_server reports it (a port picked by listening and closing first
	// could be taken by another test before s_server binds it).
	args := []string{bin, "s_server", "-accept", "127.0.0.1:0", "-cert", certFile, "-key", keyFile, "-tls1_3", "-naccept", "1"}
	if sb, err := exec.LookPath("stdbuf"); err == nil {
		args = append([]string{sb, "-oL"}, args...)
	}
	cmd := exec.Command(args[0], args[1:]...)
	in, err := cmd.StdinPipe()
	require.NoError(t, err)
	out = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = out, out
	require.NoError(t, cmd.Start())
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		_ = in.Close()
		_ = cmd.Wait()
		if t.Failed() {
			t.Logf("openssl s_server:\n%s", out.String())
		}
	})
	require.Eventually(t, func() bool { return sServerAccept.MatchString(out.String()) },
		10*time.Second, 10*time.Millisecond, "openssl s_server did not start")
	addr = sServerAccept.FindStringSubmatch(out.String())[1]
	return addr, in, out
}

// sServerAccept is the line in which openssl s_server, started with
// -accept 127.0.0.1:0, reports the address it listens on.
var sServerAccept = regexp.MustCompile(`(?m)^ACCEPT (127\.0\.0\.1:[0-9]+)\r?$`)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.b.String()
}

// A TLS 1.3 server sent a KeyUpdate that requests the client's while the
// conn was idle: the probe processes it, and tls.Conn must send its own
// KeyUpdate. The conn is healthy, and the holder it is handed to must be
// able to write on it (a write that failed under the probe's deadline
// would stay failed in the tls.Conn for ever).
func TestProbeTLSKeyUpdateRequested(t *testing.T) {
	serverCfg, clientCfg := faultnet.SelfSigned(t)
	addr, stdin, out := openSSLServer(t, serverCfg)
	d := tls.Dialer{Config: clientCfg}
	p := newPool(t, pool.Config{
		Dial:              func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", addr) },
		CheckAfterIdle:    time.Nanosecond,
		HealthCheckPeriod: -1,
		MaxConns:          1,
	})
	c, err := p.Acquire(t.Context())
	require.NoError(t, err)
	_, err = c.Write([]byte("first\n"))
	require.NoError(t, err)
	c.Release()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "first") },
		5*time.Second, 5*time.Millisecond)

	_, err = io.WriteString(stdin, "K\n")
	require.NoError(t, err)
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "SSL_do_handshake") },
		5*time.Second, 5*time.Millisecond)
	time.Sleep(finCrossesLoopback)

	c, err = p.Acquire(t.Context())
	require.NoError(t, err)
	_, err = c.Write([]byte("second\n"))
	require.NoError(t, err, "the conn handed out cannot write")
	c.Release()
	require.Eventually(t, func() bool { return strings.Contains(out.String(), "second") },
		5*time.Second, 5*time.Millisecond, "the server got the holder's bytes")
}

// A TLS peer that stopped reading: the holder's write fills the send
// buffer and times out, so the conn is broken. Destroying it (Release)
// and closing the pool must not wait for tls.Conn's close_notify, which
// blocks on the full buffer for up to 5s per conn.
func TestDestroyTLSConnToPeerNotReading(t *testing.T) {
	serverCfg, clientCfg := faultnet.SelfSigned(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var wg sync.WaitGroup
	var mu sync.Mutex
	var held []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			nc, err := ln.Accept()
			if err != nil {
				return
			}
			tc := tls.Server(nc, serverCfg)
			_ = tc.SetDeadline(time.Now().Add(5 * time.Second))
			if tc.Handshake() != nil {
				nc.Close()
				continue
			}
			mu.Lock()
			held = append(held, nc) // never read again
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		mu.Lock()
		for _, c := range held {
			c.Close()
		}
		mu.Unlock()
	})
	// A fixed send buffer (no autotuning that could open room later):
	// once a write timed out, the buffer stays full, and close_notify
	// cannot be written.
	nd := &net.Dialer{Control: func(_, _ string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) { serr = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_SNDBUF, 16<<10) })
		if err != nil {
			return err
		}
		return serr
	}}
	d := tls.Dialer{NetDialer: nd, Config: clientCfg}
	p, err := pool.New(pool.Config{
		Dial:              func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", ln.Addr().String()) },
		HealthCheckPeriod: -1,
		MaxConns:          3,
	})
	require.NoError(t, err)
	defer p.Close()
	var conns []*pool.Conn
	for range 3 {
		c, err := p.Acquire(t.Context())
		require.NoError(t, err)
		require.NoError(t, c.SetWriteDeadline(time.Now().Add(200*time.Millisecond)))
		big := make([]byte, 1<<20)
		for {
			if _, err := c.Write(big); err != nil {
				break // the send buffers are full
			}
		}
		conns = append(conns, c)
	}
	start := time.Now()
	conns[0].Release() // broken: destroyed
	assert.Less(t, time.Since(start), time.Second, "Release of a broken conn waited for the peer")
	start = time.Now()
	require.NoError(t, p.Close()) // closes the two in use
	assert.Less(t, time.Since(start), time.Second, "Close waited for the peer")
}

// slowCloseConn takes a while to close, as a *tls.Conn does while its
// close_notify waits for room in the send buffer.
type slowCloseConn struct {
	net.Conn
	open *atomic.Int64
}

func (c *slowCloseConn) Close() error {
	time.Sleep(20 * time.Millisecond)
	err := c.Conn.Close()
	c.open.Add(-1)
	return err
}

// MaxConns counts a connection until it is closed: a destroyed conn whose
// Close has not returned is still open at the server (a database's
// max_connections counts it), so no dial may take its place before.
func TestMaxConnsCountsConnsBeingClosed(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	var open, maxOpen atomic.Int64
	var nd net.Dialer
	p := newPool(t, pool.Config{
		Dial: func(ctx context.Context) (net.Conn, error) {
			n := open.Add(1)
			for {
				m := maxOpen.Load()
				if n <= m || maxOpen.CompareAndSwap(m, n) {
					break
				}
			}
			c, err := nd.DialContext(ctx, "tcp", srv.Addr())
			if err != nil {
				open.Add(-1)
				return nil, err
			}
			return &slowCloseConn{Conn: c, open: &open}, nil
		},
		MaxConns:          2,
		DialRate:          -1, // a token bucket would space the dials past the closes
		HealthCheckPeriod: -1,
	})
	var wg sync.WaitGroup
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				c, err := p.Acquire(t.Context())
				if err != nil {
					t.Error(err)
					return
				}
				c.MarkBroken()
				c.Release() // destroyed: closes slowly
			}
		}()
	}
	wg.Wait()
	assert.LessOrEqual(t, maxOpen.Load(), int64(2), "conns open at once, counting those being closed")
}
