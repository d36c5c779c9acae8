package dial_test

import (
	"context"
	"io"
	"net"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// Faults of the catalogue not covered by the race and first-byte tests.

func TestTLSRaceResetThenGood(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	// 127.0.0.2 accepts TCP and resets it (a flapping interface): the TLS
	// attempt fails, and the next address starts at once.
	servers := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", Fault: faultnet.Reset, TLS: serverCfg},
		faultnet.Config{Addr: "127.0.0.3:0", TLS: serverCfg})
	h := &dial.Health{}
	tel := newTelemetry(t)
	d := dial.Dialer{
		Resolver:      resolverFor("127.0.0.2", "127.0.0.3"),
		TLSConfig:     clientCfg,
		AttemptDelay:  5 * time.Second,
		Health:        h,
		MeterProvider: tel.mp,
	}
	start := time.Now()
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(servers[0].Port()))
	require.NoError(t, err)
	conn.Close()
	assert.Less(t, time.Since(start), 2*time.Second, "the reset starts the next address at once, not after 5s")
	assert.Equal(t, servers[1].Addr(), conn.RemoteAddr().String())
	st, ok := h.Stats(servers[0].AddrPort())
	require.True(t, ok)
	assert.EqualValues(t, 1, st.Resets+st.TLSFailures, "the reset is held against the peer: %+v", st)
	masked := tel.sumPoints(t, "lifeline.masked_failures")
	require.Len(t, masked, 1)
	assert.Equal(t, "127.0.0.2", setValue(masked[0].Attributes, "network.peer.address"))
}

func TestTLSResetAlone(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Reset, TLS: serverCfg})
	h := &dial.Health{}
	d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, Health: h}
	_, err := d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	// The RST can beat the end of connect (then connect sees it) or come
	// during the handshake: both are the peer resetting us.
	switch de.Phase {
	case dial.PhaseConnect:
		assert.Equal(t, "connect_reset", de.ErrorType())
	case dial.PhaseTLS:
		assert.Contains(t, []string{"tls_reset", "tls"}, de.ErrorType(), "%v", err)
	default:
		t.Fatalf("phase %s: %v", de.Phase, err)
	}
	assert.True(t, de.Retryable(), "a reset can heal: %v", err)
	assert.False(t, de.Timeout())
	st, ok := h.Stats(srv.AddrPort())
	require.True(t, ok)
	assert.EqualValues(t, 1, st.Resets+st.TLSFailures)
	assert.True(t, st.Demoted)
}

func TestResponseNeverStarts(t *testing.T) {
	checkFDs(t)
	// The load-balancer fault: a proxy forwards the request to a healthy
	// echo server and holds the reply.
	upstream := faultnet.Start(t, faultnet.Config{})
	proxy := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: upstream.Addr(), Fault: faultnet.HoldResponse})
	h := &dial.Health{}
	d := dial.Dialer{FirstByteTimeout: 300 * time.Millisecond, Health: h}
	conn, err := d.DialContext(t.Context(), "tcp", proxy.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("GET / HTTP/1.1\r\nHost: x\r\n\r\n"))
	require.NoError(t, err)
	start := time.Now()
	_, err = conn.Read(make([]byte, 1))
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseFirstByte, de.Phase)
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Less(t, time.Since(start), 3*time.Second)
	st, _ := h.Stats(de.Peer)
	assert.EqualValues(t, 1, st.FirstByteStalls)

	// Through the same proxy without the fault the reply flows.
	proxy.SetFault(faultnet.ProxyPass, nil)
	conn2, err := d.DialContext(t.Context(), "tcp", proxy.Addr())
	require.NoError(t, err)
	defer conn2.Close()
	_, err = conn2.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn2, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf))
}

func TestSlowNetworkStillConnects(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	upstream := faultnet.Start(t, faultnet.Config{TLS: serverCfg})
	// 5–15ms per chunk each way, as in incident 05: slower, not broken.
	proxy := faultnet.StartProxy(t, faultnet.ProxyConfig{Upstream: upstream.Addr(), Fault: faultnet.Delay,
		Latency: 5 * time.Millisecond, LatencyMax: 15 * time.Millisecond})
	d := dial.Dialer{Resolver: resolverFor(proxy.Addr()), TLSConfig: clientCfg, FirstByteTimeout: 2 * time.Second}
	_, port, _ := net.SplitHostPort(proxy.Addr())
	conn, err := d.DialTLSContext(t.Context(), "tcp", net.JoinHostPort(testHost, port))
	require.NoError(t, err)
	defer conn.Close()
	_, err = conn.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
}

func TestOutageAndRecovery(t *testing.T) {
	checkFDs(t)
	servers := faultnet.StartGroup(t, faultnet.Config{Addr: "127.0.0.2:0"}, faultnet.Config{Addr: "127.0.0.3:0"})
	h := &dial.Health{}
	tel := newTelemetry(t)
	d := dial.Dialer{Resolver: resolverFor("127.0.0.2", "127.0.0.3"), Health: h, TracerProvider: tel.tp}
	target := hostPort(servers[0].Port())

	// Total outage: both addresses refuse.
	require.NoError(t, servers[0].Down())
	require.NoError(t, servers[1].Down())
	_, err := d.DialContext(t.Context(), "tcp", target)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Len(t, de.Attempts(), 2)
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	for _, st := range h.Snapshot() {
		assert.True(t, st.Demoted)
	}

	// Recovery: the first address comes back; the dial finds it although
	// both are demoted, and the success halves its penalty.
	require.NoError(t, servers[0].Up())
	conn, err := d.DialContext(t.Context(), "tcp", target)
	require.NoError(t, err)
	conn.Close()
	assert.Equal(t, servers[0].Addr(), conn.RemoteAddr().String())
	st, _ := h.Stats(servers[0].AddrPort())
	assert.EqualValues(t, 1, st.Successes)
	assert.False(t, st.Demoted, "a success halves the penalty: %.2f", st.Score)
	st, _ = h.Stats(servers[1].AddrPort())
	assert.True(t, st.Demoted, "still down")

	// The recovered address is now tried first.
	require.NoError(t, servers[1].Up())
	tel.spans.Reset()
	conn, err = d.DialContext(t.Context(), "tcp", target)
	require.NoError(t, err)
	conn.Close()
	assert.Equal(t, []string{"127.0.0.2"}, connectPeers(tel))
}
