package upstream

import (
	"errors"
	"testing"
)

// TestAdv30StaleFailureOnProbation: a try written before the upstream
// went down (its first-byte limit is long) fails after a probe's dial
// re-opened the gate. Its failure says nothing of the recovered server,
// yet probation takes the gate Down again at once.
func TestAdv30StaleFailureOnProbation(t *testing.T) {
	g := &Gate{Upstream: "u"}
	stale, staleDowns := g.Credit(), g.Downs() // written before the outage
	for range FailureThreshold {
		g.FailureSince(g.Credit(), errors.New("first byte"))
	}
	if s := g.State(); s != Down {
		t.Fatalf("state %v, want down", s)
	}
	g.DialStart(nil).Established() // a probe's dial: re-opened, on probation
	if s := g.State(); s != Ready {
		t.Fatalf("state %v after the dial, want ready", s)
	}
	g.FailureSinceDowns(stale, staleDowns, errors.New("first byte"))
	t.Logf("after the stale try's failure: %v (downs %d)", g.State(), g.Downs())
	if s := g.State(); s != Ready {
		t.Fatalf("a try written before the re-open took the gate %v", s)
	}
}

// TestAdv30FreshFailureOnProbation: what held — a try written after the
// re-open (or during the outage) that fails unanswered still takes the
// gate on probation Down at once.
func TestAdv30FreshFailureOnProbation(t *testing.T) {
	g := &Gate{Upstream: "u"}
	for range FailureThreshold {
		g.FailureSince(g.Credit(), errors.New("first byte"))
	}
	seen, downs := g.Credit(), g.Downs() // the probe's request, during the outage
	g.DialStart(nil).Established()
	g.FailureSinceDowns(seen, downs, errors.New("first byte"))
	if s := g.State(); s != Down {
		t.Fatalf("state %v, want down again", s)
	}
}
