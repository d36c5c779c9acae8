package main

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/tls"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"slices"
	"sync"
	"time"

	metricnoop "go.opentelemetry.io/otel/metric/noop"
	tracenoop "go.opentelemetry.io/otel/trace/noop"

	"github.com/lifeline-go/lifeline/dial"
)

// Phases a sample can reach, in order. connect and tls come from the
// Dialer; http and websocket are the request the probe makes itself.
const (
	phaseConnect   = "connect"
	phaseTLS       = "tls"
	phaseHTTP      = "http"
	phaseWebsocket = "websocket"
)

// Results of one phase of one sample.
const (
	resultOK      = "ok"
	resultStall   = "stall"   // a phase limit expired: the peer accepted and went silent
	resultRefused = "refused" // ECONNREFUSED
	resultReset   = "reset"   // ECONNRESET during connect, handshake or request
	resultError   = "error"   // anything else: certificate, protocol, a bad status
)

var results = []string{resultOK, resultStall, resultRefused, resultReset, resultError}

// config is what to probe and how hard.
type config struct {
	target     string        // host:port
	useTLS     bool          // TLS handshake after connect
	serverName string        // SNI and certificate name; "": the host of target
	httpPath   string        // "" or the path of a GET after the handshake
	wsPath     string        // "" or the path of a websocket upgrade
	samples    int           // samples per address per interval
	interval   time.Duration // one report per interval
	connect    time.Duration // ConnectTimeout
	handshake  time.Duration // TLSHandshakeTimeout
	request    time.Duration // request written → status line
	tlsConfig  *tls.Config   // trust; nil: the system's
	resolver   dial.Resolver // nil: net.DefaultResolver
}

// phases returns the phases a sample goes through.
func (c *config) phases() []string {
	p := []string{phaseConnect}
	if c.useTLS {
		p = append(p, phaseTLS)
	}
	switch {
	case c.httpPath != "":
		p = append(p, phaseHTTP)
	case c.wsPath != "":
		p = append(p, phaseWebsocket)
	}
	return p
}

// requestPhase is phaseHTTP or phaseWebsocket, or "" when the probe makes
// no request.
func (c *config) requestPhase() string {
	switch {
	case c.httpPath != "":
		return phaseHTTP
	case c.wsPath != "":
		return phaseWebsocket
	}
	return ""
}

// outcome is how one phase of one sample ended.
type outcome struct {
	phase   string
	result  string
	latency time.Duration // the phase's own time (to success or failure)
}

// sample is one establishment (and request) to one address.
type sample struct {
	peer     netip.AddrPort
	outcomes []outcome
}

// raced is one dial through lifeline's race, as a user would make it.
type raced struct {
	ok      bool
	latency time.Duration
	err     error
}

// prober makes samples. It is safe for concurrent use: each sample has its
// own connect clock in its context.
type prober struct {
	cfg    config
	host   string
	port   string
	health *dial.Health // what the probe's Dialer learned about each address
	direct *dial.Dialer // one attempt per address, no race (Probe and the request dials)
	race   *dial.Dialer // a user's Dialer: the race, its own Health
}

func newProber(cfg config) (*prober, error) {
	host, port, err := net.SplitHostPort(cfg.target)
	if err != nil {
		return nil, fmt.Errorf("target %q: %w", cfg.target, err)
	}
	tlsCfg := cfg.tlsConfig
	if tlsCfg == nil {
		tlsCfg = &tls.Config{}
	}
	tlsCfg = tlsCfg.Clone()
	if cfg.serverName != "" {
		tlsCfg.ServerName = cfg.serverName
	} else if tlsCfg.ServerName == "" {
		tlsCfg.ServerName = host
	}
	if cfg.httpPath != "" || cfg.wsPath != "" {
		tlsCfg.NextProtos = []string{"http/1.1"} // the probe speaks HTTP/1.1 on the conn
	}
	p := &prober{cfg: cfg, host: host, port: port, health: &dial.Health{}}
	noM, noT := metricnoop.NewMeterProvider(), tracenoop.NewTracerProvider()
	p.direct = &dial.Dialer{
		Resolver:              cfg.resolver,
		ConnectTimeout:        cfg.connect,
		TLSHandshakeTimeout:   cfg.handshake,
		TLSConfig:             tlsCfg,
		MaxAttemptsPerAddress: 1,
		AttemptDelay:          -1,
		FirstByteTimeout:      -1, // the request phase has its own deadline
		Timeout:               cfg.connect + cfg.handshake + time.Second,
		Health:                p.health,
		DialFunc:              timedConnect,
		MeterProvider:         noM,
		TracerProvider:        noT,
	}
	// The raced dial has the direct samples' phase limits and total bound:
	// with a Dialer's defaults (5s per handshake, 15s per dial) a name
	// whose addresses all stall would hold each interval for seconds past
	// its end. What it measures is the race itself: every address, more
	// than one attempt, a stalled one overtaken.
	p.race = &dial.Dialer{
		Resolver:            cfg.resolver,
		ConnectTimeout:      cfg.connect,
		TLSHandshakeTimeout: cfg.handshake,
		Timeout:             p.direct.Timeout,
		TLSConfig:           tlsCfg,
		Health:              &dial.Health{},
		MeterProvider:       noM,
		TracerProvider:      noT,
	}
	return p, nil
}

// connectClock receives the connect time of one sample from timedConnect.
type connectClock struct {
	mu sync.Mutex
	d  map[netip.AddrPort]time.Duration
}

type clockKey struct{}

// timedConnect is the probe Dialer's DialFunc: a plain TCP connect that
// reports its own duration, so that a TLS sample is split into its connect
// and handshake times (a ProbeResult has only the sum).
func timedConnect(ctx context.Context, network, addr string) (net.Conn, error) {
	start := time.Now()
	var d net.Dialer
	c, err := d.DialContext(ctx, network, addr)
	if clk, ok := ctx.Value(clockKey{}).(*connectClock); ok && err == nil {
		if ap, perr := netip.ParseAddrPort(addr); perr == nil {
			clk.mu.Lock()
			clk.d[netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())] = time.Since(start)
			clk.mu.Unlock()
		}
	}
	return c, err
}

// resolve returns the current answer for the target's host, sorted.
func (p *prober) resolve(ctx context.Context) ([]netip.AddrPort, error) {
	port, err := net.LookupPort("tcp", p.port)
	if err != nil {
		return nil, err
	}
	var ips []netip.Addr
	if ip, err := netip.ParseAddr(p.host); err == nil {
		ips = []netip.Addr{ip}
	} else {
		r := p.cfg.resolver
		if r == nil {
			r = net.DefaultResolver
		}
		ips, err = r.LookupNetIP(ctx, "ip", p.host)
		if err != nil {
			return nil, err
		}
	}
	out := make([]netip.AddrPort, 0, len(ips))
	for _, ip := range ips {
		out = append(out, netip.AddrPortFrom(ip.Unmap(), uint16(port)))
	}
	slices.SortFunc(out, func(a, b netip.AddrPort) int { return a.Compare(b) })
	return slices.Compact(out), nil
}

// round establishes a connection to every address of the target at once,
// through dial.Dialer.Probe, and returns one sample per address. With a
// request to make, each address is dialled directly instead (its IP, one
// attempt, no race), so that the request rides the conn whose connect and
// handshake were measured.
func (p *prober) round(ctx context.Context) ([]sample, error) {
	clk := &connectClock{d: make(map[netip.AddrPort]time.Duration)}
	ctx = context.WithValue(ctx, clockKey{}, clk)
	if p.cfg.requestPhase() == "" {
		res, err := p.direct.Probe(ctx, "tcp", p.cfg.target, p.cfg.useTLS)
		if err != nil {
			return nil, err
		}
		out := make([]sample, len(res))
		for i, r := range res {
			out[i] = p.establishment(clk, r.Peer, r.Latency, r.Err)
		}
		return out, nil
	}
	peers, err := p.resolve(ctx)
	if err != nil {
		return nil, err
	}
	out := make([]sample, len(peers))
	var wg sync.WaitGroup
	for i, peer := range peers {
		wg.Add(1)
		// One goroutine per address, writing only its own sample; each
		// ends within the phase limits.
		go func() {
			defer wg.Done()
			out[i] = p.requestSample(ctx, clk, peer)
		}()
	}
	wg.Wait()
	return out, nil
}

// establishment turns the outcome of one connect (and handshake) into the
// phases' outcomes.
func (p *prober) establishment(clk *connectClock, peer netip.AddrPort, total time.Duration, err error) sample {
	peer = netip.AddrPortFrom(peer.Addr().Unmap(), peer.Port())
	clk.mu.Lock()
	conn, connected := clk.d[peer]
	clk.mu.Unlock()
	s := sample{peer: peer}
	var de *dial.Error
	if err != nil && errors.As(err, &de) && de.Phase == dial.PhaseConnect || err != nil && !connected {
		return sample{peer: peer, outcomes: []outcome{{phaseConnect, classify(err), total}}}
	}
	s.outcomes = append(s.outcomes, outcome{phaseConnect, resultOK, conn})
	if p.cfg.useTLS {
		r := resultOK
		if err != nil {
			r = classify(err)
		}
		s.outcomes = append(s.outcomes, outcome{phaseTLS, r, max(total-conn, 0)})
	}
	return s
}

// requestSample dials peer directly and makes the request on the conn.
func (p *prober) requestSample(ctx context.Context, clk *connectClock, peer netip.AddrPort) sample {
	start := time.Now()
	var (
		conn net.Conn
		err  error
	)
	if p.cfg.useTLS {
		conn, err = p.direct.DialTLSContext(ctx, "tcp", peer.String())
	} else {
		conn, err = p.direct.DialContext(ctx, "tcp", peer.String())
	}
	s := p.establishment(clk, peer, time.Since(start), err)
	if err != nil {
		return s
	}
	defer conn.Close()
	phase := p.cfg.requestPhase()
	t0 := time.Now()
	r := p.request(conn)
	s.outcomes = append(s.outcomes, outcome{phase, r, time.Since(t0)})
	return s
}

// request writes a GET (or a websocket upgrade) and reads the status line
// and headers under the request limit. A 2xx or 3xx answer (101 for the
// upgrade) is ok; a silent peer is a stall.
func (p *prober) request(conn net.Conn) string {
	_ = conn.SetDeadline(time.Now().Add(p.cfg.request))
	host := p.cfg.serverName
	if host == "" {
		host = p.host
	}
	req, err := http.NewRequest(http.MethodGet, "http://"+net.JoinHostPort(host, p.port)+p.path(), nil)
	if err != nil {
		return resultError
	}
	req.Header.Set("User-Agent", "lifeline-probe")
	if p.cfg.wsPath != "" {
		key := make([]byte, 16)
		_, _ = rand.Read(key)
		req.Header.Set("Connection", "Upgrade")
		req.Header.Set("Upgrade", "websocket")
		req.Header.Set("Sec-WebSocket-Version", "13")
		req.Header.Set("Sec-WebSocket-Key", base64.StdEncoding.EncodeToString(key))
	} else {
		req.Close = true
	}
	if err := req.Write(conn); err != nil {
		return classify(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), req)
	if err != nil {
		return classify(err)
	}
	_ = resp.Body.Close()
	if p.cfg.wsPath != "" {
		if resp.StatusCode != http.StatusSwitchingProtocols {
			return resultError
		}
		return resultOK
	}
	if resp.StatusCode >= 400 {
		return resultError
	}
	return resultOK
}

func (p *prober) path() string {
	if p.cfg.wsPath != "" {
		return p.cfg.wsPath
	}
	return p.cfg.httpPath
}

// racedDial dials the target as a user of lifeline would: every address
// raced, a stalled one overtaken.
func (p *prober) racedDial(ctx context.Context) raced {
	start := time.Now()
	var (
		c   net.Conn
		err error
	)
	if p.cfg.useTLS {
		c, err = p.race.DialTLSContext(ctx, "tcp", p.cfg.target)
	} else {
		c, err = p.race.DialContext(ctx, "tcp", p.cfg.target)
	}
	if err != nil {
		return raced{latency: time.Since(start), err: err}
	}
	_ = c.Close()
	return raced{ok: true, latency: time.Since(start)}
}

// classify names the result of a failed phase.
func classify(err error) string {
	var de *dial.Error
	if errors.As(err, &de) {
		switch et := de.ErrorType(); {
		case et == "connect_refused":
			return resultRefused
		case et == "connect_reset" || et == "tls_reset":
			return resultReset
		}
	}
	var ne net.Error
	switch {
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return resultStall
	case isReset(err):
		return resultReset
	}
	return resultError
}
