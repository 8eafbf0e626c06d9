package session

import "time"

// WebhookEndpoint is a tenant's webhook receiver as listed: its signing
// secret is shown once, at creation.
type WebhookEndpoint struct {
	ID          string   `json:"id"`
	TenantID    string   `json:"-"`
	URL         string   `json:"url"`
	Events      []string `json:"events"`
	Description string   `json:"description"`
	// Disabled is true once the receiver answered 410 Gone: it gets
	// nothing more.
	Disabled  bool      `json:"disabled"`
	CreatedAt time.Time `json:"created_at"`
}

// WebhookDelivery is one message to one endpoint and where it stands.
type WebhookDelivery struct {
	ID          string `json:"id"`
	EndpointID  string `json:"endpoint_id"`
	InterviewID string `json:"interview_id,omitempty"`
	MessageID   string `json:"message_id"`
	EventType   string `json:"event_type"`
	// Status is pending, succeeded or failed.
	Status         string     `json:"status"`
	Attempts       int        `json:"attempts"`
	LastStatusCode *int       `json:"last_status_code"`
	LastError      string     `json:"last_error,omitempty"`
	LastAttemptAt  *time.Time `json:"last_attempt_at,omitempty"`
	NextAttemptAt  *time.Time `json:"next_attempt_at"`
	CreatedAt      time.Time  `json:"created_at"`
}
