package dial_test

import (
	"context"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// aOnlyDNS is a DNS server on loopback UDP that answers every A query with
// 127.0.0.1 and never answers AAAA queries: the broken resolver or
// middlebox that swallows AAAA. It counts the queries of each type.
type aOnlyDNS struct {
	conn    net.PacketConn
	a, aaaa atomic.Int32
	wg      sync.WaitGroup
}

func startAOnlyDNS(t *testing.T) *aOnlyDNS {
	t.Helper()
	pc, err := net.ListenPacket("udp", "127.0.0.1:0")
	require.NoError(t, err)
	s := &aOnlyDNS{conn: pc}
	s.wg.Add(1)
	go s.serve()
	t.Cleanup(func() { pc.Close(); s.wg.Wait() })
	return s
}

func (s *aOnlyDNS) serve() {
	defer s.wg.Done()
	buf := make([]byte, 512)
	for {
		n, from, err := s.conn.ReadFrom(buf)
		if err != nil {
			return
		}
		q := buf[:n]
		// Header (12 bytes), then one question: QNAME labels, QTYPE, QCLASS.
		if len(q) < 12 || binary.BigEndian.Uint16(q[4:]) != 1 {
			continue
		}
		i := 12
		for i < len(q) && q[i] != 0 {
			i += int(q[i]) + 1
		}
		if i+5 > len(q) {
			continue
		}
		qtype := binary.BigEndian.Uint16(q[i+1:])
		question := q[12 : i+5]
		switch qtype {
		case 28: // AAAA: never answered
			s.aaaa.Add(1)
			continue
		case 1: // A
			s.a.Add(1)
		default:
			continue
		}
		resp := make([]byte, 0, 12+len(question)+16)
		resp = append(resp, q[0], q[1], 0x81, 0x80)   // ID; QR, RD, RA, NOERROR
		resp = binary.BigEndian.AppendUint16(resp, 1) // QDCOUNT
		resp = binary.BigEndian.AppendUint16(resp, 1) // ANCOUNT
		resp = append(resp, 0, 0, 0, 0)               // NSCOUNT, ARCOUNT
		resp = append(resp, question...)
		resp = append(resp, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4, 127, 0, 0, 1) // name ptr, A, IN, TTL 60, 127.0.0.1
		_, _ = s.conn.WriteTo(resp, from)
	}
}

// TestRealResolverAAAABlackhole: with Go's own resolver pointed at a DNS
// server that answers A and swallows AAAA, a dial still connects in well
// under a second — the A answer plus the 50ms Resolution Delay — where a
// single combined lookup would wait the whole 5s ResolveTimeout and fail.
func TestRealResolverAAAABlackhole(t *testing.T) {
	checkFDs(t)
	dns := startAOnlyDNS(t)
	srv := faultnet.Start(t, faultnet.Config{})
	// Go's resolver goes on with a canceled lookup in the background
	// (singleflight), and its UDP read is bounded only by resolv.conf's
	// timeout, not by the context; closing the conn when the context ends
	// stops it at once, so no socket outlives the dial.
	res := &net.Resolver{PreferGo: true, Dial: func(ctx context.Context, _, _ string) (net.Conn, error) {
		var d net.Dialer
		c, err := d.DialContext(ctx, "udp", dns.conn.LocalAddr().String())
		if err != nil {
			return nil, err
		}
		context.AfterFunc(ctx, func() { c.Close() })
		return c, nil
	}}
	d := dial.Dialer{Resolver: res}
	start := time.Now()
	conn, err := d.DialContext(t.Context(), "tcp", net.JoinHostPort("lifeline.test.", itoa(srv.Port())))
	elapsed := time.Since(start)
	require.NoError(t, err)
	defer conn.Close()
	assert.Equal(t, srv.Addr(), conn.RemoteAddr().String())
	assert.Less(t, elapsed, time.Second, "an unanswered AAAA query costs the Resolution Delay, not ResolveTimeout")
	assert.Positive(t, dns.aaaa.Load(), "the AAAA query was sent (and swallowed)")
	assert.Positive(t, dns.a.Load(), "the A query was answered")
}
