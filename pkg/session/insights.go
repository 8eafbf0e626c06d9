package session

import (
	"encoding/json"
	"time"
)

// InsightsStatus is where an interview's analysis stands.
type InsightsStatus string

// The analysis statuses: pending while its job is queued, running while a
// worker holds it, then one of the final three.
const (
	InsightsPending       InsightsStatus = "pending"
	InsightsRunning       InsightsStatus = "running"
	InsightsReady         InsightsStatus = "ready"
	InsightsFailed        InsightsStatus = "failed"
	InsightsNotApplicable InsightsStatus = "not_applicable"
)

// Reasons of the timeline events an analysis records (from and to are the
// interview's status, unchanged: these events are not transitions).
const (
	EventInsightsReady  = "insights_ready"
	EventInsightsFailed = "insights_failed"
)

// ActorInsights is the actor of the analysis' timeline events.
const ActorInsights = "insights"

// InsightsUsage counts the tokens an analysis cost.
type InsightsUsage struct {
	InputTokens  int64 `json:"input_tokens"`
	OutputTokens int64 `json:"output_tokens"`
}

// Insights is the stored analysis of one interview. Competencies,
// Strengths and Concerns are JSON as the analysis produced them
// (competencies: [{name, weight, score, rationale, evidence:[{seq, quote}]}]).
type Insights struct {
	InterviewID     string          `json:"interview_id"`
	TenantID        string          `json:"-"`
	Status          InsightsStatus  `json:"status"`
	Model           string          `json:"model"`
	Simulated       bool            `json:"simulated"`
	OverallScore    *float64        `json:"overall_score"`
	Recommendation  *string         `json:"recommendation"`
	Summary         string          `json:"summary"`
	Competencies    json.RawMessage `json:"competencies"`
	Strengths       json.RawMessage `json:"strengths"`
	Concerns        json.RawMessage `json:"concerns"`
	Usage           InsightsUsage   `json:"usage"`
	DroppedEvidence int             `json:"dropped_evidence"`
	OmittedSegments int             `json:"omitted_segments"`
	Error           *string         `json:"error"`
	Attempts        int             `json:"attempts"`
	CreatedAt       time.Time       `json:"created_at"`
	CompletedAt     *time.Time      `json:"completed_at"`
}
