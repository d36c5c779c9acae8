package faultnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"testing"
	"time"
)

// LBConfig configures a load balancer made with [NewLB] or [StartLB]: a
// TCP pass-through in front of a real backend that hangs the connections
// its Selector picks, as the two load balancers of incident 01 hung about
// 8% of new HTTPS connections. Backend is required.
type LBConfig struct {
	// Addr is the address to listen on. "" means "127.0.0.1:0". Loopback
	// only, as for Config.Addr.
	Addr string
	// Backend is the "host:port" healthy connections are forwarded to,
	// byte for byte (a TLS backend terminates TLS itself: the balancer
	// never sees plaintext). The host must be a loopback IP literal or
	// "localhost". Required.
	Backend string
	// Fault is what picked connections get: Silence (accepted, then
	// nothing: the hang after accept) or StallTLS (the ClientHello is
	// read, then nothing: the hang in the TLS handshake). A picked
	// connection never reaches the backend, so a request sent on it is
	// never acted on. Zero (None) means Silence.
	Fault Fault
	// Select picks the connections Fault hits, by 1-based accept ordinal
	// (EveryNth(12), Fraction(0.08)). nil: no connection is hung.
	Select Selector
}

// NewLB starts a load balancer for cfg: a [Server] whose healthy
// connections are forwarded to cfg.Backend by [Forward] and whose picked
// ones are hung by cfg.Fault. Server.Stats counts both (Faulted: hung,
// Served: forwarded). The caller must Close it.
func NewLB(cfg LBConfig) (*Server, error) {
	if cfg.Backend == "" {
		return nil, errors.New("faultnet: LBConfig.Backend is empty")
	}
	ap, err := upstreamAddr("LBConfig.Backend", cfg.Backend)
	if err != nil {
		return nil, err
	}
	f := cfg.Fault
	switch f {
	case None:
		f = Silence
	case Silence, StallTLS:
	default:
		return nil, fmt.Errorf("faultnet: LBConfig.Fault %v: a load balancer hangs with Silence or StallTLS", f)
	}
	sel := cfg.Select
	if sel == nil {
		sel = func(int) bool { return false }
	}
	s, err := Listen(Config{Addr: cfg.Addr, Fault: f, Select: sel, Handler: Forward(ap.String())})
	if err == nil && isSelf(s.AddrPort(), ap) {
		s.Close()
		return nil, fmt.Errorf("faultnet: LBConfig.Backend %q is the balancer's own address %s: every connection would be forwarded to itself", cfg.Backend, s.Addr())
	}
	return s, err
}

// StartLB is NewLB that registers Close with tb.Cleanup and calls tb.Fatal
// when NewLB fails.
func StartLB(tb testing.TB, cfg LBConfig) *Server {
	tb.Helper()
	s, err := NewLB(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = s.Close() })
	return s
}

// Forward returns a Config.Handler that connects to backend (within 5s)
// and copies bytes both ways until either side closes or fails; the
// backend's conn is closed when it returns. backend's host must be a
// loopback IP literal or "localhost" (127.0.0.1; the name is never
// resolved). When the backend cannot be reached, or is not such an
// address, the client's conn is reset, as a balancer with a dead backend
// does. It returns once the client's conn is closed (the Server closes it
// on Close), so Server.Close does not wait on it.
func Forward(backend string) func(net.Conn) {
	ap, bad := upstreamAddr("Forward backend", backend)
	return func(client net.Conn) {
		if bad != nil {
			setLingerZero(client)
			return
		}
		ctx, cancel := context.WithTimeout(context.Background(), upstreamDialTimeout)
		var watch sync.WaitGroup
		if killed, ok := handlerConns.Load(client); ok { // a Server's conn: its Close ends the connect
			watch.Go(func() {
				select {
				case <-killed.(chan struct{}):
					cancel()
				case <-ctx.Done():
				}
			})
		}
		var d net.Dialer
		up, err := d.DialContext(ctx, "tcp", ap.String())
		cancel()
		watch.Wait()
		if err != nil {
			setLingerZero(client)
			return
		}
		var once sync.Once
		shut := func() { once.Do(func() { _ = up.Close(); _ = client.Close() }) }
		done := make(chan struct{})
		// The upload direction has its own goroutine; Forward waits for it
		// before returning, so the Server's wait covers both.
		go func() {
			defer close(done)
			if _, err := io.Copy(up, client); err != nil {
				shut()
				return
			}
			closeWrite(up) // pass the client's FIN on
		}()
		if _, err := io.Copy(client, up); err != nil {
			shut()
		} else {
			closeWrite(client)
		}
		// The reply ended: wait for the client's side, but not forever
		// (a client that keeps its write side open after the reply).
		t := time.NewTimer(forwardLinger)
		defer t.Stop()
		select {
		case <-done:
		case <-t.C:
			shut()
			<-done
		}
		shut()
	}
}

// forwardLinger bounds how long Forward waits for the client's FIN after
// the backend finished its reply.
const forwardLinger = 5 * time.Second
