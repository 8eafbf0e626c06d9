package insights_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"sync"
	"testing"

	"github.com/interviewvm/controlplane/pkg/insights"
	"github.com/interviewvm/controlplane/pkg/insights/responsestest"
)

const testKey = "sk-test-0123456789abcdefFAKEKEY"

func fixture() insights.Input {
	return insights.Input{
		PositionTitle:       "Backend engineer",
		PositionDescription: "Builds and runs the Go services behind the interview platform.",
		Competencies: []insights.Competency{
			{Name: "Go", Weight: 3, Description: "Idiomatic Go services, concurrency and testing"},
			{Name: "Communication", Weight: 1, Description: "Explaining technical decisions clearly"},
		},
		Segments: []insights.Segment{
			{Seq: 1, Speaker: insights.SpeakerInterviewer, Text: "Tell me about a Go service you built."},
			{Seq: 2, Speaker: insights.SpeakerCandidate, Text: "I built a billing service in Go. It used goroutines with a bounded worker pool and we tested it with table-driven tests."},
			{Seq: 3, Speaker: insights.SpeakerInterviewer, Text: "How did you explain the design to the team?"},
			{Seq: 4, Speaker: insights.SpeakerCandidate, Text: "I wrote a short design doc and walked the team through the trade-offs, explaining why we chose a queue over direct calls."},
			{Seq: 5, Speaker: insights.SpeakerInterviewer, Text: "Thanks, that's all."},
			{Seq: 6, Speaker: insights.SpeakerCandidate, Text: "Thank you!"},
		},
	}
}

// answerJSON is a model answer for fixture().
type answerComp struct {
	Evidence  []insights.Evidence `json:"evidence"`
	Rationale string              `json:"rationale"`
	Score     int                 `json:"score"`
}

type answerDoc struct {
	Competencies   map[string]answerComp `json:"competencies"`
	Summary        string                `json:"summary"`
	Strengths      []string              `json:"strengths"`
	Concerns       []string              `json:"concerns"`
	Recommendation string                `json:"recommendation"`
}

func goodAnswer() answerDoc {
	return answerDoc{
		Competencies: map[string]answerComp{
			"Go": {Score: 4, Rationale: "Concrete concurrency and testing practice.", Evidence: []insights.Evidence{
				{Seq: 2, Quote: "goroutines with a bounded worker pool"},
				{Seq: 2, Quote: "table-driven tests"},
			}},
			"Communication": {Score: 3, Rationale: "Wrote and presented a design doc.", Evidence: []insights.Evidence{
				{Seq: 4, Quote: "walked the team through the trade-offs"},
			}},
		},
		Summary:        "A solid backend engineer.",
		Strengths:      []string{"Concurrency"},
		Concerns:       []string{"Little on operations"},
		Recommendation: "yes",
	}
}

func (a answerDoc) text(t testing.TB) string {
	t.Helper()
	b, err := json.Marshal(a)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// syncBuffer is a log sink safe for concurrent writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// setup starts the fake and an OpenAI scorer against it; logs go to the
// returned buffer at debug level.
func setup(t testing.TB, mod func(*insights.OpenAIConfig)) (*responsestest.Server, *insights.OpenAI, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	fake := responsestest.NewServer(responsestest.Config{APIKey: testKey, Logger: log})
	t.Cleanup(fake.Close)
	cfg := insights.OpenAIConfig{APIKey: testKey, BaseURL: fake.BaseURL(), Model: "gpt-5.5", Logger: log}
	if mod != nil {
		mod(&cfg)
	}
	sc, err := insights.NewOpenAI(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return fake, sc, logs
}
