package faultnet

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// ProxyFault is what a [Proxy] does to the connections a [Rule] picks. The
// zero value is ProxyPass.
type ProxyFault int

// The faults a Proxy can inject. The first four act on the forwarded bytes;
// the last four act on the client's connection itself, before anything is
// forwarded (the upstream never sees such a connection). With TLS passed
// through (ProxyConfig.TLS nil) the bytes are the TLS records, handshake
// included: HoldResponse then stalls the handshake (the ServerHello is
// held) and StallAfter counts encrypted bytes; terminate TLS in the proxy
// to hold or stall the response itself.
const (
	ProxyPass     ProxyFault = iota // forward both directions unchanged
	HoldResponse                    // forward client→upstream; hold every upstream→client byte ("response never starts")
	StallBody                       // forward the first StallAfter reply bytes, then hold the rest ("body stalls mid-way")
	Delay                           // add a latency in [Latency, LatencyMax] to each chunk, both directions (slow network)
	ProxySilence                    // accept, never dial the upstream, never read nor write; hold until the client closes ("hung load balancer")
	ProxyStallTLS                   // read one TLS record (the ClientHello), then hold silently ("TLS handshake hangs")
	ProxyReset                      // accept, then close with RST at once: the client sees ECONNRESET
	ProxyClose                      // accept, then send FIN at once: the client reads io.EOF
)

var proxyFaultNames = [...]string{"ProxyPass", "HoldResponse", "StallBody", "Delay", "ProxySilence", "ProxyStallTLS", "ProxyReset", "ProxyClose"}

// String returns the constant's name, e.g. "HoldResponse".
func (f ProxyFault) String() string {
	if f >= 0 && int(f) < len(proxyFaultNames) {
		return proxyFaultNames[f]
	}
	return "ProxyFault(" + strconv.Itoa(int(f)) + ")"
}

func (f ProxyFault) valid() bool { return f >= ProxyPass && f <= ProxyClose }

// ParseProxyFault returns the ProxyFault named s, as String spells it
// ("HoldResponse"), case-insensitively; the "Proxy" prefix may be left out
// ("silence", "reset", "pass").
func ParseProxyFault(s string) (ProxyFault, error) {
	for i, name := range proxyFaultNames {
		if strings.EqualFold(s, name) || strings.EqualFold("Proxy"+s, name) {
			return ProxyFault(i), nil
		}
	}
	return 0, fmt.Errorf("faultnet: unknown proxy fault %q (want one of %s)", s, strings.Join(proxyFaultNames[:], ", "))
}

// upstreamDialTimeout bounds the proxy's connect to its upstream, and
// tlsAcceptTimeout the TLS handshake a terminating proxy does with its client.
const (
	upstreamDialTimeout = 5 * time.Second
	tlsAcceptTimeout    = 10 * time.Second
)

// Rule is one fault of a [Proxy]: Fault hits the connections Select picks.
// A Proxy holds an ordered list of rules; each new connection gets the
// first rule whose Select picks it, and is passed through unchanged when
// none does. The zero Rule passes every connection.
type Rule struct {
	// Name labels the rule in ConnLog and in tools that list rules. May be
	// empty.
	Name string
	// Fault is what picked connections get. Zero: ProxyPass.
	Fault ProxyFault
	// Select picks connections by their 1-based accept ordinal (counted
	// since the proxy started or the rules were last set). nil: All().
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

// Validate reports what is wrong with r (an unknown Fault, a negative
// StallAfter or Latency, LatencyMax below Latency), naming the rule; nil
// when SetRules would accept it.
func (r Rule) Validate() error { return r.validate(fmt.Sprintf("Rule %q", r.Name)) }

func (r *Rule) validate(field string) error {
	switch {
	case !r.Fault.valid():
		return fmt.Errorf("faultnet: %s.Fault %d is not a known ProxyFault", field, int(r.Fault))
	case r.StallAfter < 0:
		return fmt.Errorf("faultnet: %s.StallAfter %d is negative", field, r.StallAfter)
	case r.Latency < 0:
		return fmt.Errorf("faultnet: %s.Latency %v is negative", field, r.Latency)
	case r.LatencyMax != 0 && r.LatencyMax < r.Latency:
		return fmt.Errorf("faultnet: %s.LatencyMax %v is less than Latency %v", field, r.LatencyMax, r.Latency)
	}
	return nil
}

// latency returns one chunk's delay.
func (r *Rule) latency() time.Duration {
	if r.LatencyMax <= r.Latency {
		return r.Latency
	}
	// In uint64: the span+1 of [0, MaxInt64] overflows a Duration.
	return r.Latency + time.Duration(rand.Uint64N(uint64(r.LatencyMax-r.Latency)+1))
}

// ConnLog is what a [Proxy] did to one connection, given to
// ProxyConfig.Log when the connection has ended.
type ConnLog struct {
	N        int           // the connection's 1-based accept ordinal
	Client   string        // the client's "host:port"
	Rule     string        // the Name of the rule that picked it ("" when passed through unpicked)
	Fault    ProxyFault    // what it got
	Up       int64         // bytes forwarded client→upstream
	Down     int64         // bytes forwarded upstream→client
	Duration time.Duration // from accept to the end
	End      string        // how it ended, e.g. "held until the client closed", "reset by flap"
}

// String formats the log as one line, e.g.
// "#12 127.0.0.1:50312 ProxySilence (lb-hang): held until the client closed after 1.2s, up 0 B, down 0 B".
func (l ConnLog) String() string {
	rule := ""
	if l.Rule != "" {
		rule = " (" + l.Rule + ")"
	}
	return fmt.Sprintf("#%d %s %v%s: %s after %v, up %d B, down %d B",
		l.N, l.Client, l.Fault, rule, l.End, l.Duration.Round(time.Millisecond), l.Up, l.Down)
}

// ProxyConfig configures a [Proxy]. Upstream is required; the zero value of
// every other field is usable. NewProxy copies the config.
type ProxyConfig struct {
	// Addr is the address to listen on. "" means "127.0.0.1:0". Loopback
	// only (as for Config.Addr) unless AnyAddr is set.
	Addr string
	// AnyAddr allows an Addr that is not loopback, e.g. "0.0.0.0:8474".
	// Zero: loopback only.
	AnyAddr bool
	// Upstream is the "host:port" every connection is forwarded to; the
	// host must be a loopback IP literal or "localhost", which means
	// 127.0.0.1 (the name is never resolved, so no hosts file or DNS
	// answer can send the proxy elsewhere). The proxy's own address is
	// an error (every connection would be forwarded to itself). Required.
	Upstream string
	// Fault is applied to the connections Select picks, with StallAfter,
	// Latency and LatencyMax as its parameters: a shorthand for a first
	// Rule. Zero: ProxyPass (no such rule).
	Fault ProxyFault
	// Select picks the connections Fault hits. nil: All().
	Select Selector
	// StallAfter, Latency and LatencyMax parameterise Fault, as the Rule
	// fields of the same names.
	StallAfter int
	Latency    time.Duration
	LatencyMax time.Duration
	// Rules are further rules, after the one Fault makes. nil: none.
	Rules []Rule
	// TLS, when non-nil, makes the proxy terminate TLS: it completes the
	// handshake with the client using this config (within 10s) and
	// forwards the plaintext to Upstream. nil: bytes pass through as they
	// are (TLS passthrough: the client's handshake reaches the upstream).
	// Faults that act on the connection itself (ProxySilence,
	// ProxyStallTLS, ProxyReset, ProxyClose) happen before any handshake.
	TLS *tls.Config
	// FlapPeriod, when > 0, makes the proxy call DropAll every FlapPeriod,
	// like an interface restarted in a loop (incident 03). 0: never.
	// Negative, or below 1ms (the proxy would do nothing but reset), is an
	// error.
	FlapPeriod time.Duration
	// UpstreamLinger is how long the upstream side of a connection that
	// DropAll (or a flap) reset stays open, unread and silent: the server
	// does not learn that its client is gone, as a database keeps dead
	// sessions until its own timeout. Stats.Lingering counts them. 0:
	// closed with the client side. Negative is an error.
	UpstreamLinger time.Duration
	// BlackholeFor, when > 0, starts the proxy black-holed (see
	// [Proxy.SetBlackhole]) and restores the route after this long. 0:
	// not black-holed. Negative is an error.
	BlackholeFor time.Duration
	// Log, when non-nil, is called once for every connection when it has
	// ended, from the connection's goroutine (so it must not block for
	// long; Close waits for it). nil: no log.
	Log func(ConnLog)
}

func (c *ProxyConfig) rules() []Rule {
	var rs []Rule
	if c.Fault != ProxyPass {
		rs = append(rs, Rule{Name: c.Fault.String(), Fault: c.Fault, Select: c.Select,
			StallAfter: c.StallAfter, Latency: c.Latency, LatencyMax: c.LatencyMax})
	}
	return append(rs, c.Rules...)
}

// validate checks c and returns the upstream address to dial.
func (c *ProxyConfig) validate() (netip.AddrPort, error) {
	if c.Upstream == "" {
		return netip.AddrPort{}, errors.New("faultnet: ProxyConfig.Upstream is empty")
	}
	ap, err := upstreamAddr("ProxyConfig.Upstream", c.Upstream)
	if err != nil {
		return netip.AddrPort{}, err
	}
	return ap, c.validateRest()
}

// isSelf reports whether dialling up reaches the listener bound to bound.
func isSelf(bound, up netip.AddrPort) bool {
	b := bound.Addr().Unmap()
	return bound.Port() == up.Port() && (b == up.Addr() || b.IsUnspecified())
}

// upstreamAddr checks a "host:port" to connect to (a loopback IP literal
// or "localhost", a port) and returns the address to dial.
func upstreamAddr(field, addr string) (netip.AddrPort, error) {
	ap, err := parseListenAddr(field, addr, true)
	if err != nil {
		return netip.AddrPort{}, err
	}
	if ap.Port() == 0 {
		return netip.AddrPort{}, fmt.Errorf("faultnet: %s %q: port 0", field, addr)
	}
	return ap, nil
}

func (c *ProxyConfig) validateRest() error {
	shorthand := Rule{Fault: c.Fault, StallAfter: c.StallAfter, Latency: c.Latency, LatencyMax: c.LatencyMax}
	if err := shorthand.validate("ProxyConfig"); err != nil {
		return err
	}
	for i := range c.Rules {
		if err := c.Rules[i].validate(fmt.Sprintf("ProxyConfig.Rules[%d]", i)); err != nil {
			return err
		}
	}
	switch {
	case c.FlapPeriod < 0 || c.FlapPeriod > 0 && c.FlapPeriod < minFlap:
		return fmt.Errorf("faultnet: ProxyConfig.FlapPeriod %v: want 0 (no flap) or at least %v", c.FlapPeriod, minFlap)
	case c.UpstreamLinger < 0:
		return fmt.Errorf("faultnet: ProxyConfig.UpstreamLinger %v is negative", c.UpstreamLinger)
	case c.BlackholeFor < 0:
		return fmt.Errorf("faultnet: ProxyConfig.BlackholeFor %v is negative", c.BlackholeFor)
	}
	return nil
}

// errProxyClosed is returned by methods called after Close.
var errProxyClosed = errors.New("faultnet: proxy closed")

// Proxy is a TCP proxy to one upstream that applies the first matching
// [Rule] to each new connection, can reset every open connection at once
// ([Proxy.DropAll], periodically with FlapPeriod) and can black-hole its
// address ([Proxy.SetBlackhole]). Create it with [NewProxy] or
// [StartProxy]; the zero value is not usable. All methods are safe for
// concurrent use. The Proxy owns its listener, both sides of every proxied
// connection and its goroutines; Close releases them all and waits.
type Proxy struct {
	cfg    ProxyConfig
	up     string         // the checked upstream address, dialled as is
	addr   netip.AddrPort // bound address, kept across SetBlackhole
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup // accept loops, handlers, copiers, lingering upstreams, flap and blackhole timers
	st     counters
	flapCh chan time.Duration
	bhMu   sync.Mutex   // serialises SetBlackhole and guards bhGen
	bhGen  int          // counts SetBlackhole calls, so BlackholeFor's restore yields to a later call
	linger atomic.Int64 // UpstreamLinger, changed by SetUpstreamLinger

	// mu guards the fields below. Held only for bookkeeping.
	mu         sync.Mutex
	ln         net.Listener  // nil while black-holed and after Close
	acceptDone chan struct{} // closed when ln's accept loop has ended
	bh         *Blackhole    // non-nil while black-holed
	rules      []Rule
	n          int // accept ordinal since start or the last SetRules
	conns      map[*proxyConn]struct{}
	closed     bool
}

// NewProxy starts a Proxy for cfg. The caller must Close it.
func NewProxy(cfg ProxyConfig) (*Proxy, error) {
	up, err := cfg.validate()
	if err != nil {
		return nil, err
	}
	ap, err := parseListenAddr("ProxyConfig.Addr", cfg.Addr, !cfg.AnyAddr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("faultnet: proxy listen %s: %w", ap, err)
	}
	bound, err := netip.ParseAddrPort(ln.Addr().String())
	if err != nil {
		ln.Close()
		return nil, fmt.Errorf("faultnet: proxy listen %s: unexpected address %q", ap, ln.Addr())
	}
	if isSelf(bound, up) {
		ln.Close()
		return nil, fmt.Errorf("faultnet: ProxyConfig.Upstream %q is the proxy's own address %s: every connection would be forwarded to itself", cfg.Upstream, bound)
	}
	ctx, cancel := context.WithCancel(context.Background())
	p := &Proxy{
		cfg:    cfg,
		up:     up.String(),
		addr:   netip.AddrPortFrom(bound.Addr().Unmap(), bound.Port()),
		ctx:    ctx,
		cancel: cancel,
		flapCh: make(chan time.Duration),
		rules:  cfg.rules(),
		conns:  make(map[*proxyConn]struct{}),
	}
	p.linger.Store(int64(cfg.UpstreamLinger))
	p.mu.Lock()
	p.startAccepting(ln)
	p.wg.Add(1)
	go p.flapLoop(cfg.FlapPeriod)
	p.mu.Unlock()
	if cfg.BlackholeFor > 0 {
		if err := p.SetBlackhole(true); err != nil {
			p.Close()
			return nil, err
		}
		p.bhMu.Lock()
		gen := p.bhGen
		p.bhMu.Unlock()
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			t := time.NewTimer(cfg.BlackholeFor)
			defer t.Stop()
			select {
			case <-t.C:
				p.bhMu.Lock()
				defer p.bhMu.Unlock()
				if p.bhGen == gen { // no SetBlackhole since: restore
					_ = p.setBlackhole(false)
				}
			case <-p.ctx.Done():
			}
		}()
	}
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
func (p *Proxy) Addr() string { return p.addr.String() }

// Stats returns a snapshot of the counters. Served counts connections
// passed through unchanged; a connection whose upstream dial failed is
// Accepted but neither Faulted nor Served, as is one whose TLS handshake
// with a terminating proxy failed. Dropped counts connections
// reset by DropAll or a flap, Lingering the upstream sides of those still
// held open (UpstreamLinger).
func (p *Proxy) Stats() Stats { return p.st.snapshot() }

// SetFault replaces the rules with one: f on the connections sel picks,
// with the ProxyConfig's StallAfter, Latency and LatencyMax. Open
// connections keep what they got. The ordinal restarts at 1. A nil sel
// means All(). A ProxyFault that is not one of the constants is an error,
// and nothing changes.
func (p *Proxy) SetFault(f ProxyFault, sel Selector) error {
	return p.SetRules(Rule{Name: f.String(), Fault: f, Select: sel,
		StallAfter: p.cfg.StallAfter, Latency: p.cfg.Latency, LatencyMax: p.cfg.LatencyMax})
}

// SetRules replaces the rule list for connections accepted from now on
// (open connections keep what they got) and restarts the ordinal at 1.
// No rules: every connection passes. An invalid rule is an error naming
// it, and nothing changes.
func (p *Proxy) SetRules(rules ...Rule) error {
	for i := range rules {
		if err := rules[i].validate(fmt.Sprintf("Rule[%d] %q", i, rules[i].Name)); err != nil {
			return err
		}
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return errProxyClosed
	}
	p.rules, p.n = append([]Rule(nil), rules...), 0
	return nil
}

// Rules returns a copy of the current rule list.
func (p *Proxy) Rules() []Rule {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]Rule(nil), p.rules...)
}

// minFlap is the shortest flap period.
const minFlap = time.Millisecond

// SetFlap sets the flap period: every period the proxy calls DropAll.
// 0 stops flapping; negative or below 1ms is an error.
func (p *Proxy) SetFlap(period time.Duration) error {
	if period < 0 || period > 0 && period < minFlap {
		return fmt.Errorf("faultnet: flap period %v: want 0 (no flap) or at least %v", period, minFlap)
	}
	select {
	case p.flapCh <- period:
		return nil
	case <-p.ctx.Done():
		return errProxyClosed
	}
}

func (p *Proxy) flapLoop(period time.Duration) {
	defer p.wg.Done()
	t := time.NewTimer(time.Hour)
	t.Stop()
	defer t.Stop()
	for {
		if period > 0 {
			t.Reset(period)
		}
		select {
		case <-t.C:
			p.DropAll()
		case period = <-p.flapCh:
			t.Stop()
		case <-p.ctx.Done():
			return
		}
	}
}

// SetUpstreamLinger changes ProxyConfig.UpstreamLinger for connections
// dropped from now on. Negative is an error.
func (p *Proxy) SetUpstreamLinger(d time.Duration) error {
	if d < 0 {
		return fmt.Errorf("faultnet: upstream linger %v is negative", d)
	}
	p.linger.Store(int64(d))
	return nil
}

// DropAll resets (RST) the client side of every open connection now, as a
// flapping interface or a restarted middlebox does, and keeps listening.
// The upstream sides are closed too, or, with UpstreamLinger, left open
// and silent for that long. It returns how many connections it dropped.
func (p *Proxy) DropAll() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for pc := range p.conns {
		if pc.shut(shutDrop, p) {
			n++
		}
	}
	p.st.dropped.Add(int64(n))
	return n
}

// SetBlackhole black-holes the proxy's address (on) or restores it (off).
// Black-holed, new connects to Addr hang (the listener is replaced by a
// [Blackhole] on the same port, whose full accept queue makes the kernel
// drop SYNs) and open connections go silent in both directions: what they
// send is discarded and nothing reaches them, though, unlike a real lost
// route, the kernel still acknowledges their bytes. They stay silent after
// the restore, as connections whose retransmissions gave up. Restored, the
// proxy listens on the same port again. Setting the current state does
// nothing. A call cancels the pending restore of ProxyConfig.BlackholeFor.
func (p *Proxy) SetBlackhole(on bool) error {
	p.bhMu.Lock()
	defer p.bhMu.Unlock()
	p.bhGen++
	return p.setBlackhole(on)
}

// setBlackhole is SetBlackhole; p.bhMu must be held.
func (p *Proxy) setBlackhole(on bool) error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return errProxyClosed
	}
	if on == (p.ln == nil) {
		p.mu.Unlock()
		return nil
	}
	if on {
		ln, done := p.ln, p.acceptDone
		p.ln = nil
		_ = ln.Close()
		p.mu.Unlock()
		<-done
		bh, err := newBlackhole(p.addr.String(), true, !p.cfg.AnyAddr)
		if err != nil {
			// Not black-holed after all: listen again, so that the state
			// is the one Blackholed reports.
			err = fmt.Errorf("faultnet: proxy %s: black-holing: %w", p.addr, err)
			ln, lerr := listenRetry(p.ctx, "tcp", p.addr.String())
			if lerr != nil {
				return errors.Join(err, fmt.Errorf("faultnet: proxy %s: listening again: %w", p.addr, lerr))
			}
			p.mu.Lock()
			defer p.mu.Unlock()
			if p.closed {
				ln.Close()
				return errProxyClosed
			}
			p.startAccepting(ln)
			return err
		}
		p.mu.Lock()
		defer p.mu.Unlock()
		if p.closed {
			_ = bh.Close()
			return errProxyClosed
		}
		p.bh = bh
		for pc := range p.conns {
			pc.frozen.Store(true)
		}
		return nil
	}
	bh := p.bh
	p.bh = nil
	p.mu.Unlock()
	if bh != nil {
		_ = bh.Close()
	}
	ln, err := listenRetry(p.ctx, "tcp", p.addr.String())
	if err != nil {
		return fmt.Errorf("faultnet: proxy %s: restoring: %w", p.addr, err)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		ln.Close()
		return errProxyClosed
	}
	p.startAccepting(ln)
	return nil
}

// Blackholed reports whether the address is black-holed now.
func (p *Proxy) Blackholed() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return !p.closed && p.ln == nil
}

// Close stops listening, closes both sides of every proxied connection
// (lingering upstreams included) and waits for every goroutine the Proxy
// started, including running Log calls. It is idempotent.
func (p *Proxy) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		p.wg.Wait()
		return nil
	}
	p.closed = true
	p.cancel()
	var err error
	if p.ln != nil {
		err = p.ln.Close()
		p.ln = nil
	}
	if p.bh != nil {
		_ = p.bh.Close()
		p.bh = nil
	}
	for pc := range p.conns {
		pc.shut(shutClose, p)
	}
	p.mu.Unlock()
	p.wg.Wait()
	if err != nil && !errors.Is(err, net.ErrClosed) {
		return fmt.Errorf("faultnet: proxy close %s: %w", p.Addr(), err)
	}
	return nil
}

// startAccepting installs ln and starts its accept loop. p.mu must be held.
func (p *Proxy) startAccepting(ln net.Listener) {
	done := make(chan struct{})
	p.ln, p.acceptDone = ln, done
	p.wg.Add(1)
	go p.acceptLoop(ln, done)
}

func (p *Proxy) acceptLoop(ln net.Listener, done chan struct{}) {
	defer p.wg.Done()
	defer close(done)
	acceptEach(p.ctx, ln, func(c net.Conn) { p.accepted(ln, c) })
}

// accepted registers and serves c, accepted on ln, unless ln is no longer
// the proxy's (then c is reset).
func (p *Proxy) accepted(ln net.Listener, c net.Conn) {
	pc := &proxyConn{raw: c, client: c, killed: make(chan struct{}), start: time.Now()}
	p.mu.Lock()
	if p.closed || p.ln != ln {
		p.mu.Unlock()
		setLingerZero(c)
		_ = c.Close()
		return
	}
	p.n++
	pc.n = p.n
	for _, r := range p.rules {
		if r.Select == nil || r.Select(pc.n) {
			pc.rule = r
			break
		}
	}
	p.conns[pc] = struct{}{}
	p.wg.Add(1) // under mu: Close sets closed under mu before it waits
	p.mu.Unlock()
	p.st.open()
	go p.handle(pc)
}

// Ways a proxyConn is shut.
const (
	shutClose = iota // close both sides
	shutReset        // close both sides, the client's with RST
	shutDrop         // RST the client; the upstream lingers (UpstreamLinger) or is closed
)

// proxyConn is one proxied connection: the client side and the upstream.
type proxyConn struct {
	raw     net.Conn // the accepted conn
	client  net.Conn // raw, or the *tls.Conn over it when terminating
	n       int
	rule    Rule
	start   time.Time
	up      atomic.Int64 // bytes forwarded client→upstream
	down    atomic.Int64 // bytes forwarded upstream→client
	holding atomic.Bool  // the reply direction is being held
	frozen  atomic.Bool  // black-holed: nothing is forwarded any more
	killed  chan struct{}

	mu       sync.Mutex // guards the fields below
	upstream net.Conn
	how      int  // how it was shut, valid once shutDone
	shutDone bool // shut has run
}

// setUpstream installs the upstream conn, or reports false (and closes
// it) when pc was already shut.
func (pc *proxyConn) setUpstream(c net.Conn) bool {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if pc.shutDone {
		_ = c.Close()
		return false
	}
	pc.upstream = c
	return true
}

// shut closes pc the way how says; only the first call acts, and it
// reports whether it was the first. With shutDrop and an upstream linger,
// the upstream conn is handed to a goroutine that closes it later; the
// caller must then hold p.mu (so the goroutine is counted before Close
// waits).
func (pc *proxyConn) shut(how int, p *Proxy) bool {
	pc.mu.Lock()
	if pc.shutDone {
		pc.mu.Unlock()
		return false
	}
	pc.shutDone, pc.how = true, how
	up := pc.upstream
	pc.mu.Unlock()
	close(pc.killed)
	if how != shutClose {
		setLingerZero(pc.raw)
	}
	_ = pc.raw.Close() // also ends a *tls.Conn over it
	if up == nil {
		return true
	}
	linger := time.Duration(p.linger.Load())
	if how == shutDrop && linger > 0 && !p.closed {
		// Stop the copiers without a FIN or RST to the upstream: deadlines
		// in the past wake their blocked Read and Write.
		past := time.Unix(1, 0)
		_ = up.SetDeadline(past)
		p.st.lingering.Add(1)
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			defer p.st.lingering.Add(-1)
			t := time.NewTimer(linger)
			defer t.Stop()
			select {
			case <-t.C:
			case <-p.ctx.Done():
			}
			_ = up.Close()
		}()
		return true
	}
	_ = up.Close()
	return true
}

// shutHow returns how pc was shut, or -1 while it is open.
func (pc *proxyConn) shutHow() int {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if !pc.shutDone {
		return -1
	}
	return pc.how
}

func (p *Proxy) handle(pc *proxyConn) {
	defer p.wg.Done()
	var end string
	defer func() {
		pc.shut(shutClose, p)
		p.mu.Lock()
		delete(p.conns, pc)
		p.mu.Unlock()
		p.st.active.Add(-1)
		switch pc.shutHow() {
		case shutDrop:
			end = "reset by DropAll (flap)"
		case shutClose:
			if end == "" {
				end = "closed by the proxy"
			}
		}
		if pc.frozen.Load() && end != "reset by DropAll (flap)" {
			end = "black-holed, then " + end
		}
		if p.cfg.Log != nil {
			p.cfg.Log(ConnLog{N: pc.n, Client: pc.raw.RemoteAddr().String(), Rule: pc.rule.Name, Fault: pc.rule.Fault,
				Up: pc.up.Load(), Down: pc.down.Load(), Duration: time.Since(pc.start), End: end})
		}
	}()
	switch pc.rule.Fault {
	case ProxySilence:
		p.st.faulted.Add(1)
		end = p.holdClient(pc)
	case ProxyStallTLS:
		p.st.faulted.Add(1)
		var h [5]byte
		_, err := io.ReadFull(pc.raw, h[:])
		if err == nil {
			_, err = io.CopyN(io.Discard, pc.raw, int64(h[3])<<8|int64(h[4]))
		}
		if err != nil {
			if pc.shutHow() < 0 {
				p.st.closedByPeer.Add(1)
				end = "client closed before its ClientHello was complete"
			}
			return
		}
		end = p.holdClient(pc)
	case ProxyReset:
		p.st.faulted.Add(1)
		pc.shut(shutReset, p)
		end = "reset at once"
	case ProxyClose:
		p.st.faulted.Add(1)
		if closeWrite(pc.raw) == nil {
			_, _ = io.Copy(io.Discard, pc.raw)
		}
		end = "closed (FIN) at once"
	default:
		end = p.forward(pc)
	}
}

// holdClient holds pc's client silently until it closes or pc is shut.
func (p *Proxy) holdClient(pc *proxyConn) string {
	if hold(pc.raw, func() {}) && pc.shutHow() < 0 {
		p.st.closedByPeer.Add(1)
		return "held until the client closed"
	}
	return "held until the proxy closed it"
}

// forward proxies pc to the upstream, applying a forwarding fault.
func (p *Proxy) forward(pc *proxyConn) string {
	if p.cfg.TLS != nil {
		tc := tls.Server(pc.raw, p.cfg.TLS)
		ctx, cancel := context.WithTimeout(p.ctx, tlsAcceptTimeout)
		err := tc.HandshakeContext(ctx)
		cancel()
		if err != nil {
			return "TLS handshake with the client failed: " + err.Error()
		}
		pc.client = tc
	}
	ctx, cancel := context.WithTimeout(p.ctx, upstreamDialTimeout)
	var watch sync.WaitGroup
	watch.Go(func() { // DropAll shut pc: stop connecting for it
		select {
		case <-pc.killed:
			cancel()
		case <-ctx.Done():
		}
	})
	var d net.Dialer
	upstream, err := d.DialContext(ctx, "tcp", p.up)
	cancel()
	watch.Wait()
	if err != nil {
		if pc.shutHow() >= 0 {
			return "" // shut while connecting: its end is how it was shut
		}
		// No upstream: reset the client, as a proxy with a dead backend does.
		pc.shut(shutReset, p)
		return "upstream unreachable, reset: " + err.Error()
	}
	if !pc.setUpstream(upstream) {
		return ""
	}
	r := &pc.rule
	if r.Fault == ProxyPass {
		p.st.served.Add(1)
	} else {
		p.st.faulted.Add(1)
	}
	delay := r.Fault == Delay

	// Client → upstream runs in its own goroutine; the reply direction runs here.
	upDone := make(chan struct{})
	var heldEnd atomic.Value
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		defer close(upDone)
		err := p.pump(upstream, pc.client, pc, delay, -1, &pc.up)
		switch {
		case pc.holding.Load() || pc.frozen.Load():
			// The client gave up while its reply was held.
			if pc.shutHow() < 0 && pc.holding.Load() {
				p.st.closedByPeer.Add(1)
				heldEnd.Store("reply held until the client closed")
			}
			pc.shut(shutClose, p)
		case err != nil:
			pc.shut(shutClose, p)
		default:
			_ = closeWrite(upstream) // pass the client's FIN on
		}
	}()

	end := "finished"
	var perr error
	switch r.Fault {
	case HoldResponse:
		pc.holding.Store(true)
		<-pc.killed
	case StallBody:
		perr = p.pump(pc.client, upstream, pc, false, int64(r.StallAfter), &pc.down)
		if errors.Is(perr, errLimit) {
			pc.holding.Store(true)
			<-pc.killed
			perr = nil
		}
	default:
		perr = p.pump(pc.client, upstream, pc, delay, -1, &pc.down)
	}
	if pc.frozen.Load() {
		<-pc.killed
	}
	switch {
	case perr != nil:
		if pc.shutHow() < 0 {
			end = "error: " + perr.Error()
		}
		pc.shut(shutClose, p)
	case pc.shutHow() < 0:
		_ = closeWrite(pc.client)
	}
	<-upDone
	if s, ok := heldEnd.Load().(string); ok {
		return s
	}
	if pc.holding.Load() {
		return "reply held until the proxy closed it"
	}
	return end
}

// errLimit ends a pump that forwarded its byte limit.
var errLimit = errors.New("faultnet: byte limit reached")

// pump copies src to dst until EOF (nil), an error, or limit bytes (when
// limit >= 0: errLimit), counting into n. With delay, each chunk waits the
// rule's latency first; order is kept because one goroutine does both.
// Once pc is frozen (black-holed), what it reads is discarded.
func (p *Proxy) pump(dst, src net.Conn, pc *proxyConn, delay bool, limit int64, n *atomic.Int64) error {
	buf := make([]byte, 32<<10)
	var t *time.Timer
	defer func() {
		if t != nil {
			t.Stop()
		}
	}()
	var total int64
	for {
		want := len(buf)
		if limit >= 0 {
			if total >= limit {
				return errLimit
			}
			want = int(min(int64(want), limit-total))
		}
		k, err := src.Read(buf[:want])
		if k > 0 && !pc.frozen.Load() {
			if delay {
				d := pc.rule.latency()
				if t == nil {
					t = time.NewTimer(d)
				} else {
					t.Reset(d)
				}
				select {
				case <-t.C:
				case <-pc.killed:
					return net.ErrClosed
				}
			}
			if _, werr := dst.Write(buf[:k]); werr != nil {
				return werr
			}
			total += int64(k)
			n.Add(int64(k))
		}
		if err != nil {
			if errors.Is(err, io.EOF) {
				return nil
			}
			return err
		}
	}
}

func closeWrite(c net.Conn) error {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return errors.ErrUnsupported
}

// listenRetry listens on addr, retrying for up to 2s while the port is
// still in use (another socket bound to it for a moment), until ctx ends.
func listenRetry(ctx context.Context, network, addr string) (net.Listener, error) {
	deadline := time.Now().Add(upRetry)
	var t *time.Timer
	for {
		ln, err := net.Listen(network, addr)
		if err == nil || !errors.Is(err, syscall.EADDRINUSE) || time.Now().After(deadline) {
			return ln, err
		}
		if t == nil {
			t = time.NewTimer(20 * time.Millisecond)
			defer t.Stop()
		} else {
			t.Reset(20 * time.Millisecond)
		}
		select {
		case <-t.C:
		case <-ctx.Done():
			return nil, errProxyClosed
		}
	}
}
