package dial_test

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
)

// Dial a local listener with the zero Dialer: every phase already has a
// finite limit.
func ExampleDialer_DialContext() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	accepted := make(chan struct{})
	go func() {
		defer close(accepted)
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()

	var d dial.Dialer
	conn, err := d.DialContext(context.Background(), "tcp", ln.Addr().String())
	if err != nil {
		fmt.Println(err)
		return
	}
	conn.Close()
	<-accepted
	fmt.Println("connected")
	// Output: connected
}

// A failed dial says where it broke, and whether trying again can help.
func ExampleError() {
	// Nothing listens on port 1 of loopback (binding it needs root):
	// connect is refused.
	var d dial.Dialer
	_, err := d.DialContext(context.Background(), "tcp", "127.0.0.1:1")
	var de *dial.Error
	if errors.As(err, &de) {
		fmt.Println(de.Phase, de.ErrorType(), de.Retryable())
	}
	// Output: connect connect_refused true
}

// A Health shared by Dialers remembers which peers failed; a dashboard or a
// probe reads it with Snapshot.
func ExampleHealth() {
	// A loopback port where nothing listens, kept reserved meanwhile.
	port, err := faultnet.NewRefusedPort("tcp")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer port.Close()
	addr := port.Addr()

	h := &dial.Health{}
	d := dial.Dialer{Health: h}
	_, _ = d.DialContext(context.Background(), "tcp", addr)
	for _, st := range h.Snapshot() {
		fmt.Println("refusals:", st.Refusals, "demoted:", st.Demoted)
	}
	// Output: refusals: 1 demoted: true
}

// Plug the Dialer into net/http: both plain and TLS connections are raced
// and bounded, and a load balancer that accepts TCP but stalls TLS is
// overtaken by the next address after AttemptDelay.
func ExampleDialer_DialTLSContext() {
	d := &dial.Dialer{
		TLSConfig:        &tls.Config{NextProtos: []string{"http/1.1"}},
		FirstByteTimeout: 10 * time.Second,
		Health:           &dial.Health{},
	}
	client := &http.Client{Transport: &http.Transport{
		DialContext:    d.DialContext,
		DialTLSContext: d.DialTLSContext,
	}}
	_ = client
}

// staticResolver answers one name with fixed addresses, per family.
type staticResolver []netip.Addr

func (r staticResolver) LookupNetIP(_ context.Context, network, _ string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, a := range r {
		if (network == "ip4" && a.Is4()) || (network == "ip6" && a.Is6()) || network == "ip" {
			out = append(out, a)
		}
	}
	return out, nil
}

// Probe every address of a name on its own: the race would hide the dead
// one from callers; the probe names it and its phase.
func ExampleDialer_Probe() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	// 127.0.0.1 listens; nothing listens on 127.0.0.2 at that port.
	d := &dial.Dialer{Resolver: staticResolver{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2")}}
	results, err := d.Probe(context.Background(), "tcp", net.JoinHostPort("api.example", strconv.Itoa(port)), false)
	if err != nil {
		fmt.Println(err)
		return
	}
	for _, r := range results {
		var de *dial.Error
		if errors.As(r.Err, &de) {
			fmt.Println(r.Peer.Addr(), "failed:", de.Phase, de.ErrorType())
		} else {
			fmt.Println(r.Peer.Addr(), "ok")
		}
	}
	// Output:
	// 127.0.0.1 ok
	// 127.0.0.2 failed: connect connect_refused
}

// A Dialer without a Health learns on its own: the address that refused
// the first dial goes behind the live one in the next dials, and
// Scoreboard shows what the Dialer learnt.
func ExampleDialer_Scoreboard() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		fmt.Println(err)
		return
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	// Nothing listens on 127.0.0.2 at that port.
	d := &dial.Dialer{Resolver: staticResolver{netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.1")}}
	for range 3 {
		conn, err := d.DialContext(context.Background(), "tcp", net.JoinHostPort("api.example", port))
		if err != nil {
			fmt.Println(err)
			return
		}
		conn.Close()
	}
	for _, st := range d.Scoreboard().Snapshot() {
		fmt.Println(st.Peer.Addr(), "successes:", st.Successes, "refusals:", st.Refusals, "demoted:", st.Demoted)
	}
	// Output:
	// 127.0.0.1 successes: 3 refusals: 0 demoted: false
	// 127.0.0.2 successes: 0 refusals: 1 demoted: true
}

// A type that builds a Dialer for each call from its own fields gives each
// the Health kept for itself, so that one call's failures orient the next.
func ExampleHealthFor() {
	type client struct {
		name string
		base dial.Dialer
	}
	c := &client{name: "api"}
	dialer := func() *dial.Dialer {
		d := c.base // a fresh copy per call
		if d.Health == nil {
			d.Health = dial.HealthFor(c)
		}
		return &d
	}
	first, second := dialer(), dialer()
	fmt.Println(first != second, first.Health == second.Health)
	// Output: true true
}
