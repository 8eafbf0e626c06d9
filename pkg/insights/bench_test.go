package insights_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/insights"
)

// benchInput is an interview of 80 segments scored on 5 competencies.
func benchInput() insights.Input {
	in := insights.Input{PositionTitle: "Backend engineer", PositionDescription: "Go services."}
	for i := range 5 {
		in.Competencies = append(in.Competencies, insights.Competency{
			Name: fmt.Sprintf("Competency %d", i), Weight: float64(i + 1), Description: "Designing, testing and explaining services.",
		})
	}
	for i := int64(1); i <= 80; i++ {
		sp := insights.SpeakerInterviewer
		if i%2 == 0 {
			sp = insights.SpeakerCandidate
		}
		in.Segments = append(in.Segments, insights.Segment{Seq: i, Speaker: sp,
			Text: "I designed the service around a queue, tested it with table-driven tests and explained the trade-offs to the team in a short design document."})
	}
	return in
}

// BenchmarkAnalyzeOpenAIFake runs whole analyses with the official SDK
// against the Responses fake on loopback. The fake answers at once, so
// the time per analysis is what the controller adds around the model:
// prompt and schema building, the SDK's encoding, HTTP, decoding and
// verification (plus the fake's own validation).
func BenchmarkAnalyzeOpenAIFake(b *testing.B) {
	in := benchInput()
	run := func(b *testing.B, parallel bool) {
		_, sc, _ := setup(b, nil)
		ctx := context.Background()
		b.ReportAllocs()
		b.ResetTimer()
		start := time.Now()
		if parallel {
			b.RunParallel(func(pb *testing.PB) {
				for pb.Next() {
					if _, err := insights.Analyze(ctx, sc, in); err != nil {
						b.Error(err)
						return
					}
				}
			})
		} else {
			for b.Loop() {
				if _, err := insights.Analyze(ctx, sc, in); err != nil {
					b.Fatal(err)
				}
			}
		}
		b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
	}
	b.Run("sequential", func(b *testing.B) { run(b, false) })
	b.Run("parallel", func(b *testing.B) { run(b, true) })
}

// BenchmarkAnalyzeSimulated runs whole analyses with the offline scorer.
func BenchmarkAnalyzeSimulated(b *testing.B) {
	in := benchInput()
	sc := insights.NewSimulated()
	ctx := context.Background()
	b.ReportAllocs()
	start := time.Now()
	for b.Loop() {
		if _, err := insights.Analyze(ctx, sc, in); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N)/time.Since(start).Seconds(), "jobs/s")
}
