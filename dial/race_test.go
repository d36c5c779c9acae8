package dial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"io"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

func connectPeers(tel *telemetryRig) []string {
	var out []string
	for _, s := range tel.spansNamed("dial.connect") {
		v, _ := attr(s, "network.peer.address")
		out = append(out, v.AsString())
	}
	return out
}

func TestRaceStalledConnectThenGood(t *testing.T) {
	checkFDs(t)
	good := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.3:0"})[0]
	faultnet.NewBlackhole(t, net.JoinHostPort("127.0.0.2", itoa(good.Port())))
	h := &dial.Health{}
	tel := newTelemetry(t)
	d := dial.Dialer{
		Resolver:       resolverFor("127.0.0.2", "127.0.0.3"),
		Health:         h,
		TracerProvider: tel.tp,
		MeterProvider:  tel.mp,
	}
	start := time.Now()
	conn, err := d.DialContext(t.Context(), "tcp", hostPort(good.Port()))
	elapsed := time.Since(start)
	require.NoError(t, err)
	assert.Equal(t, good.Addr(), conn.RemoteAddr().String(), "the good address wins")
	conn.Close()
	assert.Less(t, elapsed, time.Second, "[stalled, good] succeeds in < 1s with a 5s ConnectTimeout")
	assert.GreaterOrEqual(t, elapsed, 240*time.Millisecond, "the second address starts after AttemptDelay (250ms)")

	// Spans: the stalled racer lost, which is not an error.
	spans := tel.spansNamed("dial.connect")
	require.Len(t, spans, 2)
	for i, want := range []struct{ peer, outcome string }{{"127.0.0.2", "lost"}, {"127.0.0.3", "ok"}} {
		v, _ := attr(spans[i], "network.peer.address")
		assert.Equal(t, want.peer, v.AsString())
		v, _ = attr(spans[i], "lifeline.outcome")
		assert.Equal(t, want.outcome, v.AsString())
		v, _ = attr(spans[i], "lifeline.dial.race_index")
		assert.EqualValues(t, i, v.AsInt64())
		assert.Equal(t, "Unset", spans[i].Status().Code.String())
	}

	// Metrics: the stall is a masked failure, by phase and peer.
	masked := tel.sumPoints(t, "lifeline.masked_failures")
	require.Len(t, masked, 1)
	assert.EqualValues(t, 1, masked[0].Value)
	assert.Equal(t, "connect", setValue(masked[0].Attributes, "lifeline.phase"))
	assert.Equal(t, "127.0.0.2", setValue(masked[0].Attributes, "network.peer.address"))
	assert.Equal(t, "connect_stall", setValue(masked[0].Attributes, "error.type"))
	attempts := map[string]int64{}
	for _, p := range tel.sumPoints(t, "lifeline.dial.attempts") {
		attempts[setValue(p.Attributes, "lifeline.outcome")] += p.Value
	}
	assert.Equal(t, map[string]int64{"ok": 1, "lost": 1}, attempts)

	// Health: the stalled peer is demoted, so the next dial tries the good
	// one first and needs a single attempt.
	st, ok := h.Stats(netip.MustParseAddrPort(net.JoinHostPort("127.0.0.2", itoa(good.Port()))))
	require.True(t, ok)
	assert.EqualValues(t, 1, st.ConnectStalls)
	assert.True(t, st.Demoted)
	tel.spans.Reset()
	conn, err = d.DialContext(t.Context(), "tcp", hostPort(good.Port()))
	require.NoError(t, err)
	conn.Close()
	assert.Equal(t, []string{"127.0.0.3"}, connectPeers(tel), "the demoted peer went to the back: one attempt, no AttemptDelay paid")
}

func TestRaceFailureStartsNextAtOnce(t *testing.T) {
	checkFDs(t)
	good := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.3:0"})[0]
	// Nothing listens on 127.0.0.2 at that port: refused.
	tel := newTelemetry(t)
	d := dial.Dialer{
		Resolver:      resolverFor("127.0.0.2", "127.0.0.3"),
		AttemptDelay:  5 * time.Second,
		MeterProvider: tel.mp, TracerProvider: tel.tp,
	}
	start := time.Now()
	conn, err := d.DialContext(t.Context(), "tcp", hostPort(good.Port()))
	require.NoError(t, err)
	conn.Close()
	assert.Less(t, time.Since(start), time.Second, "[refused, good] with AttemptDelay 5s: the refusal starts the next at once")
	masked := tel.sumPoints(t, "lifeline.masked_failures")
	require.Len(t, masked, 1)
	assert.Equal(t, "connect_refused", setValue(masked[0].Attributes, "error.type"))
	spans := tel.spansNamed("dial.connect")
	require.Len(t, spans, 2)
	assert.Equal(t, "Error", spans[0].Status().Code.String(), "a refused attempt is an error span")
	v, _ := attr(spans[0], "error.type")
	assert.Equal(t, "connect_refused", v.AsString())
	assert.Equal(t, "Unset", tel.spansNamed("dial")[0].Status().Code.String(), "the dial succeeded")
}

func TestRaceFirstGoodNeedsOneAttempt(t *testing.T) {
	servers := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.2:0"}, faultnet.Config{Addr: "127.0.0.3:0"})
	tel := newTelemetry(t)
	d := dial.Dialer{Resolver: resolverFor("127.0.0.2", "127.0.0.3"), TracerProvider: tel.tp}
	conn, err := d.DialContext(t.Context(), "tcp", hostPort(servers[0].Port()))
	require.NoError(t, err)
	conn.Close()
	assert.Equal(t, []string{"127.0.0.2"}, connectPeers(tel))
	dialSpan := tel.spansNamed("dial")[0]
	v, _ := attr(dialSpan, "lifeline.dial.addresses")
	assert.EqualValues(t, 2, v.AsInt64())
	v, _ = attr(dialSpan, "server.address")
	assert.Equal(t, testHost, v.AsString())
	v, _ = attr(dialSpan, "server.port")
	assert.EqualValues(t, servers[0].Port(), v.AsInt64())
	require.Len(t, tel.spansNamed("dial.dns"), 1)
	for _, s := range tel.spans.Ended() {
		assert.Equal(t, dialSpan.SpanContext().TraceID(), s.SpanContext().TraceID(), "one trace per dial")
	}
}

func TestSerialDial(t *testing.T) {
	checkFDs(t)
	good := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.3:0"})[0]
	faultnet.NewBlackhole(t, net.JoinHostPort("127.0.0.2", itoa(good.Port())))
	d := dial.Dialer{
		Resolver:       resolverFor("127.0.0.2", "127.0.0.3"),
		AttemptDelay:   -1,
		ConnectTimeout: 400 * time.Millisecond,
	}
	start := time.Now()
	conn, err := d.DialContext(t.Context(), "tcp", hostPort(good.Port()))
	elapsed := time.Since(start)
	require.NoError(t, err)
	conn.Close()
	assert.GreaterOrEqual(t, elapsed, 390*time.Millisecond, "serial: the second address waits for the first to time out")
	assert.Less(t, elapsed, 3*time.Second)
}

func TestAllAddressesFail(t *testing.T) {
	checkFDs(t)
	bh := faultnet.NewBlackhole(t, "127.0.0.3:0")
	port := netip.MustParseAddrPort(bh.Addr()).Port()
	h := &dial.Health{}
	d := dial.Dialer{
		Resolver:       resolverFor("127.0.0.2", "127.0.0.3"),
		ConnectTimeout: 300 * time.Millisecond,
		Health:         h,
	}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", hostPort(int(port)))
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Less(t, elapsed, 3*time.Second)
	assert.Equal(t, dial.PhaseConnect, de.Phase)
	attempts := de.Attempts()
	require.Len(t, attempts, 3, "the refusal is not repeated; the stalled address raced itself once")
	assert.ErrorIs(t, attempts[0], syscall.ECONNREFUSED)
	assert.Equal(t, "127.0.0.2", attempts[0].Peer.Addr().String())
	for _, a := range attempts[1:] {
		assert.Equal(t, "127.0.0.3", a.Peer.Addr().String())
		assert.True(t, a.Timeout())
		assert.Equal(t, "connect_timeout", a.ErrorType())
	}
	assert.ErrorIs(t, err, syscall.ECONNREFUSED, "every attempt's error is reachable")
	assert.ErrorIs(t, err, context.DeadlineExceeded, "... the timeout too")
	assert.Equal(t, "127.0.0.2", de.Peer.Addr().String(), "both reached connect: the first is reported")
	// One rule: Timeout agrees with errors.Is(err, context.DeadlineExceeded),
	// true when any attempt timed out; ErrorType is the reported attempt's.
	assert.True(t, de.Timeout(), "an attempt timed out, as errors.Is says")
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())
	assert.Equal(t, "connect_refused", de.ErrorType())
	assert.True(t, de.Retryable())
	assert.Contains(t, err.Error(), "(and 2 more attempts: ")
	assert.Len(t, h.Snapshot(), 2, "both peers failed")
}

func TestTLSRaceOvertakesStalledHandshake(t *testing.T) {
	for _, fault := range []faultnet.Fault{faultnet.StallTLS, faultnet.Silence} {
		t.Run(fault.String(), func(t *testing.T) {
			checkFDs(t)
			serverCfg, clientCfg, sni := testCert(t, testHost)
			clientCfg.NextProtos = []string{"h2"}
			servers := faultnet.StartGroup(t,
				faultnet.Config{Addr: "127.0.0.2:0", Fault: fault, TLS: serverCfg},
				faultnet.Config{Addr: "127.0.0.3:0", TLS: serverCfg})
			h := &dial.Health{}
			tel := newTelemetry(t)
			d := dial.Dialer{
				Resolver:       resolverFor("127.0.0.2", "127.0.0.3"),
				TLSConfig:      clientCfg,
				Health:         h,
				TracerProvider: tel.tp,
				MeterProvider:  tel.mp,
			}
			start := time.Now()
			conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(servers[0].Port()))
			elapsed := time.Since(start)
			require.NoError(t, err)
			defer conn.Close()
			assert.Less(t, elapsed, time.Second, "[stalled TLS, good] succeeds in < 1s with a 5s TLSHandshakeTimeout")
			assert.Equal(t, servers[1].Addr(), conn.RemoteAddr().String())
			tc, ok := conn.(*tls.Conn)
			require.True(t, ok, "DialTLSContext returns a *tls.Conn, got %T", conn)
			assert.Equal(t, "h2", tc.ConnectionState().NegotiatedProtocol, "ALPN from NextProtos is kept")
			assert.Equal(t, []string{testHost}, sni.get()[len(sni.get())-1:], "SNI is the host, not the IP")
			assert.Empty(t, clientCfg.ServerName, "TLSConfig is not mutated")
			_, err = conn.Write([]byte("hi"))
			require.NoError(t, err)
			buf := make([]byte, 2)
			_, err = io.ReadFull(conn, buf)
			require.NoError(t, err)

			tlsSpans := tel.spansNamed("dial.tls")
			require.Len(t, tlsSpans, 2)
			v, _ := attr(tlsSpans[0], "lifeline.outcome")
			assert.Equal(t, "lost", v.AsString())
			assert.Equal(t, "Unset", tlsSpans[0].Status().Code.String(), "a lost racer is not an error")
			v, _ = attr(tlsSpans[1], "tls.next_protocol")
			assert.Equal(t, "h2", v.AsString())

			masked := tel.sumPoints(t, "lifeline.masked_failures")
			require.Len(t, masked, 1)
			assert.Equal(t, "tls", setValue(masked[0].Attributes, "lifeline.phase"))
			assert.Equal(t, "tls_stall", setValue(masked[0].Attributes, "error.type"))
			assert.Equal(t, "127.0.0.2", setValue(masked[0].Attributes, "network.peer.address"))

			st, ok := h.Stats(servers[0].AddrPort())
			require.True(t, ok)
			assert.EqualValues(t, 1, st.TLSStalls)
			assert.True(t, st.Demoted)
			require.Eventually(t, func() bool { return servers[0].Stats().ClosedByPeer == 1 },
				2*time.Second, 10*time.Millisecond, "the loser's conn is closed")
		})
	}
}

func TestTLSHandshakeTimeout(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.StallTLS, TLS: serverCfg})
	d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, TLSHandshakeTimeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseTLS, de.Phase)
	assert.Equal(t, "tls_timeout", de.ErrorType())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.True(t, de.Retryable())
	assert.Equal(t, "dial tcp "+hostPort(srv.Port())+" ("+srv.Addr()+"): tls: i/o timeout (and 1 more attempt: "+
		srv.Addr()+" tls: i/o timeout)", err.Error(), "the lone address raced itself once")
	assert.GreaterOrEqual(t, elapsed, 290*time.Millisecond)
	assert.Less(t, elapsed, 3*time.Second)
}

func TestTLSCertificateError(t *testing.T) {
	serverCfg, _, _ := testCert(t, "other.test")
	_, clientCfg, _ := testCert(t, testHost) // trusts a different certificate
	srv := faultnet.Start(t, faultnet.Config{TLS: serverCfg})
	d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg}
	_, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseTLS, de.Phase)
	assert.Equal(t, "tls_certificate", de.ErrorType())
	assert.False(t, de.Retryable(), "a certificate error does not heal on retry")
	assert.False(t, de.Timeout())
}

func TestTLSServerNameIsHostForIPRace(t *testing.T) {
	// The certificate names only the host: verification against the raced
	// IP would fail, so success proves ServerName is the host.
	serverCfg, clientCfg, sni := testCert(t, testHost)
	servers := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.2:0", TLS: serverCfg})
	d := dial.Dialer{Resolver: resolverFor("127.0.0.2"), TLSConfig: clientCfg}
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(servers[0].Port()))
	require.NoError(t, err)
	conn.Close()
	assert.Equal(t, []string{testHost}, sni.get())
	// An explicit ServerName is kept.
	cfg := clientCfg.Clone()
	cfg.ServerName = "other.test"
	d.TLSConfig = cfg
	_, err = d.DialTLSContext(t.Context(), "tcp", hostPort(servers[0].Port()))
	require.Error(t, err)
	assert.Equal(t, "other.test", sni.get()[1])
	assert.Equal(t, "other.test", cfg.ServerName)
}

func TestIPv6InterleavedRace(t *testing.T) {
	requireIPv6(t)
	checkFDs(t)
	// Two IPv4 addresses refused, IPv6 good: the families are looked up
	// apart and IPv6 goes first (RFC 6724's preference, RFC 8305 §4), so
	// the v6 address is tried first, not last after the v4 ones.
	// (Interleaving itself: TestInterleave and TestResolveFamiliesApart.)
	servers := faultnet.StartGroup(t, faultnet.Config{Addr: "[::1]:0"})
	tel := newTelemetry(t)
	d := dial.Dialer{
		Resolver:       resolverFor("127.0.0.2", "127.0.0.3", "::1"),
		AttemptDelay:   5 * time.Second,
		TracerProvider: tel.tp,
	}
	conn, err := d.DialContext(t.Context(), "tcp", hostPort(servers[0].Port()))
	require.NoError(t, err)
	conn.Close()
	assert.Equal(t, []string{"::1"}, connectPeers(tel))

	tel.spans.Reset()
	conn, err = d.DialContext(t.Context(), "tcp6", hostPort(servers[0].Port()))
	require.NoError(t, err)
	conn.Close()
	assert.Equal(t, []string{"::1"}, connectPeers(tel), "tcp6 dials only IPv6 addresses")
}

func TestLoserCompletingLateIsClosed(t *testing.T) {
	checkFDs(t)
	// Both racers connect; the first is held in the seam until the second
	// has won, then completes anyway: its conn must be closed, not leaked.
	servers := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.2:0"}, faultnet.Config{Addr: "127.0.0.3:0"})
	release := make(chan struct{})
	var nd net.Dialer
	d := dial.Dialer{
		Resolver:     resolverFor("127.0.0.2", "127.0.0.3"),
		AttemptDelay: 20 * time.Millisecond,
		DialFunc: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := nd.DialContext(ctx, network, addr)
			if err == nil && addr == servers[0].Addr() {
				<-release // ignores ctx on purpose: completes after the loss
			}
			return c, err
		},
	}
	go func() { time.Sleep(200 * time.Millisecond); close(release) }()
	conn, err := d.DialContext(t.Context(), "tcp", hostPort(servers[0].Port()))
	require.NoError(t, err)
	assert.Equal(t, servers[1].Addr(), conn.RemoteAddr().String())
	conn.Close()
	require.Eventually(t, func() bool { return servers[0].Stats().Active == 0 }, 2*time.Second, 10*time.Millisecond)
}

func TestAllFailReportsFurthestPhase(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	// 127.0.0.2 refuses, 127.0.0.3 accepts and stalls the handshake.
	servers := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.3:0", Fault: faultnet.StallTLS, TLS: serverCfg})
	d := dial.Dialer{
		Resolver:            resolverFor("127.0.0.2", "127.0.0.3"),
		TLSConfig:           clientCfg,
		TLSHandshakeTimeout: 300 * time.Millisecond,
	}
	start := time.Now()
	_, err := d.DialTLSContext(t.Context(), "tcp", hostPort(servers[0].Port()))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Less(t, time.Since(start), 3*time.Second)
	assert.Equal(t, dial.PhaseTLS, de.Phase, "the stalled handshake got further than the refusal")
	assert.Equal(t, servers[0].AddrPort(), de.Peer)
	assert.True(t, de.Timeout())
	assert.Equal(t, "tls_timeout", de.ErrorType())
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.Equal(t, "dial tcp "+hostPort(servers[0].Port())+" ("+servers[0].Addr()+"): tls: i/o timeout (and 2 more attempts: 127.0.0.2:"+
		itoa(servers[0].Port())+" connect: connection refused; "+servers[0].Addr()+" tls: i/o timeout)", err.Error())
}

func TestCallerCancelDuringRace(t *testing.T) {
	checkFDs(t)
	good := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.4:0", Fault: faultnet.Silence})[0]
	faultnet.NewBlackhole(t, net.JoinHostPort("127.0.0.2", itoa(good.Port())))
	faultnet.NewBlackhole(t, net.JoinHostPort("127.0.0.3", itoa(good.Port())))
	_, clientCfg, _ := testCert(t, testHost)
	h := &dial.Health{}
	d := dial.Dialer{
		Resolver:     resolverFor("127.0.0.2", "127.0.0.3", "127.0.0.4"),
		AttemptDelay: 50 * time.Millisecond,
		TLSConfig:    clientCfg,
		Health:       h,
	}
	ctx, cancel := context.WithCancel(t.Context())
	timer := time.AfterFunc(300*time.Millisecond, cancel)
	defer timer.Stop()
	start := time.Now()
	_, err := d.DialTLSContext(ctx, "tcp", hostPort(good.Port()))
	assert.Less(t, time.Since(start), 2*time.Second)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.ErrorIs(t, err, context.Canceled)
	assert.Equal(t, "canceled", de.ErrorType())
	assert.False(t, de.Retryable())
	assert.Equal(t, dial.PhaseTLS, de.Phase, "the silent server got to the handshake")
	assert.Empty(t, h.Snapshot(), "a cancel is held against no address")
	require.Eventually(t, func() bool { return good.Stats().Active == 0 }, 2*time.Second, 10*time.Millisecond,
		"the racer in its handshake was closed")
}

func TestDefaultResolverLocalhost(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	var d dial.Dialer // net.DefaultResolver
	conn, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort("localhost", itoa(srv.Port())))
	require.NoError(t, err, "localhost may resolve to ::1 first; the race falls through to 127.0.0.1")
	defer conn.Close()
	assert.Equal(t, srv.Addr(), conn.RemoteAddr().String())
}

func TestConcurrentDialsShareHealth(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	servers := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", Fault: faultnet.StallTLS, TLS: serverCfg},
		faultnet.Config{Addr: "127.0.0.3:0", TLS: serverCfg},
		faultnet.Config{Addr: "127.0.0.4:0", TLS: serverCfg})
	h := &dial.Health{}
	tel := newTelemetry(t)
	dialers := []*dial.Dialer{
		{Resolver: resolverFor("127.0.0.2", "127.0.0.3", "127.0.0.4"), TLSConfig: clientCfg, Health: h,
			AttemptDelay: 50 * time.Millisecond, TracerProvider: tel.tp, MeterProvider: tel.mp},
		{Resolver: resolverFor("127.0.0.2", "127.0.0.4"), TLSConfig: clientCfg, Health: h,
			AttemptDelay: 50 * time.Millisecond},
	}
	errc := make(chan error, 40)
	for i := range 40 {
		go func() {
			conn, err := dialers[i%2].DialTLSContext(t.Context(), "tcp", hostPort(servers[0].Port()))
			if err == nil {
				if conn.RemoteAddr().String() == servers[0].Addr() {
					err = errors.New("the stalled address won")
				}
				conn.Close()
			}
			errc <- err
		}()
	}
	for range 40 {
		require.NoError(t, <-errc)
	}
	st, ok := h.Stats(servers[0].AddrPort())
	require.True(t, ok)
	assert.True(t, st.Demoted)
	assert.Positive(t, st.TLSStalls)
	var nilDialer *dial.Dialer
	conn, err := nilDialer.DialContext(t.Context(), "tcp", servers[1].Addr())
	require.NoError(t, err, "a nil *Dialer dials like the zero value")
	conn.Close()
}

// TestFailedAddressNotRepeatedRealSockets: break 24 on loopback. An IP
// literal whose server accepts and closes each conn 75ms in, before any
// TLS handshake: with MaxAttemptsPerAddress 3 and AttemptDelay 50ms the
// dial makes the first attempt and one repeat while it was pending, and no
// attempt after the failure (it made 20 TCP connects in a 1s dial).
func TestFailedAddressNotRepeatedRealSockets(t *testing.T) {
	checkFDs(t)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var accepts atomic.Int32
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
				time.Sleep(75 * time.Millisecond)
				c.Close()
			}()
		}
	}()
	defer func() { ln.Close(); wg.Wait() }()
	_, clientCfg, _ := testCert(t, testHost)
	clientCfg.ServerName = testHost
	d := dial.Dialer{TLSConfig: clientCfg, MaxAttemptsPerAddress: 3, AttemptDelay: 50 * time.Millisecond, Timeout: time.Second}
	_, err = d.DialTLSContext(t.Context(), "tcp", ln.Addr().String())
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseTLS, de.Phase)
	assert.LessOrEqual(t, accepts.Load(), int32(3), "connects in one dial")
}
