package faultnet_test

import (
	"io"
	"net"
	"testing"

	"github.com/lifeline-go/lifeline/faultnet"
)

// BenchmarkServerConnect measures one full connection through a Server:
// connect, one echoed byte, close. It is the cost a test pays per conn.
func BenchmarkServerConnect(b *testing.B) {
	s := faultnet.Start(b, faultnet.Config{})
	buf := make([]byte, 1)
	for b.Loop() {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			b.Fatal(err)
		}
		if _, err := c.Write(buf); err != nil {
			b.Fatal(err)
		}
		if _, err := io.ReadFull(c, buf); err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkRoundTrip compares a 1 KiB echo round trip on an open conn,
// directly and through a pass-through Proxy: the proxy's overhead.
func BenchmarkRoundTrip(b *testing.B) {
	s := faultnet.Start(b, faultnet.Config{})
	p := faultnet.StartProxy(b, faultnet.ProxyConfig{Upstream: s.Addr()})
	for _, tc := range []struct{ name, addr string }{{"direct", s.Addr()}, {"proxy", p.Addr()}} {
		b.Run(tc.name, func(b *testing.B) {
			c, err := net.Dial("tcp", tc.addr)
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			msg := make([]byte, 1024)
			b.SetBytes(int64(len(msg)))
			for b.Loop() {
				if _, err := c.Write(msg); err != nil {
					b.Fatal(err)
				}
				if _, err := io.ReadFull(c, msg); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
