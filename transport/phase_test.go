package transport_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
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
	}{
		{"tls, IP literal", "https://127.0.0.1:" + port + "/", nil, dial.PhaseTLS, true},
		{"tls, name", "https://example.com:" + port + "/", staticResolver{"example.com", []netip.Addr{netip.MustParseAddr("127.0.0.1")}}, dial.PhaseTLS, true},
		{"dns", "https://example.com:" + port + "/", blockingResolver{}, dial.PhaseDNS, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			tr := &transport.Transport{Dialer: &dial.Dialer{Resolver: tc.resolver,
				ResolveTimeout: 2 * time.Second, TLSHandshakeTimeout: 2 * time.Second}}
			defer tr.CloseIdleConnections()
			ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
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
