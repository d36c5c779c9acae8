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
