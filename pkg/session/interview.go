package session

import (
	"encoding/json"
	"fmt"
	"time"
)

// Scope says whose rows a store call may see. Tenant scopes are what every
// request of the public API runs in; the system scope crosses tenants and is
// reserved for the internal API (a VM addressing its own session by id,
// after its token was checked) and the reconciler.
type Scope struct {
	TenantID string
	System   bool
}

// TenantScope returns the scope of one tenant.
func TenantScope(tenantID string) Scope { return Scope{TenantID: tenantID} }

// SystemScope returns the cross-tenant scope.
func SystemScope() Scope { return Scope{System: true} }

// PositionRecord is a stored position with weighted competencies.
type PositionRecord struct {
	ID           string       `json:"id"`
	TenantID     string       `json:"tenant_id"`
	Title        string       `json:"title"`
	Description  string       `json:"description"`
	Competencies []Competency `json:"competencies"`
	CreatedAt    time.Time    `json:"created_at"`
}

// Candidate is a person being interviewed.
type Candidate struct {
	ID       string `json:"id"`
	TenantID string `json:"tenant_id"`
	FullName string `json:"full_name"`
	Email    string `json:"email"`
	// ExternalID is the customer's own id (e.g. its ATS's), unique per
	// tenant when set.
	ExternalID *string   `json:"external_id"`
	Metadata   Metadata  `json:"metadata"`
	CreatedAt  time.Time `json:"created_at"`
}

// Interview is one interview session and the state of its VM.
type Interview struct {
	ID           string     `json:"id"`
	TenantID     string     `json:"tenant_id"`
	CandidateID  string     `json:"candidate_id"`
	PositionID   string     `json:"position_id"`
	CompanyID    *string    `json:"company_id"`
	Status       State      `json:"status"`
	EndReason    *EndReason `json:"end_reason"`
	Architecture string     `json:"architecture"`
	MaxDurationS int        `json:"max_duration_s"`
	// ExternalID is the customer's own id (e.g. its ATS's), unique per
	// tenant when set.
	ExternalID *string    `json:"external_id"`
	Metadata   Metadata   `json:"metadata"`
	Machine    *Machine   `json:"machine"`
	CreatedAt  time.Time  `json:"created_at"`
	StartedAt  *time.Time `json:"started_at"`
	ReadyAt    *time.Time `json:"ready_at"`
	EndedAt    *time.Time `json:"ended_at"`
	// ScheduledAt is when the interview is planned to start, if known: its
	// machine is pre-warmed ahead of it.
	ScheduledAt *time.Time `json:"scheduled_at"`
	// Region is the region the interview's machine runs in.
	Region string `json:"region"`
	// PrewarmedAt is when a pre-warmed (created, not booted) machine was
	// recorded for the interview.
	PrewarmedAt *time.Time `json:"prewarmed_at"`
	// PrewarmClaimedAt is set while a pre-warm create is in flight (or was
	// interrupted): no second machine may be created meanwhile.
	PrewarmClaimedAt *time.Time `json:"-"`
	// PrewarmRegion is the region the pre-warm was claimed for (the
	// interview's Region then). A pre-warmed machine whose PrewarmRegion is
	// no longer Region is replaced: see PrewarmStale.
	PrewarmRegion string `json:"-"`

	// TokenHash is the SHA-256 of the VM's session token.
	TokenHash       []byte     `json:"-"`
	LastHeartbeatAt *time.Time `json:"-"`
	// LastSeqReported is the last transcript seq the VM reported at its end.
	LastSeqReported *int64 `json:"-"`
	// AckedSeq is the highest seq up to which the stored transcript has no gap.
	AckedSeq int64 `json:"-"`
	// StateChangedAt is when the interview entered its current state.
	StateChangedAt time.Time `json:"-"`
	// VM is what the VM said in its last heartbeat.
	VM VMStats `json:"-"`
}

// TranscriptComplete reports whether every segment up to the last seq the
// VM reported is stored.
func (iv *Interview) TranscriptComplete() bool {
	return iv.LastSeqReported != nil && iv.AckedSeq >= *iv.LastSeqReported
}

// MaxDuration returns the interview's maximum length.
func (iv *Interview) MaxDuration() time.Duration {
	return time.Duration(iv.MaxDurationS) * time.Second
}

// Transition moves the interview to state to, recording why and who, and
// returns the event to append to its timeline. Reaching a terminal state
// sets EndedAt; failed and cancelled set EndReason when none is set yet.
func (iv *Interview) Transition(to State, reason EndReason, actor string, now time.Time) (Event, error) {
	from := iv.Status
	if err := CheckTransition(from, to); err != nil {
		return Event{}, err
	}
	if reason != "" && !reason.Valid() {
		return Event{}, fmt.Errorf("transition %s → %s: unknown end reason %q", from, to, reason)
	}
	iv.Status = to
	iv.StateChangedAt = now
	switch to {
	case StateProvisioning:
		iv.StartedAt = &now
	case StateReady:
		iv.ReadyAt = &now
	}
	if reason != "" && (to == StateEnding || to.Terminal()) && iv.EndReason == nil {
		r := reason
		iv.EndReason = &r
	}
	if to.Terminal() {
		iv.EndedAt = &now
		if iv.EndReason == nil {
			r := ReasonCompleted
			switch to {
			case StateCancelled:
				r = ReasonCancelled
			case StateFailed:
				r = ReasonProvisionFailed
			}
			iv.EndReason = &r
		}
	}
	return Event{At: now, From: from, To: to, Reason: string(reason), Actor: actor}, nil
}

// Connectable reports whether a browser can connect to the interview now:
// it is ready or in progress and its VM's address is known.
func (iv *Interview) Connectable() bool {
	return (iv.Status == StateReady || iv.Status == StateInProgress) && iv.Machine != nil && iv.Machine.Addr != ""
}

// PrewarmStale reports whether the interview's pre-warm (a claim or a
// pre-warmed machine) was made for another region than the interview's
// current one: its machine is in the wrong place and must be replaced.
func (iv *Interview) PrewarmStale() bool {
	return iv.PrewarmRegion != "" && iv.PrewarmRegion != iv.Region
}

// Page asks for one page of a list, newest first.
type Page struct {
	Limit int
	// Cursor is opaque, from a previous page's next_cursor; empty for the first.
	Cursor string
}

// Phase is the time an interview spent in one state.
type Phase struct {
	State   State   `json:"state"`
	Seconds float64 `json:"seconds"`
	// Ongoing: the interview is still in this state; Seconds is so far.
	Ongoing bool `json:"ongoing,omitempty"`
}

// Phases returns how long the interview stayed in each state it went
// through, from its creation (scheduled) to now or its terminal state.
func Phases(iv Interview, events []Event, now time.Time) []Phase {
	out := []Phase{}
	state, since := StateScheduled, iv.CreatedAt
	for _, ev := range events {
		if ev.From == ev.To {
			// Not a transition (an analysis' insights_ready, …).
			continue
		}
		out = append(out, Phase{State: state, Seconds: ev.At.Sub(since).Seconds()})
		state, since = ev.To, ev.At
	}
	if !state.Terminal() {
		out = append(out, Phase{State: state, Seconds: now.Sub(since).Seconds(), Ongoing: true})
	}
	return out
}

// VMStats is what a VM reports of its transcript delivery.
type VMStats struct {
	LastSeq          int64
	BufferedSegments int
	Retries          int64
}

// Limits of the customer's references on interviews and candidates.
const (
	MaxExternalIDLen    = 200
	MaxMetadataPairs    = 16
	MaxMetadataKeyLen   = 40
	MaxMetadataValueLen = 500
)

// Metadata is a customer's string pairs on an object; nil is written as {}.
type Metadata map[string]string

// MarshalJSON writes nil as an empty object.
func (m Metadata) MarshalJSON() ([]byte, error) {
	if m == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(map[string]string(m))
}

// InterviewFilter narrows a list of interviews; empty fields match all.
type InterviewFilter struct {
	Status     State
	ExternalID string
}

// OptionalString is a field of a partial update: Set when the request
// names it; nil Value then clears it.
type OptionalString struct {
	Set   bool
	Value *string
}

// PositionPatch changes a position; nil fields stay as they are, and a
// non-nil Competencies replaces the whole list.
type PositionPatch struct {
	Title        *string
	Description  *string
	Competencies []Competency
}

// CandidatePatch changes a candidate; nil fields stay as they are.
type CandidatePatch struct {
	FullName   *string
	Email      *string
	ExternalID OptionalString
	Metadata   map[string]string
}

// InterviewPatch changes a scheduled interview; nil fields stay as they are.
type InterviewPatch struct {
	// ScheduledAt reschedules; Region moves the (future) machine.
	ScheduledAt  *time.Time
	Region       *string
	MaxDurationS *int
	ExternalID   OptionalString
	Metadata     map[string]string
}
