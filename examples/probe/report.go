package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"slices"
	"syscall"
	"text/tabwriter"
	"time"
)

// Report is what one interval found, per address and phase, beside what a
// user of lifeline's race would have seen. It is the JSON output.
type Report struct {
	Target    string          `json:"target"`
	Start     time.Time       `json:"start"`
	End       time.Time       `json:"end"`
	Samples   int             `json:"samples_per_address"`
	Addresses []AddressReport `json:"addresses"`
	Raced     PhaseReport     `json:"raced"`
	// Errors are rounds that could not run at all (the name did not resolve).
	Errors []string `json:"errors,omitempty"`
	// Failing lists "address phase: why" for every address and phase over a
	// threshold.
	Failing []string `json:"failing,omitempty"`
}

// AddressReport is one address probed in the interval or in the current
// answer.
type AddressReport struct {
	Address string        `json:"address"`
	Phases  []PhaseReport `json:"phases"`
	// Score and Demoted are the probe Dialer's Health about the address.
	Score   float64 `json:"health_score"`
	Demoted bool    `json:"demoted"`
}

// PhaseReport counts one phase's outcomes and their latency percentiles
// (of the successes) in milliseconds.
type PhaseReport struct {
	Phase        string  `json:"phase"`
	Samples      int     `json:"samples"`
	OK           int     `json:"ok"`
	Stalls       int     `json:"stalls"`
	Refused      int     `json:"refused"`
	Resets       int     `json:"resets"`
	Errors       int     `json:"errors"`
	FailureRatio float64 `json:"failure_ratio"`
	P50ms        float64 `json:"p50_ms"`
	P90ms        float64 `json:"p90_ms"`
	P99ms        float64 `json:"p99_ms"`
	MaxMs        float64 `json:"max_ms"`
}

// phaseStats accumulates one phase of one address over an interval.
type phaseStats struct {
	counts    map[string]int
	latencies []time.Duration // of the successes
}

func (s *phaseStats) add(result string, latency time.Duration) {
	if s.counts == nil {
		s.counts = make(map[string]int)
	}
	s.counts[result]++
	if result == resultOK {
		s.latencies = append(s.latencies, latency)
	}
}

func (s *phaseStats) report(phase string) PhaseReport {
	r := PhaseReport{Phase: phase, OK: s.counts[resultOK], Stalls: s.counts[resultStall],
		Refused: s.counts[resultRefused], Resets: s.counts[resultReset], Errors: s.counts[resultError]}
	r.Samples = r.OK + r.Stalls + r.Refused + r.Resets + r.Errors
	if r.Samples > 0 {
		r.FailureRatio = float64(r.Samples-r.OK) / float64(r.Samples)
	}
	l := slices.Clone(s.latencies)
	slices.Sort(l)
	r.P50ms, r.P90ms, r.P99ms = ms(quantile(l, 0.5)), ms(quantile(l, 0.9)), ms(quantile(l, 0.99))
	if len(l) > 0 {
		r.MaxMs = ms(l[len(l)-1])
	}
	return r
}

// quantile is the nearest-rank quantile of sorted durations (0 for none).
func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(q*float64(len(sorted))+0.999999) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1000 }

// thresholds decide which addresses fail a one-shot run.
type thresholds struct {
	maxFailure float64       // failure ratio of any phase; negative: off
	maxP99     time.Duration // p99 of any phase; 0: off
}

// judge fills r.Failing. Rounds whose name did not resolve count like
// failed samples: more of them than maxFailure allows make the target
// FAILING.
func (t thresholds) judge(r *Report) {
	if n := len(r.Errors); n > 0 && t.maxFailure >= 0 && float64(n)/float64(max(r.Samples, n)) > t.maxFailure {
		r.Failing = append(r.Failing, fmt.Sprintf("%s resolve: %d of %d rounds did not resolve, over %.3g",
			r.Target, n, max(r.Samples, n), t.maxFailure))
	}
	for _, a := range r.Addresses {
		for _, p := range a.Phases {
			if t.maxFailure >= 0 && p.Samples > 0 && p.FailureRatio > t.maxFailure {
				r.Failing = append(r.Failing, fmt.Sprintf("%s %s: %d of %d failed (%d stalls, %d refused, %d resets, %d errors), over %.3g",
					a.Address, p.Phase, p.Samples-p.OK, p.Samples, p.Stalls, p.Refused, p.Resets, p.Errors, t.maxFailure))
			}
			if t.maxP99 > 0 && p.OK > 0 && p.P99ms > ms(t.maxP99) {
				r.Failing = append(r.Failing, fmt.Sprintf("%s %s: p99 %.1fms over %v", a.Address, p.Phase, p.P99ms, t.maxP99))
			}
		}
	}
}

// writeTable prints r for a person.
func writeTable(w io.Writer, r *Report) error {
	fmt.Fprintf(w, "probe %s: %d samples per address, %s to %s\n", r.Target, r.Samples,
		r.Start.Format(time.TimeOnly), r.End.Format(time.TimeOnly))
	for _, e := range r.Errors {
		fmt.Fprintf(w, "round failed: %s\n", e)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "address\tphase\tsamples\tok\tstall\trefused\treset\terror\tfail%\tp50 ms\tp90 ms\tp99 ms\tmax ms\t")
	row := func(addr string, p PhaseReport) {
		fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.1f\t%.1f\t%.1f\t%.1f\t%.1f\t\n", addr, p.Phase, p.Samples, p.OK,
			p.Stalls, p.Refused, p.Resets, p.Errors, 100*p.FailureRatio, p.P50ms, p.P90ms, p.P99ms, p.MaxMs)
	}
	for _, a := range r.Addresses {
		for _, p := range a.Phases {
			row(a.Address, p)
		}
	}
	row("raced (what users see)", r.Raced)
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range r.Failing {
		fmt.Fprintf(w, "FAILING %s\n", f)
	}
	return nil
}

// writeJSON prints r as one JSON document.
func writeJSON(w io.Writer, r *Report) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

func isReset(err error) bool {
	return errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE)
}
