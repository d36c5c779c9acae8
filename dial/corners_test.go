package dial_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"io"
	"net"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"sync/atomic"
	"syscall"
	"testing"
	"testing/synctest"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/retry"
)

// countingCache is a ClientSessionCache that counts the tickets it is given.
type countingCache struct {
	tls.ClientSessionCache
	puts atomic.Int32
}

func (c *countingCache) Put(key string, cs *tls.ClientSessionState) {
	c.puts.Add(1)
	c.ClientSessionCache.Put(key, cs)
}

// readUntil reads from c until it has seen marker; it returns false when
// the conn ends first.
func readUntil(c net.Conn, marker string) bool {
	var got []byte
	buf := make([]byte, 512)
	for !bytes.Contains(got, []byte(marker)) {
		n, err := c.Read(buf)
		got = append(got, buf[:n]...)
		if err != nil {
			return false
		}
	}
	return true
}

// TestFirstByteTLSSessionTickets: a TLS 1.3 server sends session tickets
// after the handshake (OpenSSL-based servers and load balancers always do;
// Go's does once it asked for a client certificate) and then never answers
// the request. The tickets are not a reply: the first Read fails with a
// PhaseFirstByte error within FirstByteTimeout. Before the watch learnt to
// tell tickets from data, the first ticket ended the watch and the Read
// waited forever.
func TestFirstByteTLSSessionTickets(t *testing.T) {
	for _, userCache := range []bool{true, false} {
		name := "no ClientSessionCache"
		if userCache {
			name = "with the caller's ClientSessionCache"
		}
		t.Run(name, func(t *testing.T) {
			checkFDs(t)
			serverCfg, clientCfg, _ := testCert(t, testHost)
			serverCfg.ClientAuth = tls.RequestClientCert // tickets come after the client's Finished
			srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg, Handler: func(c net.Conn) {
				_, _ = io.Copy(io.Discard, c) // read the request, never answer
			}})
			cache := &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
			if userCache {
				clientCfg.ClientSessionCache = cache
			}
			h := &dial.Health{}
			d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, Health: h,
				FirstByteTimeout: 300 * time.Millisecond}
			conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
			require.NoError(t, err)
			defer conn.Close()
			_, ok := conn.(*tls.Conn)
			require.True(t, ok, "the conn stays a bare *tls.Conn, got %T", conn)
			_, err = conn.Write([]byte("GET / HTTP/1.1\r\n\r\n"))
			require.NoError(t, err)
			start := time.Now()
			_, err = conn.Read(make([]byte, 16))
			var de *dial.Error
			require.ErrorAs(t, err, &de, "the tickets must not count as the reply")
			assert.Equal(t, dial.PhaseFirstByte, de.Phase)
			assert.Less(t, time.Since(start), 3*time.Second)
			st, _ := h.Stats(de.Peer)
			assert.EqualValues(t, 1, st.FirstByteStalls)
			if userCache {
				assert.Positive(t, cache.puts.Load(), "the server did send tickets, and the caller's cache got them")
			}
		})
	}
}

// TestFirstByteTLSReplyAfterTickets: with tickets before it, a real reply
// ends the watch; later replies may take longer than FirstByteTimeout.
func TestFirstByteTLSReplyAfterTickets(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	serverCfg.ClientAuth = tls.RequestClientCert
	srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg, Handler: func(c net.Conn) {
		r := bufio.NewReader(c)
		for i := 0; ; i++ {
			if _, err := r.ReadString('\n'); err != nil {
				return
			}
			if i == 1 {
				time.Sleep(600 * time.Millisecond) // the second reply is slow
			}
			if _, err := c.Write([]byte("ok\n")); err != nil {
				return
			}
		}
	}})
	cache := &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	clientCfg.ClientSessionCache = cache
	d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, FirstByteTimeout: 300 * time.Millisecond}
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	require.NoError(t, err)
	defer conn.Close()
	r := bufio.NewReader(conn)
	for i := range 2 {
		_, err = conn.Write([]byte("ping\n"))
		require.NoError(t, err)
		line, err := r.ReadString('\n')
		require.NoError(t, err, "reply %d: after the first byte the watch is off", i)
		assert.Equal(t, "ok\n", line)
	}
	assert.Positive(t, cache.puts.Load())

	// Resumption still works through the watch's cache.
	conn2, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	require.NoError(t, err)
	defer conn2.Close()
	assert.True(t, conn2.(*tls.Conn).ConnectionState().DidResume, "the ticket reached the caller's cache")
}

// TestFirstByteOpenSSLServer: Debian's openssl s_server, a real OpenSSL
// TLS 1.3 stack that sends two session tickets on every conn, accepts the
// request and never answers (nothing is written to its stdin). The first
// Read fails with PhaseFirstByte within FirstByteTimeout.
func TestFirstByteOpenSSLServer(t *testing.T) {
	bin, err := exec.LookPath("openssl")
	if err != nil {
		t.Skip("openssl not installed (.ci/run installs Debian's openssl)")
	}
	serverCfg, clientCfg, _ := testCert(t, testHost)
	dir := t.TempDir()
	certFile, keyFile := writePEM(t, dir, serverCfg.Certificates[0])
	ctx, cancel := context.WithCancel(context.Background())
	// Not -quiet: s_server reports the port it listens on.
	cmd := exec.CommandContext(ctx, bin, "s_server", "-accept", "127.0.0.1:0",
		"-cert", certFile, "-key", keyFile, "-tls1_3")
	stdin, err := cmd.StdinPipe() // held open, never written: the server never answers
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
	port := sServerPort(t, &out)
	addr := "127.0.0.1:" + itoa(port)

	cache := &countingCache{ClientSessionCache: tls.NewLRUClientSessionCache(4)}
	clientCfg.ClientSessionCache = cache
	d := dial.Dialer{Resolver: resolverFor(addr), TLSConfig: clientCfg, FirstByteTimeout: 300 * time.Millisecond}
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(port))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.NoError(t, err)
	start := time.Now()
	_, err = conn.Read(make([]byte, 16))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	assert.Less(t, time.Since(start), 3*time.Second)
	assert.Positive(t, cache.puts.Load(), "OpenSSL sent session tickets")
}

func writePEM(t *testing.T, dir string, cert tls.Certificate) (certFile, keyFile string) {
	t.Helper()
	certFile, keyFile = filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	der, err := x509.MarshalPKCS8PrivateKey(cert.PrivateKey)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o600))
	require.NoError(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0o600))
	return certFile, keyFile
}

// TestFirstByteClockFromLastWrite: a request written in pieces over longer
// than FirstByteTimeout and answered at once is not a first-byte timeout:
// the clock runs from the last Write.
func TestFirstByteClockFromLastWrite(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
		if readUntil(c, "END\n") {
			_, _ = c.Write([]byte("done"))
		}
		_, _ = io.Copy(io.Discard, c)
	}})
	h := &dial.Health{}
	d := dial.Dialer{FirstByteTimeout: 200 * time.Millisecond, Health: h}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	for _, piece := range []string{"HEAD", "ER\n", "END\n"} {
		_, err = conn.Write([]byte(piece))
		require.NoError(t, err)
		if piece != "END\n" {
			time.Sleep(300 * time.Millisecond) // longer than FirstByteTimeout
		}
	}
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err, "answered at once after the last piece")
	assert.Equal(t, "done", string(buf))
	st, _ := h.Stats(netip.MustParseAddrPort(srv.Addr()))
	assert.Zero(t, st.FirstByteStalls, "no spurious stall held against the peer")
}

// TestFirstByteDefault: the zero Dialer bounds the wait for a reply at 30s
// (synctest: exact, no waiting), and holds the silence against the peer,
// which goes to the back of later races.
func TestFirstByteDefault(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		fn := &fakeNet{plan: map[string]fakeStep{"10.0.0.1": {kind: "ok"}, "10.0.0.2": {kind: "ok"}}}
		defer fn.close()
		h := &dial.Health{}
		d := dial.Dialer{Resolver: resolverFor("10.0.0.1", "10.0.0.2"), DialFunc: fn.dial, Health: h}
		conn, err := d.DialContext(t.Context(), "tcp", hostPort(443))
		require.NoError(t, err)
		defer conn.Close()
		fn.mu.Lock()
		server := fn.ends[0]
		fn.mu.Unlock()
		go func() { _, _ = io.Copy(io.Discard, server) }() // reads the request, never answers
		_, err = conn.Write([]byte("x"))
		require.NoError(t, err)
		start := time.Now()
		_, err = conn.Read(make([]byte, 1))
		// 30s, and the last look at the socket (5ms) after it.
		assert.Equal(t, 30*time.Second+5*time.Millisecond, time.Since(start))
		var de *dial.Error
		require.ErrorAs(t, err, &de)
		assert.Equal(t, dial.PhaseFirstByte, de.Phase)
		st, ok := h.Stats(netip.MustParseAddrPort("10.0.0.1:443"))
		require.True(t, ok)
		assert.EqualValues(t, 1, st.FirstByteStalls)
		assert.True(t, st.Demoted, "a silent peer does not stay first in every later race")
		assert.Equal(t, []netip.AddrPort{netip.MustParseAddrPort("10.0.0.2:443"), netip.MustParseAddrPort("10.0.0.1:443")},
			dial.OrderPeers(h, []netip.AddrPort{netip.MustParseAddrPort("10.0.0.1:443"), netip.MustParseAddrPort("10.0.0.2:443")}, time.Now()))
	})
}

// TestLoneAddressRacesItself is incident 01 in small: one address (a load
// balancer) that hangs every other connection's TLS handshake. The dial
// does not wait for TLSHandshakeTimeout: after AttemptDelay the same
// address gets a second attempt, which completes; the hung one is closed.
// The extra attempts and the masked stalls are counted.
func TestLoneAddressRacesItself(t *testing.T) {
	// A name with one address and an IP literal: the same race, one
	// address known up front.
	for _, literal := range []bool{false, true} {
		name := "resolved name"
		if literal {
			name = "IP literal"
		}
		t.Run(name, func(t *testing.T) {
			checkFDs(t)
			serverCfg, clientCfg, _ := testCert(t, testHost)
			clientCfg.ServerName = testHost
			odd := func(n int) bool { return n%2 == 1 }
			srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.StallTLS, Select: odd, TLS: serverCfg})
			h := &dial.Health{}
			tel := newTelemetry(t)
			d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, Health: h,
				MeterProvider: tel.mp, TracerProvider: tel.tp}
			addr := hostPort(srv.Port())
			if literal {
				addr = srv.Addr()
			}
			const dials = 6
			for i := range dials {
				start := time.Now()
				conn, err := d.DialTLSContext(t.Context(), "tcp", addr)
				require.NoError(t, err, "dial %d", i)
				elapsed := time.Since(start)
				require.NoError(t, conn.Close())
				assert.Less(t, elapsed, 2*time.Second, "about AttemptDelay (250ms), not TLSHandshakeTimeout (5s)")
			}
			assert.EqualValues(t, dials, srv.Stats().Faulted, "every first attempt hung")
			repeats := int64(0)
			for _, p := range tel.sumPoints(t, "lifeline.dial.attempts") {
				if setValue(p.Attributes, "lifeline.dial.repeat") == "true" {
					repeats += p.Value
				}
			}
			assert.EqualValues(t, dials, repeats, "one repeated attempt per dial, counted")
			masked := tel.sumPoints(t, "lifeline.masked_failures")
			require.Len(t, masked, 1)
			assert.EqualValues(t, dials, masked[0].Value)
			assert.Equal(t, "tls", setValue(masked[0].Attributes, "lifeline.phase"))
			assert.Equal(t, "127.0.0.1", setValue(masked[0].Attributes, "network.peer.address"))
			assert.Equal(t, "race", setValue(masked[0].Attributes, "lifeline.masked_by"))
			require.Eventually(t, func() bool { return srv.Stats().Active == 0 }, 2*time.Second, 10*time.Millisecond,
				"the hung attempts were closed")
		})
	}
}

// TestLoneAddressOutageBounded: under a total outage a lone address costs
// at most MaxAttemptsPerAddress connects per dial, and a refusal is never
// repeated: retries, and their budget, stay the retry layer's.
func TestLoneAddressOutageBounded(t *testing.T) {
	checkFDs(t)
	bh := faultnet.NewBlackhole(t, "")
	refused := faultnet.RefusedAddr(t, "tcp4")
	count := func(addr string) int {
		var n atomic.Int32
		nd := net.Dialer{}
		d := dial.Dialer{ConnectTimeout: 300 * time.Millisecond, AttemptDelay: 50 * time.Millisecond,
			DialFunc: func(ctx context.Context, network, a string) (net.Conn, error) {
				n.Add(1)
				return nd.DialContext(ctx, network, a)
			}}
		for range 3 {
			_, err := d.DialContext(t.Context(), "tcp", addr)
			require.Error(t, err)
		}
		return int(n.Load())
	}
	assert.Equal(t, 6, count(bh.Addr()), "blackhole: 2 attempts per dial")
	assert.Equal(t, 3, count(refused), "refused: 1 attempt per dial")
}

// TestWatchKeepsOptionalInterfaces: the first-byte watch wraps the conn but
// keeps what clients look for: syscall.Conn (go-redis checks idle conns
// through it), CloseWrite and CloseRead.
func TestWatchKeepsOptionalInterfaces(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
		_, _ = io.Copy(io.Discard, c) // until the client's FIN
		_, _ = c.Write([]byte("bye"))
	}})
	var d dial.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	sc, ok := conn.(syscall.Conn)
	require.True(t, ok, "%T hides SyscallConn", conn)
	raw, err := sc.SyscallConn()
	require.NoError(t, err)
	fd := -1
	require.NoError(t, raw.Control(func(f uintptr) { fd = int(f) }))
	assert.Positive(t, fd)
	cw, ok := conn.(interface{ CloseWrite() error })
	require.True(t, ok)
	_, ok = conn.(interface{ CloseRead() error })
	require.True(t, ok)
	require.NoError(t, cw.CloseWrite())
	got, err := io.ReadAll(conn)
	require.NoError(t, err)
	assert.Equal(t, "bye", string(got), "the server saw EOF after CloseWrite and answered")
}

// TestPerAttemptDeadlineIsRetried: a deadline set per attempt inside a
// retried operation (not the caller's) leaves the dial error retryable, so
// retry.Do tries again while its own context has time.
func TestPerAttemptDeadlineIsRetried(t *testing.T) {
	checkFDs(t)
	bh := faultnet.NewBlackhole(t, "")
	d := dial.Dialer{MaxAttemptsPerAddress: 1}
	p := &retry.Policy{MaxAttempts: 3, InitialInterval: time.Millisecond, MaxInterval: time.Millisecond}
	calls := 0
	err := p.Do(t.Context(), func(ctx context.Context) error {
		calls++
		actx, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		defer cancel()
		c, err := d.DialContext(actx, "tcp", bh.Addr())
		if err == nil {
			c.Close()
		}
		return err
	})
	require.Error(t, err)
	assert.Equal(t, 3, calls, "each attempt's own deadline is retryable")
	var de *dial.Error
	require.ErrorAs(t, err, &de, "the last attempt's *dial.Error stays reachable")
	assert.True(t, de.Timeout())
}

// blockingPorts is a Resolver whose service lookups never answer.
type blockingPorts struct{ *fakeResolver }

func (blockingPorts) LookupPort(ctx context.Context, _, _ string) (int, error) {
	<-ctx.Done()
	return 0, ctx.Err()
}

// TestServicePortUnderLimits: a service name ("https") is looked up under
// the Dialer's limits, through the Resolver when it can.
func TestServicePortUnderLimits(t *testing.T) {
	d := dial.Dialer{Resolver: blockingPorts{resolverFor("127.0.0.1")}, ResolveTimeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", testHost+":https")
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseDNS, de.Phase)
	assert.True(t, de.Timeout())
	assert.Less(t, time.Since(start), 3*time.Second, "ResolveTimeout bounds the service lookup")

	// A Resolver without LookupPort: net's, still bounded; "https" is 443
	// (nothing listens on loopback's 443 here, or it is refused).
	d = dial.Dialer{Resolver: resolverFor("127.0.0.1"), ConnectTimeout: time.Second}
	c, err := d.DialContext(t.Context(), "tcp", testHost+":https")
	if err == nil {
		c.Close()
		return
	}
	require.ErrorAs(t, err, &de)
	assert.Equal(t, uint16(443), de.Peer.Port())
}
