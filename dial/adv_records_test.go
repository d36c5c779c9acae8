package dial_test

import (
	"crypto/tls"
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
)

// TestFirstByteTLS13RecordsInPieces: records split byte by byte across
// TCP segments (a KeyUpdate, a ticket, then the reply) end in the reply;
// a partial record and silence end in the first-byte timeout; an alert
// (close_notify) ends the Read at once.
func TestFirstByteTLS13RecordsInPieces(t *testing.T) {
	const hs, data, alert = 22, 23, 21
	trickle := func(c net.Conn, rec []byte) {
		for i := range rec {
			if _, err := c.Write(rec[i : i+1]); err != nil {
				return
			}
			time.Sleep(time.Millisecond)
		}
	}
	cases := []struct {
		name string
		then func(c net.Conn, s *dial.TLS13Sealer)
		want string // "" : a first-byte timeout; "EOF": io.EOF
	}{
		{"KeyUpdate, ticket and reply byte by byte", func(c net.Conn, s *dial.TLS13Sealer) {
			ku := s.Seal(hs, keyUpdateMsg(true))
			require.NoError(t, s.Update())
			trickle(c, ku)
			trickle(c, s.Seal(hs, ticketMsg(0, 40)))
			trickle(c, s.Seal(data, []byte("hello")))
		}, "hello"},
		{"partial reply record, silence", func(c net.Conn, s *dial.TLS13Sealer) {
			rec := s.Seal(data, []byte("hello"))
			_, _ = c.Write(rec[:len(rec)-3])
		}, ""},
		{"ticket, then a partial header, silence", func(c net.Conn, s *dial.TLS13Sealer) {
			_, _ = c.Write(s.Seal(hs, ticketMsg(0, 40)))
			_, _ = c.Write(s.Seal(data, []byte("hello"))[:3])
		}, ""},
		{"close_notify", func(c net.Conn, s *dial.TLS13Sealer) {
			_, _ = c.Write(s.Seal(alert, []byte{1, 0}))
		}, "EOF"},
	}
	const limit = 400 * time.Millisecond
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			addr, clientCfg := injectingServer(t, func(*dial.TLS13Sealer) [][]byte { return nil }, tc.then)
			clientCfg.MinVersion = tls.VersionTLS13
			d := dial.Dialer{Resolver: resolverFor(addr), TLSConfig: clientCfg, FirstByteTimeout: limit}
			_, port, _ := net.SplitHostPort(addr)
			conn, err := d.DialTLSContext(t.Context(), "tcp", net.JoinHostPort(testHost, port))
			require.NoError(t, err)
			defer conn.Close()
			_, err = conn.Write([]byte("GET\n"))
			require.NoError(t, err)
			got, elapsed, err := readBounded(t, conn, 5*time.Second)
			switch tc.want {
			case "":
				requireFirstByteTimeout(t, err)
				assert.Less(t, elapsed, 3*time.Second)
			case "EOF":
				require.ErrorIs(t, err, io.EOF)
				assert.Less(t, elapsed, limit)
			default:
				require.NoError(t, err)
				assert.Equal(t, tc.want, got)
			}
		})
	}
}
