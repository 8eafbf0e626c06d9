package livefeed

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/interviewvm/controlplane/pkg/session"
)

// memSource is an in-memory transcript that counts its reads.
type memSource struct {
	mu     sync.Mutex
	segs   map[string][]session.Segment
	status session.State
	reads  map[string]int
}

func newMemSource() *memSource {
	return &memSource{segs: map[string][]session.Segment{}, reads: map[string]int{}, status: session.StateInProgress}
}

func (m *memSource) add(id string, seq int64) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.segs[id] = append(m.segs[id], session.Segment{Seq: seq, Speaker: session.SpeakerCandidate, Text: "t"})
}

func (m *memSource) readsOf(id string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.reads[id]
}

func (m *memSource) Transcript(_ context.Context, _ session.Scope, id string, after int64, limit int) ([]session.Segment, session.Interview, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.reads[id]++
	var out []session.Segment
	for _, s := range m.segs[id] {
		if s.Seq > after && len(out) < limit {
			out = append(out, s)
		}
	}
	return out, session.Interview{ID: id, Status: m.status}, nil
}

func quiet() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

// next waits for the next update of ch (the deadline only guards a hang).
func next(t *testing.T, ch <-chan Update) (Update, bool) {
	t.Helper()
	select {
	case u, ok := <-ch:
		return u, ok
	case <-time.After(30 * time.Second):
		t.Fatal("no update")
		return Update{}, false
	}
}

func TestReadsPerChangeDoNotDependOnSubscribers(t *testing.T) {
	for _, n := range []int{1, 10, 100} {
		src := newMemSource()
		h := New(src, 0, quiet(), nil)
		subs := make([]<-chan Update, n)
		for i := range subs {
			ch, cancel := h.Subscribe("iv", 0)
			defer cancel()
			subs[i] = ch
		}
		const posts = 5
		for p := int64(1); p <= posts; p++ {
			src.add("iv", p)
			h.Publish("iv", 0)
			// Every subscriber receives the post's segment (coalesced
			// wake-ups may deliver several at once).
			for i, ch := range subs {
				for got := false; !got; {
					u, ok := next(t, ch)
					if !ok {
						t.Fatalf("n=%d: subscriber %d dropped", n, i)
					}
					got = len(u.Segments) > 0 && u.Segments[len(u.Segments)-1].Seq == p
				}
			}
		}
		if reads := src.readsOf("iv"); reads > posts {
			t.Fatalf("n=%d subscribers: %d store reads for %d posts, want at most one per post", n, reads, posts)
		}
		h.Close()
	}
}

func TestSlowSubscriberIsDroppedWithoutBlockingOthers(t *testing.T) {
	src := newMemSource()
	h := New(src, 2, quiet(), nil)
	defer h.Close()
	slow, cancelSlow := h.Subscribe("iv", 0)
	defer cancelSlow()
	fast, cancelFast := h.Subscribe("iv", 0)
	defer cancelFast()
	other, cancelOther := h.Subscribe("other", 0)
	defer cancelOther()
	for p := int64(1); p <= 10; p++ {
		src.add("iv", p)
		h.Publish("iv", 0)
		for got := false; !got; { // fast keeps up
			u, ok := next(t, fast)
			if !ok {
				t.Fatal("fast subscriber dropped")
			}
			got = len(u.Segments) > 0 && u.Segments[len(u.Segments)-1].Seq == p
		}
	}
	// slow never read: its buffer of 2 overflowed, so it was dropped.
	n := 0
	for range slow {
		n++
	}
	if n > 2 {
		t.Fatalf("slow subscriber got %d buffered updates, buffer is 2", n)
	}
	if h.Subscribers() != 2 {
		t.Fatalf("subscribers = %d, want 2 (fast, other)", h.Subscribers())
	}
	if src.readsOf("other") != 0 {
		t.Fatal("publishing iv read other")
	}
	// The empty key wakes every reader.
	src.add("other", 1)
	h.Publish("", 0)
	if u, ok := next(t, other); !ok || len(u.Segments) != 1 {
		t.Fatalf("other after publish to everyone: %+v %v", u, ok)
	}
	cancelFast()
	cancelFast()
	if h.Subscribers() != 1 {
		t.Fatalf("subscribers after cancel = %d", h.Subscribers())
	}
	h.Publish("iv", 0) // no reader left: nothing happens
}

func TestNewSubscriberStartsFromItsOwnPositionAndCloseEndsAll(t *testing.T) {
	src := newMemSource()
	h := New(src, 0, quiet(), nil)
	for p := int64(1); p <= 3; p++ {
		src.add("iv", p)
	}
	ch, cancel := h.Subscribe("iv", 2)
	defer cancel()
	h.Publish("iv", 0)
	u, ok := next(t, ch)
	if !ok || len(u.Segments) != 1 || u.Segments[0].Seq != 3 {
		t.Fatalf("first update from 2: %+v", u)
	}
	h.Close()
	if _, ok := next(t, ch); ok {
		t.Fatal("channel open after Close")
	}
	late, _ := h.Subscribe("iv", 0)
	if _, ok := next(t, late); ok {
		t.Fatal("subscription after Close is open")
	}
}

func segs(from, to int64) []session.Segment {
	var out []session.Segment
	for s := from; s <= to; s++ {
		out = append(out, session.Segment{Seq: s, Speaker: session.SpeakerCandidate, Text: "t"})
	}
	return out
}

// TestAppendedReachesEverySubscriberWithoutARead: segments the store of
// this replica committed go to every subscriber from memory, encoded once;
// the notification of the same commit then reads nothing.
func TestAppendedReachesEverySubscriberWithoutARead(t *testing.T) {
	src := newMemSource()
	h := New(src, 0, quiet(), nil)
	defer h.Close()
	subs := make([]<-chan Update, 100)
	for i := range subs {
		ch, cancel := h.Subscribe("iv", 0)
		defer cancel()
		subs[i] = ch
	}
	iv := session.Interview{ID: "iv", Status: session.StateInProgress}
	for p := int64(1); p <= 3; p++ {
		src.add("iv", p)
		h.Appended("iv", segs(p, p), iv)
		h.Publish("iv", p) // the same commit's notification: already delivered
		for i, ch := range subs {
			u, ok := next(t, ch)
			if !ok || len(u.Segments) != 1 || u.Segments[0].Seq != p {
				t.Fatalf("subscriber %d after seq %d: %+v %v", i, p, u, ok)
			}
			if want, _ := json.Marshal(u.Segments[0]); len(u.JSON) != 1 || string(u.JSON[0]) != string(want) {
				t.Fatalf("update's JSON %q, want %q", u.JSON, want)
			}
		}
	}
	// A change that was not handed over (another replica's) is read, once.
	src.add("iv", 4)
	h.Publish("iv", 4)
	for i, ch := range subs {
		if u, ok := next(t, ch); !ok || len(u.Segments) != 1 || u.Segments[0].Seq != 4 {
			t.Fatalf("subscriber %d after a notification: %+v %v", i, u, ok)
		}
	}
	if reads := src.readsOf("iv"); reads != 1 {
		t.Fatalf("%d store reads, want 1 (the notification of seq 4 only)", reads)
	}
}

// TestAppendedWithAGapOrOldSegments: segments that do not directly follow
// what was delivered wake the reader (which reads the gap too); segments
// already delivered are dropped; a read that finds nothing new sends
// nothing.
func TestAppendedWithAGapOrOldSegments(t *testing.T) {
	src := newMemSource()
	h := New(src, 0, quiet(), nil)
	defer h.Close()
	ch, cancel := h.Subscribe("iv", 0)
	defer cancel()
	iv := session.Interview{ID: "iv", Status: session.StateInProgress}
	for p := int64(1); p <= 3; p++ {
		src.add("iv", p)
	}
	h.Appended("iv", segs(3, 3), iv) // 1 and 2 were committed elsewhere: a gap
	if u, ok := next(t, ch); !ok || len(u.Segments) != 3 || u.Segments[0].Seq != 1 {
		t.Fatalf("after a gap: %+v %v, want seqs 1-3 read", u, ok)
	}
	h.Appended("iv", segs(2, 3), iv) // already delivered
	h.Publish("iv", 0)               // reads, finds nothing new: sends nothing
	src.add("iv", 4)
	h.Appended("iv", segs(2, 4), iv) // overlaps: only 4 is new
	if u, ok := next(t, ch); !ok || len(u.Segments) != 1 || u.Segments[0].Seq != 4 {
		t.Fatalf("next update: %+v %v, want seq 4 alone", u, ok)
	}
	// A change of state alone is sent.
	src.mu.Lock()
	src.status = session.StateCompleted
	src.mu.Unlock()
	h.Publish("iv", 0)
	if u, ok := next(t, ch); !ok || len(u.Segments) != 0 || u.Interview.Status != session.StateCompleted {
		t.Fatalf("after completion: %+v %v", u, ok)
	}
	h.Appended("other", segs(1, 1), iv) // nobody follows it: nothing happens
	if src.readsOf("other") != 0 {
		t.Fatal("appended to an unfollowed interview read it")
	}
}
