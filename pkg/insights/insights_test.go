package insights_test

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/interviewvm/controlplane/pkg/insights"
)

// fixed is a Scorer that answers a fixed assessment or error.
type fixed struct {
	a     insights.Assessment
	err   error
	calls int
}

func (f *fixed) Score(context.Context, insights.Input) (insights.Assessment, error) {
	f.calls++
	return f.a, f.err
}

// scored answers the given scores, in name order.
func scored(scores map[string]int) insights.Assessment {
	a := insights.Assessment{Model: "m", Recommendation: insights.No}
	for _, name := range slices.Sorted(maps.Keys(scores)) {
		a.Competencies = append(a.Competencies, insights.CompetencyAssessment{Name: name, Score: scores[name]})
	}
	return a
}

func TestOverallScoreIsWeightedAndRounded(t *testing.T) {
	in := fixture()
	for _, tc := range []struct {
		weights []float64
		scores  map[string]int
		want    float64
	}{
		{[]float64{3, 1}, map[string]int{"Go": 4, "Communication": 2}, 3.5},
		{[]float64{0.6, 0.4}, map[string]int{"Go": 5, "Communication": 2}, 3.8},
		{[]float64{3, 2}, map[string]int{"Go": 5, "Communication": 2}, 3.8},  // same ratio, same score
		{[]float64{2, 1}, map[string]int{"Go": 5, "Communication": 4}, 4.67}, // 14/3
		{[]float64{1, 2}, map[string]int{"Go": 5, "Communication": 4}, 4.33}, // 13/3
		{[]float64{1, 1}, map[string]int{"Go": 1, "Communication": 1}, 1},
	} {
		in.Competencies[0].Weight, in.Competencies[1].Weight = tc.weights[0], tc.weights[1]
		res, err := insights.Analyze(context.Background(), &fixed{a: scored(tc.scores)}, in)
		if err != nil {
			t.Fatal(err)
		}
		if res.OverallScore != tc.want {
			t.Errorf("weights %v scores %v: overall %v, want %v", tc.weights, tc.scores, res.OverallScore, tc.want)
		}
		if res.Competencies[0].Weight != tc.weights[0] || res.Competencies[0].Name != "Go" {
			t.Errorf("competency order or weight lost: %+v", res.Competencies)
		}
	}
}

func TestVerifyRefusesToInventScores(t *testing.T) {
	for _, tc := range []struct {
		name   string
		a      insights.Assessment
		reason insights.Reason
	}{
		{"missing", scored(map[string]int{"Go": 4}), insights.ReasonMissingCompetency},
		{"unknown", scored(map[string]int{"Go": 4, "Communication": 3, "Sales": 5}), insights.ReasonSchemaViolation},
		{"zero", scored(map[string]int{"Go": 0, "Communication": 3}), insights.ReasonSchemaViolation},
		{"six", scored(map[string]int{"Go": 6, "Communication": 3}), insights.ReasonSchemaViolation},
		{"duplicate", func() insights.Assessment {
			a := scored(map[string]int{"Go": 4, "Communication": 3})
			a.Competencies = append(a.Competencies, insights.CompetencyAssessment{Name: "Go", Score: 2})
			return a
		}(), insights.ReasonSchemaViolation},
		{"recommendation", func() insights.Assessment {
			a := scored(map[string]int{"Go": 4, "Communication": 3})
			a.Recommendation = "maybe"
			return a
		}(), insights.ReasonSchemaViolation},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := insights.Analyze(context.Background(), &fixed{a: tc.a}, fixture())
			var e *insights.Error
			if !errors.As(err, &e) || e.Retryable || e.Reason != tc.reason {
				t.Errorf("got %v, want permanent %s", err, tc.reason)
			}
		})
	}
}

func TestVerifyKeepsOnlyVerbatimQuotes(t *testing.T) {
	a := scored(map[string]int{"Go": 4, "Communication": 3})
	a.Competencies[1].Evidence = []insights.Evidence{ // Go
		{Seq: 2, Quote: "billing service in Go"},      // verbatim
		{Seq: 2, Quote: "Billing service in Go"},      // case differs
		{Seq: 2, Quote: "billing  service in Go"},     // spacing differs
		{Seq: 2, Quote: ""},                           // empty
		{Seq: 7, Quote: "billing service in Go"},      // no segment 7
		{Seq: 1, Quote: "Tell me about a Go service"}, // verbatim, interviewer's segment
	}
	res, err := insights.Verify(fixture(), a)
	if err != nil {
		t.Fatal(err)
	}
	if res.DroppedEvidence != 4 || len(res.Competencies[0].Evidence) != 2 {
		t.Errorf("dropped %d, kept %+v", res.DroppedEvidence, res.Competencies[0].Evidence)
	}
}

func TestAnalyzeNotApplicableInputs(t *testing.T) {
	noComp := fixture()
	noComp.Competencies = nil
	zeroWeight := fixture()
	zeroWeight.Competencies[1].Weight = 0
	dup := fixture()
	dup.Competencies[1].Name = "Go"
	silent := fixture()
	silent.Segments = silent.Segments[:1]
	for name, in := range map[string]insights.Input{"no competencies": noComp, "zero weight": zeroWeight, "duplicate name": dup, "no candidate speech": silent} {
		t.Run(name, func(t *testing.T) {
			f := &fixed{a: scored(map[string]int{"Go": 4, "Communication": 3})}
			_, err := insights.Analyze(context.Background(), f, in)
			var e *insights.Error
			if !errors.As(err, &e) || e.Retryable || e.Reason != insights.ReasonNotApplicable {
				t.Errorf("got %v", err)
			}
			if f.calls != 0 {
				t.Error("the scorer was asked anyway")
			}
		})
	}
}

func TestAnalyzeClassifiesForeignErrors(t *testing.T) {
	for _, tc := range []struct {
		err    error
		reason insights.Reason
	}{
		{errors.New("boom"), insights.ReasonUnknown},
		{fmt.Errorf("score: %w", context.DeadlineExceeded), insights.ReasonTimeout},
	} {
		_, err := insights.Analyze(context.Background(), &fixed{err: tc.err}, fixture())
		var e *insights.Error
		if !errors.As(err, &e) || !e.Retryable || e.Reason != tc.reason || !errors.Is(err, tc.err) {
			t.Errorf("%v: got %v", tc.err, err)
		}
	}
	if insights.Retryable(nil) || insights.RetryAfter(errors.New("x")) != 0 {
		t.Error("nil is retryable or a plain error has a delay")
	}
}
