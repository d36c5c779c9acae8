package upstream

import (
	"context"
	"testing"
)

// TestAdv28AnAnswerExcusesOneFailure: an answer shows that the upstream
// answers some requests, not that every request in flight when it came
// hangs by its own fault. A server that hangs every request but a long
// poll answered now and then (or a health check) stopped answering for
// its callers: the one answer must not excuse the first-byte failures of
// all the tries in flight around it, or such an upstream never goes down
// while each of its callers waits its FirstByteTimeout. Each answer
// excuses one failure of a try that started before it: k answers, k
// failures excused, the next FailureThreshold counted.
func TestAdv28AnAnswerExcusesOneFailure(t *testing.T) {
	for _, k := range []int{1, 2, 4} {
		g := &Gate{}
		seen := g.Credit()
		for range k {
			g.Success()
		}
		for i := range k + FailureThreshold - 1 {
			g.FailureSince(seen, context.DeadlineExceeded)
			if s := g.State(); s != Ready {
				t.Fatalf("%d answers: %v after %d failures, want Ready until %d", k, s, i+1, k+FailureThreshold)
			}
		}
		g.FailureSince(seen, context.DeadlineExceeded)
		if s := g.State(); s != Down {
			t.Fatalf("%d answers: %v after %d failures of tries that started before them, want Down (one answer excuses one failure)",
				k, s, k+FailureThreshold)
		}
	}
}

// TestAdv28AnswersExcuseOnlyLaterTries: an answer excuses only a try
// that started before it, whatever the order the failures come in (a
// starved client's timers fire late and in any order): answers before a
// try started are none of its excuse, even when unused.
func TestAdv28AnswersExcuseOnlyLaterTries(t *testing.T) {
	g := &Gate{}
	for range 10 {
		g.Success() // answers before any try below started: no excuse
	}
	old := g.Credit()
	g.Success()
	late := g.Credit()
	// The later try fails first: the one answer after old is before late.
	for range FailureThreshold - 1 {
		g.FailureSince(late, context.DeadlineExceeded)
	}
	g.FailureSince(old, context.DeadlineExceeded) // excused by the answer after old
	if s := g.State(); s != Ready {
		t.Fatalf("%v, want Ready: 4 counted and one excused", s)
	}
	g.FailureSince(old, context.DeadlineExceeded) // the answer excused one already
	if s := g.State(); s != Down {
		t.Fatalf("%v, want Down: 5 failures counted", s)
	}
}

// TestAdv28DialDoesNotForgiveFirstByteFailures: a conn that establishes
// and is never answered on is no success: on HTTP/1.1 each request that
// hung has its conn closed, and the next call dials a new one. The
// first-byte failures of one caller's calls, each after a dial that
// established, take the gate down; an answer forgives them; a dial that
// re-opens a Down gate starts the count afresh.
func TestAdv28DialDoesNotForgiveFirstByteFailures(t *testing.T) {
	g := &Gate{}
	call := func() {
		g.DialStart(nil).Established()
		g.FailureSince(g.Credit(), context.DeadlineExceeded)
	}
	for i := range FailureThreshold - 1 {
		call()
		if s := g.State(); s != Ready {
			t.Fatalf("%v after %d first-byte failures, want Ready", s, i+1)
		}
	}
	g.Success() // an answer forgives them
	for range FailureThreshold - 1 {
		call()
	}
	if s := g.State(); s != Ready {
		t.Fatalf("%v after %d first-byte failures since an answer, want Ready", s, FailureThreshold-1)
	}
	call()
	if s := g.State(); s != Down {
		t.Fatalf("%v after %d first-byte failures, each on a conn that established, with no answer between: want Down", s, FailureThreshold)
	}
	// A probe's dial re-opens the gate on probation: it accepts, and has
	// answered nothing yet; one first-byte failure with no answer takes
	// it down again.
	g.DialStart(nil).Established()
	if s := g.State(); s != Ready {
		t.Fatalf("%v after a dial established, want Ready", s)
	}
	g.FailureSince(g.Credit(), context.DeadlineExceeded)
	if s := g.State(); s != Down {
		t.Fatalf("%v after a first-byte failure on probation, want Down again", s)
	}
	// An answer after the re-open ends the probation: the count is the
	// usual one.
	g.DialStart(nil).Established()
	g.Success()
	for range FailureThreshold - 1 {
		g.FailureSince(g.Credit(), context.DeadlineExceeded)
	}
	if s := g.State(); s != Ready {
		t.Fatalf("%v after %d first-byte failures since an answer ended the probation, want Ready", s, FailureThreshold-1)
	}
}
