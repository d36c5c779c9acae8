package pool

import (
	"context"
	"errors"
	"log/slog"
	"math"
	"sync"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/lifeline-go/lifeline/internal/otelx"
	"github.com/lifeline-go/lifeline/internal/upstream"
)

// UnavailableError is the error of an Acquire that the pool did not try to
// dial for: its upstream is known down (Reason "down": dials failed
// upstream.FailureThreshold (5) times in a row, or 3 of them hang far
// beyond the upstream's usual time) and no idle conn was there to serve.
// Last is the last real dial failure, so errors.As to a *dial.Error still
// finds it when Config.Dial returns one (when the upstream went down for
// dials that hang, a timeout error of the pool's own, until one of them
// ends). It matches [ErrUnavailable],
// unwraps to Last, and its Retryable is false: a retry loop around Acquire
// does not spin on it. Its text names the pool (Config.Name, or "pool"),
// never an address the Dial function keeps to itself. It is the same type
// as transport.UnavailableError: errors.As works with either name.
type UnavailableError = upstream.UnavailableError

// ErrUnavailable is matched (errors.Is) by every [*UnavailableError]: the
// Acquire failed fast, without a dial.
var ErrUnavailable = upstream.ErrUnavailable

// WaitForReady returns a copy of ctx whose Acquire calls wait, within ctx
// (or AcquireTimeout when ctx has no deadline), for an upstream known down
// to come back instead of failing at once with an [*UnavailableError]: a
// startup path, a long job. A waiting Acquire becomes the next probe when
// it is due (a failed probe does not end it: it waits on), and every one
// of them is woken by the first dial that succeeds. It stays in the queue
// while it waits: a conn released meanwhile, or a probe's, is handed to it
// in turn. With Config.DisableFailFast it changes nothing.
func WaitForReady(ctx context.Context) context.Context {
	return upstream.WithWaitForReady(ctx)
}

// gateLabel is the pool's name in the gate's errors and the bounded
// server.address of its upstream metrics.
func gateLabel(name string) string {
	if name == "" {
		return "pool"
	}
	return name
}

// asked is a context already ended: Enter with it answers at once (the
// pool's gate is never Paused, so it never waits), which lets the pool ask
// its gate under p.mu.
var asked = func() context.Context {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	return ctx
}()

// initGate sets up the pool's gate (nil when Config.DisableFailFast).
func (p *Pool) initGate(cfg *Config) {
	if cfg.DisableFailFast {
		return
	}
	p.gate = &upstream.Gate{Upstream: gateLabel(cfg.Name)}
	p.gate.OnTransition(p.transition)
}

// transition follows a change of the gate's state: downSig at once, and a
// record for the Logger, queued (the gate gives the change on the goroutine
// that made it, which may hold p.mu or be inside a metric collection: the
// handler runs on the queue's goroutine). It takes no pool lock and calls
// no meter.
func (p *Pool) transition(from, to upstream.State) {
	p.downSig.set(to != upstream.Ready)
	if p.log == nil || p.closeCtx.Err() != nil {
		return
	}
	msg := "lifeline: pool upstream ready again"
	var last error
	if to == upstream.Down {
		msg = "lifeline: pool upstream down: acquires that need a dial fail fast, probes test it"
		last = p.gate.LastLocked() // only while the gate gives the change
	}
	// The kind names the pool: pools sharing a Logger (so its limit) each
	// get their own record of going down, not one for the first of them.
	p.log.Failure(context.Background(), "pool.upstream."+to.String()+":"+p.gate.Upstream, msg, last,
		slog.String("pool", p.name), slog.String("from", from.String()))
}

// downSignal tells the dials waiting for a DialRate token that the
// upstream went down (waitToken): a channel closed while it is down and
// replaced by an open one when it is back.
type downSignal struct {
	mu   sync.Mutex
	ch   chan struct{}
	down bool
}

// wait returns the channel closed while the upstream is down.
func (s *downSignal) wait() <-chan struct{} {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ch == nil {
		s.ch = make(chan struct{})
		if s.down {
			close(s.ch)
		}
	}
	return s.ch
}

// set follows the gate's state (transition).
func (s *downSignal) set(down bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if down == s.down {
		return
	}
	s.down = down
	if down && s.ch != nil {
		close(s.ch)
	} else {
		s.ch = nil
	}
}

// admitDialLocked asks the gate whether a new dial may start now: yes when
// the upstream is Ready or the dial is admitted as its next probe (probe),
// else the *UnavailableError of the calls that would have waited for it.
func (p *Pool) admitDialLocked() (probe bool, err error) {
	if p.gate == nil {
		return false, nil
	}
	pass, err := p.gate.Enter(asked, upstream.Options{})
	if err != nil {
		return false, err
	}
	return pass.Probe(), nil
}

// downLocked reports whether the gate holds the upstream down now.
func (p *Pool) downLocked() bool {
	return p.gate != nil && p.gate.State() != upstream.Ready
}

// bounceLocked takes out of the queue, while the upstream is down, the
// waiters that no dial in flight is for and hands each the
// *UnavailableError: fail fast, or to the gate for a waiter that waits for
// ready. Dials serve the oldest waiters first; a dial that is not a probe
// is for a waiter that was there when the upstream went down (it was not
// known then), a probe for one that was there when the probe started: a
// later waiter does not wait for a dial its Acquire did not start after
// the upstream was known down, a dial whose own caller gave up on it and
// which, in a black hole, hangs to its DialTimeout. Waiters parked at the
// gate, or whose probe the gate let through is out, stay.
func (p *Pool) bounceLocked() {
	s := p.gate.Snapshot()
	err := &UnavailableError{Upstream: p.gate.Upstream, Reason: upstream.ReasonDown,
		Since: s.Since, Retry: s.NextProbe, Last: s.Last}
	dials := p.dialing - len(p.probes) // not probes: started before the upstream was known down
	probes := p.probes                 // in the order they started
	for w := p.waiters.head; w != nil; {
		next := w.next
		switch {
		case w.probe != 0 || w.parked:
		case dials > 0 && w.downs < s.Downs: // queued before this outage
			dials--
		default:
			for len(probes) > 0 && probes[0] < w.seq {
				probes = probes[1:] // started before w came: for older waiters
			}
			if len(probes) > 0 {
				probes = probes[1:]
				break
			}
			p.waiters.remove(w)
			w.ch <- acquireResult{err: err, bounced: true}
		}
		w = next
	}
	p.nwait.Store(int64(p.waiters.n))
}

// probesOutLocked counts the probes in flight that are for a waiter still
// queued: those started after the oldest of them came (bounceLocked's
// rule). A probe whose waiters all left (one that hangs in a black hole,
// its caller handed another dial's failure) is for nobody, and must not
// hold back the probe of a waiter for ready that came after it.
func (p *Pool) probesOutLocked() int {
	oldest := uint64(math.MaxUint64)
	for w := p.waiters.head; w != nil; w = w.next {
		oldest = min(oldest, w.seq)
	}
	n := 0
	for _, s := range p.probes {
		if s > oldest {
			n++
		}
	}
	return n
}

// dialGated is the gate's view of one dial: DialStart before Config.Dial,
// its outcome after. A nil *dialGated (fail fast off) does nothing.
type dialGated struct {
	d     *upstream.Dial
	probe bool
}

func (p *Pool) gateDialStart(probe bool) *dialGated {
	if p.gate == nil {
		return nil
	}
	return &dialGated{d: p.gate.DialStart(p.hangError), probe: probe}
}

// hangError stands for the dials pending when the pool's upstream was
// found hanging.
func (p *Pool) hangError() error { return errEstablishHangs }

var errEstablishHangs error = &hangError{}

type hangError struct{}

func (*hangError) Error() string {
	return "pool: dial pending far beyond the upstream's usual time (black hole?)"
}
func (*hangError) Timeout() bool   { return true }
func (*hangError) Temporary() bool { return true }

// end feeds the dial's outcome to the gate: a success re-opens it, a
// failure counts, and a dial canceled by Close tells nothing.
func (g *dialGated) end(p *Pool, err error) {
	if g == nil {
		return
	}
	switch {
	case err == nil:
		g.d.Established()
	case errors.Is(err, context.Canceled) || p.closeCtx.Err() != nil:
		g.d.Abandoned()
	default:
		g.d.Failed(err)
	}
	if g.probe {
		outcome := "failed"
		if err == nil {
			outcome = otelx.OutcomeOK
		}
		p.tel.probed(outcome)
	}
}

// downGauge is the callback of one lifeline.upstream.down instrument (pool
// scope): one per meter provider, over every pool that records through it.
type downGauge struct {
	up    *otelx.Upstream
	mu    sync.Mutex
	pools map[*Pool]struct{}
	reg   metric.Registration // set once, by the first pool
}

// downGauges holds a downGauge per meter provider (comparable ones; a pool
// with another gets its own, unregistered by Close).
var downGauges otelx.Memo[metric.MeterProvider, *downGauge]

func newDownGauge(mp metric.MeterProvider) *downGauge {
	return &downGauge{up: otelx.UpstreamInstruments(mp, otelx.ScopePool), pools: map[*Pool]struct{}{}}
}

// downGaugeFor returns the gauge of mp (nil: the global provider) and
// whether the pool owns it alone.
func downGaugeFor(mp metric.MeterProvider) (g *downGauge, own bool) {
	if mp == nil {
		mp = otel.GetMeterProvider()
	}
	if !otelx.Comparable(mp) {
		return newDownGauge(mp), true
	}
	return downGauges.Get(mp, func() *downGauge { return newDownGauge(mp) }), false
}

// add makes the gauge observe p, registering its callback on first use.
func (g *downGauge) add(p *Pool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.pools[p] = struct{}{}
	if g.reg == nil {
		g.reg, _ = g.up.Meter.RegisterCallback(func(_ context.Context, o metric.Observer) error {
			for label, v := range g.observe() {
				o.ObserveInt64(g.up.Down, v, metric.WithAttributes(otelx.ServerAddress(label)))
			}
			return nil
		}, g.up.Down)
	}
}

// remove stops observing p (Close).
func (g *downGauge) remove(p *Pool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	delete(g.pools, p)
}

// observe returns 1 by label for the pools whose upstream is down, 0 for
// the others (pools with the same label: the largest).
func (g *downGauge) observe() map[string]int64 {
	g.mu.Lock()
	defer g.mu.Unlock()
	by := make(map[string]int64, len(g.pools))
	for p := range g.pools {
		v := int64(0)
		if p.gate.State() != upstream.Ready {
			v = 1
		}
		by[p.gate.Upstream] = max(by[p.gate.Upstream], v)
	}
	return by
}

// upTelemetry is a pool's share of the upstream instruments.
type upTelemetry struct {
	gauge     *downGauge
	ownGauge  bool
	throttled []metric.AddOption
	probeOpts [2][]metric.AddOption // ok, failed
}

func (t *telemetry) initUpstream(p *Pool, cfg *Config) {
	if p.gate == nil {
		return
	}
	u := &t.up
	u.gauge, u.ownGauge = downGaugeFor(cfg.MeterProvider)
	label := otelx.ServerAddress(p.gate.Upstream)
	u.throttled = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(
		otelx.KeyThrottleReason.String(otelx.ReasonUnavailable), label))}
	u.probeOpts[0] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String(otelx.OutcomeOK)))}
	u.probeOpts[1] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(otelx.KeyOutcome.String("failed")))}
	u.gauge.add(p)
}

func (t *telemetry) closeUpstream(p *Pool) {
	u := &t.up
	if u.gauge == nil {
		return
	}
	u.gauge.remove(p)
	if u.ownGauge && u.gauge.reg != nil {
		_ = u.gauge.reg.Unregister()
	}
}

// throttled counts an Acquire failed fast (lifeline.throttled, reason
// unavailable).
func (t *telemetry) throttled() {
	if u := &t.up; u.gauge != nil {
		u.gauge.up.Throttled.Add(context.Background(), 1, u.throttled...)
	}
}

// probed counts a probe dial by outcome (lifeline.upstream.probes).
func (t *telemetry) probed(outcome string) {
	u := &t.up
	if u.gauge == nil {
		return
	}
	i := 1
	if outcome == otelx.OutcomeOK {
		i = 0
	}
	u.gauge.up.Probes.Add(context.Background(), 1, u.probeOpts[i]...)
}
