package faultnet_test

import (
	"math"
	"slices"
	"testing"

	"github.com/lifeline-go/lifeline/faultnet"
)

func TestSelectors(t *testing.T) {
	tests := []struct {
		name string
		sel  faultnet.Selector
		want []int // hits among 1..12
	}{
		{"All", faultnet.All(), []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"EveryNth3", faultnet.EveryNth(3), []int{3, 6, 9, 12}},
		{"EveryNth12", faultnet.EveryNth(12), []int{12}},
		{"EveryNth1", faultnet.EveryNth(1), []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"EveryNth0", faultnet.EveryNth(0), nil},
		{"EveryNthNegative", faultnet.EveryNth(-2), nil},
		{"FractionQuarter", faultnet.Fraction(0.25), []int{4, 8, 12}},
		{"FractionHalf", faultnet.Fraction(0.5), []int{2, 4, 6, 8, 10, 12}},
		{"FractionThird", faultnet.Fraction(1.0 / 3), []int{3, 6, 9, 12}},
		{"FractionTwoThirds", faultnet.Fraction(2.0 / 3), []int{2, 3, 5, 6, 8, 9, 11, 12}},
		{"Fraction0", faultnet.Fraction(0), nil},
		{"Fraction1", faultnet.Fraction(1), []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"FractionAbove1", faultnet.Fraction(7), []int{1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12}},
		{"FractionNaN", faultnet.Fraction(math.NaN()), nil},
		{"FirstN2", faultnet.FirstN(2), []int{1, 2}},
		{"FirstN0", faultnet.FirstN(0), nil},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for round := range 2 { // same answers every time: deterministic
				var got []int
				for n := 1; n <= 12; n++ {
					if tt.sel(n) {
						got = append(got, n)
					}
				}
				if !slices.Equal(got, tt.want) {
					t.Fatalf("round %d: hits %v, want %v", round, got, tt.want)
				}
			}
		})
	}
}

// Fraction(f) hits exactly floor(N*f) of the first N connections.
func TestFractionRate(t *testing.T) {
	for _, f := range []float64{0.01, 0.08, 0.1, 0.33, 0.9} {
		sel := faultnet.Fraction(f)
		hits := 0
		for n := 1; n <= 1000; n++ {
			if sel(n) {
				hits++
			}
		}
		if want := int(math.Floor(1000 * f)); hits != want {
			t.Errorf("Fraction(%v): %d hits in 1000, want %d", f, hits, want)
		}
	}
}
