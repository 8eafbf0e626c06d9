// Package insights scores a completed interview's transcript against the
// position's weighted competencies.
//
// A Scorer (the OpenAI Responses scorer in this package's OpenAI type, or
// the offline Simulated one) proposes an Assessment: a 1–5 score, a
// rationale and evidence quotes per competency, plus a summary, strengths,
// concerns and a recommendation. Analyze then checks it against the input
// and computes what is ours to compute:
//
//   - every competency of the position must be scored exactly once, with
//     an integer from 1 to 5; a missing, duplicated or unknown competency
//     fails the analysis (ReasonMissingCompetency / ReasonSchemaViolation)
//     rather than inventing or guessing a score;
//   - every evidence quote must be a verbatim substring of the text of the
//     segment it cites; other quotes are dropped and counted
//     (Result.DroppedEvidence);
//   - overall_score is Σ weight·score ⁄ Σ weight over the position's
//     competencies, rounded to 2 decimals; it is never asked of the model.
//
// Errors from Analyze are *Error values classified for a job runner:
// Retryable reports whether another attempt may succeed (rate limits,
// 5xx, timeouts, network faults) and RetryAfter the delay the API asked
// for; refusals, incomplete answers and answers that do not match the
// schema are permanent.
package insights

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"
)

// Speakers of transcript segments.
const (
	SpeakerCandidate   = "candidate"
	SpeakerInterviewer = "interviewer"
)

// Recommendation is the hiring recommendation of an assessment, on a
// four-step scale with no neutral middle: the reader always gets a
// direction.
type Recommendation string

// The recommendations, strongest for the candidate first.
const (
	StrongYes Recommendation = "strong_yes"
	Yes       Recommendation = "yes"
	No        Recommendation = "no"
	StrongNo  Recommendation = "strong_no"
)

// Recommendations lists every valid Recommendation, strongest first.
func Recommendations() []Recommendation {
	return []Recommendation{StrongYes, Yes, No, StrongNo}
}

// Valid reports whether r is one of Recommendations.
func (r Recommendation) Valid() bool {
	switch r {
	case StrongYes, Yes, No, StrongNo:
		return true
	}
	return false
}

// Score bounds.
const (
	MinScore = 1
	MaxScore = 5
)

// Competency is one weighted competency of the position.
type Competency struct {
	Name string
	// Weight is above 0 and relative to the other competencies' weights.
	Weight      float64
	Description string
}

// Segment is one stored transcript segment.
type Segment struct {
	Seq int64
	// Speaker is SpeakerCandidate or SpeakerInterviewer.
	Speaker string
	Text    string
}

// Input is what an analysis scores.
type Input struct {
	PositionTitle       string
	PositionDescription string
	// Competencies in the position's order; names are unique.
	Competencies []Competency
	// Segments in seq order.
	Segments []Segment
}

// Evidence is one quote backing a score.
type Evidence struct {
	Seq   int64  `json:"seq"`
	Quote string `json:"quote"`
}

// Usage counts the tokens an analysis cost.
type Usage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// CompetencyAssessment is a scorer's answer for one competency.
type CompetencyAssessment struct {
	Name      string
	Score     int
	Rationale string
	Evidence  []Evidence
}

// Assessment is a Scorer's answer, before Analyze verifies it.
type Assessment struct {
	Competencies   []CompetencyAssessment
	Summary        string
	Strengths      []string
	Concerns       []string
	Recommendation Recommendation
	// Model names what produced the assessment ("simulated" for the
	// offline scorer).
	Model     string
	Usage     Usage
	Simulated bool
	// OmittedSegments counts transcript segments the scorer could not
	// consider (left out to fit the model's context).
	OmittedSegments int
}

// Scorer proposes an assessment of an interview.
type Scorer interface {
	Score(ctx context.Context, in Input) (Assessment, error)
}

// CompetencyResult is the verified result for one competency.
type CompetencyResult struct {
	Name      string     `json:"name"`
	Weight    float64    `json:"weight"`
	Score     int        `json:"score"`
	Rationale string     `json:"rationale"`
	Evidence  []Evidence `json:"evidence"`
}

// Result is a verified analysis.
type Result struct {
	Model     string `json:"model"`
	Simulated bool   `json:"simulated"`
	// OverallScore is Σ weight·score ⁄ Σ weight, rounded to 2 decimals.
	OverallScore   float64        `json:"overall_score"`
	Recommendation Recommendation `json:"recommendation"`
	Summary        string         `json:"summary"`
	// Competencies in the position's order.
	Competencies []CompetencyResult `json:"competencies"`
	Strengths    []string           `json:"strengths"`
	Concerns     []string           `json:"concerns"`
	Usage        Usage              `json:"usage"`
	// DroppedEvidence counts quotes that were not verbatim in the segment
	// they cited (or cited no segment of the transcript).
	DroppedEvidence int `json:"dropped_evidence"`
	// OmittedSegments counts segments the scorer left out to fit the
	// model's context.
	OmittedSegments int `json:"omitted_segments"`
}

// Analyze validates in, asks scorer for an assessment and verifies it.
// Every error it returns is an *Error.
func Analyze(ctx context.Context, scorer Scorer, in Input) (Result, error) {
	if err := in.Validate(); err != nil {
		return Result{}, err
	}
	a, err := scorer.Score(ctx, in)
	if err != nil {
		return Result{}, classify(err)
	}
	return Verify(in, a)
}

// Validate checks that in can be analyzed: at least one competency, each
// named once with a weight above 0, and at least one candidate segment.
// A failure is a permanent *Error with ReasonNotApplicable.
func (in Input) Validate() error {
	if len(in.Competencies) == 0 {
		return permanent(ReasonNotApplicable, "the position has no competencies to score")
	}
	seen := make(map[string]bool, len(in.Competencies))
	for _, c := range in.Competencies {
		if strings.TrimSpace(c.Name) == "" {
			return permanent(ReasonNotApplicable, "a competency has no name")
		}
		if !(c.Weight > 0) || math.IsInf(c.Weight, 0) {
			return permanent(ReasonNotApplicable, fmt.Sprintf("competency %q has weight %v, not above 0", c.Name, c.Weight))
		}
		if seen[c.Name] {
			return permanent(ReasonNotApplicable, fmt.Sprintf("competency %q is listed twice", c.Name))
		}
		seen[c.Name] = true
	}
	for _, s := range in.Segments {
		if s.Speaker == SpeakerCandidate && strings.TrimSpace(s.Text) != "" {
			return nil
		}
	}
	return permanent(ReasonNotApplicable, "the transcript has no candidate speech")
}

// Verify checks a against in and builds the result: each competency of in
// scored exactly once from 1 to 5 (else a permanent *Error), a valid
// recommendation, quotes verbatim in their cited segments (others
// dropped and counted), and the weighted overall score.
func Verify(in Input, a Assessment) (Result, error) {
	byName := make(map[string]CompetencyAssessment, len(a.Competencies))
	for _, ca := range a.Competencies {
		if _, dup := byName[ca.Name]; dup {
			return Result{}, permanent(ReasonSchemaViolation, fmt.Sprintf("the answer scores competency %q twice", ca.Name))
		}
		byName[ca.Name] = ca
	}
	known := make(map[string]bool, len(in.Competencies))
	for _, c := range in.Competencies {
		known[c.Name] = true
	}
	for _, ca := range a.Competencies {
		if !known[ca.Name] {
			return Result{}, permanent(ReasonSchemaViolation, fmt.Sprintf("the answer scores %q, which is not a competency of the position", ca.Name))
		}
	}
	if !a.Recommendation.Valid() {
		return Result{}, permanent(ReasonSchemaViolation, fmt.Sprintf("the answer's recommendation %q is not one of strong_yes, yes, no, strong_no", a.Recommendation))
	}

	text := make(map[int64]string, len(in.Segments))
	for _, s := range in.Segments {
		text[s.Seq] = s.Text
	}
	res := Result{
		Model:           a.Model,
		Simulated:       a.Simulated,
		Recommendation:  a.Recommendation,
		Summary:         a.Summary,
		Strengths:       nonNil(a.Strengths),
		Concerns:        nonNil(a.Concerns),
		Usage:           a.Usage,
		OmittedSegments: a.OmittedSegments,
		Competencies:    make([]CompetencyResult, 0, len(in.Competencies)),
	}
	var weighted, weights float64
	for _, c := range in.Competencies {
		ca, ok := byName[c.Name]
		if !ok {
			return Result{}, permanent(ReasonMissingCompetency, fmt.Sprintf("the answer has no score for competency %q", c.Name))
		}
		if ca.Score < MinScore || ca.Score > MaxScore {
			return Result{}, permanent(ReasonSchemaViolation, fmt.Sprintf("competency %q scored %d, outside %d–%d", c.Name, ca.Score, MinScore, MaxScore))
		}
		ev := make([]Evidence, 0, len(ca.Evidence))
		for _, e := range ca.Evidence {
			seg, ok := text[e.Seq]
			if !ok || strings.TrimSpace(e.Quote) == "" || !strings.Contains(seg, e.Quote) {
				res.DroppedEvidence++
				continue
			}
			ev = append(ev, e)
		}
		res.Competencies = append(res.Competencies, CompetencyResult{
			Name: c.Name, Weight: c.Weight, Score: ca.Score, Rationale: ca.Rationale, Evidence: ev,
		})
		weighted += c.Weight * float64(ca.Score)
		weights += c.Weight
	}
	res.OverallScore = OverallScore(weighted, weights)
	return res, nil
}

// OverallScore is weighted ⁄ weights rounded half away from zero to 2
// decimals.
func OverallScore(weighted, weights float64) float64 {
	return math.Round(weighted/weights*100) / 100
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// Reason names why an analysis failed; it is stable, for metrics and for
// the stored error.
type Reason string

// The reasons.
const (
	// Retryable.
	ReasonRateLimited Reason = "rate_limited"
	ReasonServerError Reason = "server_error"
	ReasonTimeout     Reason = "timeout"
	ReasonNetwork     Reason = "network"
	ReasonUnknown     Reason = "unknown"
	// Permanent.
	ReasonRefusal           Reason = "refusal"
	ReasonIncomplete        Reason = "incomplete"
	ReasonSchemaViolation   Reason = "schema_violation"
	ReasonMissingCompetency Reason = "missing_competency"
	ReasonBadRequest        Reason = "bad_request"
	ReasonAuth              Reason = "auth"
	ReasonNotApplicable     Reason = "not_applicable"
)

// Error is a failed analysis. Its message never holds credentials.
type Error struct {
	Reason    Reason
	Retryable bool
	// RetryAfter is the delay the API asked for (Retry-After), 0 when it
	// named none.
	RetryAfter time.Duration
	// StatusCode is the API's HTTP status, 0 when there was no answer.
	StatusCode int
	Message    string
	// Usage counts the tokens spent before the failure.
	Usage Usage
	err   error
}

func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString("insights: ")
	b.WriteString(string(e.Reason))
	if e.StatusCode != 0 {
		fmt.Fprintf(&b, " (HTTP %d)", e.StatusCode)
	}
	if e.Message != "" {
		b.WriteString(": ")
		b.WriteString(e.Message)
	}
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	return b.String()
}

// Unwrap returns the underlying cause, if one was kept (never an error
// that carries the request and its credentials).
func (e *Error) Unwrap() error { return e.err }

func permanent(r Reason, msg string) *Error {
	return &Error{Reason: r, Message: msg}
}

// classify makes err an *Error; an error a scorer did not classify is
// treated as retryable (the job's attempt limit bounds it).
func classify(err error) *Error {
	var e *Error
	if errors.As(err, &e) {
		return e
	}
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		return &Error{Reason: ReasonTimeout, Retryable: true, Message: "the analysis timed out", err: err}
	case errors.Is(err, context.Canceled):
		return &Error{Reason: ReasonTimeout, Retryable: true, Message: "the analysis was cancelled", err: err}
	}
	return &Error{Reason: ReasonUnknown, Retryable: true, Message: err.Error(), err: err}
}

// Retryable reports whether err is worth another attempt.
func Retryable(err error) bool {
	var e *Error
	if errors.As(err, &e) {
		return e.Retryable
	}
	return err != nil
}

// RetryAfter returns the delay the API asked for before the next attempt,
// 0 when it named none.
func RetryAfter(err error) time.Duration {
	var e *Error
	if errors.As(err, &e) {
		return e.RetryAfter
	}
	return 0
}
