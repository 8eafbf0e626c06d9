package transcript_test

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.uber.org/goleak"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/realtime/openaitest"
	"github.com/interviewvm/controlplane/pkg/session"
	"github.com/interviewvm/controlplane/pkg/transcript"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	cand = session.SpeakerCandidate
	intv = session.SpeakerInterviewer
)

// events returns the server events of a script.
func events(steps ...[]openaitest.Step) []realtime.Event {
	var evs []realtime.Event
	for _, ss := range steps {
		for _, s := range ss {
			if s.Event != nil {
				evs = append(evs, *s.Event)
			}
		}
	}
	return evs
}

func one(s openaitest.Step) []openaitest.Step { return []openaitest.Step{s} }

// feed applies events and returns every segment released.
func feed(a *transcript.Assembler, evs []realtime.Event) []session.Segment {
	var segs []session.Segment
	for _, ev := range evs {
		segs = append(segs, a.Apply(ev)...)
	}
	return segs
}

var ignoreTime = cmpopts.IgnoreFields(session.Segment{}, "Created")

func numbered(segs []session.Segment) []session.Segment {
	out := make([]session.Segment, len(segs))
	for i, s := range segs {
		s.Seq = int64(i + 1)
		out[i] = s
	}
	return out
}

func TestDefaultScriptTranscript(t *testing.T) {
	a := transcript.NewAssembler(transcript.AssemblerConfig{})
	got := feed(a, events(openaitest.DefaultScript()))
	got = append(got, a.Flush()...)
	if diff := cmp.Diff(numbered(openaitest.DefaultTranscript()), got, ignoreTime); diff != "" {
		t.Errorf("transcript (-want +got):\n%s", diff)
	}
	if a.LastSeq() != int64(len(got)) {
		t.Errorf("LastSeq = %d, want %d", a.LastSeq(), len(got))
	}
}

func TestLateTranscriptionHoldsBackLaterLines(t *testing.T) {
	a := transcript.NewAssembler(transcript.AssemblerConfig{})
	if got := feed(a, events(openaitest.Reply("r1", "a1", "", "Question one?"))); len(got) != 1 || got[0].Seq != 1 {
		t.Fatalf("greeting released %+v, want seq 1", got)
	}
	if got := feed(a, events(openaitest.Speech("u1", "a1"), openaitest.Reply("r2", "a2", "u1", "Question two?"))); len(got) != 0 {
		t.Fatalf("released %+v before the candidate's transcription", got)
	}
	if ids := a.Pending(); !cmp.Equal(ids, []string{"u1"}) {
		t.Errorf("Pending = %q, want [u1]", ids)
	}
	got := feed(a, events(one(openaitest.Transcribed("u1", "Answer one."))))
	want := []session.Segment{
		{Seq: 2, Speaker: cand, Text: "Answer one.", ItemID: "u1"},
		{Seq: 3, Speaker: intv, Text: "Question two?", ItemID: "a2"},
	}
	if diff := cmp.Diff(want, got, ignoreTime); diff != "" {
		t.Errorf("released (-want +got):\n%s", diff)
	}
}

func TestOutOfOrderUserTranscripts(t *testing.T) {
	a := transcript.NewAssembler(transcript.AssemblerConfig{})
	got := feed(a, events(
		openaitest.Reply("r1", "a1", "", "Tell me more."),
		openaitest.Speech("u1", "a1"),
		openaitest.Speech("u2", "u1"),
		openaitest.Speech("u3", "u2"),
		one(openaitest.Transcribed("u3", "third")),
		one(openaitest.TranscriptionFailed("u2")),
		one(openaitest.Transcribed("u1", "first")),
	))
	want := []session.Segment{
		{Seq: 1, Speaker: intv, Text: "Tell me more.", ItemID: "a1"},
		{Seq: 2, Speaker: cand, Text: "first", ItemID: "u1"},
		{Seq: 3, Speaker: cand, Text: "", ItemID: "u2", Failed: true},
		{Seq: 4, Speaker: cand, Text: "third", ItemID: "u3"},
	}
	if diff := cmp.Diff(want, got, ignoreTime); diff != "" {
		t.Errorf("transcript (-want +got):\n%s", diff)
	}
}

func TestTextBeforeItem(t *testing.T) {
	// A transcription that arrives before its item is placed waits for it.
	a := transcript.NewAssembler(transcript.AssemblerConfig{})
	got := feed(a, events(
		one(openaitest.Transcribed("u1", "early bird")),
		openaitest.Reply("r1", "a1", "", "Hello."),
		openaitest.Speech("u1", "a1"),
	))
	want := []session.Segment{
		{Seq: 1, Speaker: intv, Text: "Hello.", ItemID: "a1"},
		{Seq: 2, Speaker: cand, Text: "early bird", ItemID: "u1"},
	}
	if diff := cmp.Diff(want, got, ignoreTime); diff != "" {
		t.Errorf("transcript (-want +got):\n%s", diff)
	}
}

func TestItemsAndResponses(t *testing.T) {
	str := func(s string) *string { return &s }
	a := transcript.NewAssembler(transcript.AssemblerConfig{})
	evs := []realtime.Event{
		// A typed user message carries its text.
		{Type: realtime.EventItemAdded, Item: &realtime.Item{ID: "t1", Type: realtime.ItemMessage, Role: realtime.RoleUser,
			Content: []realtime.Content{{Type: realtime.ContentInputText, Text: "typed hello"}}}},
		// A system message and a function call give no line.
		{Type: realtime.EventItemAdded, PreviousItemID: str("t1"), Item: &realtime.Item{ID: "s1", Type: realtime.ItemMessage, Role: realtime.RoleSystem,
			Content: []realtime.Content{{Type: realtime.ContentInputText, Text: "be nice"}}}},
		{Type: realtime.EventItemAdded, PreviousItemID: str("s1"), Item: &realtime.Item{ID: "f1", Type: "function_call"}},
		// An interrupted reply keeps what was said.
		{Type: realtime.EventItemAdded, PreviousItemID: str("f1"), Item: &realtime.Item{ID: "a1", Type: realtime.ItemMessage, Role: realtime.RoleAssistant}},
		{Type: realtime.EventOutputAudioTransDelta, ItemID: "a1", Delta: "Let me "},
		{Type: realtime.EventOutputAudioTransDelta, ItemID: "a1", Delta: "think"},
		{Type: realtime.EventResponseDone, Response: &realtime.Response{ID: "r1", Status: realtime.ResponseCancelled,
			Output: []realtime.Item{{ID: "a1", Type: realtime.ItemMessage, Role: realtime.RoleAssistant}}}},
		// A deleted item is forgotten.
		{Type: realtime.EventInputCommitted, ItemID: "u9", PreviousItemID: str("a1")},
		{Type: realtime.EventItemDeleted, ItemID: "u9"},
		// An item whose previous item is unknown goes last.
		{Type: realtime.EventItemAdded, PreviousItemID: str("item_never_seen"), Item: &realtime.Item{ID: "a2", Type: realtime.ItemMessage,
			Role: realtime.RoleAssistant, Content: []realtime.Content{{Type: realtime.ContentOutputAudio, Transcript: str("Known already.")}}}},
		// A late event about a released line changes nothing.
		{Type: realtime.EventInputTransDone, ItemID: "t1", Transcript: "rewritten"},
	}
	got := feed(a, evs)
	want := []session.Segment{
		{Seq: 1, Speaker: cand, Text: "typed hello", ItemID: "t1"},
		{Seq: 2, Speaker: intv, Text: "Let me think", ItemID: "a1"},
		{Seq: 3, Speaker: intv, Text: "Known already.", ItemID: "a2"},
	}
	if diff := cmp.Diff(want, got, ignoreTime); diff != "" {
		t.Errorf("transcript (-want +got):\n%s", diff)
	}
}

func TestFlushSettlesWhatIsLeft(t *testing.T) {
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	a := transcript.NewAssembler(transcript.AssemblerConfig{Now: func() time.Time { return at }})
	got := feed(a, events(
		openaitest.Reply("r1", "a1", "", "Hi."),
		openaitest.Speech("u1", "a1"),
		one(openaitest.TranscriptionDelta("u1", "half a sen")),
		openaitest.Reply("r2", "a2", "u1", "Go on."),
		// The interviewer started a reply that never finished, with no words.
		one(openaitest.Send(realtime.Event{Type: realtime.EventItemAdded, PreviousItemID: func() *string { s := "a2"; return &s }(),
			Item: &realtime.Item{ID: "a3", Type: realtime.ItemMessage, Role: realtime.RoleAssistant}})),
		// Text for an item never placed.
		one(openaitest.Transcribed("u7", "orphan")),
	))
	if len(got) != 1 {
		t.Fatalf("released %+v before the flush, want the greeting", got)
	}
	got = a.Flush()
	want := []session.Segment{
		{Seq: 2, Speaker: cand, Text: "half a sen", ItemID: "u1", Failed: true, Created: at},
		{Seq: 3, Speaker: intv, Text: "Go on.", ItemID: "a2", Created: at},
		{Seq: 4, Speaker: cand, Text: "orphan", ItemID: "u7", Created: at},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("flushed (-want +got):\n%s", diff)
	}
	// Nothing after the flush: seq 5 is never handed out.
	if more := feed(a, events(openaitest.Reply("r9", "a9", "a3", "Too late."))); len(more) != 0 || a.Flush() != nil {
		t.Errorf("released %+v after the flush", more)
	}
	if a.LastSeq() != 4 {
		t.Errorf("LastSeq = %d, want 4", a.LastSeq())
	}
}

// TestSidebandGap is a sideband that drops mid-interview and reconnects:
// the events sent while it was down are lost. The broker retrieves the
// lines still pending (conversation.item.retrieve) and any previous item a
// later event names but the assembler never placed; the retrieved items
// settle the pending lines and slot the missed ones back before the line
// that named them. Only items nothing refers to again would be missing.
func TestSidebandGap(t *testing.T) {
	a := transcript.NewAssembler(transcript.AssemblerConfig{})
	got := feed(a, events(
		openaitest.Reply("r1", "a1", "", "First question?"),
		openaitest.Speech("u1", "a1"),
	))
	// Down: u1's transcription and the whole reply a2 are missed.
	if ids := a.Pending(); !cmp.Equal(ids, []string{"u1"}) {
		t.Fatalf("Pending = %q", ids)
	}
	str := func(s string) *string { return &s }
	retrieved := func(id, role, typ, text string) realtime.Event {
		return realtime.Event{Type: realtime.EventItemRetrieved, Item: &realtime.Item{
			ID: id, Type: realtime.ItemMessage, Role: role, Content: []realtime.Content{{Type: typ, Transcript: str(text)}},
		}}
	}
	got = append(got, a.Apply(retrieved("u1", realtime.RoleUser, realtime.ContentInputAudio, "Heard while down."))...)
	// Back: u2 names the missed a2 as its previous item.
	got = append(got, feed(a, events(openaitest.Speech("u2", "a2")))...)
	if a.Placed("a2") || !a.Placed("u2") {
		t.Fatalf("Placed(a2) = %v, Placed(u2) = %v", a.Placed("a2"), a.Placed("u2"))
	}
	got = append(got, a.Apply(retrieved("a2", realtime.RoleAssistant, realtime.ContentOutputAudio, "Missed reply."))...)
	got = append(got, feed(a, events(one(openaitest.Transcribed("u2", "Second answer."))))...)
	want := []session.Segment{
		{Seq: 1, Speaker: intv, Text: "First question?", ItemID: "a1"},
		{Seq: 2, Speaker: cand, Text: "Heard while down.", ItemID: "u1"},
		{Seq: 3, Speaker: intv, Text: "Missed reply.", ItemID: "a2"},
		{Seq: 4, Speaker: cand, Text: "Second answer.", ItemID: "u2"},
	}
	if diff := cmp.Diff(want, got, ignoreTime); diff != "" {
		t.Errorf("transcript (-want +got):\n%s", diff)
	}
}
