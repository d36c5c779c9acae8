package transport_test

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/transport"
)

// stallingListener accepts conns and reads from them without ever
// answering: a TLS handshake to it stalls after the ClientHello.
func stallingListener(t *testing.T) *net.TCPAddr {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	done := make(chan struct{})
	t.Cleanup(func() { ln.Close(); <-done })
	go func() {
		defer close(done)
		var conns []net.Conn
		defer func() {
			for _, c := range conns {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns = append(conns, c)
			go func() { _, _ = io.Copy(io.Discard, c) }()
		}
	}()
	return ln.Addr().(*net.TCPAddr)
}

// blockingResolver never answers before its context ends.
type blockingResolver struct{}

func (blockingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	<-ctx.Done()
	return nil, ctx.Err()
}

// TestDeadlineKeepsDialPhase (issue 20, break 10): when the caller's
// deadline ends a request while its dial is stalled, the error says where
// it broke, as a direct dial's does: errors.As finds a *dial.Error with
// the phase (and the peer once there is one), errors.Is finds
// context.DeadlineExceeded, and the text says "deadline exceeded" once.
// net/http detaches its dials from the request, so the dial's own error
// comes only after RoundTrip returned: the Transport reports how far the
// dial had got.
func TestDeadlineKeepsDialPhase(t *testing.T) {
	stall := stallingListener(t)
	port := strconv.Itoa(stall.Port)
	cases := []struct {
		name     string
		url      string
		resolver dial.Resolver
		phase    dial.Phase
		peer     bool
		cause    error // the deadline's cause (context.WithDeadlineCause), as the C ABI sets it
	}{
		{"tls, IP literal", "https://127.0.0.1:" + port + "/", nil, dial.PhaseTLS, true, nil},
		{"tls, name", "https://example.com:" + port + "/", staticResolver{"example.com", []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, dial.PhaseTLS, true, nil},
		{"dns", "https://example.com:" + port + "/", blockingResolver{}, dial.PhaseDNS, false, nil},
		{"tls, deadline with a cause", "https://127.0.0.1:" + port + "/", nil, dial.PhaseTLS, true,
			errors.New("lifeline: operation deadline exceeded")},
		{"connect, http", "http://127.0.0.1:" + port + "/", nil, dial.PhaseConnect, true, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			d := &dial.Dialer{Resolver: tc.resolver, ResolveTimeout: 2 * time.Second,
				ConnectTimeout: 2 * time.Second, TLSHandshakeTimeout: 2 * time.Second}
			if tc.phase == dial.PhaseConnect {
				// A connect that hangs (a dropped SYN) until its limit.
				d.DialFunc = func(ctx context.Context, _, _ string) (net.Conn, error) {
					<-ctx.Done()
					return nil, ctx.Err()
				}
			}
			tr := &transport.Transport{Dialer: d}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithDeadlineCause(t.Context(), time.Now().Add(300*time.Millisecond), tc.cause)
			defer cancel()
			req, err := http.NewRequestWithContext(ctx, http.MethodGet, tc.url, nil)
			require.NoError(t, err)
			start := time.Now()
			_, err = tr.RoundTrip(req)
			require.Error(t, err)
			assert.Less(t, time.Since(start), 1500*time.Millisecond, "the caller's deadline, not the Dialer's limits")
			t.Log(err)
			assert.ErrorIs(t, err, context.DeadlineExceeded)
			var de *dial.Error
			require.ErrorAs(t, err, &de)
			assert.Equal(t, tc.phase, de.Phase)
			assert.Equal(t, req.URL.Host, de.Addr)
			if tc.peer {
				assert.Equal(t, stall.AddrPort().String(), netip.AddrPortFrom(de.Peer.Addr().Unmap(), de.Peer.Port()).String())
			} else {
				assert.False(t, de.Peer.IsValid())
			}
			assert.Equal(t, 1, strings.Count(err.Error(), "deadline exceeded"), err.Error())
			if tc.cause != nil {
				assert.ErrorIs(t, err, tc.cause)
			}
			assert.Contains(t, err.Error(), ": "+tc.phase.String()+": ")
		})
	}
}

// TestCancelNotADialFailure: a caller's cancel while the dial stalls is
// the cancel, not a dial failure.
func TestCancelNotADialFailure(t *testing.T) {
	stall := stallingListener(t)
	tr := &transport.Transport{}
	defer tr.CloseIdleConnections()
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(200*time.Millisecond, cancel)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "https://"+stall.String()+"/", nil)
	require.NoError(t, err)
	_, err = tr.RoundTrip(req)
	require.ErrorIs(t, err, context.Canceled)
	var de *dial.Error
	assert.False(t, errors.As(err, &de), "%v", err)
}

// answeringProxy is a CONNECT proxy on loopback that answers every CONNECT
// with head (and, with endless, then an endless header line), and counts
// the CONNECTs.
func answeringProxy(t *testing.T, head string, endless bool) (string, *atomic.Int32) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	var connects atomic.Int32
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	wg.Add(1)
	go func() {
		defer wg.Done()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				req, err := http.ReadRequest(bufio.NewReader(c))
				if err != nil || req.Method != http.MethodConnect {
					return
				}
				connects.Add(1)
				if _, err := io.WriteString(c, head); err != nil || !endless {
					return
				}
				_, _ = io.WriteString(c, "X-Fill: ")
				fill := []byte(strings.Repeat("a", 32<<10))
				_ = c.SetWriteDeadline(time.Now().Add(10 * time.Second))
				for {
					if _, err := c.Write(fill); err != nil {
						return
					}
				}
			}()
		}
	}()
	return ln.Addr().String(), &connects
}

// TestProxyRefusalIsFinal (issue 20, risk): a CONNECT proxy's 407 (or
// another refusal) is the proxy's final word, as on the websocket path:
// one CONNECT, not one per attempt, and a *ProxyError that says so; a
// proxy's 502 (it could not reach the server) is retried. A CONNECT
// answer whose headers never end is a *HeaderLimitError, not retried.
func TestProxyRefusalIsFinal(t *testing.T) {
	cases := []struct {
		name     string
		head     string
		endless  bool
		connects int32
		check    func(t *testing.T, err error)
	}{
		{"407", "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\nContent-Length: 0\r\n\r\n", false, 1,
			func(t *testing.T, err error) {
				var pe *transport.ProxyError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, http.StatusProxyAuthRequired, pe.StatusCode)
			}},
		{"403", "HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n", false, 1, nil},
		{"502", "HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n", false, 3,
			func(t *testing.T, err error) {
				var pe *transport.ProxyError
				require.ErrorAs(t, err, &pe)
				assert.Equal(t, http.StatusBadGateway, pe.StatusCode)
			}},
		{"endless headers", "HTTP/1.1 200 Connection established\r\n", true, 1,
			func(t *testing.T, err error) {
				var he *transport.HeaderLimitError
				assert.ErrorAs(t, err, &he)
			}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			proxy, connects := answeringProxy(t, tc.head, tc.endless)
			tr := &transport.Transport{Retry: fastRetry(), MaxResponseHeaderBytes: 64 << 10,
				Proxy: http.ProxyURL(&url.URL{Scheme: "http", Host: proxy})}
			defer tr.CloseIdleConnections()
			_, err := tr.RoundTrip(newReq(t, http.MethodGet, "https://127.0.0.1:1/", ""))
			require.Error(t, err)
			t.Log(err)
			assert.Equal(t, tc.connects, connects.Load(), "CONNECTs")
			if tc.check != nil {
				tc.check(t, err)
			}
		})
	}
}
