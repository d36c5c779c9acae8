package transport

import (
	"cmp"
	"context"
	"errors"
	"hash/maphash"
	"log/slog"
	"math"
	"net"
	"net/http"
	"net/url"
	"runtime"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
	"weak"

	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"

	"github.com/lifeline-go/lifeline/dial"
	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/internal/upstream"
	"github.com/lifeline-go/lifeline/retry"
)

// UnavailableError is the error of a call the Transport did not attempt:
// its upstream is known down (Reason "down": establishment failed
// FailureThreshold times in a row or hangs; Last is the last real failure,
// a *dial.Error with its phase and peer as a rule), or the call was shed by
// client-side throttling (Reason "shed"). It matches [ErrUnavailable] (and
// [ErrThrottled] when shed), unwraps to Last, and its Retryable is false: a
// retry.Do around the Transport does not retry it (it would only spin).
// error.type is "unavailable" or "shed". Its text names the upstream's
// host:port only, never a URL. See the package documentation, "When the
// upstream is down or drowning".
type UnavailableError = upstream.UnavailableError

// ErrUnavailable is matched (errors.Is) by every [*UnavailableError]: the
// call was not attempted.
var ErrUnavailable = upstream.ErrUnavailable

// ErrThrottled is matched by the [*UnavailableError] of a call shed by
// client-side throttling (Reason "shed"), and is in the chain of the error
// of a call whose retry was refused because its upstream is shedding load.
var ErrThrottled = upstream.ErrThrottled

// WaitForReady returns a copy of ctx whose calls wait, within ctx, for an
// upstream known down to come back instead of failing at once with an
// [*UnavailableError] (a startup path, a long job). The Transport probes
// a down upstream itself, about once a second at first (one connect,
// closed), and the first probe that establishes releases every waiting
// call at once; through a proxy, where a probe of its own would only reach
// the proxy, one of the waiting calls is the next probe when it is due. A
// call that waits for ready and was already waiting for a conn when the
// upstream went down goes on waiting for it. It has the effect of
// CallOptions{WaitForReady: true}, and the same mark is read by
// pool.WaitForReady's pools: one context waits for both.
func WaitForReady(ctx context.Context) context.Context {
	return upstream.WithWaitForReady(ctx)
}

// Bounds of the per-upstream state: upstreams tracked (the least recently
// used Ready ones are forgotten beyond it when the table is settled; the
// fewer than maxYoung met since come on top) and upstreams whose host is their
// own server.address label (the rest share "other").
// queueStands is how long a queue for conns must stand before it is an
// overload signal (see admit).
const queueStands = 500 * time.Millisecond

const (
	maxUpstreams      = 256
	maxUpstreamLabels = 32
)

// upKey names an upstream: scheme and host[:port] of the request URL.
type upKey struct {
	https bool
	host  string
}

// upState is what a Transport knows of one upstream.
type upState struct {
	name  string // host:port, for errors
	label string // its server.address label: its host, or "other"
	gate  upstream.Gate
	thr   upstream.Throttle
	used  atomic.Int64 // UnixNano of the last call, within a second
	// queued counts the upstream's tries waiting for a conn (between
	// net/http's GetConn and GotConn hooks): see queueSignal.
	queued atomic.Int32
	// queueSince is when the queue last grew to queueSignal (UnixNano;
	// 0: it is shorter): only a queue that stands for queueStands is a
	// signal, not the burst of calls a pause releases at once.
	queueSince atomic.Int64
	// dialing counts the dials under way for its calls (dialHook): the
	// tries that wait for them wait for a conn that is coming (a slow
	// network), not in a queue behind MaxConnsPerHost.
	dialing atomic.Int32

	mu       sync.Mutex
	heldCode int // the status of the answer that paused the upstream

	// scopes are the parts of the upstream a 429 paused (see scopes).
	scopes scopes
}

// A 429 speaks for a scope, not for the whole host: rate limits are per
// path and per token as often as per host (a search API, a tenant's
// quota). A scope is the request's URL path (no query) and its
// Authorization field, both as 64-bit hashes (never the values). Bounds:
// the scopes an upstream tracks (the least recently used whose pause is
// over are forgotten; with none, a 429 pauses the host: the safe side),
// and the distinct paths paused at once from which a 429 pauses the host
// too (a host-wide limit, answered on every path; tenants over their
// quotas on one path are not one). staleScope is how long after
// its end a pause no call came to probe is forgotten (sweep).
const (
	maxScopes   = 64
	hostScopes  = 3
	staleScope  = 30 * time.Second
	sweepPeriod = int64(time.Second)
)

// scopeKey names a scope: hashes of the path and of the Authorization.
type scopeKey struct{ path, auth uint64 }

// scopeSeed hashes the scopes of every Transport (the hashes never leave
// the process).
var scopeSeed = maphash.MakeSeed()

// scopeKeyOf returns the scope of req, without allocating for a plain
// path: the path as sent (sentPath: /a%2Fb and /a/b are two resources to
// the server) and the Authorization field.
func scopeKeyOf(req *http.Request) scopeKey {
	var auth string
	if v := req.Header["Authorization"]; len(v) > 0 {
		auth = v[0]
	}
	return scopeKey{maphash.String(scopeSeed, sentPath(req.URL)), maphash.String(scopeSeed, auth)}
}

// sentPath is the path of u's request line, as net/http writes it
// (URL.RequestURI without the query): the opaque part when set, else
// EscapedPath — RawPath only when it encodes Path (one a caller left
// stale after changing Path is not sent) — and "/" for an empty path.
func sentPath(u *url.URL) string {
	if u.Opaque != "" {
		return u.Opaque
	}
	if p := u.EscapedPath(); p != "" {
		return p
	}
	return "/"
}

// scopeKey returns the scope the call's tries go to. With Credentials,
// the Authorization is the one they apply (a multi-tenant service's
// Credentials pick each tenant's token), not the caller's request's: the
// key is taken from a copy of the request they were applied to (only
// while a scope of the upstream is paused: one Apply more per call then,
// on a copy like a try's). A copy Apply fails on keeps the caller's (the
// try fails the same way).
func (c *call) scopeKey() scopeKey {
	creds := c.lim.creds
	if creds == nil {
		return scopeKeyOf(c.req)
	}
	// Header and URL the copy's own, as a try's are (Apply may set
	// either: a key in the query).
	r := *c.req
	u := *c.req.URL
	r.URL = &u
	r.Header = c.req.Header.Clone()
	if r.Header == nil {
		r.Header = http.Header{}
	}
	if creds.Apply(&r) != nil {
		return scopeKeyOf(c.req)
	}
	return scopeKeyOf(&r)
}

// anyAuth is the auth of a scope that stands for every Authorization on
// its path: that of Credentials whose field differs from one Apply to the
// next (a signature, a nonce), which no later call would send again.
const anyAuth = math.MaxUint64

// pauseScope returns the scope a 429 that answers resp pauses: the try's
// (answerScope), or with Credentials whose Authorization one more Apply
// does not repeat, the path's for any Authorization (anyAuth): a scope
// keyed by a field sent once would pause nobody, and the server's pause
// would hold only when the table was full (the host's then). (A token
// refreshed between the try and the 429 is taken for such Credentials:
// the path paused for the advised time, the safe side.)
func (c *call) pauseScope(resp *http.Response) scopeKey {
	k := c.answerScope(resp)
	if c.lim.creds != nil && c.scopeKey().auth != k.auth {
		k.auth = anyAuth
	}
	return k
}

// findScope returns the paused scope of the call's key k, or with
// Credentials, its path's for any Authorization (pauseScope); nil when
// neither is tracked.
func (c *call) findScope(k scopeKey, now int64) *scope {
	ss := &c.up.scopes
	sc := ss.find(k, now)
	if sc == nil && c.lim.creds != nil {
		sc = ss.find(scopeKey{k.path, anyAuth}, now)
	}
	return sc
}

// answerScope returns the scope of the try that resp answers (its
// Request, the try's copy with its Credentials applied), or the call's.
func (c *call) answerScope(resp *http.Response) scopeKey {
	if r := resp.Request; r != nil && r != c.req && r.URL != nil {
		return scopeKeyOf(r)
	}
	return c.scopeKey()
}

// scope is one scope's pause: a gate used only for Pause (no prober, no
// dial: it is Ready or Paused), so that a scope's calls wait, are held or
// probe exactly as a host's do.
type scope struct {
	gate upstream.Gate
	used int64 // UnixNano of the last call that met it; under scopes.mu

	mu       sync.Mutex
	heldCode int // the status of the answer that paused it
}

// scopes is an upstream's table of scopes, made on a 429. paused counts
// its scopes that are not Ready: while it is 0 (the happy path) no call
// looks the table up.
type scopes struct {
	paused atomic.Int32

	mu        sync.Mutex
	m         map[scopeKey]*scope
	lastSweep int64
}

// find returns the scope k, or nil. It forgets, about once a second,
// the pauses that ended staleScope ago with no call to probe them.
func (ss *scopes) find(k scopeKey, now int64) *scope {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	sc := ss.m[k]
	if sc != nil {
		sc.used = now
	}
	if now-ss.lastSweep >= sweepPeriod {
		ss.lastSweep = now
		for k, v := range ss.m {
			if v.gate.Current() == upstream.Ready || v.stale(now) {
				v.gate.Success()
				if v != sc {
					delete(ss.m, k)
				}
			}
		}
	}
	return sc
}

// answered notes an answer of sc's that does not pause it: it reopens
// sc when it is sc's probe or sc's pause is over. An answer to a call
// admitted before the pause (in flight when the 429 came) says nothing
// of the limit the 429 told of, and does not end the advised wait.
func (sc *scope) answered(probe bool) {
	if sc.gate.Current() == upstream.Ready || !probe && pauseInForce(&sc.gate) {
		return
	}
	sc.gate.Success()
}

// pauseInForce reports whether g is Paused and its advised time is not
// over; one atomic load when g is not Paused.
func pauseInForce(g *upstream.Gate) bool {
	if g.Current() != upstream.Paused {
		return false
	}
	sn := g.Snapshot()
	return sn.State == upstream.Paused && time.Now().Before(sn.Until)
}

// stale reports whether sc's pause ended staleScope before now.
func (sc *scope) stale(now int64) bool {
	sn := sc.gate.Snapshot()
	return sn.State == upstream.Paused && now-sn.Until.UnixNano() >= int64(staleScope)
}

// pause pauses the scope k for d (capped by limit; see Gate.Pause) with
// the answer code held for its calls, and reports whether the host must
// be paused too: the table is full of pauses in force, or scopes of
// hostScopes distinct paths are paused at once.
func (ss *scopes) pause(k scopeKey, name string, code int, d, limit time.Duration, now int64) (host bool) {
	ss.mu.Lock()
	sc := ss.m[k]
	if sc == nil {
		if len(ss.m) >= maxScopes && !ss.evict(now) {
			ss.mu.Unlock()
			return true
		}
		if ss.m == nil {
			ss.m = make(map[scopeKey]*scope, 4)
		}
		sc = &scope{}
		sc.gate.Upstream = name
		sc.gate.OnTransition(func(from, to upstream.State) {
			switch {
			case from == upstream.Ready:
				ss.paused.Add(1)
			case to == upstream.Ready:
				ss.paused.Add(-1)
			}
		})
		ss.m[k] = sc
	}
	sc.used = now
	sc.mu.Lock()
	sc.heldCode = code
	sc.mu.Unlock()
	// Under ss.mu, so that no sweep forgets the scope before its pause
	// (its transition function only counts).
	sc.gate.Pause(d, limit)
	defer ss.mu.Unlock()
	// Distinct paths, not scopes: tenants over their quotas on one path
	// are not a host-wide limit (three of a thousand would pause the
	// other 997).
	var paths [hostScopes]uint64
	n := 0
	for k, v := range ss.m {
		if v.gate.Current() != upstream.Paused || v.gate.Snapshot().Until.UnixNano() <= now {
			continue
		}
		if !slices.Contains(paths[:n], k.path) {
			paths[n] = k.path
			if n++; n == hostScopes {
				return true
			}
		}
	}
	return false
}

// evict forgets the least recently used scope whose pause is not in
// force (Ready, or its advised time over), reopening it; false when
// every scope is paused. ss.mu is held.
func (ss *scopes) evict(now int64) bool {
	var ek scopeKey
	var ev *scope
	for k, v := range ss.m {
		if (ev == nil || v.used < ev.used) && (v.gate.Current() == upstream.Ready || v.gate.Snapshot().Until.UnixNano() <= now) {
			ek, ev = k, v
		}
	}
	if ev == nil {
		return false
	}
	delete(ss.m, ek)
	ev.gate.Success()
	return true
}

// size returns the number of scopes tracked.
func (ss *scopes) size() int {
	ss.mu.Lock()
	defer ss.mu.Unlock()
	return len(ss.m)
}

// upstreams is a Transport's per-upstream state: copy-on-write maps, so
// that a call finds its upstream with an atomic load and a map lookup (two
// for one met lately). The upstreams met since the last settling are in
// young, a small map copied on each addition; m, the settled ones, is
// copied only when young is full (or while the whole table is small): a
// Transport that calls more hosts than it tracks (a webhook sender, a
// crawler) copies a few entries per new host, not the whole table.
type upstreams struct {
	st      *state
	m       atomic.Pointer[map[upKey]*upState]
	young   atomic.Pointer[map[upKey]*upState]
	mu      sync.Mutex // serializes changes of m and young
	labeled int

	// The background probes of upstreams that are down (probe).
	probeOnce   sync.Once
	probeDialer dial.Dialer
	probeMu     sync.Mutex
	probes      map[*context.CancelFunc]struct{} // the probes under way
}

// The young map's bound, and the size of the whole table up to which it
// is settled at each addition.
const (
	maxYoung    = 32
	smallTables = 64
)

// lookup returns the state of the upstream k, or nil.
func (us *upstreams) lookup(k upKey) *upState {
	if m := us.m.Load(); m != nil {
		if s := (*m)[k]; s != nil {
			return s
		}
	}
	if y := us.young.Load(); y != nil {
		return (*y)[k]
	}
	return nil
}

// upstreamOf returns the state of the upstream of u, made on first use.
func (us *upstreams) upstreamOf(u *url.URL, now int64) *upState {
	k := upKey{u.Scheme == "https", u.Host}
	if s := us.lookup(k); s != nil {
		if now-s.used.Load() > int64(time.Second) {
			s.used.Store(now)
		}
		return s
	}
	return us.add(k, u, now)
}

// youngLen is the number of upstreams met since the last settling.
func (us *upstreams) youngLen() int {
	if p := us.young.Load(); p != nil {
		return len(*p)
	}
	return 0
}

// each calls f for every upstream tracked.
func (us *upstreams) each(f func(*upState)) {
	for _, p := range []*map[upKey]*upState{us.m.Load(), us.young.Load()} {
		if p != nil {
			for _, s := range *p {
				f(s)
			}
		}
	}
}

func (us *upstreams) add(k upKey, u *url.URL, now int64) *upState {
	us.mu.Lock()
	defer us.mu.Unlock()
	if s := us.lookup(k); s != nil {
		return s
	}
	if us.m.Load() == nil && us.young.Load() == nil {
		// The Transport's first upstream: the gauge observes them.
		us.st.tel.watchUpstreams(us)
	}
	s := &upState{name: targetAddr(u), label: otelx.PeerOther}
	s.gate.Upstream = s.name
	s.used.Store(now)
	if us.labeled < maxUpstreamLabels {
		us.labeled++
		s.label = u.Hostname()
	}
	s.gate.OnTransition(func(from, to upstream.State) { us.transition(s, from, to) })
	if !us.st.t.DisableFailFast && us.direct(u) {
		// The Transport probes the upstream itself while it is down: no
		// caller's call is a probe. Through a proxy the dial goes to the
		// proxy, which proves nothing of the upstream: a call probes.
		s.gate.SetProber(func() error { return us.probe(s, k.https) }, us.st.policy.Budget)
	}
	var old, young map[upKey]*upState
	if p := us.m.Load(); p != nil {
		old = *p
	}
	y := make(map[upKey]*upState, us.youngLen()+1)
	if p := us.young.Load(); p != nil {
		young = *p
		for k, v := range young {
			y[k] = v
		}
	}
	y[k] = s
	if len(y) < maxYoung && len(old)+len(y) > smallTables {
		us.young.Store(&y)
		return s
	}
	// Settle: one table, the least recently used upstreams that are
	// ready and not shedding forgotten beyond maxUpstreams. (Current,
	// not State: State may change a state and log it, and the Logger's
	// handler must not run under us.mu.)
	m := make(map[upKey]*upState, min(len(old)+len(y), maxUpstreams))
	for k, v := range old {
		m[k] = v
	}
	for k, v := range y {
		m[k] = v
	}
	if over := len(m) - maxUpstreams; over > 0 {
		type cand struct {
			k  upKey
			at int64
		}
		var cs []cand
		for k, v := range m {
			if v.gate.Current() == upstream.Ready && !v.thr.Shedding(now) {
				cs = append(cs, cand{k, v.used.Load()})
			}
		}
		slices.SortFunc(cs, func(a, b cand) int { return cmp.Compare(a.at, b.at) })
		for _, c := range cs[:min(over, len(cs))] {
			delete(m, c.k)
		}
		if len(m) > maxUpstreams {
			// Every upstream tracked is down or shedding: the ones
			// met last are not remembered beyond their calls.
			for k := range y {
				if len(m) <= maxUpstreams {
					break
				}
				delete(m, k)
			}
		}
	}
	us.m.Store(&m)
	us.young.Store(nil)
	return s
}

// direct reports whether the Transport dials the upstream of u itself,
// with no proxy between.
func (us *upstreams) direct(u *url.URL) bool {
	req := &http.Request{Method: http.MethodGet, URL: u, Header: http.Header{}, Host: u.Host}
	px, err := us.st.ht.Proxy(req)
	return err == nil && px == nil
}

// probe is the background probe of the upstream s (upstream.Gate's
// prober): a connection established the way a call's would be — the
// Transport's Dialer, with its TLS handshake for https — but with one
// attempt per address (one connect per probe to a lone address) and no
// first-byte watch, then closed. It is bounded by the Dialer's limits,
// and CloseIdleConnections ends it (closeProbes).
func (us *upstreams) probe(s *upState, https bool) error {
	us.probeOnce.Do(func() {
		d := us.st.dialer
		d.Health = us.st.dialer.Scoreboard() // what it learns, the calls' dials know
		d.MaxAttemptsPerAddress = 1
		d.FirstByteTimeout = -1
		us.probeDialer = d
	})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	us.probeMu.Lock()
	if us.probes == nil {
		us.probes = map[*context.CancelFunc]struct{}{}
	}
	us.probes[&cancel] = struct{}{}
	us.probeMu.Unlock()
	defer func() {
		us.probeMu.Lock()
		delete(us.probes, &cancel)
		us.probeMu.Unlock()
	}()
	var conn net.Conn
	var err error
	if https {
		conn, err = us.probeDialer.DialTLSContext(ctx, "tcp", s.name)
	} else {
		conn, err = us.probeDialer.DialContext(ctx, "tcp", s.name)
	}
	outcome := "failed"
	if err == nil {
		_ = conn.Close()
		outcome = otelx.OutcomeOK
	}
	if ctx.Err() == nil {
		us.st.tel.probed(ctx, outcome)
	}
	return err
}

// closeProbes ends the background probes under way (CloseIdleConnections):
// their upstreams stay down, and probe again when calls meet them.
func (us *upstreams) closeProbes() {
	us.each(func(s *upState) { s.gate.StopProbes() })
	us.probeMu.Lock()
	defer us.probeMu.Unlock()
	for cancel := range us.probes {
		(*cancel)()
	}
}

// cutWaiting ends the tries of s's calls that wait for a conn (none yet,
// nothing written) with a dial of theirs under way when s goes down, as
// gRPC fails the RPCs waiting for a transport at TRANSIENT_FAILURE: their
// dial hangs or fails like those that took s down, and their retry would
// meet the closed gate. They end with s's *UnavailableError (downError),
// not retried. A try whose own dial ended (the one that took s down) keeps
// its dial's error. Calls that wait for ready go on waiting (their dial
// may still succeed) within their deadline. Only watched tries are in the
// list: a call with both of the watch's limits off waits for its own
// dial's limits.
func (us *upstreams) cutWaiting(s *upState) {
	w := us.st.watch
	var cut []*try
	w.mu.Lock()
	for tr := w.tries; tr != nil; tr = tr.next {
		if tr.c.up == s && !tr.c.lim.waitForReady && !upstream.WaitsForReady(tr.c.ctx) && tr.conn.Load() == nil && !tr.wrote.Load() &&
			tr.wait.Load() == waitAcquiring && tr.c.dialInFlight() &&
			tr.wait.CompareAndSwap(waitAcquiring, waitConnCut) {
			cut = append(cut, tr)
		}
	}
	w.mu.Unlock()
	for _, tr := range cut {
		tr.cancel(errUpstreamDown)
	}
}

// errUpstreamDown is the cause with which cutWaiting ends a try.
var errUpstreamDown = errors.New("transport: upstream down while waiting for a conn")

// downError is the error of a try that cutWaiting ended: the upstream's
// *UnavailableError, Last the failure that took it down.
func (c *call) downError() error {
	sn := c.up.gate.Snapshot()
	return &UnavailableError{Upstream: c.up.name, Reason: upstream.ReasonDown, Since: sn.Since, Retry: sn.NextProbe, Last: sn.Last}
}

// transition logs a change of an upstream's state, and ends the tries
// waiting for a conn when it goes down (cutWaiting). The gate calls it
// without its lock held, in the order of the changes; the record is
// queued (tel.logq), so that the Logger's handler — the user's code —
// never runs inside a metric collection or a call that found the change.
func (us *upstreams) transition(s *upState, from, to upstream.State) {
	st := us.st
	if to == upstream.Down {
		us.cutWaiting(s)
	}
	if st.tel.log == nil {
		return
	}
	msg := "lifeline: upstream ready again"
	switch to {
	case upstream.Down:
		msg = "lifeline: upstream down: calls fail fast, probes test it"
	case upstream.Paused:
		msg = "lifeline: upstream paused by its server: calls wait or fail fast"
	}
	var last error
	if to == upstream.Down {
		last = s.gate.LastLocked()
	}
	// The kind names the upstream: every host that goes down gets its
	// record, not only the first of an outage (the Logger's limit is per
	// kind; beyond logx.MaxKinds kinds they share one).
	st.tel.logq.Failure(context.Background(), "upstream."+to.String()+":"+s.name, msg, last,
		slog.String("server.address", s.name), slog.String("from", from.String()))
}

// gaugeSet is the callback of one lifeline.upstream.down instrument: the
// upstream tables of the Transports that record through it, held weakly,
// so that a Transport no longer used is dropped at the next collection.
type gaugeSet struct {
	mu   sync.Mutex
	sets []weak.Pointer[upstreams]
}

// gauges holds a gaugeSet per instrument set (*otelx.Upstream, held
// weakly: otelx remembers only the recent few, and a dropped meter
// provider with its readers and data must not be pinned here): one
// callback per meter provider and name, not one per Transport.
var gauges sync.Map // weak.Pointer[otelx.Upstream] → *gaugeSet

// watchUpstreams makes the gauge observe us.
func (t *telemetry) watchUpstreams(us *upstreams) {
	if t.noopMetrics {
		return
	}
	key := weak.Make(t.up)
	v, loaded := gauges.LoadOrStore(key, &gaugeSet{})
	g := v.(*gaugeSet)
	g.mu.Lock()
	g.sets = append(g.sets, weak.Make(us))
	g.mu.Unlock()
	if !loaded {
		runtime.AddCleanup(t.up, func(k weak.Pointer[otelx.Upstream]) { gauges.Delete(k) }, key)
		ui := t.up
		_, _ = ui.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			for label, v := range g.observe() {
				o.ObserveInt64(ui.Down, v, metric.WithAttributes(otelx.ServerAddress(label)))
			}
			return nil
		}, ui.Down)
	}
}

// observe returns 1 by label for upstreams down or paused, 0 for the
// others, and forgets the tables no longer used. It looks at the states
// without g.mu held: a look may find an upstream's dials hanging and log
// the change, and the Logger's handler may make a Transport's first call
// (watchUpstreams takes g.mu).
func (g *gaugeSet) observe() map[string]int64 {
	g.mu.Lock()
	var tables []*upstreams
	live := g.sets[:0]
	for _, w := range g.sets {
		if us := w.Value(); us != nil {
			live = append(live, w)
			tables = append(tables, us)
		}
	}
	clear(g.sets[len(live):])
	g.sets = live
	g.mu.Unlock()
	by := map[string]int64{}
	for _, us := range tables {
		us.each(func(s *upState) {
			v := int64(0)
			if s.gate.State() != upstream.Ready {
				v = 1
			}
			by[s.label] = max(by[s.label], v)
		})
	}
	return by
}

// admit lets the call's next attempt go, or ends the call: first is its
// first attempt. It returns a response for the call when the server's
// pause outlasts the call's deadline (the answer held for it), an
// *UnavailableError when the upstream is down or the call is shed, an
// ExhaustedError when a retry is refused because the upstream sheds load,
// or the context's error when a wait for ready ended with it.
func (c *call) admit(first bool) (*http.Response, error) {
	u, st := c.up, c.st
	var probe bool
	if !st.t.DisableFailFast {
		// (A probe's retry passes the gate too: a probe is one attempt,
		// and the pace of probes is the gate's.) The call's own probe,
		// if its last attempt was one, ends first: its attempt ended
		// without an answer that decided, and a paused gate would
		// otherwise have this retry wait for the outcome of its own
		// probe (for ever, without a deadline).
		c.endProbe()
		c.probe, c.scopeProbe = upstream.Pass{}, upstream.Pass{}
		if u.scopes.paused.Load() > 0 {
			// A scope of the upstream is paused (a 429): the call's
			// own, maybe. (Not looked up on the happy path.) The
			// scope first, then the host: a call that waits for its
			// scope's pause must not hold the host's probe meanwhile
			// (the host's other calls would wait for a probe that
			// does not go).
			if resp, err := c.admitScope(first); err != nil || resp != nil {
				return resp, err
			}
		}
		pass, err := u.gate.Enter(c.ctx, upstream.Options{WaitForReady: c.lim.waitForReady || upstream.WaitsForReady(c.ctx), Budget: st.policy.Budget})
		if err != nil {
			// The scope's probe, if the call had it, goes to the
			// scope's next call.
			c.scopeProbe.Done()
			c.scopeProbe = upstream.Pass{}
			var ue *UnavailableError
			if !errors.As(err, &ue) {
				return nil, err
			}
			if ue.Reason == upstream.ReasonPaused && first {
				if resp := u.heldAnswer(c.req, ue); resp != nil {
					st.tel.notAttempted(c.ctx, c.req, otelx.ReasonRetryAfter, ue, u.label)
					return resp, nil
				}
			}
			if first {
				st.tel.notAttempted(c.ctx, c.req, otelx.ReasonUnavailable, ue, u.label)
			}
			return nil, ue
		}
		if pass.Probe() {
			c.probe = pass
		}
		probe = pass.Probe() || c.scopeProbe.Probe()
	}
	// The last attempt's admission count, if it ended unanswered, is
	// done with (this attempt's answer is its own).
	c.queued.Store(false)
	if st.t.DisableLoadShedding || probe {
		return nil, nil
	}
	now := st.roughNow()
	if int(u.queued.Load()-u.dialing.Load()) >= st.queueSignal {
		// Calls already queue for a conn (MaxConnsPerHost, held by slow
		// answers): this call would wait behind them, most likely until
		// its deadline. (Tries that wait for dials under way are not
		// queued behind the cap: a burst on a slow but healthy network
		// waits for its connects, and it is no overload; nor is a queue
		// that stood for less than queueStands, such as the calls a
		// pause released at once.) The throttle counts a standing queue
		// as what it is, a request the upstream does not keep up with,
		// when the call arrives — not when the queued calls time out,
		// seconds later (an answer-time count cannot see them; an
		// admission-time count of every request would take long polls
		// for overload). The arrival is counted before the throttle
		// decides on the call, and a call it then refuses counts once
		// more, as every refusal does: an arrival behind a standing
		// queue weighs twice when refused. That is the rule's weight
		// for a queue, measured: counted once, 23–30 of 240 calls of
		// TestShedSlowRefusalsQueue still waited in the queue to their
		// deadline (the control: 170); counted so, at most an eighth.
		// A call that goes settles at its answer (queued): one request.
		u.queueSince.CompareAndSwap(0, now)
		if now-u.queueSince.Load() >= int64(queueStands) {
			u.thr.Record(now, true)
			c.queued.Store(true)
		}
	} else if u.queueSince.Load() != 0 {
		u.queueSince.Store(0)
	}
	if first {
		if !u.thr.Allow(now) {
			c.queued.Store(false) // refused: no answer to settle
			err := u.thr.Rejected(u.name, nil)
			st.tel.notAttempted(c.ctx, c.req, otelx.ReasonShed, err, u.label)
			return nil, err
		}
		return nil, nil
	}
	if u.thr.Shedding(now) {
		// Retries go first: refused as a budget refuses them (the call
		// ends with an ExhaustedError; lifeline.throttled counts calls
		// not attempted, not retries).
		c.queued.Store(false)
		return nil, u.thr.Rejected(u.name, nil)
	}
	return nil, nil
}

// admitScope passes the call through its scope's gate when its scope is
// paused: it waits for the pause's end, or ends with the answer held for
// the scope (or the *UnavailableError, or its context's error), as admit
// does for the host. admit calls it before the host's gate.
func (c *call) admitScope(first bool) (*http.Response, error) {
	u, st := c.up, c.st
	sc := c.findScope(c.scopeKey(), st.roughNow())
	if sc == nil {
		return nil, nil
	}
	c.scope = sc
	pass, err := sc.gate.Enter(c.ctx, upstream.Options{})
	if err == nil {
		if pass.Probe() {
			c.scopeProbe = pass
		}
		return nil, nil
	}
	var ue *UnavailableError
	if !errors.As(err, &ue) {
		return nil, err
	}
	if first {
		sc.mu.Lock()
		code := sc.heldCode
		sc.mu.Unlock()
		if resp := heldResponse(c.req, code, ue); resp != nil {
			st.tel.notAttempted(c.ctx, c.req, otelx.ReasonRetryAfter, ue, u.label)
			return resp, nil
		}
		st.tel.notAttempted(c.ctx, c.req, otelx.ReasonUnavailable, ue, u.label)
	}
	return nil, ue
}

// shedding reports whether no hedge may start for the call: its
// upstream sheds load now (hedges and retries go first), or the call is
// the probe of its upstream's or its scope's pause or outage (one
// request tests it: a hedge would be a second at a server that asked to
// be left alone).
func (c *call) shedding() bool {
	if c.up == nil {
		return false
	}
	return c.probe.Probe() || c.scopeProbe.Probe() || !c.st.t.DisableLoadShedding && c.up.thr.Shedding(c.st.roughNow())
}

// heldAnswer is the answer the server's pause holds for a call whose
// deadline ends before the pause does: the pausing answer's status, a
// header of Retry-After alone (the time left), an empty body, marked for
// [Exhausted] (zero attempts: the Transport's final word). Nil when no
// answer is held.
//
// None of the pausing answer's header fields is copied: that answer was
// another caller's, on another path perhaps, and its fields are that
// caller's (Set-Cookie, which an http.Client's Jar would store for this
// caller; WWW-Authenticate; a per-token quota; a request id).
func (s *upState) heldAnswer(req *http.Request, ue *UnavailableError) *http.Response {
	s.mu.Lock()
	code := s.heldCode
	s.mu.Unlock()
	return heldResponse(req, code, ue)
}

// heldResponse is the held answer of status code for req (nil when code
// is 0): see heldAnswer.
func heldResponse(req *http.Request, code int, ue *UnavailableError) *http.Response {
	if code == 0 {
		return nil
	}
	secs := int64(math.Ceil(time.Until(ue.Retry).Seconds()))
	h := http.Header{"Retry-After": {strconv.FormatInt(max(secs, 0), 10)}}
	resp := &http.Response{
		Status:     strconv.Itoa(code) + " " + http.StatusText(code),
		StatusCode: code,
		Proto:      "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
		Header:  h,
		Body:    http.NoBody,
		Request: req,
	}
	markExhausted(resp, &retry.ExhaustedError{Attempts: 0, Last: ue, Cause: ue})
	return resp
}

// answered feeds an answer to the upstream's state: any answer shows it
// reachable, a 429 (or a 503 with Retry-After) pauses it, and the
// throttle counts an accept unless the status is an overload signal. An
// answer that pauses the upstream is not the throttle's: the pause paces
// every call already, and the throttle would go on shedding the calls the
// pause released.
func (c *call) answered(resp *http.Response) {
	u, st := c.up, c.st
	if u == nil {
		return
	}
	code := resp.StatusCode
	if st.t.DisableFailFast || !c.pauses(resp) {
		if !st.t.DisableLoadShedding {
			c.record(retryableStatus(code))
		}
		if !st.t.DisableFailFast {
			// Any answer shows the upstream reachable; but one to a
			// call admitted before the server's pause (in flight when
			// it came) does not end the advised wait: only the pause's
			// probe, or an answer after it, reopens it.
			if c.probe.Probe() || !pauseInForce(&u.gate) {
				u.gate.Success()
			} else {
				u.gate.Answered() // it excuses a first-byte failure all the same
			}
			if sc := c.scope; sc != nil {
				sc.answered(c.scopeProbe.Probe())
			} else if u.scopes.paused.Load() > 0 {
				if sc := c.findScope(c.answerScope(resp), st.roughNow()); sc != nil {
					sc.answered(false)
				}
			}
		}
	}
}

// record feeds an attempt's outcome to the throttle: one request per
// attempt, so an attempt counted as overload when it was admitted behind a
// standing queue only settles (an accept, or nothing more).
func (c *call) record(overload bool) {
	now := c.st.roughNow()
	if c.queued.Swap(false) {
		c.up.thr.Settle(now, overload)
		return
	}
	c.up.thr.Record(now, overload)
}

// pauses pauses the upstream when resp asks for it — a 429, or a 503 with
// a Retry-After — and reports whether it did. A 429 pauses the call's
// scope (its path and Authorization): the host only when hostScopes
// scopes are paused at once, when the scope table has no room, or when
// the host is paused already (the 429 answers a probe of the host's
// pause: the host-wide limit goes on). A 503 speaks for the server: it
// pauses the host.
func (c *call) pauses(resp *http.Response) bool {
	u, code := c.up, resp.StatusCode
	if code == http.StatusTooManyRequests || code == http.StatusServiceUnavailable {
		d, ok := RetryAfter(resp)
		if code == http.StatusTooManyRequests && !ok || ok && d > 0 {
			if !ok {
				d = 0 // none given: the gate's own pause, doubling
			}
			// The pause paces the calls of others: the Transport's
			// cap, not this call's own (CallOptions may allow a
			// background job to wait an hour; it must not make every
			// caller of the host wait as long). No cap (negative) for
			// the Transport's own retries: others are not paused
			// longer than the default cap.
			limit := c.st.policy.MaxRetryAfter
			if limit <= 0 {
				limit = retry.DefaultMaxRetryAfter
			}
			if code == http.StatusTooManyRequests {
				host := u.gate.Current() == upstream.Paused
				if !u.scopes.pause(c.pauseScope(resp), u.name, code, d, limit, c.st.roughNow()) && !host {
					// The server answered: the host is reachable, as
					// any answer shows (and its gate counts the answer
					// for the first-byte failures it excuses).
					u.gate.Success()
					return true
				}
			}
			u.mu.Lock()
			u.heldCode = code
			u.mu.Unlock()
			u.gate.Pause(d, limit)
			return true
		}
	}
	return false
}

// failed feeds a try's failure to the upstream's state: the Transport's
// first-byte limit counts against reachability, and it and a reset are
// overload signals for the throttle. A dial's failure is the dial hook's
// (dialHook); a caller's cancel and a hedge that lost are nothing. A
// first-byte failure of tr counts against reachability unless an answer
// of the upstream since tr's request was written excuses it, one answer
// one failure (FailureSince).
func (c *call) failed(tr *try, err error, firstByte bool) {
	u, st := c.up, c.st
	if u == nil {
		return
	}
	overload := firstByte || errors.Is(err, syscall.ECONNRESET)
	if overload && !st.t.DisableLoadShedding {
		c.record(true)
	}
	if firstByte && !st.t.DisableFailFast {
		u.gate.FailureSinceDowns(tr.credit.Load(), tr.downs.Load(), err)
	}
}

// dialStart notes a dial of the call's upstream for its gate; the returned
// function ends it with the dial's outcome.
func (c *call) dialStart(d *dialing) func(error) {
	u := c.up
	if u == nil || c.st.t.DisableFailFast {
		return nil
	}
	gd := u.gate.DialStart(func() error {
		d.mu.Lock()
		defer d.mu.Unlock()
		return &dial.Error{Phase: d.phase, Network: d.network, Addr: d.addr, Peer: d.peer, Err: errEstablishHangs}
	})
	return func(err error) {
		switch {
		case err == nil:
			gd.Established()
		case errors.Is(err, context.Canceled):
			gd.Abandoned()
		default:
			gd.Failed(err)
		}
	}
}

// isFirstByte reports whether err is the Transport's own first-byte
// timeout.
func isFirstByte(err error) bool {
	var te *TimeoutError
	return errors.As(err, &te) && te.Phase == "first_byte"
}

// errEstablishHangs is the cause in the *dial.Error that stands for dials
// still pending when their upstream was found hanging.
var errEstablishHangs = &hangError{}

type hangError struct{}

func (*hangError) Error() string {
	return "establishment pending far beyond the upstream's usual time (black hole?)"
}
func (*hangError) Timeout() bool   { return true }
func (*hangError) Temporary() bool { return true }

// endProbe counts the call's probe, if it was one, and releases it.
func (c *call) endProbe() {
	if c.scopeProbe.Probe() {
		outcome := "failed"
		if c.scope.gate.State() == upstream.Ready {
			outcome = otelx.OutcomeOK
		}
		c.st.tel.probed(c.ctx, outcome)
		c.scopeProbe.Done()
		c.scopeProbe = upstream.Pass{}
	}
	if !c.probe.Probe() {
		return
	}
	outcome := "failed"
	if c.up.gate.State() == upstream.Ready {
		outcome = otelx.OutcomeOK
	}
	c.st.tel.probed(c.ctx, outcome)
	c.probe.Done()
}

// notAttempted records a call that was not attempted: one client span with
// error.type and lifeline.not_attempted, and lifeline.throttled.
func (t *telemetry) notAttempted(ctx context.Context, req *http.Request, reason string, err error, label string) {
	t.throttled(ctx, reason, label)
	if t.tracer == nil {
		return
	}
	_, span := t.startSpan(ctx, req, 0)
	if span.IsRecording() {
		span.SetAttributes(otelx.KeyNotAttempted.String(reason), otelx.ErrorType(err))
		span.SetStatus(codes.Error, otelx.ErrorTypeOf(err))
	}
	span.End()
}

func (t *telemetry) throttled(ctx context.Context, reason, label string) {
	if t.up.Throttled.Enabled(ctx) {
		t.up.Throttled.Add(ctx, 1, metric.WithAttributes(otelx.KeyThrottleReason.String(reason), otelx.ServerAddress(label)))
	}
}

func (t *telemetry) probed(ctx context.Context, outcome string) {
	if t.up.Probes.Enabled(ctx) {
		t.up.Probes.Add(ctx, 1, metric.WithAttributes(otelx.KeyOutcome.String(outcome)))
	}
}
