package dial_test

import (
	"io"
	"net"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// TestFirstByteSlowSingleWrite: a request written in one Write that takes
// longer than FirstByteTimeout (a big body to a peer that reads slowly)
// starts the clock when the Write ends, not when it began: neither a Read
// waiting meanwhile on another goroutine nor one after it is cut.
func TestFirstByteSlowSingleWrite(t *testing.T) {
	const size = 64 << 20
	const limit = 300 * time.Millisecond
	for _, concurrent := range []bool{false, true} {
		name := "read after the write"
		if concurrent {
			name = "read during the write"
		}
		t.Run(name, func(t *testing.T) {
			srv := faultnet.Start(t, faultnet.Config{Handler: func(c net.Conn) {
				time.Sleep(4 * limit) // not reading: the Write blocks
				if _, err := io.CopyN(io.Discard, c, size); err != nil {
					return
				}
				_, _ = c.Write([]byte("ok\n"))
				_, _ = io.Copy(io.Discard, c)
			}})
			d := dial.Dialer{FirstByteTimeout: limit}
			conn, err := d.DialContext(t.Context(), "tcp", srv.Addr())
			require.NoError(t, err)
			defer conn.Close()
			type result struct {
				s   string
				err error
			}
			ch := make(chan result, 1)
			read := func() {
				buf := make([]byte, 16)
				n, err := conn.Read(buf)
				ch <- result{string(buf[:n]), err}
			}
			if concurrent {
				go read()
			}
			start := time.Now()
			_, err = conn.Write(make([]byte, size))
			require.NoError(t, err)
			require.Greater(t, time.Since(start), limit, "the Write did not outlast the limit: the test proves nothing")
			if !concurrent {
				go read()
			}
			select {
			case r := <-ch:
				require.NoError(t, r.err)
				require.Equal(t, "ok\n", r.s)
			case <-time.After(10 * time.Second):
				conn.Close()
				<-ch
				t.Fatal("no reply")
			}
		})
	}
}
