package main

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

// section is one scenario's part of RESULTS.md.
type section struct {
	id, title string
	about     string // what was done, markdown
	capNote   string // the harness's per-call cap, labelled
	capAt     time.Duration
	attempts  string   // what attempts/call counts here
	extraCols []string // the scenario's own columns
	rows      []row
	notes     []string
	skipped   string    // non-empty: the scenario did not run, and why
	chart     string    // chart base name (without extension); "" when none
	timeline  *timeline // a second chart, over the run's time; nil: none
	targets   string    // the targets, printed beside the table
}

// row is one contender's line of a section's table.
type row struct {
	name  string
	st    stats
	extra []string
}

// scenario is one of the issues' (a)..(j).
type scenario struct {
	id, title string
	run       func(ctx context.Context, o options) (*section, error)
	cs        []contender // its table's rows; nil: contenders
}

// rows is the contenders the scenario's table has, in order.
func (sc scenario) rows() []contender {
	if sc.cs != nil {
		return sc.cs
	}
	return contenders
}

var scenarios = []scenario{
	{"a", "8% of connections hang after accept (plain HTTP)", runHangHTTP, nil},
	{"b1", "8% of connections hang in the TLS handshake (HTTPS GET)", runHangTLSGet, nil},
	{"b2", "8% of connections hang in the TLS handshake (HTTPS POST)", runHangTLSPost, nil},
	{"c", "one of three addresses drops SYNs (network namespace)", runDropSYN, nil},
	{"d", "one of three addresses accepts and stalls TLS", runStallTLSAddr, nil},
	{"e", "10-second total outage under steady load", runOutage, nil},
	{"f", "the happy path's cost per request", runHappyPath, nil},
	{"g", "a body that stalls half-way", runBodyStall, nil},
	{"h", "black-holed upstream: every packet dropped for 15s under steady load", runBlackhole, outageContenders},
	{"i1", "overloaded upstream: capacity 100 calls/s, 300 offered, fast 503s beyond", runOverloadFast, overloadContenders},
	{"i2", "overloaded upstream: capacity 100 calls/s, 300 offered, slow 503s beyond", runOverloadSlow, overloadContenders},
	{"j", "429 storm: Retry-After 2 for 10s", runStorm, outageContenders},
}

// hangEvery is incident 01's ~8%: every 12th new connection hangs.
const hangEvery = 12

// sizes is a scenario's workload: workers per contender, calls per worker,
// healthy calls per worker before the fault, and the per-call cap.
type sizes struct {
	workers, perWorker, warm int
	capAt                    time.Duration
}

// sizes returns full, or in short mode 2 workers with shortPerWorker calls
// each, 2 warm-up calls and a 2s cap.
func (o options) sizes(full sizes, shortPerWorker int) sizes {
	if o.short {
		return sizes{workers: 2, perWorker: shortPerWorker, warm: 2, capAt: 2 * time.Second}
	}
	return full
}

func capNote(capAt time.Duration) string {
	return fmt.Sprintf("Each call is capped at %v by the harness, so that a client that would wait forever ends; a capped call counts as failed, at the cap (column `capped`).", capAt)
}

// lbRun is scenarios (a), (b1), (b2): a real backend behind one load
// balancer (faultnet.NewLB) per worker of each contender, healthy during a
// warm-up, then hanging every 12th new connection with fault.
func lbRun(ctx context.Context, o options, id string, https bool, method string, fault faultnet.Fault) (*section, error) {
	sz := o.sizes(sizes{workers: 8, perWorker: 2 * hangEvery, warm: 24, capAt: 20 * time.Second}, hangEvery)
	var cl cleanups
	defer cl.run()
	var serverTLS, clientTLS *tls.Config
	scheme := "http"
	if https {
		var err error
		serverTLS, clientTLS, err = faultnet.NewSelfSigned("127.0.0.1")
		if err != nil {
			return nil, err
		}
		scheme = "https"
	}
	be, err := listenBackend(serverTLS, 0)
	if err != nil {
		return nil, err
	}
	cl.add(be.close)
	clients := make([]*http.Client, len(contenders))
	urls := make([][]string, len(contenders))
	lbs := make([][]*faultnet.Server, len(contenders))
	for c, ct := range contenders {
		client, done := ct.build(&env{tls: clientTLS})
		cl.add(done)
		clients[c] = client
		for range sz.workers {
			lb, err := faultnet.NewLB(faultnet.LBConfig{Backend: be.addr()})
			if err != nil {
				return nil, err
			}
			cl.add(func() { _ = lb.Close() })
			lbs[c] = append(lbs[c], lb)
			urls[c] = append(urls[c], scheme+"://"+lb.Addr()+"/")
		}
	}
	// Warm-up: the service had a healthy history (the adaptive hedge delay
	// learns from it; the others ignore it).
	streams(ctx, clients, urls, stream(method, sz.warm, true, 0), sz.capAt)
	for _, ls := range lbs {
		for _, lb := range ls {
			lb.SetFault(fault, faultnet.EveryNth(hangEvery))
		}
	}
	got := streams(ctx, clients, urls, stream(method, sz.perWorker, true, 0), sz.capAt)
	s := &section{
		capNote:   capNote(sz.capAt),
		capAt:     sz.capAt,
		attempts:  "connections opened per call (every call asks for a new connection, so each connection is one attempt, hedges and raced handshakes included)",
		extraCols: []string{"hung conns", "capped"},
	}
	for c, ct := range contenders {
		var hung int64
		for _, lb := range lbs[c] {
			hung += lb.Stats().Faulted
		}
		st := summarise(got[c])
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{fmt.Sprint(hung), fmt.Sprint(st.capped)}})
	}
	where := "after accept: the balancer takes the connection and never answers"
	if https {
		where = "in the TLS handshake: the balancer reads the ClientHello and never answers"
	}
	s.about = fmt.Sprintf("A real backend (net/http, HTTP/1.1%s) behind load balancers (`faultnet.NewLB`) that hang every 12th new connection (~8%%, incident 01) %s. Each contender has %d workers, each with its own balancer, sending %d %ss one after another, each on a new connection (`Request.Close`), after %d healthy warm-up calls per worker: %d calls per contender, all contenders at once.",
		map[bool]string{true: " over TLS", false: ""}[https], where, sz.workers, sz.perWorker, method, sz.warm, sz.workers*sz.perWorker)
	return s, nil
}

func runHangHTTP(ctx context.Context, o options) (*section, error) {
	s, err := lbRun(ctx, o, "a", false, http.MethodGet, faultnet.Silence)
	if s != nil {
		s.notes = append(s.notes, "Why: net/http has no limit on the wait for response headers, so the default client waits until the cap. `Client.Timeout` fails the call after 5s; go-retryablehttp retries it after 5s and a 1s wait; failsafe-go's 1s per-attempt timeout retries after 1s. lifeline's zero config treats a silent connection like a slow server and waits for its `FirstByteTimeout` (15s) before retrying on a new connection: **here the retrying peers beat lifeline's defaults**. Hedging (a second attempt after 250ms, or after the host's recent 95th percentile) is the setting that overtakes the hang.")
	}
	return s, err
}

func runHangTLSGet(ctx context.Context, o options) (*section, error) {
	s, err := lbRun(ctx, o, "b1", true, http.MethodGet, faultnet.StallTLS)
	if s != nil {
		s.notes = append(s.notes, tlsHangNote)
	}
	return s, err
}

const tlsHangNote = "Why: `http.DefaultTransport`'s `TLSHandshakeTimeout` (10s) ends the hang for net/http, which does not retry; the peers' timeouts and retries act as in (a). lifeline, with zero config, races a second handshake to the same address when the first has not completed after 250ms (`dial.Dialer.AttemptDelay`, `MaxAttemptsPerAddress`), so the hung connection is overtaken before any request is written."

func runHangTLSPost(ctx context.Context, o options) (*section, error) {
	s, err := lbRun(ctx, o, "b2", true, http.MethodPost, faultnet.StallTLS)
	if s != nil {
		s.notes = append(s.notes, tlsHangNote, "The hang is before the request is written, so a retry or a raced handshake cannot deliver a POST twice; lifeline retries POSTs only in that case (nothing written), go-retryablehttp and failsafe-go retry any method.")
	}
	return s, err
}

// groupRun is scenarios (c) and (d): three addresses behind one name
// (round-robin DNS, served in-process), of which bad is broken and lns are
// the healthy ones' listeners (on the host or in a namespace), served as
// backends. mk adds the scenario's part of each contender's env; urlFor
// makes the URL for the group's port.
func groupRun(ctx context.Context, sz sizes, mk func(*env), urlFor func(port int) string, lns []net.Listener, serverTLS *tls.Config, bad string) ([][]call, []*env, error) {
	var cl cleanups
	defer cl.run()
	for _, ln := range lns {
		be := startBackend(ln, serverTLS, 0)
		cl.add(be.close)
	}
	ips := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.MustParseAddr("127.0.0.2"), netip.MustParseAddr("127.0.0.3")}
	clients := make([]*http.Client, len(contenders))
	urls := make([][]string, len(contenders))
	envs := make([]*env, len(contenders))
	port := lns[0].Addr().(*net.TCPAddr).Port
	for c, ct := range contenders {
		dns := &roundRobinDNS{ips: ips}
		e := &env{resolver: dns.resolver(), badAddr: bad}
		mk(e)
		envs[c] = e
		client, done := ct.build(e)
		cl.add(done)
		clients[c] = client
		for range sz.workers {
			urls[c] = append(urls[c], urlFor(port))
		}
	}
	got := streams(ctx, clients, urls, stream(http.MethodGet, sz.perWorker, true, 0), sz.capAt)
	return got, envs, nil
}

func runDropSYN(ctx context.Context, o options) (*section, error) {
	s := &section{
		about:     "A name resolving to 127.0.0.1, 127.0.0.2 and 127.0.0.3 (round-robin DNS: the answer's order rotates on every query, so the dead address comes first for a third of the connections), one HTTP server on each, inside a network namespace the program creates, where nftables drops every SYN to 127.0.0.2 (a black-holed path, incident 04). Every contender's sockets are made inside the namespace through the same net.Dialer hook.",
		attempts:  "connects started per call (every call asks for a new connection; a dial that gives up on the dead address and tries the next counts two)",
		extraCols: []string{"connects to the dead address", "capped"},
	}
	ns, del, err := newNetns()
	var skip *skipError
	if errors.As(err, &skip) {
		s.skipped = skip.why
		return s, nil
	}
	if err != nil {
		return nil, err
	}
	defer del()
	lns, port, err := listenGroup(ns.Listen, "127.0.0.1", "127.0.0.2", "127.0.0.3")
	if err != nil {
		return nil, err
	}
	if err := dropSYNTo(ns, "127.0.0.2", port); err != nil {
		for _, ln := range lns {
			_ = ln.Close()
		}
		return nil, err
	}
	sz := o.sizes(sizes{workers: 8, perWorker: 9, capAt: 20 * time.Second}, 3)
	s.capNote, s.capAt = capNote(sz.capAt), sz.capAt
	got, envs, err := groupRun(ctx, sz, func(e *env) { e.ns = ns },
		func(port int) string { return fmt.Sprintf("http://%s:%d/", serviceName, port) }, lns, nil, "127.0.0.2")
	if err != nil {
		return nil, err
	}
	for c, ct := range contenders {
		st := summarise(got[c])
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{fmt.Sprint(envs[c].badHits.Load()), fmt.Sprint(st.capped)}})
	}
	s.about += fmt.Sprintf(" %d workers per contender, %d GETs each, one after another, each on a new connection; all contenders at once.", sz.workers, sz.perWorker)
	s.notes = append(s.notes, "Why: `net.Dialer` tries the addresses one after another and gives each a share of its `Timeout` (30s in `http.DefaultTransport`: 10s for the first of three), so net/http's default client gets through after 10s. net/http detaches the dial from the request: under `Client.Timeout` 5s the call fails at 5s while its dial goes on to the next address, and the connection it makes serves a later call (hence fewer than one connect per call). go-retryablehttp retries such a call after 1s. failsafe-go's 1s timeout cancels the attempt and retries with a fresh resolution, which usually puts another address first. lifeline starts the next address after 250ms (happy eyeballs, RFC 8305) with zero config.")
	return s, nil
}

func runStallTLSAddr(ctx context.Context, o options) (*section, error) {
	serverTLS, clientTLS, err := faultnet.NewSelfSigned(serviceName, "127.0.0.1")
	if err != nil {
		return nil, err
	}
	var healthy []net.Listener
	var staller *faultnet.Server
	for range 8 {
		a, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, err
		}
		port := a.Addr().(*net.TCPAddr).Port
		staller, err = faultnet.Listen(faultnet.Config{Addr: fmt.Sprintf("127.0.0.2:%d", port), Fault: faultnet.StallTLS, Select: faultnet.All()})
		if err != nil {
			_ = a.Close()
			continue
		}
		b, err := net.Listen("tcp", fmt.Sprintf("127.0.0.3:%d", port))
		if err != nil {
			_ = a.Close()
			_ = staller.Close()
			staller = nil
			continue
		}
		healthy = []net.Listener{a, b}
		break
	}
	if staller == nil {
		return nil, errors.New("no port free on 127.0.0.1, 127.0.0.2 and 127.0.0.3")
	}
	defer staller.Close()
	sz := o.sizes(sizes{workers: 8, perWorker: 9, capAt: 20 * time.Second}, 3)
	got, envs, err := groupRun(ctx, sz, func(e *env) { e.tls = clientTLS },
		func(port int) string { return fmt.Sprintf("https://%s:%d/", serviceName, port) }, healthy, serverTLS, "127.0.0.2")
	if err != nil {
		return nil, err
	}
	s := &section{
		about:     fmt.Sprintf("A name resolving to 127.0.0.1, 127.0.0.2 and 127.0.0.3 (round-robin DNS, rotating on every query), HTTPS servers on 127.0.0.1 and 127.0.0.3 and, on 127.0.0.2, a listener that accepts TCP, reads the ClientHello and never answers (`faultnet.StallTLS`), as a broken load balancer node does. %d workers per contender, %d GETs each, one after another, each on a new connection; all contenders at once.", sz.workers, sz.perWorker),
		capNote:   capNote(sz.capAt),
		capAt:     sz.capAt,
		attempts:  "connects started per call (every call asks for a new connection)",
		extraCols: []string{"connects to the stalling address", "capped"},
		notes:     []string{"Why: net/http connects to the first address that accepts TCP and then waits for the TLS handshake there, up to `TLSHandshakeTimeout` (10s), without trying another address or retrying; `Client.Timeout` ends it at 5s; the retrying peers try again (and may meet the stalling address again: the resolution is shared by concurrent calls). lifeline's race counts an address as won only when TLS has completed, so the stalling one is overtaken after 250ms, with zero config."},
	}
	for c, ct := range contenders {
		st := summarise(got[c])
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{fmt.Sprint(envs[c].badHits.Load()), fmt.Sprint(st.capped)}})
	}
	return s, nil
}

func runBodyStall(ctx context.Context, o options) (*section, error) {
	const size = 64 << 10
	sz := o.sizes(sizes{workers: 8, perWorker: hangEvery, warm: 24, capAt: 40 * time.Second}, hangEvery)
	var cl cleanups
	defer cl.run()
	be, err := listenBackend(nil, size)
	if err != nil {
		return nil, err
	}
	cl.add(be.close)
	clients := make([]*http.Client, len(contenders))
	urls := make([][]string, len(contenders))
	var proxies []*faultnet.Proxy
	for c, ct := range contenders {
		client, done := ct.build(&env{})
		cl.add(done)
		clients[c] = client
		for range sz.workers {
			p, err := faultnet.NewProxy(faultnet.ProxyConfig{Upstream: be.addr(), StallAfter: size / 2})
			if err != nil {
				return nil, err
			}
			cl.add(func() { _ = p.Close() })
			proxies = append(proxies, p)
			urls[c] = append(urls[c], "http://"+p.Addr()+"/")
		}
	}
	streams(ctx, clients, urls, stream(http.MethodGet, sz.warm, true, size), sz.capAt)
	for _, p := range proxies {
		p.SetFault(faultnet.StallBody, faultnet.EveryNth(hangEvery))
	}
	got := streams(ctx, clients, urls, stream(http.MethodGet, sz.perWorker, true, size), sz.capAt)
	s := &section{
		about:     fmt.Sprintf("A backend answering GETs with a 64 KiB body, behind proxies (`faultnet.Proxy`, `StallBody`) that pass every 12th connection's reply only up to its first 32 KiB and then hold it: the headers and the first half of the body arrive, the rest never does. %d workers per contender, each with its own proxy, %d GETs each (one stall per worker) after %d healthy ones, each on a new connection; all contenders at once. A call succeeds when it reads the whole body.", sz.workers, sz.perWorker, sz.warm),
		capNote:   capNote(sz.capAt),
		capAt:     sz.capAt,
		attempts:  "connections opened per call",
		extraCols: []string{"capped"},
		notes:     []string{"Why: nobody retries a body that broke after the headers (the response was already handed to the caller), so every contender fails the stalled calls; what differs is when it gives up. `Client.Timeout` (net/http Timeout 5s, go-retryablehttp) covers the body: 5s. failsafe-go's timeout ends when the headers arrive, so its body read has no limit and runs into the cap, like net/http's default. lifeline fails the read when no byte arrived for its `StallTimeout` (30s by default, time spent inside `Read` only, so a slow consumer is not cut off): **here a 5s overall timeout beats lifeline's defaults**; `StallTimeout` can be set lower."},
	}
	for c, ct := range contenders {
		st := summarise(got[c])
		s.rows = append(s.rows, row{name: ct.name, st: st, extra: []string{fmt.Sprint(st.capped)}})
	}
	return s, nil
}
