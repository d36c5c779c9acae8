package dial_test

import (
	"bufio"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// TestFirstByteLateReadOfTimelyReply: a reply that arrived within the
// bound but that the caller reads only after it (busy elsewhere, or
// descheduled under load) is the reply, not a first-byte stall: the Read
// returns it, and the peer is not demoted. Plain TCP and TLS, greeting and
// request/reply.
func TestFirstByteLateReadOfTimelyReply(t *testing.T) {
	serverCfg, clientCfg, _ := testCert(t, testHost)
	const limit = 200 * time.Millisecond
	for _, tc := range []struct {
		name     string
		tls      bool
		greeting bool
	}{{"greeting", false, true}, {"reply", false, false}, {"TLS greeting", true, true}, {"TLS reply", true, false}} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := faultnet.Config{Handler: func(c net.Conn) {
				if !tc.greeting {
					if _, err := bufio.NewReader(c).ReadString('\n'); err != nil {
						return
					}
				}
				_, _ = c.Write([]byte("220 ready\r\n"))
				_, _ = io.Copy(io.Discard, c)
			}}
			if tc.tls {
				cfg.TLS = serverCfg
			}
			srv := faultnet.Start(t, cfg)
			h := &dial.Health{}
			d := dial.Dialer{Resolver: resolverFor(srv.Addr()), TLSConfig: clientCfg, FirstByteTimeout: limit, Health: h}
			var conn net.Conn
			var err error
			if tc.tls {
				conn, err = d.DialTLSContext(t.Context(), "tcp", hostPort(srv.Port()))
			} else {
				conn, err = d.DialContext(t.Context(), "tcp", srv.Addr())
			}
			require.NoError(t, err)
			defer conn.Close()
			if !tc.greeting {
				_, err = conn.Write([]byte("HELO\n"))
				require.NoError(t, err)
			}
			time.Sleep(3 * limit) // the reply is in the socket well before the bound; the caller is busy
			got, _, err := readBounded(t, conn, 5*time.Second)
			require.NoError(t, err)
			assert.Equal(t, "220 ready\r\n", got)
			for _, p := range h.Snapshot() {
				assert.Zero(t, p.FirstByteStalls, "a timely reply demoted the peer")
			}
		})
	}
}

// TestFirstByteGreetingTimeoutMetric: a greeting that never comes is
// recorded in the first-byte duration as the bound that expired
// (GreetingTimeout), not FirstByteTimeout.
func TestFirstByteGreetingTimeoutMetric(t *testing.T) {
	srv := faultnet.Start(t, faultnet.Config{Fault: faultnet.Silence})
	tel := newTelemetry(t)
	d := dial.Dialer{FirstByteTimeout: 30 * time.Second, GreetingTimeout: 200 * time.Millisecond, MeterProvider: tel.mp}
	conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
	require.NoError(t, err)
	defer conn.Close()
	_, _, err = readBounded(t, conn, 5*time.Second)
	requireFirstByteTimeout(t, err)
	var n uint64
	for _, p := range tel.histPoints(t, "lifeline.dial.duration") {
		if setValue(p.Attributes, "lifeline.phase") != "first_byte" {
			continue
		}
		n += p.Count
		assert.InDelta(t, 0.2, p.Sum, 0.05, "the greeting's bound, not FirstByteTimeout")
	}
	assert.EqualValues(t, 1, n)
}
