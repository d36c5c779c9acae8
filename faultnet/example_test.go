package faultnet_test

import (
	"errors"
	"fmt"
	"io"
	"net"
	"syscall"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// A server that closes every second connection at once and echoes the
// others; the client sees which ones were hit, and Stats agrees.
func Example() {
	s, err := faultnet.Listen(faultnet.Config{Fault: faultnet.CloseNow, Select: faultnet.EveryNth(2)})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	for i := 1; i <= 4; i++ {
		c, err := net.Dial("tcp", s.Addr())
		if err != nil {
			panic(err)
		}
		_, _ = c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		_, err = io.ReadFull(c, buf)
		switch {
		case err == nil:
			fmt.Printf("conn %d: %s\n", i, buf)
		case errors.Is(err, io.EOF):
			fmt.Printf("conn %d: closed by the server\n", i)
		default:
			fmt.Printf("conn %d: %v\n", i, err)
		}
		c.Close()
	}
	st := s.Stats()
	fmt.Printf("accepted %d, faulted %d, served %d\n", st.Accepted, st.Faulted, st.Served)
	// Output:
	// conn 1: ping
	// conn 2: closed by the server
	// conn 3: ping
	// conn 4: closed by the server
	// accepted 4, faulted 2, served 2
}

// Reset makes the client see ECONNRESET, which errors.Is can tell apart.
func ExampleServer_reset() {
	s, err := faultnet.Listen(faultnet.Config{Fault: faultnet.Reset})
	if err != nil {
		panic(err)
	}
	defer s.Close()

	c, err := net.Dial("tcp", s.Addr())
	if err == nil { // the RST may also arrive before connect returns
		defer c.Close()
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		_, err = c.Read(make([]byte, 1))
	}
	fmt.Println("connection reset:", errors.Is(err, syscall.ECONNRESET))
	// Output:
	// connection reset: true
}

func ExampleEveryNth() {
	sel := faultnet.EveryNth(12)
	for n := 1; n <= 40; n++ {
		if sel(n) {
			fmt.Print(n, " ")
		}
	}
	fmt.Println()
	// Output:
	// 12 24 36
}

func ExampleFraction() {
	sel := faultnet.Fraction(0.3)
	for n := 1; n <= 10; n++ {
		if sel(n) {
			fmt.Print(n, " ")
		}
	}
	fmt.Println()
	// Output:
	// 4 7 10
}

// Incident 01 in front of an echo server: every 12th connection is
// accepted and never answered.
func ExamplePreset() {
	up, err := faultnet.Listen(faultnet.Config{}) // the upstream: an echo server
	if err != nil {
		panic(err)
	}
	defer up.Close()
	p, err := faultnet.Incident01.New(up.Addr())
	if err != nil {
		panic(err)
	}
	defer p.Close()

	for i := 1; i <= 12; i++ {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			panic(err)
		}
		_, _ = c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
		_, err = io.ReadFull(c, make([]byte, 4))
		if err != nil {
			fmt.Printf("conn %d: no answer within 300ms\n", i)
		}
		c.Close()
	}
	fmt.Println(faultnet.Incident01.Client)
	fmt.Println("hung:", p.Stats().Faulted)
	// Output:
	// conn 12: no answer within 300ms
	// bound connect and first byte per attempt; retry or hedge on a new connection; count the hung attempts
	// hung: 1
}

// Rules change at run time; the first rule that picks a connection wins.
func ExampleProxy_SetRules() {
	up, err := faultnet.Listen(faultnet.Config{})
	if err != nil {
		panic(err)
	}
	defer up.Close()
	p, err := faultnet.NewProxy(faultnet.ProxyConfig{Upstream: up.Addr()})
	if err != nil {
		panic(err)
	}
	defer p.Close()

	try := func() string {
		c, err := net.Dial("tcp", p.Addr())
		if err != nil {
			return err.Error()
		}
		defer c.Close()
		_, _ = c.Write([]byte("ping"))
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 4)
		if _, err := io.ReadFull(c, buf); err != nil {
			if errors.Is(err, io.EOF) {
				return "closed by the proxy"
			}
			return "reset: " + fmt.Sprint(errors.Is(err, syscall.ECONNRESET))
		}
		return string(buf)
	}
	fmt.Println(try())
	err = p.SetRules(
		faultnet.Rule{Name: "close-first", Fault: faultnet.ProxyClose, Select: faultnet.FirstN(1)},
		faultnet.Rule{Name: "then-pass"},
	)
	fmt.Println(err, try(), try())
	fmt.Println(p.SetRules(faultnet.Rule{Name: "oops", StallAfter: -1}))
	// Output:
	// ping
	// <nil> closed by the proxy ping
	// faultnet: Rule[0] "oops".StallAfter -1 is negative
}

func ExampleLookupPreset() {
	for _, name := range []string{"incident03", "4", "incident09"} {
		p, ok := faultnet.LookupPreset(name)
		fmt.Println(name, ok, p.Name)
	}
	// Output:
	// incident03 true incident03
	// 4 true incident04
	// incident09 false
}

// A server that is down, comes up and goes down again on one port, which
// stays reserved throughout: no other test can take it in between.
func ExampleRefusedPort() {
	p, err := faultnet.NewRefusedPort("tcp")
	if err != nil {
		panic(err)
	}
	defer p.Close()

	try := func(when string) {
		c, err := net.Dial("tcp", p.Addr())
		switch {
		case err == nil:
			fmt.Printf("%s: connected\n", when)
			c.Close()
		case errors.Is(err, syscall.ECONNREFUSED):
			fmt.Printf("%s: refused\n", when)
		default:
			fmt.Printf("%s: %v\n", when, err)
		}
	}
	try("down")
	ln, err := p.Listen() // the server comes up
	if err != nil {
		panic(err)
	}
	try("up")
	ln.Close() // and goes down
	try("down again")
	// Output:
	// down: refused
	// up: connected
	// down again: refused
}
