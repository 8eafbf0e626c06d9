package session

import "time"

// This file holds the wire types of the internal API between a session VM
// and the controller (docs/architecture.md, "Contract"). Routes, all under
// /internal/v1/sessions/{id} with "Authorization: Bearer <session token>":
//
//	GET  /config     → VMConfig
//	POST /ready      ReadyRequest → 204
//	POST /heartbeat  Heartbeat → HeartbeatAnswer
//	POST /transcript TranscriptBatch → TranscriptAck
//	POST /ended      Ended → 204
//
// A session that is no longer live answers 409 with code "conflict": the VM
// must stop and exit. A wrong token answers 401.

// VMConfig is everything a session VM learns about its interview.
type VMConfig struct {
	SessionID    string `json:"session_id"`
	TenantID     string `json:"tenant_id"`
	Architecture string `json:"architecture"`
	// Realtime selects the interviewer: RealtimeSimulated or
	// RealtimeOpenAI.
	Realtime string `json:"realtime"`
	// SyntheticTurnMS is the candidate's pace in synthetic mode.
	SyntheticTurnMS int64 `json:"synthetic_turn_ms,omitempty"`
	// RealtimeModel, RealtimeVoice and TranscribeModel choose the
	// realtime model, the interviewer's voice and the transcription model
	// in openai mode (settings REALTIME_MODEL, REALTIME_VOICE,
	// TRANSCRIBE_MODEL); empty means the VM's defaults.
	RealtimeModel   string `json:"realtime_model,omitempty"`
	RealtimeVoice   string `json:"realtime_voice,omitempty"`
	TranscribeModel string `json:"transcribe_model,omitempty"`
	// Deadline is when the VM must end the interview on its own.
	Deadline     time.Time `json:"deadline"`
	MaxDurationS int       `json:"max_duration_s"`
	// HeartbeatIntervalMS is how often the VM reports, in milliseconds.
	HeartbeatIntervalMS int64 `json:"heartbeat_interval_ms"`
	// IdleTimeoutMS ends the interview when no browser connects in time;
	// zero disables it.
	IdleTimeoutMS int64    `json:"idle_timeout_ms"`
	Position      Position `json:"position"`
}

// Values of VMConfig.Realtime.
const (
	// RealtimeSimulated is the built-in simulated interviewer: the VM
	// answers the browser's offer itself.
	RealtimeSimulated = "simulated"
	// RealtimeOpenAI is OpenAI's Realtime API, brokered by the VM.
	RealtimeOpenAI = "openai"
	// RealtimeSynthetic runs the simulated interviewer against a scripted
	// candidate, without a browser: a steady transcript for load, chaos
	// and benchmark runs.
	RealtimeSynthetic = "synthetic"
)

// Position is the role being interviewed for, as the interviewer sees it.
type Position struct {
	Title        string       `json:"title"`
	Description  string       `json:"description,omitempty"`
	Competencies []Competency `json:"competencies"`
}

// Competency is one weighted skill of a position.
type Competency struct {
	Name        string  `json:"name"`
	Weight      float64 `json:"weight"`
	Description string  `json:"description,omitempty"`
}

// ReadyRequest is sent once the VM serves its endpoints.
type ReadyRequest struct {
	// MachineID is the provider's id for the VM, when the VM knows it.
	MachineID string `json:"machine_id,omitempty"`
}

// Heartbeat is the VM's periodic report.
type Heartbeat struct {
	LastSeq          int64  `json:"last_seq"`
	AckedSeq         int64  `json:"acked_seq"`
	BufferedSegments int    `json:"buffered_segments"`
	Retries          int64  `json:"retries"`
	Sideband         string `json:"sideband,omitempty"`
}

// Heartbeat actions.
const (
	ActionContinue = "continue"
	ActionEnd      = "end"
)

// HeartbeatAnswer tells the VM whether to go on.
type HeartbeatAnswer struct {
	Action string    `json:"action"`
	Reason EndReason `json:"reason,omitempty"`
}

// Speakers of transcript segments.
const (
	SpeakerCandidate   = "candidate"
	SpeakerInterviewer = "interviewer"
)

// Segment is one transcript line.
type Segment struct {
	Seq     int64     `json:"seq"`
	Speaker string    `json:"speaker"`
	Text    string    `json:"text"`
	ItemID  string    `json:"item_id,omitempty"`
	Failed  bool      `json:"failed,omitempty"`
	Created time.Time `json:"created_at,omitzero"`
}

// TranscriptBatch carries segments from the VM to the controller.
type TranscriptBatch struct {
	Segments []Segment `json:"segments"`
}

// TranscriptAck acknowledges the highest contiguous seq stored.
type TranscriptAck struct {
	AckedSeq int64 `json:"acked_seq"`
}

// Ended is the VM's last report.
type Ended struct {
	Reason  EndReason `json:"reason"`
	LastSeq int64     `json:"last_seq"`
	// Failed says the VM crashed: the session fails (with Reason) instead
	// of completing.
	Failed bool `json:"failed,omitempty"`
}

// HeartbeatInterval returns HeartbeatIntervalMS as a duration.
func (c VMConfig) HeartbeatInterval() time.Duration {
	return time.Duration(c.HeartbeatIntervalMS) * time.Millisecond
}

// IdleTimeout returns IdleTimeoutMS as a duration.
func (c VMConfig) IdleTimeout() time.Duration {
	return time.Duration(c.IdleTimeoutMS) * time.Millisecond
}
