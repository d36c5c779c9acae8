package pool_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
)

// A pool in front of a line-echo server on loopback: the second Acquire
// reuses the connection the first one released.
func Example() {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() { defer c.Close(); io.Copy(c, c) }()
		}
	}()

	var d net.Dialer
	p, err := pool.New(pool.Config{
		Dial: func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", ln.Addr().String())
		},
		MaxConns: 4,
	})
	if err != nil {
		panic(err)
	}
	defer p.Close()

	ctx := context.Background()
	c, err := p.Acquire(ctx)
	if err != nil {
		panic(err)
	}
	c.Write([]byte("ping"))
	buf := make([]byte, 4)
	n, _ := c.Read(buf)
	fmt.Println(string(buf[:n]))
	c.Release()

	c, err = p.Acquire(ctx)
	if err != nil {
		panic(err)
	}
	c.Release()
	s := p.Stats()
	fmt.Println("dialed:", s.Dialed, "acquired:", s.AcquireCount, "open:", s.Open)
	// Output:
	// ping
	// dialed: 1 acquired: 2 open: 1
}

// New names the field that is wrong.
func ExampleNew_validation() {
	_, err := pool.New(pool.Config{MaxConns: 2, MaxIdleConns: 3, Dial: func(context.Context) (net.Conn, error) { return nil, nil }})
	fmt.Println(err)
	_, err = pool.New(pool.Config{})
	fmt.Println(err)
	// Output:
	// pool: Config.MaxIdleConns (3) must not exceed MaxConns (2)
	// pool: Config.Dial is required
}

// A pool whose server is down (a loopback port that refuses connects):
// after 5 refused dials the pool knows the upstream is down, and an Acquire
// that would need a new dial fails at once, with the last refusal inside,
// until a probe finds the server back. pool.WaitForReady(ctx) makes an
// Acquire wait for that instead.
func ExampleUnavailableError() {
	// A loopback port where nothing listens (connects are refused), kept
	// reserved so that nothing else can start listening there meanwhile.
	port, err := faultnet.NewRefusedPort("tcp")
	if err != nil {
		panic(err)
	}
	defer port.Close()
	addr := port.Addr()

	d := &dial.Dialer{}
	p, err := pool.New(pool.Config{
		Name: "db",
		Dial: func(ctx context.Context) (net.Conn, error) {
			return d.DialContext(ctx, "tcp", addr)
		},
	})
	if err != nil {
		panic(err)
	}
	defer p.Close()

	ctx := context.Background()
	for range 5 {
		_, err = p.Acquire(ctx) // each one dials and is refused
	}
	fmt.Println("unavailable after 5 refusals:", errors.Is(err, pool.ErrUnavailable))

	_, err = p.Acquire(ctx) // fails fast: no dial
	var ue *pool.UnavailableError
	var de *dial.Error
	fmt.Println("then:", errors.As(err, &ue), ue.Upstream, ue.Reason)
	fmt.Println("last failure:", errors.As(err, &de), de.Phase)
	fmt.Println("failed fast:", p.Stats().Unavailable)
	// Output:
	// unavailable after 5 refusals: false
	// then: true db down
	// last failure: true connect
	// failed fast: 1
}

// An Acquire that must not fail fast (a startup path, a long job) waits,
// within its context, for the upstream to come back: here a server that
// starts listening on the port while the Acquire waits. It becomes the next
// probe when one is due (about a second after the upstream went down) and
// gets the conn of the dial that succeeds.
func ExampleWaitForReady() {
	// The server is down: a reserved loopback port where nothing listens
	// yet, that only this server can listen on later.
	port, err := faultnet.NewRefusedPort("tcp")
	if err != nil {
		panic(err)
	}
	defer port.Close()
	addr := port.Addr()

	var d net.Dialer
	p, err := pool.New(pool.Config{Dial: func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}})
	if err != nil {
		panic(err)
	}
	defer p.Close()
	for range 5 {
		p.Acquire(context.Background()) // refused: the upstream is now known down
	}
	_, err = p.Acquire(context.Background())
	fmt.Println("fails fast:", errors.Is(err, pool.ErrUnavailable))

	done := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(pool.WaitForReady(context.Background()), 10*time.Second)
		defer cancel()
		c, err := p.Acquire(ctx)
		if err == nil {
			c.Release()
		}
		done <- err
	}()
	time.Sleep(100 * time.Millisecond)
	ln, err := port.Listen() // the server comes back
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	fmt.Println("waited and got a conn:", <-done == nil)
	// Output:
	// fails fast: true
	// waited and got a conn: true
}
