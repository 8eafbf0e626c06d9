package rtcpeer

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"sync"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/session"
)

// SimulatedModel is the model name the simulated interviewer reports in
// session.created.
const SimulatedModel = "simulated-interviewer"

// InterviewerConfig configures an Interviewer.
type InterviewerConfig struct {
	Position session.Position
	// Questions is how many questions to ask; zero means
	// DefaultQuestions. There is always at least one per competency.
	Questions int
	// Logger receives debug lines; nil discards them.
	Logger *slog.Logger
	// OnEvent receives every server event the interviewer emits, in
	// order, before it is sent to the browser: the server-side copy of the
	// conversation. It is called with the interviewer's lock held and must
	// not call back into the Interviewer.
	OnEvent func(realtime.Event)
	// LateTranscripts delivers every second answer's transcription after
	// the interviewer's reply to it, as OpenAI's asynchronous input
	// transcription may.
	LateTranscripts bool
}

// Interviewer is the simulated interviewer of one call. On the events
// channel it speaks the GA event schema: session.created on open, then a
// greeting with the first question as an assistant message
// (response.output_audio_transcript.delta/done, response.done). A client
// conversation.item.create carrying a user input_text message is taken as
// the candidate speaking that text: the interviewer emits the events of a
// voice turn (speech started/stopped, input_audio_buffer.committed,
// conversation.item.added/done, input transcription delta and completed —
// or failed, when the text is blank) and answers with the next question.
// After the last answer it says goodbye and Done closes.
type Interviewer struct {
	cfg       InterviewerConfig
	log       *slog.Logger
	questions []string
	done      chan struct{}

	mu       sync.Mutex
	opened   bool
	finished bool
	next     int    // index of the next question
	answers  int    // answers received
	last     string // id of the conversation's last item
	ids      int    // id counter
}

// NewInterviewer returns an interviewer for one call.
func NewInterviewer(cfg InterviewerConfig) *Interviewer {
	n := cfg.Questions
	if n <= 0 {
		n = DefaultQuestions
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Interviewer{
		cfg:       cfg,
		log:       log,
		questions: Questions(cfg.Position, n),
		done:      make(chan struct{}),
	}
}

// Done is closed once the interviewer has said goodbye after its last
// question.
func (iv *Interviewer) Done() <-chan struct{} { return iv.done }

// Open starts the conversation: session.created, then the greeting and
// the first question. Use it as Config.OnOpen.
func (iv *Interviewer) Open(s Sender) {
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if iv.opened {
		return
	}
	iv.opened = true
	iv.emit(s, realtime.Event{
		Type:    realtime.EventSessionCreated,
		Session: iv.sessionJSON(),
	})
	title := strings.TrimSpace(iv.cfg.Position.Title)
	greeting := "Hello, and thank you for joining this interview."
	if title != "" {
		greeting = fmt.Sprintf("Hello, and thank you for joining this interview for the %s position.", title)
	}
	greeting += fmt.Sprintf(" I have %d questions for you. ", len(iv.questions))
	iv.speak(s, greeting+iv.questions[0])
	iv.next = 1
}

// Message handles one client event from the browser. Use it as
// Config.OnMessage.
func (iv *Interviewer) Message(s Sender, data []byte) {
	ev, err := realtime.ParseEvent(data)
	iv.mu.Lock()
	defer iv.mu.Unlock()
	if err != nil || ev.Type == "" {
		iv.fail(s, "", realtime.CodeInvalidClientEv, "The message is not a JSON event with a type.")
		return
	}
	switch ev.Type {
	case realtime.EventConversationItemCreate:
		text, ok := userText(ev.Item)
		switch {
		case !ok:
			iv.fail(s, ev.EventID, realtime.CodeInvalidValue,
				"The simulated interviewer accepts user messages with input_text content only.")
		case iv.finished:
			iv.fail(s, ev.EventID, realtime.CodeInvalidValue, "The interview is over.")
		case !iv.opened:
			iv.fail(s, ev.EventID, realtime.CodeInvalidValue, "The interview has not started.")
		default:
			iv.answer(s, text)
		}
	case realtime.EventSessionUpdate:
		// The browser cannot change the interviewer: echo the session as is.
		iv.emit(s, realtime.Event{Type: realtime.EventSessionUpdated, Session: iv.sessionJSON()})
	case realtime.EventResponseCreate, "response.cancel", "output_audio_buffer.clear",
		"input_audio_buffer.append", "input_audio_buffer.commit", "input_audio_buffer.clear",
		realtime.EventItemRetrieve:
		// Nothing to simulate.
	default:
		iv.fail(s, ev.EventID, realtime.CodeUnknownEvent, fmt.Sprintf("Unknown client event type %q.", ev.Type))
	}
}

// userText returns the text of a user message item's input_text parts.
func userText(item *realtime.Item) (string, bool) {
	if item == nil || item.Type != realtime.ItemMessage || item.Role != realtime.RoleUser {
		return "", false
	}
	var parts []string
	for _, c := range item.Content {
		if c.Type == realtime.ContentInputText {
			parts = append(parts, c.Text)
		}
	}
	if len(parts) == 0 {
		return "", false
	}
	return strings.Join(parts, " "), true
}

// answer plays the candidate's voice turn carrying text, then the
// interviewer's reply; iv.mu is held.
func (iv *Interviewer) answer(s Sender, text string) {
	uid := iv.id("item")
	prev := iv.prev()
	start, end := 1000*iv.answers, 1000*iv.answers+800
	iv.emit(s, realtime.Event{Type: realtime.EventSpeechStarted, ItemID: uid, AudioStartMS: &start})
	iv.emit(s, realtime.Event{Type: realtime.EventSpeechStopped, ItemID: uid, AudioEndMS: &end})
	iv.emit(s, realtime.Event{Type: realtime.EventInputCommitted, ItemID: uid, PreviousItemID: prev})
	item := &realtime.Item{
		ID: uid, Object: "realtime.item", Type: realtime.ItemMessage, Status: "completed", Role: realtime.RoleUser,
		Content: []realtime.Content{{Type: realtime.ContentInputAudio}},
	}
	iv.emit(s, realtime.Event{Type: realtime.EventItemAdded, PreviousItemID: prev, Item: item})
	iv.emit(s, realtime.Event{Type: realtime.EventItemDone, PreviousItemID: prev, Item: item})
	iv.last = uid
	iv.answers++

	zero := 0
	transcribe := func() {
		t := strings.TrimSpace(text)
		if t == "" {
			iv.emit(s, realtime.Event{
				Type: realtime.EventInputTransFail, ItemID: uid, ContentIndex: &zero,
				Error: &realtime.ErrorDetail{
					Type: realtime.TypeTranscription, Code: realtime.CodeUnintelligible,
					Message: "The audio could not be transcribed.",
				},
			})
			return
		}
		for _, d := range chunks(t) {
			iv.emit(s, realtime.Event{Type: realtime.EventInputTransDelta, ItemID: uid, ContentIndex: &zero, Delta: d})
		}
		iv.emit(s, realtime.Event{Type: realtime.EventInputTransDone, ItemID: uid, ContentIndex: &zero, Transcript: t})
	}
	late := iv.cfg.LateTranscripts && iv.answers%2 == 0
	if !late {
		transcribe()
	}
	if iv.next < len(iv.questions) {
		iv.speak(s, acknowledgement(iv.answers)+" "+iv.questions[iv.next])
		iv.next++
	} else {
		iv.speak(s, "Thank you, that was my last question. The interview is complete. Goodbye!")
		iv.finished = true
	}
	if late {
		transcribe()
	}
	if iv.finished {
		iv.log.Debug("simulated interview finished", "answers", iv.answers)
		close(iv.done)
	}
}

// acknowledgement varies how the interviewer takes an answer.
func acknowledgement(n int) string {
	switch n % 3 {
	case 0:
		return "Understood."
	case 1:
		return "Thank you."
	default:
		return "Thanks, that is helpful."
	}
}

// speak plays one assistant response saying text; iv.mu is held.
func (iv *Interviewer) speak(s Sender, text string) {
	rid, aid := iv.id("resp"), iv.id("item")
	prev := iv.prev()
	zero := 0
	iv.emit(s, realtime.Event{Type: realtime.EventResponseCreated, Response: &realtime.Response{
		ID: rid, Object: "realtime.response", Status: realtime.ResponseInProgress,
	}})
	item := &realtime.Item{ID: aid, Object: "realtime.item", Type: realtime.ItemMessage, Status: "in_progress", Role: realtime.RoleAssistant}
	iv.emit(s, realtime.Event{Type: realtime.EventOutputItemAdded, ResponseID: rid, OutputIndex: &zero, Item: item})
	iv.emit(s, realtime.Event{Type: realtime.EventItemAdded, PreviousItemID: prev, Item: item})
	iv.last = aid
	for _, d := range chunks(text) {
		iv.emit(s, realtime.Event{
			Type: realtime.EventOutputAudioTransDelta, ResponseID: rid, ItemID: aid,
			OutputIndex: &zero, ContentIndex: &zero, Delta: d,
		})
	}
	iv.emit(s, realtime.Event{
		Type: realtime.EventOutputAudioTransDone, ResponseID: rid, ItemID: aid,
		OutputIndex: &zero, ContentIndex: &zero, Transcript: text,
	})
	final := realtime.Item{
		ID: aid, Object: "realtime.item", Type: realtime.ItemMessage, Status: "completed", Role: realtime.RoleAssistant,
		Content: []realtime.Content{{Type: realtime.ContentOutputAudio, Transcript: &text}},
	}
	iv.emit(s, realtime.Event{Type: realtime.EventOutputItemDone, ResponseID: rid, OutputIndex: &zero, Item: &final})
	iv.emit(s, realtime.Event{Type: realtime.EventItemDone, PreviousItemID: prev, Item: &final})
	iv.emit(s, realtime.Event{Type: realtime.EventResponseDone, Response: &realtime.Response{
		ID: rid, Object: "realtime.response", Status: realtime.ResponseCompleted, Output: []realtime.Item{final},
	}})
}

// fail sends an error event about a client event; iv.mu is held.
func (iv *Interviewer) fail(s Sender, clientEventID, code, msg string) {
	iv.emit(s, realtime.Event{Type: realtime.EventError, Error: &realtime.ErrorDetail{
		Type: realtime.TypeInvalidRequest, Code: code, Message: msg, EventID: clientEventID,
	}})
}

// emit gives ev an event id, hands it to OnEvent and sends it to the
// browser; iv.mu is held.
func (iv *Interviewer) emit(s Sender, ev realtime.Event) {
	ev.EventID = iv.id("event")
	if iv.cfg.OnEvent != nil {
		iv.cfg.OnEvent(ev)
	}
	if err := s.Send(ev); err != nil {
		iv.log.Debug("event not delivered to the browser", "type", ev.Type, "error", err)
	}
}

// id returns a new id with the given prefix; iv.mu is held.
func (iv *Interviewer) id(prefix string) string {
	iv.ids++
	return fmt.Sprintf("%s_sim%05d", prefix, iv.ids)
}

// prev returns the previous_item_id for a new item; nil when it is the
// first. iv.mu is held.
func (iv *Interviewer) prev() *string {
	if iv.last == "" {
		return nil
	}
	p := iv.last
	return &p
}

// sessionJSON is the session object of session.created and
// session.updated.
func (iv *Interviewer) sessionJSON() json.RawMessage {
	b, _ := json.Marshal(map[string]any{
		"type":              realtime.SessionTypeRealtime,
		"object":            "realtime.session",
		"id":                "sess_simulated",
		"model":             SimulatedModel,
		"output_modalities": []string{"audio"},
	})
	return b
}

// chunks splits text into pieces of a few words, as transcript deltas
// arrive.
func chunks(text string) []string {
	words := strings.SplitAfter(text, " ")
	var out []string
	for i := 0; i < len(words); i += 4 {
		out = append(out, strings.Join(words[i:min(i+4, len(words))], ""))
	}
	return out
}
