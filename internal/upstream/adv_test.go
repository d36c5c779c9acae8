package upstream

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"
)

// TestAdvRefusedProbesDoNotHoldDownForever: a Down gate whose probes are
// all refused by the caller's budget (a budget without time-based refill,
// drained: calls that fail fast deposit nothing into it). A refused probe
// may delay the recovery, never forbid it: a probe still goes at least
// every MaxProbeInterval, and no more often.
func TestAdvRefusedProbesDoNotHoldDownForever(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		failDials(g, FailureThreshold)
		down := time.Now()
		b := &fakeBudget{} // refuses every token
		var probes []time.Duration
		for time.Since(down) < 2*time.Minute+time.Second {
			p, err := g.Enter(t.Context(), Options{Budget: b})
			if err == nil {
				if !p.Probe() {
					t.Fatal("admitted a call that is not a probe while down")
				}
				probes = append(probes, time.Since(down))
				g.DialStart(nil).Failed(errRefused) // the upstream is still down
				p.Done()
			}
			time.Sleep(100 * time.Millisecond)
		}
		t.Logf("unpaid probes at %v", probes)
		if len(probes) == 0 {
			t.Fatal("no probe in 2 minutes: the gate stays down for ever while the budget refuses")
		}
		if probes[0] > MaxProbeInterval+time.Second {
			t.Fatalf("first unpaid probe after %v, want within MaxProbeInterval", probes[0])
		}
		for i := 1; i < len(probes); i++ {
			if d := probes[i] - probes[i-1]; d < MaxProbeInterval {
				t.Fatalf("unpaid probes %v apart, want at most one per %v", d, MaxProbeInterval)
			}
		}
		// The upstream back: the unpaid probe re-opens the gate.
		for {
			p, err := g.Enter(t.Context(), Options{Budget: b})
			if err == nil {
				g.DialStart(nil).Established()
				p.Done()
				break
			}
			time.Sleep(100 * time.Millisecond)
		}
		if g.State() != Ready {
			t.Fatal("not ready after the probe established")
		}
	})
}

// TestAdvColdSlowDialsAreNotHanging: an upstream never reached before, on
// a slow but healthy network (establishment takes 1.2s: a far region's
// DNS, TCP and TLS): three dials pending for 1.2s are its usual time, not
// a black hole. With nothing learnt yet, the suspect time is
// ColdSuspectAfter; once a dial established, it follows the upstream.
func TestAdvColdSlowDialsAreNotHanging(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		var dials []*Dial
		for range HangingThreshold + 2 {
			dials = append(dials, g.DialStart(nil))
		}
		time.Sleep(1200 * time.Millisecond)
		if s := g.State(); s != Ready {
			t.Fatalf("state %v with first dials pending 1.2s, want ready", s)
		}
		for _, d := range dials {
			d.Established()
		}
		// A cold black hole is still seen, later.
		g2 := &Gate{}
		for range HangingThreshold {
			g2.DialStart(nil)
		}
		time.Sleep(ColdSuspectAfter)
		if s := g2.State(); s != Down {
			t.Fatalf("state %v with first dials pending %v, want down", s, ColdSuspectAfter)
		}
	})
}

// TestAdvTransitionMayCallTheGate: OnTransition's function runs without
// the gate's lock: it may read the gate (or call the upstream, whose call
// enters the gate) without deadlocking it, and sees every change in order.
func TestAdvTransitionMayCallTheGate(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		var seen []State
		var lasts []error
		g.OnTransition(func(from, to State) {
			seen = append(seen, to)
			lasts = append(lasts, g.LastLocked())
			_ = g.State()
			_, _ = g.Enter(t.Context(), Options{})
		})
		done := make(chan struct{})
		go func() {
			defer close(done)
			failDials(g, FailureThreshold)
			time.Sleep(2 * time.Second)
			p, err := g.Enter(t.Context(), Options{})
			if err == nil {
				g.Success()
				p.Done()
			}
		}()
		// (Under the gate's lock the function deadlocked here: the
		// transport's TestAdvLogHandlerNotCalledUnderGateLock sees it
		// in real time.)
		<-done
		if len(seen) != 2 || seen[0] != Down || seen[1] != Ready || !errors.Is(lasts[0], errRefused) {
			t.Fatalf("changes %v (last %v), want down (with the dial's error), ready", seen, lasts)
		}
	})
}

// TestAdvWaitForReadyOutlastsARefusingBudget: a call that waits for ready
// asked to wait, within its context, for the upstream to come back; a
// probe its budget refuses (drained by other calls' retries for now) must
// not fail it at once: it goes on waiting, and probes when the budget
// allows.
func TestAdvWaitForReadyOutlastsARefusingBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		failDials(g, FailureThreshold)
		time.Sleep(2 * time.Second) // a probe is due
		b := &laterBudget{}
		done := make(chan struct{})
		go func() {
			defer close(done)
			time.Sleep(3 * time.Second)
			b.ok.Store(true)
		}()
		defer func() { <-done }()
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		defer cancel()
		start := time.Now()
		p, err := g.Enter(ctx, Options{WaitForReady: true, Budget: b})
		if err != nil {
			t.Errorf("after %v: %v, want to wait and probe once the budget allows", time.Since(start), err)
			return
		}
		if !p.Probe() || time.Since(start) < 3*time.Second || time.Since(start) > 4500*time.Millisecond {
			t.Errorf("probe %v after %v, want a probe once the budget allowed (3s)", p.Probe(), time.Since(start))
		}
		p.Done()
	})
}

// laterBudget refuses until ok is set.
type laterBudget struct{ ok atomic.Bool }

func (b *laterBudget) Withdraw() bool { return b.ok.Load() }

// TestAdvEndless429sWithoutAdvice: a server whose daily quota is spent
// answers every call 429 without Retry-After, for hours. Each pause's
// probe gets another 429: the pause doubles up to its cap and must stay
// there — not grow until it overflows (after 34 doublings, about 15
// minutes at a 30s cap) into a pause in the past, which lets every waiting
// call through, one after another, as fast as the server answers.
func TestAdvEndless429sWithoutAdvice(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		const limit = 30 * time.Second
		for i := range 100 {
			g.Pause(0, limit)
			s := g.Snapshot()
			d := time.Until(s.Until)
			if s.State != Paused || d <= 0 || d > limit {
				t.Fatalf("429 number %d: state %v, pause %v, want paused for at most %v", i+1, s.State, d, limit)
			}
			time.Sleep(d)
			// The pause's probe goes (and gets the next 429).
			p, err := g.Enter(t.Context(), Options{})
			if err != nil || !p.Probe() {
				t.Fatalf("429 number %d: after the pause: probe %v, %v", i+1, p.Probe(), err)
			}
			if i == 99 {
				p.Done()
			}
		}
	})
}

// TestAdvPauseWaitIsBounded: five calls without a deadline wait in a
// pause that the server keeps renewing: at each pause's end one of them
// goes as the probe and is answered 429 again. The others fail as calls
// whose deadline ends before the pause once they saw it renewed
// MaxPauseWaits times, instead of waiting for the storm's end (one probe
// per pause: the fifth would wait 5 pauses). Answers in flight that extend
// the pause while they wait are no renewal: they wait it out.
func TestAdvPauseWaitIsBounded(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		g.Pause(time.Second, time.Minute)
		type res struct {
			probe bool
			err   error
			took  time.Duration
		}
		done := make(chan res, 5)
		for range 5 {
			go func() {
				start := time.Now()
				p, err := g.Enter(context.Background(), Options{})
				if err == nil {
					// The probe: the server answers 429 again.
					time.Sleep(10 * time.Millisecond)
					g.Pause(time.Second, time.Minute)
					p.Done()
				}
				done <- res{p.Probe(), err, time.Since(start)}
			}()
		}
		// Answers in flight when the pause began extend it a little.
		time.Sleep(300 * time.Millisecond)
		g.Pause(time.Second, time.Minute)
		time.Sleep(300 * time.Millisecond)
		g.Pause(time.Second, time.Minute)
		for range 5 {
			r := <-done
			t.Logf("probe %v after %v: %v", r.probe, r.took, r.err)
			if r.took < 1600*time.Millisecond {
				t.Errorf("a call ended after %v, before the pause it waited for (1.6s)", r.took)
			}
			if r.took > time.Duration(MaxPauseWaits+1)*time.Second {
				t.Errorf("a call without a deadline waited %v: pause after pause", r.took)
			}
			var ue *UnavailableError
			if !r.probe && (!errors.As(r.err, &ue) || ue.Reason != ReasonPaused) {
				t.Errorf("%v, want the paused error", r.err)
			}
		}
	})
}
