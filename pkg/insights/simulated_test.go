package insights_test

import (
	"context"
	"encoding/json"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/interviewvm/controlplane/pkg/insights"
)

func TestSimulatedIsDeterministicAndSaysSo(t *testing.T) {
	sc := insights.NewSimulated()
	first, err := insights.Analyze(context.Background(), sc, fixture())
	if err != nil {
		t.Fatal(err)
	}
	for range 5 {
		again, err := insights.Analyze(context.Background(), sc, fixture())
		if err != nil {
			t.Fatal(err)
		}
		if d := cmp.Diff(first, again); d != "" {
			t.Fatalf("same input, different result (-first +again):\n%s", d)
		}
		a, _ := json.Marshal(first)
		b, _ := json.Marshal(again)
		if string(a) != string(b) {
			t.Fatal("same input, different JSON")
		}
	}
	if !first.Simulated || first.Model != insights.SimulatedModel || !strings.HasPrefix(first.Summary, "Simulated assessment") {
		t.Errorf("not marked simulated: %+v", first)
	}
	if first.Usage != (insights.Usage{}) {
		t.Errorf("usage %+v for an offline scorer", first.Usage)
	}
	if first.DroppedEvidence != 0 {
		t.Errorf("the simulated scorer's own quotes were dropped: %d", first.DroppedEvidence)
	}
	quotes := 0
	for _, c := range first.Competencies {
		if c.Score < 1 || c.Score > 5 || !strings.HasPrefix(c.Rationale, "Simulated") {
			t.Errorf("competency %+v", c)
		}
		quotes += len(c.Evidence)
	}
	if quotes == 0 {
		t.Error("no evidence quoted from a transcript that matches the competencies")
	}
	if !first.Recommendation.Valid() {
		t.Errorf("recommendation %q", first.Recommendation)
	}
}

func TestSimulatedRewardsRelevantAnswers(t *testing.T) {
	weak := fixture()
	weak.Segments = []insights.Segment{
		{Seq: 1, Speaker: insights.SpeakerInterviewer, Text: "Tell me about a Go service you built."},
		{Seq: 2, Speaker: insights.SpeakerCandidate, Text: "Not sure."},
	}
	strong := fixture()
	strong.Segments = append(strong.Segments, insights.Segment{Seq: 7, Speaker: insights.SpeakerCandidate,
		Text: strings.Repeat("I care about idiomatic concurrency, testing, and explaining technical decisions clearly to everyone. ", 3)})
	w, err := insights.Analyze(context.Background(), insights.NewSimulated(), weak)
	if err != nil {
		t.Fatal(err)
	}
	s, err := insights.Analyze(context.Background(), insights.NewSimulated(), strong)
	if err != nil {
		t.Fatal(err)
	}
	if !(s.OverallScore > w.OverallScore) {
		t.Errorf("relevant answers score %v, evasive ones %v", s.OverallScore, w.OverallScore)
	}
	if s.DroppedEvidence != 0 {
		t.Errorf("dropped %d", s.DroppedEvidence)
	}
}
