package upstream

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"testing"
	"testing/synctest"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var errRefused = &net.OpError{Op: "dial", Net: "tcp", Err: errors.New("connection refused")}

// failDials fails n dials of g.
func failDials(g *Gate, n int) {
	for range n {
		g.DialStart(nil).Failed(errRefused)
	}
}

func TestGateDownAfterConsecutiveFailures(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{Upstream: "db.internal:5432"}
		failDials(g, FailureThreshold-1)
		if _, err := g.Enter(t.Context(), Options{}); err != nil {
			t.Fatalf("after %d failures: %v, want admitted", FailureThreshold-1, err)
		}
		// A success between resets the count.
		g.Success()
		failDials(g, FailureThreshold-1)
		if g.State() != Ready {
			t.Fatalf("state %v after a success between failures, want ready", g.State())
		}
		// A cancelled dial is no failure.
		g.DialStart(nil).Abandoned()
		failDials(g, 1)
		if g.State() != Down {
			t.Fatalf("state %v after %d consecutive failures, want down", g.State(), FailureThreshold)
		}
		start := time.Now()
		_, err := g.Enter(t.Context(), Options{})
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.Reason != ReasonDown || ue.Upstream != "db.internal:5432" {
			t.Fatalf("Enter: %v, want *UnavailableError down", err)
		}
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrThrottled) || ue.Retryable() || ue.ErrorType() != "unavailable" {
			t.Fatalf("error matching: Is unavailable %v, throttled %v, retryable %v, type %s",
				errors.Is(err, ErrUnavailable), errors.Is(err, ErrThrottled), ue.Retryable(), ue.ErrorType())
		}
		var oe *net.OpError
		if !errors.As(err, &oe) || oe != errRefused {
			t.Fatalf("Last: %v, want the dial's error", ue.Last)
		}
		if time.Since(start) != 0 {
			t.Fatal("Enter waited")
		}
		if ue.Since != start || ue.Retry.Before(start.Add(800*time.Millisecond)) || ue.Retry.After(start.Add(1200*time.Millisecond)) {
			t.Fatalf("since %v retry %v, want now and ~1s later", ue.Since.Sub(start), ue.Retry.Sub(start))
		}
	})
}

func TestGateProbePacing(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		failDials(g, FailureThreshold)
		down := time.Now()
		var probes []time.Duration
		// A call every 10ms for 2 minutes; every probe fails.
		for time.Since(down) < 2*time.Minute {
			p, err := g.Enter(t.Context(), Options{})
			if err == nil {
				if !p.Probe() {
					t.Fatal("admitted a call that is not a probe while down")
				}
				probes = append(probes, time.Since(down))
				failDials(g, 1)
				p.Done()
			}
			time.Sleep(10 * time.Millisecond)
		}
		prev := time.Duration(0)
		var growing time.Duration
		for i, at := range probes {
			gap := at - prev
			prev = at
			switch {
			case at < FastProbing:
				if gap < 790*time.Millisecond || gap > 1210*time.Millisecond {
					t.Errorf("probe %d at %v: gap %v, want 1s ±20%%", i, at, gap)
				}
			default:
				if gap > MaxProbeInterval*12/10+10*time.Millisecond {
					t.Errorf("probe %d at %v: gap %v beyond the cap", i, at, gap)
				}
				growing = max(growing, gap)
			}
		}
		if growing < 10*time.Second {
			t.Errorf("the gaps never grew after %v: largest %v; probes %v", FastProbing, growing, probes)
		}
		// At most one probe per 800ms in the first 30s: ≤ 38; at least 25.
		n := 0
		for _, at := range probes {
			if at < FastProbing {
				n++
			}
		}
		if n < 25 || n > 38 {
			t.Errorf("%d probes in the first %v, want about 30", n, FastProbing)
		}
	})
}

func TestGateSuccessReopensAndWakesWaiters(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		failDials(g, FailureThreshold)
		var wg sync.WaitGroup
		results := make(chan error, 3)
		for range 3 {
			wg.Go(func() {
				ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
				defer cancel()
				p, err := g.Enter(ctx, Options{WaitForReady: true})
				if err == nil && p.Probe() {
					// The probe that finds the upstream back.
					time.Sleep(100 * time.Millisecond)
					g.DialStart(nil).Established()
				}
				p.Done()
				results <- err
			})
		}
		synctest.Wait()
		if len(results) != 0 {
			t.Fatal("a WaitForReady call returned while the gate is down and no probe is due")
		}
		wg.Wait()
		close(results)
		for err := range results {
			if err != nil {
				t.Errorf("WaitForReady call: %v", err)
			}
		}
		if g.State() != Ready || g.hot.Load() != 0 {
			t.Fatalf("state %v hot %d after a success", g.State(), g.hot.Load())
		}
	})
}

func TestGateWaitForReadyBoundedByContext(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		failDials(g, FailureThreshold)
		// The probe slot is taken, and the probe fails: the waiter's
		// deadline ends its wait.
		ctx, cancel := context.WithTimeout(t.Context(), 500*time.Millisecond)
		defer cancel()
		start := time.Now()
		_, err := g.Enter(ctx, Options{WaitForReady: true})
		if !errors.Is(err, context.DeadlineExceeded) || time.Since(start) != 500*time.Millisecond {
			t.Fatalf("Enter: %v after %v, want the deadline after 500ms", err, time.Since(start))
		}
	})
}

func TestGateHangingDials(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		// An upstream reached before (a cold one has ColdSuspectAfter:
		// TestAdvColdSlowDialsAreNotHanging).
		g.DialStart(nil).Established()
		errHang := errors.New("connect pending")
		var dials []*Dial
		for i := range HangingThreshold {
			dials = append(dials, g.DialStart(func() error { return errHang }))
			if i < HangingThreshold-1 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		time.Sleep(MinSuspectAfter - time.Millisecond)
		if g.State() != Ready {
			t.Fatal("down before the youngest dial was pending for the suspect time")
		}
		time.Sleep(time.Millisecond)
		if g.State() != Down {
			t.Fatal("not down with 3 dials pending for 1s")
		}
		_, err := g.Enter(t.Context(), Options{})
		if !errors.Is(err, errHang) {
			t.Fatalf("Enter: %v, want Last the hanging dial's description", err)
		}
		// The hanging dials establish at last: the gate opens.
		dials[0].Established()
		if g.State() != Ready {
			t.Fatal("not ready after a dial established")
		}
		for _, d := range dials[1:] {
			d.Abandoned()
		}
		if g.hot.Load() != 0 {
			t.Fatal("hot with nothing pending")
		}
	})
}

func TestGateHangingFollowsSlowNetwork(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		// A slow network: establishments take 600ms; suspect after 2.4s.
		for range 20 {
			d := g.DialStart(nil)
			time.Sleep(600 * time.Millisecond)
			d.Established()
		}
		for range HangingThreshold {
			g.DialStart(nil)
		}
		time.Sleep(2300 * time.Millisecond)
		if g.State() != Ready {
			t.Fatal("slow dials called hanging before 4× their usual time")
		}
		time.Sleep(200 * time.Millisecond)
		if g.State() != Down {
			t.Fatal("not down after 4× the usual establishment time")
		}
	})
}

func TestGateProbePaidFromBudget(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		failDials(g, FailureThreshold)
		time.Sleep(2 * time.Second)
		b := &fakeBudget{}
		if _, err := g.Enter(t.Context(), Options{Budget: b}); !errors.Is(err, ErrUnavailable) {
			t.Fatalf("refused probe: %v, want unavailable", err)
		}
		b.ok = true
		p, err := g.Enter(t.Context(), Options{Budget: b})
		if err != nil || !p.Probe() || b.taken != 2 {
			t.Fatalf("the next call: probe %v, %v, tokens asked %d", p.Probe(), err, b.taken)
		}
	})
}

type fakeBudget struct {
	ok    bool
	taken int
}

func (b *fakeBudget) Withdraw() bool { b.taken++; return b.ok }

func TestGatePause(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{Upstream: "api:443"}
		g.Pause(2*time.Second, 0)
		start := time.Now()
		// A call whose deadline ends before the pause fails at once.
		short, cancel := context.WithTimeout(t.Context(), time.Second)
		defer cancel()
		_, err := g.Enter(short, Options{})
		var ue *UnavailableError
		if !errors.As(err, &ue) || ue.Reason != ReasonPaused || !ue.Retry.Equal(start.Add(2*time.Second)) {
			t.Fatalf("short call: %v, want paused until +2s", err)
		}
		// Others wait for the end; one probe goes, the rest wait for it.
		type out struct {
			p   Pass
			err error
			at  time.Duration
		}
		outs := make(chan out, 5)
		for range 5 {
			go func() {
				p, err := g.Enter(t.Context(), Options{})
				outs <- out{p, err, time.Since(start)}
			}()
		}
		synctest.Wait()
		if len(outs) != 0 {
			t.Fatal("a call went during the pause")
		}
		time.Sleep(2 * time.Second)
		synctest.Wait()
		if len(outs) != 1 {
			t.Fatalf("%d calls went at the pause's end, want one probe", len(outs))
		}
		probe := <-outs
		if probe.err != nil || !probe.p.Probe() || probe.at != 2*time.Second {
			t.Fatalf("probe: %+v", probe)
		}
		// The probe gets another 429 without advice: paused 1s more.
		g.Pause(0, 0)
		probe.p.Done()
		synctest.Wait()
		if len(outs) != 0 {
			t.Fatal("a call went after the probe's 429")
		}
		time.Sleep(time.Second)
		synctest.Wait()
		if len(outs) != 1 {
			t.Fatalf("%d calls went after the second pause, want one probe", len(outs))
		}
		probe = <-outs
		// That probe's caller gives up: the next waiter probes.
		probe.p.Done()
		synctest.Wait()
		if len(outs) != 1 {
			t.Fatalf("%d calls went after a probe gave up, want one", len(outs))
		}
		probe = <-outs
		if !probe.p.Probe() {
			t.Fatal("not a probe")
		}
		// It succeeds: the rest go.
		g.Success()
		probe.p.Done()
		synctest.Wait()
		if len(outs) != 2 {
			t.Fatalf("%d calls released by the success, want 2", len(outs))
		}
		for range 2 {
			if o := <-outs; o.err != nil || o.p.Probe() {
				t.Fatalf("released call: %+v", o)
			}
		}
	})
}

func TestGatePauseWithoutAdviceDoubles(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{}
		var got []time.Duration
		for range 5 {
			g.Pause(0, 5*time.Second)
			// Answers in flight when the pause began change nothing.
			g.Pause(0, 5*time.Second)
			s := g.Snapshot()
			got = append(got, time.Until(s.Until))
			time.Sleep(time.Until(s.Until))
		}
		want := []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 5 * time.Second, 5 * time.Second}
		for i := range want {
			if got[i] != want[i] {
				t.Fatalf("pauses %v, want %v", got, want)
			}
		}
		g.Success()
		g.Pause(0, 0)
		if s := g.Snapshot(); time.Until(s.Until) != time.Second {
			t.Fatalf("after a success the pause is %v, want 1s again", time.Until(s.Until))
		}
	})
}

func TestGateDownByFirstByteFailures(t *testing.T) {
	g := &Gate{}
	for range FailureThreshold {
		g.Failure(context.DeadlineExceeded)
	}
	if g.State() != Down {
		t.Fatal("not down after first-byte timeouts")
	}
}

// TestGateFailureSinceAnAnswer: first-byte failures of tries that started
// before answers of the upstream do not count (a server that hangs some
// requests answers the others), however many end together, one answer
// excusing one failure (TestAdv28AnAnswerExcusesOneFailure); those of
// tries that started after the last answer do, and take the gate down.
func TestGateFailureSinceAnAnswer(t *testing.T) {
	g := &Gate{}
	seen := g.Credit()
	for range 3 * FailureThreshold {
		g.Success() // answers to other requests, on the fast path
	}
	for range 3 * FailureThreshold {
		g.FailureSince(seen, context.DeadlineExceeded)
	}
	if s := g.State(); s != Ready {
		t.Fatalf("%v after failures of tries that started before an answer, want Ready", s)
	}
	if g.Snapshot().Downs != 0 {
		t.Fatal("counted an outage")
	}
	// A pause (a 429) is an answer too.
	seen = g.Credit()
	g.Pause(time.Millisecond, 0)
	if g.Credit() == seen {
		t.Fatal("a pause is not counted as an answer")
	}
	g.Success()

	// The control: the upstream stopped answering.
	seen = g.Credit()
	for i := range FailureThreshold {
		if s := g.State(); s != Ready {
			t.Fatalf("%v after %d failures, want Ready until %d", s, i, FailureThreshold)
		}
		g.FailureSince(seen, context.DeadlineExceeded)
	}
	if s := g.State(); s != Down {
		t.Fatalf("%v after %d failures with no answer since their tries started, want Down", s, FailureThreshold)
	}
}

func TestGateHappyPathAllocs(t *testing.T) {
	g := &Gate{}
	ctx := context.Background()
	n := testing.AllocsPerRun(1000, func() {
		p, _ := g.Enter(ctx, Options{})
		g.Success()
		p.Done()
	})
	if n != 0 {
		t.Fatalf("%v allocations per happy call", n)
	}
}

func TestGateConcurrent(t *testing.T) {
	g := &Gate{}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(i), 1))
			for range 2000 {
				ctx, cancel := context.WithTimeout(context.Background(), time.Millisecond)
				p, _ := g.Enter(ctx, Options{WaitForReady: r.IntN(2) == 0})
				switch r.IntN(5) {
				case 0:
					g.DialStart(nil).Failed(errRefused)
				case 1:
					g.DialStart(nil).Established()
				case 2:
					g.Pause(time.Duration(r.IntN(3))*time.Millisecond, 0)
				case 3:
					g.Success()
				default:
					g.DialStart(nil).Abandoned()
				}
				p.Done()
				cancel()
			}
		})
	}
	wg.Wait()
}

func BenchmarkGateHappy(b *testing.B) {
	g := &Gate{}
	ctx := context.Background()
	b.ReportAllocs()
	for b.Loop() {
		p, _ := g.Enter(ctx, Options{})
		g.Success()
		p.Done()
	}
}

// Downs orders an outage after what came before it on no clock: in one
// tick (a synctest bubble, a coarse clock) a dial's caller that read Downs
// before the failure that took the gate down still sees it went down after.
func TestGateDownsCountsOutages(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		g := &Gate{Upstream: "db"}
		before := g.Downs()
		failDials(g, FailureThreshold)
		if s := g.Snapshot(); s.State != Down || s.Downs != before+1 || g.Downs() != before+1 || !s.Since.Equal(time.Now()) {
			t.Fatalf("after the outage began: %+v, Downs %d (before %d)", s, g.Downs(), before)
		}
		time.Sleep(2 * time.Second)
		g.Success()
		if g.Downs() != before+1 {
			t.Fatalf("a recovery changed Downs to %d", g.Downs())
		}
		failDials(g, FailureThreshold)
		if g.Downs() != before+2 || g.Snapshot().Downs != before+2 {
			t.Fatalf("second outage: Downs %d, want %d", g.Downs(), before+2)
		}
	})
}

// TestGateCreditAnyOrder: answers excuse as many failures as they number,
// whatever order the failures come in — a later try (a call's own shorter
// FirstByteTimeout) failing first does not take the excuses of the tries
// written before it — and never more. An Answered (an answer to a call
// admitted before a pause) excuses as a Success does, without re-opening.
func TestGateCreditAnyOrder(t *testing.T) {
	g := &Gate{}
	early := g.Credit() // two tries written
	g.Success()
	g.Success()
	late := g.Credit() // a third try written after two answers
	g.Success()
	g.Success()
	// The latest fails first: excused by an answer after it.
	g.FailureSince(late, context.DeadlineExceeded)
	// The two earlier: excused by the answers left.
	g.FailureSince(early, context.DeadlineExceeded)
	g.FailureSince(early, context.DeadlineExceeded)
	if s := g.Snapshot(); s.State != Ready || g.stalls != 0 {
		t.Fatalf("%v with %d stalls: three failures, four answers, want all excused", s.State, g.stalls)
	}
	// One answer left, for a try written before it: then none.
	g.FailureSince(early, context.DeadlineExceeded)
	for i := range FailureThreshold {
		if s := g.State(); s != Ready {
			t.Fatalf("%v after %d failures past the answers, want Ready until %d", s, i, FailureThreshold)
		}
		g.FailureSince(early, context.DeadlineExceeded)
	}
	if s := g.State(); s != Down {
		t.Fatalf("%v: five failures past the answers, want Down", s)
	}

	// Paused: an answer that must not re-open still excuses.
	g = &Gate{}
	g.Pause(time.Minute, 0)
	seen := g.Credit()
	g.Answered()
	if s := g.State(); s != Paused {
		t.Fatalf("%v after Answered, want still Paused", s)
	}
	for range FailureThreshold {
		g.FailureSince(seen, context.DeadlineExceeded)
	}
	if g.Snapshot().Downs != 0 {
		t.Fatal("down: one failure of five was excused by the answer")
	}
	g.FailureSince(seen, context.DeadlineExceeded)
	if s := g.State(); s != Down {
		t.Fatalf("%v after six failures and one answer, want Down", s)
	}
}
