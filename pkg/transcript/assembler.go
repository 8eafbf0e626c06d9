// Package transcript turns a realtime session's events into the
// interview's transcript and delivers it to the controller.
//
// The Assembler reads GA Realtime server events and produces segments in
// conversation order — the order of the conversation's items as given by
// previous_item_id — not in arrival order: a candidate's transcription
// often completes after the interviewer has already answered. Each segment
// gets the next seq (1, 2, 3, …) when it is released, once and for good.
//
// The Outbox keeps every segment until the controller acknowledges it and
// posts them in batches, retrying with backoff and jitter, so a controller
// restart or a network fault loses nothing.
package transcript

import (
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/interviewvm/controlplane/pkg/realtime"
	"github.com/interviewvm/controlplane/pkg/session"
)

// AssemblerConfig configures an Assembler.
type AssemblerConfig struct {
	// Logger receives debug lines; nil discards them.
	Logger *slog.Logger
	// Now stamps segments (the time their item was first seen). Default
	// time.Now.
	Now func() time.Time
}

// Assembler builds the transcript from realtime events. It is safe for
// concurrent use.
//
// Rules:
//   - A user message item is the candidate's line; its text is the input
//     transcription's completed transcript (or its input_text content). A
//     failed transcription settles the line as Failed, text empty.
//   - An assistant message item is the interviewer's line; its text is the
//     output audio transcript's done transcript (or output_text's). A
//     response that ends cancelled, failed or incomplete settles its
//     unfinished lines with the text received so far.
//   - Items are placed by input_audio_buffer.committed and
//     conversation.item.added/created/done/retrieved after their
//     previous_item_id; an unknown previous item places the new one last,
//     and when that previous item shows up later (retrieved), it goes
//     right before the line that named it, if that is not yet released.
//   - Lines are released in conversation order as soon as every earlier
//     line is settled; an unsettled line holds back the ones after it.
//   - Lines with no text that did not fail, and items that are not user
//     or assistant messages, yield no segment.
//   - Flush releases everything still held back: unsettled lines are
//     marked Failed and carry whatever text arrived. After Flush, events
//     are ignored.
type Assembler struct {
	log *slog.Logger
	now func() time.Time

	mu    sync.Mutex
	order []*line // placed lines, in conversation order
	// released counts the lines at the head of order that were released
	// (or skipped); a new line is never placed before them.
	released int
	lines    map[string]*line // by item id, placed or not
	// unplaced holds lines seen only through text events, in arrival
	// order, until an item event places them.
	unplaced []*line
	seq      int64
	flushed  bool
}

// line is one conversation item's transcript line.
type line struct {
	id      string
	prev    string // the previous item it declared, when not placed there
	speaker string // "" until known
	skip    bool   // not a user or assistant message
	placed  bool
	out     bool // released (or skipped at release)
	settled bool
	failed  bool
	text    string
	deltas  strings.Builder
	seen    time.Time
}

// NewAssembler returns an empty assembler.
func NewAssembler(cfg AssemblerConfig) *Assembler {
	a := &Assembler{log: cfg.Logger, now: cfg.Now, lines: make(map[string]*line)}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	if a.now == nil {
		a.now = time.Now
	}
	return a
}

// Apply feeds one server event and returns the segments it released, in
// order, with their seq.
func (a *Assembler) Apply(ev realtime.Event) []session.Segment {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.flushed {
		return nil
	}
	switch ev.Type {
	case realtime.EventInputCommitted:
		l := a.place(ev.ItemID, ev.PreviousItemID)
		if l != nil && l.speaker == "" {
			l.speaker = session.SpeakerCandidate
		}
	case realtime.EventItemAdded, realtime.EventItemCreated, realtime.EventItemDone, realtime.EventItemRetrieved:
		if ev.Item != nil {
			prev := ev.PreviousItemID
			if ev.Type == realtime.EventItemRetrieved {
				// A retrieved item carries no position: it is already
				// placed, goes before the line that named it, or last.
				prev = nil
			}
			a.item(*ev.Item, prev)
		}
	case realtime.EventInputTransDelta:
		if l := a.text(ev.ItemID, session.SpeakerCandidate); l != nil {
			l.deltas.WriteString(ev.Delta)
		}
	case realtime.EventInputTransDone:
		if l := a.text(ev.ItemID, session.SpeakerCandidate); l != nil {
			l.settle(ev.Transcript, false)
		}
	case realtime.EventInputTransFail:
		if l := a.text(ev.ItemID, session.SpeakerCandidate); l != nil {
			l.settle("", true)
			if ev.Error != nil {
				a.log.Debug("input transcription failed", "item_id", ev.ItemID, "code", ev.Error.Code)
			}
		}
	case realtime.EventOutputAudioTransDelta, realtime.EventOutputTextDelta:
		if l := a.text(ev.ItemID, session.SpeakerInterviewer); l != nil {
			l.deltas.WriteString(ev.Delta)
		}
	case realtime.EventOutputAudioTransDone:
		if l := a.text(ev.ItemID, session.SpeakerInterviewer); l != nil {
			l.settle(ev.Transcript, false)
		}
	case realtime.EventOutputTextDone:
		if l := a.text(ev.ItemID, session.SpeakerInterviewer); l != nil {
			l.settle(ev.Text, false)
		}
	case realtime.EventOutputItemDone:
		if ev.Item != nil {
			a.settleFromContent(*ev.Item)
		}
	case realtime.EventResponseDone:
		if ev.Response != nil {
			a.responseDone(*ev.Response)
		}
	case realtime.EventItemDeleted:
		a.remove(ev.ItemID)
	}
	return a.release()
}

// Flush settles and releases every line still held back and returns the
// segments. Later events are ignored.
func (a *Assembler) Flush() []session.Segment {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.flushed {
		return nil
	}
	for _, l := range a.unplaced {
		if !l.placed {
			l.placed = true
			a.order = append(a.order, l)
		}
	}
	a.unplaced = nil
	for _, l := range a.order[a.released:] {
		switch {
		case l.settled:
		case l.speaker == session.SpeakerInterviewer && l.deltas.Len() == 0:
			// A reply that never produced a word: nothing to record.
			l.skip, l.settled = true, true
		default:
			l.settle(l.deltas.String(), true)
		}
	}
	segs := a.release()
	a.flushed = true
	return segs
}

// LastSeq returns the last seq assigned; 0 before the first segment.
func (a *Assembler) LastSeq() int64 {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.seq
}

// Pending returns the ids of the user and assistant message items whose
// text is still awaited, in conversation order: after a sideband
// reconnect, a caller may retrieve them (conversation.item.retrieve).
func (a *Assembler) Pending() []string {
	a.mu.Lock()
	defer a.mu.Unlock()
	var ids []string
	for _, l := range a.order[a.released:] {
		if !l.settled && !l.skip {
			ids = append(ids, l.id)
		}
	}
	return ids
}

// Placed reports whether an item has its place in the conversation: when
// an event names an unknown previous item (events were missed, e.g. while
// the sideband was down), a caller may retrieve it.
func (a *Assembler) Placed(id string) bool {
	a.mu.Lock()
	defer a.mu.Unlock()
	l := a.lines[id]
	return l != nil && l.placed
}

// get returns the line of an item, creating it unplaced.
func (a *Assembler) get(id string) *line {
	l := a.lines[id]
	if l == nil {
		l = &line{id: id, seen: a.now()}
		a.lines[id] = l
	}
	return l
}

// place puts an item's line right after prev in conversation order and
// returns it; it does nothing more for a line already placed, and returns
// nil for an empty id. Without a known prev (nil, or an item never
// placed), the line goes right before an unreleased line that named it as
// its previous item, else last: a nil prev, which means "first", is only
// believed of the conversation's first item. A line is never placed
// before released ones.
func (a *Assembler) place(id string, prev *string) *line {
	if id == "" {
		return nil
	}
	l := a.get(id)
	if l.placed {
		return l
	}
	pos := len(a.order)
	switch i := slices.IndexFunc(a.order, func(x *line) bool { return prev != nil && x.id == *prev }); {
	case i >= 0:
		pos = i + 1
	case prev != nil && *prev != "":
		l.prev = *prev // unknown: remember it, should it show up
		fallthrough
	default:
		// A line that named this item as its unknown predecessor comes
		// right after it.
		if j := slices.IndexFunc(a.order[a.released:], func(x *line) bool { return x.prev == id }); j >= 0 {
			pos = a.released + j
		}
	}
	pos = max(pos, a.released)
	a.order = slices.Insert(a.order, pos, l)
	l.placed = true
	if i := slices.Index(a.unplaced, l); i >= 0 {
		a.unplaced = slices.Delete(a.unplaced, i, i+1)
	}
	return l
}

// item places a conversation item and takes what its content says.
func (a *Assembler) item(it realtime.Item, prev *string) {
	l := a.place(it.ID, prev)
	if l == nil {
		return
	}
	switch {
	case it.Type != "" && it.Type != realtime.ItemMessage:
		l.skip, l.settled = true, true
		return
	case it.Role == realtime.RoleUser:
		l.speaker = session.SpeakerCandidate
	case it.Role == realtime.RoleAssistant:
		l.speaker = session.SpeakerInterviewer
	case it.Role != "":
		l.skip, l.settled = true, true
		return
	}
	a.settleFromContent(it)
}

// settleFromContent settles a line whose item content already carries its
// text: typed input, or an audio part whose transcript is known.
func (a *Assembler) settleFromContent(it realtime.Item) {
	l := a.lines[it.ID]
	if l == nil || l.settled {
		return
	}
	var parts []string
	known := false
	for _, c := range it.Content {
		switch c.Type {
		case realtime.ContentInputText, realtime.ContentOutputText, "text":
			parts = append(parts, c.Text)
			known = true
		case realtime.ContentInputAudio, realtime.ContentOutputAudio, "audio":
			// An empty transcript may only mean "not yet".
			if c.Transcript != nil && *c.Transcript != "" {
				parts = append(parts, *c.Transcript)
				known = true
			}
		}
	}
	if known {
		l.settle(strings.Join(parts, " "), false)
	}
}

// text returns the line a text event is about, creating it unplaced (to be
// placed by its item event, or last at Flush) when the item is not known
// yet. It returns nil for an empty id or a line already released.
func (a *Assembler) text(id, speaker string) *line {
	if id == "" {
		return nil
	}
	l := a.lines[id]
	if l == nil {
		l = a.get(id)
		a.unplaced = append(a.unplaced, l)
	}
	if l.speaker == "" {
		l.speaker = speaker
	}
	if l.out {
		return nil
	}
	return l
}

// responseDone settles the output items of a finished response: from
// their content when it carries a transcript, else, for a response that
// did not complete, with the text received so far.
func (a *Assembler) responseDone(r realtime.Response) {
	for _, it := range r.Output {
		a.settleFromContent(it)
		l := a.lines[it.ID]
		if l == nil || l.settled || r.Status == realtime.ResponseCompleted || r.Status == realtime.ResponseInProgress {
			continue
		}
		if l.speaker == "" {
			l.speaker = session.SpeakerInterviewer
		}
		l.settle(l.deltas.String(), false)
	}
}

// remove forgets a deleted item that was not released yet.
func (a *Assembler) remove(id string) {
	l := a.lines[id]
	if l == nil || l.out {
		return
	}
	if i := slices.Index(a.order, l); i >= 0 {
		a.order = slices.Delete(a.order, i, i+1)
	}
	if i := slices.Index(a.unplaced, l); i >= 0 {
		a.unplaced = slices.Delete(a.unplaced, i, i+1)
	}
	delete(a.lines, id)
}

// settle fixes a line's text once.
func (l *line) settle(text string, failed bool) {
	if l.settled {
		return
	}
	l.settled, l.text, l.failed = true, strings.TrimSpace(text), failed
}

// release hands out the settled lines at the head of the unreleased part
// of the conversation, numbering them.
func (a *Assembler) release() []session.Segment {
	var segs []session.Segment
	for a.released < len(a.order) {
		l := a.order[a.released]
		if !l.settled {
			break
		}
		a.released++
		l.out = true
		if l.skip || l.speaker == "" || (l.text == "" && !l.failed) {
			continue
		}
		a.seq++
		segs = append(segs, session.Segment{
			Seq:     a.seq,
			Speaker: l.speaker,
			Text:    l.text,
			ItemID:  l.id,
			Failed:  l.failed,
			Created: l.seen,
		})
	}
	return segs
}
