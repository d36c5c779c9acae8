package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/faultnet"
	"github.com/lifeline-go/lifeline/pool"
	"github.com/lifeline-go/lifeline/retry"
)

// poolScene: an echo server behind a pool of 4; three times over, the
// network flaps and every connection is reset. Requests retry on a fresh
// connection, the pool never opens more than its cap, and the server's own
// count of concurrent connections shows it.
func poolScene(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "== 3. a pool through three flaps that reset every connection")
	// An echo server that takes 5ms per request, so that eight clients
	// contend for the pool's four connections.
	srv, err := faultnet.Listen(faultnet.Config{Handler: slowEcho})
	if err != nil {
		return err
	}
	defer srv.Close()
	d := &dial.Dialer{}
	const maxConns = 4
	p, err := pool.New(pool.Config{
		Dial:     func(ctx context.Context) (net.Conn, error) { return d.DialContext(ctx, "tcp", srv.Addr()) },
		MaxConns: maxConns,
		DialRate: 20,
	})
	if err != nil {
		return err
	}
	defer p.Close()
	policy := &retry.Policy{MaxAttempts: 4, InitialInterval: 10 * time.Millisecond}

	// echo is one request: acquire, write, read the echo, release. A reset
	// connection fails the write or the read; the pool destroys it on
	// Release and the retry gets another.
	echo := func(ctx context.Context) error {
		c, err := p.Acquire(ctx)
		if err != nil {
			return err
		}
		defer c.Release()
		_ = c.SetDeadline(time.Now().Add(time.Second))
		if _, err := io.WriteString(c, "ping"); err != nil {
			return err
		}
		_, err = io.ReadFull(c, make([]byte, 4))
		return err
	}
	var ok, failed atomic.Int64
	round := func() {
		var wg sync.WaitGroup
		for range 8 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for range 5 {
					if err := policy.Do(ctx, echo); err != nil {
						failed.Add(1)
					} else {
						ok.Add(1)
					}
				}
			}()
		}
		wg.Wait()
	}
	round()
	for range 3 {
		srv.DropAll() // the flap: every open connection is reset
		round()
	}
	st := p.Stats()
	fmt.Fprintf(w, "requests: %d ok, %d failed\n", ok.Load(), failed.Load())
	fmt.Fprintf(w, "connections at the server at once: at most %d (MaxConns %d)\n", srv.Stats().MaxActive, maxConns)
	fmt.Fprintf(w, "pool: dialed %d, evicted %d (broken %d, dead on checkout %d)\n",
		st.Dialed, st.Evicted(), st.EvictedBroken, st.EvictedDead)
	return nil
}

// slowEcho answers each 4-byte request after 5ms, until the client leaves.
func slowEcho(c net.Conn) {
	buf := make([]byte, 4)
	for {
		if _, err := io.ReadFull(c, buf); err != nil {
			return
		}
		t := time.NewTimer(5 * time.Millisecond)
		<-t.C
		if _, err := c.Write(buf); err != nil {
			return
		}
	}
}
