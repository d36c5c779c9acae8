package upstream

import (
	"errors"
	"math/rand/v2"
	"testing"
	"testing/synctest"
	"time"
)

// simulate offers rate calls a second for d to an upstream that accepts
// capacity a second (beyond it, an overload signal), through th; it returns
// the calls that reached the upstream and those it accepted.
func simulate(th *Throttle, rate, capacity int, d time.Duration) (arrived, accepted int) {
	tick := time.Second / time.Duration(rate)
	served := 0
	second := time.Now()
	for end := time.Now().Add(d); time.Now().Before(end); time.Sleep(tick) {
		now := time.Now()
		if now.Sub(second) >= time.Second {
			second, served = now, 0
		}
		if !th.Allow(now.UnixNano()) {
			continue
		}
		arrived++
		ok := served < capacity
		if ok {
			served++
			accepted++
		}
		th.Record(now.UnixNano(), !ok)
	}
	return arrived, accepted
}

func TestThrottleBoundsLoadAtTwiceCapacity(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		r := rand.New(rand.NewPCG(1, 2))
		th := &Throttle{rand: r.Float64}
		// Healthy: 50 a second, nothing shed.
		if arrived, _ := simulate(th, 50, 100, 10*time.Second); arrived != 500 {
			t.Fatalf("healthy: %d of 500 arrived", arrived)
		}
		// Overload: 300 offered to a capacity of 100 for 20s; after the
		// first window, the upstream sees about 2× its capacity.
		simulate(th, 300, 100, ThrottleWindow)
		arrived, accepted := simulate(th, 300, 100, 15*time.Second)
		rate := float64(arrived) / 15
		t.Logf("overload: %.0f calls/s arrived, %d accepted", rate, accepted)
		if rate > 2.2*100 || rate < 1.5*100 {
			t.Fatalf("overload: %.0f calls/s arrived at a capacity of 100 with 300 offered, want about 200", rate)
		}
		if accepted < 15*95 {
			t.Fatalf("goodput %d in 15s, want about the capacity", accepted)
		}
		// Recovery: 50 offered; the shedding stops within the window.
		start := time.Now()
		for th.Shedding(time.Now().UnixNano()) {
			simulate(th, 50, 100, 100*time.Millisecond)
			if time.Since(start) > ThrottleWindow {
				t.Fatalf("still shedding %v after the overload ended", time.Since(start))
			}
		}
		t.Logf("recovered in %v", time.Since(start))
		if arrived, _ := simulate(th, 50, 100, 5*time.Second); arrived != 250 {
			t.Fatalf("after recovery: %d of 250 arrived", arrived)
		}
	})
}

func TestThrottleFewFailuresShedLittle(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		th := &Throttle{}
		now := time.Now().UnixNano()
		th.Record(now, true)
		if p := th.Probability(now); p != 0 {
			t.Fatalf("one overload alone: p = %v, want 0 (too few requests)", p)
		}
		for range ThrottleMinRequests - 1 {
			th.Record(now, true)
		}
		if p := th.Probability(now); p < 0.55 || p > 0.56 {
			t.Fatalf("%d overloads alone: p = %v, want 10/18", ThrottleMinRequests, p)
		}
		for range 5 * ThrottleMinRequests {
			th.Record(now, false)
		}
		if th.Shedding(now) {
			t.Fatal("shedding with 20 accepts for one overload")
		}
		// The window forgets.
		for range 100 {
			th.Record(now, true)
		}
		if !th.Shedding(now) {
			t.Fatal("not shedding with 110 overloads for 50 accepts")
		}
		if th.Since() != now {
			t.Fatal("Since not set")
		}
		time.Sleep(ThrottleWindow)
		if th.Shedding(time.Now().UnixNano()) {
			t.Fatal("still shedding a window later")
		}
		err := th.Rejected("api:443", nil)
		if !errors.Is(err, ErrThrottled) || !errors.Is(err, ErrUnavailable) || err.ErrorType() != "shed" {
			t.Fatalf("Rejected: %v", err)
		}
	})
}

func TestThrottleHappyPathAllocs(t *testing.T) {
	th := &Throttle{}
	n := testing.AllocsPerRun(1000, func() {
		now := time.Now().UnixNano()
		if th.Allow(now) {
			th.Record(now, false)
		}
	})
	if n != 0 {
		t.Fatalf("%v allocations per happy call", n)
	}
}

func BenchmarkThrottleHappy(b *testing.B) {
	th := &Throttle{}
	now := time.Now().UnixNano()
	b.ReportAllocs()
	for b.Loop() {
		if th.Allow(now) {
			th.Record(now, false)
		}
	}
}

// TestThrottleSettleCountsOneRequest: an attempt counted as overload when
// it was admitted (behind a standing queue) and then accepted is one
// request and one accept, as an attempt recorded once at its answer is;
// one then refused adds nothing more.
func TestThrottleSettleCountsOneRequest(t *testing.T) {
	now := time.Now().UnixNano()
	var settled, once Throttle
	for range 20 {
		settled.Record(now, true)
		settled.Settle(now, false)
		once.Record(now, false)
	}
	if p := settled.Probability(now); p != 0 {
		t.Errorf("20 attempts admitted as overload, then accepted: p = %.2f, want 0 (as recorded once: %.2f)", p, once.Probability(now))
	}
	var refused Throttle
	for range 20 {
		refused.Record(now, true)
		refused.Settle(now, true)
	}
	if p, want := refused.Probability(now), 20.0/28; p != want {
		t.Errorf("20 attempts admitted as overload, then refused: p = %.3f, want %.3f (20 requests, not 40)", p, want)
	}
}
