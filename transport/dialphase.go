package transport

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"sync"
	"sync/atomic"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/otelx"
)

// Where a dial was when the caller's deadline ended the request.
//
// net/http detaches its dials from the request (getConn dials under
// context.WithoutCancel, so that the conn can serve a later request): when
// the request's deadline ends first, RoundTrip gets only the context's
// error, and the dial's own *dial.Error comes later, to nobody. So that
// the error still says where it broke (DESIGN rule 2), the Transport's
// hooks note how far each dial of a call got — a dial ctx keeps the
// request's values, and the call is one of them (callCtx) — and an
// attempt that the caller's deadline ended while a dial of its call was
// unfinished fails with a *dial.Error of that dial's phase and peer.

// callKey is the context key under which a call's context holds the call.
type callKey struct{}

// callCtx is a call's context: the caller's, holding the call for the
// Transport's dial hooks. It lives in the call (no allocation).
type callCtx struct {
	context.Context
	c *call
}

func (x *callCtx) Value(key any) any {
	if _, ok := key.(callKey); ok {
		return x.c
	}
	return x.Context.Value(key)
}

// dialing is how far one dial of a call got.
type dialing struct {
	network, addr string
	tls           bool // DialTLSContext: a connected peer is in the TLS phase

	mu    sync.Mutex
	phase dial.Phase     // the furthest phase any of its attempts reached
	peer  netip.AddrPort // the attempt that reached it first; zero in DNS
	done  bool           // the dial returned
	proxy *proxyConn     // the conn, when it is a plain conn to a proxy; set with done
}

// dialingKey is the context key under which a dial's context holds its
// dialing, for the raw connect hook (connectHook).
type dialingKey struct{}

// reached notes that an attempt of the dial to peer reached phase.
func (d *dialing) reached(phase dial.Phase, peer netip.AddrPort) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.peer.IsValid() || phase > d.phase {
		d.phase, d.peer = phase, peer
	}
}

// dialInFlight reports whether a dial made for one of the call's tries may
// be under way: unfinished, or a conn to a proxy, on which net/http then
// asks for the tunnel (CONNECT, bounded by the Dialer's first-byte limit
// and net/http's minute) and makes the TLS handshake (TLSHandshakeTimeout)
// before the try gets its conn.
func (c *call) dialInFlight() bool {
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	for _, d := range c.dials {
		d.mu.Lock()
		busy := !d.done || d.proxy != nil
		d.mu.Unlock()
		if busy {
			return true
		}
	}
	return false
}

// dialHook wraps one of the Dialer's dial methods for net/http: a dial made
// for a call's try is noted on the call while it runs.
//
// long, when not nil, dials instead for a call whose FirstByteTimeout is
// off (a long poll, CallOptions): the Dialer without its first-byte watch,
// which would otherwise cut the first answer on the new conn.
func dialHook(f, long func(ctx context.Context, network, addr string) (net.Conn, error), tls bool) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, _ := ctx.Value(callKey{}).(*call)
		if c == nil {
			return f(ctx, network, addr)
		}
		dialf := f
		if long != nil && c.lim.firstByte == 0 {
			dialf = long
		}
		d := &dialing{network: network, addr: addr, tls: tls, phase: dial.PhaseDNS}
		if host, _, err := net.SplitHostPort(addr); err == nil {
			if _, err := netip.ParseAddr(host); err == nil {
				d.phase = dial.PhaseConnect // an IP literal is not resolved
			}
		}
		c.dialMu.Lock()
		c.dials = append(c.dials, d)
		c.dialMu.Unlock()
		// The upstream's gate learns of the dial: its failures, or its
		// hanging, take the upstream down (upstream.go).
		ended := c.dialStart(d)
		if c.up != nil {
			c.up.dialing.Add(1)
		}
		conn, err := dialf(context.WithValue(ctx, dialingKey{}, d), network, addr)
		if c.up != nil {
			c.up.dialing.Add(-1)
		}
		var pc *proxyConn
		if err == nil && !tls && addr != targetAddr(c.req.URL) {
			// A conn to a proxy: what it reads is counted (proxyConn).
			pc = &proxyConn{Conn: conn}
			conn = pc
		}
		d.mu.Lock()
		d.done, d.proxy = true, pc
		d.mu.Unlock()
		if ended != nil {
			// Once done: a try whose own dial takes the upstream down
			// keeps its dial's error (cutWaiting).
			ended(err)
		}
		return conn, err
	}
}

// targetAddr is the host:port net/http dials for u without a proxy.
func targetAddr(u *url.URL) string {
	port := u.Port()
	if port == "" {
		port = "80"
		if u.Scheme == "https" {
			port = "443"
		}
	}
	return net.JoinHostPort(u.Hostname(), port)
}

// proxyConn is a conn to a proxy that counts the bytes it read: net/http
// reads a CONNECT answer through a reader limited to
// MaxResponseHeaderBytes and reports an answer whose headers never end as
// io.ErrUnexpectedEOF, like one the proxy cut short; the count tells them
// apart (connectHeaderLimit).
type proxyConn struct {
	net.Conn
	read atomic.Int64
}

func (c *proxyConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.read.Add(int64(n))
	return n, err
}

// NetConn returns the conn underneath.
func (c *proxyConn) NetConn() net.Conn { return c.Conn }

// connectHeaderLimit returns err, the failure of an attempt, as a
// *HeaderLimitError when it is net/http's io.ErrUnexpectedEOF for a
// CONNECT answer that filled MaxResponseHeaderBytes on a conn to the
// proxy of the call; otherwise err as it is.
func (c *call) connectHeaderLimit(err error) error {
	if !errors.Is(err, io.ErrUnexpectedEOF) {
		return err
	}
	limit := c.st.headerLimit()
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	for _, d := range c.dials {
		d.mu.Lock()
		pc := d.proxy
		d.mu.Unlock()
		if pc != nil && pc.read.Load() >= limit {
			return &HeaderLimitError{Method: methodOf(c.req), Host: c.req.URL.Host, Limit: limit, err: err,
				peer: otelx.PeerOther}
		}
	}
	return err
}

// connectHook wraps the Dialer's raw connect (DialFunc, nil: a net.Dialer):
// the dial of a call learns that an attempt is connecting to a peer, and
// over TLS that it connected and is in the handshake.
func connectHook(inner func(ctx context.Context, network, addr string) (net.Conn, error)) func(ctx context.Context, network, addr string) (net.Conn, error) {
	if inner == nil {
		var nd net.Dialer
		inner = nd.DialContext
	}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		d, _ := ctx.Value(dialingKey{}).(*dialing)
		if d == nil {
			return inner(ctx, network, addr)
		}
		peer, _ := netip.ParseAddrPort(addr)
		d.reached(dial.PhaseConnect, peer)
		conn, err := inner(ctx, network, addr)
		if err == nil && d.tls {
			d.reached(dial.PhaseTLS, peer)
		}
		return conn, err
	}
}

// dialPhase returns err, the failure of an attempt, as a *dial.Error of
// the call's furthest unfinished dial when the caller's deadline ended it
// (err is the context's error or its cause, itself): where it broke. Otherwise, or
// when no dial of the call is unfinished (the try had a conn), err as it
// is.
func (c *call) dialPhase(err error) error {
	// The context's own error, as net/http returns it (not a limit of
	// the Transport's that matches context.DeadlineExceeded, nor a
	// dial's own error).
	if c.ctx.Err() != context.DeadlineExceeded || (err != context.DeadlineExceeded && err != context.Cause(c.ctx)) {
		return err
	}
	c.dialMu.Lock()
	defer c.dialMu.Unlock()
	var far *dial.Error
	for _, d := range c.dials {
		d.mu.Lock()
		phase, peer, done := d.phase, d.peer, d.done
		d.mu.Unlock()
		if !done && (far == nil || phase > far.Phase) {
			far = &dial.Error{Phase: phase, Network: d.network, Addr: d.addr, Peer: peer, Err: err}
		}
	}
	if far == nil {
		return err
	}
	return far
}

// proxyConnectResponse is net/http's OnProxyConnectResponse: a proxy that
// does not open the tunnel fails the dial with a *ProxyError, which the
// retry loop classifies by its status (a 407 or another refusal is final,
// a 5xx is retried), as the websocket path does; net/http's own error is
// the status text alone.
func proxyConnectResponse(_ context.Context, proxy *url.URL, _ *http.Request, resp *http.Response) error {
	if resp.StatusCode == http.StatusOK {
		return nil
	}
	return &ProxyError{Proxy: proxy.Host, StatusCode: resp.StatusCode, status: resp.Status}
}
