// Package webhooks sends the control plane's lifecycle events to customers'
// endpoints the Standard Webhooks way: the event types and their JSON body,
// whsec_ secrets and v1 HMAC-SHA256 signatures, endpoint URL validation,
// an HTTP client that refuses private and metadata addresses at connect
// time, one delivery attempt with its outcome, the retry schedule, and the
// River worker that delivers a stored message until it succeeds, the
// endpoint is gone, or the schedule runs out.
//
// Endpoints and deliveries are stored elsewhere: the worker reads and
// records them through the Store interface declared here.
package webhooks

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"
)

// EventType names a webhook event.
type EventType string

// The event types an endpoint can subscribe to.
const (
	EventInterviewReady      EventType = "interview.ready"
	EventInterviewInProgress EventType = "interview.in_progress"
	EventInterviewCompleted  EventType = "interview.completed"
	EventInterviewFailed     EventType = "interview.failed"
	EventInterviewCancelled  EventType = "interview.cancelled"
	EventInsightsReady       EventType = "insights.ready"
	EventInsightsFailed      EventType = "insights.failed"
)

// EventTypes lists every event type, in a stable order.
var EventTypes = []EventType{
	EventInterviewReady, EventInterviewInProgress, EventInterviewCompleted,
	EventInterviewFailed, EventInterviewCancelled, EventInsightsReady, EventInsightsFailed,
}

// Valid reports whether t is a known event type.
func (t EventType) Valid() bool {
	for _, k := range EventTypes {
		if t == k {
			return true
		}
	}
	return false
}

// ErrInvalidEvents is wrapped by ParseEvents for a bad events list.
var ErrInvalidEvents = errors.New("invalid events")

// ParseEvents validates an endpoint's events list: at least one entry,
// each a known type; duplicates are dropped, order is kept.
func ParseEvents(events []string) ([]EventType, error) {
	if len(events) == 0 {
		return nil, fmt.Errorf("%w: at least one event type is required", ErrInvalidEvents)
	}
	seen := make(map[EventType]bool, len(events))
	out := make([]EventType, 0, len(events))
	for _, e := range events {
		t := EventType(e)
		if !t.Valid() {
			names := make([]string, len(EventTypes))
			for i, k := range EventTypes {
				names[i] = string(k)
			}
			return nil, fmt.Errorf("%w: unknown event type %q (known: %s)", ErrInvalidEvents, e, strings.Join(names, ", "))
		}
		if !seen[t] {
			seen[t] = true
			out = append(out, t)
		}
	}
	return out, nil
}

// Event is the JSON body of every webhook message.
type Event struct {
	Type      EventType `json:"type"`
	Timestamp time.Time `json:"timestamp"`
	Data      EventData `json:"data"`
}

// EventData carries the interview as the API's GET returns it.
type EventData struct {
	Interview json.RawMessage `json:"interview"`
}

// NewBody encodes the message body of an event about interview (any value
// that marshals to the API's interview object). The body is built once,
// stored with the delivery, and sent byte for byte on every attempt.
func NewBody(t EventType, at time.Time, interview any) ([]byte, error) {
	if !t.Valid() {
		return nil, fmt.Errorf("encode webhook event: unknown type %q", t)
	}
	raw, err := json.Marshal(interview)
	if err != nil {
		return nil, fmt.Errorf("encode webhook event %s: interview: %w", t, err)
	}
	body, err := json.Marshal(Event{Type: t, Timestamp: at.UTC().Truncate(time.Millisecond), Data: EventData{Interview: raw}})
	if err != nil {
		return nil, fmt.Errorf("encode webhook event %s: %w", t, err)
	}
	return body, nil
}
