package upstream

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// prober is a background probe for the tests: it takes took, fails with
// errRefused until up, and records when each probe began.
type prober struct {
	mu       sync.Mutex
	took     time.Duration
	up       bool
	starts   []time.Time
	out, max int
}

func (p *prober) probe() error {
	p.mu.Lock()
	p.starts = append(p.starts, time.Now())
	p.out++
	p.max = max(p.max, p.out)
	took := p.took
	p.mu.Unlock()
	time.Sleep(took)
	p.mu.Lock()
	defer p.mu.Unlock()
	p.out--
	if p.up {
		return nil
	}
	return fmt.Errorf("probe: %w", errRefused)
}

func (p *prober) count() int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.starts)
}

// TestGateBackgroundProbe: with a prober, a Down gate fails every call at
// once (none is admitted as a probe), probes by itself at the gate's pace
// (about ProbeInterval apart, one at a time), and the probe that finds the
// upstream back re-opens it and releases the calls waiting for ready at
// once.
func TestGateBackgroundProbe(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &prober{took: 100 * time.Millisecond}
		g := &Gate{Upstream: "api.internal:443"}
		g.SetProber(p.probe, nil)
		failDials(g, FailureThreshold)
		if g.State() != Down {
			t.Fatalf("state %v, want down", g.State())
		}
		downAt := time.Now()

		// A caller that waits for ready, from 2s.
		var waited time.Time
		var wg sync.WaitGroup
		wg.Go(func() {
			time.Sleep(2 * time.Second)
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			defer cancel()
			pass, err := g.Enter(ctx, Options{WaitForReady: true})
			if err != nil || pass.Probe() {
				t.Errorf("waiting call: probe %v, %v; want admitted, no probe", pass.Probe(), err)
			}
			waited = time.Now()
		})
		// Calls every 50ms for 5s: each fails at once, none is a probe.
		for range 100 {
			start := time.Now()
			pass, err := g.Enter(t.Context(), Options{})
			var ue *UnavailableError
			if !errors.As(err, &ue) || ue.Reason != ReasonDown || pass.Probe() {
				t.Fatalf("call while down: probe %v, %v; want failed at once", pass.Probe(), err)
			}
			if !errors.Is(err, errRefused) {
				t.Fatalf("call while down: %v, want the last failure inside", err)
			}
			if time.Since(start) != 0 {
				t.Fatalf("call while down took %v", time.Since(start))
			}
			time.Sleep(50 * time.Millisecond)
		}
		p.mu.Lock()
		starts := append([]time.Time(nil), p.starts...)
		p.up = true
		p.mu.Unlock()
		if len(starts) < 4 || len(starts) > 6 {
			t.Fatalf("%d probes in 5s of outage, want about one a second", len(starts))
		}
		prev := downAt
		for _, s := range starts {
			gap := s.Sub(prev)
			if gap < time.Duration(float64(ProbeInterval)*(1-ProbeJitter)) || gap > time.Duration(float64(ProbeInterval)*(1+ProbeJitter))+p.took {
				t.Errorf("probe %v after the previous one (or the fall), want ~%v", gap, ProbeInterval)
			}
			prev = s
		}
		// The next probe finds the upstream back: the gate opens and the
		// waiting call goes at that instant.
		wg.Wait()
		p.mu.Lock()
		last := p.starts[len(p.starts)-1]
		p.mu.Unlock()
		if g.State() != Ready {
			t.Fatalf("state %v after a probe succeeded, want ready", g.State())
		}
		if got := waited.Sub(last); got != p.took {
			t.Errorf("the waiting call went %v after the probe began, want as it ended (%v)", got, p.took)
		}
		if p.max != 1 {
			t.Errorf("%d probes at once, want 1", p.max)
		}
		if _, err := g.Enter(t.Context(), Options{}); err != nil {
			t.Fatalf("after recovery: %v", err)
		}
	})
}

// TestGateBackgroundProbeOneAtATime: a probe that outlasts the interval
// (a black hole's connect limit) is the only one under way; the next goes
// when it has ended and is due.
func TestGateBackgroundProbeOneAtATime(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &prober{took: 5 * time.Second}
		g := &Gate{Upstream: "api.internal:443"}
		g.SetProber(p.probe, nil)
		failDials(g, FailureThreshold)
		for range 200 {
			_, _ = g.Enter(t.Context(), Options{})
			time.Sleep(50 * time.Millisecond)
		}
		synctest.Wait()
		if p.max != 1 {
			t.Errorf("%d probes at once, want 1", p.max)
		}
		// 10s: a probe at ~1s (to 6s), the next at once (to 11s).
		if n := p.count(); n != 2 {
			t.Errorf("%d probes in 10s of 5s probes, want 2", n)
		}
		// End the outage, and the probe under way.
		p.mu.Lock()
		p.up = true
		p.mu.Unlock()
		time.Sleep(p.took)
		synctest.Wait()
	})
}

// TestGateBackgroundProbeNeedsCallers: a gate nobody calls stops probing
// (a Transport dropped while its upstream is down owns nothing for long):
// at most one probe after the last call; the next call re-arms it, and a
// call waiting for ready keeps the probes going.
func TestGateBackgroundProbeNeedsCallers(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &prober{took: 10 * time.Millisecond}
		g := &Gate{Upstream: "api.internal:443"}
		g.SetProber(p.probe, nil)
		failDials(g, FailureThreshold)
		time.Sleep(time.Minute)
		synctest.Wait()
		if n := p.count(); n != 1 {
			t.Fatalf("%d probes in a minute with no call, want 1", n)
		}
		// A call re-arms the probe: due already, it goes at once.
		_, _ = g.Enter(t.Context(), Options{})
		synctest.Wait()
		if n := p.count(); n != 2 {
			t.Fatalf("%d probes after a call, want 2", n)
		}
		// A call that waits for ready keeps them going.
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		if _, err := g.Enter(ctx, Options{WaitForReady: true}); !errors.Is(err, context.DeadlineExceeded) {
			t.Fatalf("waiting call: %v, want its deadline", err)
		}
		// (A minute into the outage: 1.6s, 2.56s, 4.1s apart.)
		if n := p.count(); n < 2+3 {
			t.Fatalf("%d probes by the end of a 10s wait for ready, want 3 more", n-2)
		}
		n := p.count()
		time.Sleep(time.Minute)
		synctest.Wait()
		if m := p.count(); m > n+1 {
			t.Fatalf("%d probes after the waiting call gave up, want at most 1", m-n)
		}
		time.Sleep(time.Second)
	})
}

// refuser is a budget that refuses every token.
type refuser struct{ asked int }

func (r *refuser) Withdraw() bool { r.asked++; return false }

// TestGateBackgroundProbeBudget: a probe is paid from the budget; a
// refused token defers it by an interval and the call still fails at once.
func TestGateBackgroundProbeBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		p := &prober{took: 10 * time.Millisecond}
		b := &refuser{}
		g := &Gate{Upstream: "api.internal:443"}
		g.SetProber(p.probe, b)
		failDials(g, FailureThreshold)
		for range 100 {
			if _, err := g.Enter(t.Context(), Options{}); err == nil {
				t.Fatal("a call went through a down gate")
			}
			time.Sleep(50 * time.Millisecond)
		}
		synctest.Wait()
		if n := p.count(); n != 0 {
			t.Errorf("%d probes with a budget that refuses, want 0", n)
		}
		if b.asked < 3 || b.asked > 6 {
			t.Errorf("budget asked %d times in 5s, want about once a second", b.asked)
		}
		g.Success()
	})
}
