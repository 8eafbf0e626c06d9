package openaitest

import (
	"encoding/json"
	"strings"
	"time"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/session"
)

// Step is one step of a call's script. Exactly one field is set.
type Step struct {
	// Event is a server event, sent to the call's sideband and events
	// channel alike. Its event_id is filled in when empty.
	Event *realtime.Event
	// AwaitClient waits for the next client event of this type, from the
	// events channel or the sideband (each one paces one step).
	AwaitClient string
	// Pause waits this long.
	Pause time.Duration
	// DropSideband breaks the sideband's connection without a close
	// frame, as a network fault would; the call goes on. The outage
	// lasts until an AwaitSideband step: until then a client dialling
	// the sideband has its connection cut before any answer, so every
	// event in between reaches the events channel only, however fast
	// the client re-dials.
	DropSideband bool
	// AwaitSideband ends the outage a DropSideband began and waits until
	// a sideband is attached again.
	AwaitSideband bool
	// HangUp ends the call from the API's side: the peer connection is
	// closed and the sideband gets a normal closure.
	HangUp bool
}

// Send returns a step sending ev.
func Send(ev realtime.Event) Step { return Step{Event: &ev} }

func ptr[T any](v T) *T { return &v }

// prevOf returns a previous_item_id: nil for "".
func prevOf(id string) *string {
	if id == "" {
		return nil
	}
	return ptr(id)
}

// Reply returns the events of one assistant response saying text: item
// itemID placed after prev ("" for the first item), transcript deltas,
// the done event and response.done.
func Reply(respID, itemID, prev, text string) []Step {
	zero := 0
	item := realtime.Item{ID: itemID, Object: "realtime.item", Type: realtime.ItemMessage, Status: "in_progress", Role: realtime.RoleAssistant}
	steps := []Step{
		Send(realtime.Event{Type: realtime.EventResponseCreated, Response: &realtime.Response{ID: respID, Object: "realtime.response", Status: realtime.ResponseInProgress}}),
		Send(realtime.Event{Type: realtime.EventOutputItemAdded, ResponseID: respID, OutputIndex: &zero, Item: &item}),
		Send(realtime.Event{Type: realtime.EventItemAdded, PreviousItemID: prevOf(prev), Item: &item}),
	}
	words := strings.SplitAfter(text, " ")
	for i := 0; i < len(words); i += 3 {
		steps = append(steps, Send(realtime.Event{
			Type: realtime.EventOutputAudioTransDelta, ResponseID: respID, ItemID: itemID,
			OutputIndex: &zero, ContentIndex: &zero, Delta: strings.Join(words[i:min(i+3, len(words))], ""),
		}))
	}
	done := realtime.Item{
		ID: itemID, Object: "realtime.item", Type: realtime.ItemMessage, Status: "completed", Role: realtime.RoleAssistant,
		Content: []realtime.Content{{Type: realtime.ContentOutputAudio, Transcript: ptr(text)}},
	}
	return append(steps,
		Send(realtime.Event{Type: realtime.EventOutputAudioTransDone, ResponseID: respID, ItemID: itemID, OutputIndex: &zero, ContentIndex: &zero, Transcript: text}),
		Send(realtime.Event{Type: realtime.EventItemDone, PreviousItemID: prevOf(prev), Item: &done}),
		Send(realtime.Event{Type: realtime.EventResponseDone, Response: &realtime.Response{
			ID: respID, Object: "realtime.response", Status: realtime.ResponseCompleted, Output: []realtime.Item{done},
		}}),
	)
}

// Speech returns the events of the caller speaking one turn: item itemID
// placed after prev, as server VAD reports it. Its transcription follows
// separately (Transcribed, TranscriptionFailed).
func Speech(itemID, prev string) []Step {
	item := realtime.Item{
		ID: itemID, Object: "realtime.item", Type: realtime.ItemMessage, Status: "completed", Role: realtime.RoleUser,
		Content: []realtime.Content{{Type: realtime.ContentInputAudio}},
	}
	return []Step{
		Send(realtime.Event{Type: realtime.EventSpeechStarted, ItemID: itemID, AudioStartMS: ptr(0)}),
		Send(realtime.Event{Type: realtime.EventSpeechStopped, ItemID: itemID, AudioEndMS: ptr(900)}),
		Send(realtime.Event{Type: realtime.EventInputCommitted, ItemID: itemID, PreviousItemID: prevOf(prev)}),
		Send(realtime.Event{Type: realtime.EventItemAdded, PreviousItemID: prevOf(prev), Item: &item}),
		Send(realtime.Event{Type: realtime.EventItemDone, PreviousItemID: prevOf(prev), Item: &item}),
	}
}

// TranscriptionDelta returns one input transcription delta.
func TranscriptionDelta(itemID, delta string) Step {
	return Send(realtime.Event{Type: realtime.EventInputTransDelta, ItemID: itemID, ContentIndex: ptr(0), Delta: delta})
}

// Transcribed returns the completed input transcription of an item.
func Transcribed(itemID, text string) Step {
	return Send(realtime.Event{Type: realtime.EventInputTransDone, ItemID: itemID, ContentIndex: ptr(0), Transcript: text})
}

// TranscriptionFailed returns a failed input transcription of an item.
func TranscriptionFailed(itemID string) Step {
	return Send(realtime.Event{Type: realtime.EventInputTransFail, ItemID: itemID, ContentIndex: ptr(0), Error: &realtime.ErrorDetail{
		Type: realtime.TypeTranscription, Code: realtime.CodeUnintelligible, Message: "The audio could not be transcribed.",
	}})
}

// ErrorEvent returns a recoverable error event.
func ErrorEvent(code, msg string) Step {
	return Send(realtime.Event{Type: realtime.EventError, Error: &realtime.ErrorDetail{
		Type: realtime.TypeInvalidRequest, Code: code, Message: msg,
	}})
}

// Lines of the default script, in conversation order.
const (
	lineA1 = "Hello, and thanks for joining. Tell me about a system you built."
	lineU1 = "I built a scheduler for batch jobs in Go."
	lineA2 = "Interesting. How did you test it?"
	lineA3 = "Sorry, I did not catch that. Could you say it again?"
	lineU3 = "We ran every job twice,"
	lineU4 = "once against a fake clock and once for real."
	lineA4 = "Thank you, that is all from me."
)

// DefaultScript is an interview with the ordering quirks of the real API:
// the greeting; after the browser's first conversation.item.create, the
// candidate's turn whose transcription completes only after the
// interviewer's reply; a turn whose transcription fails; a recoverable
// error event; a reply; then two quick candidate turns whose
// transcriptions complete in reverse order; and a closing reply. The call
// then stays up until it is hung up. DefaultTranscript is what it yields.
func DefaultScript() []Step {
	var s []Step
	add := func(steps ...Step) { s = append(s, steps...) }
	add(Reply("resp_A1", "item_A1", "", lineA1)...)
	add(Step{AwaitClient: realtime.EventConversationItemCreate})
	add(Speech("item_U1", "item_A1")...)
	add(TranscriptionDelta("item_U1", "I built a "))
	add(Reply("resp_A2", "item_A2", "item_U1", lineA2)...)
	add(TranscriptionDelta("item_U1", "scheduler for batch jobs in Go."))
	add(Transcribed("item_U1", lineU1))
	add(Speech("item_U2", "item_A2")...)
	add(TranscriptionFailed("item_U2"))
	add(ErrorEvent(realtime.CodeInvalidValue, "Invalid value for 'item.content': the fake's scripted error."))
	add(Reply("resp_A3", "item_A3", "item_U2", lineA3)...)
	add(Speech("item_U3", "item_A3")...)
	add(Speech("item_U4", "item_U3")...)
	add(Transcribed("item_U4", lineU4))
	add(Transcribed("item_U3", lineU3))
	add(Reply("resp_A4", "item_A4", "item_U4", lineA4)...)
	return s
}

// DefaultTranscript is the transcript DefaultScript yields, in order,
// without seq or times.
func DefaultTranscript() []session.Segment {
	c, i := session.SpeakerCandidate, session.SpeakerInterviewer
	return []session.Segment{
		{Speaker: i, Text: lineA1, ItemID: "item_A1"},
		{Speaker: c, Text: lineU1, ItemID: "item_U1"},
		{Speaker: i, Text: lineA2, ItemID: "item_A2"},
		{Speaker: c, Text: "", ItemID: "item_U2", Failed: true},
		{Speaker: i, Text: lineA3, ItemID: "item_A3"},
		{Speaker: c, Text: lineU3, ItemID: "item_U3"},
		{Speaker: c, Text: lineU4, ItemID: "item_U4"},
		{Speaker: i, Text: lineA4, ItemID: "item_A4"},
	}
}

// encode marshals an event for the wire.
func encode(ev realtime.Event) []byte {
	b, _ := json.Marshal(ev)
	return b
}
