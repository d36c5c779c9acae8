package soak_test

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"time"

	"github.com/gorilla/websocket"
)

// The control: what a user would write with the standard library (and
// gorilla for websocket) and the same limits, run beside lifeline on the
// same servers, faults, machine and moment. Its overruns are what the
// machine alone adds to a call that ends at its deadline; lifeline's are
// judged against them.

// dialFunc is a plain net.Dialer's DialContext (made inside the soak's
// namespace).
type dialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// withTimeout bounds each dial of d by timeout, as net.Dialer.Timeout does.
func withTimeout(d dialFunc, timeout time.Duration) dialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return d(ctx, network, addr)
	}
}

// controlTransport is a plain http.Transport with the limits the soak's
// lifeline Transports have (TLS handshake, first byte as
// ResponseHeaderTimeout, conns per host, idle conns, header bytes, HTTP/2
// pings), speaking proto.
func controlTransport(d dialFunc, roots *x509.CertPool, proto string) *http.Transport {
	return &http.Transport{
		Proxy:                  nil,
		DialContext:            withTimeout(d, 300*time.Millisecond),
		TLSClientConfig:        &tls.Config{RootCAs: roots, NextProtos: []string{proto}},
		TLSHandshakeTimeout:    300 * time.Millisecond,
		ResponseHeaderTimeout:  400 * time.Millisecond,
		ForceAttemptHTTP2:      proto == "h2",
		IdleConnTimeout:        30 * time.Second,
		MaxConnsPerHost:        64,
		MaxIdleConnsPerHost:    16,
		MaxResponseHeaderBytes: 1 << 20,
		ExpectContinueTimeout:  time.Second,
		HTTP2:                  &http.HTTP2Config{SendPingTimeout: 15 * time.Second, PingTimeout: 10 * time.Second},
	}
}

// plainPool is the pool a user writes around a net.Dialer: at most max
// conns, idle ones in a channel, a dial in the caller's goroutine bounded
// by its context and dialTimeout, no liveness check.
type plainPool struct {
	dial        dialFunc
	addr        string
	dialTimeout time.Duration
	slots       chan struct{} // one per open conn
	idle        chan net.Conn
	open, peak  atomic.Int64
}

func newPlainPool(d dialFunc, addr string, maxConns int, dialTimeout time.Duration) *plainPool {
	return &plainPool{dial: d, addr: addr, dialTimeout: dialTimeout,
		slots: make(chan struct{}, maxConns), idle: make(chan net.Conn, maxConns)}
}

func (p *plainPool) acquire(ctx context.Context) (net.Conn, error) {
	select {
	case c := <-p.idle:
		return c, nil
	default:
	}
	select {
	case c := <-p.idle:
		return c, nil
	case p.slots <- struct{}{}:
		if n := p.open.Add(1); n > p.peak.Load() {
			p.peak.Store(n)
		}
		c, err := withTimeout(p.dial, p.dialTimeout)(ctx, "tcp", p.addr)
		if err != nil {
			p.open.Add(-1)
			<-p.slots
			return nil, err
		}
		return c, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (p *plainPool) release(c net.Conn) {
	_ = c.SetDeadline(time.Time{})
	select {
	case p.idle <- c:
	default:
		p.discard(c)
	}
}

func (p *plainPool) discard(c net.Conn) {
	_ = c.Close()
	p.open.Add(-1)
	<-p.slots
}

func (p *plainPool) close() {
	for {
		select {
		case c := <-p.idle:
			p.discard(c)
		default:
			return
		}
	}
}

// plainWS is a gorilla websocket client a user writes: one conn, dialed
// when there is none, one writer at a time, the write deadline from the
// caller's context, the conn dropped on a write error; a reader goroutine
// per conn checks the echoes.
type plainWS struct {
	url      string
	d        websocket.Dialer
	sem      chan struct{}
	c        *websocket.Conn // guarded by sem
	wg       sync.WaitGroup
	got, bad atomic.Int64
}

func newPlainWS(d dialFunc, url string) *plainWS {
	return &plainWS{url: url, sem: make(chan struct{}, 1),
		d: websocket.Dialer{NetDialContext: withTimeout(d, 300*time.Millisecond), HandshakeTimeout: 400 * time.Millisecond}}
}

func (p *plainWS) write(ctx context.Context, data []byte) error {
	select {
	case p.sem <- struct{}{}:
	case <-ctx.Done():
		return ctx.Err()
	}
	defer func() { <-p.sem }()
	if p.c == nil {
		c, resp, err := p.d.DialContext(ctx, p.url, nil)
		if resp != nil && resp.Body != nil {
			_ = resp.Body.Close()
		}
		if err != nil {
			return err
		}
		p.c = c
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer c.Close()
			for {
				_, data, err := c.ReadMessage()
				if err != nil {
					return
				}
				p.got.Add(1)
				if !checkFrame(data) {
					p.bad.Add(1)
				}
			}
		}()
	}
	if dl, ok := ctx.Deadline(); ok {
		_ = p.c.SetWriteDeadline(dl)
	}
	if err := p.c.WriteMessage(websocket.BinaryMessage, data); err != nil {
		_ = p.c.Close()
		p.c = nil
		return err
	}
	return nil
}

func (p *plainWS) close() {
	p.sem <- struct{}{}
	if p.c != nil {
		_ = p.c.Close()
		p.c = nil
	}
	<-p.sem
	p.wg.Wait()
}
