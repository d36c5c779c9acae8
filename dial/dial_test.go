package dial_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/netip"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/internal/otelx"
)

func TestDialContextEcho(t *testing.T) {
	checkFDs(t)
	srv := faultnet.Start(t, faultnet.Config{})
	var d dial.Dialer
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	// The zero Dialer watches for the first byte (30s); the watch keeps
	// the conn underneath reachable.
	nc, ok := conn.(interface{ NetConn() net.Conn })
	require.True(t, ok, "the first-byte watch exposes NetConn, got %T", conn)
	_, ok = nc.NetConn().(*net.TCPConn)
	assert.True(t, ok)
	off := dial.Dialer{FirstByteTimeout: -1}
	bare, err := off.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	_, ok = bare.(*net.TCPConn)
	assert.True(t, ok, "with FirstByteTimeout off the conn is the *net.TCPConn itself, got %T", bare)
	bare.Close()
	_, err = conn.Write([]byte("ping"))
	require.NoError(t, err)
	buf := make([]byte, 4)
	_, err = io.ReadFull(conn, buf)
	require.NoError(t, err)
	assert.Equal(t, "ping", string(buf))
}

func TestIPLiteralSkipsDNS(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	res := &fakeResolver{err: errors.New("resolver must not be called for an IP literal")}
	tel := newTelemetry(t)
	d := dial.Dialer{Resolver: res, TracerProvider: tel.tp}
	conn, err := d.DialContext(t.Context(), "tcp4", srv.Addr())
	require.NoError(t, err)
	conn.Close()
	assert.Zero(t, res.calls.Load())
	assert.Empty(t, tel.spansNamed("dial.dns"))
	assert.Len(t, tel.spansNamed("dial.connect"), 1)
}

func TestResolveThroughResolver(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{})
	res := resolverFor(srv.Addr())
	d := dial.Dialer{Resolver: res}
	conn, err := d.DialContext(t.Context(), "tcp", hostPort(srv.Port()))
	require.NoError(t, err)
	defer conn.Close()
	assert.Equal(t, srv.Addr(), conn.RemoteAddr().String())
	assert.EqualValues(t, 2, res.calls.Load(), "one lookup per family (RFC 8305 §3)")
}

func TestDNSErrors(t *testing.T) {
	cases := []struct {
		name      string
		res       *fakeResolver
		network   string
		addr      string
		wantIs    error
		wantType  string
		retryable bool
		timeout   bool
	}{
		{"no addresses", &fakeResolver{addrs: map[string][]netip.Addr{testHost: nil}}, "tcp", hostPort(443),
			dial.ErrNoAddresses, "dns_no_addresses", false, false},
		{"no address of the family", resolverFor("127.0.0.1"), "tcp6", hostPort(443),
			dial.ErrNoAddresses, "dns_no_addresses", false, false},
		{"not found", &fakeResolver{}, "tcp", "nowhere.test:443", nil, "dns_not_found", false, false},
		{"temporary", &fakeResolver{err: &net.DNSError{Err: "server misbehaving", Name: testHost, IsTemporary: true}},
			"tcp", hostPort(443), nil, "dns", true, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := dial.Dialer{Resolver: tc.res}
			_, err := d.DialContext(t.Context(), tc.network, tc.addr)
			var de *dial.Error
			require.ErrorAs(t, err, &de)
			assert.Equal(t, dial.PhaseDNS, de.Phase)
			assert.False(t, de.Peer.IsValid(), "no peer in the DNS phase")
			assert.Equal(t, tc.addr, de.Addr)
			if tc.wantIs != nil {
				assert.ErrorIs(t, err, tc.wantIs)
			}
			assert.Equal(t, tc.wantType, de.ErrorType())
			assert.Equal(t, tc.wantType, otelx.ErrorTypeOf(err))
			assert.Equal(t, tc.retryable, de.Retryable())
			assert.Equal(t, tc.timeout, de.Timeout())
		})
	}
}

func TestResolveTimeout(t *testing.T) {
	d := dial.Dialer{Resolver: &fakeResolver{block: true}, ResolveTimeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", hostPort(443))
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseDNS, de.Phase)
	assert.True(t, de.Timeout())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "dns_timeout", de.ErrorType())
	assert.True(t, de.Retryable())
	assert.Equal(t, "dial tcp lifeline.test:443: dns: i/o timeout", err.Error())
	assert.Less(t, elapsed, 2*time.Second, "ResolveTimeout 200ms")
	assert.GreaterOrEqual(t, elapsed, 190*time.Millisecond)
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name, network, addr, want string
	}{
		{"network", "udp", "127.0.0.1:53", `network "udp" not supported`},
		{"missing port", "tcp", "127.0.0.1", "missing port"},
		{"empty port", "tcp", "127.0.0.1:", "missing port"},
		{"family mismatch", "tcp4", "[::1]:80", "is not of network tcp4"},
		{"bad port", "tcp", "127.0.0.1:99999", "99999"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var d dial.Dialer
			_, err := d.DialContext(t.Context(), tc.network, tc.addr)
			var de *dial.Error
			require.ErrorAs(t, err, &de)
			assert.Equal(t, dial.PhaseDNS, de.Phase)
			assert.Contains(t, err.Error(), tc.want)
			assert.False(t, de.Retryable())
		})
	}
}

func TestRefused(t *testing.T) {
	checkFDs(t)
	addr := faultnet.RefusedAddr(t, "tcp")
	h := &dial.Health{}
	var d = dial.Dialer{Health: h}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", addr)
	assert.Less(t, time.Since(start), time.Second)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseConnect, de.Phase)
	assert.Equal(t, addr, de.Peer.String())
	assert.ErrorIs(t, err, syscall.ECONNREFUSED)
	assert.Equal(t, "connect_refused", de.ErrorType())
	assert.True(t, de.Retryable())
	assert.False(t, de.Timeout())
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "dial tcp "+addr+": connect: connection refused", err.Error())
	st, ok := h.Stats(de.Peer)
	require.True(t, ok)
	assert.EqualValues(t, 1, st.Refusals)
	assert.True(t, st.Demoted)
}

func TestErrorFormatAndClassification(t *testing.T) {
	peer := netip.MustParseAddrPort("203.0.113.7:443")
	// A phase timeout as the Dialer makes it: dial a blackhole-like seam.
	d := dial.Dialer{
		ConnectTimeout: 50 * time.Millisecond,
		Resolver:       &fakeResolver{addrs: map[string][]netip.Addr{"api.example.com": {peer.Addr()}}},
		DialFunc: func(ctx context.Context, _, _ string) (net.Conn, error) {
			<-ctx.Done()
			return nil, ctx.Err()
		},
	}
	_, err := d.DialContext(t.Context(), "tcp", "api.example.com:443")
	require.Error(t, err)
	assert.Equal(t, "dial tcp api.example.com:443 (203.0.113.7:443): connect: i/o timeout", err.Error())
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, "connect_timeout", de.ErrorType())
	assert.True(t, de.Timeout())
	assert.True(t, de.Retryable())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	var ne net.Error
	require.ErrorAs(t, err, &ne)
	assert.True(t, ne.Timeout())

	// The format of a TLS timeout, built by hand.
	e := &dial.Error{Phase: dial.PhaseTLS, Network: "tcp", Addr: "api.example.com:443", Peer: peer, Err: de.Err}
	assert.Equal(t, "dial tcp api.example.com:443 (203.0.113.7:443): tls: i/o timeout", e.Error())
	assert.Equal(t, "tls_timeout", e.ErrorType())

	for _, p := range []struct {
		p    dial.Phase
		want string
	}{{dial.PhaseDNS, "dns"}, {dial.PhaseConnect, "connect"}, {dial.PhaseTLS, "tls"}, {dial.PhaseFirstByte, "first_byte"}, {9, "phase(9)"}} {
		assert.Equal(t, p.want, p.p.String())
	}
}

func TestCallerCancelIsNotAFailure(t *testing.T) {
	checkFDs(t)
	bh := faultnet.NewBlackhole(t, "")
	h := &dial.Health{}
	tel := newTelemetry(t)
	d := dial.Dialer{Health: h, TracerProvider: tel.tp, MeterProvider: tel.mp}
	ctx, cancel := context.WithCancel(t.Context())
	timer := time.AfterFunc(100*time.Millisecond, cancel)
	defer timer.Stop()
	start := time.Now()
	_, err := d.DialContext(ctx, "tcp", bh.Addr())
	assert.Less(t, time.Since(start), 2*time.Second)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.ErrorIs(t, err, context.Canceled)
	assert.NotErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, dial.PhaseConnect, de.Phase)
	assert.Equal(t, "canceled", de.ErrorType())
	assert.False(t, de.Retryable())
	assert.Empty(t, h.Snapshot(), "a cancel is nobody's failure")
	for _, name := range []string{"dial", "dial.connect"} {
		spans := tel.spansNamed(name)
		require.Len(t, spans, 1, name)
		assert.Equal(t, "Unset", spans[0].Status().Code.String(), name)
		v, _ := attr(spans[0], "lifeline.outcome")
		assert.Equal(t, "canceled", v.AsString(), name)
	}
}

func TestCallerDeadline(t *testing.T) {
	checkFDs(t)
	bh := faultnet.NewBlackhole(t, "")
	h := &dial.Health{}
	d := dial.Dialer{Health: h}
	ctx, cancel := context.WithTimeout(t.Context(), 150*time.Millisecond)
	defer cancel()
	start := time.Now()
	_, err := d.DialContext(ctx, "tcp", bh.Addr())
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Less(t, elapsed, 2*time.Second, "the caller's 150ms deadline, not the 5s ConnectTimeout")
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.True(t, de.Timeout())
	assert.Equal(t, "timeout", de.ErrorType(), "the caller's deadline is not a connect timeout")
	assert.Contains(t, err.Error(), "context deadline exceeded")
	// Retryable: the Dialer cannot tell this deadline from a per-attempt
	// one inside a retried operation; a retry loop checks its own context.
	assert.True(t, de.Retryable())
	assert.Empty(t, h.Snapshot(), "the caller's deadline is not held against the peer")
}

func TestConnectTimeoutDefault(t *testing.T) {
	t.Parallel()
	bh := faultnet.NewBlackhole(t, "")
	h := &dial.Health{}
	d := dial.Dialer{Health: h}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", bh.Addr())
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseConnect, de.Phase)
	assert.Equal(t, "connect_timeout", de.ErrorType())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.GreaterOrEqual(t, elapsed, 4500*time.Millisecond, "the default ConnectTimeout is 5s")
	assert.Less(t, elapsed, 7*time.Second, "failed in < 7s with a 5s connect default")
	st, _ := h.Stats(de.Peer)
	assert.EqualValues(t, 2, st.ConnectTimeouts, "the lone address raced itself once (MaxAttemptsPerAddress 2)")
	assert.Len(t, de.Attempts(), 2)
}

func TestConnectTimeoutBlackhole(t *testing.T) {
	checkFDs(t)
	bh := faultnet.NewBlackhole(t, "")
	d := dial.Dialer{ConnectTimeout: 300 * time.Millisecond}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", bh.Addr())
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Equal(t, dial.PhaseConnect, de.Phase)
	assert.Equal(t, "connect_timeout", de.ErrorType())
	assert.True(t, de.Timeout())
	assert.Less(t, elapsed, 3*time.Second)
	assert.GreaterOrEqual(t, elapsed, 290*time.Millisecond)
}

func TestWholeDialTimeout(t *testing.T) {
	checkFDs(t)
	var addrs []string
	port := 0
	for _, ip := range []string{"127.0.0.2", "127.0.0.3", "127.0.0.4"} {
		bh := faultnet.NewBlackhole(t, net.JoinHostPort(ip, itoa(port)))
		ap := netip.MustParseAddrPort(bh.Addr())
		port = int(ap.Port())
		addrs = append(addrs, ip)
	}
	h := &dial.Health{}
	d := dial.Dialer{
		Resolver:     resolverFor(addrs...),
		Timeout:      400 * time.Millisecond,
		AttemptDelay: 100 * time.Millisecond,
		Health:       h,
	}
	start := time.Now()
	_, err := d.DialContext(t.Context(), "tcp", hostPort(port))
	elapsed := time.Since(start)
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.Less(t, elapsed, 2*time.Second, "Timeout 400ms bounds the whole race")
	assert.True(t, de.Timeout())
	assert.ErrorIs(t, err, context.DeadlineExceeded)
	assert.Equal(t, "timeout", de.ErrorType())
	tried := map[netip.AddrPort]bool{}
	for _, a := range de.Attempts() {
		tried[a.Peer] = true
	}
	assert.Len(t, tried, 3, "all three addresses were started within 400ms")
	assert.LessOrEqual(t, len(de.Attempts()), 6, "at most MaxAttemptsPerAddress (2) to each")
	t.Log(err)
	assert.Empty(t, h.Snapshot(), "the dial's own Timeout is not a peer failure")
}

func TestNilContextAndZeroDialer(t *testing.T) {
	var d dial.Dialer
	//nolint:staticcheck // a nil context is bad input, not a panic
	_, err := d.DialContext(nil, "tcp", "127.0.0.1:1") //lint:ignore SA1012 testing bad input
	var de *dial.Error
	require.ErrorAs(t, err, &de)
	assert.True(t, strings.Contains(err.Error(), "nil context"))
}
