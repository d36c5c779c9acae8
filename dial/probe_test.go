package dial_test

import (
	"net/netip"
	"strconv"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// TestProbeNamesTheBadAddress: one name, three addresses on one port — one
// healthy, one that accepts TCP and stalls the TLS handshake (the
// incidents' load balancer), one that refuses. A dial succeeds and hides
// the bad ones (that is the race's job); a probe reaches every address on
// its own and names each failure with its phase, within the phase limits,
// records all three in Health, and leaves no connection open.
func TestProbeNamesTheBadAddress(t *testing.T) {
	checkFDs(t)
	serverCfg, clientCfg, _ := testCert(t, testHost)
	servers := faultnet.StartGroup(t,
		faultnet.Config{Addr: "127.0.0.2:0", TLS: serverCfg},
		faultnet.Config{Addr: "127.0.0.3:0", Fault: faultnet.StallTLS},
		faultnet.Config{Addr: "127.0.0.4:0", TLS: serverCfg},
	)
	require.NoError(t, servers[2].Down()) // 127.0.0.4 now refuses
	port := servers[0].Port()
	health := new(dial.Health)
	tel := newTelemetry(t)
	d := dial.Dialer{
		TracerProvider:      tel.tp,
		Resolver:            resolverFor("127.0.0.3", "127.0.0.4", "127.0.0.2"),
		TLSConfig:           clientCfg,
		TLSHandshakeTimeout: 300 * time.Millisecond,
		Health:              health,
	}

	// The dial works and tells nothing of the bad addresses.
	conn, err := d.DialTLSContext(t.Context(), "tcp", hostPort(port))
	require.NoError(t, err)
	conn.Close()
	health.Reset()
	tel.spans.Reset()

	start := time.Now()
	results, err := d.Probe(t.Context(), "tcp", hostPort(port), true)
	elapsed := time.Since(start)
	require.NoError(t, err)
	require.Len(t, results, 3)
	assert.Less(t, elapsed, 2*time.Second, "all addresses at once, each within TLSHandshakeTimeout 300ms")

	byPeer := map[string]dial.ProbeResult{}
	for _, r := range results {
		byPeer[r.Peer.Addr().String()] = r
	}
	assert.NoError(t, byPeer["127.0.0.2"].Err)
	assert.Positive(t, byPeer["127.0.0.2"].Latency)
	for ip, want := range map[string]struct {
		phase dial.Phase
		typ   string
	}{
		"127.0.0.3": {dial.PhaseTLS, "tls_timeout"},
		"127.0.0.4": {dial.PhaseConnect, "connect_refused"},
	} {
		var de *dial.Error
		require.ErrorAs(t, byPeer[ip].Err, &de, ip)
		assert.Equal(t, want.phase, de.Phase, ip)
		assert.Equal(t, want.typ, de.ErrorType(), ip)
	}

	require.Len(t, tel.spansNamed("dial.probe"), 1)
	connects := tel.spansNamed("dial.connect")
	assert.Len(t, connects, 3, "one dial.connect span per address")
	for _, sp := range connects {
		assert.Equal(t, tel.spansNamed("dial.probe")[0].SpanContext().SpanID(), sp.Parent().SpanID())
	}

	peer := func(ip string) netip.AddrPort {
		return netip.AddrPortFrom(netip.MustParseAddr(ip), uint16(port))
	}
	st, ok := health.Stats(peer("127.0.0.2"))
	require.True(t, ok)
	assert.EqualValues(t, 1, st.Successes)
	st, _ = health.Stats(peer("127.0.0.3"))
	assert.EqualValues(t, 1, st.TLSStalls)
	assert.True(t, st.Demoted)
	st, _ = health.Stats(peer("127.0.0.4"))
	assert.EqualValues(t, 1, st.Refusals)
}

// TestProbeBadInput: malformed input and unknown hosts are an error of the
// probe itself, never a panic.
func TestProbeBadInput(t *testing.T) {
	var d *dial.Dialer
	_, err := d.Probe(t.Context(), "udp", "127.0.0.1:1", false)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseDNS, de.Phase)
	_, err = (&dial.Dialer{Resolver: resolverFor("127.0.0.1")}).Probe(t.Context(), "tcp", "unknown.test:"+strconv.Itoa(1), false)
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "dns_not_found", de.ErrorType())
}
