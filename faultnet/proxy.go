package faultnet

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// ProxyFault is what a [Proxy] does to the connections its [Selector]
// picks. The zero value is ProxyPass.
type ProxyFault int

// The faults a Proxy can inject.
const (
	ProxyPass    ProxyFault = iota // forward both directions unchanged
	HoldResponse                   // forward client→upstream; hold every upstream→client byte ("response never starts")
	StallBody                      // forward the first StallAfter reply bytes, then hold the rest ("body stalls mid-way")
	Delay                          // add a latency in [Latency, LatencyMax] to each chunk, both directions (slow network)
)

var proxyFaultNames = [...]string{"ProxyPass", "HoldResponse", "StallBody", "Delay"}

// String returns the constant's name, e.g. "HoldResponse".
func (f ProxyFault) String() string {
	if f >= 0 && int(f) < len(proxyFaultNames) {
		return proxyFaultNames[f]
	}
	return "ProxyFault(" + strconv.Itoa(int(f)) + ")"
}

func (f ProxyFault) valid() bool { return f >= ProxyPass && f <= Delay }

// upstreamDialTimeout bounds the proxy's connect to its upstream.
const upstreamDialTimeout = 5 * time.Second

// ProxyConfig configures a [Proxy]. Upstream is required; the zero value of
// every other field is usable. NewProxy copies the config.
type ProxyConfig struct {
	// Addr is the address to listen on. "" means "127.0.0.1:0". Loopback
	// only, as for Config.Addr.
	Addr string
	// Upstream is the "host:port" every connection is forwarded to; the
	// host must be a loopback IP literal or "localhost". Required.
	Upstream string
	// Fault is applied to the connections Select picks. Zero: ProxyPass.
	Fault ProxyFault
	// Select picks the connections Fault hits, by 1-based accept ordinal.
	// nil: All().
	Select Selector
	// StallAfter is how many reply bytes StallBody forwards before it
	// holds. 0 holds from the first byte. Negative is an error.
	StallAfter int
	// Latency is the minimum delay Delay adds to each chunk. Negative is
	// an error.
	Latency time.Duration
	// LatencyMax is the maximum delay; each chunk's delay is uniform in
	// [Latency, LatencyMax]. 0: Latency (a fixed delay). Less than Latency
	// otherwise is an error.
	LatencyMax time.Duration
}

func (c *ProxyConfig) validate() error {
	if c.Upstream == "" {
		return errors.New("faultnet: ProxyConfig.Upstream is empty")
	}
	ap, err := parseListenAddr("ProxyConfig.Upstream", c.Upstream, true)
	if err != nil {
		return err
	}
	if ap.Port() == 0 {
		return fmt.Errorf("faultnet: ProxyConfig.Upstream %q: port 0", c.Upstream)
	}
	switch {
	case !c.Fault.valid():
		return fmt.Errorf("faultnet: ProxyConfig.Fault %d is not a known ProxyFault", int(c.Fault))
	case c.StallAfter < 0:
		return fmt.Errorf("faultnet: ProxyConfig.StallAfter %d is negative", c.StallAfter)
	case c.Latency < 0:
		return fmt.Errorf("faultnet: ProxyConfig.Latency %v is negative", c.Latency)
	case c.LatencyMax != 0 && c.LatencyMax < c.Latency:
		return fmt.Errorf("faultnet: ProxyConfig.LatencyMax %v is less than Latency %v", c.LatencyMax, c.Latency)
	}
	return nil
}

// latency returns one chunk's delay.
func (c *ProxyConfig) latency() time.Duration {
	if c.LatencyMax <= c.Latency {
		return c.Latency
	}
	return c.Latency + rand.N(c.LatencyMax-c.Latency+1)
}

// Proxy is a loopback TCP proxy to one upstream that applies a [ProxyFault]
// to the connections its [Selector] picks; faults act on the reply
// direction (and both directions for Delay). Create it with [NewProxy] or
// [StartProxy]; the zero value is not usable. All methods are safe for
// concurrent use. The Proxy owns its listener, both sides of every proxied
// connection and its goroutines; Close releases them all and waits.
type Proxy struct {
	cfg    ProxyConfig
	ln     net.Listener
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loop, one handler and one upload copier per conn
	st     counters

	// mu guards the fields below.
	mu     sync.Mutex
	fault  ProxyFault
	sel    Selector
	n      int // accept ordinal since start or the last SetFault
	conns  map[*proxyConn]struct{}
	closed bool
}

// NewProxy starts a Proxy for cfg. The caller must Close it.
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	ap, err := parseListenAddr("ProxyConfig.Addr", cfg.Addr, true)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("faultnet: proxy listen %s: %w", ap, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg:    cfg,
		ln:     ln,
		ctx:    ctx,
		cancel: cancel,
		fault:  cfg.Fault,
		sel:    cfg.Select,
		conns:  make(map[*proxyConn]struct{}),
	}
	p.wg.Add(1)
	go p.acceptLoop()
	return p, nil
}

// StartProxy is NewProxy that registers Close with tb.Cleanup and calls
// tb.Fatal when NewProxy fails.
func StartProxy(tb testing.TB, cfg ProxyConfig) *Proxy {
	tb.Helper()
	p, err := NewProxy(cfg)
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { _ = p.Close() })
	return p
}

// Addr returns the proxy's listening "host:port".
func (p *Proxy) Addr() string { return p.ln.Addr().String() }

// Stats returns a snapshot of the counters. Served counts connections
// passed through unchanged; a connection whose upstream dial failed is
// Accepted but neither Faulted nor Served.
func (p *Proxy) Stats() Stats { return p.st.snapshot() }

// SetFault changes the fault and selector for connections accepted from now
// on; open connections keep theirs. The ordinal restarts at 1. A nil sel
// means All(). A ProxyFault that is not one of the constants is treated as
// ProxyPass.
func (p *Proxy) SetFault(f ProxyFault, sel Selector) {
	if !f.valid() {
		f = ProxyPass
	}
	p.mu.Lock()
	p.fault, p.sel, p.n = f, sel, 0
	p.mu.Unlock()
}

// Close stops listening, closes both sides of every proxied connection and
// waits for every goroutine the Proxy started. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	p.cancel()
	err := p.ln.Close()
	for pc := range p.conns {
		pc.shut()
	}
	p.mu.Unlock()
	p.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("faultnet: proxy close %s: %w", p.Addr(), err)
	}
	return nil
}

func (p *Proxy) acceptLoop() {
	defer p.wg.Done()
	var t *time.Timer
	for {
		c, err := p.ln.Accept()
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// Transient accept error: pause instead of spinning.
			if t == nil {
				t = time.NewTimer(5 * time.Millisecond)
				defer t.Stop()
			} else {
				t.Reset(5 * time.Millisecond)
			}
			select {
			case <-t.C:
			case <-p.ctx.Done():
				return
			}
			continue
		}
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			_ = c.Close()
			return
		}
		p.n++
		n, f, sel := p.n, p.fault, p.sel
		p.wg.Add(1) // under mu: Close sets closed under mu before it waits
		p.mu.Unlock()
		p.st.open()
		if f != ProxyPass && sel != nil && !sel(n) {
			f = ProxyPass
		}
		go p.handle(c, f)
	}
}

// proxyConn is one proxied connection: the client side and the upstream.
type proxyConn struct {
	client, upstream net.Conn
	holding          atomic.Bool // the reply direction is being held
	killed           chan struct{}
	once             sync.Once
}

// shut closes both sides; it is idempotent.
func (pc *proxyConn) shut() {
	pc.once.Do(func() {
		close(pc.killed)
		_ = pc.client.Close()
		_ = pc.upstream.Close()
	})
}

func (p *Proxy) handle(client net.Conn, f ProxyFault) {
	defer p.wg.Done()
	defer p.st.active.Add(-1)
	ctx, cancel := context.WithTimeout(p.ctx, upstreamDialTimeout)
	var d net.Dialer
	upstream, err := d.DialContext(ctx, "tcp", p.cfg.Upstream)
	cancel()
	if err != nil {
		// No upstream: reset the client, as a proxy with a dead backend does.
		setLingerZero(client)
		_ = client.Close()
		return
	}
	pc := &proxyConn{client: client, upstream: upstream, killed: make(chan struct{})}
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		pc.shut()
		return
	}
	p.conns[pc] = struct{}{}
	p.mu.Unlock()
	defer func() {
		pc.shut()
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
	}()
	if f == ProxyPass {
		p.st.served.Add(1)
	} else {
		p.st.faulted.Add(1)
	}

	// Client → upstream runs in its own goroutine; the reply direction runs here.
	upDone := make(chan struct{})
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(upDone)
		err := p.copy(upstream, client, f == Delay, pc.killed)
		switch {
		case pc.holding.Load():
			// The client gave up while its reply was held.
			if !isClosedByUs(pc) {
				p.st.closedByPeer.Add(1)
			}
			pc.shut()
		case err != nil:
			pc.shut()
		default:
			closeWrite(upstream) // pass the client's FIN on
		}
	}()

	switch f {
	case HoldResponse:
		pc.holding.Store(true)
		<-pc.killed
	case StallBody:
		_, err := io.CopyN(client, upstream, int64(p.cfg.StallAfter))
		switch {
		case err == nil:
			pc.holding.Store(true)
			<-pc.killed
		case errors.Is(err, io.EOF):
			closeWrite(client) // the whole reply was shorter than StallAfter
		default:
			pc.shut()
		}
	default:
		if err := p.copy(client, upstream, f == Delay, pc.killed); err != nil {
			pc.shut()
		} else {
			closeWrite(client)
		}
	}
	<-upDone
}

// isClosedByUs reports whether Close already shut pc.
func isClosedByUs(pc *proxyConn) bool {
	select {
	case <-pc.killed:
		return true
	default:
		return false
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
}

// copy copies src to dst until EOF (nil) or an error; with delay, each chunk
// waits its latency first. Order is kept because one goroutine does both.
func (p *Proxy) copy(dst, src net.Conn, delay bool, killed <-chan struct{}) error {
	if !delay {
		_, err := io.Copy(dst, src)
		return err
	}
	buf := make([]byte, 32<<10)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	for {
		n, err := src.Read(buf)
		if n > 0 {
			d := p.cfg.latency()
			if t == nil {
				t = time.NewTimer(d)
			} else {
				t.Reset(d)
			}
			select {
			case <-t.C:
			case <-killed:
				return net.ErrClosed
			}
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return werr
			}
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}
