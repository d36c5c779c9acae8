// Command faultproxy puts faultnet's faults and incident presets between
// any client and its server, whatever language the client is written in:
// a TCP proxy on a loopback port that forwards to an upstream and hangs,
// resets, stalls, delays, flaps or black-holes connections as a preset or
// flags say, changeable at run time over a small local JSON API, printing
// one line per connection saying what it did.
//
//	go run ./examples/faultproxy -upstream 127.0.0.1:8080 -preset incident01
//	faultproxy: proxy 127.0.0.1:40123 -> upstream 127.0.0.1:8080 (preset incident01)
//	faultproxy: api http://127.0.0.1:40124
//	faultproxy: conn #12 127.0.0.1:51234 ProxySilence (lb-hang-after-accept): held until the client closed after 2s, up 0 B, down 0 B
//
// Flags:
//
//	-listen addr        proxy address (default 127.0.0.1:0: a free loopback port). Another
//	                    address is used only when named explicitly, with a warning.
//	-upstream host:port where connections go (required): a loopback IP literal, or localhost,
//	                    which means 127.0.0.1 (never resolved; use [::1]:port for IPv6)
//	-preset name        incident01 … incident05 (see -list)
//	-fault name         a fault for the connections -every/-fraction/-first pick (all when none):
//	                    pass, silence, stalltls, reset, close, holdresponse, stallbody, delay
//	-every n, -fraction f, -first n, -stall-after bytes, -latency d, -latency-max d
//	-flap d             reset every open connection every d
//	-linger d           keep the upstream side of a reset connection open for d
//	-blackhole-for d    start black-holed (connects hang) for d
//	-tls mode           passthrough (default: bytes as they are) or terminate (the proxy does
//	                    TLS with a self-signed pair it writes to -tls-dir and prints the CA's path;
//	                    without -tls-dir, a temporary directory removed at exit)
//	-api addr           API address (default 127.0.0.1:0; loopback only)
//	-quiet              no line per connection
//	-list               print the presets and exit
//
// The API (JSON in and out; errors are {"error": "..."} with a 4xx status):
//
//	GET    /presets             the presets
//	POST   /preset              {"name":"incident03"}: replace rules, flap, linger and black-hole with the preset's
//	GET    /rules               the rules, in order (the first that picks a connection applies)
//	POST   /rules               add one: {"name":"hang","fault":"silence","every":12}
//	                            (also "fraction", "first", "stall_after", "latency_ms", "latency_max_ms")
//	DELETE /rules/{name}        remove one; DELETE /rules removes all
//	GET    /stats               counters (accepted, faulted, served, closed_by_peer, active, ...)
//	PUT    /flap                {"period_ms":1000}; 0 stops
//	PUT    /linger              {"ms":20000}
//	PUT    /blackhole           {"on":true,"for_ms":4000} (for_ms optional: restore after it)
//	POST   /drop                reset every open connection now
//
// Changing the rules restarts the connection ordinal that -every counts.
// POST and PUT need Content-Type: application/json, the Host header must
// be a loopback address or localhost, and a browser's cross-origin request
// (Sec-Fetch-Site or Origin naming another site) is refused, so a web page
// cannot drive the API.
package main

import (
	"context"
	"crypto/ecdsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"mime"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lifeline-go/lifeline/faultnet"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	a, err := start(os.Args[1:], os.Stdout)
	if errors.Is(err, flag.ErrHelp) || errors.Is(err, errListed) {
		return
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "faultproxy:", err)
		os.Exit(2)
	}
	<-ctx.Done()
	a.Close()
}

var errListed = errors.New("listed")

// app is a running proxy and its API.
type app struct {
	proxy   *faultnet.Proxy
	api     *http.Server
	apiLn   net.Listener
	apiDone chan struct{}
	out     *lockedWriter
	tlsTmp  string // the directory -tls terminate made for its pair ("" with -tls-dir); Close removes it

	connMu sync.Mutex            // guards unused
	unused map[net.Conn]struct{} // API connections that have not sent a request yet (StateNew)

	mu       sync.Mutex // guards the fields below
	rules    []ruleSpec
	flap     time.Duration
	linger   time.Duration
	bhTimer  *time.Timer
	bhGen    int            // generation of bhTimer, so a stale timer does nothing
	bhWG     sync.WaitGroup // a pending or running bhTimer func; Close waits for it
	closed   bool
	closedCh chan struct{}
}

// lockedWriter serialises lines from the connections' goroutines. The
// startup lines are written at once; after startAsync, lines are queued
// to a writer goroutine and never block the proxy or the API: when the
// reader of the output falls behind (a harness that stopped reading its
// pipe), lines that do not fit the queue are counted and dropped, and the
// count is printed when the output moves again.
type lockedWriter struct {
	w       io.Writer
	dropped atomic.Int64

	mu     sync.Mutex  // guards the fields below
	lines  chan string // nil before startAsync and after stop
	done   chan struct{}
	closed bool
}

// outQueue is how many lines wait for a slow reader of the output.
const outQueue = 1024

func (l *lockedWriter) printf(format string, args ...any) {
	line := fmt.Sprintf(format+"\n", args...)
	l.mu.Lock()
	defer l.mu.Unlock()
	switch {
	case l.closed:
	case l.lines == nil:
		_, _ = io.WriteString(l.w, line)
	default:
		select {
		case l.lines <- line:
		default:
			l.dropped.Add(1)
		}
	}
}

// startAsync queues further lines to a writer goroutine; stop ends it.
func (l *lockedWriter) startAsync() {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.lines, l.done = make(chan string, outQueue), make(chan struct{})
	go func(lines <-chan string, done chan<- struct{}) {
		defer close(done)
		for line := range lines {
			if n := l.dropped.Swap(0); n > 0 {
				_, _ = fmt.Fprintf(l.w, "faultproxy: %d lines not printed: the output was not read\n", n)
			}
			_, _ = io.WriteString(l.w, line)
		}
	}(l.lines, l.done)
}

// stop drops further lines and lets the writer goroutine print what is
// queued, waiting for it at most 2s (an output nobody reads may never
// take it; the process is exiting then).
func (l *lockedWriter) stop() {
	l.mu.Lock()
	l.closed = true
	lines, done := l.lines, l.done
	l.lines = nil
	l.mu.Unlock()
	if lines == nil {
		return
	}
	close(lines)
	t := time.NewTimer(2 * time.Second)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
	}
}

// ruleSpec is a rule as the flags and the API spell it.
type ruleSpec struct {
	Name         string  `json:"name"`
	Fault        string  `json:"fault"`
	Every        int     `json:"every,omitempty"`
	Fraction     float64 `json:"fraction,omitempty"`
	First        int     `json:"first,omitempty"`
	StallAfter   int     `json:"stall_after,omitempty"`
	LatencyMS    float64 `json:"latency_ms,omitempty"`
	LatencyMaxMS float64 `json:"latency_max_ms,omitempty"`
}

// rule converts the spec, checking every field.
func (s *ruleSpec) rule() (faultnet.Rule, error) {
	if s.Name == "" {
		return faultnet.Rule{}, errors.New("rule: name is required")
	}
	if len(s.Name) > 64 || strings.ContainsFunc(s.Name, func(r rune) bool { return r < 0x20 || r == '/' || r == 0x7f }) {
		return faultnet.Rule{}, errors.New("rule: name must be 1-64 characters, without '/' or control characters")
	}
	f, err := faultnet.ParseProxyFault(s.Fault)
	if err != nil {
		return faultnet.Rule{}, fmt.Errorf("rule %q: %w", s.Name, err)
	}
	s.Fault = f.String()
	n := 0
	var sel faultnet.Selector
	if s.Every != 0 {
		n++
		if s.Every < 1 {
			return faultnet.Rule{}, fmt.Errorf("rule %q: every %d must be >= 1", s.Name, s.Every)
		}
		sel = faultnet.EveryNth(s.Every)
	}
	if s.Fraction != 0 {
		n++
		if math.IsNaN(s.Fraction) || s.Fraction < 0 || s.Fraction > 1 {
			return faultnet.Rule{}, fmt.Errorf("rule %q: fraction %v must be in (0, 1]", s.Name, s.Fraction)
		}
		sel = faultnet.Fraction(s.Fraction)
	}
	if s.First != 0 {
		n++
		if s.First < 1 {
			return faultnet.Rule{}, fmt.Errorf("rule %q: first %d must be >= 1", s.Name, s.First)
		}
		sel = faultnet.FirstN(s.First)
	}
	if n > 1 {
		return faultnet.Rule{}, fmt.Errorf("rule %q: give at most one of every, fraction, first", s.Name)
	}
	lat, err := millis("latency_ms", s.LatencyMS)
	if err != nil {
		return faultnet.Rule{}, fmt.Errorf("rule %q: %w", s.Name, err)
	}
	latMax, err := millis("latency_max_ms", s.LatencyMaxMS)
	if err != nil {
		return faultnet.Rule{}, fmt.Errorf("rule %q: %w", s.Name, err)
	}
	r := faultnet.Rule{Name: s.Name, Fault: f, Select: sel, StallAfter: s.StallAfter, Latency: lat, LatencyMax: latMax}
	if err := r.Validate(); err != nil {
		return faultnet.Rule{}, err
	}
	return r, nil
}

// maxMillis bounds durations given in milliseconds (a day).
const maxMillis = 24 * 3600 * 1000

func millis(field string, ms float64) (time.Duration, error) {
	if math.IsNaN(ms) || ms < 0 || ms > maxMillis {
		return 0, fmt.Errorf("%s %v must be in [0, %d]", field, ms, maxMillis)
	}
	return time.Duration(ms * float64(time.Millisecond)), nil
}

// start parses args, starts the proxy and its API and prints where they
// are. The caller must Close the app.
func start(args []string, stdout io.Writer) (*app, error) {
	fs := flag.NewFlagSet("faultproxy", flag.ContinueOnError)
	fs.SetOutput(stdout)
	var (
		listen    = fs.String("listen", "127.0.0.1:0", "proxy address (loopback unless named explicitly)")
		upstream  = fs.String("upstream", "", "upstream host:port (loopback; required)")
		preset    = fs.String("preset", "", "incident01 … incident05")
		fault     = fs.String("fault", "", "fault for the picked connections")
		every     = fs.Int("every", 0, "pick every n-th connection")
		fraction  = fs.Float64("fraction", 0, "pick this fraction of connections, spread evenly")
		first     = fs.Int("first", 0, "pick the first n connections")
		stall     = fs.Int("stall-after", 0, "stallbody: reply bytes passed before the stall")
		lat       = fs.Duration("latency", 0, "delay: minimum latency per chunk")
		latMax    = fs.Duration("latency-max", 0, "delay: maximum latency per chunk")
		flap      = fs.Duration("flap", 0, "reset every open connection this often")
		linger    = fs.Duration("linger", 0, "keep reset connections' upstream sides open this long")
		bhFor     = fs.Duration("blackhole-for", 0, "start black-holed for this long")
		tlsMode   = fs.String("tls", "passthrough", "passthrough or terminate")
		tlsDir    = fs.String("tls-dir", "", "terminate: where to write ca.pem and key.pem (default: a new temp dir, removed at exit)")
		apiAddr   = fs.String("api", "127.0.0.1:0", "API address (loopback only)")
		quiet     = fs.Bool("quiet", false, "no line per connection")
		list      = fs.Bool("list", false, "print the presets and exit")
		listenSet bool
	)
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	fs.Visit(func(f *flag.Flag) { listenSet = listenSet || f.Name == "listen" })
	if *list {
		for _, p := range faultnet.Presets() {
			fmt.Fprintf(stdout, "%s\n  incident: %s\n  fault:    %s\n  client:   %s\n", p.Name, p.Incident, p.Fault, p.Client)
		}
		return nil, errListed
	}
	if *upstream == "" {
		return nil, errors.New("-upstream is required")
	}
	a := &app{out: &lockedWriter{w: stdout}, closedCh: make(chan struct{})}
	cfg := faultnet.ProxyConfig{Addr: *listen, Upstream: *upstream}
	if *preset != "" {
		p, ok := faultnet.LookupPreset(*preset)
		if !ok {
			return nil, fmt.Errorf("-preset %q: unknown (see -list)", *preset)
		}
		cfg = p.Config(*upstream)
		cfg.Addr = *listen
		for _, r := range cfg.Rules {
			a.rules = append(a.rules, presetRuleSpec(p, r))
		}
	}
	if *fault != "" {
		spec := ruleSpec{Name: "flags", Fault: *fault, Every: *every, Fraction: *fraction, First: *first,
			StallAfter: *stall, LatencyMS: ms(*lat), LatencyMaxMS: ms(*latMax)}
		r, err := spec.rule()
		if err != nil {
			return nil, fmt.Errorf("flags: %w", err)
		}
		cfg.Rules = append([]faultnet.Rule{r}, cfg.Rules...)
		a.rules = append([]ruleSpec{spec}, a.rules...)
	} else if *every != 0 || *fraction != 0 || *first != 0 {
		return nil, errors.New("-every, -fraction and -first need -fault")
	}
	setDur := func(dst *time.Duration, name string, v time.Duration) error {
		if v < 0 {
			return fmt.Errorf("-%s %v is negative", name, v)
		}
		if v > 0 {
			*dst = v
		}
		return nil
	}
	if err := errors.Join(setDur(&cfg.FlapPeriod, "flap", *flap), setDur(&cfg.UpstreamLinger, "linger", *linger),
		setDur(&cfg.BlackholeFor, "blackhole-for", *bhFor)); err != nil {
		return nil, err
	}
	a.flap, a.linger = cfg.FlapPeriod, cfg.UpstreamLinger

	// The proxy listens on loopback unless -listen names another address;
	// then it says so, loudly (decided on the address it bound).
	if listenSet {
		host, _, err := net.SplitHostPort(*listen)
		if err != nil {
			return nil, fmt.Errorf("-listen %q: %w", *listen, err)
		}
		cfg.AnyAddr = !isLoopbackHost(host)
	}
	apiHost, apiPort, err := net.SplitHostPort(*apiAddr)
	if err != nil || !isLoopbackHost(apiHost) {
		return nil, fmt.Errorf("-api %q: must be a loopback host:port", *apiAddr)
	}
	if apiHost == "localhost" { // never resolved: a hosts file could say anything
		apiHost = "127.0.0.1"
	}

	var caPath string
	switch *tlsMode {
	case "passthrough":
	case "terminate":
		srvConf, path, err := writeSelfSigned(*tlsDir)
		if err != nil {
			return nil, fmt.Errorf("-tls terminate: %w", err)
		}
		cfg.TLS, caPath = srvConf, path
		if *tlsDir == "" {
			a.tlsTmp = filepath.Dir(path)
		}
	default:
		return nil, fmt.Errorf("-tls %q: want passthrough or terminate", *tlsMode)
	}
	if !*quiet {
		cfg.Log = func(l faultnet.ConnLog) { a.out.printf("faultproxy: conn %v", l) }
	}

	p, err := faultnet.NewProxy(cfg)
	if err != nil {
		a.removeTLSTmp()
		return nil, err
	}
	a.proxy = p
	apiLn, err := net.Listen("tcp", net.JoinHostPort(apiHost, apiPort))
	if err == nil && !isLoopbackHost(hostOf(apiLn.Addr())) {
		apiLn.Close()
		err = fmt.Errorf("bound %s, not loopback", apiLn.Addr())
	}
	if err != nil {
		p.Close()
		a.removeTLSTmp()
		return nil, fmt.Errorf("-api: %w", err)
	}
	a.apiLn = apiLn
	a.unused = make(map[net.Conn]struct{})
	a.api = &http.Server{Handler: http.HandlerFunc(a.serveAPI), ReadHeaderTimeout: 5 * time.Second, ReadTimeout: 10 * time.Second,
		ConnState: func(c net.Conn, s http.ConnState) {
			a.connMu.Lock()
			defer a.connMu.Unlock()
			if s == http.StateNew {
				a.unused[c] = struct{}{}
			} else {
				delete(a.unused, c)
			}
		}}
	a.apiDone = make(chan struct{})
	go func() { defer close(a.apiDone); _ = a.api.Serve(apiLn) }()

	if !isLoopbackHost(hostOf(p.Addr())) {
		a.out.printf("faultproxy: WARNING: -listen %s is NOT a loopback address: anything that can reach it can connect through this proxy to %s", p.Addr(), *upstream)
	}
	what := "no faults"
	switch {
	case *preset != "" && *fault != "":
		what = "preset " + *preset + " + flags"
	case *preset != "":
		what = "preset " + *preset
	case len(cfg.Rules) > 0 || cfg.FlapPeriod > 0 || cfg.BlackholeFor > 0:
		what = "flags"
	}
	a.out.printf("faultproxy: proxy %s -> upstream %s (%s, tls %s)", p.Addr(), *upstream, what, *tlsMode)
	if caPath != "" {
		a.out.printf("faultproxy: ca %s", caPath)
	}
	// The api line comes last: a harness reading the output may take it
	// as "ready".
	a.out.printf("faultproxy: api http://%s", apiLn.Addr())
	a.out.startAsync()
	return a, nil
}

func ms(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) }

func presetRuleSpec(p faultnet.Preset, r faultnet.Rule) ruleSpec {
	// The presets' selectors are documented in their Fault line; the
	// spec shows the parameters that JSON can carry.
	s := ruleSpec{Name: r.Name, Fault: r.Fault.String(), StallAfter: r.StallAfter, LatencyMS: ms(r.Latency), LatencyMaxMS: ms(r.LatencyMax)}
	switch r.Name {
	case "lb-hang-after-accept", "lb-hang-in-tls":
		s.Every = 12
	case "dropped":
		s.Every = 10
	case "slow-packets":
		s.Fraction = 0.15
	}
	return s
}

// hostOf returns the host of a "host:port" or net.Addr.
func hostOf(addr any) string {
	s := fmt.Sprint(addr)
	if h, _, err := net.SplitHostPort(s); err == nil {
		return h
	}
	return s
}

func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip, err := netip.ParseAddr(host)
	return err == nil && ip.Unmap().IsLoopback()
}

// writeSelfSigned makes a self-signed pair for localhost, 127.0.0.1 and
// ::1, writes the certificate (the CA a client trusts) and the key to
// dir, and returns the server config and the certificate's path.
func writeSelfSigned(dir string) (*tls.Config, string, error) {
	srv, _, err := faultnet.NewSelfSigned("localhost", "127.0.0.1", "::1")
	if err != nil {
		return nil, "", err
	}
	if dir == "" {
		if dir, err = os.MkdirTemp("", "faultproxy-tls-"); err != nil {
			return nil, "", err
		}
	} else if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, "", err
	}
	cert := srv.Certificates[0]
	keyDER, err := x509.MarshalECPrivateKey(cert.PrivateKey.(*ecdsa.PrivateKey))
	if err != nil {
		return nil, "", err
	}
	caPath := filepath.Join(dir, "ca.pem")
	if err := writeNew(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644); err != nil {
		return nil, "", err
	}
	if err := writeNew(filepath.Join(dir, "key.pem"), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, "", err
	}
	return srv, caPath, nil
}

// writeNew replaces path with a new file of mode perm holding b: an old
// file (whatever its mode) or symlink there is removed, not written
// through, and O_EXCL refuses one that reappears in between.
func writeNew(path string, b []byte, perm os.FileMode) error {
	if err := os.Remove(path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return err
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	return errors.Join(err, f.Close())
}

// Close stops the API and the proxy (closing every connection) and waits.
func (a *app) Close() {
	a.mu.Lock()
	if a.closed {
		a.mu.Unlock()
		return
	}
	a.closed = true
	close(a.closedCh)
	if a.bhTimer != nil && a.bhTimer.Stop() {
		a.bhWG.Done() // its func will never run
	}
	a.mu.Unlock()
	a.bhWG.Wait()
	// No new API connections; those that never sent a request are closed
	// now (Shutdown would wait 5s for each); Shutdown lets the requests in
	// flight finish (a rejected oversized body leaves one lingering for
	// net/http's 500ms), Close cuts what is left after 5s.
	_ = a.apiLn.Close()
	<-a.apiDone // Serve has returned: every accepted conn passed StateNew
	a.connMu.Lock()
	for c := range a.unused {
		_ = c.Close()
	}
	a.connMu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	_ = a.api.Shutdown(ctx)
	cancel()
	_ = a.api.Close()
	_ = a.proxy.Close()
	a.removeTLSTmp()
	a.out.stop()
}

// removeTLSTmp removes the directory -tls terminate made for its pair.
func (a *app) removeTLSTmp() {
	if a.tlsTmp != "" {
		_ = os.RemoveAll(a.tlsTmp)
	}
}

// apiError is every API error's body.
type apiError struct {
	Error string `json:"error"`
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func fail(w http.ResponseWriter, status int, format string, args ...any) {
	writeJSON(w, status, apiError{Error: fmt.Sprintf(format, args...)})
}

// maxBody bounds a request body.
const maxBody = 64 << 10

// decode reads one JSON object into v, strictly.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	ct, _, err := mime.ParseMediaType(r.Header.Get("Content-Type"))
	if err != nil || ct != "application/json" {
		fail(w, http.StatusUnsupportedMediaType, "Content-Type must be application/json")
		return false
	}
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		var tooBig *http.MaxBytesError
		if errors.As(err, &tooBig) {
			fail(w, http.StatusRequestEntityTooLarge, "body larger than %d bytes", maxBody)
			return false
		}
		fail(w, http.StatusBadRequest, "bad JSON: %v", err)
		return false
	}
	if dec.More() {
		fail(w, http.StatusBadRequest, "bad JSON: more than one value")
		return false
	}
	return true
}

func (a *app) serveAPI(w http.ResponseWriter, r *http.Request) {
	host := r.Host
	if h, _, err := net.SplitHostPort(host); err == nil {
		host = h
	}
	if !isLoopbackHost(strings.Trim(host, "[]")) {
		fail(w, http.StatusForbidden, "Host %q is not a loopback address or localhost", r.Host)
		return
	}
	// A browser's cross-site POST without a body needs no preflight (POST
	// /drop); refuse every state-changing request a web page sends.
	if err := (&http.CrossOriginProtection{}).Check(r); err != nil {
		fail(w, http.StatusForbidden, "cross-origin request refused: %v", err)
		return
	}
	path := r.URL.Path
	if path != "/rules/" { // "/rules/" names the empty rule, not the list
		path = strings.TrimSuffix(path, "/")
	}
	route := func(methods ...string) bool {
		for _, m := range methods {
			if r.Method == m {
				return true
			}
		}
		w.Header().Set("Allow", strings.Join(methods, ", "))
		fail(w, http.StatusMethodNotAllowed, "%s %s: method not allowed (allowed: %s)", r.Method, path, strings.Join(methods, ", "))
		return false
	}
	switch {
	case path == "/presets":
		if route(http.MethodGet) {
			type presetJSON struct{ Name, Incident, Fault, Client string }
			var ps []presetJSON
			for _, p := range faultnet.Presets() {
				ps = append(ps, presetJSON{p.Name, p.Incident, p.Fault, p.Client})
			}
			writeJSON(w, http.StatusOK, map[string]any{"presets": ps})
		}
	case path == "/preset":
		if route(http.MethodPost) {
			a.postPreset(w, r)
		}
	case path == "/rules":
		if route(http.MethodGet, http.MethodPost, http.MethodDelete) {
			switch r.Method {
			case http.MethodGet:
				a.mu.Lock()
				rules := append([]ruleSpec{}, a.rules...)
				a.mu.Unlock()
				writeJSON(w, http.StatusOK, map[string]any{"rules": rules})
			case http.MethodPost:
				a.addRule(w, r)
			case http.MethodDelete:
				a.setRules(w, nil, http.StatusNoContent, nil)
			}
		}
	case strings.HasPrefix(path, "/rules/"):
		if route(http.MethodDelete) {
			a.deleteRule(w, strings.TrimPrefix(path, "/rules/"))
		}
	case path == "/stats":
		if route(http.MethodGet) {
			writeJSON(w, http.StatusOK, a.stats())
		}
	case path == "/flap":
		if route(http.MethodPut) {
			var body struct {
				PeriodMS *float64 `json:"period_ms"`
			}
			if !decode(w, r, &body) {
				return
			}
			if body.PeriodMS == nil {
				fail(w, http.StatusBadRequest, "period_ms is required")
				return
			}
			d, err := millis("period_ms", *body.PeriodMS)
			if err == nil && d > 0 && d < time.Millisecond {
				err = fmt.Errorf("period_ms %v: want 0 (no flap) or at least 1", *body.PeriodMS)
			}
			if err != nil {
				fail(w, http.StatusBadRequest, "%v", err)
				return
			}
			if err := a.proxy.SetFlap(d); err != nil {
				fail(w, http.StatusConflict, "%v", err)
				return
			}
			a.mu.Lock()
			a.flap = d
			a.mu.Unlock()
			writeJSON(w, http.StatusOK, a.stats())
		}
	case path == "/linger":
		if route(http.MethodPut) {
			var body struct {
				MS *float64 `json:"ms"`
			}
			if !decode(w, r, &body) {
				return
			}
			if body.MS == nil {
				fail(w, http.StatusBadRequest, "ms is required")
				return
			}
			d, err := millis("ms", *body.MS)
			if err != nil {
				fail(w, http.StatusBadRequest, "%v", err)
				return
			}
			_ = a.proxy.SetUpstreamLinger(d)
			a.mu.Lock()
			a.linger = d
			a.mu.Unlock()
			writeJSON(w, http.StatusOK, a.stats())
		}
	case path == "/blackhole":
		if route(http.MethodPut) {
			var body struct {
				On    *bool    `json:"on"`
				ForMS *float64 `json:"for_ms"`
			}
			if !decode(w, r, &body) {
				return
			}
			if body.On == nil {
				fail(w, http.StatusBadRequest, "on is required")
				return
			}
			var d time.Duration
			if body.ForMS != nil {
				var err error
				if d, err = millis("for_ms", *body.ForMS); err != nil || !*body.On {
					if err == nil {
						err = errors.New("for_ms needs on: true")
					}
					fail(w, http.StatusBadRequest, "%v", err)
					return
				}
			}
			if err := a.blackhole(*body.On, d); err != nil {
				fail(w, http.StatusConflict, "%v", err)
				return
			}
			writeJSON(w, http.StatusOK, a.stats())
		}
	case path == "/drop":
		if route(http.MethodPost) {
			writeJSON(w, http.StatusOK, map[string]int{"dropped": a.proxy.DropAll()})
		}
	default:
		fail(w, http.StatusNotFound, "no such endpoint %q (see /presets, /rules, /stats, /flap, /linger, /blackhole, /drop)", path)
	}
}

// statsJSON is GET /stats.
type statsJSON struct {
	Accepted     int64   `json:"accepted"`
	Faulted      int64   `json:"faulted"`
	Served       int64   `json:"served"`
	ClosedByPeer int64   `json:"closed_by_peer"`
	Active       int64   `json:"active"`
	MaxActive    int64   `json:"max_active"`
	Dropped      int64   `json:"dropped"`
	Lingering    int64   `json:"lingering"`
	Blackholed   bool    `json:"blackholed"`
	FlapMS       float64 `json:"flap_ms"`
	LingerMS     float64 `json:"linger_ms"`
	Rules        int     `json:"rules"`
}

func (a *app) stats() statsJSON {
	st := a.proxy.Stats()
	a.mu.Lock()
	defer a.mu.Unlock()
	return statsJSON{st.Accepted, st.Faulted, st.Served, st.ClosedByPeer, st.Active, st.MaxActive, st.Dropped, st.Lingering,
		a.proxy.Blackholed(), ms(a.flap), ms(a.linger), len(a.rules)}
}

// maxRules bounds the rule list.
const maxRules = 64

func (a *app) addRule(w http.ResponseWriter, r *http.Request) {
	var spec ruleSpec
	if !decode(w, r, &spec) {
		return
	}
	if _, err := spec.rule(); err != nil {
		fail(w, http.StatusBadRequest, "%v", err)
		return
	}
	// Check and install under one lock, so concurrent adds all land.
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range a.rules {
		if s.Name == spec.Name {
			fail(w, http.StatusConflict, "rule %q exists (DELETE /rules/%s first)", spec.Name, spec.Name)
			return
		}
	}
	if len(a.rules) >= maxRules {
		fail(w, http.StatusConflict, "at most %d rules", maxRules)
		return
	}
	a.setRulesLocked(w, append(append([]ruleSpec{}, a.rules...), spec), http.StatusCreated, spec)
}

func (a *app) deleteRule(w http.ResponseWriter, name string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	var rules []ruleSpec
	found := false
	for _, s := range a.rules {
		if s.Name == name {
			found = true
			continue
		}
		rules = append(rules, s)
	}
	if !found {
		fail(w, http.StatusNotFound, "no rule %q", name)
		return
	}
	a.setRulesLocked(w, rules, http.StatusNoContent, nil)
}

// setRules installs specs in the proxy and answers status with body.
func (a *app) setRules(w http.ResponseWriter, specs []ruleSpec, status int, body any) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.setRulesLocked(w, specs, status, body)
}

// setRulesLocked is setRules; a.mu must be held.
func (a *app) setRulesLocked(w http.ResponseWriter, specs []ruleSpec, status int, body any) {
	rules := make([]faultnet.Rule, 0, len(specs))
	for i := range specs {
		r, err := specs[i].rule()
		if err != nil {
			fail(w, http.StatusBadRequest, "%v", err)
			return
		}
		rules = append(rules, r)
	}
	if err := a.proxy.SetRules(rules...); err != nil {
		fail(w, http.StatusConflict, "%v", err)
		return
	}
	a.rules = specs
	a.out.printf("faultproxy: rules now %s", describe(specs))
	if status == http.StatusNoContent {
		w.WriteHeader(status)
		return
	}
	writeJSON(w, status, body)
}

func describe(specs []ruleSpec) string {
	if len(specs) == 0 {
		return "none (every connection passes)"
	}
	var b []string
	for _, s := range specs {
		b = append(b, s.Name+"="+s.Fault)
	}
	return strings.Join(b, ", ")
}

func (a *app) postPreset(w http.ResponseWriter, r *http.Request) {
	var body struct {
		Name string `json:"name"`
	}
	if !decode(w, r, &body) {
		return
	}
	p, ok := faultnet.LookupPreset(body.Name)
	if !ok {
		fail(w, http.StatusBadRequest, "unknown preset %q (see GET /presets)", body.Name)
		return
	}
	cfg := p.Config("127.0.0.1:1")
	var specs []ruleSpec
	for _, r := range cfg.Rules {
		specs = append(specs, presetRuleSpec(p, r))
	}
	if err := errors.Join(a.proxy.SetFlap(cfg.FlapPeriod), a.proxy.SetUpstreamLinger(cfg.UpstreamLinger)); err != nil {
		fail(w, http.StatusConflict, "%v", err)
		return
	}
	if err := a.blackhole(cfg.BlackholeFor > 0, cfg.BlackholeFor); err != nil {
		fail(w, http.StatusConflict, "%v", err)
		return
	}
	a.mu.Lock()
	a.flap, a.linger = cfg.FlapPeriod, cfg.UpstreamLinger
	a.mu.Unlock()
	a.out.printf("faultproxy: preset %s", p.Name)
	a.setRules(w, specs, http.StatusOK, map[string]any{"preset": p.Name, "rules": specs})
}

// blackhole sets the black-hole state; with on and d > 0 the route is
// restored after d.
func (a *app) blackhole(on bool, d time.Duration) error {
	a.mu.Lock()
	if a.bhTimer != nil {
		if a.bhTimer.Stop() {
			a.bhWG.Done() // its func will never run
		}
		a.bhTimer = nil
	}
	a.bhGen++
	gen := a.bhGen
	a.mu.Unlock()
	if err := a.proxy.SetBlackhole(on); err != nil {
		return err
	}
	a.out.printf("faultproxy: black-holed %v", on)
	if on && d > 0 {
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.closed || gen != a.bhGen {
			return nil
		}
		a.bhWG.Add(1)
		a.bhTimer = time.AfterFunc(d, func() {
			defer a.bhWG.Done()
			a.mu.Lock()
			stale := a.closed || gen != a.bhGen
			a.mu.Unlock()
			if !stale && a.proxy.SetBlackhole(false) == nil {
				a.out.printf("faultproxy: black-holed false (after %v)", d)
			}
		})
	}
	return nil
}
