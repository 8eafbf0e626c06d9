package realtime

import (
	"encoding/json"
	"fmt"
)

// Server event types of the GA schema that the broker and the transcript
// assembler act on. Every other type is passed through untouched.
const (
	EventSessionCreated = "session.created"
	EventSessionUpdated = "session.updated"
	EventError          = "error"

	EventSpeechStarted   = "input_audio_buffer.speech_started"
	EventSpeechStopped   = "input_audio_buffer.speech_stopped"
	EventInputCommitted  = "input_audio_buffer.committed"
	EventItemAdded       = "conversation.item.added"
	EventItemDone        = "conversation.item.done"
	EventItemCreated     = "conversation.item.created" // still listed in the GA spec
	EventItemRetrieved   = "conversation.item.retrieved"
	EventItemDeleted     = "conversation.item.deleted"
	EventInputTransDelta = "conversation.item.input_audio_transcription.delta"
	EventInputTransDone  = "conversation.item.input_audio_transcription.completed"
	EventInputTransFail  = "conversation.item.input_audio_transcription.failed"

	EventResponseCreated        = "response.created"
	EventResponseDone           = "response.done"
	EventOutputItemAdded        = "response.output_item.added"
	EventOutputItemDone         = "response.output_item.done"
	EventOutputAudioTransDelta  = "response.output_audio_transcript.delta"
	EventOutputAudioTransDone   = "response.output_audio_transcript.done"
	EventOutputTextDelta        = "response.output_text.delta"
	EventOutputTextDone         = "response.output_text.done"
	EventOutputAudioBufStarted  = "output_audio_buffer.started"
	EventOutputAudioBufStopped  = "output_audio_buffer.stopped"
	EventConversationItemCreate = "conversation.item.create" // client event
	EventSessionUpdate          = "session.update"           // client event
	EventResponseCreate         = "response.create"          // client event
	EventItemRetrieve           = "conversation.item.retrieve"
)

// Item roles and content part types of the GA schema.
const (
	RoleUser      = "user"
	RoleAssistant = "assistant"
	RoleSystem    = "system"

	ItemMessage = "message"

	ContentInputText   = "input_text"
	ContentInputAudio  = "input_audio"
	ContentOutputText  = "output_text"
	ContentOutputAudio = "output_audio"
)

// Response statuses of response.done.
const (
	ResponseCompleted  = "completed"
	ResponseCancelled  = "cancelled"
	ResponseFailed     = "failed"
	ResponseIncomplete = "incomplete"
	ResponseInProgress = "in_progress"
)

// Event is one Realtime event, client or server, with the fields the
// control plane reads. Parsing is lenient: unknown fields are ignored, and
// a field absent from an event type stays zero.
type Event struct {
	Type    string `json:"type"`
	EventID string `json:"event_id,omitempty"`

	ItemID string `json:"item_id,omitempty"`
	// PreviousItemID places an item in the conversation: it follows that
	// item. Nil means the item comes first (JSON null) or the field was
	// absent.
	PreviousItemID *string `json:"previous_item_id,omitempty"`
	ResponseID     string  `json:"response_id,omitempty"`
	OutputIndex    *int    `json:"output_index,omitempty"`
	ContentIndex   *int    `json:"content_index,omitempty"`

	// Delta is the increment of a *.delta event.
	Delta string `json:"delta,omitempty"`
	// Transcript is the whole text of a transcription's completed event or
	// of an output audio transcript's done event.
	Transcript string `json:"transcript,omitempty"`
	// Text is the whole text of response.output_text.done.
	Text string `json:"text,omitempty"`

	AudioStartMS *int `json:"audio_start_ms,omitempty"`
	AudioEndMS   *int `json:"audio_end_ms,omitempty"`

	Item     *Item           `json:"item,omitempty"`
	Response *Response       `json:"response,omitempty"`
	Error    *ErrorDetail    `json:"error,omitempty"`
	Session  json.RawMessage `json:"session,omitempty"`
}

// Item is a conversation item.
type Item struct {
	ID      string    `json:"id,omitempty"`
	Object  string    `json:"object,omitempty"`
	Type    string    `json:"type"`
	Status  string    `json:"status,omitempty"`
	Role    string    `json:"role,omitempty"`
	Content []Content `json:"content,omitempty"`
}

// Content is one content part of a message item.
type Content struct {
	Type string `json:"type"`
	Text string `json:"text,omitempty"`
	// Transcript of an audio part; nil until known (JSON null).
	Transcript *string `json:"transcript,omitempty"`
}

// Response is the response object of response.created and response.done.
type Response struct {
	ID            string         `json:"id,omitempty"`
	Object        string         `json:"object,omitempty"`
	Status        string         `json:"status,omitempty"`
	StatusDetails *StatusDetails `json:"status_details,omitempty"`
	Output        []Item         `json:"output,omitempty"`
}

// StatusDetails says why a response ended the way it did.
type StatusDetails struct {
	Type   string `json:"type,omitempty"`
	Reason string `json:"reason,omitempty"`
}

// ErrorDetail is the error of an "error" event or of a failed
// transcription.
type ErrorDetail struct {
	Type    string `json:"type,omitempty"`
	Code    string `json:"code,omitempty"`
	Message string `json:"message,omitempty"`
	Param   string `json:"param,omitempty"`
	EventID string `json:"event_id,omitempty"`
}

// SessionInstructions returns the instructions of a session.created or
// session.updated event, and whether the event carried any.
func (e Event) SessionInstructions() (string, bool) {
	if len(e.Session) == 0 {
		return "", false
	}
	var s struct {
		Instructions *string `json:"instructions"`
	}
	if json.Unmarshal(e.Session, &s) != nil || s.Instructions == nil {
		return "", false
	}
	return *s.Instructions, true
}

// ParseEvent decodes one event.
func ParseEvent(data []byte) (Event, error) {
	var ev Event
	if err := json.Unmarshal(data, &ev); err != nil {
		return Event{}, fmt.Errorf("decode realtime event: %w", err)
	}
	return ev, nil
}
